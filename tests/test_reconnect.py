"""The client's lifetimes over real sockets on 127.0.0.1: ``async for ws in connect(...)``
(reconnecting with backoff), ``nursery.start(connect_in, ...)`` and re-entered ``async with``.

The servers are trio_ws.serve (its hooks refuse or let in on cue), or raw TCP servers that
misbehave on purpose. Backoff timing runs under the ``autojump_clock`` fixture, so the waits are
virtual time and checked exactly; refused attempts take no virtual time (a refused TCP connect
to 127.0.0.1 fails at once).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from trio.testing import wait_all_tasks_blocked

import trio_ws
from tests.conftest import open_fds
from tests.raw_peer import Seen, run_server
from tests.sweeping import SWEPT, CancelAfterSteps
from tests.test_client import live_tasks, no_leaks, read_request
from trio_ws import _yielding
from trio_ws.client import ClientConnection
from trio_ws.exceptions import (
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    SecurityError,
)
from trio_ws.http import Request, Response
from trio_ws.server import ServerConnection

LIMIT = 2_000  # no sweep needs this many points; one that does is stuck
#: No wait between attempts: for tests whose subject is not the timing.
NO_WAIT = trio_ws.Backoff(initial_delay=0, min_delay=0, max_delay=0, jitter=0)

# -- helpers ---------------------------------------------------------------------------------


def uri(port: int, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{port}/"


class Counting:
    """A trio_ws.serve handler that echoes, and records what the server side saw: each
    connection, the most open at once, each one's close code, in the order they closed."""

    def __init__(self) -> None:
        self.connections: list[ServerConnection] = []
        self.open = 0
        self.most_open = 0
        self.codes: list[int | None] = []
        self.closed: list[ServerConnection] = []  # in the order they closed
        self.arrived = trio.Event()  # set by each connection; replace to wait for the next

    async def __call__(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self.arrived.set()
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            self.open -= 1
            await ws.wait_closed()
            self.codes.append(ws.close_code)
            self.closed.append(ws)


async def start_server(
    nursery: trio.Nursery,
    handler: Callable[[ServerConnection], Awaitable[None]],
    port: int = 0,
    **options: Any,
) -> trio_ws.Server:
    """trio_ws.serve on 127.0.0.1 in ``nursery`` (keepalive off); ``port`` 0 picks one."""
    options.setdefault("ping_interval", None)
    server: trio_ws.Server = await nursery.start(
        partial(trio_ws.serve, handler, "127.0.0.1", port, **options)
    )
    return server


@contextmanager
def refusing_port() -> Iterator[socket.socket]:
    """A port nothing listens on, kept reserved: a socket bound to it, not listening. Close
    the socket to let a server bind the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


Behaviour = Callable[[trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def scripted_tcp_server(*script: Behaviour) -> AsyncIterator[tuple[int, list[Seen]]]:
    """A raw TCP server whose n-th connection gets ``script[n]``; connections past the script
    get a WebSocket echo server (raw_peer, wsproto). Yields the port and what each of those
    WebSocket connections saw."""
    count = 0
    seen: list[Seen] = []

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal count
        count += 1
        if count <= len(script):
            async with stream:
                await script[count - 1](stream)
            return
        peer = Seen()
        seen.append(peer)
        await run_server(stream, peer)

    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1], seen
        nursery.cancel_scope.cancel()


async def never_answer(stream: trio.SocketStream) -> None:
    """Accept TCP, read whatever comes, never say a word."""
    while await stream.receive_some(65536):
        pass


async def hang_up_mid_handshake(stream: trio.SocketStream) -> None:
    """Read the upgrade request, then close without answering."""
    await read_request(stream)


class Refusals:
    """A process_request hook that answers the n-th request with ``statuses[n]`` (None: let
    it in), and lets in every request past the list."""

    def __init__(self, *statuses: int | None, location: str | None = None) -> None:
        self.statuses = list(statuses)
        self.location = location

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.statuses:
            return None
        status = self.statuses.pop(0)
        if status is None:
            return None
        response = connection.respond(status, "not now\n")
        if self.location is not None:
            response.headers["Location"] = self.location
        return response


class Attempts:
    """A process_exception that records each failure (its type, and its HTTP status for an
    InvalidStatus) and its time, then asks ``decide`` (by default the default,
    trio_ws.client.process_exception).

    It keeps no exception: one would keep its traceback's frames, the loop's among them (see
    test_leaving_the_loop_closes_even_if_process_exception_kept_the_failures)."""

    def __init__(
        self, decide: Callable[[Exception], Exception | None] = trio_ws.client.process_exception
    ) -> None:
        self.decide = decide
        self.failures: list[tuple[type[Exception], int | None]] = []
        self.times: list[float] = []

    def __call__(self, exc: Exception) -> Exception | None:
        status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
        self.failures.append((type(exc), status))
        self.times.append(trio.current_time())
        return self.decide(exc)


async def first(connector: trio_ws.connect) -> ClientConnection:
    """The loop's first connection; returning leaves the loop, which closes it (1000)."""
    async for ws in connector:
        return ws
    raise AssertionError("the loop ended")  # pragma: no cover


# -- 1. a server restarted under the loop -----------------------------------------------------


async def test_loop_reconnects_to_a_restarted_server_on_the_same_port() -> None:
    """server.aclose(), then a new server on the same port: the loop yields a new connection
    each time; each previous one saw the server's 1001, the last one the loop's 1000; each
    server counted exactly one connection, and never two were open at once."""
    handler = Counting()
    connections: list[ClientConnection] = []
    received: list[str | bytes] = []
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler)
        port = server.port
        servers = [server]
        async for ws in trio_ws.connect(uri(port), backoff=NO_WAIT, ping_interval=None):
            connections.append(ws)
            await ws.send(f"hello {len(connections)}")
            received.append(await ws.recv())
            if len(connections) == 3:
                break
            await server.aclose()  # 1001 to the open connection
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
            server = await start_server(nursery, handler, port)
            servers.append(server)
        await connections[-1].wait_closed()
        await server.aclose()
    assert received == ["hello 1", "hello 2", "hello 3"]
    assert len(set(connections)) == 3
    assert [ws.close_code for ws in connections] == [1001, 1001, 1000]
    assert handler.codes == [1001, 1001, 1000]  # the peer echoes the server's 1001
    assert [s.stats.connections_total for s in servers] == [1, 1, 1]
    assert [s.stats.connections_open for s in servers] == [0, 0, 0]
    assert handler.most_open == 1


