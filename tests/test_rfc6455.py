"""The RFC 6455 and RFC 7692 behaviours of trio_ws.connection.Connection, over memory streams.

Each test runs from both sides (the ``side`` fixture) where the behaviour applies to both. The far
end is another trio_ws connection, or a :class:`Peer`: wsproto reading what we send, and frames
built byte by byte for what wsproto would refuse to send, written only when a test says so.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import memory_stream_pair, wait_all_tasks_blocked
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from tests.test_connection import (
    Peer,
    new_pair,
    sessions,
    this_and_other,
)
from tests.test_connection import with_peer as with_streams_and_peer
from tests.test_protocol import CLOSE, CONTINUATION, PING, PONG, TEXT, frame
from trio_ws._session import session
from trio_ws.connection import Connection, State
from trio_ws.exceptions import ConnectionClosedError, ConnectionClosedOK, ProtocolError

MemoryStream = trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def with_peer(side: str, **options: Any) -> tuple[Connection, Peer]:
    """Our connection on ``side`` and a hand-driven peer at the other end of a memory stream."""
    this, peer, _, _ = with_streams_and_peer(side, **options)
    return this, peer


class Link(trio.abc.Stream):
    """One end of a memory stream whose link can be lost: at end of stream, as after a FIN
    with no close frame, or by a reset, after which reads and writes raise
    BrokenResourceError as a reset socket's do."""

    def __init__(self, inner: MemoryStream) -> None:
        self._inner = inner
        self._reset = False

    def lose(self, how: str) -> None:
        if how == "reset":
            self._reset = True
            self._inner.receive_stream.close()  # wakes a pending read
        else:
            self._inner.receive_stream.put_eof()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._reset:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("connection reset")
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            return await self._inner.receive_some(max_bytes)
        except trio.ClosedResourceError as exc:
            if self._reset:
                raise trio.BrokenResourceError("connection reset") from exc
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


# -- text: UTF-8 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        lambda side: frame(side, TEXT, b"ok\xff", fin=False),
        lambda side: (
            frame(side, TEXT, b"caf", fin=False)
            + frame(side, CONTINUATION, b"\xc3", fin=False)
            + frame(side, CONTINUATION, b"\x28", fin=False)
        ),
        lambda side: frame(side, TEXT, b"\xff" + b"a" * 100_000)[:1000],
    ],
    ids=["first-fragment", "third-fragment", "start-of-a-frame"],
)
async def test_invalid_utf8_fails_with_1007_before_the_message_ends(
    side: str, data: Callable[[str], bytes]
) -> None:
    """A text message that turns out not to be UTF-8 fails the connection as soon as the bad
    byte arrives: the peer, which never sends the rest, gets a 1007 close frame then end of
    stream, and recv() raises ConnectionClosedError 1007 caused by a ProtocolError."""
    this, peer = with_peer(side)
    async with session(this):
        await peer.stream.send_all(data(side))
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert info.value.code == 1007
        assert isinstance(info.value.__cause__, ProtocolError)
        [close] = await peer.receive_until_eof()
        assert isinstance(close, CloseConnection)
        assert close.code == 1007
        assert this.state is State.CLOSED


# -- protocol errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (lambda side: frame(side, CLOSE, close_payload(1000, b"\xff")), 1007),
        (lambda side: frame(side, CLOSE, close_payload(1000, b"r" * 124)), 1002),
        (lambda side: frame(side, PING, b"x" * 126), 1002),
        (lambda side: frame(side, PONG, b"x" * 126), 1002),
        (lambda side: frame(side, PING, b"x", fin=False), 1002),
        (lambda side: frame(side, CLOSE, close_payload(1000), fin=False), 1002),
    ],
    ids=[
        "invalid-utf8-close-reason",
        "close-reason-over-123-bytes",
        "ping-over-125-bytes",
        "pong-over-125-bytes",
        "fragmented-ping",
        "fragmented-close",
    ],
)
async def test_bad_control_frame_fails_the_connection_with_its_code(
    side: str, data: Callable[[str], bytes], code: int
) -> None:
    """A control frame RFC 6455 §5.5 forbids is not acted on (no pong, no close handshake):
    the peer gets a close frame with 1002 (1007 for a reason that is not UTF-8), then end of
    stream, and recv() raises ConnectionClosedError with that code."""
    this, peer = with_peer(side)
    async with session(this):
        await peer.send(TextMessage(data="before"))
        await peer.stream.send_all(data(side))
        assert await this.recv() == "before"
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert info.value.code == code
        assert isinstance(info.value.__cause__, ProtocolError)
        [close] = await peer.receive_until_eof()
        assert isinstance(close, CloseConnection)
        assert close.code == code


