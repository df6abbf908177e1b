"""trio_ws._protocol under random input: valid frame streams split anywhere, and mutated ones.

Whatever the bytes and however they are split into reads, ``Protocol.receive_data`` reports
problems only as a Failed event (never by raising), reports nothing after it, returns a number
of events bounded by the bytes fed, and delivers the same messages for any split.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trio_ws._protocol import (
    CloseReceived,
    Failed,
    FragmentReceived,
    MessageReceived,
    PingReceived,
    PongReceived,
    Protocol,
)

from .test_protocol import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    deflate_fragments,
    open_protocol,
)
from .test_protocol import frame as build_frame

#: Modest by default, to stay fast; ``TRIO_WS_FUZZ_EXAMPLES=20000`` for a long hunt. No example
#: database: nothing is written into the work tree.
FUZZ = settings(
    max_examples=int(os.environ.get("TRIO_WS_FUZZ_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
sides = st.sampled_from(["client", "server"])


@dataclass
class Outcome:
    """What a Protocol reported, with the pieces of each message joined."""

    messages: list[str | bytes]
    controls: list[PingReceived | PongReceived | CloseReceived]
    failed: Failed | None


def feed(protocol: Protocol, data: bytes, cuts: list[int]) -> Outcome:
    """Feed ``data`` split at ``cuts``; check the invariants of what comes out, call by call."""
    bounds = [0, *sorted(cut for cut in cuts if 0 < cut < len(data)), len(data)]
    outcome = Outcome([], [], None)
    pieces: list[str | bytes] = []
    for start, end in itertools.pairwise(bounds):
        chunk = data[start:end]
        events = protocol.receive_data(chunk)
        # At most one event per frame the read completes (2 bytes at least) and one piece.
        assert len(events) <= len(chunk) // 2 + 1
        for received in events:
            assert outcome.failed is None, "an event after Failed"
            assert not (outcome.controls and isinstance(outcome.controls[-1], CloseReceived))
            if isinstance(received, MessageReceived):
                assert not pieces
                assert type(received.data) in (str, bytes)
                outcome.messages.append(received.data)
            elif isinstance(received, FragmentReceived):
                assert type(received.data) in (str, bytes)
                assert not pieces or type(pieces[0]) is type(received.data)
                pieces.append(received.data)
                if received.final:
                    joined = "".join(pieces) if isinstance(pieces[0], str) else b"".join(pieces)  # type: ignore[arg-type]
                    outcome.messages.append(joined)
                    pieces = []
            elif isinstance(received, Failed):
                assert received.code in (1002, 1007, 1009)
                assert not protocol.can_send_data
                outcome.failed = received
            else:
                outcome.controls.append(received)
    return outcome


# -- valid streams -------------------------------------------------------------------------


@dataclass
class Message:
    text: bool
    payload: bytes  # UTF-8 for text
    cuts: list[int]  # where its frames split it (possibly inside a character)
    pings: list[int]  # before which of its frames (after the first) a ping comes


messages = st.builds(
    Message,
    text=st.booleans(),
    payload=st.binary(max_size=400),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    pings=st.lists(st.integers(1, 6), max_size=2),
).map(
    lambda m: Message(
        m.text,
        m.payload.decode("utf-8", "replace").encode() if m.text else m.payload,
        m.cuts,
        m.pings,
    )
)


def parts_of(message: Message) -> list[bytes]:
    """The payloads of the message's frames."""
    size = len(message.payload)
    bounds = [0, *sorted({cut for cut in message.cuts if 0 < cut < size}), size]
    return [message.payload[start:end] for start, end in itertools.pairwise(bounds)]


def pings_of(message: Message) -> list[bytes]:
    """The payloads of the pings among the message's frames, in order."""
    return [
        b"ping %d" % index for index in range(1, len(parts_of(message))) if index in message.pings
    ]


def frames_of(side: str, message: Message) -> bytes:
    """The message in frames split at its cuts, pings between some of them."""
    parts = parts_of(message)
    data = b""
    for index, part in enumerate(parts):
        if index and index in message.pings:
            data += build_frame(side, PING, b"ping %d" % index)
        opcode = (TEXT if message.text else BINARY) if index == 0 else CONTINUATION
        data += build_frame(side, opcode, part, fin=index == len(parts) - 1)
    return data


def expected_messages(stream: list[Message]) -> list[str | bytes]:
    return [m.payload.decode() if m.text else m.payload for m in stream]


@FUZZ
@given(side=sides, stream=st.lists(messages, max_size=6), data=st.data())
def test_valid_stream_split_anywhere_gives_the_messages_sent(
    side: str, stream: list[Message], data: st.DataObject
) -> None:
    """Messages in any frames, pings among them, split into reads anywhere: the same messages,
    pings and close come out, nothing fails."""
    wire = b"".join(frames_of(side, message) for message in stream)
    wire += build_frame(side, CLOSE, b"\x03\xe8bye")
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20), label="cuts")
    protocol, _ = open_protocol(side, joined=False)
    outcome = feed(protocol, wire, cuts)
    assert outcome.failed is None
    assert outcome.messages == expected_messages(stream)
    assert outcome.controls == [
        *(PingReceived(payload) for message in stream for payload in pings_of(message)),
        CloseReceived(1000, "bye"),
    ]