async def test_each_connection_is_closed_before_the_next_attempt() -> None:
    """A body that just goes on to the next iteration: the loop closes the current connection
    (1000, its closing handshake complete) before opening the next; the server never has two
    at once."""
    handler = Counting()
    connections: list[ClientConnection] = []
    states_at_next: list[tuple[trio_ws.State, int | None]] = []
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler)
        async for ws in trio_ws.connect(uri(server.port), backoff=NO_WAIT, ping_interval=None):
            if connections:
                previous = connections[-1]
                states_at_next.append((previous.state, previous.close_code))
            connections.append(ws)
            if len(connections) == 4:
                break
        await connections[-1].wait_closed()
        await server.aclose()
    closed = (trio_ws.State.CLOSED, 1000)
    assert states_at_next == [closed, closed, closed]
    assert handler.most_open == 1
    assert handler.codes == [1000] * 4
    assert server.stats.connections_total == 4
    assert server.stats.close_codes == {1000: 4}


# -- 2. backoff ------------------------------------------------------------------------------


async def test_refused_attempts_are_retried_at_exactly_the_backoffs_delays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Nothing listens: attempts come 0, 1, 2, 4, 5 s apart (initial_delay 0 makes the first
    wait 0; then min_delay 1 growing by 2, capped at 5); a server started during the next
    wait gets the attempt after it, 5 s later. Once connected, the waits start over: the server
    stopped, the next attempts come 0, 1, 2, 4 s apart, not 5."""
    backoff = trio_ws.Backoff(initial_delay=0, min_delay=1, factor=2, max_delay=5, jitter=0)
    handler = Counting()
    servers: list[trio_ws.Server] = []
    wanted_send, wanted_receive = trio.open_memory_channel[None](10)
    connected_at: list[float] = []
    with refusing_port() as placeholder:
        port = placeholder.getsockname()[1]

        def decide(exc: Exception) -> Exception | None:
            assert isinstance(exc, OSError), exc
            if len(attempts.failures) in (6, 9):  # start a server during the coming wait
                placeholder.close()
                wanted_send.send_nowait(None)
            return None

        attempts = Attempts(decide)
        async with trio.open_nursery() as nursery:

            async def serve_when_wanted() -> None:
                async for _ in wanted_receive:
                    servers.append(await start_server(nursery, handler, port))

            nursery.start_soon(serve_when_wanted)
            start = trio.current_time()
            connections: list[ClientConnection] = []
            async for ws in trio_ws.connect(
                uri(port), backoff=backoff, process_exception=attempts, ping_interval=None
            ):
                connected_at.append(trio.current_time())
                connections.append(ws)
                if len(connected_at) == 2:
                    break
                await servers[-1].aclose()  # 1001; nothing listens on the port again
            await connections[-1].wait_closed()
            await servers[-1].aclose()
            wanted_send.close()

    expected = [start]
    for delay in (0, 1, 2, 4, 5):
        expected.append(expected[-1] + delay)
    expected_connected = [t := expected[-1] + 5]
    for delay in (0, 1, 2):  # started over: initial_delay's 0, then min_delay 1, then 2
        expected.append(t := t + delay)
    expected_connected.append(t + 4)
    assert attempts.times == expected
    assert connected_at == expected_connected
    assert [s.stats.connections_total for s in servers] == [1, 1]


async def test_first_wait_is_random_up_to_initial_delay_then_min_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With jitter=0 the first wait is still random, within [0, initial_delay]; the next ones
    are min_delay, then min_delay * factor, exactly (up to float rounding of the clock)."""
    backoff = trio_ws.Backoff(initial_delay=2, min_delay=30, factor=1.5, max_delay=90, jitter=0)

    def give_up_after_four(exc: Exception) -> Exception | None:
        return exc if len(attempts.failures) == 4 else None

    attempts = Attempts(give_up_after_four)
    with refusing_port() as placeholder, pytest.raises(OSError):
        async for _ in trio_ws.connect(
            uri(placeholder.getsockname()[1]), backoff=backoff, process_exception=attempts
        ):
            pytest.fail("nothing listens")  # pragma: no cover
    first, *rest = (b - a for a, b in zip(attempts.times, attempts.times[1:], strict=False))
    assert 0 <= first <= 2
    assert rest == [pytest.approx(30, abs=1e-9), pytest.approx(45, abs=1e-9)]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"initial_delay": -1}, "initial_delay"),
        ({"min_delay": float("nan")}, "min_delay"),
        ({"max_delay": -0.5}, "max_delay"),
        ({"initial_delay": True}, "initial_delay"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"min_delay": 10, "max_delay": 5}, "min_delay"),
    ],
)
def test_backoff_rejects_impossible_values(options: dict[str, Any], match: str) -> None:
    """Each impossible Backoff is a ValueError naming the field, when it is built."""
    with pytest.raises(ValueError, match=match):
        trio_ws.Backoff(**options)


