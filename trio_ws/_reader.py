"""A connection's reading: who reads the stream, and when.

How this works: every read goes to ``take_in``, which acts on it at once (messages to the
inbox, pongs and close answers to the writer), so a ping is answered as soon as it is read. Two
tasks may read, never at once:

- a receiver (``recv()``, ``recv_streaming()``) with nothing to take reads the stream itself
  (:meth:`Reader.pull`), over a plain TCP socket: the message goes from the socket to the
  application with no hand-off between tasks. It reads what the socket holds without
  waiting (``os.read``); only when the socket holds nothing does it wait for it to be readable;
- the reader task reads whenever no receiver does, so that the peer's pings and close frames
  are answered while the application is busy elsewhere. It waits for the socket to be
  readable; a receiver that has to wait cancels that wait and waits in its stead, and wakes the
  reader again as it returns, so the reader is back on watch from the next scheduling pass. No
  time-based grace.

Over other streams (TLS, memory streams) only the reader task reads, and receivers wait for
what it puts in the inbox. The reader stops reading while the inbox is full, so that TCP
pushes back on the peer, except while the connection is closing: the peer's close frame must be
read. It runs in a shielded cancel scope of its own, so that a cancelled application can still
finish the closing handshake; the connection cancels that scope, or gives it a deadline, when
it is done with the stream.

Over a plain socket the reader task also hosts a client connection's keepalive timer: its
waits carry the next ping's due time, so no task of its own waits for it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Protocol

import trio

from ._inbox import Inbox
from ._keepalive import KeepaliveTimer
from ._writer import plain_socket
from ._yielding import resumed, schedule_point

__all__ = ["Reader", "ReaderOwner"]

_RECEIVE_SIZE = 64 * 1024
_NO_TIMER = contextlib.nullcontext()


class ReaderOwner(Protocol):
    """What the reader reports to: its connection (``Core``)."""

    def take_in(self, data: bytes | bytearray) -> bool:
        """Act on bytes read; return False once nothing more should be read."""
        ...

    def read_ended(self, error: BaseException | None) -> None:
        """The stream failed (``error``) or ended (None)."""
        ...

    def reader_bug(self, exc: Exception) -> None:
        """A bug in trio_ws raised ``exc`` while reading."""
        ...

    async def reader_finished(self) -> None:
        """Reading is over, whatever ended it."""
        ...


class Reader:
    """Reads ``stream`` until ``owner.take_in`` says stop, the stream ends or ``scope`` is
    cancelled, and reports to ``owner``: one reference to its connection, where a bound method
    per callback would cost every connection 64 bytes each."""

    __slots__ = (
        "_done",
        "_inbox",
        "_owner",
        "_parked",
        "_pulling",
        "_socket",
        "_stream",
        "_timer",
        "_watch",
        "scope",
    )

    def __init__(self, stream: trio.abc.Stream, inbox: Inbox, owner: ReaderOwner) -> None:
        self._stream = stream
        self._socket = plain_socket(stream)
        self._inbox = inbox
        self._owner = owner
        self.scope = trio.CancelScope(shield=True)
        self._done = False  # reading is over: the reader task finishes the connection
        self._pulling = False  # a receiver reads the stream
        self._watch: trio.CancelScope | None = None  # the reader's wait for readability
        self._parked: trio.lowlevel.Task | None = None  # the reader, while a receiver reads
        self._timer: KeepaliveTimer | None = None  # hosted in the reader's waits

    async def run(self) -> None:
        """The reader task: reads whenever no receiver does.

        One coroutine, parked without a helper's: each frame a waiting task holds costs about
        220 bytes, and every idle connection has this task waiting.
        """
        inbox, timer = self._inbox, self._timer
        try:
            with self.scope:
                while not self._done:
                    # A hosted timer's due time bounds every wait until it falls due: one
                    # cancel scope per keepalive round, not one per wait.
                    with timer.wait_scope() if timer is not None else _NO_TIMER:
                        while not self._done:
                            if self._pulling:
                                # Wait for _wake(): a parking lot of one, without its memory.
                                self._parked = trio.lowlevel.current_task()
                                await trio.lowlevel.wait_task_rescheduled(self._abort_park)
                                # A receiver that just returned usually reads again once its
                                # application has sent its answer, in the next pass: watching
                                # before then would only be undone. One that did so already,
                                # or met the end, needs no pass.
                                if not self._done and not self._pulling:
                                    await trio.lowlevel.cancel_shielded_checkpoint()
                                continue
                            if inbox.is_full():
                                await inbox.wait_for_room()
                                continue
                            if self._socket is None:
                                if not await self._receive_from_stream():
                                    return
                                continue
                            going_on: bool | None = None
                            try:
                                with trio.CancelScope() as self._watch:
                                    going_on = await self._wait_readable()
                            finally:  # the timer's due time may end the wait too
                                self._watch = None
                            if self._pulling or self._done:
                                continue  # a receiver took over
                            if going_on is None:
                                going_on = self._read_nowait()
                            if going_on is False:
                                return
                    if timer is not None:
                        timer.fire_due()
        except Exception as exc:  # reported, never raised: see _groups
            self._owner.reader_bug(exc)
        finally:
            await self._owner.reader_finished()

    def host_timer(self, timer: KeepaliveTimer) -> bool:
        """Host ``timer`` in the reader task's waits, before it runs; whether it can (only
        over a plain socket: a wait in another stream cannot be cut short safely)."""
        if self._socket is None:
            return False
        self._timer = timer
        return True

    async def pull(self) -> None:
        """For a receiver with nothing to take: read the stream, or wait while the reader does.

        Always a cancel point, and a schedule point as :func:`schedule_point` says; cancelling
        it consumes nothing.
        """
        if self._socket is None or self._done or self._pulling:
            await self._inbox.wait_for_arrival()
            resumed()
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        going_on = self._read_nowait()
        if going_on is None:  # nothing to read yet: wait for the socket, in the reader's stead
            self._pulling = True
            if self._watch is not None:
                self._watch.cancel()  # frees the socket at once: the abort is synchronous
            try:
                sock = self._socket
                while going_on is None:  # _wait_readable() inline: one frame less while idle
                    try:
                        if sock.fileno() < 0:  # closed before this wait began
                            raise trio.ClosedResourceError("the socket was closed")
                        await trio.lowlevel.wait_readable(sock)
                    except trio.ClosedResourceError as exc:
                        self._owner.read_ended(exc)
                        going_on = False
                    else:
                        going_on = self._read_nowait()
            finally:
                self._pulling = False
                self._wake()  # back on watch while the application works
            resumed()
        elif going_on:
            await schedule_point()  # what was read is taken in: nothing can overtake it
        if not going_on:
            self._stop()

    def _read_nowait(self) -> bool | None:
        """Read what the socket holds and act on it: None if it holds nothing yet, else whether
        reading goes on."""
        assert self._socket is not None
        try:
            data = os.read(self._socket.fileno(), _RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:  # reset by the peer, or closed under us
            self._owner.read_ended(exc)
            return False
        return self._act_on(data)

    async def _wait_readable(self) -> bool | None:
        """Wait until the socket is readable: None then, False if it was closed meanwhile."""
        assert self._socket is not None
        try:
            if self._socket.fileno() < 0:  # closed before this wait began: trio cannot say so
                raise trio.ClosedResourceError("the socket was closed")
            await trio.lowlevel.wait_readable(self._socket)
        except trio.ClosedResourceError as exc:
            self._owner.read_ended(exc)
            return False
        return None

    def _stop(self) -> None:
        """A receiver met the end of reading: the reader task finishes the connection."""
        self._done = True
        if self._watch is not None:  # a receiver read without waiting: the reader is on watch
            self._watch.cancel()
        self._wake()

    def _abort_park(self, _: object) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        task, self._parked = self._parked, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def _act_on(self, data: bytes | bytearray) -> bool:
        """Take in what was read (b"": the end of the stream); whether reading goes on."""
        if not data:
            self._owner.read_ended(None)
            return False
        return self._owner.take_in(data)

    async def _receive_from_stream(self) -> bool:
        """Read from a stream that is not a plain socket; whether reading goes on."""
        try:
            data = await self._stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._owner.read_ended(exc)
            return False
        return self._act_on(data)
