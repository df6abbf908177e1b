"""serve() and Server over real sockets on 127.0.0.1: handlers, handshakes, shutdown, leaks."""

from __future__ import annotations

import logging
import math
import re
import socket
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import trio_ws
from tests.conftest import open_fds
from tests.test_handshake import BAD_REQUESTS, BadRequest, parse_response
from trio_ws._handshake import ClientHandshake, ServerHandshake
from trio_ws._keepalive import KeepaliveTimer
from trio_ws._uri import parse_uri
from trio_ws.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
)
from trio_ws.http import Headers
from trio_ws.server import Server, ServerConnection

Handler = Callable[[ServerConnection], Awaitable[None]]

# -- helpers ---------------------------------------------------------------------------------


def uri(server: Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def echo_or(handler: Handler) -> Handler:
    """Echo on the path /echo (the probe of assert_still_serving), else run ``handler``."""

    async def dispatch(ws: ServerConnection) -> None:
        await (echo(ws) if ws.request.path == "/echo" else handler(ws))

    return dispatch


@asynccontextmanager
async def serving(
    handler: Handler, host: str | None = "127.0.0.1", **options: Any
) -> AsyncGenerator[tuple[Server, trio.Nursery], None]:
    """serve(handler) on port 0, keepalive off; yield the server and the nursery that runs
    only serve(); hard-stop the server on exit."""
    options.setdefault("ping_interval", None)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(partial(trio_ws.serve, handler, host, 0, **options))
        yield server, nursery
        server.cancel_scope.cancel()


async def assert_still_serving(server: Server) -> None:
    """A new client gets its message echoed (the handler must go through echo_or)."""
    async with trio_ws.connect(uri(server, "/echo"), ping_interval=None) as ws:
        await ws.send("still serving?")
        assert await ws.recv() == "still serving?"


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


async def open_raw_websocket(server: Server) -> trio.SocketStream:
    """A TCP connection on which the opening handshake is done, with nothing running on it."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    handshake = ClientHandshake(
        parse_uri(uri(server)),
        subprotocols=(),
        compression=None,
        max_size=None,
        headers=Headers(),
    )
    await stream.send_all(handshake.request_bytes)
    while handshake.receive_data(await stream.receive_some(65536)) is None:
        pass
    return stream


class Gate:
    """Counts handlers that reached it; ``full`` is set once ``size`` have."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.arrived: list[ServerConnection] = []
        self.full = trio.Event()

    def arrive(self, ws: ServerConnection) -> None:
        self.arrived.append(ws)
        if len(self.arrived) == self.size:
            self.full.set()


# -- serve() and what it reports ---------------------------------------------------------------


async def test_serve_reports_a_server_listening_on_the_chosen_port() -> None:
    """nursery.start(serve, ..., port=0) returns a Server whose port is the one bound, with at
    least one listener, and a client can connect to that port."""
    async with serving(echo) as (server, _):
        assert isinstance(server, Server)
        assert server.listeners
        assert server.port != 0
        for listener in server.listeners:
            assert isinstance(listener, trio.SocketListener)
            assert listener.socket.getsockname()[:2] == ("127.0.0.1", server.port)
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"


async def test_serve_on_every_interface_uses_one_port_for_all_listeners() -> None:
    """host=None listens on the wildcard address of every family (IPv4 and IPv6 here) and, with
    port 0, on the same port for all of them, as server.port promises; each one serves."""
    loopback = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "[::1]"}
    async with serving(echo, host=None) as (server, _):
        listeners = server.listeners
        assert listeners
        for listener in listeners:
            assert isinstance(listener, trio.SocketListener)
            address = listener.socket.getsockname()
            assert address[0] in ("0.0.0.0", "::")
            assert address[1] == server.port
            host = loopback[listener.socket.family]
            async with trio_ws.connect(f"ws://{host}:{server.port}/", ping_interval=None) as ws:
                await ws.send(host)
                assert await ws.recv() == host