def test_connect_rejects_a_backoff_of_the_wrong_type() -> None:
    """backoff= takes a Backoff: anything else is a TypeError when connect() is called."""
    with pytest.raises(TypeError, match="backoff"):
        trio_ws.connect("ws://127.0.0.1:9/", backoff=5)  # type: ignore[arg-type]


# -- 3. what is retried ----------------------------------------------------------------------


async def test_default_retries_a_refused_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """OSError (connection refused) is retried by default, until a server comes."""
    handler = Counting()
    ready = trio.Event()
    servers: list[trio_ws.Server] = []
    backoff = trio_ws.Backoff(initial_delay=0, min_delay=1, jitter=0)

    def default_then_serve(exc: Exception) -> Exception | None:
        if len(attempts.failures) == 2:  # a server comes during the wait that follows
            placeholder.close()
            ready.set()
        return trio_ws.client.process_exception(exc)

    attempts = Attempts(default_then_serve)
    with refusing_port() as placeholder:
        port = placeholder.getsockname()[1]
        async with trio.open_nursery() as nursery:

            async def serve_when_ready() -> None:
                await ready.wait()
                servers.append(await start_server(nursery, handler, port))

            nursery.start_soon(serve_when_ready)
            ws = await first(
                trio_ws.connect(uri(port), backoff=backoff, process_exception=attempts)
            )
            await ws.wait_closed()
            await servers[0].aclose()
    assert attempts.failures == [(OSError, None)] * 2
    assert handler.codes == [1000]


async def test_default_retries_an_open_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """TimeoutError (a server that never answers the handshake) is retried by default: the
    next attempt, to a server that does answer, comes after the first wait."""
    attempts = Attempts()
    backoff = trio_ws.Backoff(initial_delay=3, min_delay=30, jitter=0)
    async with scripted_tcp_server(never_answer) as (port, seen):
        start = trio.current_time()
        ws = await first(
            trio_ws.connect(uri(port), open_timeout=2, backoff=backoff, process_exception=attempts)
        )
        connected = trio.current_time()
        await ws.wait_closed()
        await seen[0].ended.wait()
    assert attempts.failures == [(TimeoutError, None)]
    assert attempts.times == [start + 2]
    assert 0 <= connected - (start + 2) <= 3
    assert [peer.outcome for peer in seen] == [1000]


async def test_default_retries_a_connection_lost_mid_handshake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """InvalidHandshake (the server reads the request, then closes) is retried by default."""
    attempts = Attempts()
    async with scripted_tcp_server(hang_up_mid_handshake, hang_up_mid_handshake) as (port, seen):
        ws = await first(trio_ws.connect(uri(port), backoff=NO_WAIT, process_exception=attempts))
        await ws.wait_closed()
        await seen[0].ended.wait()
    assert len(attempts.failures) == 2
    assert all(issubclass(kind, InvalidHandshake) for kind, _ in attempts.failures)
    assert [peer.outcome for peer in seen] == [1000]


