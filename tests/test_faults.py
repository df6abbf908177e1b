"""Network faults over real sockets on 127.0.0.1: resets, half-closes, vanished and stalled
peers, truncated TLS, a server out of file descriptors, a flood of garbage handshakes.

Each test checks the outcome trio_ws promises (the close code, serve() still serving) and
that the fault left no socket and no task behind. Nothing here sleeps to synchronise: a test
waits for the outcome itself, or for every task to be blocked, with trio.fail_after only as a
guard against hangs.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_ws
from tests.conftest import open_fds
from tests.test_client import live_tasks, no_leaks, switching_protocols, tcp_server
from tests.test_server import assert_still_serving, echo_or, serving
from trio_ws._handshake import ClientHandshake
from trio_ws._uri import parse_uri
from trio_ws.exceptions import ConnectionClosed, ConnectionClosedError
from trio_ws.http import Headers
from trio_ws.server import Server, ServerConnection

# Every test's guard against a hang, in seconds: far above what any of them needs.
GUARD = 10

# -- helpers ---------------------------------------------------------------------------------

_MASK = b"\x37\xfa\x21\x3d"
TEXT, BINARY, CONTINUATION = 0x1, 0x2, 0x0


def frame_head(opcode: int, length: int, *, fin: bool = True, masked: bool) -> bytes:
    """A frame's header announcing ``length`` payload bytes (with the mask key if masked)."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = bytes([first, mask_bit | length])
    elif length < 2**16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
    return head + (_MASK if masked else b"")


def masked(payload: bytes) -> bytes:
    """``payload`` masked with the key frame_head() sends (RFC 6455 §5.3)."""
    return bytes(byte ^ _MASK[i % 4] for i, byte in enumerate(payload))


def half_a_message(*, masked_frames: bool) -> bytes:
    """A message cut in its middle: a whole first fragment, then the first half of the second
    frame, whose header announces 1,000 payload bytes."""
    first, second = b"first fragment, ", b"x" * 1_000
    if masked_frames:
        first, second = masked(first), masked(second)
    return (
        frame_head(TEXT, len(first), fin=False, masked=masked_frames)
        + first
        + frame_head(CONTINUATION, len(second), masked=masked_frames)
        + second[:500]
    )


def half_a_frame(*, masked_frames: bool) -> bytes:
    """The header of a binary frame announcing 1,000 payload bytes, and 500 of them."""
    payload = b"y" * 1_000
    if masked_frames:
        payload = masked(payload)
    return frame_head(BINARY, len(payload), masked=masked_frames) + payload[:500]


async def reset(stream: trio.SocketStream) -> None:
    """Reset the TCP connection: with linger on and a timeout of 0, close() sends RST, not
    FIN."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


# Every raw peer here says all it has to say in far fewer reads: a bound on each read loop.
_MOST_READS = 64


async def read_request(stream: trio.abc.ReceiveStream) -> bytes:
    """Read an HTTP request head, up to and including the blank line."""
    data = b""
    for _ in range(_MOST_READS):
        if b"\r\n\r\n" in data:
            return data
        chunk = await stream.receive_some(65536)
        assert chunk, "the client closed before finishing its request"
        data += chunk
    raise AssertionError(f"no end of the request head in {_MOST_READS} reads")


async def read_to_end(stream: trio.abc.ReceiveStream) -> bytes:
    """Read until the peer ends the stream; what it sent before."""
    data = bytearray()
    for _ in range(_MOST_READS):
        chunk = await stream.receive_some(65536)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError(f"the stream did not end in {_MOST_READS} reads")


async def upgrade(stream: trio.abc.Stream, port: int) -> None:
    """Run the client's side of the opening handshake on ``stream`` (no extension)."""
    handshake = ClientHandshake(
        parse_uri(f"ws://127.0.0.1:{port}/"),
        subprotocols=(),
        compression=None,
        max_size=None,
        headers=Headers(),
    )
    await stream.send_all(handshake.request_bytes)
    for _ in range(_MOST_READS):
        if handshake.receive_data(await stream.receive_some(65536)) is not None:
            return
    raise AssertionError(f"no 101 in {_MOST_READS} reads")


