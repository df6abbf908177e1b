"""An open WebSocket connection over a trio stream: the same API on the client and the server.

:class:`Connection` is the public face; the machinery (reader, write buffer, closing handshake,
keepalive) is ``_core.Core``'s, and ``_session.session()`` runs it around the body that uses the
connection, for ``connect()`` and ``serve()``.

What a cancelled call leaves: ``recv()`` consumes nothing; ``send()`` never cuts a frame (a
message is queued whole in the write buffer or not at all, and the connection stays usable);
``aclose()`` always closes the socket and, while the socket works, sends a close frame.
"""

from __future__ import annotations

import codecs
import logging
import sys
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Literal, NamedTuple, NoReturn, Self, cast, overload

import trio

from ._closing import State
from ._core import Core
from ._options import ConnectionOptions, LoggerLike, check_close_code
from .exceptions import InvalidState
from .stats import Stats

if TYPE_CHECKING:
    from ._handshake import Opened
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


class _Opening(NamedTuple):
    """What a connection keeps until its opening handshake is done."""

    stream: trio.abc.Stream
    is_client: bool
    options: ConnectionOptions
    stats: Stats


# The slots that _open() sets: reading one before raises InvalidState.
_SET_WHEN_OPEN = frozenset({"_core", "_request", "_response", "_subprotocol"})


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
    if not isinstance(address, tuple):
        return None
    # The host is interned: connections from one client, or to one listener, share its str.
    host, *rest = cast("tuple[object, ...]", address)
    return cast("Address", (sys.intern(host), *rest) if isinstance(host, str) else address)


def _recoded(data: Data, text: bool) -> Data:
    """``data`` as str (``text``) or as bytes: UTF-8 either way."""
    if text:
        return data if isinstance(data, str) else data.decode()
    return data.encode() if isinstance(data, str) else data


def _recoded_message(
    message: BytesLike | str | Iterable[BytesLike | str] | AsyncIterable[BytesLike | str],
    text: bool,
) -> BytesLike | str | Iterable[BytesLike | str] | AsyncIterable[BytesLike | str]:
    """What ``send(message, text=...)`` sends: each piece as str or bytes, the decoding of
    bytes incremental across pieces (a character may be split between them)."""
    given = cast("object", message)
    if isinstance(given, str | bytes | bytearray | memoryview):
        return _recoded(given if isinstance(given, str) else bytes(cast("bytes", given)), text)
    if isinstance(given, Mapping):
        return message  # send() says what is wrong with it
    recoder = _Recoder(text)
    if isinstance(given, AsyncIterable):
        return recoder.async_pieces(cast("AsyncIterable[BytesLike | str]", given))
    if isinstance(given, Iterable):
        return recoder.pieces(cast("Iterable[BytesLike | str]", given))
    return message  # send() says what is wrong with it


class _Recoder:
    """Converts the pieces of one fragmented message to str or bytes."""

    def __init__(self, text: bool) -> None:
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")() if text else None

    def piece(self, piece: BytesLike | str) -> BytesLike | str:
        given = cast("object", piece)
        if isinstance(given, str):
            return given if self._text else given.encode()
        if self._decoder is None or not isinstance(given, bytes | bytearray | memoryview):
            return piece  # bytes staying bytes; anything else: send() says what is wrong
        return self._decoder.decode(cast("bytes", given))

    def end(self) -> None:
        if self._decoder is not None:
            self._decoder.decode(b"", final=True)  # raises for a character cut short

    def pieces(self, message: Iterable[BytesLike | str]) -> list[BytesLike | str]:
        converted = [self.piece(piece) for piece in message]
        self.end()
        return converted

    async def async_pieces(
        self, message: AsyncIterable[BytesLike | str]
    ) -> AsyncIterator[BytesLike | str]:
        async for piece in message:
            yield self.piece(piece)
        self.end()