async def test_default_retries_503_and_429_then_gets_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that answers 503, then 429, then upgrades: the loop gets in on the third
    attempt, with the default process_exception (none given)."""
    handler = Counting()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler, process_request=Refusals(503, 429, 500))
        ws = await first(trio_ws.connect(uri(server.port), backoff=NO_WAIT))
        await ws.wait_closed()
        await server.aclose()
    assert server.stats.handshakes_refused == {"503": 1, "429": 1, "500": 1}
    assert server.stats.connections_total == 1
    assert handler.codes == [1000]


@pytest.mark.parametrize("status", [403, 404, 401])
async def test_default_raises_other_statuses_at_once(
    autojump_clock: trio.testing.MockClock, status: int
) -> None:
    """403, 404, 401: InvalidStatus out of the loop after one attempt, without waiting."""
    attempts = Attempts()
    backoff = trio_ws.Backoff(initial_delay=3, min_delay=30, jitter=0)
    with no_leaks():
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, Counting(), process_request=Refusals(status))
            start = trio.current_time()
            with pytest.raises(InvalidStatus) as info:
                async for _ in trio_ws.connect(
                    uri(server.port), backoff=backoff, process_exception=attempts
                ):
                    pytest.fail("the server refused")  # pragma: no cover
            raised_at = trio.current_time()
            await server.aclose()
    assert info.value.response.status_code == status
    assert attempts.failures == [(InvalidStatus, status)]
    assert raised_at == start
    assert server.stats.handshakes_refused == {str(status): 1}


async def test_default_raises_a_certificate_that_fails_verification_at_once(
    autojump_clock: trio.testing.MockClock, server_context: ssl.SSLContext
) -> None:
    """wss:// to a server whose CA the client does not trust: SSLCertVerificationError out of
    the loop after one attempt (an OSError that is not retried)."""
    untrusting = ssl.create_default_context()
    trustme.CA().configure_trust(untrusting)
    attempts = Attempts()
    with no_leaks():
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, Counting(), ssl=server_context)
            start = trio.current_time()
            with pytest.raises(ssl.SSLCertVerificationError):
                async for _ in trio_ws.connect(
                    uri(server.port, "wss"), ssl=untrusting, process_exception=attempts
                ):
                    pytest.fail("the certificate is not trusted")  # pragma: no cover
            raised_at = trio.current_time()
            await server.aclose()
    assert attempts.failures == [(ssl.SSLCertVerificationError, None)]
    assert raised_at == start


async def test_default_raises_a_redirect_to_ws_at_once(
    autojump_clock: trio.testing.MockClock,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """A wss:// server that redirects to ws://: SecurityError after one attempt."""
    attempts = Attempts()
    async with trio.open_nursery() as nursery:
        refusals = Refusals(302, location="ws://127.0.0.1:9/")
        server = await start_server(
            nursery, Counting(), ssl=server_context, process_request=refusals
        )
        start = trio.current_time()
        with pytest.raises(SecurityError):
            async for _ in trio_ws.connect(
                uri(server.port, "wss"), ssl=client_context, process_exception=attempts
            ):
                pytest.fail("the redirect is refused")  # pragma: no cover
        raised_at = trio.current_time()
        await server.aclose()
    assert attempts.failures == [(SecurityError, None)]
    assert raised_at == start


async def test_custom_process_exception_returning_none_retries_a_404(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A process_exception that returns None retries even what the default raises."""
    handler = Counting()
    attempts = Attempts(lambda exc: None)
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler, process_request=Refusals(404, 404))
        ws = await first(
            trio_ws.connect(uri(server.port), backoff=NO_WAIT, process_exception=attempts)
        )
        await ws.wait_closed()
        await server.aclose()
    assert attempts.failures == [(InvalidStatus, 404)] * 2
    assert server.stats.connections_total == 1


async def test_custom_process_exception_returning_another_exception_raises_it_chained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An exception returned by process_exception is raised, chained from the failure."""
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, Counting(), process_request=Refusals(503))
        with pytest.raises(LookupError, match="gone") as info:
            async for _ in trio_ws.connect(
                uri(server.port), process_exception=lambda exc: LookupError("gone")
            ):
                pytest.fail("refused")  # pragma: no cover
        await server.aclose()
    cause = info.value.__cause__
    assert isinstance(cause, InvalidStatus)
    assert cause.response.status_code == 503


