"""broadcast(): every open connection gets the message, framed once where the bytes are the same;
a slow or stuck client loses messages (or its connection, with slow="close") and delays no one.

The slow-client tests run over real sockets on 127.0.0.1: a stuck client is a raw TCP socket
with a small receive buffer that completes the opening handshake and then reads nothing, so the
server's kernel buffer and then its write buffer fill for real.
"""

from __future__ import annotations

import logging
import resource
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage
from wsproto.frame_protocol import FrameProtocol, Opcode

import trio_ws
from tests.conftest import _handshake, connection_pair, open_connection
from trio_ws import broadcasting as broadcast_module
from trio_ws._options import connection_options
from trio_ws._protocol import FRAME_SIZE, Protocol
from trio_ws._session import session
from trio_ws.broadcasting import broadcast
from trio_ws.connection import Connection
from trio_ws.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
)
from trio_ws.server import Server, ServerConnection

MESSAGES = [
    pytest.param("hello", id="text"),
    pytest.param("", id="empty-text"),
    pytest.param("é" * (FRAME_SIZE + 10), id="text-over-64KiB"),
    pytest.param(b"\x00\x01\x02", id="bytes"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(bytes(range(256)) * 400, id="bytes-over-64KiB"),
    pytest.param(bytearray(b"bytearray"), id="bytearray"),
    pytest.param(memoryview(b"xyz" * 30_000), id="memoryview-over-64KiB"),
]


def expected(message: str | bytes | bytearray | memoryview) -> str | bytes:
    return message if isinstance(message, str) else bytes(message)


def core(ws: Connection) -> Any:
    return ws._core


# -- memory streams: what goes out ------------------------------------------------------------


@asynccontextmanager
async def raw_server(compression: str | None = None) -> AsyncIterator[Any]:
    """A server connection whose session runs, with the client's end a bare memory stream.

    Yields (server connection, the client's stream); the stream is closed on exit, so that the
    session ends at once.
    """
    client_stream, server_stream = trio.testing.memory_stream_pair()
    _, server_opened = await _handshake(client_stream, server_stream, compression, None, None)
    server = open_connection(
        ServerConnection, server_stream, server_opened, logging.getLogger("tests"), **_OPTIONS
    )
    async with session(server):
        yield server, client_stream
        await client_stream.aclose()


_OPTIONS: dict[str, Any] = {"close_timeout": 10, "ping_interval": None, "max_size": None}


async def read_sent(stream: trio.abc.ReceiveStream) -> bytes:
    """Every byte the server side has written so far."""
    await trio.testing.wait_all_tasks_blocked()
    return bytes(await stream.receive_some())


def parse_server_frames(data: bytes) -> list[str | bytes]:
    """The messages in unmasked server frames without extensions, as a client reads them."""
    frames = FrameProtocol(client=True, extensions=[])
    frames.receive_bytes(data)
    messages: list[str | bytes] = []
    pieces: list[Any] = []
    for frame in frames.received_frames():
        assert frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION)
        pieces.append(frame.payload)
        if frame.message_finished:
            joined = "".join(pieces) if isinstance(pieces[0], str) else b"".join(pieces)
            messages.append(joined)
            pieces = []
    assert not pieces
    return messages


@pytest.mark.parametrize("message", MESSAGES)
async def test_shared_frames_are_the_bytes_queue_message_writes(
    message: str | bytes | bytearray | memoryview,
) -> None:
    """A server connection without compression gets from broadcast() exactly the bytes that
    Core.queue_message() (what send() queues) writes for the same message."""
    async with raw_server() as (shared, shared_peer), raw_server() as (single, single_peer):
        assert broadcast_module._frames_are_shared(core(shared))
        broadcast([shared], message)
        core(single).queue_message(message)
        on_the_wire = await read_sent(shared_peer)
        assert on_the_wire == await read_sent(single_peer)
        assert parse_server_frames(on_the_wire) == [expected(message)]


