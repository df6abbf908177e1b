"""Frame masking in C for wsproto, when trio_ws was built with its extension.

wsproto masks and unmasks payloads (RFC 6455 §5.3) in pure Python, about 0.8 ms per MiB on
each side; ``trio_ws._speedups`` does it in about 0.04 ms. wsproto creates its maskers by the
name ``wsproto.frame_protocol.XorMaskerSimple``, so ``install()`` puts ours under that name.
That changes wsproto for the whole process, other wsproto users included, but only its speed:
both produce the same bytes (tests/test_masking.py).
"""

from __future__ import annotations

from typing import Protocol

from wsproto import frame_protocol

__all__ = ["COMPILED_MASKER", "Masker", "install"]


class Masker(Protocol):
    """wsproto's masker interface: masks a payload arriving in any number of parts."""

    def __init__(self, masking_key: bytes | bytearray) -> None: ...

    def process(self, data: bytes | bytearray) -> bytearray: ...


def _compiled_masker() -> type[Masker] | None:
    try:
        from ._speedups import mask
    except ImportError:  # built without a C compiler: wsproto's own masker stays
        return None

    class CompiledMasker:
        __slots__ = ("_key", "_offset")

        def __init__(self, masking_key: bytes | bytearray) -> None:
            self._key = bytes(masking_key)
            self._offset = 0  # where in the key the next part starts

        def process(self, data: bytes | bytearray) -> bytearray:
            masked = mask(data, self._key, self._offset)
            self._offset = (self._offset + len(data)) & 3
            return masked

    return CompiledMasker


#: The masker in C, or None when the extension was not built.
COMPILED_MASKER = _compiled_masker()


def install() -> None:
    """Make wsproto mask with ``COMPILED_MASKER``, if the extension was built."""
    if COMPILED_MASKER is not None:
        setattr(frame_protocol, "XorMaskerSimple", COMPILED_MASKER)  # noqa: B010
