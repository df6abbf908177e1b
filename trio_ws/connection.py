"""An open WebSocket connection over a trio stream: the same API on the client and the server.

How this works: a :class:`Connection` owns its stream and a nursery opened by
``Connection._session()`` (inside ``connect()``'s context on the client, inside the server's
per-connection task on the server), where its background tasks run:

- Reading: a receiver (``recv()``, ``recv_streaming()``) with nothing to take reads the stream
  itself (``_pull``), feeds the frame protocol and puts messages and pieces in the inbox
  (``_inbox.py``). While no receiver reads, the reader task does the same, and stops reading
  while the inbox is full, so that TCP pushes back. The reader steps aside from the moment a
  receiver waits until ``_READ_GRACE`` after a receiver's last read: a loop over ``recv()``
  reads with no hand-off between tasks. Anything that needs a write (a pong, the answer to a
  close frame, a failure) is left to the reader, since cancelling a receiver could cut a
  frame. The reader runs in a shielded cancel scope of its own so that a cancelled body can
  still finish the closing handshake; the session cancels it on exit. It alone marks the
  connection CLOSED and closes the stream, unless a close times out or a write stalls.
- Keepalive: a ``KeepaliveTimer`` (``_keepalive.py``; one per server, or one per client
  connection) starts a ping round every ``ping_interval`` seconds, a short task that fails the
  connection with 1011 when no pong comes within ``ping_timeout``, or when the write its ping
  waits behind makes no progress for that long.

Two locks order the writes: the send lock, held for each frame, so frames never interleave; the
message lock, held by ``send()`` for a whole message, so that the frames of a fragmented
message are not mixed with another message's (pings, pongs and the close frame may go between
them).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import trio

from . import _groups
from ._inbox import Inbox
from ._keepalive import KeepaliveTimer, Timed
from ._protocol import (
    FRAME_SIZE,
    CloseReceived,
    Event,
    Failed,
    FragmentReceived,
    MessageReceived,
    PingReceived,
    PongReceived,
    Protocol,
)
from .exceptions import (
    OK_CLOSE_CODES,
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._handshake import Opened
    from .http import Request, Response

__all__ = ["Address", "BytesLike", "Connection", "Data", "LoggerLike", "State"]

#: A message: str for a text frame, bytes for a binary one.
Data = str | bytes
#: What may be sent as binary data.
BytesLike = bytes | bytearray | memoryview
_Piece = BytesLike | str
#: A socket address: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6.
Address = tuple[str, int] | tuple[str, int, int, int]
#: What the ``logger`` option accepts.
LoggerLike = logging.Logger | logging.LoggerAdapter[logging.Logger]

_RECEIVE_SIZE = 64 * 1024
# How long after a receiver last waited the reader waits before it reads again: receivers that
# come back sooner (a loop over recv(), even with a busy event loop) read for themselves, with
# no hand-off from the reader. Control frames that come meanwhile wait for it, or for them.
_READ_GRACE = 0.1
# A write longer than this goes out in chunks of it, and each chunk counts as progress.
_WRITE_CHUNK = 256 * 1024
# RFC 6455 §7.4.1 codes an endpoint may send, plus the IANA-registered 1012 and 1013. Not 1014:
# wsproto, so every trio_ws peer, fails a close frame with it as a protocol error.
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1014)})


class State(enum.Enum):
    """Where a connection is in its life (RFC 6455 §4-7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


@dataclass
class _PendingPing:
    done: trio.Event
    sent_at: float
    rtt: float | None = None


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    while isinstance(stream, trio.SSLStream):
        stream = cast("trio.abc.Stream", stream.transport_stream)  # pyright: ignore[reportUnknownMemberType]
    return stream.socket if isinstance(stream, trio.SocketStream) else None


def _address(read: Callable[[], object]) -> Address | None:
    """A socket address, or None when the socket has none (a peer that reset it already)."""
    try:
        address = read()
    except OSError:
        return None
    return cast("Address", address) if isinstance(address, tuple) else None


def _check_piece(piece: object, first: object) -> None:
    """Raise TypeError unless ``piece`` is str or bytes-like, of the same kind as ``first``."""
    if isinstance(piece, str):
        if isinstance(first, str):
            return
    elif isinstance(piece, bytes | bytearray | memoryview):
        if not isinstance(first, str):
            return
    else:
        raise TypeError(f"message pieces must be str or bytes-like, not {type(piece).__name__}")
    raise TypeError("a fragmented message must be all str or all bytes-like pieces")


class Connection:
    """A WebSocket connection that completed its opening handshake.

    :class:`~trio_ws.ClientConnection` and :class:`~trio_ws.ServerConnection` derive from it; you
    get one from :func:`~trio_ws.connect` or as your handler's argument, never by creating it.

    Every method may be called from any task. ``send``, ``ping`` and ``pong`` wait their turn to
    write; only one task may wait in ``recv`` at a time.
    """

    __slots__ = (
        "_aside",
        "_awaiting_close",
        "_backlog",
        "_backlog_done",
        "_close_rcvd",
        "_close_sent",
        "_close_timeout",
        "_closed",
        "_failure",
        "_frame_cut",
        "_id",
        "_inbox",
        "_is_client",
        "_keepalive",
        "_keepalive_scope",
        "_keepalive_timed",
        "_latency",
        "_local_address",
        "_logger",
        "_message_lock",
        "_ping_interval",
        "_ping_timeout",
        "_pings",
        "_protocol",
        "_pull_ended_at",
        "_pulling",
        "_read_ended",
        "_reader_done",
        "_reader_reading",
        "_reader_scope",
        "_remote_address",
        "_request",
        "_response",
        "_send_lock",
        "_state",
        "_stream",
        "_subprotocol",
        "_tasks",
        "_writing_since",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        opened: Opened,
        *,
        is_client: bool,
        close_timeout: float | None,
        ping_interval: float | None,
        ping_timeout: float | None,
        max_size: int | None,
        max_queue: int | None,
        logger: LoggerLike,
    ) -> None:
        self._stream = stream
        self._protocol = Protocol(opened.ws, max_size=max_size)
        self._is_client = is_client
        self._request = opened.request
        self._response = opened.response
        self._subprotocol = opened.subprotocol
        self._close_timeout = math.inf if close_timeout is None else close_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = math.inf if ping_timeout is None else ping_timeout
        self._logger = logger
        self._id = uuid.uuid4()
        sock = _socket_of(stream)
        self._local_address = _address(sock.getsockname) if sock else None
        self._remote_address = _address(sock.getpeername) if sock else None

        self._state = State.OPEN
        self._inbox = Inbox(max_queue, self._closed_error, self._pull)
        # Who reads the socket (see _pull and _read_until_closed):
        self._pulling = False  # a receiver is in _pull()
        self._pull_ended_at = -math.inf  # when a receiver last stopped waiting to receive
        self._reader_reading = False  # the reader is in receive_some()
        self._aside: trio.CancelScope | None = None  # the reader's wait while receivers read
        self._read_ended = False  # a receiver met the end of the stream: the reader stops
        # What came from a control frame on, for the reader to act on in order (see _take_in).
        self._backlog: list[Event] = []
        self._backlog_done: trio.Event | None = None  # set once the backlog is worked off
        self._reader_done = False
        self._awaiting_close = 0  # tasks in wait_closed()
        self._message_lock = trio.StrictFIFOLock()  # one data message at a time
        self._send_lock = trio.StrictFIFOLock()  # one frame at a time
        self._frame_cut = False  # a cancelled write may have cut a frame: no more writes
        self._writing_since: float | None = None  # when the write in progress last progressed
        self._pings: dict[bytes, _PendingPing] = {}
        self._latency = 0.0
        self._close_rcvd: tuple[int, str] | None = None
        self._close_sent: tuple[int, str] | None = None
        self._failure: tuple[int, str, BaseException | None] | None = None
        self._reader_scope = trio.CancelScope(shield=True)
        self._keepalive: KeepaliveTimer | None = None  # times the pings, while the session runs
        self._keepalive_scope: trio.CancelScope | None = None  # the ping round's, while it runs
        self._keepalive_timed: Timed | None = None  # the next ping round, while it waits
        self._tasks: trio.Nursery | None = None  # the session's nursery, while it runs
        self._closed = trio.Event()

    # -- what you can ask ------------------------------------------------------------------

    @property
    def id(self) -> uuid.UUID:
        """A unique id for this connection, used in log messages."""
        return self._id

    @property
    def local_address(self) -> Address | None:
        """This end's socket address (None over a stream that is not a socket)."""
        return self._local_address

    @property
    def remote_address(self) -> Address | None:
        """The peer's socket address (None over a stream that is not a socket)."""
        return self._remote_address

    @property
    def request(self) -> Request:
        """The client's opening-handshake request: path and headers."""
        return self._request

    @property
    def response(self) -> Response:
        """The server's opening-handshake response (status 101 and headers)."""
        return self._response

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol both sides agreed on, or None."""
        return self._subprotocol

    @property
    def state(self) -> State:
        """OPEN until a close frame is sent or received, CLOSING until the socket is closed."""
        return self._state

    @property
    def close_code(self) -> int | None:
        """The code of the peer's close frame (1005 if it had none, 1006 if none came).

        None until the connection is closed or a close frame has been received.
        """
        if self._close_rcvd is not None:
            return self._close_rcvd[0]
        return 1006 if self._state is State.CLOSED else None

    @property
    def close_reason(self) -> str | None:
        """The reason in the peer's close frame ("" if none came); None while open."""
        if self._close_rcvd is not None:
            return self._close_rcvd[1]
        return "" if self._state is State.CLOSED else None

    @property
    def latency(self) -> float:
        """The last round-trip time measured by a ping, in seconds (0.0 before the first)."""
        return self._latency

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._id} {self._state.name}>"

    # -- messages --------------------------------------------------------------------------

    async def send(
        self, message: BytesLike | str | Iterable[BytesLike | str] | AsyncIterable[BytesLike | str]
    ) -> None:
        """Send one message: a text frame for str, a binary frame for bytes-like data.

        A message over 64 KiB (bytes, or characters of text) goes out as a fragmented message
        in frames of 64 KiB, which wsproto frames far faster than one large frame; the peer
        receives one message all the same.

        An iterable or async iterable of str, or of bytes-like pieces, is sent as one
        fragmented message, a frame per piece; pings and pongs may go out between its frames.
        An iterable is read whole before anything is sent; an async iterable is sent piece by
        piece as it yields, with an empty final frame after its last piece. An empty iterable
        sends nothing.

        Blocks while the peer is not reading fast enough (TCP backpressure) and while another
        task is sending.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``message`` is not str, bytes-like or an iterable of them, or it mixes
                str and bytes-like pieces. An iterable is checked before anything is sent; an
                async iterable that mixes them fails the connection with 1011, since its message
                is cut short.

        Cancelling before the message starts to go out sends nothing. Cancelling while it is
        going out may leave half a frame on the wire, which nothing can follow: the connection
        then fails with 1011 and its socket is closed. A fragmented message cut short between
        frames (cancelled, or its async iterable raised) fails the connection with 1011 too,
        after a close frame bounded by ``close_timeout``.
        """
        if not isinstance(message, str | bytes | bytearray | memoryview):
            await self._send_fragmented(message)
            return
        message = cast("_Piece", message)  # not a memoryview of pieces, as pyright fears
        message_lock, lock = self._message_lock, self._send_lock
        if message_lock.locked() or lock.locked():
            async with message_lock, lock:
                await self._send_frame(message, None)
            return
        # The hot path: skip the locks' schedule points, the write has one. Cancellation is
        # checked first, while nothing can be cut.
        await trio.lowlevel.checkpoint_if_cancelled()
        message_lock.acquire_nowait()
        lock.acquire_nowait()
        try:
            await self._send_frame(message, None)
        finally:
            lock.release()
            message_lock.release()

    async def _send_frame(self, data: _Piece, final: bool | None) -> None:
        """Frame a whole message (``final`` None) or a piece of one, and write it.

        The caller holds the send lock.
        """
        if self._state is not State.OPEN or not self._protocol.can_send_data:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise self._closed_error()
        if final is None:
            if len(data) <= FRAME_SIZE:
                await self._write(self._protocol.send_message(data))
                return
            # Frame by frame: each one framed only when the one before has gone out.
            for piece, last in self._protocol.split_message(data):
                if self._state is not State.OPEN or not self._protocol.can_send_data:
                    raise self._closed_error()  # the close came between two frames
                await self._write(self._protocol.send_fragment(piece, last))
        else:
            await self._write(self._protocol.send_fragment(data, final))

    async def _send_fragmented(
        self, message: Iterable[BytesLike | str] | AsyncIterable[BytesLike | str]
    ) -> None:
        listed: list[_Piece] | None = None
        if not isinstance(message, AsyncIterable):
            if not isinstance(message, Iterable):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise TypeError(
                    "message must be str, bytes-like, or an iterable or async iterable of them, "
                    f"not {type(message).__name__}"
                )
            listed = list(message)
            for piece in listed:
                _check_piece(piece, listed[0])
        lock = self._send_lock
        async with self._message_lock:
            started = ended = False
            try:
                if listed is not None:
                    last = len(listed) - 1
                    for index, piece in enumerate(listed):
                        async with lock:
                            await self._send_frame(piece, final=index == last)
                        started = True
                    ended = True
                    return
                first: _Piece | None = None
                async for piece in cast("AsyncIterable[_Piece]", message):
                    first = piece if first is None else first
                    _check_piece(piece, first)
                    async with lock:
                        await self._send_frame(piece, final=False)
                    started = True
                if first is not None:
                    async with lock:
                        await self._send_frame("" if isinstance(first, str) else b"", final=True)
                ended = True
            except BaseException as exc:
                if started and not ended and not isinstance(exc, ConnectionClosed):
                    with trio.CancelScope(shield=True):  # bounded by close_timeout
                        cause = exc if isinstance(exc, Exception) else None
                        await self._fail(1011, "message cut short", cause)
                raise

    async def recv(self) -> Data:
        """Wait for the next message: str for text frames, bytes for binary.

        Messages that arrived before the connection closed are still returned, in order.

        Raises:
            ConnectionClosedOK: the connection closed with 1000, 1001 or no code.
            ConnectionClosedError: the connection failed or closed with another code.
            ConcurrencyError: another task is already waiting in recv() or recv_streaming().

        Cancelling is safe: nothing is consumed, the next call gets the message.
        """
        return await self._inbox.get()

    def recv_streaming(self) -> AsyncIterator[Data]:
        """Iterate over the next message piece by piece, as its frames arrive.

        ``async for piece in ws.recv_streaming():`` yields str pieces for a text message,
        bytes for a binary one, and ends with the message; a message that arrived whole comes
        as one piece. Pieces of text are whole characters. While a message is being streamed,
        the reader reads at most about 1 MiB ahead of you, whatever ``max_size`` says.

        Stopping before the end of a message is allowed: the next ``recv()`` or
        ``recv_streaming()`` discards the rest of it.

        Raises:
            ConnectionClosed: (from the iteration) the connection closed before the message
                ended.
            ConcurrencyError: (from the iteration) another task is receiving at the same time.

        Cancelling a step is safe: the piece it waited for is not lost.
        """
        return self._inbox.stream()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Data:
        """The next message; the iteration stops when the connection closes normally.

        Raises:
            ConnectionClosedError: the connection failed or closed with an error code.
        """
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    # -- control frames --------------------------------------------------------------------

    async def ping(self, data: Data | None = None) -> float:
        """Send a ping and wait for the matching pong; return the round-trip time in seconds.

        ``data`` (at most 125 bytes) defaults to 4 random bytes. A pong also answers every
        ping sent before the one it matches.

        Raises:
            ConnectionClosed: the connection closed before the pong came.
            ConcurrencyError: a ping with the same data is still waiting for its pong.
            ValueError: ``data`` is longer than 125 bytes.

        Cancelling stops the wait; a pong that comes later is ignored.
        """
        if data is None:
            payload = self._new_ping_payload()
        else:
            payload = data.encode() if isinstance(data, str) else bytes(data)
        if len(payload) > 125:
            raise ValueError(f"ping data of {len(payload)} bytes exceeds the 125-byte limit")
        async with self._send_lock:
            pending = await self._send_ping(payload)
        return await self._wait_for_pong(payload, pending)

    def _new_ping_payload(self) -> bytes:
        payload = os.urandom(4)
        while payload in self._pings:  # pragma: no cover - 1 in 4 billion
            payload = os.urandom(4)
        return payload

    async def _send_ping(self, payload: bytes, cut_reason: str | None = None) -> _PendingPing:
        """Send a ping and note it, under the send lock; ``cut_reason`` as in ``_write``."""
        if self._state is not State.OPEN or not self._protocol.can_send_data:
            raise self._closed_error()
        # Checked under the lock: a task waiting for it may hold the same data.
        if payload in self._pings:
            raise ConcurrencyError("a ping with the same data is already waiting for its pong")
        pending = _PendingPing(trio.Event(), trio.current_time())
        self._pings[payload] = pending
        await self._write(self._protocol.send_ping(payload), cut_reason)
        self._wake_reader()  # to read the pong at once, unless a receiver does
        return pending

    async def _wait_for_pong(self, payload: bytes, pending: _PendingPing) -> float:
        try:
            await pending.done.wait()
        finally:
            if not pending.done.is_set():
                self._pings.pop(payload, None)
        if pending.rtt is None:
            raise self._closed_error()
        return pending.rtt

    async def pong(self, data: Data = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat, RFC 6455 §5.5.3).

        Raises:
            ConnectionClosed: the connection is closing or closed.
            ValueError: ``data`` is longer than 125 bytes.
        """
        payload = data.encode() if isinstance(data, str) else bytes(data)
        if len(payload) > 125:
            raise ValueError(f"pong data of {len(payload)} bytes exceeds the 125-byte limit")
        async with self._send_lock:
            if self._state is not State.OPEN or not self._protocol.can_send_data:
                raise self._closed_error()
            await self._write(self._protocol.send_pong(payload))

    # -- closing ---------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Run the closing handshake, then close the socket.

        Sends a close frame with ``code`` and ``reason``, waits up to ``close_timeout`` for the
        peer's, then closes the socket. Does nothing more if the connection is already closing
        or closed. Never raises a ConnectionClosed.

        Raises:
            ValueError: ``code`` is not one an endpoint may send (RFC 6455 §7.4).

        Cancelling stops the wait and closes the socket at once.
        """
        if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        if len(reason.encode()) > 123:
            raise ValueError("close reason exceeds 123 bytes in UTF-8 (RFC 6455 §5.5)")
        try:
            await self._close(code, reason)
        except BaseException:
            self._reader_scope.cancel()
            await self._finish()
            raise

    async def wait_closed(self) -> None:
        """Wait until the connection is closed and its socket released."""
        if self._closed.is_set():
            await trio.lowlevel.checkpoint()
            return
        self._awaiting_close += 1
        self._wake_reader()  # to read the closing handshake at once, unless a receiver does
        try:
            await self._closed.wait()
        finally:
            self._awaiting_close -= 1

    async def _close(self, code: int, reason: str) -> None:
        with trio.move_on_after(self._close_timeout):
            if self._state is State.OPEN:
                await self._send_close(code, reason)
            await self._closed.wait()
        if not self._closed.is_set():
            self._reader_scope.cancel()
            await self._finish()

    async def _send_close(self, code: int, reason: str) -> None:
        """Send our close frame (a new one, or the answer to the peer's) unless it is out."""
        async with self._send_lock:
            if self._protocol.close_sent or self._state is State.CLOSED:
                return
            # The first cause wins, whoever sends: the answer to the peer's close frame echoes
            # its code, and a connection that failed says why it failed.
            if self._close_rcvd is not None:
                code, reason = self._close_rcvd[0], ""
            elif self._failure is not None and self._failure[0] in _SENDABLE_CODES:
                code, reason = self._failure[:2]
            data = self._protocol.send_close(code, reason)
            self._close_sent = (code, reason)
            if self._state is State.OPEN:
                self._state = State.CLOSING
            # The reader may be waiting for room in the queue or aside: it must read the peer's
            # answer, unless a receiver does.
            self._inbox.start_closing()
            self._wake_reader()
            with suppress(ConnectionClosed):
                await self._write(data)

    async def _fail(self, code: int, reason: str, cause: BaseException | None) -> None:
        """Fail the connection (RFC 6455 §7.1.7): close frame if possible, then close TCP."""
        self._record_failure(code, reason, cause)
        self._logger.debug("connection %s failed: %d %s", self._id, code, reason)
        with trio.move_on_after(self._close_timeout):
            await self._send_close(code, reason)
        self._reader_scope.cancel()
        await self._finish()

    def _record_failure(self, code: int, reason: str, cause: BaseException | None) -> None:
        if self._failure is None and self._close_rcvd is None:
            self._failure = (code, reason, cause)
        self._stop_receiving()

    def _stop_receiving(self) -> None:
        self._inbox.end()

    async def _abort(self, code: int, reason: str) -> None:
        """Fail the connection without a close frame, for a stream that cannot take one."""
        self._record_failure(code, reason, None)
        self._logger.debug("connection %s aborted: %d %s", self._id, code, reason)
        self._reader_scope.cancel()
        await self._finish()

    async def _finish(self) -> None:
        """Mark the connection closed and release its socket. Safe to call more than once.

        Never raises Cancelled: it runs in cancelled scopes (the reader's exit, the session's
        cleanup), where a Cancelled would leave ``_closed`` unset or replace the exception
        being handled.
        """
        if self._state is not State.CLOSED:
            self._state = State.CLOSED
            self._stop_receiving()
            for pending in self._pings.values():
                pending.done.set()
            self._pings.clear()
            self._logger.debug("connection %s closed: code %s", self._id, self.close_code)
        if self._closed.is_set():
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        with trio.CancelScope(shield=True):  # bounded: aclose_forcefully never blocks
            await trio.aclose_forcefully(self._stream)
        self._closed.set()

    def _closed_error(self) -> ConnectionClosed:
        """The exception that says how the connection ended (or is ending)."""
        if self._failure is not None:
            code, reason, cause = self._failure
            error = ConnectionClosedError(code, reason)
            error.__cause__ = cause
            return error
        rcvd, sent = self._close_rcvd, self._close_sent
        if rcvd is None and (sent is None or self._state is State.CLOSED):
            return ConnectionClosedError(1006, "connection lost without a close frame")
        code, reason = rcvd if rcvd is not None else cast("tuple[int, str]", sent)
        if code in OK_CLOSE_CODES and (sent is None or sent[0] in OK_CLOSE_CODES):
            return ConnectionClosedOK(code, reason)
        return ConnectionClosedError(code, reason)

    # -- the wire --------------------------------------------------------------------------

    async def _write(self, data: bytes, cut_reason: str | None = None) -> None:
        """Write bytes under the send lock; map transport failures to ConnectionClosed.

        ``_writing_since`` tells the keepalive when the write last made progress (a large write
        goes out in chunks). ``cut_reason`` is the failure's reason if cancellation cuts it.
        """
        if self._frame_cut:
            # Checked here, not from the state: the reader may not have closed the stream yet.
            raise self._closed_error()
        try:
            self._writing_since = trio.current_time()
            if len(data) <= _WRITE_CHUNK:
                await self._stream.send_all(data)
            else:
                await self._write_in_chunks(data)
        except trio.Cancelled:
            # The frame may be cut: nothing may follow it on this stream.
            self._frame_cut = True
            self._record_failure(1011, cut_reason or "send cancelled mid-frame", None)
            self._reader_scope.cancel()
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._record_failure(1006, "connection lost", exc)
            self._reader_scope.cancel()
            raise self._closed_error() from exc
        finally:
            self._writing_since = None

    async def _write_in_chunks(self, data: bytes) -> None:
        with memoryview(data) as view:
            for start in range(0, len(view), _WRITE_CHUNK):
                await self._stream.send_all(view[start : start + _WRITE_CHUNK])
                self._writing_since = trio.current_time()

    # -- background tasks ------------------------------------------------------------------

    @asynccontextmanager
    async def _session(
        self, keepalive: KeepaliveTimer | None = None
    ) -> AsyncGenerator[Self, None]:
        """Run the background tasks around the body; close the connection when it exits.

        ``keepalive`` times this connection's pings, from a task outside the session (a
        server's, for all its connections); without it the session runs a timer of its own.

        A body that returns closes with 1000, one that raises with 1011, one that is cancelled
        with 1001 in a shielded step bounded by ``close_timeout``. What the body raised comes
        out as itself: it is held until the nursery has exited, since a nursery copies an
        ExceptionGroup that goes through it, and re-raised even if that exit was cancelled.
        """
        body_error: BaseException | None = None
        own_timer: KeepaliveTimer | None = None
        try:
            async with _groups.open_nursery() as nursery:
                self._tasks = nursery
                self._take_in(b"")  # frames that came with the handshake, if any
                nursery.start_soon(self._read_loop)
                if self._ping_interval is not None:
                    if keepalive is None:
                        keepalive = own_timer = KeepaliveTimer()
                        nursery.start_soon(own_timer.run)
                    self._keepalive = keepalive
                    self._schedule_ping()
                try:
                    yield self
                except BaseException as exc:
                    body_error = exc
                    code, reason = (
                        (1011, "internal error")
                        if isinstance(exc, Exception)
                        else (1001, "going away")
                    )
                    with trio.CancelScope(shield=True):
                        await self._close(code, reason)
                else:
                    await self._close(1000, "")
                finally:
                    self._reader_scope.cancel()
                    self._stop_keepalive()
                    if own_timer is not None:
                        own_timer.stop()
                    await self._finish()
        finally:
            self._tasks = self._keepalive = None
            if body_error is not None:
                _groups.reraise(body_error)

    async def _read_loop(self) -> None:
        try:
            with self._reader_scope:
                await self._read_until_closed()
        except Exception as exc:  # a bug in trio_ws: report it, never raise it
            self._logger.exception("connection %s: internal error in the reader", self._id)
            self._record_failure(1011, "internal error", exc)
        finally:
            self._reader_done = True
            self._backlog_worked_off()
            await self._finish()

    async def _read_until_closed(self) -> None:
        """The reader's loop. It steps aside while receivers read the socket themselves: from
        the moment a receiver waits until ``_READ_GRACE`` after the last one stopped, unless
        the reader is wanted at once (``_reader_wanted``).
        """
        inbox = self._inbox
        while True:
            if self._backlog and not await self._work_off_backlog():
                return
            if self._read_ended:
                return
            if self._pulling or (
                not self._reader_wanted()
                and trio.current_time() < self._pull_ended_at + _READ_GRACE
            ):
                await self._step_aside()
                continue
            if inbox.is_full():
                await inbox.wait_for_room()
                continue
            self._reader_reading = True
            try:
                if not await self._read_some():
                    return
            finally:
                self._reader_reading = False

    def _reader_wanted(self) -> bool:
        """Whether the reader should read now unless a receiver does: during the closing
        handshake, while a ping waits for its pong, while a task waits in wait_closed()."""
        return self._inbox.closing or bool(self._pings) or self._awaiting_close > 0

    async def _step_aside(self) -> None:
        """Wait while a receiver reads, until the grace after it stopped, or _wake_reader()."""
        # A receiver waiting for this reader's read must now read for itself.
        self._inbox.wake_taker()
        deadline = math.inf if self._pulling else self._pull_ended_at + _READ_GRACE
        with trio.CancelScope(deadline=deadline) as self._aside:
            await trio.sleep_forever()
        self._aside = None

    def _wake_reader(self) -> None:
        """End the reader's wait: aside, or for room in the inbox."""
        self._inbox.wake_reader()
        if self._aside is not None:
            self._aside.cancel()

    async def _pull(self) -> None:
        """For a receiver with nothing to take: read the socket, or wait while the reader does.

        Reading here saves the hand-off from the reader's task to the receiver's on every
        message; the reader steps aside meanwhile. Always a checkpoint.
        """
        self._pulling = True
        aside = self._aside
        if aside is not None:
            aside.deadline = math.inf  # no need to wake the reader while this pull lasts
        try:
            if self._backlog and not self._reader_done:
                await self._wait_for_backlog()
                return
            if self._reader_reading or self._read_ended:
                await self._inbox.wait_for_arrival()
                return
            if not await self._read_some():
                self._end_reading()
                return
            if self._backlog and not self._reader_done:
                await self._wait_for_backlog()
        finally:
            self._pulling = False
            self._pull_ended_at = trio.current_time()
            aside = self._aside
            if aside is not None:
                if self._reader_wanted():
                    aside.cancel()
                else:
                    aside.deadline = self._pull_ended_at + _READ_GRACE

    async def _work_off_backlog(self) -> bool:
        """The reader acts on the backlog in order; False when it should stop."""
        backlog = self._backlog
        try:
            while backlog:
                event = backlog[0]  # popped once acted on: receivers wait while any is left
                if not self._deliver(event) and not await self._handle(
                    cast("PingReceived | CloseReceived | Failed", event)
                ):
                    backlog.clear()
                    return False
                del backlog[0]
            return True
        finally:
            self._backlog_worked_off()

    async def _wait_for_backlog(self) -> None:
        if self._backlog_done is None:
            self._backlog_done = trio.Event()
        await self._backlog_done.wait()

    def _backlog_worked_off(self) -> None:
        if self._backlog_done is not None:
            self._backlog_done.set()
            self._backlog_done = None

    async def _read_some(self) -> bool:
        """Read once and take in what came; False at the end of the stream (recorded).

        Always a checkpoint.
        """
        try:
            data = await self._stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._record_failure(1006, "connection lost", exc)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return False
        if not data:
            self._stop_receiving()
            return False
        self._take_in(data)
        return True

    def _end_reading(self) -> None:
        """A receiver met the end of the stream: the reader must stop, and close it."""
        self._read_ended = True
        self._wake_reader()

    def _deliver(self, event: Event) -> bool:
        """Act on a message, piece or pong; False, for an event that may need a write."""
        if isinstance(event, MessageReceived):  # the hot path
            self._inbox.put_message(event.data)
        elif isinstance(event, FragmentReceived):
            self._inbox.put_piece(event.data, event.final)
        elif isinstance(event, PongReceived):
            self._settle_pings(event.payload)
        else:
            return False
        return True

    def _take_in(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the stream to the protocol; queue what it reports.

        Messages go to the inbox, up to the first event that may need a write (a ping, a close
        frame, a failure): from there on, everything goes to the backlog, for the reader to act
        on in order, so that a pong goes out before the messages that came after its ping
        (RFC 6455 §5.5.2) are seen. A receiver does not write itself, since cancelling it
        could cut a frame: it waits for the reader to work off the backlog.
        """
        backlog = self._backlog
        for event in self._protocol.receive_data(data):
            if backlog or not self._deliver(event):
                backlog.append(event)
        if backlog:
            self._wake_reader()

    async def _handle(self, event: PingReceived | CloseReceived | Failed) -> bool:
        """Act on one control or failure event; return False when the reader should stop."""
        if isinstance(event, PingReceived):
            if self._protocol.can_send_data:
                async with self._send_lock:
                    if self._protocol.can_send_data and self._state is not State.CLOSED:
                        try:
                            await self._write(self._protocol.send_pong(event.payload))
                        except ConnectionClosed:
                            return False  # _write recorded why; the reader must not raise.
        elif isinstance(event, CloseReceived):
            self._close_rcvd = (event.code, event.reason)
            self._stop_receiving()
            with trio.move_on_after(self._close_timeout):
                await self._send_close(event.code, "")
            return self._await_server_eof()
        else:
            await self._fail(event.code, event.reason, event.error)
            return False
        return True

    def _await_server_eof(self) -> bool:
        """After the closing handshake: RFC 6455 §7.1.1 has the server close TCP first."""
        if not self._is_client:
            return False
        self._reader_scope.deadline = trio.current_time() + self._close_timeout
        return True

    def _settle_pings(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # unsolicited, or answers a ping that was given up on
        now = trio.current_time()
        while self._pings:
            key, pending = next(iter(self._pings.items()))
            del self._pings[key]
            pending.rtt = now - pending.sent_at
            pending.done.set()
            if key == payload:
                self._latency = pending.rtt
                return

    def _schedule_ping(self) -> None:
        """Have the keepalive timer start a ping round one ``ping_interval`` from now."""
        assert self._keepalive is not None and self._ping_interval is not None
        due = trio.current_time() + self._ping_interval
        self._keepalive_timed = self._keepalive.call_at(due, self._start_ping_round)

    def _start_ping_round(self) -> None:
        self._keepalive_timed = None
        if self._state is State.OPEN and self._tasks is not None:
            self._tasks.start_soon(self._ping_round)

    def _stop_keepalive(self) -> None:
        if self._keepalive_timed is not None:
            self._keepalive_timed.cancel()
            self._keepalive_timed = None
        if self._keepalive_scope is not None:
            self._keepalive_scope.cancel()

    async def _ping_round(self) -> None:
        """Send a keepalive ping and wait for its pong; schedule the next round if it came."""
        answered = False
        with trio.CancelScope() as self._keepalive_scope:
            answered = await self._keepalive_ping()
        self._keepalive_scope = None
        if answered and self._state is State.OPEN:
            self._schedule_ping()

    async def _keepalive_ping(self) -> bool:
        timeout = self._ping_timeout
        stalled = f"no write progress for {timeout:g} s: the peer stopped reading"
        if not await self._lock_unless_stalled():
            await self._abort(1011, stalled)
            return False
        payload = self._new_ping_payload()
        pending: _PendingPing | None = None
        try:
            with trio.move_on_after(timeout):
                pending = await self._send_ping(payload, cut_reason=stalled)
        except ConnectionClosed:
            return False
        finally:
            self._send_lock.release()
        if pending is None:  # the ping's own write stalled; the reader closes the stream
            return False
        with trio.move_on_after(timeout) as scope:
            try:
                await self._wait_for_pong(payload, pending)
            except ConnectionClosed:
                return False
        if scope.cancelled_caught:
            await self._fail(1011, "keepalive ping timeout", None)
            return False
        return True

    async def _lock_unless_stalled(self) -> bool:
        """Take the send lock, unless the write holding it makes no progress for ping_timeout.

        A peer that stops reading leaves a write blocked, and this ping behind it, for ever;
        its pong cannot tell, so the write's progress does.
        """
        timeout = self._ping_timeout
        while True:
            since = self._writing_since
            with trio.move_on_at((trio.current_time() if since is None else since) + timeout):
                await self._send_lock.acquire()
                return True
            since = self._writing_since
            if since is not None and trio.current_time() - since >= timeout:
                return False
