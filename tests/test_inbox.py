"""trio_ws._inbox through Connection: recv() and recv_streaming() of messages that arrive
whole or in pieces, and how far the reader reads ahead of them.

The far end is a hand-driven wsproto peer (see tests/test_connection.py), so that each frame
arrives when the test says.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked
from wsproto.events import BytesMessage, Ping, Pong, TextMessage

from tests.test_connection import Peer, with_lockstep_peer, with_peer
from tests.test_protocol import CONTINUATION, TEXT, frame
from trio_ws._inbox import PIECES_HIGH_WATER
from trio_ws._session import session
from trio_ws.exceptions import ConcurrencyError, ConnectionClosedError, ConnectionClosedOK


def piece(data: str | bytes, *, last: bool = False) -> TextMessage | BytesMessage:
    """One frame of a fragmented message."""
    if isinstance(data, str):
        return TextMessage(data=data, message_finished=last)
    return BytesMessage(data=data, message_finished=last)


async def test_recv_joins_the_pieces_of_a_message(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """recv() returns a fragmented message whole, once its last frame has come."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(piece("frag"), piece("men"))
        await wait_all_tasks_blocked()
        with trio.move_on_after(1) as scope:
            await this.recv()
        assert scope.cancelled_caught  # nothing whole yet, and nothing consumed
        await peer.send(piece("ted", last=True), piece(b"\x00"), piece(b"\x01", last=True))
        assert await this.recv() == "fragmented"
        assert await this.recv() == b"\x00\x01"
        await peer.close()


async def test_recv_streaming_yields_each_piece_as_it_arrives(side: str) -> None:
    """Each frame's data comes out of recv_streaming() before the next frame is sent; the
    iteration ends with the message."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        stream = this.recv_streaming()
        await peer.send(piece("one "))
        assert await stream.__anext__() == "one "
        await peer.send(piece("two "))
        assert await stream.__anext__() == "two "
        await peer.send(piece("three", last=True), TextMessage(data="next"))
        assert await stream.__anext__() == "three"
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
        assert await this.recv() == "next"
        await peer.close()


async def test_recv_streaming_gives_a_whole_message_as_one_piece(side: str) -> None:
    """A message that arrived in one frame is one piece."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(BytesMessage(data=b"whole"))
        assert [p async for p in this.recv_streaming()] == [b"whole"]
        await peer.close()


async def test_recv_streaming_skips_an_empty_last_frame(side: str) -> None:
    """An empty final frame (as an async iterable's send() ends) ends the message and adds
    no empty piece."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(piece(b"a"), piece(b"b"), piece(b"", last=True))
        pieces = [p async for p in this.recv_streaming()]
        assert b"".join(pieces) == b"ab"
        assert all(pieces)  # pieces read together may come as one, but never empty
        await peer.close()


async def test_text_pieces_are_whole_characters(side: str) -> None:
    """A character split across frames comes out whole, in one of the pieces."""
    this, peer, _, _ = with_peer(side)
    euro = "€".encode()
    async with session(this):
        await peer.stream.send_all(frame(side, TEXT, euro[:1], fin=False))
        await peer.stream.send_all(frame(side, CONTINUATION, euro[1:] + b"!"))
        pieces = [p async for p in this.recv_streaming()]
        assert "".join(pieces) == "€!"  # type: ignore[arg-type]
        assert all(isinstance(p, str) for p in pieces)
        await peer.close()


async def test_invalid_utf8_fails_the_stream_before_the_message_ends(side: str) -> None:
    """Bytes that can never be UTF-8 fail the connection with 1007 as soon as their frame
    arrives, whatever comes later: the stream raises after the valid pieces."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(piece("valid "))
        stream = this.recv_streaming()
        assert await stream.__anext__() == "valid "
        await peer.stream.send_all(frame(side, CONTINUATION, b"\xff", fin=False))
        with pytest.raises(ConnectionClosedError) as info:
            await stream.__anext__()
        assert info.value.code == 1007


