"""WebSocket framing after the handshake: bytes in, events out. Never imports trio.

How this works: wsproto parses frames and tracks the closing handshake. This module feeds it
and reads the frames its frame protocol parsed, doing what wsproto's ``Connection.events()``
and ``send()`` do without an event object per frame (``_framing.close_received`` moves the
connection's state on at the peer's close frame). It reports a message that arrives in one
piece as a whole and one that arrives in pieces (frames, or parts of a frame split across
reads) piece by piece, and enforces the size limits, which wsproto leaves to its users. Going
out, a message over ``FRAME_SIZE`` is framed in pieces of that size.

Pieces: what one ``receive_data()`` call reads of a message is reported as one event: the
whole message (MessageReceived) when the call reads all of it, else one FragmentReceived per
call, joined from the frames it read; only a control frame between them (reported in its
place) or the call's end separates pieces. So however small the peer's frames, a message in
progress holds one piece per read, not one per frame.

Limits: ``max_size`` bounds a message, ``max_fragment_size`` a frame, in payload bytes (text
counted as UTF-8); over either, the connection fails with 1009 and PayloadTooBig. They are
checked as soon as wsproto has parsed each frame's header, so an oversized message is neither
buffered nor waited for:

- An uncompressed frame announces its payload exactly: it fails at its header when it is over
  max_fragment_size, or when the frames of its message before it plus its announced length are
  over max_size, before any of its payload arrives.
- A compressed frame (permessage-deflate) announces its compressed length, and the limits bound
  what it inflates to: that is checked as it inflates (``_deflate`` never inflates more than
  max_size + 1 bytes of a message). Compressed data can be longer than what it inflates to,
  but little for any honest compressor (zlib's worst case is about 14%, plus a few bytes per
  frame), so a compressed frame fails at its header when it, or its message's compressed bytes
  so far, exceed twice the limit plus 1 KiB: only padding gets there.
- Each frame of a message after its first costs ``FRAME_COST`` (64) bytes against max_size,
  besides its payload, which still gets all of max_size: a message may come in at most
  ``1 + max_size // 64`` frames (16,385 for 1 MiB); the header of the next fails. A piece held
  for a message in progress costs about 90 bytes of Python objects besides its data, and there
  is one per frame at worst (one frame per read), so a message in progress holds at most about
  two and a half times max_size, whatever its frames.

Masking, and the limits at each header: each Protocol gives its wsproto connection (which only
trio_ws holds) a frame protocol of its own, subclassed in ``_framing``, which masks and unmasks
with ``_masking``'s C code when the extension was built. wsproto's modules are never changed:
other wsproto users in the process keep wsproto's own masker.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Ping, Pong
from wsproto.frame_protocol import Opcode, ParseFailed
from wsproto.utilities import LocalProtocolError

from ._framing import FRAME_COST, close_received, take_over, too_big
from .exceptions import ProtocolError, WebSocketError

__all__ = [
    "FRAME_COST",
    "FRAME_SIZE",
    "CloseReceived",
    "Event",
    "Failed",
    "FragmentReceived",
    "MessageReceived",
    "PingReceived",
    "PongReceived",
    "Protocol",
]


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A whole message: str for text, bytes for binary."""

    data: str | bytes


@dataclass(frozen=True, slots=True)
class FragmentReceived:
    """A piece of a message that arrives in pieces; ``final`` marks its last piece.

    Pieces of a text message are whole code points: wsproto decodes UTF-8 incrementally.
    """

    data: str | bytes
    final: bool


@dataclass(frozen=True, slots=True)
class PingReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer's close frame (code 1005 when it carried none)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The peer broke the protocol or a limit; we must close with ``code``. No events follow."""

    code: int
    reason: str
    error: WebSocketError


Event = MessageReceived | FragmentReceived | PingReceived | PongReceived | CloseReceived | Failed


#: Messages longer than this (bytes, or characters of text) go out in frames of this size.
#: wsproto copies a frame's payload several times as it frames it: in pieces that fit in the
#: CPU's caches, a 1 MiB message frames about 15 times faster than in one frame.
FRAME_SIZE = 64 * 1024


# The states in which wsproto's Connection reads frames (after our close, the peer's answer).
_READING_STATES = (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING)


def _byte_length(data: bytes | bytearray | memoryview) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


