"""permessage-deflate negotiation and compression (trio_ws._deflate): offers in, answers out."""

from __future__ import annotations

import random
import tracemalloc
import zlib

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode, RsvBits
from wsproto.utilities import RemoteProtocolError

from trio_ws._deflate import WINDOW_BITS, BoundedDeflate


def accept(offer: str) -> tuple[BoundedDeflate, str | None]:
    extension = BoundedDeflate(max_size=None)
    return extension, extension.accept(offer)


def test_client_offer_lets_the_server_choose_the_client_window() -> None:
    """The client offers client_max_window_bits without a value (RFC 7692 §7.1.2.2), then the
    same with client_no_context_takeover, for servers that require it (RFC 7692 §7.1.1.2)."""
    extension = BoundedDeflate(None)
    header = f"{extension.name}; {extension.offer()}"
    assert header == (
        "permessage-deflate; client_max_window_bits, "
        "permessage-deflate; client_max_window_bits; client_no_context_takeover"
    )


@pytest.mark.parametrize(
    ("offer", "answer", "client_bits", "server_bits"),
    [
        ("permessage-deflate", "server_max_window_bits=12", 15, 12),
        (
            "permessage-deflate; client_max_window_bits",
            "server_max_window_bits=12; client_max_window_bits=12",
            12,
            12,
        ),
        (
            "permessage-deflate; client_max_window_bits=10; server_max_window_bits=11",
            "server_max_window_bits=11; client_max_window_bits=10",
            10,
            11,
        ),
        (
            "permessage-deflate; client_max_window_bits=15; server_max_window_bits=15",
            "server_max_window_bits=12; client_max_window_bits=12",
            12,
            12,
        ),
        (
            "permessage-deflate; client_max_window_bits=8",
            "server_max_window_bits=12; client_max_window_bits=8",
            9,  # inflated with 9 bits, zlib's smallest raw window for deflating
            12,
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "client_no_context_takeover; server_no_context_takeover; server_max_window_bits=12",
            15,
            12,
        ),
    ],
)
def test_server_answers_with_windows_of_at_most_12_bits(
    offer: str, answer: str, client_bits: int, server_bits: int
) -> None:
    """The server never asks for more than the client offered, and at most 12-bit windows."""
    extension, result = accept(offer)
    assert result == answer
    assert extension.enabled()
    assert (extension.client_max_window_bits, extension.server_max_window_bits) == (
        client_bits,
        server_bits,
    )
    assert extension.client_no_context_takeover == ("client_no_context_takeover" in offer)
    assert extension.server_no_context_takeover == ("server_no_context_takeover" in offer)


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=ten",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; mystery_parameter",
        "permessage-deflate; client_max_window_bits; client_max_window_bits",
    ],
)
def test_server_declines_an_offer_it_cannot_honour(offer: str) -> None:
    """An invalid or unknown parameter declines that offer (RFC 7692 §5, §7.1)."""
    extension, result = accept(offer)
    assert result is None
    assert not extension.enabled()


def test_server_takes_the_first_acceptable_offer() -> None:
    """With several offers, the first one the server can accept decides the parameters."""
    extension = BoundedDeflate(None)
    assert extension.accept("permessage-deflate; mystery") is None
    first = extension.accept("permessage-deflate; client_max_window_bits=10")
    assert first == "server_max_window_bits=12; client_max_window_bits=10"
    assert extension.accept("permessage-deflate; client_max_window_bits=11") is None
    assert extension.client_max_window_bits == 10


@pytest.mark.parametrize(
    ("answer", "client_bits", "server_bits", "client_nct", "server_nct"),
    [
        ("permessage-deflate", 15, 15, False, False),
        ("permessage-deflate; server_max_window_bits=12", 15, 12, False, False),
        ("permessage-deflate; client_max_window_bits=10", 10, 15, False, False),
        ("permessage-deflate; server_max_window_bits=8", 15, 9, False, False),
        ("permessage-deflate; server_no_context_takeover", 15, 15, False, True),
        ("permessage-deflate; client_no_context_takeover", 15, 15, True, False),
    ],
)
def test_client_takes_the_servers_answer(
    answer: str, client_bits: int, server_bits: int, client_nct: bool, server_nct: bool
) -> None:
    """The client compresses and inflates within what the server answered."""
    extension = BoundedDeflate(None)
    extension.finalize(answer)
    assert extension.enabled()
    assert extension.client_max_window_bits == client_bits
    assert extension.server_max_window_bits == server_bits
    assert extension.client_no_context_takeover is client_nct
    assert extension.server_no_context_takeover is server_nct


