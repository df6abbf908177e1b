"""trio_ws.testing: the memory listener, serving(), connection_pair(), under the real clock and
under MockClock, with the real handshake and no socket; and examples/testing_handlers.py, run
by pytest as a user's test suite would be."""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_ws
from tests.conftest import open_fds
from trio_ws.client import ClientConnection
from trio_ws.connection import State
from trio_ws.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from trio_ws.http import Request, Response
from trio_ws.server import Server, ServerConnection
from trio_ws.testing import (
    MEMORY_HOST,
    MemoryListener,
    MemoryServer,
    connection_pair,
    serving,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["real clock", "autojump clock"])
def any_clock(request: pytest.FixtureRequest) -> trio.testing.MockClock | None:
    """Run a test under trio's clock and under MockClock(autojump_threshold=0): pytest-trio
    runs the test with whichever fixture value is a clock."""
    return trio.testing.MockClock(autojump_threshold=0) if request.param != "real clock" else None


#: For tests whose outcome does not depend on time: run them under both clocks.
both_clocks = pytest.mark.usefixtures("any_clock")


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


# -- MemoryListener ------------------------------------------------------------------------


@both_clocks
async def test_listener_connect_meets_accept_and_bytes_flow_both_ways() -> None:
    """connect() returns the client's half of a stream pair whose server's half accept()
    returns: what one sends, the other receives."""
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        accepted: list[trio.abc.Stream] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await listener.connect()
    [server] = accepted
    await client.send_all(b"ping")
    assert await server.receive_some() == b"ping"
    await server.send_all(b"pong")
    assert await client.receive_some() == b"pong"
    await listener.aclose()


@both_clocks
async def test_listener_connect_waits_for_accept() -> None:
    """No queue: connect() returns only once an accept() has taken its connection."""
    listener = MemoryListener()
    connected: list[trio.abc.Stream] = []

    async def connect() -> None:
        connected.append(await listener.connect())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connect)
        await trio.testing.wait_all_tasks_blocked()
        assert connected == []
        server = await listener.accept()
        await trio.testing.wait_all_tasks_blocked()
        assert len(connected) == 1
    await connected[0].send_all(b"yours")
    assert await server.receive_some() == b"yours"


async def record_raised(call: Callable[[], Awaitable[object]], raised: list[Exception]) -> None:
    """Call ``call()``; append what it raises to ``raised``."""
    try:
        await call()
    except Exception as exc:
        raised.append(exc)


@both_clocks
async def test_listener_aclose_makes_waiting_and_later_accepts_raise_closed_resource() -> None:
    listener = MemoryListener()
    raised: list[Exception] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_raised, listener.accept, raised)
        await trio.testing.wait_all_tasks_blocked()
        await listener.aclose()
    [error] = raised
    assert isinstance(error, trio.ClosedResourceError)
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


@both_clocks
async def test_listener_aclose_refuses_waiting_and_later_connects() -> None:
    """A connect() waiting when the listener closes, and any after, raise
    ConnectionRefusedError (an OSError, as a refused TCP connection is); aclose() may be
    called again."""
    listener = MemoryListener()
    raised: list[Exception] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_raised, listener.connect, raised)
        await trio.testing.wait_all_tasks_blocked()
        await listener.aclose()
    [error] = raised
    assert isinstance(error, ConnectionRefusedError)
    assert "is closed" in str(error)
    with pytest.raises(ConnectionRefusedError, match="is closed"):
        await listener.connect()
    await listener.aclose()


@both_clocks
async def test_a_cancelled_connect_hands_nothing_over() -> None:
    """A connect() cancelled while it waits leaves nothing for accept(): the next accept()
    gets the next connect()'s stream."""
    listener = MemoryListener()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.connect)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    async with trio.open_nursery() as nursery:
        accepted: list[trio.abc.Stream] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await listener.connect()
    await client.send_all(b"second")
    assert await accepted[0].receive_some() == b"second"


