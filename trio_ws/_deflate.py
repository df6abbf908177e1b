"""permessage-deflate (RFC 7692) as a wsproto extension: bounded, and frugal with memory.

wsproto's own extension negotiates and compresses, but it inflates each frame without a limit,
loses track of a fragmented compressed message when a control frame arrives between its
fragments, and gives each connection a 15-bit compression window with zlib's default memory
(about 260 KiB per connection). This subclass keeps wsproto's framing hooks and replaces:

- inflating: never more than ``max_size + 1`` bytes of a message, so a decompression bomb fails
  with 1009 after a bounded amount of work and memory; control frames are passed through.
- negotiation: the client lets the server choose its window (``client_max_window_bits`` with no
  value) and offers to reset its compressor after each message if the server insists; the
  server asks for 12-bit windows both ways.
- deflating: a 12-bit window and memLevel 5 (about 40 KiB), whatever was negotiated: a sender
  may always use a smaller window than the receiver allows.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from wsproto.events import RejectConnection
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits
from wsproto.utilities import RemoteProtocolError

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

__all__ = ["BoundedDeflate"]

#: The largest window trio_ws compresses with, and asks a client to compress with.
WINDOW_BITS = 12
#: zlib's memLevel for our compressor (1-9; zlib's default is 8).
MEM_LEVEL = 5
_OFFER = "client_max_window_bits"
_EMPTY_BLOCK = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1: removed by the sender, restored here

Params = dict[str, str | None]
_TAKEOVER = ("client_no_context_takeover", "server_no_context_takeover")
_PARAMS = frozenset({"client_max_window_bits", "server_max_window_bits", *_TAKEOVER})


def _parse(offer: str) -> Params:
    """The parameters of one offer or answer; ValueError if it breaks RFC 7692 §7.1."""
    params: Params = {}
    for item in offer.split(";")[1:]:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if name not in _PARAMS or name in params:
            raise ValueError(f"unknown or repeated parameter {name!r}")
        params[name] = value.strip().strip('"') if sep else None
    for name in _TAKEOVER:
        if params.get(name, None) is not None:
            raise ValueError(f"{name} takes no value")
    return params


def _window_bits(params: Params, name: str) -> int | None:
    """The value of a window-bits parameter (8 to 15), or None when it is absent or bare."""
    value = params.get(name)
    if value is None:
        return None
    if not value.isdigit() or not 8 <= int(value) <= 15:
        raise ValueError(f"invalid {name}={value}")
    return int(value)


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate whose inflating stops at ``max_size`` (None: no limit)."""

    def __init__(self, max_size: int | None) -> None:
        super().__init__()
        self._max_size = max_size
        self._tx_deflater: zlib._Compress | None = None  # pyright: ignore[reportPrivateUsage]
        self._rx_inflater: zlib._Decompress | None = None  # pyright: ignore[reportPrivateUsage]
        self._rx_control = False  # the frame being read is a control frame
        self._rx_compressed: bool | None = None  # None between messages
        self._rx_size = 0  # bytes inflated so far for the current message

    # -- negotiation -----------------------------------------------------------------------
    # client_max_window_bits and server_max_window_bits hold the windows each side may use;
    # an 8-bit window is inflated with 9 bits (zlib's smallest for deflating too).

    def offer(self) -> str:
        """The client's offers, most preferred first (RFC 7692 §5.1).

        The first lets the server choose the window we compress with. The second adds
        ``client_no_context_takeover``, for a server that will only accept a client that resets
        its compressor after each message. wsproto puts one offer per extension in the header,
        after the extension's name, so the second offer repeats the name.
        """
        return f"{_OFFER}, {self.name}; {_OFFER}; client_no_context_takeover"

    def finalize(self, offer: str) -> None:
        """Take the server's answer to our offer, or fail the handshake if it is invalid."""
        try:
            params = _parse(offer)
            client_bits = _window_bits(params, "client_max_window_bits")
            server_bits = _window_bits(params, "server_max_window_bits")
            if client_bits == 8:
                raise ValueError("zlib cannot deflate within an 8-bit window")
            if any(name in params and params[name] is None for name in _PARAMS - set(_TAKEOVER)):
                raise ValueError("a window-bits answer needs a value")
        except ValueError as exc:
            raise RemoteProtocolError(
                f"invalid permessage-deflate answer {offer!r}: {exc}",
                event_hint=RejectConnection(),
            ) from exc
        self.client_max_window_bits = client_bits or 15
        self.server_max_window_bits = max(server_bits or 15, 9)
        self.client_no_context_takeover = "client_no_context_takeover" in params
        self.server_no_context_takeover = "server_no_context_takeover" in params
        self._enabled = True

    def accept(self, offer: str) -> str | None:
        """The server's answer to one offer; None declines it (RFC 7692 §7.1).

        The first acceptable offer wins. We ask for windows of at most ``WINDOW_BITS``.
        """
        if self._enabled:
            return None
        try:
            params = _parse(offer)
            client_bits = _window_bits(params, "client_max_window_bits")
            server_bits = _window_bits(params, "server_max_window_bits")
        except ValueError:
            return None
        if "server_max_window_bits" in params and server_bits in (None, 8):
            return None  # a bare value is invalid; zlib cannot deflate within 8 bits
        answer = [name for name in _TAKEOVER if name in params]
        server_bits = min(server_bits or 15, WINDOW_BITS)
        answer.append(f"server_max_window_bits={server_bits}")
        if "client_max_window_bits" in params:
            client_bits = min(client_bits or 15, WINDOW_BITS)
            answer.append(f"client_max_window_bits={client_bits}")
        self.client_max_window_bits = max(client_bits or 15, 9)
        self.server_max_window_bits = server_bits
        self.client_no_context_takeover = "client_no_context_takeover" in params
        self.server_no_context_takeover = "server_no_context_takeover" in params
        self._enabled = True
        return "; ".join(answer)

    # -- deflating -------------------------------------------------------------------------

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if opcode.iscontrol():
            return rsv, data
        if opcode is not Opcode.CONTINUATION:
            rsv = RsvBits(True, rsv.rsv2, rsv.rsv3)
        if self._tx_deflater is None:
            allowed = self.client_max_window_bits if proto.client else self.server_max_window_bits
            self._tx_deflater = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION,
                zlib.DEFLATED,
                -min(allowed, WINDOW_BITS),
                MEM_LEVEL,
            )
        # Flushed at every frame, so that each piece of a fragmented message can be inflated
        # as it arrives; the flush's empty block is removed at the end of the message only.
        output = self._tx_deflater.compress(data) + self._tx_deflater.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            output = output[: -len(_EMPTY_BLOCK)]
            no_context_takeover = (
                self.client_no_context_takeover
                if proto.client
                else self.server_no_context_takeover
            )
            if no_context_takeover:
                self._tx_deflater = None
        return rsv, output

    # -- inflating -------------------------------------------------------------------------

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol() or opcode is Opcode.CONTINUATION:
            # RFC 7692 §6.1: RSV1 is set on the first frame of a message only.
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self._rx_control = opcode.iscontrol()
            return RsvBits(False, False, False)
        self._rx_control = False
        self._rx_compressed = rsv.rsv1
        self._rx_size = 0
        if rsv.rsv1 and self._rx_inflater is None:
            bits = self.server_max_window_bits if proto.client else self.client_max_window_bits
            self._rx_inflater = zlib.decompressobj(-bits)
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if self._rx_control or not self._rx_compressed:
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if self._rx_control or not fin:
            return None
        compressed, self._rx_compressed = self._rx_compressed, None
        if not compressed:
            return None
        result = self._inflate(_EMPTY_BLOCK)
        no_context_takeover = (
            self.server_no_context_takeover if proto.client else self.client_no_context_takeover
        )
        if no_context_takeover:
            self._rx_inflater = None
        return result

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._rx_inflater is not None
        try:
            if self._max_size is None:
                return self._rx_inflater.decompress(data)
            # Inflate one byte past the budget at most: enough to know it is exceeded.
            budget = self._max_size - self._rx_size + 1
            output = self._rx_inflater.decompress(data, budget)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._rx_size += len(output)
        if self._rx_size > self._max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return output