async def test_serve_on_a_port_in_use_raises_oserror_and_leaks_nothing() -> None:
    """serve() on a port another socket listens on raises OSError before reporting a Server,
    and leaves no socket open."""
    [taken] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with taken:
        fds = open_fds()
        with pytest.raises(OSError):
            await trio_ws.serve(echo, "127.0.0.1", taken.socket.getsockname()[1])
        assert open_fds() == fds


async def test_connections_lists_the_connections_whose_handler_runs() -> None:
    """server.connections holds exactly the connections whose handler is running: empty
    before, both while two handlers run, empty again once they returned."""
    gate = Gate(2)
    release = trio.Event()

    async def handler(ws: ServerConnection) -> None:
        gate.arrive(ws)
        await release.wait()

    async with serving(handler) as (server, _):
        assert server.connections == frozenset()
        async with (
            trio_ws.connect(uri(server), ping_interval=None) as first,
            trio_ws.connect(uri(server), ping_interval=None) as second,
        ):
            await gate.full.wait()
            assert server.connections == frozenset(gate.arrived)
            release.set()
            for ws in (first, second):
                with pytest.raises(ConnectionClosedOK):
                    await ws.recv()
        await trio.testing.wait_all_tasks_blocked()
        assert server.connections == frozenset()


# -- handlers ----------------------------------------------------------------------------------


async def test_handler_return_closes_with_1000() -> None:
    """When the handler returns, the server closes the connection with 1000: the client's
    recv() gets the messages sent before, then ConnectionClosedOK with code 1000."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send("bye")

    async with (
        serving(handler) as (server, _),
        trio_ws.connect(uri(server), ping_interval=None) as ws,
    ):
        assert await ws.recv() == "bye"
        with pytest.raises(ConnectionClosedOK) as caught:
            await ws.recv()
        assert caught.value.code == 1000


async def test_handler_exception_closes_with_1011_and_is_logged_with_the_connection_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler that raises gets its connection closed with 1011; the error is logged on
    trio_ws.server with the connection id and the traceback, and the server keeps serving."""
    ids: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        ids.append(str(ws.id))
        raise ValueError("bug in the handler")

    async with serving(echo_or(handler)) as (server, _):
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            with pytest.raises(ConnectionClosedError) as caught:
                await ws.recv()
        assert caught.value.code == 1011
        await assert_still_serving(server)

    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    [record] = errors
    assert record.name == "trio_ws.server"
    assert ids[0] in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("boom"),
        KeyError("missing"),
        ExceptionGroup("several", [ValueError("a"), TypeError("b")]),
        ConnectionClosedError(1006, "a handler re-raising"),
    ],
    ids=["ValueError", "KeyError", "ExceptionGroup", "ConnectionClosedError"],
)
async def test_handler_exception_never_escapes_serve(error: Exception) -> None:
    """Whatever Exception a handler raises stays inside serve(): serve() keeps running and
    serving, and the nursery that runs it sees nothing."""
    raised = trio.Event()

    async def handler(ws: ServerConnection) -> None:
        raised.set()
        raise error

    async with serving(echo_or(handler)) as (server, nursery):
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            await raised.wait()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        await assert_still_serving(server)
        assert len(nursery.child_tasks) == 1  # serve() still runs


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_vanished_client_makes_recv_raise_1006_and_server_keeps_serving(how: str) -> None:
    """A client that closes TCP without a close frame, gently (FIN) or not (RST), makes the
    handler's recv() raise ConnectionClosedError with code 1006; other clients are served."""
    gate = Gate(1)
    done = trio.Event()
    outcomes: list[BaseException] = []

    async def handler(ws: ServerConnection) -> None:
        gate.arrive(ws)
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            outcomes.append(exc)
        finally:
            done.set()

    async with serving(echo_or(handler)) as (server, _):
        stream = await open_raw_websocket(server)
        await gate.full.wait()
        if how == "rst":
            # Linger on with a timeout of 0: close() sends RST instead of FIN.
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
        await done.wait()
        await assert_still_serving(server)

    [outcome] = outcomes
    assert type(outcome) is ConnectionClosedError
    assert outcome.code == 1006