async def test_stopping_a_stream_early_discards_the_rest_of_its_message(side: str) -> None:
    """After a stream is left mid-message, recv() discards the rest of that message (what
    has arrived and what comes later) and returns the next one; the old stream then raises
    ConcurrencyError."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(piece("a"))
        stream = this.recv_streaming()
        assert await stream.__anext__() == "a"
        await peer.send(piece("b"))
        await wait_all_tasks_blocked()
        async with trio.open_nursery() as nursery:

            async def recv_next() -> None:
                assert await this.recv() == "next"

            nursery.start_soon(recv_next)
            await wait_all_tasks_blocked()
            await peer.send(piece("c", last=True), TextMessage(data="next"))
        with pytest.raises(ConcurrencyError):
            await stream.__anext__()
        await peer.send(piece(b"x"), piece(b"y", last=True))
        assert await this.recv() == b"xy"
        await peer.close()


async def test_stream_of_a_message_cut_by_the_close_raises(side: str) -> None:
    """A close frame in the middle of a message ends the stream with ConnectionClosed;
    recv() raises it too, the unfinished message is not returned."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        await peer.send(piece(b"part"))
        stream = this.recv_streaming()
        assert await stream.__anext__() == b"part"
        await peer.close()
        with pytest.raises(ConnectionClosedOK):
            await stream.__anext__()
        with pytest.raises(ConnectionClosedOK):
            await this.recv()


async def test_recv_while_a_stream_waits_raises_concurrency_error(side: str) -> None:
    """Only one task receives at a time, by recv() or by a stream."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        async with trio.open_nursery() as nursery:

            async def stream_one() -> None:
                assert [p async for p in this.recv_streaming()] == ["m"]

            nursery.start_soon(stream_one)
            await wait_all_tasks_blocked()
            with pytest.raises(ConcurrencyError):
                await this.recv()
            with pytest.raises(ConcurrencyError):
                await this.recv_streaming().__anext__()
            await peer.send(TextMessage(data="m"))
        await peer.close()


async def test_cancelled_stream_step_loses_no_piece(
    side: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A step cancelled while it waits takes nothing: the next step gets the piece."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        stream = this.recv_streaming()
        with trio.move_on_after(1):
            await stream.__anext__()
        await peer.send(piece("p", last=True))
        assert [p async for p in stream] == ["p"]
        await peer.close()


# -- how far the reader reads ahead --------------------------------------------------------


async def send_pieces(peer: Peer, count: int, size: int, sent: list[int]) -> None:
    """Send one binary message of ``count`` frames of ``size`` bytes; note each frame sent."""
    for i in range(count):
        await peer.send(piece(bytes([i % 256]) * size, last=i == count - 1))
        sent.append(i)


async def test_reader_stops_about_a_high_water_mark_ahead_of_a_stream(side: str) -> None:
    """With max_size=None, pieces of an unfinished message that nobody takes stop the reader
    at PIECES_HIGH_WATER (plus a frame); each piece taken lets more in."""
    this, peer = with_lockstep_peer(side, max_size=None)
    size, count = 64 * 1024, 64  # a 4 MiB message
    sent: list[int] = []
    async with session(this), trio.open_nursery() as nursery:
        nursery.start_soon(send_pieces, peer, count, size, sent)
        await wait_all_tasks_blocked()
        ahead = len(sent) * size
        assert PIECES_HIGH_WATER <= ahead <= PIECES_HIGH_WATER + 2 * size
        total = 0
        async for data in this.recv_streaming():
            total += len(data)
            await wait_all_tasks_blocked()
            assert len(sent) * size - total <= PIECES_HIGH_WATER + 2 * size
        assert total == count * size
        await peer.close()


async def test_recv_of_a_message_past_the_high_water_mark_reads_it_all(side: str) -> None:
    """recv() needs the whole message: waiting for it lets the reader past the high-water
    mark (max_size bounds it instead)."""
    this, peer = with_lockstep_peer(side, max_size=None)
    size, count = 64 * 1024, 40
    sent: list[int] = []
    async with session(this):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_pieces, peer, count, size, sent)
            message = await this.recv()
        assert len(message) == count * size
        assert message[-size:] == bytes([count - 1]) * size
        await peer.close()


async def test_pings_are_answered_while_the_reader_reads_pieces_for_recv(side: str) -> None:
    """A ping between the pieces of a message recv() waits for is answered at once."""
    this, peer, _, _ = with_peer(side)
    async with session(this):
        async with trio.open_nursery() as nursery:

            async def recv_it() -> None:
                assert await this.recv() == "ab"

            nursery.start_soon(recv_it)
            await peer.send(piece("a"), Ping(payload=b"!"))
            assert await peer.receive() == Pong(payload=b"!")
            await peer.send(piece("b", last=True))
        await peer.close()
