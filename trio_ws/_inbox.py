"""A connection's receive queue: what was received and the application has not taken.

How this works: whoever reads the stream (the connection's reader task, or a taker reading for
itself: ``_reader.py``) puts what the protocol reports, a message that arrived whole as itself
and one that arrives in pieces piece by piece. The application takes
a whole message with :meth:`Inbox.get` (which joins pieces) or the pieces of one message, as
they arrive, through a :class:`MessageStream`.
Only one task takes at a time; when there is nothing to take it calls ``pull``, which reads the
stream or waits for the reader to.

Backpressure: after each read the reader asks :meth:`Inbox.is_full` and, while it says so,
waits in :meth:`Inbox.wait_for_room` instead of reading the socket, so that TCP pushes back on
the peer, until takers bring the queue down to its low-water mark. The inbox is full while
``max_queue`` (its high-water mark) complete messages wait, or while the pieces of
an unfinished message reach ``PIECES_HIGH_WATER`` and no get() waits for the rest of it (a
stream takes pieces one by one; get() needs the whole message, bounded by ``max_size``).
Once the connection is closing the reader reads on for the peer's close frame: messages that
start while the queue is full are dropped then.

Memory: an idle connection holds no queue and no parking lot. The deque exists while something
is queued (an empty one costs 760 bytes), and each parking lot from its first wait (about 180
bytes each); put() and the takers check for None where they would wake a waiter.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable
from typing import Protocol, Self

import trio

from ._yielding import checkpoint
from .exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedOK

__all__ = ["PIECES_HIGH_WATER", "Inbox", "InboxOwner", "MessageStream"]

Data = str | bytes
#: Bytes (or characters) of an unfinished message queued before the reader waits for a taker.
PIECES_HIGH_WATER = 1024 * 1024


class _Piece:
    __slots__ = ("data", "final")

    def __init__(self, data: Data, final: bool) -> None:
        self.data = data
        self.final = final


class MessageStream:
    """The pieces of one message, as they arrive: ``async for piece in ws.recv_streaming()``."""

    __slots__ = ("abandoned", "done", "inbox", "started")

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.started = False  # it took a piece of a message that has more to come
        self.done = False
        self.abandoned = False  # a later taker discarded the rest of its message

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Data:
        if self.done:
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
        if self.abandoned:
            raise ConcurrencyError("a later recv() discarded the rest of this message")
        return await self.inbox.next_piece(self)


class InboxOwner(Protocol):
    """The connection an inbox belongs to (``Core``)."""

    def closed_error(self) -> ConnectionClosed:
        """What a taker raises once nothing more will arrive."""
        ...

    def pull(self) -> Awaitable[None]:
        """For a taker with nothing to take: make something arrive."""
        ...


class Inbox:
    """The receive queue of one connection. See the module docstring."""

    __slots__ = (
        "_arrived",
        "_closing",
        "_complete",
        "_dropping",
        "_ended",
        "_items",
        "_max_queue",
        "_max_queue_low",
        "_mid_message",
        "_owner",
        "_piece_size",
        "_room",
        "_streamed",
        "_taking",
        "_whole_wanted",
    )

    def __init__(
        self, max_queue: int | None, max_queue_low: int | None, owner: InboxOwner
    ) -> None:
        self._owner = owner  # one reference, not a bound method (64 bytes) per callback
        self._items: deque[Data | _Piece] | None = None  # while something is queued
        self._complete = 0  # whole messages in _items; a final piece completes one
        self._piece_size = 0  # the length of the pieces in _items
        self._max_queue = math.inf if max_queue is None else max_queue
        self._max_queue_low = (
            math.inf if max_queue is None or max_queue_low is None else max_queue_low
        )
        self._arrived: trio.lowlevel.ParkingLot | None = None  # pull() waits here, once it has
        self._room: trio.lowlevel.ParkingLot | None = None  # the reader waits here, once it has
        self._taking = False  # a task is in get() or next_piece()
        self._whole_wanted = False  # get() waits for the rest of a message
        self._mid_message = False  # the reader put pieces of a message whose end is to come
        self._dropping = False  # the reader drops the pieces of the current message
        self._streamed: MessageStream | None = None  # took part of a message, not its end
        self._closing = False
        self._ended = False

    # -- the reader's side -----------------------------------------------------------------

    def put_message(self, data: Data) -> None:
        """Queue a message that arrived whole."""
        if self._closing and self._complete >= self._max_queue:
            return
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(data)
        self._complete += 1
        if self._arrived:
            self._arrived.unpark()

    def put_piece(self, data: Data, final: bool) -> None:
        """Queue a piece of a message; ``final`` marks its last."""
        if not self._mid_message:
            self._dropping = self._closing and self._complete >= self._max_queue
        self._mid_message = not final
        if self._dropping:
            return
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(_Piece(data, final))
        self._piece_size += len(data)
        if final:
            self._complete += 1
        if self._arrived:
            self._arrived.unpark()

    def is_full(self) -> bool:
        """Whether the reader should stop reading until a taker makes room."""
        if self._closing:
            return False
        return self._complete >= self._max_queue or (
            self._piece_size >= PIECES_HIGH_WATER and not self._whole_wanted
        )

    async def wait_for_room(self) -> None:
        """Wait until takers brought the queue down to its low-water mark, or it is closing."""
        if self._room is None:
            self._room = trio.lowlevel.ParkingLot()
        await self._room.park()

    async def wait_for_arrival(self) -> None:
        """For ``pull``: wait until something is put or the inbox ends."""
        if self._arrived is None:
            self._arrived = trio.lowlevel.ParkingLot()
        await self._arrived.park()

    def _made_room(self) -> None:
        if self._room and self._complete <= self._max_queue_low:
            self._room.unpark_all()

    def _wake_reader(self) -> None:
        if self._room:
            self._room.unpark_all()

    def _take(self) -> Data | _Piece:
        """The first item queued; the queue goes once empty (an empty deque costs 760 bytes)."""
        items = self._items
        assert items is not None
        item = items.popleft()
        if not items:
            self._items = None
        return item

    @property
    def closing(self) -> bool:
        return self._closing

    def start_closing(self) -> None:
        """From now on, never make the reader wait: it must read the peer's close frame."""
        self._closing = True
        self._wake_reader()

    def end(self) -> None:
        """No more messages will come: takers get the rest, then the closed error."""
        self._ended = True
        self._closing = True
        if self._arrived:
            self._arrived.unpark_all()
        self._wake_reader()

    # -- the application's side ------------------------------------------------------------

    async def get(self, *, iterating: bool = False) -> Data:
        """Take the next whole message. See :meth:`Connection.recv`.

        ``iterating``: for ``async for``, StopAsyncIteration where recv() raises
        ConnectionClosedOK.
        """
        if self._taking:
            raise ConcurrencyError("another task is already receiving")
        self._taking = True
        try:
            if self._streamed is not None:
                self._drop_abandoned()
            parked = False
            while not self._complete:
                if self._ended:
                    await trio.lowlevel.checkpoint()
                    error = self._owner.closed_error()
                    if iterating and isinstance(error, ConnectionClosedOK):
                        raise StopAsyncIteration
                    raise error
                if self._items and not self._whole_wanted:
                    self._whole_wanted = True
                    self._wake_reader()  # the reader may wait at the high-water mark
                await self._owner.pull()
                parked = True
            if not parked:
                await checkpoint()
            item = self._take()
            if type(item) is _Piece:
                item = self._join(item)
            self._complete -= 1
            self._made_room()
            return item  # type: ignore[return-value]
        finally:
            self._whole_wanted = False
            self._taking = False

    def stream(self) -> MessageStream:
        """An iterator over the pieces of the next message."""
        return MessageStream(self)

    async def next_piece(self, stream: MessageStream) -> Data:
        """Take the next piece of ``stream``'s message. See :meth:`Connection.recv_streaming`."""
        if self._taking:
            raise ConcurrencyError("another task is already receiving")
        self._taking = True
        try:
            if not stream.started and self._streamed is not None:
                self._drop_abandoned()
            parked = False
            while not self._items:
                if self._ended:
                    await trio.lowlevel.checkpoint()
                    raise self._owner.closed_error()
                await self._owner.pull()
                parked = True
            if not parked:
                await checkpoint()
            item = self._take()
            self._wake_reader()  # pieces taken: room below the pieces' high-water mark
            if type(item) is not _Piece:
                stream.done = True
                self._complete -= 1
                return item  # type: ignore[return-value]
            self._piece_size -= len(item.data)
            if not item.final:
                stream.started = True
                self._streamed = stream
                return item.data
            stream.done = True
            self._streamed = None
            self._complete -= 1
            if stream.started and not item.data:
                raise StopAsyncIteration  # an empty last frame ends the message, adds nothing
            return item.data
        finally:
            self._taking = False

    def _join(self, first: _Piece) -> Data:
        pieces = [first.data]
        final = first.final
        while not final:
            piece = self._take()
            assert isinstance(piece, _Piece)
            pieces.append(piece.data)
            final = piece.final
        self._piece_size -= sum(map(len, pieces))
        if isinstance(first.data, str):
            return "".join(pieces)  # type: ignore[arg-type]
        return b"".join(pieces)  # type: ignore[arg-type]

    def _drop_abandoned(self) -> None:
        """Discard the rest of the message a stream left unfinished."""
        assert self._streamed is not None
        self._streamed.abandoned = True
        self._streamed = None
        while self._items:
            piece = self._take()
            assert isinstance(piece, _Piece)
            self._piece_size -= len(piece.data)
            if piece.final:
                self._complete -= 1
                self._wake_reader()
                return
        self._dropping = True  # the rest has yet to come: the reader drops it
        self._wake_reader()
