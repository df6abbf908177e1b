"""trio_ws._protocol: bytes in, events out, with no I/O.

Each test opens a wsproto connection on both ends in memory, wraps ours in a Protocol and plays
the peer with wsproto itself or with frames built byte by byte.
"""

from __future__ import annotations

import random
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.events import Event as WSEvent
from wsproto.extensions import Extension, PerMessageDeflate

from trio_ws._deflate import BoundedDeflate
from trio_ws._protocol import (
    FRAME_COST,
    FRAME_SIZE,
    CloseReceived,
    Event,
    Failed,
    FragmentReceived,
    MessageReceived,
    PingReceived,
    PongReceived,
    Protocol,
)
from trio_ws.exceptions import PayloadTooBig, ProtocolError

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MiB = 2**20
MASKING_KEY = b"\x5a\xc3\x0f\x96"


class JoiningProtocol(Protocol):
    """Our Protocol, with the pieces of each message joined into one event, as recv() does."""

    def __init__(
        self, ws: Connection, *, max_size: int | None, max_fragment_size: int | None = None
    ) -> None:
        super().__init__(ws, max_size=max_size, max_fragment_size=max_fragment_size)
        self.pieces: list[str | bytes] = []

    def receive_data(self, data: bytes | bytearray) -> list[Event]:
        events: list[Event] = []
        for event in super().receive_data(data):
            if not isinstance(event, FragmentReceived):
                events.append(event)
                continue
            self.pieces.append(event.data)
            if event.final:
                pieces, self.pieces = self.pieces, []
                if isinstance(pieces[0], str):
                    events.append(MessageReceived("".join(pieces)))  # type: ignore[arg-type]
                else:
                    events.append(MessageReceived(b"".join(pieces)))  # type: ignore[arg-type]
        return events


def open_protocol(
    side: str,
    *,
    max_size: int | None = MiB,
    max_fragment_size: int | None = None,
    compression: bool = False,
    peer_extension: Extension | None = None,
    joined: bool = True,
) -> tuple[Protocol, WSConnection]:
    """Our Protocol on ``side`` and the wsproto connection playing the peer, both open.

    With ``joined``, the pieces of a message that arrives in pieces come as one event.
    """
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    ours: list[Extension] = [BoundedDeflate(max_size)] if compression else []
    peers: list[Extension] = []
    if compression:
        peers = [peer_extension or PerMessageDeflate()]
    client_extensions, server_extensions = (ours, peers) if side == "client" else (peers, ours)
    server.receive_data(
        client.send(Request(host="example.com", target="/", extensions=client_extensions))
    )
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection(extensions=server_extensions)))
    accepted = next(client.events())
    assert isinstance(accepted, AcceptConnection)
    assert bool(accepted.extensions) is compression
    ws, peer = (client, server) if side == "client" else (server, client)
    protocol_type = JoiningProtocol if joined else Protocol
    assert ws.connection is not None
    return protocol_type(
        ws.connection, max_size=max_size, max_fragment_size=max_fragment_size
    ), peer


def header(
    side: str,
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    masked: bool | None = None,
) -> bytes:
    """The header of a frame from the peer of ``side`` announcing ``length`` payload bytes,
    masking key included (masked when the peer is a client)."""
    if masked is None:
        masked = side == "server"
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 2**16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    return head + MASKING_KEY if masked else head


