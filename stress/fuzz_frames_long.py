"""The frame path's targets for fuzz_long.py: ``Protocol.receive_data`` on millions of inputs.

The properties are tests/test_protocol_fuzz.py's, with its stream builders and its ``feed``
check imported from there (``feed`` asserts, read by read, that only a Failed event with 1002,
1007 or 1009 reports a problem, that nothing follows it, and that events stay bounded by the
bytes fed); here plain ``random.Random`` loops drive them. Run them with
``python stress/fuzz_long.py --targets frames``. Targets (their share of the frame inputs):

- frames-valid (30%): random text and binary messages in random frames, pings among them, with
  and without permessage-deflate, then a close frame most of the time, split into reads
  anywhere: the messages, pings and close come out as sent, nothing fails.
- frames-mutated (38%): such a stream with bytes flipped, inserted or deleted: only the
  documented outcomes; uncompressed, the same messages, controls and failure code for two
  splits.
- frames-random (12%), frames-controls (12%): random bytes, and control and data frames of
  random payloads in random order: only the documented outcomes.
- frames-storm (4%): one message in many tiny frames (0 to 3 bytes each). Past
  ``1 + max_size // FRAME_COST`` frames it fails with 1009 at the header of the frame over
  the count, after delivering every byte before it; within the count it arrives whole. One
  storm in four (1% of the frame inputs) runs under tracemalloc, holding its events as a
  receive queue would: what it holds when it fails stays under ``STORM_BOUND`` x max_size
  (the _protocol docstring's "about two and a half times"); the ratio measured is reported.
- frames-bomb (4%): a small compressed message inflating past max_size, in one frame or many,
  perhaps after a valid compressed message: 1009, after inflating at most max_size + 1 bytes
  of it (every zlib inflater is counted); a message of exactly max_size arrives whole.
"""

from __future__ import annotations

import contextlib
import random
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tests.test_protocol import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    open_protocol,
)
from tests.test_protocol import frame as build_frame
from tests.test_protocol_fuzz import (
    Message,
    Outcome,
    expected_messages,
    feed,
    frames_of,
    parts_of,
    pings_of,
)
from trio_ws._deflate import WINDOW_BITS
from trio_ws._protocol import (
    FRAME_COST,
    CloseReceived,
    Event,
    Failed,
    FragmentReceived,
    MessageReceived,
    PingReceived,
    Protocol,
)
from trio_ws.exceptions import PayloadTooBig

#: An input: what it is (for the report) and the check that runs it, returning an outcome.
Case = tuple[object, Callable[[], str]]

#: What a message in progress may hold, in multiples of max_size: the _protocol docstring's
#: "at most about two and a half times max_size, whatever its frames".
STORM_BOUND = 2.5


@dataclass
class Measured:
    """What the traced inputs of a target measured, for the report."""

    traced: int = 0  # inputs run under tracemalloc
    traced_peak: int = 0  # bytes, the highest peak of one input
    held_ratio: float = 0.0  # storms: the most held when failing, / max_size


MEASURED = {"frames-storm": Measured(), "frames-bomb": Measured()}


def report(name: str) -> str:
    """The measurements of a target, for its line in the report ("" if none)."""
    measured = MEASURED.get(name)
    if measured is None or not measured.traced:
        return ""
    text = f", {measured.traced:,} traced, traced peak {measured.traced_peak / 1024:,.1f} KiB"
    if measured.held_ratio:
        text += f", held at most {measured.held_ratio:.2f} x max_size (bound {STORM_BOUND})"
    return text


# -- building streams ----------------------------------------------------------------------

_CHARS = "aZ0 ~\x00\x7f\u00e9\u00df\u0394\u4e2d\u20ac\U0001f600\U00010348"


def random_cuts(rng: random.Random, size: int) -> list[int]:
    """Where to split ``size`` bytes into reads: anywhere, or into bytes, or not at all."""
    roll = rng.random()
    if roll < 0.1:
        return []
    if roll < 0.15 and size <= 2000:
        return list(range(1, size))
    return [rng.randrange(size + 1) for _ in range(rng.randrange(1, 21))]


