"""The Reader alone, over a real socket pair: who reads, and that reading always ends."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from trio_ws._inbox import Inbox
from trio_ws._reader import Reader
from trio_ws.exceptions import ConnectionClosedOK

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="reads sockets directly: POSIX")


class Owner:
    """What the reader reports to (the connection, in trio_ws): records it all."""

    def __init__(self, stop_at: bytes = b"stop") -> None:
        self.read: list[bytes] = []
        self.stop_at = stop_at  # take_in says "no more" after reading these bytes
        self.ended: list[BaseException | None] = []
        self.finished = trio.Event()
        self.reader: Reader | None = None

    def take_in(self, data: bytes | bytearray) -> bool:
        self.read.append(bytes(data))
        return not bytes(data).endswith(self.stop_at)

    def read_ended(self, error: BaseException | None) -> None:
        self.ended.append(error)

    def reader_bug(self, exc: Exception) -> None:
        raise AssertionError("the reader met a bug") from exc

    async def reader_finished(self) -> None:
        self.finished.set()

    # The inbox's owner too.
    def closed_error(self) -> ConnectionClosedOK:
        return ConnectionClosedOK(None, None)

    def pull(self) -> Awaitable[None]:
        assert self.reader is not None
        return self.reader.pull()


@dataclass
class Harness:
    """A Reader over one end of a socket pair; ``peer`` is the other end (a blocking socket)."""

    reader: Reader
    peer: socket.socket
    owner: Owner

    @property
    def read(self) -> list[bytes]:
        return self.owner.read

    @property
    def ended(self) -> list[BaseException | None]:
        return self.owner.ended

    @property
    def finished(self) -> trio.Event:
        return self.owner.finished


def new_reader(stream: trio.abc.Stream, owner: Owner) -> Reader:
    owner.reader = Reader(stream, Inbox(16, 4, owner), owner)
    return owner.reader


@asynccontextmanager
async def reading() -> AsyncIterator[Harness]:
    ours, peer = socket.socketpair()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    owner = Owner()
    harness = Harness(new_reader(stream, owner), peer, owner)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.reader.run)
        await wait_all_tasks_blocked()  # the reader is on watch
        try:
            yield harness
        finally:
            harness.reader.scope.cancel()
    await stream.aclose()
    peer.close()


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
    ours, peer = socket.socketpair()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    owner = Owner()
    reader = new_reader(stream, owner)
    await stream.aclose()
    assert await reader._wait_readable() is False
    assert [type(error) for error in owner.ended] == [trio.ClosedResourceError]
    peer.close()