@pytest.mark.parametrize("message", ["x", "é" * (FRAME_SIZE + 1), bytes(200_000)])
async def test_a_message_is_framed_once_for_every_server_connection_without_compression(
    monkeypatch: pytest.MonkeyPatch, message: str | bytes
) -> None:
    """Uncompressed server connections share one framing; compressed ones frame their own, and
    every one of them writes the message once."""
    calls: list[Protocol] = []
    original = Protocol.send_message

    def counting(self: Protocol, message: str | bytes | bytearray | memoryview) -> bytes:
        calls.append(self)
        return original(self, message)

    monkeypatch.setattr(Protocol, "send_message", counting)
    async with AsyncExitStack() as stack:
        plain = [await stack.enter_async_context(raw_server()) for _ in range(3)]
        deflate = [await stack.enter_async_context(raw_server("deflate")) for _ in range(2)]
        servers = [ws for ws, _ in plain + deflate]
        broadcast(servers, message)
        shared_calls = [p for p in calls if p is core(servers[0]).protocol]
        assert len(shared_calls) == 1
        # Each deflate connection frames its own: whole (send_message) or in fragments.
        assert not any(p is core(ws).protocol for p in calls for ws, _ in plain[1:])
        first = await read_sent(plain[0][1])
        for _, peer in plain[1:]:
            assert await read_sent(peer) == first
        for ws in servers:
            assert core(ws).stats.messages_out == 1


# -- memory streams: who gets it --------------------------------------------------------------


@asynccontextmanager
async def pairs(
    *compressions: str | None,
) -> AsyncGenerator[tuple[list[Connection], list[Connection]], None]:
    """(clients, servers) of one connected pair per compression setting, sessions running."""
    async with AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(connection_pair(compression=c)) for c in compressions
        ]
        yield [c for c, _ in opened], [s for _, s in opened]


@pytest.mark.parametrize("message", MESSAGES)
async def test_every_connection_gets_the_message_with_or_without_compression(
    message: str | bytes | bytearray | memoryview,
) -> None:
    """Text, binary and fragmented (over 64 KiB) messages reach every peer intact, whether the
    connection compresses or not, from the server side (frames shared) and from the client side
    (masked, framed per connection); each connection counts one message out."""
    async with pairs("deflate", None, "deflate", None) as (clients, servers):
        shared = [broadcast_module._frames_are_shared(core(ws)) for ws in servers]
        assert shared == [False, True, False, True]
        broadcast(servers, message)
        for client in clients:
            assert await client.recv() == expected(message)
        broadcast(iter(clients), message)  # any iterable, used once
        for server in servers:
            assert await server.recv() == expected(message)
        for ws in clients + servers:
            assert core(ws).stats.messages_out == 1


async def test_a_wrong_message_type_raises_before_anything_is_sent() -> None:
    """TypeError for a message that is not str or bytes-like, ValueError for an unknown slow=,
    both before the connections are even iterated; the connection stays usable."""
    async with connection_pair() as (client, server):
        iterated: list[Connection] = []

        def connections() -> Iterator[Connection]:
            iterated.append(server)
            yield server

        for bad in (42, None, {"a": "b"}, ["x"], [b"x"], 1.5):
            with pytest.raises(TypeError, match="message must be str or bytes-like"):
                broadcast(connections(), bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='slow must be "skip" or "close"'):
            broadcast(connections(), "x", slow="drop")  # type: ignore[arg-type]
        assert iterated == []
        assert core(server).stats.messages_out == 0
        broadcast([server], "first")
        assert await client.recv() == "first"


