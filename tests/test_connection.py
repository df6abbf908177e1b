"""trio_ws.connection: one open connection over a trio stream, from both sides.

Connections are built over in-memory streams from a wsproto handshake done in memory. The far
end is either another trio_ws connection or a :class:`Peer`: wsproto driven by hand, which reads
and answers only when a test says so.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import memory_stream_pair, memory_stream_pump, wait_all_tasks_blocked
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.events import Event as WSEvent
from wsproto.frame_protocol import CloseReason

from tests.conftest import connection_pair, open_connection, pair_side
from trio_ws import _yielding, http
from trio_ws._handshake import Opened
from trio_ws._keepalive import Keepalive
from trio_ws._protocol import FRAME_SIZE
from trio_ws._session import session
from trio_ws.client import ClientConnection
from trio_ws.connection import Connection, Data, State, _RecodedStream
from trio_ws.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    PayloadTooBig,
    ProtocolError,
)
from trio_ws.frames import Close
from trio_ws.server import ServerConnection

_OPTIONS: dict[str, Any] = {
    "close_timeout": 10,
    "ping_interval": None,
    "ping_timeout": 20,
    "max_size": 2**20,
    "max_queue": 16,
}
_LOGGER = logging.getLogger("tests.connection")

MemoryStream = trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]
StreamPair = tuple[trio.abc.Stream, trio.abc.Stream]


def open_wsproto() -> tuple[WSConnection, WSConnection]:
    """A wsproto client and server that completed the opening handshake in memory."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="example.com", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    return client, server


def new_connection(
    side: str, stream: trio.abc.Stream, ws: WSConnection, **options: Any
) -> Connection:
    """Our connection on ``side`` of ``stream``; its session is not running yet."""
    assert ws.connection is not None
    opened = Opened(
        ws.connection, http.Request("/"), http.Response(101, "Switching Protocols"), None
    )
    cls = ClientConnection if side == "client" else ServerConnection
    return open_connection(cls, stream, opened, _LOGGER, **{**_OPTIONS, **options})