async def open_upgraded(server: Server) -> trio.SocketStream:
    """A TCP connection to ``server`` whose opening handshake is done, nothing running on it."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await upgrade(stream, server.port)
    return stream


@asynccontextmanager
async def settles_back() -> AsyncIterator[None]:
    """Assert that, once every task is blocked again, the block left as many open fds and live
    tasks as it found (also while a server keeps running around it)."""
    await trio.testing.wait_all_tasks_blocked()
    fds, tasks = open_fds(), live_tasks()
    yield
    await trio.testing.wait_all_tasks_blocked()
    assert (open_fds(), live_tasks()) == (fds, tasks)


class Recorder:
    """A handler that waits in recv() and records how it ended."""

    def __init__(self) -> None:
        self.outcomes: list[BaseException] = []
        self.done = trio.Event()

    async def __call__(self, ws: ServerConnection) -> None:
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            self.outcomes.append(exc)
        finally:
            self.done.set()

    @property
    def outcome(self) -> BaseException:
        [outcome] = self.outcomes
        return outcome


# -- 1. a reset in the middle of a frame -----------------------------------------------------


async def test_client_reset_mid_frame_fails_recv_with_1006_and_serve_goes_on() -> None:
    """A client that upgrades, sends half a frame and resets TCP makes the handler's recv()
    raise ConnectionClosedError 1006; the server releases that socket and serves the next
    client."""
    handler = Recorder()
    with no_leaks(), trio.fail_after(GUARD):
        async with serving(echo_or(handler)) as (server, _):
            async with settles_back():
                stream = await open_upgraded(server)
                await stream.send_all(half_a_frame(masked_frames=True))
                await trio.testing.wait_all_tasks_blocked()  # the server read the half frame
                assert not handler.done.is_set()
                await reset(stream)
                await handler.done.wait()
            await assert_still_serving(server)
    assert type(handler.outcome) is ConnectionClosedError
    assert handler.outcome.code == 1006


async def test_server_reset_mid_frame_fails_recv_with_1006_and_connect_exits_cleanly() -> None:
    """A server that answers 101, sends half a frame and resets TCP makes the client's recv()
    raise ConnectionClosedError 1006, and connect()'s block exits without raising."""
    in_recv = trio.Event()

    async def upgrade_then_reset(stream: trio.SocketStream) -> None:
        request = await read_request(stream)
        await stream.send_all(switching_protocols(request) + half_a_frame(masked_frames=False))
        await in_recv.wait()
        await trio.testing.wait_all_tasks_blocked()  # the client read the half frame
        await reset(stream)

    with no_leaks(), trio.fail_after(GUARD):
        async with tcp_server(upgrade_then_reset) as port:
            async with trio_ws.connect(
                f"ws://127.0.0.1:{port}/", ping_interval=None, compression=None
            ) as ws:
                in_recv.set()
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
            assert ws.close_code == 1006
    assert info.value.code == 1006


# -- 2. a reset in the middle of the opening handshake ---------------------------------------

HALF_A_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgr"