# -- the closing handshake -----------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
async def test_close_frame_with_a_code_that_may_not_be_sent_fails_with_1002(
    side: str, code: int
) -> None:
    """A close code reserved, unassigned or out of range (RFC 6455 §7.4) is a protocol error:
    it is answered with 1002, not echoed, and recv() raises ConnectionClosedError 1002."""
    this, peer = with_peer(side)
    async with session(this):
        await peer.stream.send_all(frame(side, CLOSE, close_payload(code)))
        with pytest.raises(ConnectionClosedError) as info:
            await this.recv()
        assert info.value.code == 1002
        [close] = await peer.receive_until_eof()
        assert isinstance(close, CloseConnection)
        assert close.code == 1002


async def test_close_code_and_reason_are_known_on_both_ends_after_a_close(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """After a closing handshake started with aclose(4001, reason), each end's close_code and
    close_reason give what the other end's close frame said: the closer's reason to the peer,
    the code echoed without a reason to the closer. recv() raises the same on each end."""
    this, other = this_and_other(side)
    async with sessions(this, other):
        assert (this.close_code, this.close_reason) == (None, None)
        await this.aclose(4001, "done hére")
        await other.wait_closed()
        assert trio.current_time() == 0.0  # no timeout was needed
        assert (other.close_code, other.close_reason) == (4001, "done hére")
        assert (this.close_code, this.close_reason) == (4001, "")
        for ws, reason in ((other, "done hére"), (this, "")):
            assert ws.state is State.CLOSED
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
            assert (info.value.code, info.value.reason) == (4001, reason)


async def test_closer_gives_up_at_close_timeout_on_a_peer_that_does_not_read(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A trio_ws peer whose reader is stopped by a full queue never reads our close frame:
    aclose() waits exactly close_timeout, then closes the stream (close_code 1006). The peer
    still gets its queued messages, then the close frame."""
    this, other = this_and_other(side, max_queue=1, close_timeout=3)
    async with sessions(this, other):
        await this.send("one")
        await this.send("two")
        await wait_all_tasks_blocked()
        await this.aclose(1000, "bye")
        assert trio.current_time() == 3.0
        assert (this.state, this.close_code, this.close_reason) == (State.CLOSED, 1006, "")
        assert [await other.recv(), await other.recv()] == ["one", "two"]
        with pytest.raises(ConnectionClosedOK) as info:
            await other.recv()
        assert (info.value.code, info.value.reason) == (1000, "bye")


@pytest.mark.parametrize("how", ["eof", "reset"])
async def test_link_lost_without_a_close_frame_gives_1006_on_both_ends(how: str) -> None:
    """When the transport ends without a close frame, by end of stream or a reset, both ends
    close with 1006: recv() and send() raise ConnectionClosedError 1006, close_code is 1006
    and close_reason "". Messages that arrived before are still delivered."""
    client_link, server_link = memory_stream_pair()
    links = Link(client_link), Link(server_link)
    client, server = new_pair(links)
    async with sessions(client, server):
        await client.send("before")
        await wait_all_tasks_blocked()
        for link in links:
            link.lose(how)
        assert await server.recv() == "before"
        for ws in (client, server):
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.code == 1006
            await ws.wait_closed()
            assert (ws.state, ws.close_code, ws.close_reason) == (State.CLOSED, 1006, "")
            with pytest.raises(ConnectionClosedError) as info:
                await ws.send("after")
            assert info.value.code == 1006


# -- pings and pongs -----------------------------------------------------------------------


async def test_every_ping_is_answered_while_messages_wait_unread(side: str) -> None:
    """Pings between messages are answered in order by the reader while nobody calls recv()
    (the queue is not full); the messages wait, in order, for recv()."""
    this, peer = with_peer(side)
    async with session(this):
        for i in range(5):
            await peer.send(TextMessage(data=f"m{i}"), Ping(payload=f"p{i}".encode()))
        assert [await peer.receive() for _ in range(5)] == [
            Pong(payload=f"p{i}".encode()) for i in range(5)
        ]
        assert [await this.recv() for _ in range(5)] == [f"m{i}" for i in range(5)]
        await peer.close()


async def test_unsolicited_pong_is_ignored(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A pong that answers no ping (RFC 6455 §5.5.3: a heartbeat) is dropped: nothing is sent
    back, a ping waiting for another payload keeps waiting, latency does not change, and the
    connection carries on."""
    this, peer = with_peer(side)
    rtts: list[float] = []

    async def ping() -> None:
        rtts.append(await this.ping(b"mine"))

    async with session(this), trio.open_nursery() as nursery:
        nursery.start_soon(ping)
        assert await peer.receive() == Ping(payload=b"mine")
        await trio.sleep(1)
        await peer.send(Pong(payload=b"heartbeat"), Pong(payload=b""))
        await peer.send(TextMessage(data="still open"))
        assert await this.recv() == "still open"
        assert (rtts, this.latency, this.state) == ([], 0.0, State.OPEN)
        await trio.sleep(1)
        await peer.send(Pong(payload=b"mine"))
        nursery.start_soon(this.aclose)
        # Nothing was written between the ping and the close frame.
        assert await peer.receive() == CloseConnection(code=1000, reason="")
        await peer.close()
    assert rtts == [2.0]


# -- keepalive -----------------------------------------------------------------------------


async def test_keepalive_timeout_reaches_the_users_pending_calls_with_1011(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """When keepalive gives up on a silent peer (ping_interval + ping_timeout), a recv() and a
    ping() already waiting raise ConnectionClosedError 1011 "keepalive ping timeout"; since the
    peer sent no close frame, close_code is 1006 and close_reason ""."""
    this, peer = with_peer(side, ping_interval=5, ping_timeout=3)
    errors: dict[str, ConnectionClosedError] = {}

    async def wait_in(name: str, call: Callable[[], Any]) -> None:
        with pytest.raises(ConnectionClosedError) as info:
            await call()
        errors[name] = info.value
        assert trio.current_time() == 8.0

    async with session(this):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_in, "recv", this.recv)
            nursery.start_soon(wait_in, "ping", lambda: this.ping(b"user"))
        assert {name: (e.code, e.reason) for name, e in errors.items()} == {
            "recv": (1011, "keepalive ping timeout"),
            "ping": (1011, "keepalive ping timeout"),
        }
        assert (this.state, this.close_code, this.close_reason) == (State.CLOSED, 1006, "")
    events = await peer.receive_until_eof()
    assert events[0] == Ping(payload=b"user")
    assert events[-1] == CloseConnection(code=1011, reason="keepalive ping timeout")


async def test_keepalive_latency_is_the_last_round_trip(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """latency holds the round trip of the latest keepalive ping, exactly, not the first one
    nor an average."""
    this, peer = with_peer(side, ping_interval=5, ping_timeout=3)
    latencies: list[float] = []

    async with session(this):
        for delay in (1.0, 2.5, 0.5):
            ping = await peer.receive()
            assert isinstance(ping, Ping)
            await trio.sleep(delay)
            await peer.send(ping.response())
            await wait_all_tasks_blocked()
            latencies.append(this.latency)
        assert trio.current_time() == 5 + 1 + 5 + 2.5 + 5 + 0.5
        await peer.close()
    assert latencies == [1.0, 2.5, 0.5]