def random_payload(rng: random.Random, text: bool, size: int) -> bytes:
    if text:
        return "".join(rng.choices(_CHARS, k=size // 2 + 1)).encode()[:size]
    return rng.randbytes(size)


def random_message(rng: random.Random) -> Message:
    text = rng.random() < 0.5
    size = rng.choice([rng.randrange(20), rng.randrange(400), rng.randrange(6000)])
    payload = random_payload(rng, text, size)
    if text:  # cut at a byte count: it may have split a character; drop the partial one
        payload = payload.decode("utf-8", "ignore").encode()
    cuts = [rng.randrange(size + 1) for _ in range(rng.choice([0, 0, 1, 3, 6, 20]))]
    pings = [rng.randrange(1, 8) for _ in range(rng.choice([0, 0, 1, 2]))]
    return Message(text, payload, cuts, pings)


def deflate_fragments(side: str, *parts: bytes) -> list[bytes]:
    """The payloads of a message compressed as RFC 7692 §7.2.1 says, one per fragment, within
    the window that open_protocol negotiates for the peer: our server asks the client for
    ``WINDOW_BITS`` (12), wsproto's server keeps 15. (tests/test_protocol.py's helper always
    uses 15: a client's message of over 4 KiB, which it never builds, would break the window.)
    """
    compressor = zlib.compressobj(wbits=-(WINDOW_BITS if side == "server" else 15))
    payloads = [compressor.compress(part) + compressor.flush(zlib.Z_SYNC_FLUSH) for part in parts]
    payloads[-1] = payloads[-1].removesuffix(b"\x00\x00\xff\xff")
    return payloads


def compressed_frames_of(side: str, message: Message) -> bytes:
    """The message compressed (RFC 7692) in frames split at its cuts, pings among them."""
    parts = parts_of(message)
    data = b""
    for index, payload in enumerate(deflate_fragments(side, *parts)):
        if index and index in message.pings:
            data += build_frame(side, PING, b"ping %d" % index)
        opcode = (TEXT if message.text else BINARY) if index == 0 else CONTINUATION
        data += build_frame(side, opcode, payload, fin=index == len(parts) - 1, rsv1=index == 0)
    return data


def stream_of(side: str, stream: list[Message], compression: bool) -> bytes:
    build = compressed_frames_of if compression else frames_of
    return b"".join(build(side, message) for message in stream)


def outcome_name(outcome: Outcome) -> str:
    return f"failed {outcome.failed.code}" if outcome.failed else "no failure"


# -- valid, broken and random streams ------------------------------------------------------


def frames_valid(rng: random.Random) -> Case:
    side, compression = rng.choice(["client", "server"]), rng.random() < 0.5
    stream = [random_message(rng) for _ in range(rng.randrange(7))]
    wire = stream_of(side, stream, compression)
    closed = rng.random() < 0.7
    if closed:
        wire += build_frame(side, CLOSE, b"\x03\xe8bye")
    cuts = random_cuts(rng, len(wire))

    def run() -> str:
        protocol, _ = open_protocol(side, compression=compression, joined=False)
        outcome = feed(protocol, wire, cuts)
        assert outcome.failed is None, outcome.failed
        assert outcome.messages == expected_messages(stream)
        pings = [PingReceived(payload) for message in stream for payload in pings_of(message)]
        assert outcome.controls == [*pings, *([CloseReceived(1000, "bye")] if closed else [])]
        return "delivered, deflate" if compression else "delivered"

    return (side, compression, stream, closed, cuts), run


def mutate(rng: random.Random, wire: bytes) -> bytes:
    """Random bytes of ``wire`` flipped, inserted or deleted, 1 to 4 times."""
    data = bytearray(wire)
    for _ in range(rng.randint(1, 4)):
        action = rng.choice(["flip", "insert", "delete"])
        at = rng.randrange(len(data) + 1)
        if action == "flip" and at < len(data):
            data[at] ^= rng.randrange(1, 256)
        elif action == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            del data[at : at + rng.randint(1, 16)]
    return bytes(data)


def frames_mutated(rng: random.Random) -> Case:
    side, compression = rng.choice(["client", "server"]), rng.random() < 0.5
    stream = [random_message(rng) for _ in range(rng.randrange(5))]
    wire = mutate(rng, stream_of(side, stream, compression))
    splits = [random_cuts(rng, len(wire)) for _ in range(1 if compression else 2)]

    def run() -> str:
        outcomes = []
        for cuts in splits:
            protocol, _ = open_protocol(side, max_size=1000, compression=compression, joined=False)
            outcomes.append(feed(protocol, wire, cuts))
        first, *others = outcomes
        for other in others:
            assert first.messages == other.messages
            assert first.controls == other.controls
            assert (first.failed and first.failed.code) == (other.failed and other.failed.code)
        return outcome_name(first)

    return (side, compression, wire, splits), run


def frames_random(rng: random.Random) -> Case:
    side, compression = rng.choice(["client", "server"]), rng.random() < 0.5
    raw = rng.randbytes(rng.randrange(300))
    if rng.random() < 0.3:  # a plausible first byte: a data or control frame, FIN or not
        raw = bytes([rng.choice([0x00, 0x01, 0x02, 0x08, 0x09, 0x0A, 0x81, 0x82, 0xC1])]) + raw
    cuts = random_cuts(rng, len(raw))

    def run() -> str:
        protocol, _ = open_protocol(side, max_size=1000, compression=compression, joined=False)
        return outcome_name(feed(protocol, raw, cuts))

    return (side, compression, raw, cuts), run


def frames_controls(rng: random.Random) -> Case:
    side = rng.choice(["client", "server"])
    opcodes = [PING, PONG, CLOSE, TEXT, BINARY, CONTINUATION]
    frames = [
        (rng.choice(opcodes), rng.randbytes(rng.randrange(131)), rng.random() < 0.7)
        for _ in range(rng.randrange(7))
    ]
    wire = b"".join(build_frame(side, op, payload, fin=fin) for op, payload, fin in frames)
    cuts = random_cuts(rng, len(wire))

    def run() -> str:
        protocol, _ = open_protocol(side, joined=False)
        return outcome_name(feed(protocol, wire, cuts))

    return (side, frames, cuts), run


# -- fragment storms -----------------------------------------------------------------------


def feed_holding(protocol: Protocol, data: bytes, cuts: list[int]) -> list[Event]:
    """Feed ``data`` in reads ending at ``cuts``, keeping every event, as a receive queue
    would, until the end or a Failed."""
    held: list[Event] = []
    start = 0
    for end in [*cuts, len(data)]:
        held += protocol.receive_data(data[start:end])
        start = end
        if held and isinstance(held[-1], Failed):
            break
    return held


def frames_storm(rng: random.Random) -> Case:
    side, text = rng.choice(["client", "server"]), rng.random() < 0.5
    traced = rng.random() < 0.25
    max_size = rng.choice([16384, 65536] if traced else [640, 4096, 16384])
    allowed = 1 + max_size // FRAME_COST
    over = rng.random() < 0.7
    count = allowed + rng.randint(1, 40) if over else rng.randint(2, allowed)
    sizes = [rng.choice([0, 1, 1, 1, 2, 3]) for _ in range(count)]
    # Text: valid UTF-8 cut into frames of those sizes, characters split between frames too.
    body = random_payload(rng, text, sum(sizes))
    if text:
        body = body.decode("utf-8", "ignore").encode()
    parts, at = [], 0
    for size in sizes:
        parts.append(body[at : at + size])
        at += size
    frames = [
        build_frame(
            side,
            (TEXT if text else BINARY) if index == 0 else CONTINUATION,
            part,
            fin=not over and index == count - 1,
        )
        for index, part in enumerate(parts)
    ]
    wire = b"".join(frames)
    ends, at = [], 0  # one read per frame (the worst case), or reads of random sizes
    one_per_frame = rng.random() < 0.5
    for one in frames:
        at += len(one)
        if one_per_frame or rng.random() < 0.05:
            ends.append(at)
    cuts = ends[:-1] if not over else ends
    case = (side, text, max_size, count, over, one_per_frame, traced)

    def run() -> str:
        protocol, _ = open_protocol(side, max_size=max_size, joined=False)
        if traced:
            tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            held = feed_holding(protocol, wire, cuts)
            kept, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        pieces = [event for event in held if not isinstance(event, Failed)]
        assert all(isinstance(e, FragmentReceived | MessageReceived) for e in pieces), pieces
        data = b"".join(
            e.data.encode() if isinstance(e.data, str) else e.data  # type: ignore[union-attr]
            for e in pieces
        )
        if not over:
            assert held and not isinstance(held[-1], Failed), held[-1:]
            assert data == body
            return "delivered within the count"
        failed = held[-1]
        assert isinstance(failed, Failed), "no Failed event"
        assert failed.code == 1009 and isinstance(failed.error, PayloadTooBig), failed
        before_limit = b"".join(parts[:allowed])
        # Text: a character split by the refused frame's header stays in the decoder.
        assert before_limit.startswith(data) and len(before_limit) - len(data) < 4
        if traced:
            measured = MEASURED["frames-storm"]
            measured.traced += 1
            measured.traced_peak = max(measured.traced_peak, peak - before)
            ratio = (kept - before) / max_size
            measured.held_ratio = max(measured.held_ratio, ratio)
            assert ratio <= STORM_BOUND, f"held {kept - before:,} bytes, {ratio:.2f} x max_size"
        return "failed 1009 past the count"

    return case, run


# -- compressed bombs ----------------------------------------------------------------------


class _CountingInflater:
    """A zlib inflater that adds up how many bytes each call inflates."""

    def __init__(self, wbits: int, counts: list[int]) -> None:
        self._inflater = _decompressobj(wbits)
        self._counts = counts

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        output = self._inflater.decompress(data, max_length)
        self._counts.append(len(output))
        return output


_decompressobj = zlib.decompressobj


@contextlib.contextmanager
def counting_inflaters() -> Iterator[list[int]]:
    """Count what every zlib inflater made meanwhile inflates, as the bomb tests of
    tests/test_protocol.py do with monkeypatch; zlib is restored on the way out."""
    counts: list[int] = []
    zlib.decompressobj = lambda wbits: _CountingInflater(wbits, counts)  # type: ignore[assignment,misc]
    try:
        yield counts
    finally:
        zlib.decompressobj = _decompressobj


def frames_bomb(rng: random.Random) -> Case:
    side = rng.choice(["client", "server"])
    max_size = rng.choice([1024, 16384, 65536, 262144])
    exact = rng.random() < 0.1
    size = max_size if exact else max_size + rng.choice([1, 7, rng.randrange(1, 3 * max_size)])
    unit = rng.choice([b"\x00", b"ab", rng.randbytes(rng.randint(1, 16))])
    body = (unit * (size // len(unit) + 1))[:size]
    # In at most 1 + max_size // FRAME_COST frames, so that one of exactly max_size is valid.
    frames = rng.choice([0, 0, 1, 4, min(64, max_size // FRAME_COST)])
    cuts = sorted(rng.randrange(size + 1) for _ in range(frames))
    first = (
        [Message(False, rng.randbytes(rng.randrange(200)), [], [])] if rng.random() < 0.5 else []
    )
    bomb = Message(False, body, cuts, [rng.randint(1, 4)] if rng.random() < 0.3 else [])
    wire = stream_of(side, [*first, bomb], compression=True)
    reads = random_cuts(rng, len(wire))
    traced = rng.random() < 0.05
    case = (side, max_size, size, unit, cuts, first, reads, traced)

    def run() -> str:
        protocol, _ = open_protocol(side, max_size=max_size, compression=True, joined=False)
        if traced:
            tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            with counting_inflaters() as inflated:
                outcome = feed(protocol, wire, reads)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        earlier = sum(len(message.payload) for message in first)
        if traced:
            measured = MEASURED["frames-bomb"]
            measured.traced += 1
            measured.traced_peak = max(measured.traced_peak, peak - before)
        if exact:
            assert outcome.failed is None, outcome.failed
            assert outcome.messages == expected_messages([*first, bomb])
            return "delivered at max_size"
        assert outcome.failed is not None and outcome.failed.code == 1009, outcome.failed
        assert isinstance(outcome.failed.error, PayloadTooBig)
        assert outcome.messages == expected_messages(first)
        assert sum(inflated) <= earlier + max_size + 1, f"inflated {sum(inflated):,} bytes"
        return "failed 1009"

    return case, run


FRAME_TARGETS: dict[str, tuple[int, Callable[[random.Random], Case]]] = {
    "frames-valid": (30, frames_valid),
    "frames-mutated": (38, frames_mutated),
    "frames-random": (12, frames_random),
    "frames-controls": (12, frames_controls),
    "frames-storm": (4, frames_storm),
    "frames-bomb": (4, frames_bomb),
}