@both_clocks
async def test_listener_calls_checkpoint() -> None:
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.accept)
        with trio.testing.assert_checkpoints():
            await listener.connect()
    with trio.testing.assert_checkpoints():
        await listener.aclose()


# -- serving() ---------------------------------------------------------------------------------


@both_clocks
async def test_serving_runs_the_handler_after_a_real_handshake() -> None:
    """The handler gets a ServerConnection after a real opening handshake: the client's path,
    Host, subprotocol and headers arrive; both sides' addresses are None (no socket); the
    server accepts from its MemoryListener."""
    seen: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        seen.append(ws)
        await echo(ws)

    async with (
        serving(handler, subprotocols=["chat"]) as memory,
        memory.connect(
            "/room?id=7", subprotocols=["chat"], additional_headers={"X-Test": "yes"}
        ) as ws,
    ):
        assert isinstance(memory, MemoryServer)
        assert isinstance(memory.server, Server)
        assert memory.server.listeners == [memory.listener]
        assert isinstance(ws, ClientConnection)
        await ws.send("hello")
        assert await ws.recv() == "hello"
        [server_ws] = seen
        assert memory.server.connections == frozenset({server_ws})
        assert server_ws.request.path == "/room?id=7"
        assert server_ws.request.headers["Host"] == MEMORY_HOST
        assert server_ws.request.headers["X-Test"] == "yes"
        assert (ws.subprotocol, server_ws.subprotocol) == ("chat", "chat")
        assert (ws.local_address, ws.remote_address) == (None, None)
        assert (server_ws.local_address, server_ws.remote_address) == (None, None)
    assert ws.close_code == 1000
    assert server_ws.close_code == 1000
    assert memory.server.stats.connections_total == 1


@both_clocks
async def test_serving_exit_stops_gracefully_with_1001() -> None:
    """Leaving the block calls Server.aclose(): a connection still open (its client held
    outside the block) gets 1001 in the handler and at the client; then no task of the
    server runs, the listener is closed and connecting is refused."""
    handler_saw: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            await ws.recv()
        except ConnectionClosedOK as exc:
            handler_saw.append(exc.code)

    async with trio.open_nursery() as outside:
        async with serving(handler) as memory:
            stream = await memory.listener.connect()
            ws: ClientConnection = await outside.start(
                partial(trio_ws.connect_in, "ws://testserver/", stream=stream, proxy=None)
            )
        assert handler_saw == [1001]
        assert ws.close_code == 1001
        assert memory.server.connections == frozenset()
    with pytest.raises(trio.ClosedResourceError):
        await memory.listener.accept()
    with pytest.raises(ConnectionRefusedError):
        async with memory.connect():
            pass  # pragma: no cover


