"""trio_ws._masking: the compiled masker gives the bytes wsproto's own masker gives, and trio_ws
uses it for its own connections without changing wsproto for anyone else."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from types import ModuleType

import pytest
from wsproto import frame_protocol
from wsproto.connection import Connection
from wsproto.events import BytesMessage

from tests.test_connection import open_wsproto
from trio_ws import _masking
from trio_ws._protocol import FragmentReceived, MessageReceived, Protocol

needs_extension = pytest.mark.skipif(
    _masking.COMPILED_MASKER is None, reason="trio_ws._speedups (the C extension) was not built"
)


def fresh_frame_protocol() -> ModuleType:
    """A fresh copy of wsproto.frame_protocol, as wsproto defines it."""
    spec = importlib.util.find_spec("wsproto.frame_protocol")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wsprotos_own_masker() -> type:
    """wsproto's pure-Python XorMaskerSimple, from a fresh copy of its module."""
    masker: type = fresh_frame_protocol().XorMaskerSimple
    return masker


def compiled_masker() -> type[_masking.CompiledMasker]:
    assert _masking.COMPILED_MASKER is not None
    return _masking.COMPILED_MASKER


def open_pair() -> tuple[Connection, Connection]:
    """A client and a server wsproto connection, both open, as a plain wsproto user has."""
    client, server = open_wsproto()
    assert client.connection is not None and server.connection is not None
    return client.connection, server.connection


# -- wsproto is left alone -----------------------------------------------------------------