async def test_client_reset_mid_handshake_costs_serve_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that sends half an upgrade request and resets TCP: the server notes the lost
    handshake, releases the socket and its task, and serves the next client."""
    caplog.set_level(logging.DEBUG, logger="trio_ws.server")
    handler = Recorder()
    with no_leaks(), trio.fail_after(GUARD):
        async with serving(echo_or(handler)) as (server, _):
            async with settles_back():
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                await stream.send_all(HALF_A_REQUEST)
                await trio.testing.wait_all_tasks_blocked()  # the server read the half
                await reset(stream)
            await assert_still_serving(server)
    assert not handler.outcomes  # no handler ran for the reset client
    lost = [r for r in caplog.records if "connection lost during the opening handshake" in r.msg]
    assert len(lost) == 1


# -- 3. a half-close in the middle of a message ----------------------------------------------


async def test_client_half_close_mid_message_fails_recv_with_1006_and_server_closes() -> None:
    """A client that sends half a message, then shuts its side down (FIN, still reading):
    the handler's recv() raises ConnectionClosedError 1006 and the server closes its socket,
    which the client reads as the end of the stream."""
    handler = Recorder()
    with no_leaks(), trio.fail_after(GUARD):
        async with serving(echo_or(handler)) as (server, _):
            async with settles_back():
                stream = await open_upgraded(server)
                await stream.send_all(half_a_message(masked_frames=True))
                await trio.testing.wait_all_tasks_blocked()
                assert not handler.done.is_set()
                await stream.send_eof()
                await handler.done.wait()
                await read_to_end(stream)
                await stream.aclose()
            await assert_still_serving(server)
    assert type(handler.outcome) is ConnectionClosedError
    assert handler.outcome.code == 1006


async def test_server_half_close_mid_message_fails_recv_with_1006_and_client_closes() -> None:
    """A server that sends half a message, then shuts its side down (FIN, still reading):
    the client's recv() raises ConnectionClosedError 1006 and the client closes its socket,
    which the server reads as the end of the stream."""
    in_recv = trio.Event()
    server_saw_eof = trio.Event()

    async def upgrade_then_half_close(stream: trio.SocketStream) -> None:
        request = await read_request(stream)
        await stream.send_all(switching_protocols(request) + half_a_message(masked_frames=False))
        await in_recv.wait()
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_eof()
        await read_to_end(stream)
        server_saw_eof.set()

    with no_leaks(), trio.fail_after(GUARD):
        async with tcp_server(upgrade_then_half_close) as port:
            async with trio_ws.connect(
                f"ws://127.0.0.1:{port}/", ping_interval=None, compression=None
            ) as ws:
                in_recv.set()
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
            await server_saw_eof.wait()
    assert info.value.code == 1006


# -- 4. a peer that vanishes without FIN -----------------------------------------------------

PING_INTERVAL = PING_TIMEOUT = 0.05
KEEPALIVE: dict[str, Any] = {"ping_interval": PING_INTERVAL, "ping_timeout": PING_TIMEOUT}


async def test_keepalive_fails_a_vanished_client_with_1011() -> None:
    """A client that upgrades, then neither reads nor answers pings, its socket left open:
    keepalive fails the connection with 1011 "keepalive ping timeout", no sooner than
    ping_interval + ping_timeout, and the server releases the socket."""
    handler = Recorder()
    with no_leaks(), trio.fail_after(GUARD):
        async with serving(echo_or(handler), **KEEPALIVE) as (server, _), settles_back():
            start = trio.current_time()
            stream = await open_upgraded(server)
            await handler.done.wait()
            elapsed = trio.current_time() - start
            await stream.aclose()
    outcome = handler.outcome
    assert type(outcome) is ConnectionClosedError
    assert (outcome.code, outcome.reason) == (1011, "keepalive ping timeout")
    assert elapsed >= PING_INTERVAL + PING_TIMEOUT


async def test_keepalive_fails_a_vanished_server_with_1011() -> None:
    """A server that answers 101, then neither reads nor answers pings, its socket left open:
    the client's keepalive fails the connection with 1011 "keepalive ping timeout", no sooner
    than ping_interval + ping_timeout, and connect()'s block exits without raising."""
    client_done = trio.Event()

    async def upgrade_then_vanish(stream: trio.SocketStream) -> None:
        await stream.send_all(switching_protocols(await read_request(stream)))
        await client_done.wait()

    with no_leaks(), trio.fail_after(GUARD):
        async with tcp_server(upgrade_then_vanish) as port:
            start = trio.current_time()
            async with trio_ws.connect(
                f"ws://127.0.0.1:{port}/",
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT,
                compression=None,
            ) as ws:
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
            elapsed = trio.current_time() - start
            client_done.set()
    assert (info.value.code, info.value.reason) == (1011, "keepalive ping timeout")
    assert elapsed >= PING_INTERVAL + PING_TIMEOUT


# -- 5. a peer that stops reading while we send ----------------------------------------------


