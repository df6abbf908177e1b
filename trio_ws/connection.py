"""An open WebSocket connection over a trio stream: the same API on the client and the server.

How this works: a :class:`Connection` owns its stream, and ``session()`` runs it: a nursery
for its background tasks around the body that uses it (``connect()``'s block, a server's
handler), and the closing handshake when the body exits. The machinery, by concern:

- ``_reader.py``: the reader task reads the stream and hands every read to ``_take_in``, which
  acts on it at once: messages to the inbox (``_inbox.py``), where ``recv()`` takes them; pongs
  to the pings in flight (``_pings.py``); the answers to pings and close frames to the writer.
- ``_writer.py``: whole frames go into a bounded buffer, written at once when the socket takes
  them and by a drain task otherwise. Queueing never blocks, so no cancellation cuts a frame:
  a cancelled ``send()`` sent nothing or the whole message, and the connection stays usable.
- ``_closing.py``: the close frames and the first failure, which decide what every later call
  raises and what our close frame says.
- ``_keepalive.py``: a timer (one per server, or one per client connection) starts a ping round
  every ``ping_interval``: a short task that fails the connection with 1011 when no pong comes
  within ``ping_timeout`` while we read, or when our writes make no progress for that long.

The reader and the drain task run in shielded cancel scopes, so that a cancelled body can still
send its close frame and read the peer's; the session bounds that by ``close_timeout`` and then
cancels them. Only ``_finish`` closes the stream.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, cast

import trio

from . import _groups
from ._closing import Ending, State
from ._inbox import Inbox
from ._keepalive import KeepaliveTimer, Timed
from ._options import ConnectionOptions, LoggerLike, check_close_code
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
from ._writer import Writer
from .exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketError

if TYPE_CHECKING:
    from typing_extensions import Self
    from wsproto.connection import Connection as WSProtoConnection

    from .http import Request, Response

__all__ = [
    "Address",
    "BytesLike",
    "Connection",
    "Data",
    "LoggerLike",
    "State",
]

#: A message: str for a text frame, bytes for a binary one.
Data = str | bytes
#: What may be sent as binary data.
BytesLike = bytes | bytearray | memoryview
_Piece = BytesLike | str
#: A socket address: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6.
Address = tuple[str, int] | tuple[str, int, int, int]


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    while isinstance(stream, trio.SSLStream):
        stream = cast("trio.abc.Stream", stream.transport_stream)  # pyright: ignore[reportUnknownMemberType]
    return stream.socket if isinstance(stream, trio.SocketStream) else None


def _address(sock: trio.socket.SocketType | None, peer: bool) -> Address | None:
    """A socket address, or None when there is none (a peer that reset the socket already)."""
    if sock is None:
        return None
    try:
        address = sock.getpeername() if peer else sock.getsockname()
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

    Every method may be called from any task; only one task may wait in ``recv`` at a time.
    """

    __slots__ = (
        "_closed",
        "_ending",
        "_id",
        "_inbox",
        "_is_client",
        "_keepalive",
        "_keepalive_scope",
        "_keepalive_timed",
        "_local_address",
        "_logger",
        "_message_lock",
        "_options",
        "_pings",
        "_protocol",
        "_reader",
        "_remote_address",
        "_request",
        "_response",
        "_state",
        "_stream",
        "_subprotocol",
        "_tasks",
        "_writer",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: WSProtoConnection,
        request: Request,
        response: Response,
        subprotocol: str | None,
        *,
        is_client: bool,
        options: ConnectionOptions,
    ) -> None:
        self._stream = stream
        self._protocol = Protocol(ws, max_size=options.max_message_size)
        self._is_client = is_client
        self._request = request
        self._response = response
        self._subprotocol = subprotocol
        self._options = options
        self._logger = options.logger
        self._id = uuid.uuid4()
        sock = _socket_of(stream)
        self._local_address = _address(sock, peer=False)
        self._remote_address = _address(sock, peer=True)

        self._state = State.OPEN
        self._ending = Ending()
        self._inbox = Inbox(options.max_queue_high, options.max_queue_low, self._closed_error)
        self._writer = Writer(
            stream,
            high=options.write_limit_high,
            low=options.write_limit_low,
            on_lost=self._write_failed,
        )
        self._reader = Reader(
            stream,
            self._inbox,
            take_in=self._take_in,
            on_end=self._read_ended,
            on_bug=self._reader_bug,
            finish=self._reader_finished,
        )
        self._message_lock = trio.StrictFIFOLock()  # a fragmented message from an async iterable
        self._pings = Pings()
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
        if self._ending.rcvd is not None:
            return self._ending.rcvd[0]
        return 1006 if self._state is State.CLOSED else None

    @property
    def close_reason(self) -> str | None:
        """The reason in the peer's close frame ("" if none came); None while open."""
        if self._ending.rcvd is not None:
            return self._ending.rcvd[1]
        return "" if self._state is State.CLOSED else None

    @property
    def latency(self) -> float:
        """The last round-trip time measured by a ping, in seconds (0.0 before the first)."""
        return self._pings.latency

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

        The message is queued whole in the connection's write buffer, which the socket drains;
        ``send()`` returns at once while the buffer holds at most ``write_limit`` bytes, and
        otherwise waits until it has drained to the low-water mark (backpressure).

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``message`` is not str, bytes-like or an iterable of them (a dict or
                other mapping: encode it first, e.g. with ``json.dumps()``), or it mixes str
                and bytes-like pieces. An iterable is checked before anything is sent; an async
                iterable that mixes them fails the connection with 1011, since its message is
                cut short.

        Cancelling never cuts a frame and leaves the connection usable: cancelled before the
        message is queued, it sent nothing; cancelled while waiting for the buffer to drain, the
        message is queued and goes out whole. A message from an async iterable cut short
        between frames (cancelled, or the iterable raised) fails the connection with 1011.
        """
        if isinstance(message, str | bytes | bytearray | memoryview):
            message = cast("_Piece", message)  # not a memoryview of pieces, as pyright fears
            await self._start_sending()
            if self._message_lock.locked():  # a message from an async iterable is going out
                async with self._message_lock:
                    self._queue_message(message)
            else:
                self._queue_message(message)
            await self._wait_for_room()
        else:
            await self._send_fragmented(message)

    def _check_open(self) -> None:
        if self._state is not State.OPEN or not self._protocol.can_send_data:
            raise self._closed_error()

    async def _start_sending(self) -> None:
        """The start of every call that sends: raise Cancelled or ConnectionClosed before
        anything is queued, with a checkpoint either way."""
        if self._state is not State.OPEN or not self._protocol.can_send_data:
            await trio.lowlevel.checkpoint()
            raise self._closed_error()
        await trio.lowlevel.checkpoint_if_cancelled()

    def _queue_message(self, message: _Piece) -> None:
        """Frame a whole message and queue its frames; raise if the connection is closing."""
        self._check_open()
        protocol, writer = self._protocol, self._writer
        if len(message) <= FRAME_SIZE:
            writer.write(protocol.send_message(message))
            return
        for piece, last in protocol.split_message(message):
            writer.write(protocol.send_fragment(piece, last))

    async def _wait_for_room(self) -> None:
        """The end of every call that queues a frame: its checkpoint, and backpressure."""
        if self._writer.is_full():
            await self._writer.wait_for_room()
            if self._writer.lost:  # the connection failed before the message went out
                raise self._closed_error()
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _send_fragmented(
        self, message: Iterable[BytesLike | str] | AsyncIterable[BytesLike | str]
    ) -> None:
        if isinstance(message, Mapping):
            kind = type(cast("object", message)).__name__
            raise TypeError(
                f"message must be str or bytes-like, not {kind}: "
                "encode it first, e.g. with json.dumps()"
            )
        if not isinstance(message, AsyncIterable):
            if not isinstance(message, Iterable):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise TypeError(
                    "message must be str, bytes-like, or an iterable or async iterable of them, "
                    f"not {type(message).__name__}"
                )
            listed = list(message)
            for piece in listed:
                _check_piece(piece, listed[0])
            async with self._message_lock:
                self._check_open()
                for index, piece in enumerate(listed):
                    final = index == len(listed) - 1
                    self._writer.write(self._protocol.send_fragment(piece, final))
            await self._wait_for_room()
            return
        async with self._message_lock:
            first: _Piece | None = None
            started = False  # a frame is out: the message can only be cut short from now on
            try:
                async for piece in message:
                    first = piece if first is None else first
                    _check_piece(piece, first)
                    self._check_open()
                    self._writer.write(self._protocol.send_fragment(piece, False))
                    started = True
                    await self._wait_for_room()
                if first is not None:
                    self._check_open()
                    last = "" if isinstance(first, str) else b""
                    self._writer.write(self._protocol.send_fragment(last, True))
                    await self._wait_for_room()
            except BaseException as exc:
                if started and not isinstance(exc, ConnectionClosed):
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
            payload = self._pings.new_payload()
        else:
            payload = data.encode() if isinstance(data, str) else bytes(data)
        if len(payload) > 125:
            raise ValueError(f"ping data of {len(payload)} bytes exceeds the 125-byte limit")
        await self._start_sending()
        pending = self._pings.add(payload)
        self._writer.write(self._protocol.send_ping(payload))
        try:
            rtt = await pending.wait()
        finally:
            self._pings.forget(payload, pending)
        if rtt is None:
            raise self._closed_error()
        return rtt

    async def pong(self, data: Data = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat, RFC 6455 §5.5.3).

        Raises:
            ConnectionClosed: the connection is closing or closed.
            ValueError: ``data`` is longer than 125 bytes.
        """
        payload = data.encode() if isinstance(data, str) else bytes(data)
        if len(payload) > 125:
            raise ValueError(f"pong data of {len(payload)} bytes exceeds the 125-byte limit")
        await self._start_sending()
        self._writer.write(self._protocol.send_pong(payload))
        await self._wait_for_room()

    # -- closing ---------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Run the closing handshake, then close the socket.

        Sends a close frame with ``code`` and ``reason`` after what is already queued, waits up
        to ``close_timeout`` for the peer's, then closes the socket. Does nothing more if the
        connection is already closing or closed. Never raises a ConnectionClosed.

        Raises:
            ValueError: ``code`` is not one an endpoint may send (RFC 6455 §7.4), or
                ``reason`` is longer than 123 bytes in UTF-8.

        Cancelling stops the wait for the peer and closes the socket, after giving the close
        frame up to ``close_timeout`` to go out.
        """
        check_close_code(code, reason)
        try:
            await self._close(code, reason)
        except BaseException:
            await self._give_up()
            raise

    async def wait_closed(self) -> None:
        """Wait until the connection is closed and its socket released."""
        await self._closed.wait()

    async def _close(self, code: int, reason: str) -> None:
        """Send our close frame, wait for the peer's and the end of the stream, bounded."""
        self._send_close(code, reason)
        with trio.move_on_after(self._options.close_timeout):
            await self._closed.wait()
        if not self._closed.is_set():
            self._logger.debug("connection %s: closing handshake timed out", self._id)
            self._reader.scope.cancel()
            await self._finish()

    async def _give_up(self) -> None:
        """Close at once, after a bounded wait for our close frame to go out. Never raises."""
        with trio.move_on_after(self._options.close_timeout, shield=True):
            await self._writer.drain()
        self._reader.scope.cancel()
        await self._finish()

    def _send_close(self, code: int, reason: str) -> None:
        """Queue our close frame (a new one, or the answer to the peer's) unless it is out."""
        if self._protocol.close_sent or self._state is State.CLOSED:
            return
        code, reason = self._ending.frame_to_send(code, reason)
        data = self._protocol.send_close(code, reason)
        self._ending.sent = (code, reason)
        if self._state is State.OPEN:
            self._state = State.CLOSING
        self._inbox.start_closing()  # the reader must read the peer's answer, queue full or not
        self._stop_keepalive()
        self._writer.write(data)

    async def _fail(self, code: int, reason: str, cause: BaseException | None) -> None:
        """Fail the connection (RFC 6455 §7.1.7): a close frame if possible, then close TCP."""
        self._record_failure(code, reason, cause)
        self._logger.debug("connection %s failed: %d %s", self._id, code, reason)
        self._send_close(code, reason)
        await self._give_up()

    async def _abort(self, code: int, reason: str) -> None:
        """Fail the connection without a close frame, for a peer that takes no more bytes."""
        self._record_failure(code, reason, None)
        self._logger.debug("connection %s aborted: %d %s", self._id, code, reason)
        self._reader.scope.cancel()
        await self._finish()

    def _record_failure(self, code: int, reason: str, cause: BaseException | None) -> None:
        self._ending.record_failure(code, reason, cause)
        self._inbox.end()

    async def _finish(self) -> None:
        """Mark the connection closed and release its socket. Safe to call more than once.

        Never raises Cancelled: it runs in cancelled scopes (the reader's exit, the session's
        cleanup), where a Cancelled would leave ``_closed`` unset or replace the exception
        being handled.
        """
        if self._state is not State.CLOSED:
            self._state = State.CLOSED
            self._inbox.end()
            self._pings.settle_all()
            self._stop_keepalive()
            self._writer.stop()
            self._logger.debug("connection %s closed: code %s", self._id, self.close_code)
        if self._closed.is_set():
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        with trio.CancelScope(shield=True):  # bounded: aclose_forcefully never blocks
            await trio.aclose_forcefully(self._stream)
        self._closed.set()

    def _closed_error(self) -> ConnectionClosed:
        """The exception that says how the connection ended (or is ending)."""
        return self._ending.error(closed=self._state is State.CLOSED)

    # -- what the reader and the writer report ---------------------------------------------

    def _take_in(self, data: bytes | bytearray) -> bool:
        """Act on bytes read: False once nothing more should be read."""
        inbox = self._inbox
        for event in self._protocol.receive_data(data):
            if isinstance(event, MessageReceived):  # the hot path
                inbox.put_message(event.data)
            elif isinstance(event, FragmentReceived):
                inbox.put_piece(event.data, event.final)
            elif isinstance(event, PingReceived):
                if self._protocol.can_send_data:
                    self._writer.write(self._protocol.send_pong(event.payload))
            elif isinstance(event, PongReceived):
                self._pings.settle(event.payload)
            elif isinstance(event, CloseReceived):
                self._ending.rcvd = (event.code, event.reason)
                inbox.end()
                self._send_close(event.code, "")
                return self._await_server_eof()
            else:
                self._record_failure(event.code, event.reason, event.error)
                self._send_close(event.code, event.reason)
                return False
        return True

    def _await_server_eof(self) -> bool:
        """After the closing handshake: RFC 6455 §7.1.1 has the server close TCP first."""
        if not self._is_client:
            return False
        self._reader.scope.deadline = trio.current_time() + self._options.close_timeout
        return True

    def _read_ended(self, error: BaseException | None) -> None:
        if error is not None:
            self._record_failure(1006, "connection lost", error)
        self._inbox.end()

    def _reader_bug(self, exc: Exception) -> None:
        self._logger.error("connection %s: internal error in the reader", self._id, exc_info=exc)
        self._record_failure(1011, "internal error", exc)
        self._send_close(1011, "internal error")

    async def _reader_finished(self) -> None:
        """Reading is over: flush what is queued (a close frame), bounded, then close."""
        if self._state is not State.CLOSED and not self._writer.lost:
            with trio.move_on_after(self._options.close_timeout, shield=True):
                await self._writer.drain()
        await self._finish()

    def _write_failed(self, exc: BaseException) -> None:
        self._record_failure(1006, "connection lost", exc)
        self._reader.scope.cancel()

    # -- keepalive -------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        """Have the keepalive timer start a ping round one ``ping_interval`` from now."""
        assert self._keepalive is not None and self._options.ping_interval is not None
        due = trio.current_time() + self._options.ping_interval
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
        try:
            with trio.CancelScope() as self._keepalive_scope:
                answered = await self._keepalive_ping()
        except Exception as exc:  # a bug in trio_ws: reported, never raised
            self._logger.error(
                "connection %s: internal error in keepalive", self._id, exc_info=exc
            )
            await self._fail(1011, "internal error", exc)
            return
        finally:
            self._keepalive_scope = None
        if answered and self._state is State.OPEN:
            self._schedule_ping()

    async def _keepalive_ping(self) -> bool:
        """One ping; True if its pong came.

        A peer is dead when its pong has not come ``ping_timeout`` after our ping went out and
        we were reading, or when it took none of our bytes for that long. A peer whose
        messages fill our queue, or that slowly reads a large message of ours, is alive.
        """
        if self._state is not State.OPEN:
            return False
        timeout = self._options.ping_timeout
        payload = self._pings.new_payload()
        pending = self._pings.add(payload)
        self._writer.write(self._protocol.send_ping(payload))
        try:
            while True:
                with trio.move_on_after(timeout):
                    return await pending.wait() is not None
                if self._writer.stalled_for(trio.current_time()) >= timeout:
                    stalled = f"no write progress for {timeout:g} s: the peer stopped reading"
                    await self._abort(1011, stalled)
                    return False
                # Our ping may still wait behind writes that progress, or its pong behind
                # messages we stopped reading for backpressure: the peer is alive.
                if not self._writer.buffered and not self._inbox.is_full():
                    await self._fail(1011, "keepalive ping timeout", None)
                    return False
        finally:
            self._pings.forget(payload, pending)

    @asynccontextmanager
    async def _session(self, keepalive: KeepaliveTimer | None) -> AsyncGenerator[None, None]:
        """Run the background work of ``ws`` around the body; close the connection when it exits.

        ``keepalive`` times this connection's pings, from a task outside the session (a server's,
        for all its connections); without it the session runs a timer of its own.

        A body that returns closes with 1000 as ``aclose()`` does; one that raises closes with
        1011, one that is cancelled with 1001, in a shielded step bounded by ``close_timeout``.
        Either way the peer gets a close frame while the socket works. What the body raised comes
        out as itself: it is held until the nursery has exited, since a nursery copies an
        ExceptionGroup that goes through it, and re-raised even if that exit was cancelled. A bug
        in trio_ws that escapes a background task comes out as a WebSocketError "internal error"
        chained to it, never as Cancelled.
        """
        body_error: BaseException | None = None
        own_timer: KeepaliveTimer | None = None
        try:
            async with _groups.open_nursery() as nursery:
                self._start(nursery, keepalive)
                if self._options.ping_interval is not None and keepalive is None:
                    own_timer = KeepaliveTimer()
                    nursery.start_soon(own_timer.run)
                    self._start_keepalive(own_timer)
                try:
                    yield
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
                    await self.aclose()  # cancelled, it still sends its close frame (bounded)
                finally:
                    if own_timer is not None:
                        own_timer.stop()
                    self._reader.scope.cancel()
                    await self._finish()
        except trio.Cancelled:
            if body_error is None:
                raise
        except Exception as exc:  # a bug escaped a background task
            self._logger.error("connection %s: internal error", self._id, exc_info=exc)
            if body_error is None or isinstance(body_error, trio.Cancelled):
                raise WebSocketError(f"internal error in trio_ws: {exc!r}") from exc
        finally:
            self._tasks = self._keepalive = None
        if body_error is not None:
            _groups.reraise(body_error)

    def _start(self, nursery: trio.Nursery, keepalive: KeepaliveTimer | None) -> None:
        self._tasks = nursery
        self._writer.start(nursery)
        if not self._take_in(b""):  # frames that came with the handshake, if any
            self._reader.scope.cancel()
        nursery.start_soon(self._reader.run)
        if keepalive is not None:
            self._start_keepalive(keepalive)

    def _start_keepalive(self, keepalive: KeepaliveTimer) -> None:
        if self._options.ping_interval is not None:
            self._keepalive = keepalive
            self._schedule_ping()


def session(
    ws: Connection, keepalive: KeepaliveTimer | None = None
) -> AbstractAsyncContextManager[None]:
    """Run the background work of ``ws`` around a body; close the connection when it exits.

    For ``connect()`` and ``serve()``; see ``Connection._session``.
    """
    return ws._session(keepalive)  # pyright: ignore[reportPrivateUsage]