def test_importing_trio_ws_changes_nothing_in_wsprotos_modules() -> None:
    """In a fresh interpreter: wsproto's modules, and the classes in them, are the same objects
    with the same attributes before and after importing trio_ws and opening a Protocol."""
    script = textwrap.dedent(
        """
        import wsproto.connection, wsproto.frame_protocol, wsproto.extensions

        modules = [wsproto.connection, wsproto.frame_protocol, wsproto.extensions]

        def snapshot():
            state = {}
            for module in modules:
                for name, value in vars(module).items():
                    state[module.__name__, name] = value
                    if isinstance(value, type):
                        state[module.__name__, name, "dict"] = dict(vars(value))
            return state

        before = snapshot()
        import trio_ws
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, BytesMessage, Request
        from trio_ws._protocol import Protocol

        client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
        server.receive_data(client.send(Request(host="example.com", target="/")))
        next(server.events())
        client.receive_data(server.send(AcceptConnection()))
        next(client.events())
        ours = Protocol(client.connection, max_size=None)
        theirs = Protocol(server.connection, max_size=None)
        assert theirs.receive_data(ours.send_message(b"x" * 1000))
        after = snapshot()
        assert before.keys() == after.keys(), before.keys() ^ after.keys()
        changed = [key for key in before if before[key] is not after[key]
                   and before[key] != after[key]]
        assert not changed, changed
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


@pytest.fixture
def wsproto_masked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The length of every payload part masked or unmasked during the test by the masker
    wsproto makes by its own name, ``wsproto.frame_protocol.XorMaskerSimple``."""
    masked: list[int] = []
    original = frame_protocol.XorMaskerSimple

    class Recorded(original):  # type: ignore[valid-type,misc]
        def process(self, data: bytearray) -> bytearray:
            masked.append(len(data))
            result: bytearray = super().process(data)
            return result

    monkeypatch.setattr(frame_protocol, "XorMaskerSimple", Recorded)
    yield masked


def test_other_wsproto_users_in_the_process_mask_with_wsprotos_masker(
    wsproto_masked: list[int],
) -> None:
    """A wsproto connection that is not a trio_ws Protocol's masks and unmasks with whatever
    ``wsproto.frame_protocol.XorMaskerSimple`` is (recorded here), after trio_ws was imported
    and while trio_ws connections exist in the same process."""
    ours_client, ours_server = open_pair()
    Protocol(ours_client, max_size=None), Protocol(ours_server, max_size=None)
    client, server = open_pair()
    server.receive_data(client.send(BytesMessage(data=b"payload")))
    assert list(server.events()) == [BytesMessage(data=b"payload")]
    assert wsproto_masked == [7, 7]  # the client masks, the server unmasks


@needs_extension
def test_trio_ws_connections_mask_in_c_on_both_sides(wsproto_masked: list[int]) -> None:
    """With the extension built, a Protocol masks what it sends as a client and unmasks what
    it receives as a server without wsproto's masker."""
    client, server = open_pair()
    ours_client, ours_server = Protocol(client, max_size=None), Protocol(server, max_size=None)
    data = ours_client.send_message(b"x" * 1000) + ours_client.send_fragment(b"y", final=True)
    assert ours_server.receive_data(data) == [
        MessageReceived(b"x" * 1000),
        MessageReceived(b"y"),
    ]
    assert wsproto_masked == []


def test_without_the_extension_wsprotos_masker_does_the_work(
    monkeypatch: pytest.MonkeyPatch, wsproto_masked: list[int]
) -> None:
    """Built without a C compiler, a Protocol masks and unmasks with wsproto's own masker."""
    monkeypatch.setattr(_masking, "mask", None)
    monkeypatch.setattr(_masking, "COMPILED_MASKER", None)
    client, server = open_pair()
    ours_client, ours_server = Protocol(client, max_size=None), Protocol(server, max_size=None)
    data = ours_client.send_message(b"x" * 1000)
    assert ours_server.receive_data(data) == [MessageReceived(b"x" * 1000)]
    assert wsproto_masked == [1000, 1000]


# -- our masking gives wsproto's bytes -----------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 125, 126, 4096, 65_536])
def test_frames_a_trio_ws_client_masks_unmask_with_wsprotos_masker(size: int) -> None:
    """A frame our client sends, read by a plain wsproto server (wsproto's own masker), gives
    back the payload, for any length: each length encoding, and partial 8-byte words."""
    client, server = open_pair()
    payload = os.urandom(size)
    server.receive_data(Protocol(client, max_size=None).send_fragment(payload, final=True))
    assert list(server.events()) == [BytesMessage(data=payload)]


@pytest.mark.parametrize("size", [1, 9, 130, 70_000])
def test_frames_a_trio_ws_server_unmasks_give_the_payload_for_any_split(size: int) -> None:
    """A frame a plain wsproto client masks, fed to our server split at any point (the key
    carries on across the pieces), gives back the payload."""
    payload = os.urandom(size)
    client, _ = open_pair()
    data = client.send(BytesMessage(data=payload))
    step = 1 if size < 200 else 997
    for cut in range(0, len(data), step):
        _, server = open_pair()
        protocol = Protocol(server, max_size=None)
        events = protocol.receive_data(data[:cut]) + protocol.receive_data(data[cut:])
        pieces = [e.data for e in events if isinstance(e, MessageReceived | FragmentReceived)]
        assert b"".join(pieces) == payload  # type: ignore[arg-type]


@needs_extension
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


@needs_extension
def test_compiled_masker_takes_any_bytes_like_and_returns_bytes() -> None:
    """wsproto passes bytearrays; bytes and memoryviews work too. It returns bytes, which
    wsproto keeps as they are (it would copy a bytearray into bytes)."""
    key = b"\x01\x02\x03\x04"
    for payload in (b"\x00" * 6, bytearray(6), memoryview(b"\x00" * 6)):
        masked = compiled_masker()(key).process(payload)  # type: ignore[arg-type]
        assert masked == b"\x01\x02\x03\x04\x01\x02"
        assert type(masked) is bytes


@needs_extension
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4, 7])
def test_mask_starts_at_the_offset_in_the_key(offset: int) -> None:
    """mask() (for frames going out) starts at ``key[offset % 4]`` and returns a bytearray."""
    assert _masking.mask is not None
    key = b"\x01\x02\x03\x04"
    masked = _masking.mask(b"\x00" * 9, key, offset)
    assert masked == bytearray((key * 4)[offset % 4 :][:9])
    assert type(masked) is bytearray


@needs_extension
def test_a_key_that_is_not_4_bytes_raises_value_error() -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        compiled_masker()(b"\x01\x02").process(b"data")