async def test_peer_that_stops_reading_blocks_send_and_keepalive_aborts_with_1011() -> None:
    """Sending to a server that stopped reading: once the kernel's buffers are full, send()
    waits (backpressure) with the write buffer holding at most write_limit plus one message;
    keepalive then sees no write progress for ping_timeout and fails the connection with 1011,
    which the waiting send() raises."""
    write_limit = 64 * 1024
    message = bytes(32 * 1024)
    ping_timeout = 0.25
    # A frame header and a keepalive ping may come on top of the limit and the message.
    bound = write_limit + len(message) + 64
    # Bounded: 4 GiB would be sent before this count, far more than any kernel buffers.
    most = 2**17
    peer_done = trio.Event()

    async def upgrade_then_stop_reading(stream: trio.SocketStream) -> None:
        await stream.send_all(switching_protocols(await read_request(stream)))
        await peer_done.wait()

    sent = 0
    peak = 0
    outcome: ConnectionClosedError | None = None

    with no_leaks(), trio.fail_after(GUARD):
        async with tcp_server(upgrade_then_stop_reading) as port:
            async with trio_ws.connect(
                f"ws://127.0.0.1:{port}/",
                ping_interval=0.05,
                ping_timeout=ping_timeout,
                write_limit=write_limit,
                compression=None,
            ) as ws:
                writer = ws._core.writer  # pyright: ignore[reportPrivateUsage]

                async def keep_sending() -> None:
                    nonlocal sent, peak, outcome
                    try:
                        for _ in range(most):
                            await ws.send(message)
                            sent += 1
                            peak = max(peak, writer.buffered)
                    except ConnectionClosedError as exc:
                        outcome = exc

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(keep_sending)
                    # The sender only yields between sends: all tasks blocked means it waits
                    # in send() for room in the write buffer.
                    await trio.testing.wait_all_tasks_blocked()
                    assert outcome is None
                    assert writer.is_full()
                    peak = max(peak, writer.buffered)
                    waiting_at = sent
            peer_done.set()
    assert 0 < waiting_at <= sent < most
    assert peak <= bound
    assert outcome is not None
    assert outcome.code == 1011
    assert outcome.reason == f"no write progress for {ping_timeout:g} s: the peer stopped reading"


# -- 6. a TLS peer that truncates the stream -------------------------------------------------