async def test_leaving_the_loop_closes_even_if_process_exception_kept_the_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A process_exception that keeps the exceptions (a list for metrics, a 'last error'
    attribute): breaking out of the loop still closes the connection."""
    kept: list[Exception] = []

    def keep(exc: Exception) -> None:
        kept.append(exc)

    handler = Counting()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler, process_request=Refusals(503))
        ws = await first(
            trio_ws.connect(uri(server.port), backoff=NO_WAIT, process_exception=keep)
        )
        with trio.move_on_after(60):  # virtual time: passes at once if the close never comes
            await ws.wait_closed()
        closed = ws.state is trio_ws.State.CLOSED
        await server.aclose()
    assert len(kept) == 1
    assert closed
    assert handler.codes == [1000]


# -- 4. leaving the loop ---------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("how", ["break", "return", "exception"])
async def test_leaving_the_loop_closes_the_connection_with_1000(how: str) -> None:
    """break, return from the function, an exception from the body: each closes the current
    connection with 1000 (no aclosing() around the loop); once closed, no fd and no task is
    left over, the loop's system task included."""
    handler = Counting()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler)
        await wait_all_tasks_blocked()
        fds, tasks = open_fds(), live_tasks()
        connector = trio_ws.connect(uri(server.port), ping_interval=None)
        if how == "break":
            async for ws in connector:
                await ws.send("x")
                assert await ws.recv() == "x"
                break
        elif how == "return":
            ws = await first(connector)
        else:
            with pytest.raises(Boom):
                async for ws in connector:  # noqa: B007 - ws is checked after the loop
                    raise Boom
        with trio.fail_after(10):  # a guard against a hang, not a measure
            await ws.wait_closed()
        await wait_all_tasks_blocked()
        leftover = (open_fds() - fds, live_tasks() - tasks)
        await server.aclose()
    assert leftover == (0, 0)
    assert ws.close_code == 1000
    assert handler.codes == [1000]
    assert server.stats.close_codes == {1000: 1}


async def test_explicit_aclose_closes_at_once() -> None:
    """it = aiter(connect(...)); ws = await anext(it); await it.aclose(): the connection is
    closed, with 1000, by the time aclose() returns."""
    handler = Counting()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler)
        await wait_all_tasks_blocked()
        fds, tasks = open_fds(), live_tasks()
        loop = aiter(trio_ws.connect(uri(server.port), ping_interval=None))
        ws = await anext(loop)
        state_before = ws.state
        await loop.aclose()
        state_after, code_after = ws.state, ws.close_code
        await wait_all_tasks_blocked()
        leftover = (open_fds() - fds, live_tasks() - tasks)
        await server.aclose()
    assert state_before is trio_ws.State.OPEN
    assert (state_after, code_after) == (trio_ws.State.CLOSED, 1000)
    assert leftover == (0, 0)
    assert handler.codes == [1000]


# -- 5. cancellation -------------------------------------------------------------------------


async def test_cancelling_during_a_backoff_wait_leaves_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The loop's scope times out while it waits to retry: Cancelled is caught by that scope
    (no other error), at exactly its deadline; no fd, no task left."""
    backoff = trio_ws.Backoff(initial_delay=0, min_delay=10, jitter=0)
    attempts = Attempts()
    with refusing_port() as placeholder, no_leaks():
        start = trio.current_time()
        with trio.move_on_after(15) as scope:
            async for _ in trio_ws.connect(
                uri(placeholder.getsockname()[1]), backoff=backoff, process_exception=attempts
            ):
                pytest.fail("nothing listens")  # pragma: no cover
        assert trio.current_time() == start + 15
    assert scope.cancelled_caught
    assert attempts.times == [start, start, start + 10]


async def test_cancelling_during_a_handshake_leaves_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The loop's scope times out while a server that accepted TCP never answers: no fd and
    no task left once the server has seen the socket close."""
    ended = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        await never_answer(stream)
        ended.set()

    attempts = Attempts()
    async with scripted_tcp_server(silent) as (port, _):
        await wait_all_tasks_blocked()
        fds, tasks = open_fds(), live_tasks()
        start = trio.current_time()
        with trio.move_on_after(3) as scope:
            async for _ in trio_ws.connect(uri(port), open_timeout=10, process_exception=attempts):
                pytest.fail("the server never answers")  # pragma: no cover
        cancelled_at = trio.current_time()
        await ended.wait()
        await wait_all_tasks_blocked()
        leftover = (open_fds() - fds, live_tasks() - tasks)
    assert scope.cancelled_caught
    assert cancelled_at == start + 3
    assert attempts.failures == []  # cancelled, not a failed attempt
    assert leftover == (0, 0)


async def test_cancelling_the_body_during_recv_closes_with_1000_and_leaves_nothing() -> None:
    """CancelScope.cancel() while the body waits in ws.recv(): the loop is left by the
    Cancelled, which closes the connection (1000); no fd, no task left."""
    handler = Counting()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler)
        await wait_all_tasks_blocked()
        fds, tasks = open_fds(), live_tasks()
        with trio.CancelScope() as scope:

            async def cancel_when_blocked() -> None:
                await wait_all_tasks_blocked()
                scope.cancel()

            async for ws in trio_ws.connect(uri(server.port), ping_interval=None):
                nursery.start_soon(cancel_when_blocked)
                await ws.recv()  # the server sends nothing
        with trio.fail_after(10):  # a guard against a hang, not a measure
            await ws.wait_closed()
        await wait_all_tasks_blocked()
        leftover = (open_fds() - fds, live_tasks() - tasks)
        await server.aclose()
    assert scope.cancelled_caught
    assert leftover == (0, 0)
    assert handler.codes == [1000]