def frame(
    side: str,
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    masked: bool | None = None,
) -> bytes:
    """One frame from the peer of ``side``, built by hand: masked when the peer is a client."""
    if masked is None:
        masked = side == "server"
    head = header(side, opcode, len(payload), fin=fin, rsv1=rsv1, rsv2=rsv2, masked=masked)
    if not masked:
        return head + payload
    length = len(payload)
    keystream = (MASKING_KEY * (length // 4 + 1))[:length]
    masked_payload = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(
        length, "big"
    )
    return head + masked_payload


def peer_events(peer: WSConnection, data: bytes) -> list[WSEvent]:
    """What the peer makes of bytes we sent."""
    peer.receive_data(data)
    return list(peer.events())


def feed_in_chunks(protocol: Protocol, data: bytes, size: int) -> Iterator[list[Event]]:
    for start in range(0, len(data), size):
        yield protocol.receive_data(data[start : start + size])


def deflate_fragments(*parts: bytes) -> list[bytes]:
    """The payloads of a message compressed as RFC 7692 §7.2.1 says, one per fragment."""
    compressor = zlib.compressobj(wbits=-15)
    payloads = [compressor.compress(part) + compressor.flush(zlib.Z_SYNC_FLUSH) for part in parts]
    assert payloads[-1].endswith(b"\x00\x00\xff\xff")
    payloads[-1] = payloads[-1][:-4]
    return payloads


# -- messages ------------------------------------------------------------------------------


def test_text_and_binary_messages_arrive_as_str_and_bytes(side: str) -> None:
    """A text frame gives str, a binary frame bytes, each as one MessageReceived."""
    protocol, peer = open_protocol(side)
    data = peer.send(TextMessage(data="héllo")) + peer.send(BytesMessage(data=b"\x00\xff"))
    events = protocol.receive_data(data)
    assert events == [MessageReceived("héllo"), MessageReceived(b"\x00\xff")]
    assert type(events[1].data) is bytes  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("parts", "whole"),
    [(["ab", "cd", "ef"], "abcdef"), ([b"\x01", b"", b"\x02\x03"], b"\x01\x02\x03")],
    ids=["text", "binary"],
)
def test_fragments_are_joined_into_one_message(
    side: str, parts: list[str] | list[bytes], whole: str | bytes
) -> None:
    """No event until the final fragment; then one message holding every fragment, in order."""
    protocol, peer = open_protocol(side)
    for part in parts[:-1]:
        event = (
            TextMessage(data=part, message_finished=False)
            if isinstance(part, str)
            else BytesMessage(data=part, message_finished=False)
        )
        assert protocol.receive_data(peer.send(event)) == []
    last = parts[-1]
    final = TextMessage(data=last) if isinstance(last, str) else BytesMessage(data=last)
    assert protocol.receive_data(peer.send(final)) == [MessageReceived(whole)]


def test_character_split_between_fragments_is_decoded(side: str) -> None:
    """UTF-8 is decoded across fragment boundaries: a 2-byte character may straddle them."""
    protocol, _ = open_protocol(side)
    data = frame(side, TEXT, b"a\xc3", fin=False) + frame(side, CONTINUATION, b"\xa9b")
    assert protocol.receive_data(data) == [MessageReceived("aéb")]


def test_message_fed_one_byte_at_a_time_arrives_once(side: str) -> None:
    """Partial frames yield nothing; the message comes out once, with the last byte."""
    protocol, peer = open_protocol(side)
    data = peer.send(TextMessage(data="x" * 300))
    results = [protocol.receive_data(data[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [[]] * (len(data) - 1)
    assert results[-1] == [MessageReceived("x" * 300)]


def test_messages_in_one_chunk_arrive_in_order(side: str) -> None:
    """Every message a chunk completes is returned, in the order sent."""
    protocol, peer = open_protocol(side)
    data = b"".join(peer.send(BytesMessage(data=bytes([i]))) for i in range(5))
    assert protocol.receive_data(data) == [MessageReceived(bytes([i])) for i in range(5)]


# -- max_size ------------------------------------------------------------------------------


def test_message_of_exactly_max_size_is_accepted(side: str) -> None:
    """max_size is inclusive, whole or in fragments."""
    protocol, peer = open_protocol(side, max_size=1000)
    data = peer.send(BytesMessage(data=b"x" * 1000))
    data += peer.send(BytesMessage(data=b"y" * 600, message_finished=False))
    data += peer.send(BytesMessage(data=b"y" * 400))
    assert protocol.receive_data(data) == [
        MessageReceived(b"x" * 1000),
        MessageReceived(b"y" * 1000),
    ]


def test_max_size_counts_all_fragments_of_a_message(side: str) -> None:
    """Fragments each under max_size fail the message once their total passes it."""
    protocol, peer = open_protocol(side, max_size=1000)
    assert protocol.receive_data(peer.send(BytesMessage(b"a" * 400, message_finished=False))) == []
    assert protocol.receive_data(peer.send(BytesMessage(b"a" * 400, message_finished=False))) == []
    [event] = protocol.receive_data(peer.send(BytesMessage(b"a" * 300)))
    assert isinstance(event, Failed)
    assert event.code == 1009
    assert isinstance(event.error, PayloadTooBig)
    assert "max_size=1,000" in str(event.error)
    assert not protocol.can_send_data


def test_max_size_counts_text_in_utf8_bytes(side: str) -> None:
    """Text is measured in UTF-8 bytes, not characters: 6 characters can be 11 bytes."""
    protocol, peer = open_protocol(side, max_size=10)
    assert protocol.receive_data(peer.send(TextMessage("é" * 5))) == [MessageReceived("é" * 5)]
    [event] = protocol.receive_data(peer.send(TextMessage("é" * 5 + "a")))
    assert isinstance(event, Failed)
    assert event.code == 1009


def test_size_count_restarts_with_each_message(side: str) -> None:
    """max_size bounds each message, not the connection: many full-size messages pass."""
    protocol, peer = open_protocol(side, max_size=100)
    for _ in range(5):
        data = peer.send(BytesMessage(b"z" * 60, message_finished=False))
        data += peer.send(BytesMessage(b"z" * 40))
        assert protocol.receive_data(data) == [MessageReceived(b"z" * 100)]


def test_oversized_message_fails_before_it_is_all_received(side: str) -> None:
    """A frame announcing 10 MB fails with the first read, which holds its header."""
    protocol, _ = open_protocol(side, max_size=1000)
    data = frame(side, BINARY, b"\x00" * 10**7)
    fed = 0
    for events in feed_in_chunks(protocol, data, 100):
        fed += 100
        if events:
            break
    assert fed == 100
    [event] = events
    assert isinstance(event, Failed)
    assert event.code == 1009


def test_nothing_is_reported_after_a_failure(side: str) -> None:
    """Failed is the last event: later bytes, even a valid message, are ignored."""
    protocol, peer = open_protocol(side, max_size=10)
    [event] = protocol.receive_data(peer.send(BytesMessage(b"x" * 11)))
    assert isinstance(event, Failed)
    assert protocol.receive_data(frame(side, TEXT, b"late")) == []


def test_no_limit_when_max_size_is_none(side: str) -> None:
    """max_size=None accepts a message of any size."""
    protocol, peer = open_protocol(side, max_size=None)
    assert protocol.receive_data(peer.send(BytesMessage(b"x" * 3 * MiB))) == [
        MessageReceived(b"x" * 3 * MiB)
    ]


def only_too_big(events: list[Event]) -> PayloadTooBig:
    """The one event: a Failed with 1009 and a PayloadTooBig, which it returns."""
    [event] = events
    assert isinstance(event, Failed)
    assert event.code == 1009
    assert isinstance(event.error, PayloadTooBig)
    return event.error


# -- limits checked from the frame header --------------------------------------------------


def test_header_announcing_2_gib_fails_before_any_payload(side: str) -> None:
    """After the handshake, the peer sends only the header of a binary frame announcing 2 GiB
    (14 bytes from a client): 1009 at once, not a wait for a payload that never comes."""
    protocol, _ = open_protocol(side)
    data = header(side, BINARY, 2**31)
    assert len(data) == (14 if side == "server" else 10)
    error = only_too_big(protocol.receive_data(data))
    assert str(error) == "message of 2,147,483,648 bytes exceeds max_size=1,048,576"
    assert not protocol.can_send_data
    assert protocol.receive_data(b"\x00" * 100) == []


@pytest.mark.parametrize(("length", "refused"), [(125, False), (126, True), (2**16, True)])
def test_header_is_checked_against_max_size_inclusively(
    side: str, length: int, refused: bool
) -> None:
    """A header announcing max_size waits for its payload; one byte more fails at once, in
    each length encoding (7, 16 and 64 bits)."""
    protocol, _ = open_protocol(side, max_size=125)
    events = protocol.receive_data(header(side, TEXT, length))
    if refused:
        only_too_big(events)
    else:
        assert events == []


def test_header_fed_byte_by_byte_fails_once_it_is_whole(side: str) -> None:
    """wsproto parses the header, masking key included; the check follows its last byte."""
    protocol, _ = open_protocol(side, max_size=1000)
    data = header(side, BINARY, 2**20)
    for index in range(len(data) - 1):
        assert protocol.receive_data(data[index : index + 1]) == []
    only_too_big(protocol.receive_data(data[-1:]))


@pytest.mark.parametrize(("length", "refused"), [(200, False), (201, True)])
def test_header_of_a_fragment_is_checked_with_the_message_so_far(
    side: str, length: int, refused: bool
) -> None:
    """800 bytes of a message received, then a header announcing 201 more, against
    max_size=1000: 1009 at that header. Control frames between fragments do not count."""
    protocol, _ = open_protocol(side, max_size=1000)
    data = frame(side, BINARY, b"a" * 400, fin=False) + frame(side, PING, b"p" * 125)
    data += frame(side, CONTINUATION, b"b" * 400, fin=False)
    assert protocol.receive_data(data) == [PingReceived(b"p" * 125)]
    events = protocol.receive_data(header(side, CONTINUATION, length, fin=False))
    if refused:
        assert str(only_too_big(events)) == (
            "message of at least 1,001 bytes exceeds max_size=1,000"
        )
    else:
        assert events == []


@pytest.mark.parametrize(("length", "refused"), [(3024, False), (3025, True)])
def test_compressed_header_fails_only_past_what_deflate_could_honestly_send(
    side: str, length: int, refused: bool
) -> None:
    """A compressed frame announces its compressed length, which may exceed what it inflates
    to: its header fails only past twice max_size plus 1 KiB."""
    protocol, _ = open_protocol(side, compression=True, max_size=1000)
    events = protocol.receive_data(header(side, BINARY, length, rsv1=True))
    if refused:
        assert str(only_too_big(events)) == (
            "compressed message of 3,025 bytes exceeds max_size=1,000"
        )
    else:
        assert events == []


def test_incompressible_message_of_max_size_is_accepted_compressed(side: str) -> None:
    """Compressing random bytes makes them longer; the message of max_size still passes."""
    protocol, _ = open_protocol(side, compression=True, max_size=1000)
    payload = random.Random(0).randbytes(1000)
    [compressed] = deflate_fragments(payload)
    assert len(compressed) > 1000
    assert protocol.receive_data(frame(side, BINARY, compressed, rsv1=True)) == [
        MessageReceived(payload)
    ]


# -- frames per message --------------------------------------------------------------------


def fragment_stream(side: str, count: int) -> bytes:
    """The first ``count`` 1-byte frames of a message that never ends."""
    first = frame(side, BINARY, b"a", fin=False)
    return first + frame(side, CONTINUATION, b"b", fin=False) * (count - 1)


def feed_until_failed(protocol: Protocol, data: bytes, size: int) -> tuple[list[Event], Failed]:
    """Feed ``data`` in reads of ``size`` bytes until a Failed: the events before it, and it."""
    held: list[Event] = []
    for events in feed_in_chunks(protocol, data, size):
        held += events
        if held and isinstance(held[-1], Failed):
            *before, failed = held
            assert isinstance(failed, Failed)
            return before, failed
    raise AssertionError("no Failed event")


def test_message_in_1_byte_frames_fails_after_a_bounded_count(side: str) -> None:
    """The attack: a message sent as 1-byte frames (``b"\\x02\\x81" + key + b"a"``, then
    ``b"\\x00\\x81" + key + b"b"`` from a client), against the default max_size of 1 MiB. It
    fails with 1009 at the header of frame 16,386 (1 + max_size // FRAME_COST allowed), not
    after a million of them; every byte before is delivered."""
    protocol, _ = open_protocol(side, max_size=MiB, joined=False)
    allowed = 1 + MiB // FRAME_COST
    one = len(fragment_stream(side, 1))
    pieces, failed = feed_until_failed(protocol, fragment_stream(side, allowed + 100), 1000 * one)
    assert failed.code == 1009
    assert str(failed.error) == (
        "message in over 16,385 frames exceeds max_size=1,048,576: each frame after the first "
        "counts 64 bytes"
    )
    assert len(pieces) == 17  # one piece per read of 1,000 frames
    data = b"".join(p.data for p in pieces if isinstance(p, FragmentReceived))  # type: ignore[misc]
    assert data == b"a" + b"b" * (allowed - 1)


@pytest.mark.parametrize("frames_per_read", [1, 10])
def test_pieces_of_1_byte_frames_hold_at_most_twice_max_size(
    side: str, frames_per_read: int
) -> None:
    """What the pieces of such a message hold until it fails, kept as a receive queue would
    keep them, stays under twice max_size, even at one read per frame (about 90 bytes a piece)."""
    max_size = 64 * 1024
    protocol, _ = open_protocol(side, max_size=max_size, joined=False)
    one = len(fragment_stream(side, 1))
    data = fragment_stream(side, 2 + max_size // FRAME_COST)
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        pieces, failed = feed_until_failed(protocol, data, frames_per_read * one)
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        if started:
            tracemalloc.stop()
    assert failed.code == 1009
    assert len(pieces) == -(-(1 + max_size // FRAME_COST) // frames_per_read)
    assert kept - before < 2 * max_size


@pytest.mark.parametrize(("frames", "refused"), [(11, False), (12, True)])
def test_frames_are_counted_with_empty_ones(side: str, frames: int, refused: bool) -> None:
    """With max_size=640 a message may come in 1 + 640 // 64 = 11 frames, empty ones too; the
    frame count starts again with each message."""
    protocol, _ = open_protocol(side, max_size=640)
    message = frame(side, TEXT, b"", fin=False)
    message += frame(side, CONTINUATION, b"", fin=False) * (frames - 2)
    message += frame(side, CONTINUATION, b"x")
    events = protocol.receive_data(message)
    if refused:
        only_too_big(events)
    else:
        assert events == [MessageReceived("x")]
        assert protocol.receive_data(message) == [MessageReceived("x")]


def test_message_of_max_size_in_frame_size_frames_is_accepted(side: str) -> None:
    """The frame cost comes besides the payload: a message of exactly max_size, in the frames
    of FRAME_SIZE trio_ws sends, is accepted."""
    protocol, peer = open_protocol(side, max_size=MiB)
    data = b"".join(
        peer.send(BytesMessage(b"z" * FRAME_SIZE, message_finished=index == MiB // FRAME_SIZE - 1))
        for index in range(MiB // FRAME_SIZE)
    )
    assert protocol.receive_data(data) == [MessageReceived(b"z" * MiB)]


# -- max_fragment_size ---------------------------------------------------------------------


@pytest.mark.parametrize(("length", "refused"), [(100, False), (101, True)])
@pytest.mark.parametrize("max_size", [MiB, None])
def test_frame_over_max_fragment_size_fails_from_its_header(
    side: str, length: int, refused: bool, max_size: int | None
) -> None:
    """A frame announcing more than max_fragment_size fails at its header, first frame or
    continuation, with or without max_size; exactly max_fragment_size waits for its payload."""
    protocol, _ = open_protocol(side, max_size=max_size, max_fragment_size=100)
    assert protocol.receive_data(frame(side, TEXT, b"a" * 100, fin=False)) == []
    events = protocol.receive_data(header(side, CONTINUATION, length))
    if refused:
        assert str(only_too_big(events)) == "frame of 101 bytes exceeds max_fragment_size=100"
    else:
        assert events == []


def test_message_may_exceed_max_fragment_size_in_smaller_frames(side: str) -> None:
    """max_fragment_size bounds each frame, max_size the message: ten frames of 100 bytes
    make a message of 1,000 with max_fragment_size=100."""
    protocol, _ = open_protocol(side, max_size=1000, max_fragment_size=100)
    data = b"".join(
        frame(side, BINARY if i == 0 else CONTINUATION, b"x" * 100, fin=False) for i in range(9)
    )
    data += frame(side, CONTINUATION, b"x" * 100)
    assert protocol.receive_data(data) == [MessageReceived(b"x" * 1000)]


def test_compressed_frame_is_measured_against_max_fragment_size_after_inflating(
    side: str,
) -> None:
    """max_fragment_size bounds what a compressed frame inflates to: two frames of 1,000
    bytes each pass with max_fragment_size=1000; a frame of 1,001 fails."""
    protocol, _ = open_protocol(side, compression=True, max_fragment_size=1000)
    first, second = deflate_fragments(b"\x00" * 1000, b"\x01" * 1000)
    data = frame(side, BINARY, first, fin=False, rsv1=True) + frame(side, CONTINUATION, second)
    assert protocol.receive_data(data) == [MessageReceived(b"\x00" * 1000 + b"\x01" * 1000)]
    [over] = deflate_fragments(b"\x00" * 1001)
    error = only_too_big(protocol.receive_data(frame(side, BINARY, over, rsv1=True)))
    assert "max_fragment_size" in str(error)


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        [(TEXT, b"\xff", True)],
        [(TEXT, b"caf\xc3", True)],
        [(TEXT, b"ok", False), (CONTINUATION, b"\xed\xa0\x80", True)],
    ],
    ids=["invalid-byte", "truncated-at-end", "surrogate-in-fragment"],
)
def test_invalid_utf8_in_text_fails_with_1007(
    side: str, frames: list[tuple[int, bytes, bool]]
) -> None:
    """Text that is not valid UTF-8 fails the connection with 1007 and a ProtocolError."""
    protocol, _ = open_protocol(side)
    data = b"".join(frame(side, op, payload, fin=fin) for op, payload, fin in frames)
    [event] = protocol.receive_data(data)
    assert isinstance(event, Failed)
    assert event.code == 1007
    assert isinstance(event.error, ProtocolError)


@pytest.mark.parametrize(
    "first",
    [
        lambda side: frame(side, TEXT, b"ok\xff", fin=False),
        lambda side: (
            frame(side, TEXT, b"ok", fin=False) + frame(side, CONTINUATION, b"\xc3\x28", fin=False)
        ),
        lambda side: frame(side, TEXT, b"\xff" + b"a" * 100_000)[:1000],
    ],
    ids=["first-fragment", "middle-fragment", "start-of-an-unfinished-frame"],
)
def test_invalid_utf8_fails_before_the_message_ends(
    side: str, first: Callable[[str], bytes]
) -> None:
    """UTF-8 is checked as text arrives: the first bad byte fails with 1007 at once, without
    waiting for the final fragment, nor even for the end of the frame that holds it."""
    protocol, _ = open_protocol(side)
    [event] = protocol.receive_data(first(side))
    assert isinstance(event, Failed)
    assert event.code == 1007
    assert protocol.receive_data(frame(side, CONTINUATION, b"end")) == []


def test_code_point_split_across_three_fragments_is_decoded(side: str) -> None:
    """A 4-byte character cut over three fragments is valid: nothing fails on the way."""
    protocol, _ = open_protocol(side)
    assert protocol.receive_data(frame(side, TEXT, b"a\xf0", fin=False)) == []
    assert protocol.receive_data(frame(side, CONTINUATION, b"\x9f\x98", fin=False)) == []
    assert protocol.receive_data(frame(side, CONTINUATION, b"\x80b")) == [
        MessageReceived("a\U0001f600b")
    ]


def test_code_point_truncated_at_the_end_of_a_fragmented_message_fails_with_1007(
    side: str,
) -> None:
    """A character still incomplete when the final fragment ends is invalid; until then it
    could be completed, so the fragments before pass."""
    protocol, _ = open_protocol(side)
    assert protocol.receive_data(frame(side, TEXT, b"a\xf0\x9f", fin=False)) == []
    assert protocol.receive_data(frame(side, CONTINUATION, b"\x98", fin=False)) == []
    [event] = protocol.receive_data(frame(side, CONTINUATION, b""))
    assert isinstance(event, Failed)
    assert event.code == 1007


def test_invalid_utf8_in_compressed_text_fails_on_its_first_fragment(side: str) -> None:
    """With permessage-deflate, UTF-8 is checked on the inflated text, fragment by fragment:
    a character split between compressed fragments passes, a bad byte fails at once."""
    protocol, _ = open_protocol(side, compression=True)
    first, second = deflate_fragments(b"caf\xc3", b"\xa9")
    data = frame(side, TEXT, first, fin=False, rsv1=True) + frame(side, CONTINUATION, second)
    assert protocol.receive_data(data) == [MessageReceived("café")]
    first, _ = deflate_fragments(b"ok\xff", b"never sent")
    [event] = protocol.receive_data(frame(side, TEXT, first, fin=False, rsv1=True))
    assert isinstance(event, Failed)
    assert event.code == 1007


def test_invalid_utf8_in_close_reason_fails_with_1007(side: str) -> None:
    """A close reason must be UTF-8 too (RFC 6455 §5.5.1)."""
    protocol, _ = open_protocol(side)
    [event] = protocol.receive_data(frame(side, CLOSE, struct.pack("!H", 1000) + b"\xff"))
    assert isinstance(event, Failed)
    assert event.code == 1007


@pytest.mark.parametrize(
    "data",
    [
        lambda side: frame(side, 0x3, b"x"),
        lambda side: frame(side, 0xB, b""),
        lambda side: frame(side, PING, b"x", fin=False),
        lambda side: frame(side, PING, b"x" * 126),
        lambda side: frame(side, PONG, b"x" * 126),
        lambda side: frame(side, CLOSE, struct.pack("!H", 1000) + b"r" * 124),
        lambda side: frame(side, PONG, b"x", fin=False),
        lambda side: frame(side, CLOSE, struct.pack("!H", 1000), fin=False),
        lambda side: frame(side, CONTINUATION, b"x"),
        lambda side: frame(side, TEXT, b"a", fin=False) + frame(side, TEXT, b"b"),
        lambda side: frame(side, TEXT, b"x", rsv1=True),
        lambda side: frame(side, BINARY, b"x", rsv2=True),
        lambda side: frame(side, CLOSE, b"\x03"),
        lambda side: frame(side, CLOSE, struct.pack("!H", 999)),
        lambda side: frame(side, CLOSE, struct.pack("!H", 1004)),
        lambda side: frame(side, CLOSE, struct.pack("!H", 1005)),
        lambda side: frame(side, CLOSE, struct.pack("!H", 1006)),
        lambda side: frame(side, CLOSE, struct.pack("!H", 1015)),
        lambda side: frame(side, CLOSE, struct.pack("!H", 1016)),
        lambda side: frame(side, CLOSE, struct.pack("!H", 2999)),
        lambda side: frame(side, CLOSE, struct.pack("!H", 5000)),
        lambda side: struct.pack("!BBH", 0x82, 126 | (0x80 if side == "server" else 0), 5),
    ],
    ids=[
        "reserved-data-opcode",
        "reserved-control-opcode",
        "fragmented-ping",
        "control-frame-over-125-bytes",
        "pong-over-125-bytes",
        "close-reason-over-123-bytes",
        "fragmented-pong",
        "fragmented-close",
        "continuation-without-start",
        "new-message-inside-fragmented-one",
        "rsv1-without-extension",
        "rsv2",
        "close-with-1-byte-payload",
        "close-code-999",
        "close-code-1004",
        "close-code-1005",
        "close-code-1006",
        "close-code-1015",
        "close-code-1016",
        "close-code-2999",
        "close-code-5000",
        "non-minimal-length",
    ],
)
def test_protocol_violation_fails_with_1002(side: str, data: Callable[[str], bytes]) -> None:
    """A frame RFC 6455 forbids fails the connection with 1002 and a ProtocolError."""
    protocol, _ = open_protocol(side)
    [event] = protocol.receive_data(data(side))
    assert isinstance(event, Failed)
    assert event.code == 1002
    assert isinstance(event.error, ProtocolError)
    assert not protocol.can_send_data


def test_wrong_masking_fails_with_1002(side: str) -> None:
    """Client frames must be masked and server frames must not (RFC 6455 §5.1)."""
    protocol, _ = open_protocol(side)
    [event] = protocol.receive_data(frame(side, TEXT, b"x", masked=side == "client"))
    assert isinstance(event, Failed)
    assert event.code == 1002


def test_message_before_a_bad_frame_is_still_delivered(side: str) -> None:
    """Events a chunk completes before the violation come first, then Failed, then nothing."""
    protocol, peer = open_protocol(side)
    data = peer.send(TextMessage("ok")) + frame(side, 0x3, b"") + peer.send(TextMessage("no"))
    events = protocol.receive_data(data)
    assert events[0] == MessageReceived("ok")
    assert isinstance(events[1], Failed)
    assert len(events) == 2


# -- control frames ------------------------------------------------------------------------


def test_pings_and_pongs_are_reported_with_their_payload(side: str) -> None:
    """Ping and pong frames become PingReceived and PongReceived; nothing is answered for us."""
    protocol, peer = open_protocol(side)
    data = peer.send(Ping(b"p")) + peer.send(Pong(b"q"))
    assert protocol.receive_data(data) == [PingReceived(b"p"), PongReceived(b"q")]


def test_ping_between_fragments_is_reported_before_the_message(side: str) -> None:
    """A control frame may come between fragments (RFC 6455 §5.4); the message still joins."""
    protocol, _ = open_protocol(side)
    data = frame(side, TEXT, b"ab", fin=False) + frame(side, PING, b"!")
    data += frame(side, CONTINUATION, b"cd")
    assert protocol.receive_data(data) == [PingReceived(b"!"), MessageReceived("abcd")]


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (struct.pack("!H", 1000) + b"bye", 1000, "bye"),
        (struct.pack("!H", 1001), 1001, ""),
        (struct.pack("!H", 4999) + "ü".encode(), 4999, "ü"),
        (struct.pack("!H", 3000), 3000, ""),
        (struct.pack("!H", 1000) + b"r" * 123, 1000, "r" * 123),
        (b"", 1005, ""),
    ],
    ids=[
        "1000-with-reason",
        "1001",
        "application-code",
        "lowest-registered-code",
        "123-byte-reason",
        "no-code",
    ],
)
def test_close_frame_gives_close_received(
    side: str, payload: bytes, code: int, reason: str
) -> None:
    """A close frame reports its code and reason (1005 and "" without a code); the reason may
    fill the 123 bytes a control frame leaves after the code."""
    protocol, _ = open_protocol(side)
    assert protocol.receive_data(frame(side, CLOSE, payload)) == [CloseReceived(code, reason)]
    assert not protocol.can_send_data
    assert not protocol.close_sent


def test_answering_a_close_frame_sends_one_close_frame(side: str) -> None:
    """send_close answers the peer's close once; a second call frames nothing."""
    protocol, peer = open_protocol(side)
    [event] = protocol.receive_data(peer.send(CloseConnection(code=1001, reason="away")))
    assert event == CloseReceived(1001, "away")
    answer = protocol.send_close(1001, "")
    assert peer_events(peer, answer) == [CloseConnection(code=1001, reason="")]
    assert protocol.close_sent
    assert protocol.send_close(1001, "") == b""


def test_nothing_after_the_close_frame_counts(side: str) -> None:
    """RFC 6455 §5.5.1: data after a close frame is ignored, in the same chunk or later."""
    protocol, peer = open_protocol(side)
    data = peer.send(TextMessage("before")) + peer.send(CloseConnection(code=1000))
    data += frame(side, TEXT, b"after")
    assert protocol.receive_data(data) == [MessageReceived("before"), CloseReceived(1000, "")]
    assert protocol.receive_data(frame(side, TEXT, b"later")) == []


def test_close_after_our_close_completes_the_handshake(side: str) -> None:
    """After our close frame we send no data; the peer's answer is a CloseReceived."""
    protocol, peer = open_protocol(side)
    ours = protocol.send_close(4000, "done")
    assert protocol.close_sent
    assert not protocol.can_send_data
    assert peer_events(peer, ours) == [CloseConnection(code=4000, reason="done")]
    # The peer may still send messages until it has seen our close.
    assert protocol.receive_data(frame(side, TEXT, b"late")) == [MessageReceived("late")]
    answer = peer.send(CloseConnection(code=4000))
    assert protocol.receive_data(answer) == [CloseReceived(4000, "")]
    assert protocol.send_close(1000, "") == b""


# -- sending -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("tëxt", TextMessage(data="tëxt")),
        (b"\x00\x01", BytesMessage(data=b"\x00\x01")),
        (bytearray(b"ba"), BytesMessage(data=b"ba")),
        (memoryview(b"mv"), BytesMessage(data=b"mv")),
    ],
    ids=["str", "bytes", "bytearray", "memoryview"],
)
def test_send_message_frames_text_for_str_and_binary_for_bytes_like(
    side: str, message: str | bytes | bytearray | memoryview, expected: WSEvent
) -> None:
    """str goes out as a text frame, any bytes-like object as a binary frame."""
    protocol, peer = open_protocol(side)
    assert peer_events(peer, protocol.send_message(message)) == [expected]


def test_send_message_rejects_other_types(side: str) -> None:
    """A message that is neither str nor bytes-like raises TypeError and sends nothing."""
    protocol, _ = open_protocol(side)
    with pytest.raises(TypeError, match="int"):
        protocol.send_message(42)  # type: ignore[arg-type]
    assert protocol.can_send_data


@pytest.mark.parametrize(
    ("message", "frames"),
    [
        (b"\x01" * FRAME_SIZE, 1),
        (b"\x02" * (FRAME_SIZE + 1), 2),
        (bytearray(3 * FRAME_SIZE), 3),
        (memoryview(b"\x03" * (2 * FRAME_SIZE)).cast("H"), 2),
        ("é" * (FRAME_SIZE + 10), 2),
    ],
    ids=["bytes-one-frame", "bytes-two-frames", "bytearray", "memoryview-of-shorts", "text"],
)
def test_send_message_over_frame_size_goes_out_in_frames_of_frame_size(
    side: str, message: str | bytes | bytearray | memoryview, frames: int
) -> None:
    """A message longer than FRAME_SIZE (bytes, or characters of text) goes out as one
    fragmented message, in frames of FRAME_SIZE; the peer reads back the whole message."""
    protocol, peer = open_protocol(side)
    events = peer_events(peer, protocol.send_message(message))
    ends = [event for event in events if isinstance(event, TextMessage | BytesMessage)]
    assert sum(event.frame_finished for event in ends) == frames
    assert [event.message_finished for event in ends][-1]
    joined = "".join(e.data for e in ends if isinstance(e, TextMessage)) or b"".join(
        e.data for e in ends if isinstance(e, BytesMessage)
    )
    assert joined == (message if isinstance(message, str) else bytes(message))


def test_send_ping_and_pong_frame_their_payload(side: str) -> None:
    """send_ping and send_pong frame a ping and a pong the peer reads back."""
    protocol, peer = open_protocol(side)
    data = protocol.send_ping(b"1") + protocol.send_pong(b"2")
    assert peer_events(peer, data) == [Ping(payload=b"1"), Pong(payload=b"2")]


# -- permessage-deflate --------------------------------------------------------------------


def test_compressed_messages_round_trip_both_ways(side: str) -> None:
    """With deflate negotiated, messages go out compressed (RSV1) and come in decompressed.

    The second identical message compresses to a back-reference into the first: decoding it
    proves the inflater keeps its window across messages (context takeover).
    """
    protocol, peer = open_protocol(side, compression=True)
    text = "compress me " * 1000
    for _ in range(2):
        data = peer.send(TextMessage(data=text))
        assert len(data) < 100
        assert protocol.receive_data(data) == [MessageReceived(text)]
    for message in (b"\x07" * 10_000, b"\x07" * 10_000):
        out = protocol.send_message(message)
        assert out[0] & 0x40  # RSV1: compressed
        assert len(out) < 100
        assert peer_events(peer, out) == [BytesMessage(data=message)]


def test_uncompressed_message_is_accepted_when_deflate_is_negotiated(side: str) -> None:
    """RFC 7692 §6: a message without RSV1 is not compressed and is taken as it is."""
    protocol, _ = open_protocol(side, compression=True)
    assert protocol.receive_data(frame(side, TEXT, b"plain")) == [MessageReceived("plain")]


def test_compressed_fragments_are_joined(side: str) -> None:
    """A compressed message split in fragments (RSV1 on the first only) decodes whole."""
    protocol, _ = open_protocol(side, compression=True)
    first, second, third = deflate_fragments(b"one ", b"two ", b"three")
    data = frame(side, TEXT, first, fin=False, rsv1=True)
    data += frame(side, CONTINUATION, second, fin=False)
    data += frame(side, CONTINUATION, third)
    assert protocol.receive_data(data) == [MessageReceived("one two three")]


def test_ping_between_compressed_fragments_leaves_the_message_intact(side: str) -> None:
    """A ping between the fragments of a compressed message is not taken as message data.

    wsproto's own permessage-deflate forgets the message is compressed after the control
    frame and fails the connection; BoundedDeflate keeps track.
    """
    protocol, _ = open_protocol(side, compression=True)
    first, second = deflate_fragments(b"hello ", b"world")
    data = frame(side, TEXT, first, fin=False, rsv1=True) + frame(side, PING, b"p")
    data += frame(side, PONG, b"q") + frame(side, CONTINUATION, second)
    assert protocol.receive_data(data) == [
        PingReceived(b"p"),
        PongReceived(b"q"),
        MessageReceived("hello world"),
    ]


@pytest.mark.parametrize(
    "data",
    [
        lambda side: (
            frame(side, TEXT, b"a", fin=False, rsv1=True)
            + frame(side, CONTINUATION, b"b", rsv1=True)
        ),
        lambda side: frame(side, PING, b"", rsv1=True),
    ],
    ids=["continuation", "control"],
)
def test_rsv1_outside_a_first_frame_fails_with_1002(
    side: str, data: Callable[[str], bytes]
) -> None:
    """RFC 7692 §6.1: only the first frame of a data message may set RSV1."""
    protocol, _ = open_protocol(side, compression=True)
    events = protocol.receive_data(data(side))
    assert isinstance(events[-1], Failed)
    assert events[-1].code == 1002


def test_corrupt_compressed_data_fails_with_1007(side: str) -> None:
    """Compressed bytes zlib cannot inflate fail the connection with 1007."""
    protocol, _ = open_protocol(side, compression=True)
    [event] = protocol.receive_data(frame(side, BINARY, b"\xff\xff\xff\xff", rsv1=True))
    assert isinstance(event, Failed)
    assert event.code == 1007
    assert "corrupt compressed data" in event.reason


def test_compressed_message_is_measured_after_inflating(side: str) -> None:
    """max_size applies to the inflated message: exactly max_size passes, one byte more fails."""
    protocol, _ = open_protocol(side, compression=True, max_size=1000)
    [exact] = deflate_fragments(b"\x00" * 1000)
    assert protocol.receive_data(frame(side, BINARY, exact, rsv1=True)) == [
        MessageReceived(b"\x00" * 1000)
    ]
    [over] = deflate_fragments(b"\x00" * 1001)
    [event] = protocol.receive_data(frame(side, BINARY, over, rsv1=True))
    assert isinstance(event, Failed)
    assert event.code == 1009
    assert isinstance(event.error, PayloadTooBig)


_decompressobj = zlib.decompressobj


class _CountingInflater:
    """A zlib decompressor that records how many bytes each call inflates."""

    def __init__(self, wbits: int, counts: list[int]) -> None:
        self._inflater = _decompressobj(wbits)
        self._counts = counts

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        output = self._inflater.decompress(data, max_length)
        self._counts.append(len(output))
        return output


@pytest.fixture
def inflated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each output of every zlib inflater created during the test."""
    counts: list[int] = []
    monkeypatch.setattr(zlib, "decompressobj", lambda wbits: _CountingInflater(wbits, counts))
    return counts


def test_decompression_bomb_fails_with_1009_without_inflating_it(
    side: str, inflated: list[int]
) -> None:
    """10 MB of zeros compressed to ~10 KB, against max_size=1 MiB: 1009 after inflating at
    most max_size + 1 bytes, never the whole bomb."""
    protocol, _ = open_protocol(side, compression=True, max_size=MiB)
    [bomb] = deflate_fragments(b"\x00" * 10 * 10**6)
    assert len(bomb) < 20_000
    data = frame(side, BINARY, bomb, rsv1=True)
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        [event] = protocol.receive_data(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if started:
            tracemalloc.stop()
    assert isinstance(event, Failed)
    assert event.code == 1009
    assert isinstance(event.error, PayloadTooBig)
    assert sum(inflated) <= MiB + 1
    assert peak - before < 4 * MiB


def test_decompression_bomb_in_fragments_is_bounded_across_them(
    side: str, inflated: list[int]
) -> None:
    """The inflation budget is per message, not per frame: many small compressed fragments
    that each inflate under max_size still stop at max_size + 1 bytes in all."""
    protocol, _ = open_protocol(side, compression=True, max_size=MiB)
    parts = deflate_fragments(*[b"\x00" * 500_000] * 10)
    data = frame(side, BINARY, parts[0], fin=False, rsv1=True)
    data += b"".join(frame(side, CONTINUATION, part, fin=False) for part in parts[1:-1])
    data += frame(side, CONTINUATION, parts[-1])
    events = protocol.receive_data(data)
    assert len(events) == 1
    assert isinstance(events[0], Failed)
    assert events[0].code == 1009
    assert sum(inflated) <= MiB + 1


def test_compressed_messages_are_unbounded_when_max_size_is_none(side: str) -> None:
    """max_size=None inflates a compressed message of any size."""
    protocol, _ = open_protocol(side, compression=True, max_size=None)
    [payload] = deflate_fragments(b"\x00" * 3 * MiB)
    assert protocol.receive_data(frame(side, BINARY, payload, rsv1=True)) == [
        MessageReceived(b"\x00" * 3 * MiB)
    ]


def test_peer_without_context_takeover_is_decoded(side: str) -> None:
    """A peer that resets its compressor after each message (no_context_takeover) decodes."""
    peer_extension = (
        PerMessageDeflate(server_no_context_takeover=True)
        if side == "client"
        else PerMessageDeflate(client_no_context_takeover=True)
    )
    protocol, peer = open_protocol(side, compression=True, peer_extension=peer_extension)
    for _ in range(3):
        data = peer.send(TextMessage(data="again " * 100))
        assert protocol.receive_data(data) == [MessageReceived("again " * 100)]
        out = protocol.send_message("back " * 100)
        assert peer_events(peer, out) == [TextMessage(data="back " * 100)]


# -- taking over wsproto's connection ------------------------------------------------------


def test_frames_that_arrived_with_the_handshake_are_read(side: str) -> None:
    """Bytes wsproto received with the handshake's last packet, before the Protocol existed,
    are read by the Protocol's own parser."""
    data = frame(side, TEXT, b"early") + frame(side, BINARY, b"ear")
    ws = Connection(ConnectionType.CLIENT if side == "client" else ConnectionType.SERVER, [], data)
    protocol = Protocol(ws, max_size=MiB)
    assert protocol.receive_data(frame(side, BINARY, b"later")) == [
        MessageReceived("early"),
        MessageReceived(b"ear"),
        MessageReceived(b"later"),
    ]


def test_a_connection_that_read_frames_cannot_be_taken_over(side: str) -> None:
    """Protocol takes over a connection fresh from the handshake, not one halfway through a
    message: it raises ValueError then."""
    data = frame(side, TEXT, b"half", fin=False)
    ws = Connection(ConnectionType.CLIENT if side == "client" else ConnectionType.SERVER, [], data)
    assert [type(event) for event in ws.events()] == [TextMessage]
    with pytest.raises(ValueError, match="before any frame"):
        Protocol(ws, max_size=MiB)


# -- messages that arrive in pieces --------------------------------------------------------


def test_message_in_one_frame_and_one_read_is_one_event(side: str) -> None:
    """The common case: no pieces, one MessageReceived."""
    protocol, peer = open_protocol(side, joined=False)
    assert protocol.receive_data(peer.send(TextMessage("whole"))) == [MessageReceived("whole")]


def test_fragmented_message_comes_piece_by_piece(side: str) -> None:
    """Each frame of a fragmented message is a FragmentReceived as soon as it arrives; the
    last is marked final. Empty frames in the middle add nothing."""
    protocol, peer = open_protocol(side, joined=False)
    assert protocol.receive_data(peer.send(BytesMessage(b"a", message_finished=False))) == [
        FragmentReceived(b"a", final=False)
    ]
    assert protocol.receive_data(peer.send(BytesMessage(b"", message_finished=False))) == []
    assert protocol.receive_data(peer.send(BytesMessage(b"b"))) == [
        FragmentReceived(b"b", final=True)
    ]
    assert protocol.receive_data(peer.send(TextMessage("next"))) == [MessageReceived("next")]


def test_frame_split_across_reads_comes_in_pieces(side: str) -> None:
    """A frame whose payload arrives over several reads is reported read by read."""
    protocol, peer = open_protocol(side, joined=False)
    data = peer.send(BytesMessage(b"x" * 1000))
    first = protocol.receive_data(data[:500])
    second = protocol.receive_data(data[500:])
    assert len(first) == 1 and isinstance(first[0], FragmentReceived)
    assert not first[0].final
    assert len(second) == 1 and isinstance(second[0], FragmentReceived)
    assert second[0].final
    assert first[0].data + second[0].data == b"x" * 1000  # type: ignore[operator]


def test_empty_last_frame_ends_a_fragmented_message(side: str) -> None:
    """An empty final frame is reported, since it completes the message."""
    protocol, peer = open_protocol(side, joined=False)
    data = peer.send(TextMessage("a", message_finished=False))
    assert protocol.receive_data(data) == [FragmentReceived("a", final=False)]
    assert protocol.receive_data(peer.send(TextMessage(""))) == [FragmentReceived("", final=True)]


def test_frames_read_together_are_reported_as_one_piece(side: str) -> None:
    """Frames of one message that one read holds come as one event: the whole message when
    the read holds all of it, else one piece per read, the last one final."""
    protocol, peer = open_protocol(side, joined=False)
    parts = [peer.send(BytesMessage(bytes([i]) * 3, message_finished=False)) for i in range(5)]
    parts.append(peer.send(BytesMessage(b"end")))
    assert protocol.receive_data(b"".join(parts)) == [
        MessageReceived(
            b"\x00" * 3 + b"\x01" * 3 + b"\x02" * 3 + b"\x03" * 3 + b"\x04" * 3 + b"end"
        )
    ]
    parts = [peer.send(TextMessage(text, message_finished=False)) for text in "abcde"]
    parts.append(peer.send(TextMessage("f")))
    assert protocol.receive_data(b"".join(parts[:3])) == [FragmentReceived("abc", final=False)]
    assert protocol.receive_data(b"".join(parts[3:])) == [FragmentReceived("def", final=True)]


def test_pieces_read_together_keep_their_place_around_control_frames(side: str) -> None:
    """A control frame between fragments read in one go comes between the pieces before it and
    the pieces after it; a character split between fragments is whole in the joined piece."""
    protocol, _ = open_protocol(side, joined=False)
    data = frame(side, TEXT, b"a\xc3", fin=False) + frame(side, CONTINUATION, b"\xa9", fin=False)
    data += frame(side, PING, b"!") + frame(side, CONTINUATION, b"b", fin=False)
    data += frame(side, CONTINUATION, b"c")
    assert protocol.receive_data(data) == [
        FragmentReceived("aé", final=False),
        PingReceived(b"!"),
        FragmentReceived("bc", final=True),
    ]


def test_pieces_read_before_a_failure_are_reported_before_it(side: str) -> None:
    """Pieces of a message read in the same go as a violation come first, then Failed."""
    protocol, _ = open_protocol(side, joined=False)
    data = frame(side, BINARY, b"a", fin=False) + frame(side, CONTINUATION, b"b", fin=False)
    data += frame(side, TEXT, b"new message inside one")
    [piece, failed] = protocol.receive_data(data)
    assert piece == FragmentReceived(b"ab", final=False)
    assert isinstance(failed, Failed)
    assert failed.code == 1002


def test_send_fragment_frames_pieces_with_fin_on_the_last(side: str) -> None:
    """send_fragment() frames a message piece by piece; the peer sees one message."""
    protocol, peer = open_protocol(side)
    data = protocol.send_fragment("ab", final=False) + protocol.send_fragment("c", final=True)
    peer.receive_data(data)
    events = list(peer.events())
    assert [(e.data, e.message_finished) for e in events] == [("ab", False), ("c", True)]  # type: ignore[attr-defined]