async def test_serving_exit_gives_a_stubborn_handler_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler that ignores the closing connection is cancelled close_timeout seconds after
    the block is left, to the virtual second."""
    cancelled_at: list[float] = []

    async def stubborn(ws: ServerConnection) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled_at.append(trio.current_time())

    async with trio.open_nursery() as outside:
        async with serving(stubborn, close_timeout=4) as memory:
            stream = await memory.listener.connect()
            ws = await outside.start(
                partial(trio_ws.connect_in, "ws://testserver/", stream=stream, proxy=None)
            )
            await trio.sleep(1)
        assert trio.current_time() == 5.0
    assert cancelled_at == [5.0]
    assert ws.close_code == 1001


@both_clocks
async def test_serving_exit_by_an_exception_stops_hard_and_raises_it_unwrapped() -> None:
    """An exception leaving the block cancels the server (the handler is cancelled, the client
    gets 1001) and comes out as itself, not in an ExceptionGroup."""
    cancelled = trio.Event()

    async def handler(ws: ServerConnection) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with trio.open_nursery() as outside:
        with pytest.raises(KeyError, match="the test's own"):
            async with serving(handler) as memory:
                stream = await memory.listener.connect()
                ws = await outside.start(
                    partial(trio_ws.connect_in, "ws://testserver/", stream=stream, proxy=None)
                )
                raise KeyError("the test's own")
        assert cancelled.is_set()
        await ws.wait_closed()
        assert ws.close_code == 1001


@both_clocks
async def test_server_aclose_in_the_block_then_leaving_it() -> None:
    """Stopping the server in the block is fine: leaving it afterwards does nothing more."""
    async with serving(echo) as memory:
        await memory.server.aclose()
        with pytest.raises(ConnectionRefusedError):
            await memory.listener.connect()


@both_clocks
async def test_a_handler_that_raises_closes_with_1011_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client of a handler that raises gets 1011; the error is logged; the next client is
    served."""

    async def handler(ws: ServerConnection) -> None:
        if ws.request.path == "/broken":
            raise RuntimeError("bug in the handler")
        await echo(ws)

    async with serving(handler) as memory:
        async with memory.connect("/broken") as ws:
            with pytest.raises(ConnectionClosedError) as caught:
                await ws.recv()
            assert caught.value.code == 1011
        async with memory.connect("/") as ws:
            await ws.send("still serving?")
            assert await ws.recv() == "still serving?"
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "handler raised" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


@both_clocks
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_process_request_404_raises_invalid_status(kind: str) -> None:
    """A process_request hook's response reaches the client as InvalidStatus, its status and
    body intact; the handler never runs."""

    def not_found(connection: ServerConnection, request: Request) -> Response | None:
        return connection.respond(404, f"no {request.path}\n")

    async def async_not_found(connection: ServerConnection, request: Request) -> Response | None:
        await trio.lowlevel.checkpoint()
        return not_found(connection, request)

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("the handler ran")  # pragma: no cover

    hook = not_found if kind == "sync" else async_not_found
    async with serving(handler, process_request=hook) as memory:
        with pytest.raises(InvalidStatus) as caught:
            async with memory.connect("/missing"):
                pass  # pragma: no cover
        assert memory.server.stats.handshakes_refused == {"404": 1}
    assert caught.value.response.status_code == 404
    assert caught.value.response.body == b"no /missing\n"


@both_clocks
async def test_a_raw_stream_from_the_listener_gets_plain_http() -> None:
    """listener.connect() gives a stream to speak HTTP over by hand: a health check answered
    by process_request, with no WebSocket client."""

    def health(connection: ServerConnection, request: Request) -> Response | None:
        return connection.respond(200, "OK\n") if request.path == "/healthz" else None

    async with serving(echo, process_request=health) as memory:
        stream = await memory.listener.connect()
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: testserver\r\n\r\n")
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
            if response.endswith(b"OK\n"):
                break
        await stream.aclose()
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")


@both_clocks
@pytest.mark.parametrize(
    ("args", "options", "error", "match"),
    [
        ((), {"stream": None}, TypeError, r"takes no stream="),
        ((), {"proxy": "http://proxy.invalid:3128"}, TypeError, r"takes no proxy="),
        (("chat",), {}, ValueError, r"path must start with '/'"),
        ((), {"max_size": True}, TypeError, r"max_size"),
        ((), {"open_timeout": -1}, ValueError, r"open_timeout"),
    ],
    ids=["stream", "proxy", "path", "max_size", "open_timeout"],
)
async def test_memory_connect_checks_its_arguments_at_once(
    args: tuple[str, ...], options: dict[str, Any], error: type[Exception], match: str
) -> None:
    """MemoryServer.connect() raises for a wrong argument when called, before any await, as
    trio_ws.connect() does; nothing reaches the server."""
    async with serving(echo) as memory:
        with pytest.raises(error, match=match):
            memory.connect(*args, **options)
        await trio.testing.wait_all_tasks_blocked()
        assert memory.server.stats.handshakes_refused == {}
        assert memory.server.stats.connections_total == 0


