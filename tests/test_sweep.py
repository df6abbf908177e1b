"""Cancellation at every scheduling step, over TCP and TLS on 127.0.0.1, against a raw peer.

Each sweep repeats one operation, cancelling it as its k-th scheduling step begins, for
k = 0, 1, ... until a run completes first (``sweeping.py``). The peer is wsproto over a plain
trio stream (``raw_peer.py``), so the close code it reports is the one on the wire. At every
point:

- the operation raised nothing but :exc:`trio.Cancelled` (caught by its scope): no exception
  group, no other error;
- once the peer has seen the end, no file descriptor and no task is left over (and any
  ``ResourceWarning`` fails the test: pytest turns warnings into errors);
- the peer saw the documented close code: 1000 for a normal end, 1001 for a cancelled client
  or a stopped server, never a connection dropped after the upgrade (1006), except where a
  cancelled ``connect()`` never opened the connection (its handshake is cut: no close frame).

The number of points each sweep tried is printed at the end of the test session.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio
import trustme
from trio.testing import wait_all_tasks_blocked

import trio_ws
from tests.conftest import open_fds
from tests.raw_peer import Seen, run_client, run_server
from tests.sweeping import SWEPT, CancelAfterSteps, cancel_after
from trio_ws import _yielding
from trio_ws.connection import Connection

LIMIT = 2_000  # no sweep needs this many points; one that does is stuck


@dataclass(frozen=True)
class Transport:
    name: str
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None

    def uri(self, port: int) -> str:
        return f"{'wss' if self.server_ssl else 'ws'}://127.0.0.1:{port}/"

    async def serve(
        self,
        nursery: trio.Nursery,
        handler: Callable[[trio_ws.ServerConnection], Awaitable[None]],
        **options: Any,
    ) -> trio_ws.Server:
        """trio_ws.serve in ``nursery`` on 127.0.0.1 (keepalive off)."""
        serve = partial(trio_ws.serve, handler, "127.0.0.1", 0, ssl=self.server_ssl)
        server: trio_ws.Server = await nursery.start(partial(serve, ping_interval=None, **options))
        return server

    async def open_stream(self, port: int) -> trio.abc.Stream:
        if self.client_ssl is None:
            return await trio.open_tcp_stream("127.0.0.1", port)
        return await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=self.client_ssl)


@pytest.fixture(scope="module")
def tls() -> Transport:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Transport("tls", server, client)


@pytest.fixture(params=["tcp", "tls"])
def transport(request: pytest.FixtureRequest, tls: Transport) -> Transport:
    return tls if request.param == "tls" else Transport("tcp")


@pytest.fixture(params=["slices", "every call"])
def scheduling(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Calls that do not wait yield once per 0.5 ms slice (as shipped), or at every call:
    then every point where any of them could yield is swept too."""
    if request.param == "every call":
        monkeypatch.setattr(_yielding, "SLICE", 0.0)
    return str(request.param)


def live_tasks() -> int:
    root = trio.lowlevel.current_root_task()
    assert root is not None

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(c) for n in task.child_nurseries for c in n.child_tasks)

    return count(root)


class Baseline:
    """Open fds and live tasks, taken once; ``check()`` after each point, once peers ended."""

    def __init__(self) -> None:
        self.fds, self.tasks = open_fds(), live_tasks()

    async def check(self, *seen: Seen, where: object) -> None:
        for peer in seen:
            with trio.fail_after(30):  # a guard against a hang, not a measure
                await peer.ended.wait()
        await wait_all_tasks_blocked()
        assert (open_fds(), live_tasks()) == (self.fds, self.tasks), where


@asynccontextmanager
async def raw_server(transport: Transport) -> AsyncIterator[tuple[int, list[Seen]]]:
    """A raw echo server; yields its port and what each of its connections saw."""
    seen: list[Seen] = []

    async def handler(stream: trio.abc.Stream) -> None:
        peer = Seen()
        seen.append(peer)
        await run_server(stream, peer)

    async with trio.open_nursery() as nursery:
        if transport.server_ssl is None:
            serve = partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        else:
            serve = partial(
                trio.serve_ssl_over_tcp, handler, 0, transport.server_ssl, host="127.0.0.1"
            )
        [listener] = await nursery.start(serve)
        if isinstance(listener, trio.SSLListener):
            listener = listener.transport_listener
        assert isinstance(listener, trio.SocketListener)
        yield listener.socket.getsockname()[1], seen
        nursery.cancel_scope.cancel()