def _arm(scope: trio.CancelScope, stopper: CancelAfterSteps) -> None:
    if stopper.steps == 0:
        scope.cancel()
    trio.lowlevel.add_instrument(stopper)


async def _sweep_point(steps: int, restart: bool) -> tuple[bool, list[str]]:
    """Run the loop once, cancelled at its ``steps``-th step from the start (or, with
    ``restart``, from the start of the reconnect after a server restart). Returns whether the
    cancellation fired, and what went wrong (nothing, when all is well)."""
    fds, tasks = open_fds(), live_tasks()
    handler = Counting()
    connections: list[ClientConnection] = []
    scope = trio.CancelScope()
    stopper = CancelAfterSteps(scope, steps, trio.lowlevel.current_task())
    problems: list[str] = []
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler)
        port = server.port
        try:
            with scope:
                if not restart:
                    _arm(scope, stopper)
                async for ws in trio_ws.connect(uri(port), backoff=NO_WAIT, ping_interval=None):
                    connections.append(ws)
                    if restart and len(connections) == 1:
                        await server.aclose()
                        await ws.wait_closed()
                        server = await start_server(nursery, handler, port)
                        _arm(scope, stopper)
                        continue
                    await ws.send("hi")
                    assert await ws.recv() == "hi"
                    break
        finally:
            with contextlib.suppress(KeyError):  # not armed: the restart never came
                trio.lowlevel.remove_instrument(stopper)
        with trio.move_on_after(10):  # a guard against a hang, not a measure
            for ws in connections:
                await ws.wait_closed()
        await wait_all_tasks_blocked()
        if handler.open:
            problems.append(f"{handler.open} connection(s) left open")
        await server.aclose()
    await wait_all_tasks_blocked()
    if (open_fds(), live_tasks()) != (fds, tasks):
        problems.append(f"leaked {open_fds() - fds} fd(s), {live_tasks() - tasks} task(s)")
    yielded = len(connections) - (1 if restart else 0)
    expected_codes = ([1001] if restart else []) + [1000] * yielded
    codes = handler.codes[: len(expected_codes)]
    if codes != expected_codes or any(code != 1006 for code in handler.codes[len(codes) :]):
        problems.append(f"server saw {handler.codes}, expected {expected_codes} (+ 1006s)")
    return stopper.fired, problems


@pytest.fixture(params=["slices", "every call"])
def scheduling(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """trio_ws's calls that do not wait yield once per 0.5 ms slice (as shipped), or at every
    call: then every point where any of them could yield is swept too."""
    if request.param == "every call":
        monkeypatch.setattr(_yielding, "SLICE", 0.0)
    return str(request.param)


@pytest.mark.parametrize("restart", [False, True], ids=["first attempt", "reconnect"])
async def test_sweep_cancelling_the_loop_at_every_step_leaves_nothing(
    restart: bool, scheduling: str
) -> None:
    """Cancel the loop's scope at every scheduling step of its first attempt and body (or of
    the reconnect after a server restart, and the body after it): at each point no fd, no task
    and no open connection is left, the server saw 1000 for every connection the loop yielded
    (1001 for the one it restarted under), and nothing but Cancelled came out."""
    failures: dict[int, list[str]] = {}
    for steps in range(LIMIT):
        fired, problems = await _sweep_point(steps, restart)
        if problems:
            failures[steps] = problems
        if not fired:
            break
    what = "a reconnect after a server restart" if restart else "the first attempt"
    SWEPT[f"async for connect(): {what} (yields: {scheduling})"] = steps + 1
    assert steps + 1 < LIMIT, "the loop never completed uncancelled"
    assert failures == {}


class CancelWhenSpawned(trio.abc.Instrument):
    """Cancels ``scope`` as a task whose name starts with ``prefix`` is spawned."""

    def __init__(self, scope: trio.CancelScope, prefix: str) -> None:
        self.scope, self.prefix = scope, prefix

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if task.name.startswith(self.prefix):
            self.scope.cancel()


async def test_cancelled_as_the_loop_hands_its_connection_to_a_task_leaves_nothing_open() -> None:
    """The loop's scope is cancelled just as the opened connection's system task is spawned
    (the point the sweep finds): the connection is closed all the same, and no task is left."""
    handler = Counting()
    connections: list[ClientConnection] = []
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler)
        await wait_all_tasks_blocked()
        fds, tasks = open_fds(), live_tasks()
        with trio.CancelScope() as scope:
            instrument = CancelWhenSpawned(scope, "trio_ws connection")
            trio.lowlevel.add_instrument(instrument)
            try:
                async for ws in trio_ws.connect(uri(server.port), ping_interval=None):
                    connections.append(ws)
                    await trio.lowlevel.checkpoint()  # the Cancelled comes here at the latest
            finally:
                trio.lowlevel.remove_instrument(instrument)
        with trio.fail_after(10):  # a guard against a hang, not a measure
            for ws in connections:
                await ws.wait_closed()
        await wait_all_tasks_blocked()
        left_open = handler.open
        leftover = (open_fds() - fds, live_tasks() - tasks)
        await server.aclose()
    assert scope.cancelled_caught
    assert server.stats.connections_total == 1  # the handshake was done: the point was hit
    assert left_open == 0
    assert leftover == (0, 0)