class Protocol:
    """One open WebSocket connection's framing state.

    Args:
        ws: the wsproto connection that the opening handshake opened.
        max_size: the largest message accepted, in payload bytes (text counted as UTF-8);
            None for no limit. It also bounds the frames a message may come in, to
            ``1 + max_size // FRAME_COST``: see the module docstring.
        max_fragment_size: the largest frame accepted, in payload bytes; None for no limit.
            With max_size, websockets' ``max_size=(max_message_size, max_fragment_size)``.
    """

    def __init__(
        self, ws: Connection, *, max_size: int | None, max_fragment_size: int | None = None
    ) -> None:
        self._ws = ws
        self._frames = take_over(ws, max_size=max_size, max_fragment_size=max_fragment_size)
        self._max_size = max_size
        self._in_message = False  # some pieces of the current message were reported
        self._failed = False

    @property
    def can_send_data(self) -> bool:
        """Whether a message may still be sent: no close frame sent or received."""
        return self._ws.state is ConnectionState.OPEN and not self._failed

    @property
    def close_sent(self) -> bool:
        return self._ws.state in (ConnectionState.LOCAL_CLOSING, ConnectionState.CLOSED)

    def receive_data(self, data: bytes | bytearray) -> list[Event]:
        """Feed bytes read from the network; return the events they complete.

        What wsproto's ``Connection.receive_data()`` and ``events()`` do, reading the frames
        of its frame protocol directly rather than through an event object each.
        """
        if self._failed or self._ws.state not in _READING_STATES:
            return []  # RFC 6455 §5.5.1: nothing after the close frame counts.
        frames = self._frames
        frames.receive_bytes(data if type(data) is bytes else bytes(data))
        events: list[Event] = []
        # Pieces of the message being read that this call read one after the other: reported
        # joined, as one event, once an event of another kind or the call's end comes.
        pieces: list[str | bytes] = []
        try:
            for frame in frames.received_frames():
                opcode = frame.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    payload = cast("str | bytes | bytearray", frame.payload)
                    piece = bytes(payload) if isinstance(payload, bytearray) else payload
                    if frame.message_finished:
                        if pieces:
                            pieces.append(piece)
                            piece = _join(pieces)
                            pieces = []
                        if self._in_message:
                            self._in_message = False
                            events.append(FragmentReceived(piece, final=True))
                        else:
                            events.append(MessageReceived(piece))
                    elif piece:  # not an empty frame, or a header without its payload yet
                        pieces.append(piece)
                    continue
                if pieces:
                    events.append(self._piece(pieces))
                    pieces = []
                if opcode is Opcode.PING:
                    events.append(PingReceived(bytes(cast("bytes", frame.payload))))
                elif opcode is Opcode.PONG:
                    events.append(PongReceived(bytes(cast("bytes", frame.payload))))
                elif opcode is Opcode.CLOSE:
                    code, reason = cast("tuple[int, str | None]", frame.payload)
                    close_received(self._ws)
                    events.append(CloseReceived(int(code), reason or ""))
                    break
        except ParseFailed as exc:  # the peer broke the protocol, or a limit of ours
            if pieces:
                events.append(self._piece(pieces))
                pieces = []
            events.append(self._failure(int(exc.code), str(exc)))
        if pieces:
            events.append(self._piece(pieces))
        return events

    def _piece(self, pieces: list[str | bytes]) -> FragmentReceived:
        """The pieces of a message that has more to come, as one event."""
        self._in_message = True
        return FragmentReceived(_join(pieces), final=False)

    def _failure(self, code: int, reason: str) -> Failed:
        self._failed = True
        if code == 1009:
            # Refused by our parser, which says why, or by _deflate while inflating.
            error: WebSocketError | None = self._frames.decoder.too_big
            if error is None:
                assert self._max_size is not None
                error = too_big(self._max_size, self._max_size)
            return Failed(code, "message too big", error)
        return Failed(code, _close_reason_for(code), ProtocolError(reason or "protocol error"))

    def send_message(self, message: str | bytes | bytearray | memoryview) -> bytes:
        """Frame one whole message, in frames of up to ``FRAME_SIZE``."""
        if isinstance(message, str):
            if len(message) <= FRAME_SIZE:
                return self._send_data(message, True)
        elif isinstance(message, bytes | bytearray | memoryview):  # pyright: ignore[reportUnnecessaryIsInstance]
            if _byte_length(message) <= FRAME_SIZE:
                return self._send_data(bytes(message), True)
        else:
            raise TypeError(f"message must be str or bytes-like, not {type(message).__name__}")
        return b"".join(self.send_fragment(*piece) for piece in self.split_message(message))

    def split_message(
        self, message: str | bytes | bytearray | memoryview
    ) -> Iterator[tuple[str | bytes | bytearray | memoryview, bool]]:
        """The pieces of a message with their ``final`` flags, for ``send_fragment``."""
        if isinstance(message, memoryview):
            message = message.cast("B") if message.c_contiguous else message.tobytes()
        size = len(message)
        for start in range(0, size, FRAME_SIZE):
            end = start + FRAME_SIZE
            yield message[start:end], end >= size

    def send_fragment(self, fragment: str | bytes | bytearray | memoryview, final: bool) -> bytes:
        """Frame one fragment of a message; the first one sets its type, ``final`` ends it."""
        return self._send_data(fragment if isinstance(fragment, str) else bytes(fragment), final)

    def _send_data(self, data: str | bytes, final: bool) -> bytes:
        """What wsproto's ``Connection.send()`` does for a message, without its event object:
        its frame protocol frames the data (the opcode from the type, continuation frames
        after the first), in the state where Connection.send() allows it."""
        if self._ws.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"a message cannot be sent in state {self._ws.state.name}")
        return bytes(self._frames.send_data(data, final))

    def send_ping(self, payload: bytes) -> bytes:
        return self._ws.send(Ping(payload=payload))

    def send_pong(self, payload: bytes) -> bytes:
        return self._ws.send(Pong(payload=payload))

    def send_close(self, code: int, reason: str) -> bytes:
        """Frame our close frame: a new close, or the answer to the peer's."""
        if self.close_sent:
            return b""
        return self._ws.send(CloseConnection(code=code, reason=reason or None))


def _join(pieces: list[str | bytes]) -> str | bytes:
    """Pieces of one message, all str or all bytes, as one."""
    if len(pieces) == 1:
        return pieces[0]
    if isinstance(pieces[0], str):
        return "".join(cast("list[str]", pieces))
    return b"".join(cast("list[bytes]", pieces))


def _close_reason_for(code: int) -> str:
    if code == 1007:  # RFC 6455 §7.4.1: data inconsistent with the message type
        return "invalid payload data: not UTF-8, or corrupt compressed data"
    return "protocol error"