class Point:
    """One point of a sweep: ``cancelled()`` runs a block under the cancellation."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.stopper: CancelAfterSteps | None = None

    @contextmanager
    def cancelled(self) -> Iterator[trio.CancelScope]:
        scope = trio.CancelScope()
        with scope, cancel_after(scope, self.steps, trio.lowlevel.current_task()) as stopper:
            self.stopper = stopper
            yield scope

    @property
    def fired(self) -> bool:
        return self.stopper is not None and self.stopper.fired


def record(name: str, transport: Transport, scheduling: str, points: int) -> None:
    SWEPT[f"{name} ({transport.name}, yields: {scheduling})"] = points
    assert points < LIMIT, f"{name}: the operation never completed uncancelled"


# -- the client: connect, a round trip, exit -------------------------------------------------


async def test_client_connect_round_trip_exit(transport: Transport, scheduling: str) -> None:
    async with raw_server(transport) as (port, seen):
        await wait_all_tasks_blocked()
        warm_up = Baseline()  # before: the peer's task may outlive connect()'s block
        async with trio_ws.connect(transport.uri(port), ssl=transport.client_ssl) as ws:
            await ws.send("warm-up")
            await ws.recv()
        await warm_up.check(*seen, where="warm-up")
        for steps in range(LIMIT):
            seen.clear()
            baseline, point = Baseline(), Point(steps)
            entered = finished = False
            with point.cancelled():
                async with trio_ws.connect(
                    transport.uri(port), ssl=transport.client_ssl, ping_interval=None
                ) as ws:
                    entered = True
                    await ws.send("hello")
                    assert await ws.recv() == "hello"
                    finished = True
            await baseline.check(*seen, where=steps)
            outcome = seen[0].outcome if seen else "no connection"
            if finished:
                assert outcome == 1000, steps  # cancelled after the body: the close is 1000
            elif entered:
                assert outcome == 1001, steps
            else:  # cancelled in connect(): the handshake is cut, no connection was opened
                assert outcome in {"no connection", "no upgrade", 1006}, steps
            if not point.fired:
                break
    record("client: connect + round trip + exit", transport, scheduling, steps + 1)


# -- the server: handshake, handler, close under a hard stop or a graceful aclose() -----------


async def _echo_twice(ws: trio_ws.ServerConnection) -> None:
    for _ in range(2):
        await ws.send(await ws.recv())


async def _stop_server(
    transport: Transport, stop: Callable[[trio_ws.Server, trio.Nursery, int], CancelAfterSteps]
) -> int:
    """Sweep a server stop over a raw client's whole exchange; the points swept."""
    for steps in range(1, LIMIT):
        baseline, seen = Baseline(), Seen()
        async with trio.open_nursery() as nursery:
            server = await transport.serve(nursery, _echo_twice)
            stream = await transport.open_stream(server.port)
            stopper = stop(server, nursery, steps)
            try:
                await run_client(stream, seen, ("a", "b"))
            finally:
                trio.lowlevel.remove_instrument(stopper)
            nursery.cancel_scope.cancel()  # the server, and a stop that never came
        outcome = seen.outcome
        assert outcome in {"no upgrade", 1001, 1000}, (steps, outcome)
        if outcome == 1000:
            assert seen.messages == ["a", "b"]
        await baseline.check(seen, where=steps)
        if not stopper.fired:
            return steps
    return LIMIT


async def test_server_hard_stop(transport: Transport, scheduling: str) -> None:
    def hard_stop(server: trio_ws.Server, _: trio.Nursery, steps: int) -> CancelAfterSteps:
        stopper = CancelAfterSteps(server.cancel_scope, steps)
        trio.lowlevel.add_instrument(stopper)
        return stopper

    points = await _stop_server(transport, hard_stop)
    record("server: hard stop", transport, scheduling, points)


