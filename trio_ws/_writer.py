"""A connection's outgoing bytes: a bounded buffer of whole frames, written without cutting one.

How this works: whoever has a frame to send (``send()``, the reader answering a ping or a close
frame, a keepalive ping) frames it and hands the bytes to :meth:`Writer.write`, which never
blocks: the bytes are queued whole, so no cancellation can cut a frame. Over a plain TCP socket
the queue is written at once, from the calling task, with non-blocking system calls that take
what the kernel accepts; over other streams (TLS, memory streams), and for whatever the kernel
did not take, a drain task writes the rest as the stream takes it, several frames per call. The
drain task starts the first time it is needed and runs in a shielded cancel scope of its own,
so that a cancelled body can still flush its close frame; :meth:`Writer.stop` ends it.

Backpressure: ``send()`` waits in :meth:`Writer.wait_for_room` while more than the high-water
mark is queued, until the queue drains to the low-water mark. A write that fails (the peer
reset the connection) calls ``on_lost`` once and drops everything queued since.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from .stats import Stats

__all__ = ["Writer", "close_stream", "plain_socket"]

# Bytes the drain task joins into one write to a stream that is not a plain socket.
_STREAM_CHUNK = 256 * 1024
# The most buffers handed to one writev() (IOV_MAX is 1024 on Linux and macOS).
_MAX_BUFFERS = 512


def plain_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The socket under ``stream`` when it may be read and written directly (POSIX, no TLS)."""
    if sys.platform == "win32" or not isinstance(stream, trio.SocketStream):
        return None
    return stream.socket


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close ``stream`` at once; never raises Cancelled.

    :func:`trio.aclose_forcefully`, without its cancelled scope and the Cancelled it catches
    for a plain socket stream, whose ``aclose()`` only closes the socket: then it does not
    yield either (its callers are on their way out, each one a checkpoint of its own).
    """
    if type(stream) is trio.SocketStream:
        stream.socket.close()
        return
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(stream)


class Writer:
    """The outgoing side of one connection. See the module docstring.

    Args:
        stream: the connection's stream; only this writer writes to it.
        high: the high-water mark, in bytes: ``wait_for_room`` waits above it.
        low: the low-water mark, in bytes: where ``wait_for_room`` stops waiting.
        on_lost: called once, with the error, when a write fails.
        stats: where the bytes queued are counted (``bytes_out``).
    """

    __slots__ = (
        "_buffers",
        "_drain_scope",
        "_drained",
        "_high",
        "_idle",
        "_lost",
        "_low",
        "_nursery",
        "_offset",
        "_on_lost",
        "_progress_at",
        "_size",
        "_socket",
        "_stats",
        "_stream",
        "_writing",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        high: int,
        low: int,
        on_lost: Callable[[BaseException], None],
        stats: Stats,
    ) -> None:
        self._stream = stream
        self._stats = stats
        self._socket = plain_socket(stream)
        self._high = high
        self._low = low
        self._on_lost = on_lost
        self._buffers: list[bytes] = []  # a list: an empty deque costs 760 bytes
        self._offset = 0  # how much of the first buffer is written already
        self._size = 0  # bytes queued, not yet written
        self._writing = False  # the drain task is in a blocking write
        self._lost = False
        self._progress_at: float | None = None  # when a write last progressed, while queued
        self._nursery: trio.Nursery | None = None  # where the drain task starts
        self._drain_scope: trio.CancelScope | None = None  # the drain task's, once started
        self._idle: trio.lowlevel.ParkingLot | None = None  # the drain task waits for bytes
        self._drained: trio.lowlevel.ParkingLot | None = None  # senders wait for room

    @property
    def buffered(self) -> int:
        """Bytes queued and not yet taken by the stream."""
        return self._size

    @property
    def lost(self) -> bool:
        """Whether a write failed or the writer stopped: nothing queued will go out."""
        return self._lost

    def start(self, nursery: trio.Nursery) -> None:
        """Let the writer start its drain task in ``nursery`` when it needs one."""
        self._nursery = nursery

    def stop(self) -> None:
        """End the drain task, if any, and drop what is still queued: the stream is closing."""
        self._nursery = None
        if self._drain_scope is not None:
            self._drain_scope.cancel()
        self._drop()

    def _drop(self) -> None:
        self._lost = True
        self._buffers.clear()
        self._size = self._offset = 0
        if self._drained is not None:
            self._drained.unpark_all()
        if self._idle is not None:
            self._idle.unpark_all()

    def stalled_for(self, now: float) -> float:
        """How long bytes have been queued without any write progress (0.0 when none are)."""
        if not self._size or self._progress_at is None:
            return 0.0
        return now - self._progress_at

    def write(self, data: bytes) -> None:
        """Queue whole frames and write what the socket takes now. Never blocks or raises."""
        if self._lost or not data:
            return
        self._stats.bytes_out += len(data)
        if self._socket is not None and not self._writing:
            if self._size:  # behind what the kernel did not take: it may take some now
                self._buffers.append(data)
                self._size += len(data)
                self._write_nowait()
                if self._size:
                    self._wake_drain()
                return
            # The hot path: nothing queued, the kernel usually takes all of it.
            try:
                written = os.write(self._socket.fileno(), data)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._fail(exc)
                return
            if written == len(data):
                return
            data = data[written:]
        if not self._size:
            self._progress_at = trio.current_time()
        self._buffers.append(data)
        self._size += len(data)
        self._wake_drain()

    def is_full(self) -> bool:
        """Whether more than the high-water mark is queued."""
        return self._size > self._high

    async def wait_for_room(self) -> None:
        """Wait until the queue is down to the low-water mark (or the writer is lost).

        Cancelling stops the wait; what was queued still goes out.
        """
        while self._size > self._low and not self._lost:
            if self._drained is None:
                self._drained = trio.lowlevel.ParkingLot()
            await self._drained.park()

    async def drain(self) -> None:
        """Wait until everything queued is written (or the writer is lost)."""
        while self._size and not self._lost:
            if self._drained is None:
                self._drained = trio.lowlevel.ParkingLot()
            await self._drained.park()

    # -- writing ---------------------------------------------------------------------------

    def _write_nowait(self) -> None:
        """Write to the socket what the kernel takes now, without blocking."""
        assert self._socket is not None
        buffers = self._buffers
        try:
            while buffers:
                batch: list[bytes | memoryview] = list(buffers[:_MAX_BUFFERS])
                if self._offset:
                    batch[0] = memoryview(batch[0])[self._offset :]
                written = os.writev(self._socket.fileno(), batch)
                self._consume(written)
                if written < sum(map(len, batch)):
                    return  # the kernel's buffer is full
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)

    def _consume(self, written: int) -> None:
        """Drop ``written`` bytes from the front of the queue."""
        self._progress_at = trio.current_time()
        self._size -= written
        buffers = self._buffers
        written += self._offset
        done = 0
        while done < len(buffers) and written >= len(buffers[done]):
            written -= len(buffers[done])
            done += 1
        del buffers[:done]
        self._offset = written
        drained = self._drained
        if drained and self._size <= self._low:
            drained.unpark_all()

    def _wake_drain(self) -> None:
        if self._idle is not None:
            self._idle.unpark_all()
        elif self._drain_scope is None and self._nursery is not None:
            self._drain_scope = trio.CancelScope(shield=True)
            self._idle = trio.lowlevel.ParkingLot()
            self._nursery.start_soon(self._drain_task)

    async def _drain_task(self) -> None:
        assert self._drain_scope is not None and self._idle is not None
        with self._drain_scope:
            try:
                while not self._lost:
                    if not self._size:
                        await self._idle.park()
                        continue
                    self._writing = True
                    try:
                        await self._write_some()
                    finally:
                        self._writing = False
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._fail(exc)

    async def _write_some(self) -> None:
        """Write part of the queue, blocking until the stream takes it."""
        if self._socket is not None:
            await trio.lowlevel.wait_writable(self._socket)
            self._write_nowait()
            return
        buffers = self._buffers
        head = memoryview(buffers[0])[self._offset :]
        if len(buffers) > 1 and len(head) < _STREAM_CHUNK:
            chunk = bytearray(head)
            for data in buffers[1:]:
                if len(chunk) + len(data) > _STREAM_CHUNK:
                    break
                chunk += data
            head = memoryview(chunk)
        await self._stream.send_all(head)
        self._consume(len(head))

    def _fail(self, exc: BaseException) -> None:
        if self._lost:
            return
        self._drop()
        self._on_lost(exc)