class _RecodedStream:
    """``recv_streaming(decode=...)``: the pieces of a message as str or bytes."""

    __slots__ = ("_decoder", "_stream", "_text")

    def __init__(self, stream: AsyncIterator[Data], text: bool) -> None:
        self._stream = stream
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")() if text else None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Data:
        try:
            piece = await self._stream.__anext__()
        except StopAsyncIteration:
            if self._decoder is not None:
                self._decoder.decode(b"", final=True)  # raises for a character cut short
            raise
        if isinstance(piece, str):
            return piece if self._text else piece.encode()
        return piece if self._decoder is None else self._decoder.decode(piece)


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
        "_core",
        "_id",
        "_local_address",
        "_message_lock",
        "_opening",
        "_remote_address",
        "_request",
        "_response",
        "_subprotocol",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        is_client: bool,
        options: ConnectionOptions,
        stats: Stats | None = None,
    ) -> None:
        # Not open yet: _open() starts the machinery once the opening handshake is done.
        self._id = uuid.uuid4()
        self._opening: _Opening | None = _Opening(stream, is_client, options, stats or Stats())
        sock = _socket_of(stream)
        self._local_address = _address(sock, peer=False)
        self._remote_address = _address(sock, peer=True)
        # Held while a fragmented message goes out; made by the first one (a lock costs 550 bytes).
        self._message_lock: trio.StrictFIFOLock | None = None

    def _open(self, opened: Opened) -> None:
        """The opening handshake is done: start the connection's machinery."""
        assert self._opening is not None
        stream, is_client, options, stats = self._opening
        self._opening = None
        self._request = opened.request
        self._response = opened.response
        self._subprotocol = opened.subprotocol
        self._core = Core(
            stream, opened.ws, is_client=is_client, options=options, id=self._id, stats=stats
        )

    if not TYPE_CHECKING:  # to type checkers, every attribute is there: as it is once open

        def __getattr__(self, name: str) -> NoReturn:
            # Only reached for a slot not set yet: before the opening handshake is done.
            if name in _SET_WHEN_OPEN:
                raise InvalidState(
                    f"connection {self._id} is not open yet: its opening handshake is in "
                    f"progress (no {name.lstrip('_')} yet)"
                )
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- what you can ask ------------------------------------------------------------------

    @property
    def id(self) -> uuid.UUID:
        """A unique id for this connection, used in log messages."""
        return self._id

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """The connection's logger: records carry it as their ``websocket`` attribute.

        A :class:`logging.LoggerAdapter` over the ``logger`` option of ``connect()`` or
        ``serve()``, so that a formatter or filter can show ``record.websocket.id``.
        """
        base = self._opening.options.logger if self._opening is not None else self._core.logger
        return logging.LoggerAdapter(cast("logging.Logger", base), {"websocket": self})

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
        """CONNECTING during the opening handshake (in a server's hooks), OPEN until a close
        frame is sent or received, CLOSING until the socket is closed, then CLOSED."""
        if self._opening is not None:
            return State.CONNECTING
        return self._core.state

    @property
    def close_code(self) -> int | None:
        """The code of the peer's close frame (1005 if it had none, 1006 if none came).

        None until the connection is closed or a close frame has been received.
        """
        if self._core.ending.rcvd is not None:
            return self._core.ending.rcvd[0]
        return 1006 if self._core.state is State.CLOSED else None

    @property
    def close_reason(self) -> str | None:
        """The reason in the peer's close frame ("" if none came); None while open."""
        if self._core.ending.rcvd is not None:
            return self._core.ending.rcvd[1]
        return "" if self._core.state is State.CLOSED else None

    @property
    def latency(self) -> float:
        """The last round-trip time measured by a ping, in seconds (0.0 before the first)."""
        return self._core.pings.latency

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._id} {self.state.name}>"

    # -- messages --------------------------------------------------------------------------

    async def send(
        self,
        message: BytesLike | str | Iterable[BytesLike | str] | AsyncIterable[BytesLike | str],
        text: bool | None = None,
    ) -> None:
        """Send one message: a text frame for str, a binary frame for bytes-like data.

        ``text=True`` sends bytes-like data (UTF-8) as text, ``text=False`` sends a str as
        binary (its UTF-8), as websockets does; None follows the type.

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
            UnicodeDecodeError: ``text=True`` with bytes that are not UTF-8 (nothing is sent;
                for an async iterable, the message is cut short as below).
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
        if text is not None:
            message = _recoded_message(message, text)
        if isinstance(message, str | bytes | bytearray | memoryview):
            message = cast("_Piece", message)  # not a memoryview of pieces, as pyright fears
            await self._core.start_sending()
            lock = self._message_lock
            if lock is not None and lock.locked():  # a message from an async iterable goes out
                async with lock:
                    self._core.queue_message(message)
            else:
                self._core.queue_message(message)
            await self._core.wait_for_room()
        else:
            await self._send_fragmented(message)

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
            async with self._fragmenting():
                self._core.check_open()
                for index, piece in enumerate(listed):
                    final = index == len(listed) - 1
                    self._core.writer.write(self._core.protocol.send_fragment(piece, final))
                self._core.stats.messages_out += bool(listed)
            await self._core.wait_for_room()
            return
        async with self._fragmenting():
            first: _Piece | None = None
            cut = False  # a frame is queued, the final one is not: nothing else may follow
            try:
                async for piece in message:
                    first = piece if first is None else first
                    _check_piece(piece, first)
                    self._core.check_open()
                    self._core.writer.write(self._core.protocol.send_fragment(piece, False))
                    cut = True
                    await self._core.wait_for_room()
                if first is not None:
                    self._core.check_open()
                    last = "" if isinstance(first, str) else b""
                    self._core.writer.write(self._core.protocol.send_fragment(last, True))
                    self._core.stats.messages_out += 1
                    cut = False
                    await self._core.wait_for_room()
            except BaseException as exc:
                # Even a ConnectionClosed from the iterable (another connection's) cuts ours.
                if cut and self._core.state is State.OPEN:
                    with trio.CancelScope(shield=True):  # bounded by close_timeout
                        cause = exc if isinstance(exc, Exception) else None
                        await self._core.fail(1011, "message cut short", cause)
                raise

    def _fragmenting(self) -> trio.StrictFIFOLock:
        """The lock a fragmented message holds while its frames go out."""
        if self._message_lock is None:
            self._message_lock = trio.StrictFIFOLock()
        return self._message_lock

    @overload
    async def recv(self, decode: None = None) -> Data: ...
    @overload
    async def recv(self, decode: Literal[True]) -> str: ...
    @overload
    async def recv(self, decode: Literal[False]) -> bytes: ...

    async def recv(self, decode: bool | None = None) -> Data:
        """Wait for the next message: str for text frames, bytes for binary.

        ``decode=True`` returns a binary message as str (its UTF-8 decoded), ``decode=False``
        a text message as bytes (its UTF-8), as websockets does; None follows the frames.
        Messages that arrived before the connection closed are still returned, in order.

        Raises:
            ConnectionClosedOK: the connection closed with 1000, 1001 or no code.
            ConnectionClosedError: the connection failed or closed with another code.
            ConcurrencyError: another task is already waiting in recv() or recv_streaming().
            UnicodeDecodeError: ``decode=True`` and the binary message is not UTF-8 (the
                message is consumed).

        Cancelling is safe: nothing is consumed, the next call gets the message.
        """
        message = await self._core.inbox.get()
        if decode is None:
            return message
        return _recoded(message, decode)

    @overload
    def recv_streaming(self, decode: None = None) -> AsyncIterator[Data]: ...
    @overload
    def recv_streaming(self, decode: Literal[True]) -> AsyncIterator[str]: ...
    @overload
    def recv_streaming(self, decode: Literal[False]) -> AsyncIterator[bytes]: ...

    def recv_streaming(self, decode: bool | None = None) -> AsyncIterator[Data]:
        """Iterate over the next message piece by piece, as its frames arrive.

        ``decode`` converts the pieces as for :meth:`recv`; decoded pieces are whole
        characters, a character split between frames coming with the piece that ends it.

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
        stream = self._core.inbox.stream()
        return stream if decode is None else _RecodedStream(stream, decode)

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[Data]:
        """The next message; the iteration stops when the connection closes normally.

        Raises:
            ConnectionClosedError: the connection failed or closed with an error code.
        """
        # recv() without a coroutine of its own (about 220 bytes while a handler waits in
        # ``async for``): the inbox ends the iteration where recv() raises ConnectionClosedOK.
        return self._core.inbox.get(iterating=True)

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
            payload = self._core.pings.new_payload()
        else:
            payload = data.encode() if isinstance(data, str) else bytes(data)
        if len(payload) > 125:
            raise ValueError(f"ping data of {len(payload)} bytes exceeds the 125-byte limit")
        await self._core.start_sending()
        pending = self._core.pings.add(payload)
        self._core.writer.write(self._core.protocol.send_ping(payload))
        try:
            rtt = await pending.wait()
        finally:
            self._core.pings.forget(payload, pending)
        if rtt is None:
            raise self._core.closed_error()
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
        await self._core.start_sending()
        self._core.writer.write(self._core.protocol.send_pong(payload))
        await self._core.wait_for_room()

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
        await self._core.aclose(code, reason)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed and its socket released."""
        await self._core.wait_closed()