async def test_connections_not_open_are_skipped_and_listed_on_request() -> None:
    """Closed connections are skipped silently; with raise_exceptions=True, once the open ones
    have the message, an ExceptionGroup lists each skipped one with the error it would raise."""
    async with pairs(None, None, "deflate") as (clients, servers):
        await servers[1].aclose()
        await clients[2].aclose(1001)
        not_yet = ServerConnection(
            trio.testing.memory_stream_pair()[1],
            is_client=False,
            options=connection_options(logger=logging.getLogger("tests"), **_OPTIONS),
        )
        everyone = [*servers, not_yet]
        broadcast(everyone, "quiet")
        assert await clients[0].recv() == "quiet"
        with pytest.raises(ExceptionGroup) as caught:
            broadcast(everyone, "loud", raise_exceptions=True)
        assert await clients[0].recv() == "loud"
        group = caught.value
        assert group.message == "skipped broadcast"
        kinds = [type(exc) for exc in group.exceptions]
        assert kinds == [ConnectionClosedOK, ConnectionClosedOK, InvalidState]
        codes = [exc.code for exc in group.exceptions if isinstance(exc, ConnectionClosed)]
        assert codes == [1000, 1001]
        assert core(servers[0]).stats.messages_out == 2
        assert core(servers[1]).stats.messages_out == 0
        broadcast(everyone[:1], "no error", raise_exceptions=True)  # nothing skipped: no group
        assert await clients[0].recv() == "no error"


async def test_a_connection_sending_a_fragmented_message_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No data frame may come between the frames of a fragmented message: a connection in the
    middle of one is skipped (a WARNING, or ConcurrencyError with raise_exceptions), and its
    fragmented message arrives whole, with nothing interleaved."""
    async with connection_pair() as (client, server), trio.open_nursery() as nursery:
        release = trio.Event()

        async def pieces() -> AsyncIterator[str]:
            yield "frag"
            await release.wait()
            yield "mented"

        nursery.start_soon(server.send, pieces())
        await trio.testing.wait_all_tasks_blocked()
        with caplog.at_level(logging.WARNING, logger="tests"):
            broadcast([server], "interloper")
        assert [r.getMessage() for r in caplog.records] == [
            f"connection {server.id}: skipped broadcast: sending a fragmented message"
        ]
        with pytest.raises(ExceptionGroup) as caught:
            broadcast([server], "interloper", raise_exceptions=True)
        assert [type(exc) for exc in caught.value.exceptions] == [ConcurrencyError]
        release.set()
        assert await client.recv() == "fragmented"
        broadcast([server], "after")
        assert await client.recv() == "after"
        assert core(server).stats.messages_out == 2


# -- real sockets: slow and stuck clients -----------------------------------------------------


@dataclass
class Registry:
    """The server's connections as their handlers start; the handlers wait for ``finished``."""

    expected: int
    healthy: list[ServerConnection] = field(default_factory=list)
    stuck: ServerConnection | None = None
    stuck_error: BaseException | None = None
    all_in: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)

    async def handler(self, ws: ServerConnection) -> None:
        if ws.request.path == "/stuck":
            self.stuck = ws
        else:
            self.healthy.append(ws)
        if len(self.healthy) + (self.stuck is not None) == self.expected:
            self.all_in.set()
        try:
            await ws.recv()  # nothing comes: it ends when the connection fails
        except ConnectionClosed as exc:
            if ws is self.stuck:
                self.stuck_error = exc
        await self.finished.wait()


class StuckClient:
    """A raw client with a small receive buffer: it completes the handshake, then reads nothing
    until ``read_all()``."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream, self.ws = stream, ws

    @classmethod
    async def connect(cls, port: int) -> StuckClient:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="127.0.0.1", target="/stuck")))
        while True:
            ws.receive_data(await stream.receive_some(4096))
            for event in ws.events():
                assert isinstance(event, AcceptConnection), event
                return cls(stream, ws)

    async def read(self, count: int | None) -> tuple[list[str | bytes], int | None]:
        """Read ``count`` messages, or (None) all until the server's close frame: (messages,
        the close code or None)."""
        messages: list[str | bytes] = []
        pieces: list[Any] = []
        while count is None or len(messages) < count:
            data = await self.stream.receive_some(65536)
            assert data, "the server closed without a close frame"
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, CloseConnection):
                    return messages, event.code
                assert isinstance(event, TextMessage | BytesMessage), event
                pieces.append(event.data)
                if event.message_finished:
                    is_text = isinstance(pieces[0], str)
                    messages.append("".join(pieces) if is_text else b"".join(pieces))
                    pieces = []
        return messages, None


def vm_rss() -> int:
    """This process's resident memory, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def allow_fds(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed:,} file descriptors; the hard limit is {hard:,}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


