"""WebSocket framing after the handshake: bytes in, events out. Never imports trio.

How this works: wsproto parses frames and tracks the closing handshake. This module feeds it,
reports a message that arrives in one piece as a whole and one that arrives in pieces (frames,
or parts of a frame split across reads) piece by piece, and enforces the size limits, which
wsproto leaves to its users. Going out, a message over ``FRAME_SIZE`` is framed in pieces of
that size.

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

Masking: each Protocol replaces its wsproto connection's frame protocol (which only trio_ws
holds) with ``_FrameProtocol``, a subclass whose writer masks with ``_masking``'s C code and
whose parser (``_FrameDecoder``) unmasks with it, when the extension was built. wsproto's
modules are never changed: other wsproto users in the process keep wsproto's own masker.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn, cast

from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension
from wsproto.frame_protocol import (
    CloseReason,
    Frame,
    FrameDecoder,
    FrameProtocol,
    Header,
    Opcode,
    ParseFailed,
    RsvBits,
)

from . import _masking
from .exceptions import PayloadTooBig, ProtocolError, WebSocketError

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

#: What each frame of a message after its first costs against ``max_size``, in bytes, besides
#: its payload: a message may come in at most ``1 + max_size // FRAME_COST`` frames.
FRAME_COST = 64


def _byte_length(data: bytes | bytearray | memoryview) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


def _too_big(size: int, max_size: int) -> PayloadTooBig:
    return PayloadTooBig(f"message of over {size:,} bytes exceeds max_size={max_size:,}")


def _announced_limit(limit: int | None, *, compressed: bool = False) -> float:
    """The most payload bytes headers may announce under ``limit`` (None: no limit).

    Compressed, the most that honestly inflate to ``limit`` bytes or fewer: deflate expands
    incompressible data by at most about 14% (zlib's deflateBound), plus a few bytes for each
    flush (one per frame, RFC 7692 §7.2.1); twice the limit and 1 KiB leave room for any honest
    compressor, and refuse only padding.
    """
    if limit is None:
        return math.inf
    return 2 * limit + 1024 if compressed else limit


class _FrameDecoder(FrameDecoder):
    """wsproto's frame parser, unmasking in C when it can, and refusing a frame over the limits
    as soon as wsproto has parsed its header.

    A refusal raises wsproto's ParseFailed with 1009, which wsproto reports as a
    CloseConnection event, as it does the errors it finds itself; ``too_big`` says why.
    """

    def __init__(
        self,
        client: bool,
        extensions: list[Extension],
        *,
        max_size: int | None,
        max_fragment_size: int | None,
    ) -> None:
        super().__init__(client, extensions)
        self._max_size = max_size
        self._max_fragment_size = max_fragment_size
        self.too_big: PayloadTooBig | None = None
        # One masker for all frames (one frame is read at a time), restarted at each header.
        compiled = None if client else _masking.COMPILED_MASKER
        self._unmasker = None if compiled is None else compiled(b"\x00" * 4)
        # The most payload headers may announce: for a frame, for a message so far; as plain
        # and as compressed data. Set at each message's first frame.
        self._limits = (_announced_limit(max_fragment_size), _announced_limit(max_size))
        self._compressed_limits = (
            _announced_limit(max_fragment_size, compressed=True),
            _announced_limit(max_size, compressed=True),
        )
        self._frame_limit, self._message_limit = self._limits
        self._max_frames = math.inf if max_size is None else 1 + max_size // FRAME_COST
        # A message in one frame within this needs no more checks: the common case, made fast.
        self._whole_limit = min(self._limits)
        # The message being read: from its first frame's header to its last frame's.
        self._in_message = False
        self._compressed = False  # RSV1 on its first frame (permessage-deflate)
        self._announced = 0  # payload bytes its frames' headers announced so far
        self._frames = 0  # its frames so far

    def parse_header(self) -> bool:
        unmasker = self._unmasker
        if unmasker is None:
            if not FrameDecoder.parse_header(self):
                return False
            header = self.header
            assert header is not None
        else:
            # The header's bytes, before wsproto consumes them: the masking key is among them.
            used = self.buffer.bytes_used
            head = self.buffer.buffer[used : used + 14]
            if not FrameDecoder.parse_header(self):
                return False
            header = self.header
            assert header is not None
            # wsproto refuses a length not in its shortest encoding, so the length tells where
            # the key is: after 2 header bytes, and 2 or 8 more for a longer length.
            length = header.payload_len
            start = 2 if length < 126 else 4 if length < 1 << 16 else 10
            unmasker.restart(head[start : start + 4])
            self.masker = unmasker
        if header.fin and not self._in_message and header.payload_len <= self._whole_limit:
            return True  # a message in one frame (or a control frame) within the limits
        self._check_header(header)
        return True

    def _check_header(self, header: Header) -> None:
        opcode = header.opcode
        length = header.payload_len
        if opcode is Opcode.CONTINUATION:
            if not self._in_message:
                return  # wsproto refuses it with 1002 (unexpected continuation)
            self._frames += 1
            self._announced += length
        elif opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if self._in_message:
                return  # wsproto refuses it with 1002 (a new message inside one)
            self._compressed = header.rsv.rsv1
            limits = self._compressed_limits if self._compressed else self._limits
            self._frame_limit, self._message_limit = limits
            self._frames = 1
            self._announced = length
        else:
            return  # a control frame
        self._in_message = not header.fin
        # An uncompressed frame announces its payload exactly: refuse it now, not after waiting
        # for a payload that may never come. A compressed one only bounds what it inflates to.
        if length > self._frame_limit:
            kind = "compressed " if self._compressed else ""
            limit = self._max_fragment_size
            self._refuse(f"{kind}frame of {length:,} bytes exceeds max_fragment_size={limit:,}")
        if self._announced > self._message_limit:
            kind = "compressed " if self._compressed else ""
            so_far = "" if header.fin else "at least "
            self._refuse(
                f"{kind}message of {so_far}{self._announced:,} bytes exceeds "
                f"max_size={self._max_size:,}"
            )
        if self._frames > self._max_frames:
            self._refuse(
                f"message in over {self._max_frames:,} frames exceeds max_size="
                f"{self._max_size:,}: each frame after the first counts {FRAME_COST} bytes"
            )

    def _refuse(self, reason: str) -> NoReturn:
        self.too_big = PayloadTooBig(reason)
        raise ParseFailed(reason, CloseReason.MESSAGE_TOO_BIG)


class _InflatingFrameDecoder(_FrameDecoder):
    """``_FrameDecoder`` for a connection with an extension (permessage-deflate): also measures
    compressed messages and frames as they inflate."""

    def __init__(
        self,
        client: bool,
        extensions: list[Extension],
        *,
        max_size: int | None,
        max_fragment_size: int | None,
    ) -> None:
        super().__init__(
            client, extensions, max_size=max_size, max_fragment_size=max_fragment_size
        )
        self._whole_limit = -1  # every data frame's header is checked: it may be compressed
        self._inflated = 0  # bytes inflated so far: of the message...
        self._frame_inflated = 0  # ...and of the frame

    def process_buffer(self) -> Frame | None:
        frame = super().process_buffer()
        if frame is None or not self._compressed or frame.opcode.iscontrol():
            return frame
        # ``_deflate`` already stops inflating a message past max_size + 1 bytes.
        size = len(frame.payload)
        self._inflated += size
        self._frame_inflated += size
        limit = self._max_fragment_size
        if limit is not None and self._frame_inflated > limit:
            self._refuse(f"frame inflating to over {limit:,} bytes exceeds max_fragment_size")
        limit = self._max_size
        if limit is not None and self._inflated > limit:
            self._refuse(f"message inflating to over {limit:,} bytes exceeds max_size")
        if frame.frame_finished:
            self._frame_inflated = 0
            if frame.message_finished:
                self._inflated = 0
        return frame


class _FrameProtocol(FrameProtocol):
    """wsproto's frame protocol with ``_FrameDecoder`` as its parser, masking in C when it can.

    trio_ws gives each connection its own instance; wsproto's classes stay as they are.
    """

    def __init__(
        self,
        client: bool,
        extensions: list[Extension],
        *,
        max_size: int | None,
        max_fragment_size: int | None,
    ) -> None:
        super().__init__(client, extensions)
        decoder_type = _InflatingFrameDecoder if self.extensions else _FrameDecoder
        self.decoder = decoder_type(
            self.client,
            self.extensions,
            max_size=max_size,
            max_fragment_size=max_fragment_size,
        )
        self._frame_decoder = self.decoder

    def _serialize_frame(
        self, opcode: Opcode, payload: bytes | bytearray = b"", fin: bool = True
    ) -> bytearray:
        mask = _masking.mask
        if not self.client or mask is None:
            return super()._serialize_frame(opcode, payload, fin)
        # wsproto's framing, masking in C and without copying the payload first.
        rsv = RsvBits(False, False, False)
        for extension in reversed(self.extensions):
            rsv, payload = extension.frame_outbound(self, opcode, rsv, bytes(payload), fin)
        first = self._make_fin_rsv_opcode(fin, rsv, opcode)
        length = len(payload)
        if length < 126:
            frame = bytearray((first, 0x80 | length))
        elif opcode.iscontrol():
            raise ValueError("payload too long for control frame")
        elif length < 1 << 16:
            frame = bytearray(struct.pack("!BBH", first, 0x80 | 126, length))
        else:
            frame = bytearray(struct.pack("!BBQ", first, 0x80 | 127, length))
        # RFC 6455 §5.3: a fresh, unpredictable key for each frame.
        key = os.urandom(4)
        frame += key
        frame += mask(payload, key, 0)
        return frame


def _take_over(
    ws: Connection, *, max_size: int | None, max_fragment_size: int | None
) -> _FrameProtocol:
    """Give ``ws`` a ``_FrameProtocol`` in place of wsproto's own, before any frame is read.

    wsproto may hold bytes that arrived with the handshake (not parsed until its events are
    read); they move over to the new parser.
    """
    old = ws._proto  # pyright: ignore[reportPrivateUsage]
    decoder = old._frame_decoder  # pyright: ignore[reportPrivateUsage]
    started = (
        decoder.header is not None
        or decoder.buffer.bytes_used
        or old._message_decoder.opcode is not None  # pyright: ignore[reportPrivateUsage]
        or old._outbound_opcode is not None  # pyright: ignore[reportPrivateUsage]
    )
    if started:
        raise ValueError("a Protocol must wrap a connection before any frame is read or sent")
    new = _FrameProtocol(
        old.client, old.extensions, max_size=max_size, max_fragment_size=max_fragment_size
    )
    new.receive_bytes(bytes(decoder.buffer.buffer))
    ws._proto = new  # pyright: ignore[reportPrivateUsage]
    return new


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
        self._frames = _take_over(ws, max_size=max_size, max_fragment_size=max_fragment_size)
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
        """Feed bytes read from the network; return the events they complete."""
        if self._failed or self._ws.state is ConnectionState.CLOSED:
            return []  # RFC 6455 §5.5.1: nothing after the close frame counts.
        self._ws.receive_data(data if type(data) is bytes else bytes(data))
        events: list[Event] = []
        # Pieces of the message being read that this call read one after the other: reported
        # joined, as one event, once an event of another kind or the call's end comes.
        pieces: list[str | bytes] = []
        for event in self._ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                payload = event.data
                piece: str | bytes = bytes(payload) if isinstance(payload, bytearray) else payload
                if event.message_finished:
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
            if isinstance(event, Ping):
                events.append(PingReceived(bytes(event.payload)))
            elif isinstance(event, Pong):
                events.append(PongReceived(bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                events.append(self._close_event(event))
                break
        if pieces:
            events.append(self._piece(pieces))
        return events

    def _piece(self, pieces: list[str | bytes]) -> FragmentReceived:
        """The pieces of a message that has more to come, as one event."""
        self._in_message = True
        return FragmentReceived(_join(pieces), final=False)

    def _close_event(self, event: CloseConnection) -> CloseReceived | Failed:
        # wsproto reports a frame it cannot parse as a CloseConnection too; only a real close
        # frame moves its state out of OPEN.
        if self._ws.state in (ConnectionState.REMOTE_CLOSING, ConnectionState.CLOSED):
            return CloseReceived(int(event.code), event.reason or "")
        self._failed = True
        code = int(event.code)
        reason = event.reason or "protocol error"
        if code == 1009:
            # Refused by our parser, which says why, or by _deflate while inflating.
            error: WebSocketError | None = self._frames.decoder.too_big
            if error is None:
                assert self._max_size is not None
                error = _too_big(self._max_size, self._max_size)
            return Failed(code, "message too big", error)
        return Failed(code, _close_reason_for(code), ProtocolError(reason))

    def send_message(self, message: str | bytes | bytearray | memoryview) -> bytes:
        """Frame one whole message, in frames of up to ``FRAME_SIZE``."""
        if isinstance(message, str):
            if len(message) <= FRAME_SIZE:
                return self._ws.send(TextMessage(data=message))
        elif isinstance(message, bytes | bytearray | memoryview):  # pyright: ignore[reportUnnecessaryIsInstance]
            if _byte_length(message) <= FRAME_SIZE:
                return self._ws.send(BytesMessage(data=bytes(message)))
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
        if isinstance(fragment, str):
            return self._ws.send(TextMessage(data=fragment, message_finished=final))
        return self._ws.send(BytesMessage(data=bytes(fragment), message_finished=final))

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