@FUZZ
@given(side=sides, stream=st.lists(messages, min_size=1, max_size=4), data=st.data())
def test_compressed_stream_split_anywhere_gives_the_messages_sent(
    side: str, stream: list[Message], data: st.DataObject
) -> None:
    """Messages compressed (RFC 7692) in any frames, split into reads anywhere."""
    wire = b""
    for message in stream:
        parts = parts_of(message)
        for index, payload in enumerate(deflate_fragments(*parts)):
            opcode = (TEXT if message.text else BINARY) if index == 0 else CONTINUATION
            wire += build_frame(
                side, opcode, payload, fin=index == len(parts) - 1, rsv1=index == 0
            )
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20), label="cuts")
    protocol, _ = open_protocol(side, compression=True, joined=False)
    outcome = feed(protocol, wire, cuts)
    assert outcome.failed is None
    assert outcome.messages == expected_messages(stream)


@FUZZ
@given(
    side=sides,
    stream=st.lists(messages, min_size=1, max_size=4),
    max_size=st.integers(0, 500),
    max_fragment_size=st.none() | st.integers(0, 200),
    data=st.data(),
)
def test_limits_give_the_same_outcome_for_any_split(
    side: str,
    stream: list[Message],
    max_size: int,
    max_fragment_size: int | None,
    data: st.DataObject,
) -> None:
    """Under random limits, the messages delivered and the failure (1009 or none) do not
    depend on how the stream is split; a message is delivered exactly when it fits."""
    wire = b"".join(frames_of(side, message) for message in stream)
    outcomes = []
    for _ in range(2):
        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20), label="cuts")
        protocol, _ = open_protocol(
            side, max_size=max_size, max_fragment_size=max_fragment_size, joined=False
        )
        outcomes.append(feed(protocol, wire, cuts))
    first, second = outcomes
    event(f"failed with {first.failed.code}" if first.failed else "did not fail")
    assert first.messages == second.messages
    assert (first.failed and first.failed.code) == (second.failed and second.failed.code)
    fits = []
    for message in stream:
        parts = parts_of(message)
        largest = max(len(part) for part in parts)
        fits.append(
            len(message.payload) <= max_size
            and len(parts) <= 1 + max_size // 64
            and (max_fragment_size is None or largest <= max_fragment_size)
        )
    delivered = fits.index(False) if False in fits else len(stream)
    assert first.messages == expected_messages(stream[:delivered])
    assert (first.failed is None) == (delivered == len(stream))
    if first.failed is not None:
        assert first.failed.code == 1009


# -- broken streams ------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, side: str) -> bytes:
    """A valid stream with random bytes flipped, inserted or deleted."""
    stream = draw(st.lists(messages, max_size=4))
    wire = bytearray(b"".join(frames_of(side, message) for message in stream))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        at = draw(st.integers(0, len(wire)))
        if action == "flip" and at < len(wire):
            wire[at] ^= draw(st.integers(1, 255))
        elif action == "insert":
            wire[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del wire[at : at + draw(st.integers(1, 16))]
    return bytes(wire)


@FUZZ
@given(side=sides, raw=st.binary(max_size=300), data=st.data())
def test_random_bytes_never_raise(side: str, raw: bytes, data: st.DataObject) -> None:
    """Arbitrary bytes: events or a Failed, never an exception; nothing after Failed."""
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10), label="cuts")
    protocol, _ = open_protocol(side, max_size=1000, joined=False)
    feed(protocol, raw, cuts)


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
@FUZZ
@given(side=sides, data=st.data())
def test_mutated_stream_gives_the_same_outcome_for_any_split(
    compression: bool, side: str, data: st.DataObject
) -> None:
    """A valid stream with random damage: never an exception; uncompressed, the messages
    before the damage and the failure code are the same for any split."""
    wire = data.draw(mutated(side), label="wire")
    outcomes = []
    for _ in range(2):
        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20), label="cuts")
        protocol, _ = open_protocol(side, max_size=1000, compression=compression, joined=False)
        outcomes.append(feed(protocol, wire, cuts))
    first, second = outcomes
    event(f"failed with {first.failed.code}" if first.failed else "did not fail")
    if not compression:
        assert first.messages == second.messages
        assert first.controls == second.controls
        assert (first.failed and first.failed.code) == (second.failed and second.failed.code)


@FUZZ
@given(side=sides, data=st.data())
def test_close_and_control_frames_in_random_places_never_raise(
    side: str, data: st.DataObject
) -> None:
    """Control frames of random payloads (close codes and reasons included) anywhere."""
    opcodes = st.sampled_from([PING, PONG, CLOSE, TEXT, BINARY, CONTINUATION])
    frames = data.draw(
        st.lists(st.tuples(opcodes, st.binary(max_size=130), st.booleans()), max_size=6)
    )
    wire = b"".join(build_frame(side, op, payload, fin=fin) for op, payload, fin in frames)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=10), label="cuts")
    protocol, _ = open_protocol(side, joined=False)
    feed(protocol, wire, cuts)