async def test_server_graceful_aclose(transport: Transport, scheduling: str) -> None:
    def graceful(server: trio_ws.Server, nursery: trio.Nursery, steps: int) -> CancelAfterSteps:
        signal = trio.CancelScope()

        async def close_on_signal() -> None:
            with signal:
                await trio.sleep_forever()
            await server.aclose()

        nursery.start_soon(close_on_signal)
        stopper = CancelAfterSteps(signal, steps)
        trio.lowlevel.add_instrument(stopper)
        return stopper

    points = await _stop_server(transport, graceful)
    record("server: graceful aclose()", transport, scheduling, points)


# -- each call on an open connection, on both sides -------------------------------------------

Operation = Callable[[Connection, Point], Awaitable[None]]
LARGE = bytes(range(256)) * 1280  # 320 KiB: five 64 KiB frames


async def _send_small(ws: Connection, point: Point) -> None:
    with point.cancelled():
        await ws.send("small")
    await ws.send("next")
    received = [await ws.recv()]
    if received[0] == "small":  # it went out whole, or not at all
        received.append(await ws.recv())
    assert received in (["next"], ["small", "next"])


async def _send_large(ws: Connection, point: Point) -> None:
    with point.cancelled():
        await ws.send(LARGE)
    await ws.send("next")
    received = [await ws.recv()]
    if received[0] == LARGE:
        received.append(await ws.recv())
    assert received in (["next"], [LARGE, "next"])


async def _recv(ws: Connection, point: Point) -> None:
    await ws.send("echo")
    received: list[object] = []
    with point.cancelled():
        received.append(await ws.recv())
    if not received:  # cancelled: nothing was consumed
        received.append(await ws.recv())
    assert received == ["echo"]


async def _recv_streaming(ws: Connection, point: Point) -> None:
    await ws.send(LARGE)
    pieces = ws.recv_streaming()
    data = b""
    with point.cancelled():
        async for piece in pieces:
            assert isinstance(piece, bytes)
            data += piece
    async for piece in pieces:  # cancelled: the same iterator goes on, nothing lost
        assert isinstance(piece, bytes)
        data += piece
    assert data == LARGE


async def _ping(ws: Connection, point: Point) -> None:
    with point.cancelled():
        await ws.ping()
    await ws.send("after")
    assert await ws.recv() == "after"


async def _aclose(ws: Connection, point: Point) -> None:
    with point.cancelled():
        await ws.aclose()


OPERATIONS: dict[str, Operation] = {
    "send (small)": _send_small,
    "send (5 frames)": _send_large,
    "recv": _recv,
    "recv_streaming": _recv_streaming,
    "ping": _ping,
    "aclose": _aclose,
}


@pytest.mark.parametrize("name", OPERATIONS)
async def test_client_operation(transport: Transport, scheduling: str, name: str) -> None:
    operation = OPERATIONS[name]
    async with raw_server(transport) as (port, seen):
        for steps in range(LIMIT):
            seen.clear()
            baseline, point = Baseline(), Point(steps)
            async with trio_ws.connect(
                transport.uri(port), ssl=transport.client_ssl, ping_interval=None, max_size=None
            ) as ws:
                await operation(ws, point)
            [peer] = seen
            await baseline.check(peer, where=steps)
            assert peer.outcome == 1000, (steps, peer.outcome)
            if not point.fired:
                break
    record(f"client: {name}", transport, scheduling, steps + 1)


@pytest.mark.parametrize("name", OPERATIONS)
async def test_server_operation(transport: Transport, scheduling: str, name: str) -> None:
    operation = OPERATIONS[name]
    point = Point(0)
    done = trio.Event()

    async def handler(ws: trio_ws.ServerConnection) -> None:
        try:
            await operation(ws, point)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        server = await transport.serve(nursery, handler, max_size=None)
        for steps in range(LIMIT):
            baseline, point, done, seen = Baseline(), Point(steps), trio.Event(), Seen()
            stream = await transport.open_stream(server.port)
            await run_client(stream, seen, echo=True)
            await done.wait()
            await baseline.check(seen, where=steps)
            assert seen.outcome == 1000, (steps, seen.outcome)
            if not point.fired:
                break
        server.cancel_scope.cancel()
    record(f"server: {name}", transport, scheduling, steps + 1)