async def test_many_clients_at_once_are_all_served() -> None:
    """50 clients connected at the same time each get their own messages echoed."""
    count = 50
    gate = Gate(count)
    go = trio.Event()
    echoed: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        gate.arrive(ws)
        await echo(ws)

    async def client(server: Server, number: int) -> None:
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            await go.wait()
            await ws.send(f"client {number}")
            echoed.append(str(await ws.recv()))

    async with serving(handler) as (server, _), trio.open_nursery() as clients:
        for number in range(count):
            clients.start_soon(client, server, number)
        await gate.full.wait()
        assert len(server.connections) == count
        go.set()

    assert sorted(echoed) == sorted(f"client {number}" for number in range(count))


# -- the opening handshake over the socket -----------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
async def test_invalid_handshake_gets_its_http_status_and_server_keeps_serving(
    case: BadRequest,
) -> None:
    """A plain TCP client sending a request that breaks RFC 6455 reads that breach's HTTP error,
    then end of stream, whole even when it sent more than the server read (1 MiB head); the
    server goes on serving."""
    async with serving(echo) as (server, _):
        fds = open_fds()
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(case.data)
            response = parse_response(await read_until_eof(stream))
        assert response.status_code == case.status
        assert case.names in response.body.decode()
        for name, value in case.headers.items():
            assert response.headers.get_all(name) == [value]
        await trio.testing.wait_all_tasks_blocked()
        assert open_fds() == fds
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            await ws.send("after")
            assert await ws.recv() == "after"


@pytest.mark.parametrize(
    "sent", [b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"], ids=["nothing", "half-a-request"]
)
async def test_silent_client_is_dropped_after_exactly_open_timeout(
    autojump_clock: trio.testing.MockClock, sent: bytes
) -> None:
    """A client that does not finish its request is disconnected open_timeout seconds after
    it connected, to the (virtual) second, and its socket is released."""
    fds = open_fds()
    async with serving(echo, open_timeout=7) as (server, _):
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            start = trio.current_time()
            await stream.send_all(sent)
            assert await stream.receive_some(1024) == b""
            assert trio.current_time() == start + 7
        await assert_still_serving(server)
    assert open_fds() == fds


@pytest.mark.parametrize("where", ["receive_data", "check_upgrade", "finish"])
async def test_a_bug_in_a_connection_task_closes_that_connection_and_serve_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """An exception from trio_ws's own code in a connection's task (here, injected into the
    server's handshake) is logged as an internal error; that socket is closed, and the next
    client connects fine: no per-connection task can end serve()."""
    original = getattr(ServerHandshake, where)
    broken = [True]

    def fail_once(self: ServerHandshake, *args: Any, **kwargs: Any) -> Any:
        if broken.pop() if broken else False:
            raise RuntimeError(f"bug injected in ServerHandshake.{where}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ServerHandshake, where, fail_once)
    async with serving(echo) as (server, nursery):
        fds = open_fds()
        with pytest.raises(InvalidHandshake, match="closed the connection"):
            async with trio_ws.connect(uri(server), ping_interval=None):
                pass  # pragma: no cover
        await assert_still_serving(server)
        assert len(nursery.child_tasks) == 1  # serve() still runs
        await trio.testing.wait_all_tasks_blocked()
        assert open_fds() == fds

    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "trio_ws.server"
    assert re.fullmatch(
        r"connection [-0-9a-f]{36}: internal error in the opening handshake", record.getMessage()
    )
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == f"bug injected in ServerHandshake.{where}"


# -- stopping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "reason"),
    [((), 1001, ""), ((1012, "restarting"), 1012, "restarting")],
    ids=["default", "code-and-reason"],
)
async def test_aclose_closes_every_connection_and_waits_for_the_handlers(
    autojump_clock: trio.testing.MockClock, args: tuple[int, str], code: int, reason: str
) -> None:
    """aclose() sends every client a close frame (1001, or the code and reason given); the
    handlers' recv() ends on it and they finish their work; aclose() returns without waiting
    for any deadline, once serve() has returned; no task and no socket is left."""
    fds = open_fds()
    gate = Gate(3)
    finished: list[tuple[ServerConnection, int]] = []
    closed_with: list[ConnectionClosed] = []

    async def handler(ws: ServerConnection) -> None:
        gate.arrive(ws)
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            await trio.lowlevel.checkpoint()  # work after the close still runs
            finished.append((ws, exc.code))

    async def client(server: Server) -> None:
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await ws.recv()
        closed_with.append(caught.value)

    async with trio.open_nursery() as clients, serving(handler) as (server, nursery):
        for _ in range(gate.size):
            clients.start_soon(client, server)
        await gate.full.wait()
        start = trio.current_time()
        await server.aclose(*args)
        assert trio.current_time() == start
        assert not nursery.child_tasks
        assert sorted(id(ws) for ws, _ in finished) == sorted(map(id, gate.arrived))
        assert [seen for _, seen in finished] == [code] * 3
        assert server.connections == frozenset()

    assert [(exc.code, exc.reason) for exc in closed_with] == [(code, reason)] * 3
    assert open_fds() == fds


@pytest.mark.parametrize(
    ("close_timeout", "aclose_timeout", "deadline"),
    [(7, None, 7), (7, 3, 3)],
    ids=["close_timeout", "timeout-argument"],
)
async def test_aclose_cancels_a_handler_that_ignores_the_close_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
    close_timeout: float,
    aclose_timeout: float | None,
    deadline: float,
) -> None:
    """A handler that ignores the close is cancelled exactly at the deadline (close_timeout, or
    aclose's timeout); the client got its 1001 at once; aclose() returns at the deadline with
    serve() returned and no socket left."""
    fds = open_fds()
    gate = Gate(1)
    cancelled_at: list[float] = []
    client_closed_at: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        gate.arrive(ws)
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled_at.append(trio.current_time())
            raise

    async def client(server: Server) -> None:
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            with pytest.raises(ConnectionClosedOK) as caught:
                await ws.recv()
        assert caught.value.code == 1001
        client_closed_at.append(trio.current_time())

    async with (
        trio.open_nursery() as clients,
        serving(handler, close_timeout=close_timeout) as (server, nursery),
    ):
        clients.start_soon(client, server)
        await gate.full.wait()
        start = trio.current_time()
        await server.aclose(timeout=aclose_timeout)
        assert trio.current_time() == start + deadline
        assert not nursery.child_tasks

    assert cancelled_at == [start + deadline]
    assert client_closed_at == [start]
    assert open_fds() == fds


