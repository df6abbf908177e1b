"""trio_ws._masking: the compiled masker gives the bytes wsproto's own masker gives."""

from __future__ import annotations

import importlib.util
import itertools
import os

import pytest
from wsproto import frame_protocol

from trio_ws import _masking


def wsprotos_own_masker() -> type:
    """wsproto's pure-Python XorMaskerSimple, from a fresh copy of its module."""
    spec = importlib.util.find_spec("wsproto.frame_protocol")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    masker: type = module.XorMaskerSimple
    assert masker is not frame_protocol.XorMaskerSimple
    return masker


def compiled_masker() -> type[_masking.Masker]:
    assert _masking.COMPILED_MASKER is not None
    return _masking.COMPILED_MASKER


def test_the_extension_is_built_and_installed_in_wsproto() -> None:
    """The README's and CI's installs build the extension; importing trio_ws installs it."""
    assert _masking.COMPILED_MASKER is not None
    assert frame_protocol.XorMaskerSimple is _masking.COMPILED_MASKER


@pytest.mark.parametrize("size", [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 125, 4096, 65_537])
@pytest.mark.parametrize("parts", [1, 3])
def test_compiled_masker_matches_wsprotos_for_payloads_in_parts(size: int, parts: int) -> None:
    """Any payload length, split into parts of any length (the key carries on across them),
    masks to the same bytes as wsproto's masker; masking twice gives the payload back."""
    key, payload = os.urandom(4), os.urandom(size)
    cuts = [size * index // parts for index in range(parts + 1)]
    pieces = [payload[start:end] for start, end in itertools.pairwise(cuts)]
    ours, theirs = compiled_masker()(key), wsprotos_own_masker()(bytearray(key))
    masked = b"".join(ours.process(piece) for piece in pieces)
    assert masked == b"".join(theirs.process(bytearray(piece)) for piece in pieces)
    assert compiled_masker()(key).process(masked) == payload


def test_compiled_masker_takes_any_bytes_like_and_returns_a_bytearray() -> None:
    """wsproto passes bytearrays; bytes and memoryviews work too."""
    key = b"\x01\x02\x03\x04"
    for payload in (b"\x00" * 6, bytearray(6), memoryview(b"\x00" * 6)):
        masked = compiled_masker()(key).process(payload)  # type: ignore[arg-type]
        assert masked == bytearray(b"\x01\x02\x03\x04\x01\x02")
        assert type(masked) is bytearray


def test_a_key_that_is_not_4_bytes_raises_value_error() -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        compiled_masker()(b"\x01\x02").process(b"data")