# -- 6. trio.run ending under an abandoned connection -----------------------------------------


def test_trio_run_ending_closes_an_abandoned_loop_connection_with_1001() -> None:
    """The main task leaves the loop but keeps the iterator (so it is not freed) and returns:
    trio.run cancels the connection's system task, which closes with 1001 (cancelled), and
    returns cleanly; freeing the iterator afterwards is quiet (no unraisable error: pytest would
    fail the test); no fd is left.

    The server runs in a trio.run of its own, in a thread: one in the client's run would be
    cancelled with it, and could not tell what the client sent."""
    fds = open_fds()
    codes: list[int | None] = []
    closed = threading.Event()
    ready: queue.Queue[tuple[trio_ws.Server, trio.lowlevel.TrioToken]] = queue.Queue()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for _ in ws:
                pass
        finally:
            await ws.wait_closed()
            codes.append(ws.close_code)
            closed.set()

    async def serve_in_thread() -> None:
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, handler)
            ready.put((server, trio.lowlevel.current_trio_token()))

    async def client(port: int) -> tuple[object, ClientConnection]:
        loop = aiter(trio_ws.connect(uri(port), ping_interval=None))
        async for ws in loop:  # noqa: B007 - ws is returned, still open
            break
        assert ws.state is trio_ws.State.OPEN
        return loop, ws

    thread = threading.Thread(target=trio.run, args=(serve_in_thread,))
    thread.start()
    try:
        server, token = ready.get(timeout=10)
        loop, ws = trio.run(client, server.port)
        state, code = ws.state, ws.close_code
        server_saw_close = closed.wait(10)  # a guard against a hang, not a measure
        del loop  # __del__ after the run: nothing left to tell, and it says nothing
    finally:
        trio.from_thread.run(server.aclose, trio_token=token)
        thread.join(10)
    assert (state, code) == (trio_ws.State.CLOSED, 1001)
    assert server_saw_close
    assert codes == [1001]
    assert open_fds() == fds


# -- 7. connect_in ---------------------------------------------------------------------------


async def test_connect_in_gives_an_open_connection_to_other_tasks_and_aclose_ends_it() -> None:
    """nursery.start(connect_in, uri) returns an open connection; other tasks send and
    receive on it; ws.aclose() ends connect_in's task, so the nursery exits, with 1000."""
    handler = Counting()
    replies: list[str | bytes] = []
    async with trio.open_nursery() as servers:
        server = await start_server(servers, handler)
        with trio.fail_after(10):  # a guard against a hang, not a measure
            async with trio.open_nursery() as nursery:
                ws = await nursery.start(trio_ws.connect_in, uri(server.port))
                state = ws.state

                async def send_three() -> None:
                    for text in ("a", "b", "c"):
                        await ws.send(text)

                async def receive_three_then_close() -> None:
                    for _ in range(3):
                        replies.append(await ws.recv())
                    await ws.aclose()

                nursery.start_soon(send_three)
                nursery.start_soon(receive_three_then_close)
        await wait_all_tasks_blocked()
        await server.aclose()
    assert isinstance(ws, ClientConnection)
    assert state is trio_ws.State.OPEN
    assert replies == ["a", "b", "c"]
    assert ws.close_code == 1000
    assert handler.codes == [1000]


async def test_connect_in_closes_with_1001_when_the_nursery_is_cancelled() -> None:
    """Cancelling the nursery's scope ends connect_in's task: the server sees 1001, and the
    closing handshake is done by the time the nursery exits."""
    handler = Counting()
    async with trio.open_nursery() as servers:
        server = await start_server(servers, handler)
        await wait_all_tasks_blocked()
        fds, tasks = open_fds(), live_tasks()
        async with trio.open_nursery() as nursery:
            ws = await nursery.start(trio_ws.connect_in, uri(server.port))
            nursery.cancel_scope.cancel()
        state = ws.state
        await wait_all_tasks_blocked()
        leftover = (open_fds() - fds, live_tasks() - tasks)
        await server.aclose()
    assert state is trio_ws.State.CLOSED
    assert handler.codes == [1001]
    assert leftover == (0, 0)


