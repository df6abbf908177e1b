"""wsproto's frame protocol, subclassed for one connection: limits at each header, masking in C.

How this works: :func:`take_over` gives a wsproto connection (which only trio_ws holds) a
``_FrameProtocol`` in place of its own, before any frame is read. Its parser (``_FrameDecoder``)
checks ``max_size`` and ``max_fragment_size`` as soon as wsproto has parsed a frame's header and
unmasks with ``_masking``'s C code; its writer masks with it. wsproto still does all parsing and
validation, and its modules are never changed: other wsproto users in the process keep
wsproto's own classes. The rules are in ``_protocol``'s module docstring.
"""

from __future__ import annotations

import math
import os
import struct
from typing import NoReturn

from wsproto.connection import Connection, ConnectionState
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
from .exceptions import PayloadTooBig

__all__ = ["FRAME_COST", "close_received", "take_over", "too_big"]


#: What each frame of a message after its first costs against ``max_size``, in bytes, besides
#: its payload: a message may come in at most ``1 + max_size // FRAME_COST`` frames.
FRAME_COST = 64


def too_big(size: int, max_size: int) -> PayloadTooBig:
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


def take_over(
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
    # wsproto queues events in a deque that only its receive_data(None) and events() use;
    # trio_ws calls neither from now on (Protocol reads the frame protocol directly), and an
    # empty deque costs 760 bytes a connection where an empty list costs 56.
    ws._events = []  # type: ignore[assignment]  # pyright: ignore[reportPrivateUsage, reportAttributeAccessIssue]
    return new


def close_received(ws: Connection) -> None:
    """Move ``ws`` on as wsproto's ``Connection.events()`` does when it reads a close frame.

    ``Protocol`` reads frames from the frame protocol directly; the connection's state must
    still say that the peer's close frame came (CLOSED if ours was out already, else
    REMOTE_CLOSING), so that wsproto lets us answer it and refuses messages after it.
    """
    closed = ws.state is ConnectionState.LOCAL_CLOSING
    ws._state = ConnectionState.CLOSED if closed else ConnectionState.REMOTE_CLOSING  # pyright: ignore[reportPrivateUsage]