@both_clocks
async def test_a_memory_connect_never_entered_opens_nothing_and_serves_once() -> None:
    """The connection is made when the block is entered: an unused connect() opens nothing.
    Its stream carries one connection: entering it again raises RuntimeError."""
    async with serving(echo) as memory:
        connector = memory.connect()
        await trio.testing.wait_all_tasks_blocked()
        assert memory.server.stats.connections_total == 0
        async with connector as ws:
            await ws.send("once")
            assert await ws.recv() == "once"
        with pytest.raises(RuntimeError, match="stream= was used already"):
            async with connector:
                pass  # pragma: no cover
        assert memory.server.stats.connections_total == 1


@both_clocks
async def test_serving_with_a_wrong_option_raises_it_on_entering() -> None:
    with pytest.raises(TypeError, match="max_size"):
        async with serving(echo, max_size=True):
            pass  # pragma: no cover


@both_clocks
async def test_serving_with_ssl_runs_tls_over_memory(ca: trustme.CA) -> None:
    """ssl= on both sides: TLS over the memory streams, wss:// for MemoryServer.connect(),
    the certificate checked for MEMORY_HOST."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(MEMORY_HOST).configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with (
        serving(echo, ssl=server_context) as memory,
        memory.connect(ssl=client_context) as ws,
    ):
        await ws.send("secret")
        assert await ws.recv() == "secret"
        assert isinstance(memory.server.listeners[0], trio.SSLListener)


# -- timing under MockClock ------------------------------------------------------------------


async def test_client_open_timeout_fires_at_its_exact_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server whose process_request never returns: the client gives up with TimeoutError at
    exactly open_timeout."""

    async def never(connection: ServerConnection, request: Request) -> Response | None:
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async with serving(echo, process_request=never, open_timeout=30) as memory:
        with pytest.raises(TimeoutError, match="open_timeout=5"):
            async with memory.connect(open_timeout=5):
                pass  # pragma: no cover
        assert trio.current_time() == 5.0


async def test_server_open_timeout_drops_a_silent_client_at_its_exact_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that sends no request is dropped at exactly the server's open_timeout: its
    stream ends then."""
    async with serving(echo, open_timeout=3) as memory:
        stream = await memory.listener.connect()
        assert await stream.receive_some() == b""
        assert trio.current_time() == 3.0
        assert memory.server.stats.handshakes_refused == {"timeout": 1}


async def test_keepalive_fails_a_peer_that_stopped_reading_at_its_exact_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server's side stops reading (its queue of one message is full), so it answers no
    ping: the client fails the connection with 1011 at ping_interval + ping_timeout."""
    async with connection_pair(ping_interval=5, ping_timeout=3, max_queue=1) as (client, server):
        await client.send("fills the queue")
        await client.wait_closed()
        assert trio.current_time() == 8.0
        with pytest.raises(ConnectionClosedError) as failed:
            await client.recv()
        assert (failed.value.code, failed.value.reason) == (1011, "keepalive ping timeout")
        assert client.close_code == 1006  # the peer's close frame: none came
        assert await server.recv() == "fills the queue"
        with pytest.raises(ConnectionClosedError) as caught:
            await server.recv()
        assert caught.value.code == 1011