async def test_connect_in_that_fails_raises_the_plain_exception_from_start() -> None:
    """A refused connect_in: nursery.start raises the OSError itself, not an ExceptionGroup,
    and nothing is left over."""
    with refusing_port() as placeholder, no_leaks():
        async with trio.open_nursery() as nursery:
            with pytest.raises(OSError) as info:
                await nursery.start(trio_ws.connect_in, uri(placeholder.getsockname()[1]))
    assert not isinstance(info.value, BaseExceptionGroup)
    assert "127.0.0.1" in str(info.value)


async def test_connect_in_takes_options_through_partial() -> None:
    """Options go through functools.partial: subprotocols= is offered, and chosen."""
    async with trio.open_nursery() as servers:
        server = await start_server(servers, Counting(), subprotocols=["chat"])
        async with trio.open_nursery() as nursery:
            ws = await nursery.start(
                partial(
                    trio_ws.connect_in, uri(server.port), subprotocols=["chat"], compression=None
                )
            )
            subprotocol, extensions = (
                ws.subprotocol,
                ws.response.headers.get("Sec-WebSocket-Extensions"),
            )
            await ws.aclose()
        await server.aclose()
    assert subprotocol == "chat"
    assert extensions is None


# -- 8. await, and re-entering -----------------------------------------------------------------


async def test_awaiting_connect_raises_type_error_naming_both_forms() -> None:
    """await trio_ws.connect(uri) opens nothing, and says which two forms to use."""
    fds = open_fds()
    with pytest.raises(TypeError) as info:
        await trio_ws.connect("ws://127.0.0.1:9/")
    message = str(info.value)
    assert "async with trio_ws.connect" in message
    assert "nursery.start(trio_ws.connect_in" in message
    assert open_fds() == fds


async def test_a_connect_object_entered_twice_in_turn_opens_two_connections() -> None:
    """The same connect(...) object, entered after it was exited: a new connection."""
    handler = Counting()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler)
        connector = trio_ws.connect(uri(server.port), ping_interval=None)
        replies = []
        for text in ("one", "two"):
            async with connector as ws:
                await ws.send(text)
                replies.append((ws, await ws.recv()))
        await wait_all_tasks_blocked()
        await server.aclose()
    (first_ws, first_reply), (second_ws, second_reply) = replies
    assert first_ws is not second_ws
    assert (first_reply, second_reply) == ("one", "two")
    assert (first_ws.close_code, second_ws.close_code) == (1000, 1000)
    assert server.stats.connections_total == 2
    assert handler.most_open == 1


async def test_a_connect_object_entered_twice_nested_opens_two_exited_in_order() -> None:
    """Nested entries of one connect(...) object: two connections, both open inside; the
    inner exit closes the inner one only, the outer exit the outer one."""
    handler = Counting()
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, handler)
        connector = trio_ws.connect(uri(server.port), ping_interval=None)
        async with connector as outer:
            async with connector as inner:
                inside = (outer.state, inner.state)
            after_inner = (outer.state, inner.state)
            await outer.send("still here")
            reply = await outer.recv()
        after_outer = outer.state
        await wait_all_tasks_blocked()
        await server.aclose()
    open_, closed = trio_ws.State.OPEN, trio_ws.State.CLOSED
    assert outer is not inner
    assert inside == (open_, open_)
    assert after_inner == (open_, closed)
    assert reply == "still here"
    assert after_outer is closed
    assert handler.most_open == 2
    assert handler.closed == [handler.connections[1], handler.connections[0]]
    assert handler.codes == [1000, 1000]


# -- 9. the server closes while the body is busy elsewhere ------------------------------------


async def test_a_connection_the_server_closes_is_replaced_after_the_first_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server closes (1000) while the body waits on something else, not in recv(): the
    close is handled anyway, and the next iteration connects after a wait within
    initial_delay (2 s), not min_delay (30 s)."""
    backoff = trio_ws.Backoff(initial_delay=2, min_delay=30, jitter=0)
    server_closed = trio.Event()
    arrivals: list[float] = []

    async def close_the_first(ws: ServerConnection) -> None:
        arrivals.append(trio.current_time())
        if len(arrivals) == 1:
            await ws.aclose()
            server_closed.set()
        else:
            await ws.wait_closed()

    connections: list[ClientConnection] = []
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, close_the_first)
        async for ws in trio_ws.connect(uri(server.port), backoff=backoff, ping_interval=None):
            connections.append(ws)
            if len(connections) == 2:
                break
            await server_closed.wait()  # busy elsewhere: nobody calls recv()
            await wait_all_tasks_blocked()
            closed_state = (ws.state, ws.close_code)
            lost_at = trio.current_time()
        await connections[-1].wait_closed()
        await server.aclose()
    assert closed_state == (trio_ws.State.CLOSED, 1000)
    assert 0 <= arrivals[1] - lost_at <= 2
    assert server.stats.connections_total == 2