async def test_tls_client_truncating_mid_frame_fails_recv_with_1006(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """A wss client that sends half a frame, then closes TCP without a TLS close_notify: the
    handler's recv() raises ConnectionClosedError 1006 and the server releases the socket."""
    handler = Recorder()
    with no_leaks(), trio.fail_after(GUARD):
        async with serving(handler, ssl=server_context) as (server, _), settles_back():
            tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
            tls = trio.SSLStream(tcp, client_context, server_hostname="127.0.0.1")
            await upgrade(tls, server.port)
            await tls.send_all(half_a_frame(masked_frames=True))
            await trio.testing.wait_all_tasks_blocked()
            assert not handler.done.is_set()
            await tcp.aclose()  # under the TLS layer: no close_notify
            await handler.done.wait()
    assert type(handler.outcome) is ConnectionClosedError
    assert handler.outcome.code == 1006


async def test_tls_server_truncating_mid_frame_fails_recv_with_1006(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """A wss server that answers 101 and half a frame, then closes TCP without a TLS
    close_notify: the client's recv() raises ConnectionClosedError 1006 and connect()'s block
    exits without raising."""
    in_recv = trio.Event()

    async def upgrade_then_truncate(tcp: trio.SocketStream) -> None:
        tls = trio.SSLStream(tcp, server_context, server_side=True)
        request = await read_request(tls)
        await tls.send_all(switching_protocols(request) + half_a_frame(masked_frames=False))
        await in_recv.wait()
        await trio.testing.wait_all_tasks_blocked()
        await tcp.aclose()  # under the TLS layer: no close_notify

    with no_leaks(), trio.fail_after(GUARD):
        async with (
            tcp_server(upgrade_then_truncate) as port,
            trio_ws.connect(
                f"wss://127.0.0.1:{port}/",
                ssl=client_context,
                ping_interval=None,
                compression=None,
            ) as ws,
        ):
            in_recv.set()
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
    assert info.value.code == 1006


# -- 7. the server out of file descriptors ---------------------------------------------------


@asynccontextmanager
async def fd_limit(spare: int) -> AsyncIterator[None]:
    """Lower this process's RLIMIT_NOFILE so that only ``spare`` new fds can be opened (the
    limit bounds fd numbers, and open fds above it stay usable); restore it on exit."""
    resource = pytest.importorskip("resource", reason="no resource module on this platform")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    taken = {int(fd) for fd in os.listdir("/proc/self/fd")}
    free = [number for number in range(len(taken) + spare) if number not in taken][:spare]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (free[-1] + 1, hard))
    except (ValueError, OSError) as exc:
        pytest.skip(f"cannot lower RLIMIT_NOFILE here: {exc}")
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_serve_survives_running_out_of_fds_and_serves_once_they_are_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With RLIMIT_NOFILE lowered so that raw client sockets take every free fd, the server's
    accept() fails with EMFILE: serve() logs it and keeps running; once those sockets are
    closed, a new client connects and gets its message echoed."""
    caplog.set_level(logging.ERROR, logger="trio_ws.server")
    with no_leaks(), trio.fail_after(GUARD):
        async with serving(echo_or(Recorder())) as (server, nursery), settles_back():
            raw: list[socket.socket] = []
            try:
                async with fd_limit(spare=4):
                    # No checkpoint in this loop: the server accepts none of them yet, so
                    # they wait in the listen queue while their sockets take every fd.
                    for _ in range(64):
                        try:
                            sock = socket.socket()
                        except OSError as exc:
                            assert exc.errno == errno.EMFILE
                            break
                        raw.append(sock)
                        sock.connect(("127.0.0.1", server.port))
                    else:
                        pytest.fail("the lowered RLIMIT_NOFILE never ran out")
                    assert raw
                    await trio.testing.wait_all_tasks_blocked()  # accept() failed
                    assert len(nursery.child_tasks) == 1  # serve() still runs
                    failed = [r for r in caplog.records if "lack of resources" in r.getMessage()]
                    assert failed
                    assert failed[0].exc_info is not None
                    error = failed[0].exc_info[1]
                    assert isinstance(error, OSError)
                    assert error.errno == errno.EMFILE
                    for sock in raw:
                        sock.close()
                    raw.clear()
                    await assert_still_serving(server)
            finally:
                for sock in raw:
                    sock.close()


# -- 8. a flood of garbage handshakes --------------------------------------------------------


async def test_a_thousand_garbage_handshakes_are_each_closed_and_serve_goes_on() -> None:
    """1,000 raw connections, 50 at a time, each sending garbage instead of an upgrade
    request (an HTTP-like line, or random bytes then EOF): the server ends every one of them
    and releases its socket, then serves a good client."""
    count, batch = 1_000, 50
    rng = random.Random(6455)
    garbage = [b"GARBAGE\r\n\r\n" if number % 2 else rng.randbytes(64) for number in range(count)]
    ended: list[tuple[bytes, bytes]] = []  # (what a client sent, what it read before EOF)

    async def send_garbage(server: Server, data: bytes) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(data)
            if not data.endswith(b"\r\n\r\n"):
                await stream.send_eof()
            ended.append((data, await read_to_end(stream)))

    handler = Recorder()
    with no_leaks(), trio.fail_after(GUARD):
        async with serving(echo_or(handler)) as (server, _):
            async with settles_back():
                for start in range(0, count, batch):
                    async with trio.open_nursery() as clients:
                        for data in garbage[start : start + batch]:
                            clients.start_soon(send_garbage, server, data)
            await assert_still_serving(server)
    assert len(ended) == count
    assert not handler.outcomes  # no garbage was upgraded
    for data, answer in ended:
        if data == b"GARBAGE\r\n\r\n":
            assert answer.startswith(b"HTTP/1.1 400 ")
        else:  # random bytes: an HTTP error, or the connection just closed
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4")