@pytest.mark.parametrize(
    "answer",
    [
        "permessage-deflate; client_max_window_bits=8",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; unknown",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    ],
)
def test_client_fails_the_handshake_on_an_answer_it_cannot_honour(answer: str) -> None:
    """An invalid answer fails the opening handshake (RFC 7692 §5: _Fail the WebSocket
    Connection_), surfacing as InvalidHandshake."""
    with pytest.raises(RemoteProtocolError, match="invalid permessage-deflate answer"):
        BoundedDeflate(None).finalize(answer)


def _deflate_one(extension: BoundedDeflate, client: bool, data: bytes) -> tuple[RsvBits, bytes]:
    proto = FrameProtocol(client=client, extensions=[])
    return extension.frame_outbound(proto, Opcode.BINARY, RsvBits(False, False, False), data, True)


@pytest.mark.parametrize("client", [True, False])
def test_compressed_output_inflates_within_a_12_bit_window(client: bool) -> None:
    """Whatever was negotiated (15 bits here), we deflate within 2**12 bytes of history, so a
    peer inflating with a 12-bit window decodes it."""
    extension, _ = accept("permessage-deflate; client_max_window_bits=15")
    extension.client_max_window_bits = extension.server_max_window_bits = 15
    data = bytes(range(256)) * 64
    rsv, payload = _deflate_one(extension, client, data)
    assert rsv.rsv1
    inflater = zlib.decompressobj(-WINDOW_BITS)
    assert inflater.decompress(payload + b"\x00\x00\xff\xff") == data


def test_compressor_costs_under_64_kib() -> None:
    """One connection's compressor takes tens of KiB, not wsproto's ~260 KiB."""
    extension, _ = accept("permessage-deflate")
    tracemalloc.start()
    try:
        _deflate_one(extension, False, b"hello" * 100)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 64 * 1024


def inflate_within(payload: bytes, bits: int) -> bytes:
    """Inflate one message's payload with a fresh ``bits``-bit window, 64 bytes per call, so
    that zlib checks every back-reference against the window (it does not within one call)."""
    inflater = zlib.decompressobj(-bits)
    data, output = payload + b"\x00\x00\xff\xff", b""
    while data:
        output += inflater.decompress(data, 64)
        data = inflater.unconsumed_tail
    return output


def negotiated(client: bool, answer: str) -> BoundedDeflate:
    """Our extension on the client (taking ``answer``) or the server (accepting it as an offer)."""
    if client:
        extension = BoundedDeflate(None)
        extension.finalize(answer)
        return extension
    extension, result = accept(answer)
    assert result is not None
    return extension


@pytest.mark.parametrize("client", [True, False], ids=["client", "server"])
@pytest.mark.parametrize("takeover", [True, False], ids=["context-takeover", "no-takeover"])
def test_no_context_takeover_resets_our_compressor_after_each_message(
    client: bool, takeover: bool
) -> None:
    """With {client,server}_no_context_takeover negotiated for our side, each message is
    compressed on its own: the same message twice gives the same payload, which a fresh
    inflater decodes. Without it, the second refers back to the first and is much smaller."""
    name = "client_no_context_takeover" if client else "server_no_context_takeover"
    extension = negotiated(
        client, "permessage-deflate" if takeover else f"permessage-deflate; {name}"
    )
    message = random.Random(0).randbytes(1000)
    [(_, first), (_, second)] = [_deflate_one(extension, client, message) for _ in range(2)]
    assert inflate_within(first, 15) == message
    if takeover:
        assert len(second) < len(first) // 10
        with pytest.raises(zlib.error, match="too far back"):
            inflate_within(second, 15)
    else:
        assert second == first


@pytest.mark.parametrize(
    ("client", "answer"),
    [
        (True, "permessage-deflate; client_max_window_bits=9"),
        (False, "permessage-deflate; server_max_window_bits=9"),
    ],
    ids=["client", "server"],
)
def test_compressor_keeps_to_a_window_smaller_than_12_bits(client: bool, answer: str) -> None:
    """A peer that asked for a 9-bit window gets output a 9-bit inflater decodes, even for
    data repeating at a distance of 2 KiB that a 12-bit window would refer back to."""
    extension = negotiated(client, answer)
    block = random.Random(1).randbytes(2048)
    rsv, payload = _deflate_one(extension, client, block * 2)
    assert rsv.rsv1
    assert inflate_within(payload, 9) == block * 2