def new_pair(
    streams: StreamPair | None = None,
    *,
    client_options: dict[str, Any] | None = None,
    server_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[Connection, Connection]:
    """A client and a server joined by ``streams`` (default: a memory stream pair).

    ``options`` apply to both; ``client_options`` and ``server_options`` override them.
    """
    client_stream, server_stream = streams or memory_stream_pair()
    client_ws, server_ws = open_wsproto()
    client_options = {**options, **(client_options or {})}
    server_options = {**options, **(server_options or {})}
    client = new_connection("client", client_stream, client_ws, **client_options)
    server = new_connection("server", server_stream, server_ws, **server_options)
    return client, server


def this_and_other(
    side: str, streams: StreamPair | None = None, **kwargs: Any
) -> tuple[Connection, Connection]:
    """(the connection under test, its trio_ws peer) for ``side``."""
    client, server = new_pair(streams, **kwargs)
    return (client, server) if side == "client" else (server, client)


@asynccontextmanager
async def sessions(*connections: Connection) -> AsyncGenerator[None, None]:
    """Run the sessions of ``connections``, nested in this task, as connect() and serve() do."""
    if not connections:
        yield
        return
    async with session(connections[0]), sessions(*connections[1:]):
        yield


async def run_until_closed(
    ws: Connection, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the session of ``ws`` with a body that waits for the connection to close."""
    async with session(ws):
        task_status.started()
        await ws.wait_closed()


class Peer:
    """The far end of a connection played by hand with wsproto: it reads only when asked."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self._events: deque[WSEvent] = deque()
        self.after_close = bytearray()  # bytes that came after the close frame

    async def send(self, *events: WSEvent) -> None:
        await self.stream.send_all(b"".join(self.ws.send(event) for event in events))

    async def receive(self) -> WSEvent | None:
        """The next event from our connection; None at end of stream."""
        while not self._events:
            data = await self.stream.receive_some()
            if not data:
                return None
            if self.ws.state is ConnectionState.CLOSED:
                self.after_close += data
                continue
            self.ws.receive_data(bytes(data))
            self._events.extend(self.ws.events())
        return self._events.popleft()

    async def close(self, code: int = 1000) -> None:
        """Close as a server does: close frame, then end of stream, without waiting."""
        await self.send(CloseConnection(code=code))
        await self.stream.aclose()

    async def receive_until_eof(self) -> list[WSEvent]:
        events = []
        while (event := await self.receive()) is not None:
            events.append(event)
        return events


def with_peer(side: str, **options: Any) -> tuple[Connection, Peer, MemoryStream, MemoryStream]:
    """Our connection on ``side``, a hand-driven peer, and the streams of both ends."""
    ours, theirs = memory_stream_pair()
    client_ws, server_ws = open_wsproto()
    ws, peer_ws = (client_ws, server_ws) if side == "client" else (server_ws, client_ws)
    return new_connection(side, ours, ws, **options), Peer(theirs, peer_ws), ours, theirs


def hold_writes(ours: MemoryStream, theirs: MemoryStream, release: trio.Event) -> None:
    """Make each write from ``ours`` block until ``release`` is set, then deliver it."""

    async def wait_then_pump() -> None:
        await release.wait()
        memory_stream_pump(ours.send_stream, theirs.receive_stream)

    ours.send_stream.send_all_hook = wait_then_pump


def cut_writes(ours: MemoryStream, theirs: MemoryStream, *, deliver: int) -> None:
    """Make the next write from ``ours`` deliver ``deliver`` bytes and hang; later ones hang.

    Closing ``ours`` then delivers end of stream and nothing else, like a TCP connection cut
    in the middle of a frame.
    """

    async def deliver_then_hang() -> None:
        memory_stream_pump(ours.send_stream, theirs.receive_stream, max_bytes=deliver)
        ours.send_stream.send_all_hook = hang
        await trio.sleep_forever()

    async def hang() -> None:
        await trio.sleep_forever()

    ours.send_stream.send_all_hook = deliver_then_hang
    ours.send_stream.close_hook = theirs.receive_stream.put_eof


class WireTap(trio.abc.Stream):
    """A stream that records each write as it is handed over, before any checkpoint, as a
    socket's send does; with ``hold_reads`` its reads ignore cancellation, so that the reader
    notices nothing until the peer sends or closes."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self.writes: list[bytes] = []
        self.hold_reads = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        with trio.CancelScope(shield=self.hold_reads):
            data = await self._inner.receive_some(max_bytes)
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()


def with_tapped_peer(
    side: str, **options: Any
) -> tuple[Connection, Peer, WireTap, MemoryStream, MemoryStream]:
    """Like :func:`with_peer`, with our end of the stream behind a :class:`WireTap`."""
    ours, theirs = memory_stream_pair()
    tap = WireTap(ours)
    client_ws, server_ws = open_wsproto()
    ws, peer_ws = (client_ws, server_ws) if side == "client" else (server_ws, client_ws)
    return new_connection(side, tap, ws, **options), Peer(theirs, peer_ws), tap, ours, theirs


# -- messages ------------------------------------------------------------------------------


async def test_send_and_recv_str_and_bytes_like(side: str) -> None:
    """str arrives as str; bytes, bytearray and memoryview arrive as bytes, in order."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        for message in ("tëxt", b"\x00bin", bytearray(b"array"), memoryview(b"view"), "", b""):
            await this.send(message)
        received = [await other.recv() for _ in range(6)]
    assert received == ["tëxt", b"\x00bin", b"array", b"view", "", b""]
    assert [type(message) for message in received] == [str, bytes, bytes, bytes, str, bytes]


async def test_send_rejects_other_types_and_stays_open(side: str) -> None:
    """send(42) raises TypeError before writing anything; the connection stays usable."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        with pytest.raises(TypeError, match="int"):
            await this.send(42)  # type: ignore[arg-type]
        await this.send("still open")
        assert await other.recv() == "still open"
        assert this.state is State.OPEN


async def test_async_for_yields_messages_then_ends_on_normal_close(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """`async for` yields every message sent before the close, then stops without raising."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        for message in ("a", b"b", "c"):
            await this.send(message)
        await this.aclose()
        assert trio.current_time() == 0.0  # the closing handshake needed no timeout
        assert [message async for message in other] == ["a", b"b", "c"]


async def test_async_for_raises_on_error_close(side: str) -> None:
    """`async for` stops only on a normal close: an error code raises ConnectionClosedError."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        await this.send("a")
        await this.aclose(4000, "app error")
        received = []
        with pytest.raises(ConnectionClosedError) as info:
            async for message in other:
                received.append(message)
    assert received == ["a"]
    assert (info.value.code, info.value.reason) == (4000, "app error")


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (1000, "bye", ConnectionClosedOK),
        (1001, "", ConnectionClosedOK),
        (1011, "oops", ConnectionClosedError),
        (4999, "app-défined", ConnectionClosedError),
    ],
)
async def test_recv_raises_with_the_peers_close_code_and_reason(
    side: str, code: int, reason: str, error: type[ConnectionClosed]
) -> None:
    """recv() after the peer's close raises OK for 1000/1001, Error otherwise, with its code
    and reason; close_code and close_reason say the same."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        await this.aclose(code, reason)
        with pytest.raises(ConnectionClosed) as info:
            await other.recv()
        assert type(info.value) is error
        assert (info.value.code, info.value.reason) == (code, reason)
        assert (other.close_code, other.close_reason) == (code, reason)
        # The closer gets the peer's answer, which echoes the code.
        assert this.close_code == code


async def test_close_frame_without_code_is_a_normal_close(side: str) -> None:
    """A close frame without a code counts as 1005 and ends recv() with ConnectionClosedOK."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(CloseConnection(code=CloseReason.NO_STATUS_RCVD))
        with pytest.raises(ConnectionClosedOK) as info:
            await this.recv()
        assert info.value.code == 1005
        assert this.close_code == 1005
        # An endpoint may not send 1005: the answer carries 1000.
        assert await peer.receive() == CloseConnection(code=1000, reason="")
        await peer.stream.aclose()


async def test_messages_received_before_the_close_are_still_delivered(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Closing does not drop queued messages: recv() returns them all, then raises."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        for i in range(3):
            await other.send(str(i))
        await other.aclose(1001, "going")
        assert this.state is State.CLOSED
        assert trio.current_time() == 0.0
        assert [await this.recv() for _ in range(3)] == ["0", "1", "2"]
        for _ in range(2):  # and it keeps raising the same way
            with pytest.raises(ConnectionClosedOK) as info:
                await this.recv()
            assert (info.value.code, info.value.reason) == (1001, "going")


async def test_two_tasks_in_recv_raise_concurrency_error(side: str) -> None:
    """A second recv() while one waits raises ConcurrencyError and leaves the first waiting."""
    this, other = this_and_other(side)
    received: list[str | bytes] = []

    async def receive() -> None:
        received.append(await this.recv())

    async with sessions(this, other), trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await wait_all_tasks_blocked()
        with pytest.raises(ConcurrencyError):
            await this.recv()
        await other.send("for the first")
    assert received == ["for the first"]


async def test_cancelled_recv_consumes_nothing(side: str) -> None:
    """Cancelling recv(), waiting or with a message ready, leaves the message for the next."""
    this, other = this_and_other(side)
    waiting = trio.CancelScope()

    async def recv_until_cancelled() -> None:
        with waiting:
            await this.recv()

    async with sessions(this, other):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recv_until_cancelled)
            await wait_all_tasks_blocked()
            waiting.cancel()
        assert waiting.cancelled_caught
        await other.send("kept")
        await wait_all_tasks_blocked()
        with trio.CancelScope() as ready:
            ready.cancel()
            await this.recv()
        assert ready.cancelled_caught
        assert await this.recv() == "kept"


# -- pings and pongs -----------------------------------------------------------------------


async def test_ping_returns_the_round_trip_time_and_updates_latency(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """ping() returns exactly the virtual time until the pong; latency keeps the last one."""
    this, peer, _, _ = with_peer(side)
    rtts: list[float] = []

    async def ping() -> None:
        rtts.append(await this.ping(b"rtt"))

    async with session(this), trio.open_nursery() as nursery:
        assert this.latency == 0.0
        nursery.start_soon(ping)
        assert await peer.receive() == Ping(payload=b"rtt")
        await trio.sleep(0.25)  # the network's round trip
        await peer.send(Pong(payload=b"rtt"))
    assert rtts == [0.25]
    assert this.latency == 0.25


async def test_ping_is_answered_by_a_trio_ws_peer(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A trio_ws peer answers pings by itself, with default (random), bytes or str data."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        assert await this.ping() == 0.0
        assert await this.ping(b"\x00\xff") == 0.0
        assert await this.ping("pïng") == 0.0


async def test_pong_answers_every_earlier_ping_but_not_later_ones(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A pong settles its ping and the ones sent before it (RFC 6455 §5.5.3), not later ones;
    an unsolicited pong settles nothing."""
    this, peer, _, _ = with_peer(side)
    rtts: dict[bytes, float] = {}

    async def ping(data: bytes) -> None:
        rtts[data] = await this.ping(data)

    async with session(this), trio.open_nursery() as nursery:
        for data in (b"a", b"b", b"c"):
            nursery.start_soon(ping, data)
            assert await peer.receive() == Ping(payload=data)
            await trio.sleep(1)
        await peer.send(Pong(payload=b"unsolicited"))
        await wait_all_tasks_blocked()
        assert rtts == {}
        await peer.send(Pong(payload=b"b"))
        await wait_all_tasks_blocked()
        assert rtts == {b"a": 3.0, b"b": 2.0}
        assert this.latency == 2.0
        await peer.send(Pong(payload=b"c"))
    assert rtts[b"c"] == 1.0
    assert this.latency == 1.0


async def test_ping_with_data_already_waiting_raises_concurrency_error(side: str) -> None:
    """Two pings may not wait for the same pong: the second raises ConcurrencyError."""
    this, peer, _, _ = with_peer(side)
    async with session(this), trio.open_nursery() as nursery:
        nursery.start_soon(this.ping, b"same")
        assert await peer.receive() == Ping(payload=b"same")
        with pytest.raises(ConcurrencyError):
            await this.ping(b"same")
        with pytest.raises(ConcurrencyError):
            await this.ping("same")
        await peer.send(Pong(payload=b"same"))
        await peer.close()


async def test_duplicate_pings_waiting_to_be_sent_raise_concurrency_error(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The duplicate check holds when both pings wait behind a slow send: exactly one is sent,
    the other raises ConcurrencyError, and the pong settles the one sent."""
    this, peer, ours, theirs = with_peer(side)
    release = trio.Event()
    outcomes: list[str] = []

    async def ping() -> None:
        try:
            await this.ping(b"dup")
        except ConcurrencyError:
            outcomes.append("ConcurrencyError")
        else:
            outcomes.append("pong")

    async with session(this):
        hold_writes(ours, theirs, release)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(this.send, "slow")
                await wait_all_tasks_blocked()
                nursery.start_soon(ping)
                nursery.start_soon(ping)
                await wait_all_tasks_blocked()
                release.set()
                assert await peer.receive() == TextMessage(data="slow")
                assert await peer.receive() == Ping(payload=b"dup")
                await wait_all_tasks_blocked()
                await peer.send(Pong(payload=b"dup"))
        assert sorted(outcomes) == ["ConcurrencyError", "pong"]


@pytest.mark.parametrize(
    "data", [b"x" * 126, "é" * 63, bytearray(200)], ids=["bytes", "utf8", "bytearray"]
)
async def test_ping_data_over_125_bytes_raises_value_error(side: str, data: str | bytes) -> None:
    """Control frame payloads are limited to 125 bytes (str counted in UTF-8); nothing is sent."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        with pytest.raises(ValueError, match="125"):
            await this.ping(data)
        with pytest.raises(ValueError, match="125"):
            await this.pong(data)
        assert await this.ping(b"x" * 125) >= 0.0
        assert this.state is State.OPEN


async def test_cancelled_ping_ignores_its_late_pong(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A ping given up on leaves no trace: its late pong changes nothing and the data is free
    to use again."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        with trio.move_on_after(1) as scope:
            await this.ping(b"late")
        assert scope.cancelled_caught
        assert await peer.receive() == Ping(payload=b"late")
        await peer.send(Pong(payload=b"late"))
        await wait_all_tasks_blocked()
        assert this.latency == 0.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(this.ping, b"late")
            assert await peer.receive() == Ping(payload=b"late")
            await trio.sleep(2)
            await peer.send(Pong(payload=b"late"))
        assert this.latency == 2.0


async def test_pending_ping_raises_connection_closed_when_the_connection_closes(
    side: str,
) -> None:
    """A ping still waiting when the peer closes raises the close as ConnectionClosed."""
    this, peer, _, _ = with_peer(side)
    errors: list[ConnectionClosed] = []

    async def ping() -> None:
        with pytest.raises(ConnectionClosedOK) as info:
            await this.ping(b"never")
        errors.append(info.value)

    async with session(this), trio.open_nursery() as nursery:
        nursery.start_soon(ping)
        assert await peer.receive() == Ping(payload=b"never")
        await peer.send(CloseConnection(code=1000, reason="done"))
        await peer.stream.aclose()
    assert [(error.code, error.reason) for error in errors] == [(1000, "done")]


async def test_peer_pings_are_answered_by_the_reader(side: str) -> None:
    """Pings are answered with the same payload without any call from the user."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(Ping(payload=b"one"), Ping(payload=b"two"))
        assert await peer.receive() == Pong(payload=b"one")
        assert await peer.receive() == Pong(payload=b"two")
        await peer.close()


async def test_pong_sends_an_unsolicited_pong(side: str) -> None:
    """pong() sends a pong frame with the data given (empty by default)."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await this.pong()
        await this.pong("hb")
        assert await peer.receive() == Pong(payload=b"")
        assert await peer.receive() == Pong(payload=b"hb")
        await peer.close()


# -- keepalive -----------------------------------------------------------------------------


async def answer_pings_slowly(peer: Peer, ping_times: list[float]) -> None:
    """Answer each ping 2.5 s after it came (within a ping_timeout of 3), noting when it came."""
    while isinstance(event := await peer.receive(), Ping):
        ping_times.append(trio.current_time())
        await trio.sleep(2.5)
        await peer.send(event.response())


async def test_keepalive_fails_a_silent_peer_with_1011_after_interval_plus_timeout(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer that never answers pings is failed at exactly ping_interval + ping_timeout:
    it gets a close frame with 1011, then end of stream; recv() raises 1011."""
    this, peer, _, _ = with_peer(side, ping_interval=5, ping_timeout=3)
    async with session(this):
        await this.wait_closed()
        assert trio.current_time() == 8.0
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert (info.value.code, info.value.reason) == (1011, "keepalive ping timeout")
    [ping, close] = await peer.receive_until_eof()
    assert isinstance(ping, Ping)
    assert close == CloseConnection(code=1011, reason="keepalive ping timeout")


async def test_keepalive_keeps_an_answering_peer_open_and_measures_latency(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Pings every ping_interval; a peer that answers within ping_timeout keeps the
    connection open, and latency is the last round-trip time."""
    this, peer, _, _ = with_peer(side, ping_interval=5, ping_timeout=3)
    ping_times: list[float] = []
    answer_pings = partial(answer_pings_slowly, peer, ping_times)

    async with session(this), trio.open_nursery() as nursery:
        nursery.start_soon(answer_pings)
        await trio.sleep(30)
        assert this.state is State.OPEN
        assert this.latency == 2.5
        nursery.cancel_scope.cancel()
    assert ping_times == [5.0, 12.5, 20.0, 27.5]


async def test_keepalive_timeout_reaches_a_peer_that_stopped_reading(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A trio_ws peer whose reader is stopped (full queue) cannot answer pings: we close with
    1011 at ping_interval + ping_timeout, and the peer still gets its queued message first."""
    this, other = this_and_other(
        side,
        client_options={"ping_interval": 5, "ping_timeout": 3} if side == "client" else None,
        server_options={"ping_interval": 5, "ping_timeout": 3} if side == "server" else None,
        max_queue=1,
    )
    async with sessions(this, other):
        await this.send("fills the queue")
        await this.wait_closed()
        assert trio.current_time() == 8.0
        assert await other.recv() == "fills the queue"
        with pytest.raises(ConnectionClosedError) as info:
            await other.recv()
        assert info.value.code == 1011
        assert other.close_code == 1011


def with_socket_peer(side: str, **options: Any) -> tuple[Connection, Peer]:
    """Our connection on ``side`` and a hand-driven peer, over a socket pair: a plain socket
    stream, which the reader reads directly."""
    ours, theirs = trio.socket.socketpair()
    client_ws, server_ws = open_wsproto()
    ws, peer_ws = (client_ws, server_ws) if side == "client" else (server_ws, client_ws)
    stream, peer_stream = trio.SocketStream(ours), trio.SocketStream(theirs)
    return new_connection(side, stream, ws, **options), Peer(peer_stream, peer_ws)


@pytest.mark.parametrize("waiting", ["idle", "in recv", "queue full"])
async def test_keepalive_over_a_socket_is_timed_by_the_reader_wherever_it_waits(
    side: str, waiting: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Over a plain socket the reader task hosts the connection's keepalive timer, with no
    task of its own: rounds start at their exact times whether the reader watches the socket
    (the application elsewhere), is parked (the application in recv()) or waits for room in
    a full queue, where the pong stays unread behind the messages and the peer is alive."""
    this, peer = with_socket_peer(side, ping_interval=5, ping_timeout=3, max_queue=1)
    ping_times: list[float] = []
    answer_pings = partial(answer_pings_slowly, peer, ping_times)

    async with session(this), trio.open_nursery() as nursery:
        assert this._core.tasks is not None  # pyright: ignore[reportPrivateUsage]
        assert len(this._core.tasks.child_tasks) == 1  # pyright: ignore[reportPrivateUsage]
        if waiting == "queue full":
            await peer.send(TextMessage(data="one"), TextMessage(data="two"))
        nursery.start_soon(answer_pings)
        if waiting == "in recv":
            with trio.move_on_after(30):
                await this.recv()
        else:
            await trio.sleep(30)
        assert this.state is State.OPEN
        nursery.cancel_scope.cancel()
    await peer.stream.aclose()
    assert ping_times == ([5.0] if waiting == "queue full" else [5.0, 12.5, 20.0, 27.5])


# -- closing -------------------------------------------------------------------------------


async def test_aclose_gives_the_peer_code_and_reason_and_closes_both_ends(side: str) -> None:
    """aclose(code, reason) sends them to the peer; both ends end CLOSED."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(this.aclose, 3001, "rätsel")
            assert await peer.receive() == CloseConnection(code=3001, reason="rätsel")
            await peer.send(CloseConnection(code=3001))
            if side == "client":  # RFC 6455 §7.1.1: the server closes TCP first
                await peer.stream.aclose()
        assert this.state is State.CLOSED
        assert this.close_code == 3001
    if side == "server":
        assert await peer.receive() is None


async def test_connection_closed_carries_both_close_frames_in_their_order(side: str) -> None:
    """ConnectionClosed has websockets' rcvd, sent and rcvd_then_sent: the end that closed
    first sent before it received, the other end received first and answered."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        await this.aclose(4000, "bye")
        with pytest.raises(ConnectionClosed) as closer:
            await this.recv()
        with pytest.raises(ConnectionClosed) as answerer:
            await other.recv()
    assert (closer.value.sent, closer.value.rcvd) == (Close(4000, "bye"), Close(4000, ""))
    assert closer.value.rcvd_then_sent is False
    assert (answerer.value.rcvd, answerer.value.sent) == (Close(4000, "bye"), Close(4000, ""))
    assert answerer.value.rcvd_then_sent is True
    assert str(Close(4000, "bye")) == "4000 (bye)"


async def test_connection_lost_without_close_frames_has_none_of_them(side: str) -> None:
    """A connection that ends without a close frame either way reports 1006, rcvd and sent
    None, and rcvd_then_sent None."""
    this, _, ours, _ = with_peer(side)
    async with session(this):
        await trio.aclose_forcefully(ours)
        with pytest.raises(ConnectionClosedError) as caught:
            await this.recv()
    assert caught.value.code == 1006
    assert (caught.value.rcvd, caught.value.sent, caught.value.rcvd_then_sent) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000])
async def test_aclose_with_a_code_that_may_not_be_sent_raises_value_error(
    side: str, code: int
) -> None:
    """Codes reserved or out of range (RFC 6455 §7.4), and 1014, which wsproto peers reject,
    raise ValueError and send nothing."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        with pytest.raises(ValueError, match=str(code)):
            await this.aclose(code)
        assert this.state is State.OPEN
        await this.send("still open")
        assert await other.recv() == "still open"


async def test_aclose_with_a_reason_over_123_bytes_raises_value_error(side: str) -> None:
    """The close reason is limited to 123 bytes in UTF-8 (RFC 6455 §5.5)."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        with pytest.raises(ValueError, match="123"):
            await this.aclose(1000, "é" * 62)
        assert this.state is State.OPEN
        await this.aclose(1000, "é" * 61 + "x")
        assert other.close_reason == "é" * 61 + "x"


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4999]
)
async def test_aclose_with_a_sendable_code_reaches_a_trio_ws_peer(side: str, code: int) -> None:
    """Every code aclose() accepts is one a trio_ws peer accepts and reports."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        await this.aclose(code)
        assert other.close_code == code


async def test_aclose_against_a_silent_peer_returns_after_close_timeout(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """With no answer to our close frame, aclose() gives up at exactly close_timeout, closes
    the stream, and close_code is 1006 (no close frame came)."""
    this, peer, _, _ = with_peer(side, close_timeout=4)
    async with session(this):
        await this.aclose()
        assert trio.current_time() == 4.0
        assert this.state is State.CLOSED
        assert (this.close_code, this.close_reason) == (1006, "")
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert info.value.code == 1006
    assert await peer.receive_until_eof() == [CloseConnection(code=1000, reason="")]


async def test_client_waits_close_timeout_for_the_server_to_close_tcp(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After the closing handshake the client lets the server close TCP first (RFC 6455
    §7.1.1), but no longer than close_timeout."""
    this, peer, _, _ = with_peer("client", close_timeout=4)
    async with session(this), trio.open_nursery() as nursery:
        nursery.start_soon(this.aclose)
        assert await peer.receive() == CloseConnection(code=1000, reason="")
        await peer.send(CloseConnection(code=1000))
        await wait_all_tasks_blocked()
        assert this.state is State.CLOSING
        await this.wait_closed()
        assert trio.current_time() == 4.0
        assert this.close_code == 1000
    assert await peer.receive() is None


async def test_cancelled_aclose_closes_the_stream_at_once(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Cancelling aclose() while it waits for the peer closes the stream right away."""
    this, peer, _, _ = with_peer(side, close_timeout=10)
    async with session(this):
        with trio.move_on_after(1):
            await this.aclose()
        assert trio.current_time() == 1.0
        assert this.state is State.CLOSED
    assert await peer.receive_until_eof() == [CloseConnection(code=1000, reason="")]


async def test_aclose_after_close_returns_at_once(side: str) -> None:
    """aclose() on a closed connection does nothing, and still checkpoints."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        await this.aclose(4001)
        with trio.testing.assert_checkpoints():
            await this.aclose(1000)
        assert other.close_code == 4001


async def test_cancelled_session_body_closes_with_1001(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A session whose body is cancelled still runs the closing handshake, with 1001."""
    this, other = this_and_other(side)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_until_closed, other)
        with trio.CancelScope() as scope:
            async with session(this):
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert this.state is State.CLOSED
        assert trio.current_time() == 0.0  # the closing handshake needed no timeout
    with pytest.raises(ConnectionClosedOK) as info:
        await other.recv()
    assert (info.value.code, info.value.reason) == (1001, "going away")


async def test_exception_in_session_body_closes_with_1011_and_propagates_unwrapped(
    side: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The body's exception closes the connection with 1011 and comes out as itself, never
    in an ExceptionGroup."""
    this, other = this_and_other(side)
    error = KeyError("boom")
    async with trio.open_nursery() as nursery:
        await nursery.start(run_until_closed, other)
        with pytest.raises(KeyError) as info:
            async with session(this):
                raise error
    assert info.value is error
    assert this.state is State.CLOSED
    assert trio.current_time() == 0.0
    with pytest.raises(ConnectionClosedError) as closed:
        await other.recv()
    assert (closed.value.code, closed.value.reason) == (1011, "internal error")


async def test_exception_group_from_session_body_comes_out_as_raised(side: str) -> None:
    """An ExceptionGroup the body raises comes out as that very group, not nested in another
    nor copied."""
    this, other = this_and_other(side)
    group = ExceptionGroup("user's", [ValueError("a"), TypeError("b")])
    async with trio.open_nursery() as nursery:
        await nursery.start(run_until_closed, other)
        with pytest.raises(ExceptionGroup) as info:
            async with session(this):
                raise group
    assert info.value is group
    assert other.close_code == 1011


async def test_session_body_that_returns_closes_with_1000(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A body that returns closes the connection with 1000 and waits for it to be closed."""
    this, other = this_and_other(side)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_until_closed, other)
        async with session(this):
            await this.send("bye")
        assert this.state is State.CLOSED
        assert trio.current_time() == 0.0
    assert await other.recv() == "bye"
    with pytest.raises(ConnectionClosedOK) as info:
        await other.recv()
    assert info.value.code == 1000


async def test_wait_closed_returns_once_the_peer_closed(side: str) -> None:
    """wait_closed() blocks while open and returns once the connection is closed."""
    this, peer, _, _ = with_peer(side)
    done: list[State] = []

    async def wait() -> None:
        await this.wait_closed()
        done.append(this.state)

    async with session(this), trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await wait_all_tasks_blocked()
        assert done == []
        await peer.send(CloseConnection(code=1000))
        assert await peer.receive() == CloseConnection(code=1000, reason="")
        await peer.stream.aclose()
    assert done == [State.CLOSED]


async def test_state_goes_from_open_to_closing_to_closed(side: str) -> None:
    """OPEN until our close frame is sent, CLOSING until the stream is closed, then CLOSED;
    close_code stays None until a close frame has been received."""
    this, peer, _, _ = with_peer(side)
    async with session(this), trio.open_nursery() as nursery:
        assert (this.state, this.close_code, this.close_reason) == (State.OPEN, None, None)
        nursery.start_soon(this.aclose)
        assert await peer.receive() == CloseConnection(code=1000, reason="")
        assert (this.state, this.close_code) == (State.CLOSING, None)
        await peer.send(CloseConnection(code=1000, reason="ok"))
        await wait_all_tasks_blocked()
        if side == "client":  # waits for the server to close TCP
            assert (this.state, this.close_code) == (State.CLOSING, 1000)
            await peer.stream.aclose()
            await wait_all_tasks_blocked()
        assert (this.state, this.close_code, this.close_reason) == (State.CLOSED, 1000, "ok")


async def test_send_after_close_raises_connection_closed(side: str) -> None:
    """After the closing handshake, send, ping and pong raise ConnectionClosed on both ends."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        await this.aclose(1000, "done")
        for ws in (this, other):
            with pytest.raises(ConnectionClosedOK):
                await ws.send("late")
            with pytest.raises(ConnectionClosedOK):
                await ws.ping()
            with pytest.raises(ConnectionClosedOK):
                await ws.pong()


async def test_send_after_receiving_a_close_frame_raises_connection_closed() -> None:
    """Once the peer's close frame is in, send() raises its code and reason, even while the
    client still waits for the server to close TCP; nothing follows our close frame."""
    this, peer, _, _ = with_peer("client")
    async with session(this):
        await peer.send(CloseConnection(code=1000, reason="x"))
        assert await peer.receive() == CloseConnection(code=1000, reason="")
        assert this.state is State.CLOSING
        with pytest.raises(ConnectionClosedOK) as info:
            await this.send("too late")
        assert (info.value.code, info.value.reason) == (1000, "x")
        await peer.stream.aclose()
    assert peer.after_close == b""


async def test_close_while_a_large_message_goes_out_comes_after_it_whole(side: str) -> None:
    """A message over FRAME_SIZE is queued whole, frame by frame: a close frame that arrives
    while it goes out is answered after its last frame, never in the middle of it."""
    this, peer = with_lockstep_peer(side)
    async with session(this), trio.open_nursery() as nursery:
        nursery.start_soon(this.send, b"\x05" * (3 * FRAME_SIZE))
        first = await peer.receive()
        assert isinstance(first, BytesMessage)
        assert not first.message_finished
        await peer.send(CloseConnection(code=1000, reason="stop"))
        received = len(first.data)
        while not isinstance(event := await peer.receive(), CloseConnection):
            assert isinstance(event, BytesMessage)
            received += len(event.data)
        assert received == 3 * FRAME_SIZE
        assert event == CloseConnection(code=1000, reason="")
        await peer.stream.aclose()
        await this.wait_closed()
    assert this.close_code == 1000


# -- who reads the socket ------------------------------------------------------------------


class ReadTap(trio.abc.Stream):
    """A stream that records which task makes each read that returns data."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self.readers: list[trio.lowlevel.Task] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._inner.receive_some(max_bytes)
        if data:
            self.readers.append(trio.lowlevel.current_task())
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()


def with_read_tap(side: str, **options: Any) -> tuple[Connection, Peer, ReadTap]:
    ours, theirs = memory_stream_pair()
    tap = ReadTap(ours)
    client_ws, server_ws = open_wsproto()
    ws, peer_ws = (client_ws, server_ws) if side == "client" else (server_ws, client_ws)
    return new_connection(side, tap, ws, **options), Peer(theirs, peer_ws), tap


async def test_the_reader_task_alone_reads_the_stream(side: str) -> None:
    """Every read is the reader task's: recv() takes what it put in the inbox."""
    this, peer, tap = with_read_tap(side)
    async with session(this):
        for index in range(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.send, TextMessage(data=f"m{index}"))
                assert await this.recv() == f"m{index}"
        assert len(tap.readers) == 5
        assert len(set(tap.readers)) == 1
        assert trio.lowlevel.current_task() not in tap.readers
        await peer.close()


async def test_a_ping_is_answered_while_recv_waits(side: str) -> None:
    """A ping that comes while recv() waits for a message is answered at once."""
    this, peer, _ = with_read_tap(side)
    async with session(this), trio.open_nursery() as nursery:
        received: list[Data] = []

        async def receive() -> None:
            received.append(await this.recv())

        nursery.start_soon(receive)
        await wait_all_tasks_blocked()
        await peer.send(Ping(payload=b"p"))
        assert await peer.receive() == Pong(payload=b"p")
        assert received == []
        await peer.send(TextMessage(data="after"))
        await wait_all_tasks_blocked()
        assert received == ["after"]
        await peer.close()


async def test_a_pong_goes_out_before_the_echo_of_the_message_its_ping_came_in(
    side: str,
) -> None:
    """A ping between the fragments of a message is answered before recv() returns that
    message, so an echo of the message follows the pong on the wire (RFC 6455 §5.5.2;
    Autobahn 5.6-5.8)."""
    this, peer, _, _ = with_peer(side)
    async with session(this), trio.open_nursery() as nursery:

        async def echo() -> None:
            await this.send(await this.recv())

        nursery.start_soon(echo)
        await wait_all_tasks_blocked()
        await peer.send(
            TextMessage(data="frag1", message_finished=False),
            Ping(payload=b"p"),
            TextMessage(data="frag2"),
        )
        assert await peer.receive() == Pong(payload=b"p")
        assert await peer.receive() == TextMessage(data="frag1frag2")
        await peer.close()


@pytest.mark.parametrize("busy", ["in-its-handler", "in-recv"])
async def test_a_ping_is_answered_at_once_whatever_the_application_does(
    side: str, busy: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Right after a recv(), with the application busy elsewhere or waiting in recv(), the
    peer's ping is answered in no virtual time at all: no grace, no late reply."""
    this, peer, _, _ = with_peer(side)
    async with session(this), trio.open_nursery() as nursery:
        await peer.send(TextMessage(data="first"))
        assert await this.recv() == "first"
        if busy == "in-recv":
            nursery.start_soon(this.recv)
        else:
            nursery.start_soon(trio.sleep, 60)  # the handler, busy with something else
        await wait_all_tasks_blocked()
        start = trio.current_time()
        await peer.send(Ping(payload=b"now"))
        assert await peer.receive() == Pong(payload=b"now")
        assert trio.current_time() - start < 0.005
        nursery.cancel_scope.cancel()
        await peer.close()


async def test_the_peers_close_is_answered_at_once_while_the_application_is_busy(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A close frame that comes right after a recv(), while the application is busy, is
    answered at once; the connection closes without waiting for the application."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(TextMessage(data="first"))
        assert await this.recv() == "first"
        start = trio.current_time()
        await peer.send(CloseConnection(code=1001, reason="bye"))
        assert await peer.receive() == CloseConnection(code=1001, reason="")
        assert trio.current_time() - start < 0.005
        if side == "client":
            await peer.stream.aclose()
        await this.wait_closed()
        assert trio.current_time() - start < 0.005
    assert this.close_code == 1001


async def test_a_pong_or_close_awaited_is_read_at_once_after_a_recv(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Right after a recv(), a pong and the peer's close are read at once: ping() measures the
    real round trip, and wait_closed() returns as soon as the peer closes."""
    this, peer, _ = with_read_tap(side)
    async with session(this), trio.open_nursery() as nursery:
        for message in ("first", "second"):
            nursery.start_soon(peer.send, TextMessage(data=message))
            assert await this.recv() == message
        rtts: list[float] = []

        async def ping() -> None:
            rtts.append(await this.ping(b"p"))

        nursery.start_soon(ping)
        assert await peer.receive() == Ping(payload=b"p")
        await peer.send(Pong(payload=b"p"))
        await wait_all_tasks_blocked()
        assert rtts == [0.0]

        nursery.start_soon(peer.send, TextMessage(data="third"))
        assert await this.recv() == "third"
        start = trio.current_time()
        nursery.start_soon(peer.close)
        await this.wait_closed()
        assert trio.current_time() == start


# -- failures ------------------------------------------------------------------------------


async def test_oversized_message_fails_with_1009_on_both_ends(side: str) -> None:
    """A message over the receiver's max_size: the sender sees 1009, the receiver's recv()
    raises ConnectionClosedError caused by PayloadTooBig, after the messages before it."""
    this, other = this_and_other(
        side,
        client_options={"max_size": 1000} if side == "server" else None,
        server_options={"max_size": 1000} if side == "client" else None,
    )
    async with sessions(this, other):
        await this.send(b"x" * 1000)
        await this.send(b"x" * 1001)
        assert await other.recv() == b"x" * 1000
        with pytest.raises(ConnectionClosedError) as info:
            await other.recv()
        assert info.value.code == 1009
        assert isinstance(info.value.__cause__, PayloadTooBig)
        with pytest.raises(ConnectionClosedError) as sender:
            await this.recv()
        assert sender.value.code == 1009
        assert this.close_code == 1009


async def test_compressed_bomb_fails_with_1009_on_both_ends(side: str) -> None:
    """With permessage-deflate, 10 MB of zeros (about 10 KB on the wire, in 64 KiB frames)
    against the receiver's max_size=1 MiB fails the connection with 1009 on both ends: the
    receiver closes before the message has all gone out, so the sender's send() raises too."""
    receiver = {"max_size": 2**20}
    async with connection_pair(
        compression="deflate",
        client_options=receiver if side == "server" else None,
        server_options=receiver if side == "client" else None,
    ) as pair:
        this, other = pair_side(pair, side)
        await this.send("before")
        try:
            await this.send(b"\x00" * 10**7)
        except ConnectionClosedError as exc:
            assert exc.code == 1009
        assert await other.recv() == "before"
        with pytest.raises(ConnectionClosedError) as info:
            await other.recv()
        assert info.value.code == 1009
        assert isinstance(info.value.__cause__, PayloadTooBig)
        with pytest.raises(ConnectionClosedError) as sender:
            await this.recv()
        assert sender.value.code == 1009


async def test_protocol_error_from_peer_fails_with_1002(side: str) -> None:
    """A frame that breaks RFC 6455 gets a 1002 close frame, then end of stream; recv() raises
    ConnectionClosedError caused by ProtocolError."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        masked = 0x80 if side == "server" else 0
        await peer.stream.send_all(bytes([0x83, masked]) + (b"\x00" * 4 if masked else b""))
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert info.value.code == 1002
        assert isinstance(info.value.__cause__, ProtocolError)
    [close] = await peer.receive_until_eof()
    assert isinstance(close, CloseConnection)
    assert close.code == 1002


async def test_lost_connection_gives_1006(side: str) -> None:
    """The stream ending without a close frame ends recv() and send() with 1006."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(TextMessage(data="last"))
        await peer.stream.aclose()
        assert await this.recv() == "last"
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert info.value.code == 1006
        with pytest.raises(ConnectionClosedError) as info:
            await this.send("x")
        assert info.value.code == 1006
        assert (this.state, this.close_code) == (State.CLOSED, 1006)


async def test_peer_gone_before_our_pong_is_a_lost_connection_not_an_internal_error(
    side: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A pong that cannot be written because the peer vanished ends the connection with 1006
    quietly: the reader does not crash, nothing is logged as an error."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(Ping(payload=b"anyone?"))
        await peer.stream.aclose()
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert info.value.code == 1006
        assert (this.state, this.close_code) == (State.CLOSED, 1006)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- backpressure --------------------------------------------------------------------------


async def test_full_queue_stops_the_reader_so_the_sender_blocks(side: str) -> None:
    """With max_queue=2 and no recv(), the reader stops reading: over a lockstep stream, with
    no room in the sender's write buffer, the sender completes exactly two sends; each recv()
    lets exactly one more through."""
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    this, other = this_and_other(
        side,
        (client_stream, server_stream),
        max_queue=(2, 2),
        client_options={"write_limit": (0, 0)},
        server_options={"write_limit": (0, 0)},
    )
    sent: list[int] = []

    async def send_all() -> None:
        for i in range(6):
            await other.send(str(i))
            sent.append(i)

    async with sessions(this, other), trio.open_nursery() as nursery:
        nursery.start_soon(send_all)
        await wait_all_tasks_blocked()
        assert sent == [0, 1]
        for i in range(4):
            assert await this.recv() == str(i)
            await wait_all_tasks_blocked()
            assert sent == list(range(i + 3))
        assert [await this.recv(), await this.recv()] == ["4", "5"]


async def test_messages_from_one_read_are_all_kept_and_pings_wait_for_room(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Messages that arrive in one read are all queued, even past max_queue; then the reader
    reads nothing (a ping goes unanswered) until recv() makes room."""
    this, peer, _, _ = with_peer(side, max_queue=1)
    async with session(this):
        await peer.send(*(TextMessage(data=str(i)) for i in range(5)))
        await wait_all_tasks_blocked()
        await peer.send(Ping(payload=b"?"))
        with trio.move_on_after(1) as scope:
            await peer.receive()
        assert scope.cancelled_caught
        assert [await this.recv() for _ in range(5)] == ["0", "1", "2", "3", "4"]
        assert await peer.receive() == Pong(payload=b"?")
        await peer.close()


async def test_max_queue_none_never_stops_reading(side: str) -> None:
    """Without max_queue, the reader keeps reading (and answering pings) however many
    messages wait."""
    this, peer, _, _ = with_peer(side, max_queue=None)
    async with session(this):
        for i in range(100):
            await peer.send(TextMessage(data=str(i)))
        await peer.send(Ping(payload=b"?"))
        assert await peer.receive() == Pong(payload=b"?")
        assert [await this.recv() for _ in range(100)] == [str(i) for i in range(100)]
        await peer.close()


async def test_aclose_with_a_full_queue_still_reads_the_answer(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A reader stopped by a full queue resumes for the closing handshake."""
    this, other = this_and_other(side, max_queue=1)
    async with sessions(this, other):
        await other.send("a")
        await other.send("b")
        await wait_all_tasks_blocked()
        await this.aclose()
        assert trio.current_time() == 0.0  # no wait for close_timeout
        assert this.state is State.CLOSED
        assert this.close_code == 1000


# -- cancelling a send ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [1000, 3 * FRAME_SIZE + 1])
async def test_send_cancelled_while_its_bytes_go_out_never_cuts_a_frame(
    side: str, size: int, autojump_clock: trio.testing.MockClock
) -> None:
    """A send() cancelled while the peer has taken only part of its message: the message is
    queued whole and goes out whole once the peer reads, and the connection stays usable."""
    this, peer, ours, theirs = with_peer(side, write_limit=(0, 0))
    release = trio.Event()

    async def deliver_3_bytes_then_wait() -> None:
        memory_stream_pump(ours.send_stream, theirs.receive_stream, max_bytes=3)
        await release.wait()
        memory_stream_pump(ours.send_stream, theirs.receive_stream)

    async with session(this):
        ours.send_stream.send_all_hook = deliver_3_bytes_then_wait
        with trio.move_on_after(1) as scope:
            await this.send(b"x" * size)
        assert scope.cancelled_caught
        assert this.state is State.OPEN
        release.set()
        await this.send("after")
        data = b""
        while not isinstance(event := await peer.receive(), TextMessage):
            assert isinstance(event, BytesMessage)
            data += event.data
        assert data == b"x" * size
        assert event == TextMessage(data="after")
        await peer.close()


async def test_keepalive_ping_cut_mid_frame_is_not_followed_by_a_close_frame(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A keepalive ping stuck mid-frame past ping_timeout fails the connection with 1011
    and writes nothing after it: a close frame would be read as the ping's payload."""
    this, peer, tap, ours, theirs = with_tapped_peer(side, ping_interval=5, ping_timeout=3)
    async with session(this):
        tap.hold_reads = True
        cut_writes(ours, theirs, deliver=1)
        await trio.sleep(8)
        await wait_all_tasks_blocked()
        assert len(tap.writes) == 1
        await peer.stream.aclose()
        await this.wait_closed()
        assert trio.current_time() == 8.0
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert info.value.code == 1011
    assert len(tap.writes) == 1


async def test_send_cancelled_while_waiting_for_room_still_sends_its_message(side: str) -> None:
    """A send() cancelled while the write buffer drains has its message queued already: it
    goes out whole, in order, and the connection stays open."""
    this, peer, ours, theirs = with_peer(side, write_limit=(0, 0))
    release = trio.Event()
    waiting = trio.CancelScope()

    async def send_in_scope() -> None:
        with waiting:
            await this.send("cancelled")

    async with session(this):
        hold_writes(ours, theirs, release)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(this.send, "first")
            await wait_all_tasks_blocked()
            nursery.start_soon(send_in_scope)
            await wait_all_tasks_blocked()
            waiting.cancel()
            await wait_all_tasks_blocked()
            release.set()
        assert waiting.cancelled_caught
        await this.send("second")
        assert this.state is State.OPEN
        events = [await peer.receive() for _ in range(3)]
        await peer.close()
    assert events == [TextMessage(data=m) for m in ("first", "cancelled", "second")]


# -- checkpoints ---------------------------------------------------------------------------


async def test_calls_that_do_not_block_are_cancel_points(side: str) -> None:
    """send, recv, ping and pong raise Cancelled in a cancelled scope even when they would not
    block, before they act: nothing is sent, the message stays for the next recv()."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        await this.send("kept")
        await wait_all_tasks_blocked()
        calls = (lambda: this.send("never"), other.recv, this.ping, this.pong)
        for call in calls:
            with trio.CancelScope() as scope:
                scope.cancel()
                await call()
            assert scope.cancelled_caught
        assert await other.recv() == "kept"
        await this.send("next")
        assert await other.recv() == "next"  # "never" was not sent


async def test_calls_that_do_not_block_yield_once_per_slice(
    side: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They let other tasks run once the running task has had its slice (at every call with a
    slice of 0), and not before (none in a row of calls with an endless slice). ping() waits
    for its pong: it blocks."""
    this, other = this_and_other(side)
    passes = 0

    async def count_passes() -> None:
        nonlocal passes
        while True:
            passes += 1
            await trio.lowlevel.checkpoint()

    async with sessions(this, other), trio.open_nursery() as nursery:
        for message in ("a", "b"):
            await this.send(message)
        await wait_all_tasks_blocked()
        nursery.start_soon(count_passes)
        monkeypatch.setattr(_yielding, "SLICE", 0.0)
        for call in (lambda: this.send("c"), other.recv, this.ping, this.pong):
            with trio.testing.assert_checkpoints():
                await call()
        monkeypatch.setattr(_yielding, "SLICE", float("inf"))
        before = passes
        for _ in range(20):
            await this.send("d")
        assert await other.recv() == "b"
        await this.pong()
        assert passes == before
        nursery.cancel_scope.cancel()


async def test_calls_on_a_closed_connection_checkpoint(side: str) -> None:
    """Raising ConnectionClosed is no excuse to skip the checkpoint."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        await this.aclose()
        for call in (lambda: this.send("x"), this.recv, this.ping, this.pong):
            with trio.testing.assert_checkpoints(), pytest.raises(ConnectionClosed):
                await call()
        with trio.testing.assert_checkpoints():
            await this.wait_closed()


# -- what you can ask ----------------------------------------------------------------------


async def test_connection_describes_itself(side: str) -> None:
    """Each connection has its own id; over memory streams there is no socket address."""
    this, other = this_and_other(side)
    assert this.id != other.id
    assert (this.local_address, this.remote_address) == (None, None)
    assert this.request.path == "/"
    assert this.response.status_code == 101
    assert this.subprotocol is None
    assert repr(this) == f"<{type(this).__name__} {this.id} OPEN>"
    assert isinstance(this, ClientConnection if side == "client" else ServerConnection)


async def test_send_cancelled_before_it_starts_sends_nothing_and_stays_open(side: str) -> None:
    """A send() whose scope is already cancelled raises Cancelled before writing a byte: the
    connection stays open and the next message goes through whole."""
    async with connection_pair() as pair:
        this, other = pair_side(pair, side)
        with trio.CancelScope() as scope:
            scope.cancel()
            await this.send("never")
        assert scope.cancelled_caught
        assert this.state is State.OPEN
        await this.send("after")
        assert await other.recv() == "after"


# -- fragmented messages, sent -------------------------------------------------------------


async def test_send_iterable_sends_one_message_a_frame_per_piece(side: str) -> None:
    """An iterable of str goes out as one text message in as many frames, FIN on the last;
    bytes-like pieces as one binary message."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await this.send(["ab", "ç", "d"])
        await this.send([b"\x00", bytearray(b"\x01"), memoryview(b"\x02")])
        frames = [await peer.receive() for _ in range(6)]
        await peer.close()
    assert [(type(f), f.data, f.message_finished) for f in frames] == [  # type: ignore[union-attr]
        (TextMessage, "ab", False),
        (TextMessage, "ç", False),
        (TextMessage, "d", True),
        (BytesMessage, b"\x00", False),
        (BytesMessage, b"\x01", False),
        (BytesMessage, b"\x02", True),
    ]


@pytest.mark.parametrize(
    "message",
    [["text", b"bytes"], [b"bytes", "text"], ["text", 42], [None], {"a": 1, 2: "b"}],
    ids=["str-then-bytes", "bytes-then-str", "str-then-int", "none", "dict-with-int-key"],
)
async def test_send_iterable_with_bad_pieces_raises_type_error_before_sending(
    side: str, message: Any
) -> None:
    """Mixed or non-data pieces raise TypeError before a byte is written; the connection
    stays open."""
    this, peer, tap, _, _ = with_tapped_peer(side)
    async with session(this):
        with pytest.raises(TypeError):
            await this.send(message)
        assert tap.writes == []
        assert this.state is State.OPEN
        await this.send("after")
        assert await peer.receive() == TextMessage(data="after")
        await peer.close()


async def test_send_empty_iterable_sends_nothing(side: str) -> None:
    """An iterable without pieces has no type to send: nothing goes out."""
    this, peer, tap, _, _ = with_tapped_peer(side)
    async with session(this):
        await this.send([])
        assert tap.writes == []
        await peer.close()


async def test_send_async_iterable_sends_each_piece_as_it_comes(side: str) -> None:
    """An async iterable's pieces go out as they are produced, then an empty final frame;
    the trio_ws peer receives the joined message."""
    this, peer, _, _ = with_peer(side)
    send_piece, pieces = trio.open_memory_channel[str](0)
    async with session(this), trio.open_nursery() as nursery:
        nursery.start_soon(this.send, pieces)
        async with send_piece:
            await send_piece.send("one ")
            assert await peer.receive() == TextMessage(
                data="one ", frame_finished=True, message_finished=False
            )
            await send_piece.send("two")
            assert await peer.receive() == TextMessage(
                data="two", frame_finished=True, message_finished=False
            )
        assert await peer.receive() == TextMessage(
            data="", frame_finished=True, message_finished=True
        )
        await peer.close()


async def test_fragmented_message_reaches_a_trio_ws_peer_whole_with_compression(
    side: str,
) -> None:
    """With permessage-deflate, the pieces of one message compress as one and arrive joined."""
    async with connection_pair(compression="deflate") as pair:
        this, other = pair_side(pair, side)
        await this.send(["abc" * 100] * 5)
        await this.send([b"\x00" * 1000, b"\x01" * 1000])
        assert await other.recv() == "abc" * 500
        assert await other.recv() == b"\x00" * 1000 + b"\x01" * 1000


async def test_pings_and_pongs_go_out_between_the_frames_of_a_message(side: str) -> None:
    """While an async iterable makes the next piece, ping() completes and the reader answers
    the peer's ping: control frames interleave with a fragmented message."""
    async with connection_pair() as pair:
        this, other = pair_side(pair, side)
        send_piece, pieces = trio.open_memory_channel[bytes](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(this.send, pieces)
            async with send_piece:
                await send_piece.send(b"first")
                await this.ping(b"ours")
                await other.ping(b"theirs")
                await send_piece.send(b"second")
        assert await other.recv() == b"firstsecond"


async def test_whole_message_waits_for_a_fragmented_message_in_progress(side: str) -> None:
    """A send() that starts while a fragmented message is going out goes after all of it."""
    async with connection_pair() as pair:
        this, other = pair_side(pair, side)
        send_piece, pieces = trio.open_memory_channel[str](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(this.send, pieces)
            async with send_piece:
                await send_piece.send("a")
                nursery.start_soon(this.send, "whole")
                await wait_all_tasks_blocked()
                await send_piece.send("b")
        assert [await other.recv(), await other.recv()] == ["ab", "whole"]


async def _mixed_pieces() -> AsyncIterator[str | bytes]:
    yield "text"
    yield b"bytes"


async def test_async_iterable_that_mixes_types_fails_the_connection_with_1011(side: str) -> None:
    """A bytes piece after a str one raises TypeError; the message is cut short, so the
    connection fails with 1011 and the peer gets the close frame after the first piece."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        with pytest.raises(TypeError):
            await this.send(_mixed_pieces())
        assert this.state is State.CLOSED
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert (info.value.code, info.value.reason) == (1011, "message cut short")
        events = await peer.receive_until_eof()
    assert events == [
        TextMessage(data="text", frame_finished=True, message_finished=False),
        CloseConnection(code=1011, reason="message cut short"),
    ]


async def test_send_cancelled_between_pieces_fails_the_connection_with_1011(side: str) -> None:
    """Cancelled while waiting for its next piece, send() leaves a message that cannot be
    finished: the connection fails with 1011, with a close frame."""
    async with connection_pair() as pair:
        this, other = pair_side(pair, side)
        send_piece, pieces = trio.open_memory_channel[str](0)
        async with send_piece, trio.open_nursery() as nursery:
            nursery.start_soon(this.send, pieces)
            await send_piece.send("started")
            await wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        await this.wait_closed()
        with pytest.raises(ConnectionClosedError) as info:
            await other.recv()
        assert (info.value.code, info.value.reason) == (1011, "message cut short")


# -- writes that make no progress ----------------------------------------------------------


def with_lockstep_peer(side: str, **options: Any) -> tuple[Connection, Peer]:
    """Our connection and a hand-driven peer over a lockstep stream: a write blocks until
    the peer reads it all."""
    ours, theirs = trio.testing.lockstep_stream_pair()
    client_ws, server_ws = open_wsproto()
    ws, peer_ws = (client_ws, server_ws) if side == "client" else (server_ws, client_ws)
    return new_connection(side, ours, ws, **options), Peer(theirs, peer_ws)


@pytest.mark.parametrize("started", [0.0, 4.0])
async def test_write_without_progress_for_ping_timeout_fails_the_connection(
    side: str, started: float, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer that stops reading leaves our message in the write buffer; the keepalive ping
    queued behind it gets no pong, and at its timeout (ping_interval + ping_timeout) the
    connection fails with 1011, since the writes made no progress for ping_timeout."""
    this, _peer = with_lockstep_peer(side, ping_interval=5, ping_timeout=3, write_limit=(0, 0))
    async with session(this):
        await trio.sleep(started)
        with pytest.raises(ConnectionClosedError) as info, trio.fail_after(60):
            await this.send("never read")
        assert trio.current_time() == 8.0
        reason = "no write progress for 3 s: the peer stopped reading"
        assert (info.value.code, info.value.reason) == (1011, reason)
        assert this.state is State.CLOSED


async def test_slow_write_that_makes_progress_is_not_failed(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A 1 MiB message to a peer that reads 128 KiB a second takes 8 s, longer than
    ping_timeout, but each 256 KiB chunk goes within it: the connection stays open, and the
    keepalive ping goes out after the message."""
    this, peer = with_lockstep_peer(side, ping_interval=1, ping_timeout=3, max_size=None)
    received: list[WSEvent] = []

    async def read_slowly() -> None:
        size = 0
        while size < 2**20:
            await trio.sleep(1)
            data = await peer.stream.receive_some(128 * 1024)
            size += len(data)
            peer.ws.receive_data(bytes(data))
            received.extend(peer.ws.events())
        pings = [event for event in received if isinstance(event, Ping)]
        while not pings:  # the ping went out after the message, maybe in its last read
            event = await peer.receive()
            assert event is not None
            (pings if isinstance(event, Ping) else received).append(event)
        await peer.send(pings[0].response())

    async with session(this), trio.open_nursery() as nursery:
        nursery.start_soon(read_slowly)
        await this.send(b"x" * 2**20)
        await wait_all_tasks_blocked()
        assert this.state is State.OPEN
    assert b"".join(e.data for e in received if isinstance(e, BytesMessage)) == b"x" * 2**20


async def test_compressed_pieces_can_be_inflated_as_they_arrive(side: str) -> None:
    """With permessage-deflate, each frame of a fragmented message is flushed: the peer's
    stream yields every piece before the next is produced."""
    async with connection_pair(compression="deflate") as pair:
        this, other = pair_side(pair, side)
        send_piece, pieces = trio.open_memory_channel[str](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(this.send, pieces)
            stream = other.recv_streaming()
            async with send_piece:
                for text in ("a" * 100, "b" * 100, "c"):
                    await send_piece.send(text)
                    with trio.fail_after(5):  # held back by zlib, it would never come
                        assert await stream.__anext__() == text
            assert [p async for p in stream] == []


# -- failure paths: what a bug, a cancellation or a busy application leaves ------------------


async def test_a_bug_in_a_ping_round_fails_the_connection_with_1011_and_its_cause(
    side: str, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """A bug raised in a keepalive ping round is reported, never raised: the connection
    fails with 1011 "internal error", the cause chained, and the session ends normally."""
    bug = RuntimeError("injected")

    async def broken_ping(self: Keepalive) -> bool:
        raise bug

    monkeypatch.setattr(Keepalive, "ping", broken_ping)
    this, peer, _, _ = with_peer(side, ping_interval=1)
    async with session(this):
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert (info.value.code, info.value.reason) == (1011, "internal error")
        assert info.value.__cause__ is bug
        assert trio.current_time() == 1.0
    assert this.state is State.CLOSED
    assert await peer.receive() == CloseConnection(code=1011, reason="internal error")


async def test_a_bug_that_escapes_a_background_task_is_an_internal_error_not_cancelled(
    side: str, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """A bug that escapes a background task comes out of the session as a WebSocketError
    "internal error" chained to it: never as a bare Cancelled or ExceptionGroup."""
    from trio_ws._writer import Writer
    from trio_ws.exceptions import WebSocketError

    bug = RuntimeError("injected")

    async def broken_drain(self: Writer) -> None:
        raise bug

    monkeypatch.setattr(Writer, "_drain_task", broken_drain)
    this, peer, _, _ = with_peer(side)
    with pytest.raises(WebSocketError, match="internal error") as info:
        async with session(this):
            await this.send("starts the drain task")
            await trio.sleep_forever()
    assert info.value.__cause__ is bug
    assert not isinstance(info.value, ConnectionClosed)
    assert this.state is State.CLOSED
    del peer


async def test_send_of_a_mapping_is_a_type_error_and_sends_nothing(side: str) -> None:
    """send({...}) raises TypeError (a forgotten json.dumps), instead of sending the keys."""
    async with connection_pair() as pair:
        this, other = pair_side(pair, side)
        for mapping in ({"type": "hello"}, {}):
            with pytest.raises(TypeError, match=r"json\.dumps"):
                await this.send(mapping)  # type: ignore[arg-type]
        await this.send("after")
        assert await other.recv() == "after"


async def test_keepalive_keeps_a_peer_whose_messages_fill_the_queue(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """With max_queue=4 and an application busy for 3 s, a peer that sends 10 messages and
    answers every ping is alive: no 1011, every message arrives once the application reads."""
    keepalive = {"ping_interval": 0.5, "ping_timeout": 0.5, "max_queue": 4}
    this, other = this_and_other(side, **{f"{side}_options": keepalive})
    async with sessions(this, other):
        for i in range(10):
            await other.send(str(i))
        await trio.sleep(3)  # busy elsewhere: the queue stays full, the reader stopped
        assert this.state is State.OPEN
        assert [await this.recv() for _ in range(10)] == [str(i) for i in range(10)]
        assert other.state is State.OPEN


class _CancelAfterSteps(trio.abc.Instrument):
    """Cancels ``scope`` as ``task`` starts its step number ``steps`` from now."""

    def __init__(self, task: trio.lowlevel.Task, scope: trio.CancelScope, steps: int) -> None:
        self.task, self.scope, self.steps = task, scope, steps

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps -= 1
            if self.steps == 0:
                self.scope.cancel()


@pytest.mark.parametrize("size", [10, 5 * FRAME_SIZE])
async def test_send_cancelled_at_every_step_never_cuts_a_frame(side: str, size: int) -> None:
    """Cancel a send() after each of its scheduling steps in turn, k = 0, 1, ... until one
    completes, while the peer reads slowly: every time, the peer gets the message whole or
    not at all, then the next message, and the connection stays open."""
    streams = trio.testing.lockstep_stream_pair()
    this, other = this_and_other(side, streams, write_limit=(1024, 0), max_size=None)
    swept = 0
    async with sessions(this, other):
        for steps in range(10_000):
            message = bytes([steps % 256]) * size
            async with trio.open_nursery() as nursery:
                with trio.CancelScope() as scope:
                    if steps == 0:
                        scope.cancel()
                    instrument = _CancelAfterSteps(trio.lowlevel.current_task(), scope, steps)
                    trio.lowlevel.add_instrument(instrument)
                    try:
                        await this.send(message)
                    finally:
                        trio.lowlevel.remove_instrument(instrument)
                nursery.start_soon(this.send, b"next")
                received = await other.recv()
                if received != b"next":
                    assert received == message
                    assert await other.recv() == b"next"
            assert this.state is State.OPEN
            swept += 1
            if not scope.cancelled_caught:
                break
    assert swept >= 2  # cancelled before the message is queued, and while it drains


async def test_async_iterable_cancelled_after_its_last_frame_is_not_cut(side: str) -> None:
    """A send() of an async iterable cancelled while its final frame drains: the message is
    whole, so the connection stays open and the next message follows it."""
    this, peer, ours, theirs = with_peer(side, write_limit=(0, 0))
    release, last_piece_taken = trio.Event(), trio.Event()

    async def pieces() -> AsyncIterator[str]:
        yield "a"
        yield "b"
        hold_writes(ours, theirs, release)  # the final frame's write will wait
        last_piece_taken.set()

    async with session(this), trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_when_blocked, scope, last_piece_taken)
            await this.send(pieces())
        assert scope.cancelled_caught
        release.set()
        await this.send("next")
        assert this.state is State.OPEN
        events = [await peer.receive() for _ in range(4)]
        assert events == [
            TextMessage(data="a", message_finished=False),
            TextMessage(data="b", message_finished=False),
            TextMessage(data="", message_finished=True),
            TextMessage(data="next"),
        ]
        await peer.close()


async def cancel_when_blocked(scope: trio.CancelScope, ready: trio.Event) -> None:
    await ready.wait()
    await wait_all_tasks_blocked()
    scope.cancel()


async def test_async_iterable_raising_connection_closed_still_fails_the_message(
    side: str,
) -> None:
    """An async iterable that raises a ConnectionClosed of its own (read from another
    connection) cuts our message short: our connection fails with 1011 rather than let the
    next message continue the unfinished one."""
    this, other = this_and_other(side)

    async def pieces() -> AsyncIterator[str]:
        yield "a"
        raise ConnectionClosedOK(1000, "the source closed")

    async with sessions(this, other):
        with pytest.raises(ConnectionClosedOK):
            await this.send(pieces())
        with pytest.raises(ConnectionClosedError) as info:
            await other.recv()
        assert (info.value.code, info.value.reason) == (1011, "message cut short")


# -- text= and decode= (websockets' conversions) -----------------------------------------------


async def test_send_text_flag_sends_bytes_as_text_and_str_as_binary(side: str) -> None:
    """send(bytes, text=True) is a text message, send(str, text=False) a binary one (their
    UTF-8), whole or in pieces, a character split between pieces included."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        await this.send("é€".encode(), text=True)
        assert await other.recv() == "é€"
        await this.send("é€", text=False)
        assert await other.recv() == "é€".encode()
        euro = "€".encode()
        await this.send([b"a", euro[:1], euro[1:]], text=True)
        assert await other.recv() == "a€"

        async def pieces() -> AsyncIterator[str | bytes]:
            yield "x"
            yield "é"

        await this.send(pieces(), text=False)
        assert await other.recv() == "xé".encode()
        with pytest.raises(UnicodeDecodeError):
            await this.send(b"\xff", text=True)
        await this.send("still open")
        assert await other.recv() == "still open"


async def test_recv_decode_flag_converts_what_arrives(side: str) -> None:
    """recv(decode=True) gives a binary message as str, recv(decode=False) a text message as
    bytes; recv_streaming(decode=...) converts each piece, characters kept whole."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        await other.send("é".encode())
        assert await this.recv(decode=True) == "é"
        await other.send("é")
        assert await this.recv(decode=False) == "é".encode()
        await other.send(b"raw")
        assert await this.recv(decode=None) == b"raw"
        euro = "€".encode()
        await other.send([euro[:1], euro[1:] + b"!"])
        decoded = [piece async for piece in this.recv_streaming(decode=True)]
        assert "".join(decoded) == "€!"
        assert all(isinstance(piece, str) for piece in decoded)
        await other.send(["ab", "c"])
        encoded = [piece async for piece in this.recv_streaming(decode=False)]
        assert b"".join(encoded) == b"abc"
        assert all(isinstance(piece, bytes) for piece in encoded)
        await other.send(b"\xff")
        with pytest.raises(UnicodeDecodeError):
            await this.recv(decode=True)


async def test_streamed_pieces_decode_a_character_split_between_frames() -> None:
    """recv_streaming(decode=True) keeps characters whole across pieces, and a message whose
    last character is cut short raises UnicodeDecodeError at its end."""
    euro = "€".encode()

    async def pieces(*items: bytes) -> AsyncIterator[str | bytes]:
        for item in items:
            yield item

    whole = _RecodedStream(pieces(b"a", euro[:2], euro[2:]), True)
    assert [piece async for piece in whole] == ["a", "", "€"]
    cut = _RecodedStream(pieces(euro[:2]), True)
    with pytest.raises(UnicodeDecodeError):
        [piece async for piece in cut]