async def test_keepalive_keeps_an_idle_pair_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Both sides ping every ping_interval and answer at once: an hour later both are open and
    the round trips took no virtual time."""
    async with connection_pair(ping_interval=5, ping_timeout=3) as (client, server):
        await trio.sleep(3600)
        assert (client.state, server.state) == (State.OPEN, State.OPEN)
        assert (client.latency, server.latency) == (0.0, 0.0)


# -- connection_pair() -----------------------------------------------------------------------


@both_clocks
async def test_connection_pair_yields_both_open_sides_and_closes_them_with_1000() -> None:
    async with connection_pair("/chat") as (client, server):
        assert isinstance(client, ClientConnection)
        assert isinstance(server, ServerConnection)
        assert (client.state, server.state) == (State.OPEN, State.OPEN)
        assert server.request.path == "/chat"
        await client.send("to the server")
        assert await server.recv() == "to the server"
        await server.send(b"to the client")
        assert await client.recv() == b"to the client"
        assert (client.remote_address, server.remote_address) == (None, None)
    assert (client.state, server.state) == (State.CLOSED, State.CLOSED)
    assert (client.close_code, server.close_code) == (1000, 1000)


@both_clocks
async def test_connection_pair_passes_options_to_each_side() -> None:
    """``options`` reach both sides; serve_options and connect_options reach theirs and win
    over ``options``."""

    def tag(connection: ServerConnection, request: Request, response: Response) -> None:
        response.headers["X-Served-By"] = "memory"

    async with connection_pair(
        max_size=1024,
        subprotocols=["v1", "v2"],
        serve_options={"max_size": 8, "process_response": tag},
        connect_options={"additional_headers": {"X-Client": "test"}, "subprotocols": ["v2"]},
    ) as (client, server):
        assert (client.subprotocol, server.subprotocol) == ("v2", "v2")
        assert server.request.headers["X-Client"] == "test"
        assert client.response.headers["X-Served-By"] == "memory"
        await server.send("x" * 1000)  # the client takes up to 1024 bytes
        assert await client.recv() == "x" * 1000
        await client.send("123456789")  # the server, up to 8
        with pytest.raises(ConnectionClosedError) as caught:
            await server.recv()
        assert caught.value.code == 1009


@both_clocks
async def test_connection_pair_exit_by_an_exception_closes_with_1011_and_raises_it() -> None:
    with pytest.raises(ZeroDivisionError):
        async with connection_pair() as (client, server):
            1 / 0  # noqa: B018
    assert (client.close_code, server.close_code) == (1011, 1011)


@both_clocks
async def test_connection_pair_cancelled_closes_with_1001() -> None:
    with trio.CancelScope() as scope:
        async with connection_pair() as (client, server):
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert (client.close_code, server.close_code) == (1001, 1001)


@both_clocks
async def test_connection_pair_refused_raises_invalid_status() -> None:
    def forbid(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(403, "no\n")

    with pytest.raises(InvalidStatus) as caught:
        async with connection_pair(serve_options={"process_request": forbid}):
            pass  # pragma: no cover
    assert caught.value.response.status_code == 403


# -- no socket -------------------------------------------------------------------------------


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make every way trio opens a socket fail, and check no file descriptor is added."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened")

    for name in ("socket", "socketpair", "fromfd"):
        monkeypatch.setattr(trio.socket, name, refuse)
    for name in ("open_tcp_stream", "open_tcp_listeners", "open_unix_socket"):
        monkeypatch.setattr(trio, name, refuse)
    fds = open_fds()
    yield
    assert open_fds() == fds


@both_clocks
@pytest.mark.usefixtures("no_sockets")
async def test_no_socket_is_opened() -> None:
    """serving(), MemoryServer.connect() and connection_pair() open no socket and no file
    descriptor, while they run and after."""
    fds = open_fds()
    async with serving(echo) as memory, memory.connect() as ws:
        await ws.send("in memory")
        assert await ws.recv() == "in memory"
        assert open_fds() == fds
    async with connection_pair() as (client, server):
        await client.send("in memory")
        assert await server.recv() == "in memory"
        assert open_fds() == fds


# -- the example -------------------------------------------------------------------------------


def test_testing_handlers_example_passes_under_pytest() -> None:
    """examples/testing_handlers.py, the docs' example, passes when pytest runs it as a user's
    test module: its tests run under pytest-trio, MockClock included."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "examples" / "testing_handlers.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
    assert "failed" not in result.stdout and "skipped" not in result.stdout
