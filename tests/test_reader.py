"""The Reader alone, over a real socket pair: who reads, and that reading always ends."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from trio_ws._inbox import Inbox
from trio_ws._reader import Reader
from trio_ws.exceptions import ConnectionClosedOK

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="reads sockets directly: POSIX")


@dataclass
class Harness:
    """A Reader over one end of a socket pair; ``peer`` is the other end (a blocking socket)."""

    reader: Reader
    peer: socket.socket
    read: list[bytes] = field(default_factory=list)
    stop_at: bytes = b"stop"  # take_in says "no more" after reading these bytes
    ended: list[BaseException | None] = field(default_factory=list)
    finished: trio.Event = field(default_factory=trio.Event)


@asynccontextmanager
async def reading() -> AsyncIterator[Harness]:
    ours, peer = socket.socketpair()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    harness: Harness

    def take_in(data: bytes | bytearray) -> bool:
        harness.read.append(bytes(data))
        return not bytes(data).endswith(harness.stop_at)

    async def finish() -> None:
        harness.finished.set()

    inbox = Inbox(16, 4, lambda: ConnectionClosedOK(None, None), lambda: reader.pull())
    reader = Reader(
        stream,
        inbox,
        take_in=take_in,
        on_end=lambda error: harness.ended.append(error),
        on_bug=on_bug,
        finish=finish,
    )
    harness = Harness(reader, peer)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.run)
        await wait_all_tasks_blocked()  # the reader is on watch
        try:
            yield harness
        finally:
            reader.scope.cancel()
    await stream.aclose()
    peer.close()


def on_bug(exc: Exception) -> None:
    raise AssertionError("the reader met a bug") from exc


async def test_a_receiver_that_reads_the_end_while_the_reader_watches_ends_the_reader() -> None:
    """A receiver's read without waiting (the bytes were there) that ends reading also stops
    the reader task's wait for readability: reading ends, so the connection can close, even
    though the peer sends nothing more (before, the reader waited out close_timeout)."""
    async with reading() as harness:
        harness.peer.sendall(b"last words, then stop")
        await harness.reader.pull()  # reads at once: the bytes are in the socket already
        assert harness.read == [b"last words, then stop"]
        await wait_all_tasks_blocked()
        assert harness.finished.is_set()


async def test_a_receiver_reads_what_is_there_and_the_reader_keeps_watching() -> None:
    """A receiver takes what the socket holds without disturbing the reader; the reader then
    reads what comes while no receiver waits."""
    async with reading() as harness:
        harness.peer.sendall(b"first")
        await harness.reader.pull()
        harness.peer.sendall(b"second")
        await wait_all_tasks_blocked()  # the reader task reads it: nobody else is reading
        assert harness.read == [b"first", b"second"]
        assert not harness.finished.is_set()


async def test_a_receiver_with_nothing_to_read_waits_in_the_readers_stead() -> None:
    """With the socket empty, a receiver waits for it itself; what comes goes to it, and the
    reader is back on watch once it returns."""
    async with reading() as harness, trio.open_nursery() as nursery:
        nursery.start_soon(harness.reader.pull)
        await wait_all_tasks_blocked()
        harness.peer.sendall(b"for the receiver")
        await wait_all_tasks_blocked()
        harness.peer.sendall(b"for the reader")
        await wait_all_tasks_blocked()
        assert harness.read == [b"for the receiver", b"for the reader"]


async def test_a_wait_begun_after_the_socket_closed_ends_reading_not_a_bug() -> None:
    """A wait for the socket that begins once it is closed (the connection closing under a
    reader that re-registers) ends reading as a closed stream would, never as a bug: trio
    cannot say the socket closed, and epoll would reject its fd of -1."""
    ended: list[BaseException | None] = []
    ours, peer = socket.socketpair()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    inbox = Inbox(16, 4, lambda: ConnectionClosedOK(None, None), lambda: reader.pull())

    async def finish() -> None:
        pass

    reader = Reader(
        stream, inbox, take_in=lambda data: True, on_end=ended.append, on_bug=on_bug, finish=finish
    )
    await stream.aclose()
    assert await reader._wait_readable() is False
    assert [type(error) for error in ended] == [trio.ClosedResourceError]
    peer.close()