WRITE_LIMIT = 32 * 1024
SIZE = 4096
WINDOW = 4  # messages in flight to a healthy client: 16 KiB, well under WRITE_LIMIT


@dataclass
class Run:
    """What a broadcast run to healthy clients and one stuck client measured."""

    server: Server
    registry: Registry
    stuck: StuckClient
    messages: list[bytes]
    received: dict[int, list[bool]]  # per healthy client: each message right, in order
    setup_time: float = 0.0  # from the first connect to every handler running
    peak_stuck_buffer: int = 0
    delivery_time: float = 0.0
    rss_growth: int = 0
    errors: list[list[Exception]] = field(default_factory=list)  # raise_exceptions, per call


@asynccontextmanager
async def broadcasting(
    n_healthy: int,
    n_messages: int,
    *,
    slow: Literal["skip", "close"] = "skip",
    raise_exceptions: bool = False,
) -> AsyncGenerator[Run, None]:
    """Serve ``n_healthy`` trio_ws clients and one stuck client, then broadcast ``n_messages``
    of 4 KiB to all from the test's task, keeping at most WINDOW messages in flight to the
    healthy clients. Yields the Run once every healthy client has every message; on exit, the
    stuck client is closed, and then everything else."""
    allow_fds(2 * (n_healthy + 1) + 100)
    registry = Registry(expected=n_healthy + 1)
    messages = [i.to_bytes(4, "big") * (SIZE // 4) for i in range(n_messages)]
    got = [0] * n_messages
    acked = [trio.Event() for _ in range(n_messages)]
    done_at = [0.0]
    received: dict[int, list[bool]] = {}

    async def healthy_client(index: int, port: int) -> None:
        url = f"ws://127.0.0.1:{port}/"
        async with trio_ws.connect(url, compression=None, ping_interval=None) as ws:
            marks = received[index] = []
            for i in range(n_messages):
                marks.append(await ws.recv() == messages[i])
                got[i] += 1
                if got[i] == n_healthy:
                    acked[i].set()
                    done_at[0] = trio.current_time()
            await registry.finished.wait()

    with trio.fail_after(120):  # a bug that drops a healthy client's message fails, not hangs
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(
                partial(
                    trio_ws.serve,
                    registry.handler,
                    "127.0.0.1",
                    0,
                    write_limit=WRITE_LIMIT,
                    ping_interval=None,
                )
            )
            async with trio.open_nursery() as clients:
                setup_start = trio.current_time()
                for index in range(n_healthy):
                    clients.start_soon(healthy_client, index, server.port)
                stuck = await StuckClient.connect(server.port)
                await registry.all_in.wait()
                stuck_ws = registry.stuck
                assert stuck_ws is not None
                run = Run(server, registry, stuck, messages, received)
                run.setup_time = trio.current_time() - setup_start
                everyone = [*registry.healthy, stuck_ws]
                rss_before = vm_rss()
                start = trio.current_time()
                for i, message in enumerate(messages):
                    if i >= WINDOW:
                        await acked[i - WINDOW].wait()
                    try:
                        broadcast(everyone, message, raise_exceptions, slow=slow)
                    except ExceptionGroup as group:
                        run.errors.append(list(group.exceptions))
                    else:
                        run.errors.append([])
                    run.peak_stuck_buffer = max(
                        run.peak_stuck_buffer, core(stuck_ws).writer.buffered
                    )
                await acked[-1].wait()
                run.delivery_time = done_at[0] - start
                run.rss_growth = vm_rss() - rss_before
                try:
                    yield run
                finally:
                    await stuck.stream.aclose()
                    registry.finished.set()
            await server.aclose()


@pytest.mark.parametrize(
    "n_healthy",
    [
        pytest.param(20, id="20-clients"),
        pytest.param(999, id="1000-clients", marks=pytest.mark.slow),
    ],
)
async def test_a_stuck_client_loses_messages_and_delays_no_one(
    n_healthy: int, caplog: pytest.LogCaptureFixture
) -> None:
    """With one client that never reads, every other client gets every message in order; the
    stuck one's write buffer stays within write_limit plus one message, the messages it misses
    are counted in broadcast_drops and warned about once, and it gets every message it was not
    dropped, in order, once it reads. Memory stays bounded."""
    caplog.set_level(logging.INFO, logger="trio_ws.server")
    n_messages = 200
    async with broadcasting(n_healthy, n_messages) as run:
        stuck_ws = run.registry.stuck
        assert stuck_ws is not None
        print(
            f"\nbroadcast of {n_messages} x {SIZE:,} bytes to {n_healthy + 1:,} clients: "
            f"all healthy clients had every message {run.delivery_time:.3f} s after the first "
            f"broadcast; RSS grew by {run.rss_growth / 2**20:.1f} MiB; the stuck client lost "
            f"{core(stuck_ws).stats.broadcast_drops} messages; connecting took "
            f"{run.setup_time:.3f} s"
        )
        assert all(marks == [True] * n_messages for marks in run.received.values())
        assert len(run.received) == n_healthy
        stats = core(stuck_ws).stats
        assert 0 < stats.broadcast_drops < n_messages
        # The stuck connection's buffer: over the high-water mark by at most one frame.
        assert WRITE_LIMIT < run.peak_stuck_buffer <= WRITE_LIMIT + SIZE + 4
        assert core(stuck_ws).writer.buffered == run.peak_stuck_buffer
        assert run.rss_growth < 64 * 2**20
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1
        assert str(stuck_ws.id) in warnings[0].getMessage()
        assert stuck_ws.id in broadcast_module._dropping

        # Asked for, the skipped connection is listed; the drop is counted all the same.
        with pytest.raises(ExceptionGroup) as caught:
            broadcast([stuck_ws], b"dropped too", raise_exceptions=True)
        assert [type(exc) for exc in caught.value.exceptions] == [trio.WouldBlock]
        drops = stats.broadcast_drops

        # Reading, the stuck client gets what was queued before its buffer filled, in order;
        # once its buffer has drained, the episode ends (one INFO line) and messages flow again.
        kept = n_messages - (drops - 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core(stuck_ws).writer.drain)
            seen, code = await run.stuck.read(kept)
        assert code is None
        assert seen == run.messages[:kept]
        await trio.testing.wait_all_tasks_blocked()
        assert stuck_ws.id not in broadcast_module._dropping
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert f"connection {stuck_ws.id}: caught up after {drops} broadcast" in "".join(infos)
        broadcast([stuck_ws], "flowing again")
        assert await run.stuck.read(1) == (["flowing again"], None)


async def test_slow_close_fails_a_stuck_client_with_1008() -> None:
    """slow="close": the first message a stuck client's buffer cannot take fails its
    connection with 1008 (listed as ConnectionClosedError with raise_exceptions), the others get
    every message, and the stuck client reads what was queued before, then the close frame."""
    n_messages = 200
    async with broadcasting(5, n_messages, slow="close", raise_exceptions=True) as run:
        stuck_ws = run.registry.stuck
        assert stuck_ws is not None
        assert all(marks == [True] * n_messages for marks in run.received.values())
        failed_at = next(i for i, errors in enumerate(run.errors) if errors)
        assert all(errors == [] for errors in run.errors[:failed_at])
        for errors in run.errors[failed_at:]:
            assert len(errors) == 1
            assert isinstance(errors[0], ConnectionClosedError)
            assert errors[0].code == 1008
        assert core(stuck_ws).stats.broadcast_drops == 1
        assert run.peak_stuck_buffer <= WRITE_LIMIT + SIZE + 4 + 64  # and the close frame
        seen, code = await run.stuck.read(None)
        assert seen == run.messages[:failed_at]
        assert code == 1008
        with trio.fail_after(5):  # the close frame is out: the server closes the socket
            await stuck_ws.wait_closed()
        await trio.testing.wait_all_tasks_blocked()
        error = run.registry.stuck_error  # what the handler's recv() raised
        assert isinstance(error, ConnectionClosedError)
        assert (error.code, error.reason) == (1008, broadcast_module._TOO_SLOW)
