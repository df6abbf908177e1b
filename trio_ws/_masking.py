"""Frame masking (RFC 6455 §5.3) in C, when trio_ws was built with its extension.

wsproto masks and unmasks payloads in pure Python, about 0.8 ms per MiB on each side;
``trio_ws._speedups`` does it in about 0.04 ms. trio_ws uses it for its own connections only:
``_protocol`` gives each of them a frame writer and a frame parser (subclasses of wsproto's) that
mask with :data:`mask` and unmask with :class:`CompiledMasker`. wsproto's modules are left as
they are, so any other wsproto user in the process keeps wsproto's own masker. Without the
extension, :data:`mask` and :data:`COMPILED_MASKER` are None, :data:`import_error` says why, and
wsproto's masker does the work; :mod:`trio_ws.speedups` tells users which case they are in.
"""

from __future__ import annotations

from collections.abc import Callable

from wsproto.frame_protocol import XorMaskerSimple

__all__ = ["COMPILED_MASKER", "CompiledMasker", "import_error", "mask"]

Buffer = bytes | bytearray | memoryview
Mask = Callable[[Buffer, bytes | bytearray, int], bytearray]
MaskBytes = Callable[[Buffer, bytes | bytearray, int], bytes]


def _load() -> tuple[Mask, MaskBytes, None] | tuple[None, None, ImportError]:
    try:
        from ._speedups import mask, mask_bytes
    except ImportError as exc:  # not built (no C compiler, a source tree): wsproto's masker stays
        return None, None, exc.with_traceback(None)  # the message is all trio_ws.speedups needs
    return mask, mask_bytes, None


#: ``mask(data, key, offset)`` in C: data XOR the 4-byte key, starting at ``key[offset % 4]``,
#: as a bytearray; None when the extension was not built.
mask: Mask | None
_mask_bytes: MaskBytes | None
#: Why ``trio_ws._speedups`` did not import; None when it did.
import_error: ImportError | None
mask, _mask_bytes, import_error = _load()


class CompiledMasker(XorMaskerSimple):
    """wsproto's masker interface, in C: masks a payload arriving in any number of parts.

    A subclass only so that it may stand where wsproto expects its own masker; it shares no
    state with it. Use it only when :data:`mask` is not None.
    """

    __slots__ = ("_key", "_offset")

    def __init__(self, masking_key: bytes | bytearray) -> None:
        self.restart(masking_key)

    def restart(self, masking_key: bytes | bytearray) -> None:
        """Start again with a new key, for a new frame."""
        self._key = masking_key
        self._offset = 0  # where in the key the next part starts

    def process(self, data: bytes | bytearray) -> bytes:  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        """The part masked, as bytes: wsproto makes bytes of what its masker returns, and
        bytes it keeps as they are, where a bytearray it would copy."""
        assert _mask_bytes is not None
        masked = _mask_bytes(data, self._key, self._offset)
        self._offset = (self._offset + len(data)) & 3
        return masked


#: The masker in C, or None when the extension was not built.
COMPILED_MASKER: type[CompiledMasker] | None = CompiledMasker if mask is not None else None
