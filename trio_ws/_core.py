"""The machinery of one open connection, behind :class:`~trio_ws.connection.Connection`.

How this works: a :class:`Core` owns the stream and everything that runs for it, and
:meth:`Core.session` runs it: a nursery for the background tasks around the body that uses the
connection (``connect()``'s block, a server's handler), and the closing handshake when the body
exits. By concern:

- ``_reader.py``: a receiver with nothing to take reads the socket itself, and the reader task
  whenever no receiver does; every read goes to ``take_in``, which acts on it at once:
  messages to the inbox (``_inbox.py``), where ``recv()`` takes them; pongs to the pings in
  flight (``_pings.py``); the answers to pings and close frames to the writer. So a ping is
  answered as soon as it is read, whatever the application does.
- ``_writer.py``: whole frames go into a bounded buffer, written at once when the socket takes
  them and by a drain task otherwise. Queueing never blocks, so no cancellation cuts a frame.
- ``_closing.py``: the close frames and the first failure, which decide what every later call
  raises and what our close frame says.
- ``_keepalive.py``: a timer (a server's task for all its connections, or a client
  connection's own, hosted by its reader) starts a ping round every ``ping_interval``.

The reader and the drain task run in shielded cancel scopes, so that a cancelled body can still
send its close frame and read the peer's; ``close_timeout`` bounds that, then they are
cancelled. Only :meth:`Core.finish` closes the stream.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING

import trio

from . import _groups
from ._closing import Ending, State
from ._inbox import Inbox
from ._keepalive import Keepalive, KeepaliveTimer
from ._pings import Pings
from ._protocol import (
    FRAME_SIZE,
    CloseReceived,
    FragmentReceived,
    MessageReceived,
    PingReceived,
    PongReceived,
    Protocol,
)
from ._reader import Reader
from ._writer import Writer, close_stream
from ._yielding import schedule_point
from .exceptions import ConnectionClosed, WebSocketError

if TYPE_CHECKING:
    from wsproto.connection import Connection as WSProtoConnection

    from ._options import ConnectionOptions
    from .stats import Stats

__all__ = ["Core"]

#: The reader tasks' name, one string for all: trio makes one per task otherwise.
_READER_TASK = "trio_ws._reader.Reader.run"

_Piece = bytes | bytearray | memoryview | str


class Core:
    """One connection's state and background work; the public API is ``Connection``'s."""

    __slots__ = (
        "_closed",
        "_keepalive",
        "ending",
        "id",
        "inbox",
        "is_client",
        "is_closed",
        "logger",
        "options",
        "pings",
        "protocol",
        "reader",
        "state",
        "stats",
        "stream",
        "tasks",
        "writer",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: WSProtoConnection,
        *,
        is_client: bool,
        options: ConnectionOptions,
        id: uuid.UUID,
        stats: Stats,
    ) -> None:
        self.stream = stream
        self.stats = stats
        self.protocol = Protocol(
            ws,
            max_size=options.max_message_size,
            max_fragment_size=options.max_fragment_size,
        )
        self.is_client = is_client
        self.options = options
        self.logger = options.logger
        self.id = id
        self.state = State.OPEN
        self.ending = Ending()
        self.inbox = Inbox(options.max_queue_high, options.max_queue_low, self)
        self.writer = Writer(
            stream,
            high=options.write_limit_high,
            low=options.write_limit_low,
            on_lost=self._write_failed,
            stats=stats,
        )
        self.reader = Reader(stream, self.inbox, self)
        self.pings = Pings()
        self._keepalive: Keepalive | None = None  # while the session runs with keepalive on
        self.tasks: trio.Nursery | None = None  # the session's nursery, while it runs
        self.is_closed = False  # the socket is released
        self._closed: trio.Event | None = None  # for wait_closed(), from its first call
        stats.connections_open += 1
        stats.connections_total += 1

    # -- sending ---------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.state is not State.OPEN or not self.protocol.can_send_data:
            raise self.closed_error()

    async def start_sending(self) -> None:
        """The start of every call that sends: raise Cancelled or ConnectionClosed before
        anything is queued (a cancel point either way, a full checkpoint when closed)."""
        if self.state is not State.OPEN or not self.protocol.can_send_data:
            await trio.lowlevel.checkpoint()
            raise self.closed_error()
        await trio.lowlevel.checkpoint_if_cancelled()

    def queue_message(self, message: _Piece) -> None:
        """Frame a whole message and queue its frames; raise if the connection is closing."""
        self.check_open()
        protocol, writer = self.protocol, self.writer
        self.stats.messages_out += 1
        if len(message) <= FRAME_SIZE:
            writer.write(protocol.send_message(message))
            return
        for piece, last in protocol.split_message(message):
            writer.write(protocol.send_fragment(piece, last))

    async def wait_for_room(self) -> None:
        """The end of every call that queues a frame: backpressure, or a schedule point once
        per slice (``_yielding``)."""
        if self.writer.is_full():
            await self.writer.wait_for_room()
            if self.writer.lost:  # the connection failed before the message went out
                raise self.closed_error()
        else:
            await schedule_point()

    # -- closing ---------------------------------------------------------------------------

    async def aclose(self, code: int, reason: str) -> None:
        """``Connection.aclose()`` with its arguments checked: cancelled, it gives up."""
        try:
            await self.close(code, reason)
        except BaseException:
            await self.give_up()
            raise

    async def close(self, code: int, reason: str) -> None:
        """Send our close frame, wait for the peer's and the end of the stream, bounded."""
        self.send_close(code, reason)
        with trio.move_on_after(self.options.close_timeout):
            await self.wait_closed()
        if not self.is_closed:
            self.logger.debug("connection %s: closing handshake timed out", self.id)
            self.reader.scope.cancel()
            await self.finish()

    async def give_up(self) -> None:
        """Close at once, after a bounded wait for our close frame to go out. Never raises."""
        await self._flush()
        self.reader.scope.cancel()
        await self.finish()

    def send_close(self, code: int, reason: str) -> None:
        """Queue our close frame (a new one, or the answer to the peer's) unless it is out."""
        if self.protocol.close_sent or self.state is State.CLOSED:
            return
        code, reason = self.ending.frame_to_send(code, reason)
        data = self.protocol.send_close(code, reason)
        self.ending.sending(code, reason)
        if self.state is State.OPEN:
            self.state = State.CLOSING
        self.inbox.start_closing()  # the reader must read the peer's answer, queue full or not
        self.stop_keepalive()
        self.writer.write(data)

    async def fail(self, code: int, reason: str, cause: BaseException | None) -> None:
        """Fail the connection (RFC 6455 §7.1.7): a close frame if possible, then close TCP."""
        self.record_failure(code, reason, cause)
        self.logger.debug("connection %s failed: %d %s", self.id, code, reason)
        self.send_close(code, reason)
        await self.give_up()

    async def abort(self, code: int, reason: str) -> None:
        """Fail the connection without a close frame, for a peer that takes no more bytes."""
        self.record_failure(code, reason, None)
        self.logger.debug("connection %s aborted: %d %s", self.id, code, reason)
        self.reader.scope.cancel()
        await self.finish()

    def record_failure(self, code: int, reason: str, cause: BaseException | None) -> None:
        self.ending.record_failure(code, reason, cause)
        self.inbox.end()

    async def finish(self) -> None:
        """Mark the connection closed and release its socket. Safe to call more than once.

        Never raises Cancelled: it runs in cancelled scopes (the reader's exit, the session's
        cleanup), where a Cancelled would leave ``closed`` unset or replace the exception
        being handled. Over a plain socket it does not yield either: its callers are on their
        way out, and each is a checkpoint of its own (the reader's exit, the nursery's).
        """
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.inbox.end()
            self.pings.settle_all()
            self.stop_keepalive()
            self.writer.stop()
            rcvd = self.ending.rcvd
            code = 1006 if rcvd is None else rcvd[0]
            self.stats.connections_open -= 1
            self.stats.close_codes[code] += 1
            self.logger.debug("connection %s closed: the peer's code %s", self.id, code)
        if self.is_closed:
            return
        await close_stream(self.stream)
        self.is_closed = True
        if self._closed is not None:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed and its socket released (``is_closed``).

        The event is made by the first call that waits: most connections never need one.
        """
        if self.is_closed:
            await trio.lowlevel.checkpoint()
            return
        if self._closed is None:
            self._closed = trio.Event()
        await self._closed.wait()

    def closed_error(self) -> ConnectionClosed:
        """The exception that says how the connection ended (or is ending)."""
        return self.ending.error(closed=self.state is State.CLOSED)

    # -- what the inbox, the reader and the writer ask for and report -----------------------

    def pull(self) -> Awaitable[None]:
        # Not a coroutine of its own: the inbox awaits the reader's, one frame less per waiter.
        return self.reader.pull()

    def take_in(self, data: bytes | bytearray) -> bool:
        """Act on bytes read: False once nothing more should be read."""
        inbox, stats = self.inbox, self.stats
        stats.bytes_in += len(data)
        for event in self.protocol.receive_data(data):
            if isinstance(event, MessageReceived):  # the hot path
                stats.messages_in += 1
                inbox.put_message(event.data)
            elif isinstance(event, FragmentReceived):
                stats.messages_in += event.final
                inbox.put_piece(event.data, event.final)
            elif isinstance(event, PingReceived):
                if self.protocol.can_send_data:
                    self.writer.write(self.protocol.send_pong(event.payload))
            elif isinstance(event, PongReceived):
                self.pings.settle(event.payload)
            elif isinstance(event, CloseReceived):
                self.ending.received(event.code, event.reason)
                inbox.end()
                self.send_close(event.code, "")
                return self._await_server_eof()
            else:
                self.record_failure(event.code, event.reason, event.error)
                self.send_close(event.code, event.reason)
                return False
        return True

    def _await_server_eof(self) -> bool:
        """After the closing handshake: RFC 6455 §7.1.1 has the server close TCP first."""
        if not self.is_client:
            return False
        self.reader.scope.deadline = trio.current_time() + self.options.close_timeout
        return True

    def read_ended(self, error: BaseException | None) -> None:
        if error is not None:
            self.record_failure(1006, "connection lost", error)
        self.inbox.end()

    def reader_bug(self, exc: Exception) -> None:
        self.logger.error("connection %s: internal error in the reader", self.id, exc_info=exc)
        self.record_failure(1011, "internal error", exc)
        self.send_close(1011, "internal error")

    async def reader_finished(self) -> None:
        """Reading is over: flush what is queued (a close frame), bounded, then close."""
        if self.state is not State.CLOSED:
            await self._flush()
        await self.finish()

    async def _flush(self) -> None:
        """Wait for what is queued (a close frame) to go out, shielded, bounded by
        ``close_timeout``: no cancel scope when the socket took it all already."""
        if self.writer.buffered and not self.writer.lost:
            with trio.move_on_after(self.options.close_timeout, shield=True):
                await self.writer.drain()

    def _write_failed(self, exc: BaseException) -> None:
        self.record_failure(1006, "connection lost", exc)
        self.reader.scope.cancel()

    # -- the session -----------------------------------------------------------------------

    def session(self, keepalive: KeepaliveTimer | None) -> Session:
        """Run the background work around the body; close the connection when it exits.

        See :class:`Session`.
        """
        return Session(self, keepalive)

    def start(self, nursery: trio.Nursery, keepalive: KeepaliveTimer | None) -> None:
        self.tasks = nursery
        self.writer.start(nursery)
        if not self.take_in(b""):  # frames that came with the handshake, if any
            self.reader.scope.cancel()
        nursery.start_soon(self.reader.run, name=_READER_TASK)
        if keepalive is not None:
            self.start_keepalive(keepalive)

    def start_keepalive(self, timer: KeepaliveTimer) -> None:
        if self.options.ping_interval is not None:
            self._keepalive = Keepalive(self, timer)
            self._keepalive.schedule()

    def stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.stop()


class Session:
    """``Core.session()``: the background work around the body, and the closing after it.

    ``keepalive`` times this connection's pings, from a task outside the session (a server's,
    for all its connections); without it the session runs a timer of its own.

    A body that returns closes with 1000 as ``aclose()`` does; one that raises closes with
    1011, one that is cancelled with 1001, in a shielded step bounded by ``close_timeout``.
    Either way the peer gets a close frame while the socket works. What the body raised comes
    out as itself: it is held until the nursery has exited, since a nursery copies an
    ExceptionGroup that goes through it, and re-raised even if that exit was cancelled. A bug
    in trio_ws that escapes a background task comes out as a WebSocketError "internal error"
    chained to it, never as Cancelled.

    A class rather than an ``asynccontextmanager`` generator: the generator, its context
    manager and trio's record of it cost about 1 KiB for as long as the body runs, and every
    open connection has a body running.
    """

    __slots__ = ("_core", "_keepalive", "_manager", "_own_timer")

    def __init__(self, core: Core, keepalive: KeepaliveTimer | None) -> None:
        self._core = core
        self._keepalive = keepalive
        self._own_timer: KeepaliveTimer | None = None
        self._manager: AbstractAsyncContextManager[trio.Nursery] | None = None

    async def __aenter__(self) -> None:
        core, keepalive = self._core, self._keepalive
        self._manager = trio.open_nursery()
        nursery = await self._manager.__aenter__()
        try:
            if core.options.ping_interval is not None and keepalive is None:
                # A timer of this connection's own: its reader hosts it over a plain socket,
                # a task of its own runs it otherwise.
                keepalive = KeepaliveTimer(core.logger)
                if not core.reader.host_timer(keepalive):
                    self._own_timer = keepalive
                    nursery.start_soon(keepalive.run)
            core.start(nursery, keepalive)
        except BaseException as exc:  # a bug: leave the nursery with it, as async with would
            await self._leave(exc, None)
            raise  # pragma: no cover - _leave() raised already

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        body_error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        core = self._core
        inner: BaseException | None = None  # what the nursery's block raises, as it exits
        try:
            try:
                if body_error is None:
                    await core.aclose(1000, "")  # cancelled, it still sends its close frame
                else:
                    code, reason = (
                        (1011, "internal error")
                        if isinstance(body_error, Exception)
                        else (1001, "going away")
                    )
                    with trio.CancelScope(shield=True):
                        await core.close(code, reason)
            finally:
                if self._own_timer is not None:
                    self._own_timer.stop()
                core.reader.scope.cancel()
                await core.finish()
        except BaseException as exc:
            inner = exc
        await self._leave(inner, body_error)
        return False  # what the body raised comes out as itself

    async def _leave(self, inner: BaseException | None, body_error: BaseException | None) -> None:
        """Exit the nursery with what its block raised; sort out what comes out of it."""
        core = self._core
        assert self._manager is not None
        try:
            await _groups.exit_nursery(self._manager, inner)
        except trio.Cancelled:
            if body_error is None:
                raise
        except Exception as exc:  # a bug escaped a background task
            core.logger.error("connection %s: internal error", core.id, exc_info=exc)
            if body_error is None or isinstance(body_error, trio.Cancelled):
                raise WebSocketError(f"internal error in trio_ws: {exc!r}") from exc
        finally:
            core.tasks = core._keepalive = None  # pyright: ignore[reportPrivateUsage]
            self._manager = None