async def test_handshake_finishing_during_aclose_gets_503(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client whose request completes after aclose() began is answered 503 and not
    upgraded; aclose() waits for that answer, not for a deadline."""
    fds = open_fds()
    request = ClientHandshake(
        parse_uri("ws://127.0.0.1/"),
        subprotocols=(),
        compression=None,
        max_size=None,
        headers=Headers(),
    ).request_bytes
    async with serving(echo) as (server, nursery):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(request[:20])
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        async with trio.open_nursery() as closer:
            closer.start_soon(server.aclose)
            await trio.testing.wait_all_tasks_blocked()
            await stream.send_all(request[20:])
            response = parse_response(await read_until_eof(stream))
            await stream.aclose()
        assert trio.current_time() == start
        assert not nursery.child_tasks
    assert response.status_code == 503
    assert response.body == b"the server is shutting down\n"
    assert open_fds() == fds


async def test_hard_stop_cancels_handlers_and_clients_still_get_1001(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """server.cancel_scope.cancel() cancels every handler, yet every client receives a close
    frame with 1001 (never a dropped connection, 1006); serve() returns at once and leaves
    no task and no socket."""
    fds = open_fds()
    gate = Gate(3)
    cancelled: list[ServerConnection] = []
    closed_with: list[ConnectionClosed] = []

    async def handler(ws: ServerConnection) -> None:
        gate.arrive(ws)
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(ws)
            raise

    async def client(server: Server) -> None:
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await ws.recv()
        closed_with.append(caught.value)

    async with trio.open_nursery() as clients:
        async with serving(handler) as (server, _):
            for _ in range(gate.size):
                clients.start_soon(client, server)
            await gate.full.wait()
            start = trio.current_time()
            server.cancel_scope.cancel()
        # serving() has left its nursery: serve() returned, without waiting for any timeout.
        assert trio.current_time() == start
        assert sorted(map(id, cancelled)) == sorted(map(id, gate.arrived))

    assert [type(exc) for exc in closed_with] == [ConnectionClosedOK] * 3
    assert [exc.code for exc in closed_with] == [1001] * 3
    assert open_fds() == fds


@pytest.mark.parametrize("connections", [0, 1, 2])
@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((999,), ValueError, r"close code 999 may not be sent"),
        ((1005, "gone"), ValueError, r"close code 1005 may not be sent"),
        ((1000, "é" * 62), ValueError, r"close reason of 124 bytes"),
        ((1000, "", -1), ValueError, r"timeout must be at least 0 seconds"),
        ((1000, "", math.nan), ValueError, r"timeout must be at least 0 seconds"),
        (("1000",), TypeError, r"close code must be an int"),
    ],
    ids=["999", "1005", "long-reason", "negative-timeout", "nan-timeout", "str-code"],
)
async def test_aclose_with_bad_arguments_raises_before_doing_anything(
    autojump_clock: trio.testing.MockClock,
    connections: int,
    args: tuple[Any, ...],
    error: type[Exception],
    message: str,
) -> None:
    """Server.aclose() checks its code, reason and timeout first, whatever the number of
    connections: the error itself comes out, the server still accepts clients and every
    connection is still open; a good aclose() then works."""
    gate = Gate(connections)
    closed_with: list[int] = []

    async def client(server: Server) -> None:
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await ws.recv()
        closed_with.append(caught.value.code)

    async def handler(ws: ServerConnection) -> None:
        gate.arrive(ws)
        await ws.wait_closed()

    async with trio.open_nursery() as clients, serving(echo_or(handler)) as (server, _):
        for _ in range(connections):
            clients.start_soon(client, server)
        if connections:
            await gate.full.wait()
        with pytest.raises(error, match=message) as caught:
            await server.aclose(*args)
        assert type(caught.value) is error
        assert trio.current_time() == 0.0
        assert server.connections == frozenset(gate.arrived)
        assert all(ws.state is trio_ws.State.OPEN for ws in gate.arrived)
        await assert_still_serving(server)
        await server.aclose(1001)
    assert closed_with == [1001] * connections


async def test_aclose_after_a_hard_stop_returns_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After server.cancel_scope.cancel(), aclose() returns as soon as serve() has returned:
    every connection's task is counted off even though closing its socket was cancelled, so
    nothing waits for close_timeout (it used to, 10 s)."""
    gate = Gate(5)

    async def handler(ws: ServerConnection) -> None:
        gate.arrive(ws)
        await trio.sleep_forever()

    async def client(server: Server) -> None:
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()

    async with trio.open_nursery() as clients, serving(handler) as (server, nursery):
        for _ in range(gate.size):
            clients.start_soon(client, server)
        await gate.full.wait()
        start = trio.current_time()
        server.cancel_scope.cancel()
        await server.aclose()
        assert trio.current_time() == start
        assert not nursery.child_tasks


def _masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def test_frame_sent_with_the_request_is_handled_at_once() -> None:
    """A frame in the same write as the upgrade request reaches the handler without waiting
    for more bytes from the client."""
    async with serving(echo) as (server, _):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        handshake = ClientHandshake(
            parse_uri(uri(server)),
            subprotocols=(),
            compression=None,
            max_size=None,
            headers=Headers(),
        )
        await stream.send_all(handshake.request_bytes + _masked_text_frame("early"))
        opened = None
        received = b""
        with trio.fail_after(10):
            while opened is None:
                received = await stream.receive_some(65536)
                opened = handshake.receive_data(received)
            events = list(opened.ws.events())  # the echo may come in the 101's read
            while not events:
                opened.ws.receive_data(await stream.receive_some(65536))
                events = list(opened.ws.events())
        await stream.aclose()
    assert [getattr(event, "data", None) for event in events] == ["early"]


async def test_clients_resetting_right_after_the_101_never_crash_serve() -> None:
    """A client that reads the 101 and resets the connection at once (so the server's socket
    has no peer address any more) costs the server nothing: it keeps serving."""
    handled: list[ServerConnection] = []

    async def record(ws: ServerConnection) -> None:
        handled.append(ws)
        await ws.wait_closed()

    async with serving(echo_or(record)) as (server, _):
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.setblocking(False)
            handshake = ClientHandshake(
                parse_uri(uri(server)),
                subprotocols=(),
                compression=None,
                max_size=None,
                headers=Headers(),
            )
            sock.sendall(handshake.request_bytes)
            await trio.lowlevel.wait_readable(sock)
            assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            await trio.testing.wait_all_tasks_blocked()
        await assert_still_serving(server)
    assert all(ws.close_code == 1006 for ws in handled)


# -- keepalive -----------------------------------------------------------------------------


def task_names() -> list[str]:
    """The names of every task in this trio run."""
    names: list[str] = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        names.append(task.name)
        pending.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return names


async def read_frame(stream: trio.SocketStream, buffered: bytearray) -> tuple[int, bytes]:
    """The next unmasked frame from a server, short lengths only: (opcode, payload)."""
    while len(buffered) < 2 or len(buffered) < 2 + (buffered[1] & 0x7F):
        buffered += await stream.receive_some(65536)
    opcode, length = buffered[0] & 0x0F, buffered[1] & 0x7F
    payload = bytes(buffered[2 : 2 + length])
    del buffered[: 2 + length]
    return opcode, payload


async def test_one_task_times_the_keepalive_pings_of_every_server_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Server connections waiting for their next ping have no task for it: one timer task
    serves them all, and a ping round is a task only while it runs. Answering clients stay
    open; a client that never answers gets its ping at ping_interval and a 1011 close frame
    at ping_interval + ping_timeout."""
    handlers: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        handlers.append(ws)
        await ws.wait_closed()

    async with (
        serving(handler, ping_interval=5, ping_timeout=3) as (server, _),
        trio.open_nursery() as clients,
    ):
        for _ in range(3):
            clients.start_soon(hold_open, server)
        silent = await open_raw_websocket(server)
        while len(handlers) < 4:
            await trio.testing.wait_all_tasks_blocked()
        names = task_names()
        assert sum(name.endswith("KeepaliveTimer.run") for name in names) == 1
        assert not any(name.endswith("_ping_round") for name in names)

        buffered = bytearray()
        assert (await read_frame(silent, buffered))[0] == 0x9  # ping
        assert trio.current_time() == 5.0
        opcode, payload = await read_frame(silent, buffered)
        assert (opcode, struct.unpack("!H", payload[:2])[0]) == (0x8, 1011)
        assert payload[2:] == b"keepalive ping timeout"
        assert trio.current_time() == 8.0
        await silent.aclose()

        await trio.sleep(20)  # four more ping rounds, each answered
        assert [ws.state for ws in handlers].count(trio_ws.State.OPEN) == 3
        clients.cancel_scope.cancel()


async def hold_open(server: Server) -> None:
    """A client with keepalive off that answers pings until cancelled."""
    async with trio_ws.connect(uri(server), ping_interval=None) as ws:
        await ws.wait_closed()


async def test_a_raising_keepalive_callback_keeps_the_timer_and_the_server_alive(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A keepalive callback that raises (a bug injected into the first connection's) is
    logged on the server's logger; the server's one timer goes on: the other connections get
    their pings at ping_interval exactly, and the server keeps serving."""
    original = KeepaliveTimer.call_at
    broken = [True]

    def call_at(self: KeepaliveTimer, when: float, callback: Callable[[], None]) -> Any:
        if broken.pop() if broken else False:

            def callback() -> None:
                raise RuntimeError("bug in a keepalive callback")

        return original(self, when, callback)

    monkeypatch.setattr(KeepaliveTimer, "call_at", call_at)
    handlers: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        handlers.append(ws)
        await ws.wait_closed()

    async with serving(echo_or(handler), ping_interval=5, ping_timeout=3) as (server, nursery):
        streams = []
        for count in (1, 2, 3):
            streams.append(await open_raw_websocket(server))
            while len(handlers) < count:
                await trio.testing.wait_all_tasks_blocked()
        for stream in streams[1:]:
            assert (await read_frame(stream, bytearray()))[0] == 0x9  # ping
            assert trio.current_time() == 5.0
        await assert_still_serving(server)
        assert len(nursery.child_tasks) == 1  # serve() still runs
        for stream in streams:
            await stream.aclose()

    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "trio_ws.server"
    assert "internal error in a keepalive callback" in record.getMessage()
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "bug in a keepalive callback"


async def test_hard_stop_while_handlers_stream_large_messages_gives_every_client_1001() -> None:
    """server.cancel_scope.cancel() while every handler is sending 256 KiB messages: each
    handler's message in flight goes out whole, then its close frame, so every client sees
    1001, none 1006 (a frame cut by the cancellation used to leave no room for a close)."""
    started = trio.Semaphore(0)

    async def stream_forever(ws: ServerConnection) -> None:
        while True:
            await ws.send(b"x" * 256 * 1024)

    codes: list[int] = []

    async def client(server: Server) -> None:
        async with trio_ws.connect(uri(server), compression=None, max_size=None) as ws:
            assert len(await ws.recv()) == 256 * 1024
            started.release()
            try:
                while True:
                    await ws.recv()
            except trio_ws.ConnectionClosed as exc:
                codes.append(exc.code)

    clients = 20
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(
                partial(trio_ws.serve, stream_forever, "127.0.0.1", 0, compression=None)
            )
            async with trio.open_nursery() as clients_nursery:
                for _ in range(clients):
                    clients_nursery.start_soon(client, server)
                for _ in range(clients):
                    await started.acquire()
                server.cancel_scope.cancel()
    assert codes == [1001] * clients


class _CancelAfterSteps(trio.abc.Instrument):
    """Cancels ``scope`` as the ``steps``-th task step from now starts (any task's)."""

    def __init__(self, scope: trio.CancelScope, steps: int) -> None:
        self.scope, self.steps = scope, steps

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps -= 1
        if self.steps == 0:
            self.scope.cancel()


async def test_a_hard_stop_at_every_scheduling_step_never_gives_the_client_1006() -> None:
    """Hard-stop the server after k scheduling steps, for k = 1, 2, ... until the exchange
    ends first, while the handler streams 200 KB messages: the client either gets no 101
    (the handshake fails) or sees 1001, never a dropped connection (1006 after its 101)."""

    async def stream(ws: ServerConnection) -> None:
        await ws.recv()
        while True:
            await ws.send("x" * 200_000)

    outcomes: dict[object, int] = {}
    for steps in range(1, 10_000):
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(
                partial(
                    trio_ws.serve, stream, "127.0.0.1", 0, ping_interval=None, compression=None
                )
            )
            stopper = _CancelAfterSteps(server.cancel_scope, steps)
            trio.lowlevel.add_instrument(stopper)
            try:
                outcome: object = "completed"
                async with trio_ws.connect(
                    uri(server), compression=None, ping_interval=None
                ) as ws:
                    try:
                        await ws.send("go")
                        for _ in range(3):
                            await ws.recv()
                        await ws.aclose()
                    except ConnectionClosed as exc:
                        outcome = exc.code
            except (trio_ws.InvalidHandshake, OSError) as exc:
                outcome = type(exc).__name__
            finally:
                trio.lowlevel.remove_instrument(stopper)
            server.cancel_scope.cancel()
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if stopper.steps > 0:  # the exchange ended before the stop: every point swept
            break
    assert set(outcomes) <= {1001, "completed", "InvalidMessage", "ConnectionRefusedError"}
    assert outcomes.get(1001, 0) > 10, outcomes
