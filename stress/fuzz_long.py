"""Fuzz the handshake's parsers and the frame path for a long run: millions of inputs, no pytest.

The properties are tests/test_handshake_fuzz.py's, with its generators and checks imported
from there; here plain ``random.Random`` loops drive them instead of hypothesis, so that a
million inputs take minutes. ``--targets`` picks the handshake's, the frame path's (from
fuzz_frames_long.py, whose docstring has them) or all (the default). The handshake's targets,
interleaved (the share of the handshake inputs each gets):

- server-valid (8%), server-mutated (30%), server-random (10%): ``check_server`` on a valid
  upgrade request split into reads, on one broken at random, on random bytes.
- server-endless (1%): a head that never ends, in reads of random sizes: 431 from the read
  that takes it past MAX_HEAD_SIZE, never before; each one under tracemalloc.
- client-valid (5%), client-mutated (25%), client-random (6%): ``check_client`` likewise on
  101 responses.
- uri-mutated (10%), uri-random (5%): ``check_uri`` on broken valid URIs and random text.

Every input has its own seed (``--seed`` and its index), printed with it if it breaks an
invariant. A watchdog thread ends the run with status 2 if one input takes longer than
``--hang`` seconds (a hang), after printing it. Exits 1 if any invariant broke (an assertion or
an exception the checks do not expect), 0 otherwise. Outcomes that a known bug explains (the
checks name it, "known bug: ...") are counted apart and do not fail the run.

    python stress/fuzz_long.py --inputs 1000000 --time-limit 1800
    python stress/fuzz_long.py --targets frames --inputs 1000000
    python stress/fuzz_long.py --quick        # 20,000 handshake and 10,000 frame inputs, for CI
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.metadata
import itertools
import os
import platform
import random
import resource
import subprocess
import sys
import threading
import time
import traceback
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fuzz_frames_long import FRAME_TARGETS, report  # noqa: E402

from tests.test_handshake_fuzz import (  # noqa: E402
    REQUEST_LINES,
    STATUS_LINES,
    SUBPROTOCOLS,
    VALID_URIS,
    answering,
    check_client,
    check_server,
    check_uri,
    cuts_for,
    mutate,
    mutate_uri,
    new_client,
    random_bytes,
    valid_request,
    valid_response,
)
from trio_ws._handshake import MAX_HEAD_SIZE, HandshakeRejected, ServerHandshake  # noqa: E402

#: An input: what it is (for the report) and the check that runs it, returning an outcome.
Case = tuple[object, Callable[[], str]]


#: The most one endless head may trace, with reads of ``size`` bytes: the head twice (h11's
#: buffer and the handshake's copy), the read in flight and this script's own copies of it
#: (up to four reads' worth), the 431 response, with room to spare.
def endless_traced_limit(size: int) -> int:
    return 6 * MAX_HEAD_SIZE + 4 * size


def server_case(rng: random.Random, data: bytes) -> Case:
    cuts = cuts_for(rng, len(data))
    eof, compression = rng.random() < 0.5, rng.random() < 0.5
    return (data, cuts, eof), lambda: check_server(data, cuts, eof=eof, compression=compression)


def server_valid(rng: random.Random) -> Case:
    data = valid_request(rng)
    cuts = cuts_for(rng, len(data))

    def run() -> str:
        outcome = check_server(data, cuts, eof=False, compression=rng.random() < 0.5)
        assert outcome == "accepted", outcome
        return outcome

    return (data, cuts), run


def server_mutated(rng: random.Random) -> Case:
    return server_case(rng, mutate(rng, valid_request(rng), REQUEST_LINES))


def server_random(rng: random.Random) -> Case:
    return server_case(rng, b"".join(random_bytes(rng) for _ in range(rng.randrange(1, 13))))


def server_endless(rng: random.Random) -> Case:
    size = rng.choice([1, 7, 100, 1000, 4096, 65536])
    lines = [rng.randrange(3000) for _ in range(40)]

    def run() -> str:
        handshake = ServerHandshake(server_header=None)
        fed, data = 0, b"GET / HTTP/1.1\r\n"
        tracemalloc.start()
        try:
            for line in itertools.cycle(lines):
                data += b"X-%d: %s\r\n" % (fed, b"v" * line)
                while len(data) >= size:
                    chunk, data = data[:size], data[size:]
                    fed += len(chunk)
                    assert handshake.receive_data(chunk) is None
                    assert fed <= MAX_HEAD_SIZE, f"still waiting after {fed:,} bytes"
        except HandshakeRejected as exc:
            assert exc.status_code == 431, exc
            assert fed - len(chunk) <= MAX_HEAD_SIZE < fed
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        STATS["server-endless"].traced_peak = max(STATS["server-endless"].traced_peak, peak)
        limit = endless_traced_limit(size)
        assert peak <= limit, f"traced {peak:,} bytes for one endless head (limit {limit:,})"
        return "rejected 431"

    return ("endless head", size, lines), run


def client_case(rng: random.Random, mutated: bool) -> Case:
    compression, offered = rng.random() < 0.5, rng.random() < 0.5
    subprotocols = SUBPROTOCOLS[: rng.randint(1, 2)] if offered else ()
    client = new_client(compression, subprotocols)
    data = valid_response(
        rng, subprotocols=subprotocols, compression="deflate" if compression else None
    )
    if mutated:
        data = mutate(rng, data, STATUS_LINES)
    data = answering(data, client)
    cuts = cuts_for(rng, len(data))
    eof = mutated and rng.random() < 0.5

    def run() -> str:
        outcome = check_client(
            data,
            cuts,
            eof=eof,
            client=client,
            compression=compression,
            subprotocols=subprotocols,
        )
        assert mutated or outcome.startswith("opened"), outcome
        return outcome

    return (data, cuts, eof, compression, subprotocols), run


def client_random(rng: random.Random) -> Case:
    data = b"".join(random_bytes(rng) for _ in range(rng.randrange(1, 13)))
    if rng.random() < 0.5:
        data = b"HTTP/1.1 " + data
    client = new_client(False, ())
    cuts = cuts_for(rng, len(data))
    return (data, cuts), lambda: check_client(
        data, cuts, eof=True, client=client, compression=False, subprotocols=()
    )


def uri_mutated(rng: random.Random) -> Case:
    text = mutate_uri(rng, rng.choice(VALID_URIS))
    return text, lambda: check_uri(text)


_URI_TEXT = "ws:/[]@#?%.:-_~0123456789abcdefxn\u00fc\u00df\u4e2d\u0130 \t\x00\x7f\ufffd"


def uri_random(rng: random.Random) -> Case:
    size = rng.randrange(40)
    if rng.random() < 0.5:
        body = "".join(rng.choice(_URI_TEXT) for _ in range(size))
    else:
        body = "".join(chr(rng.randrange(0x30000)) for _ in range(size))
    text = rng.choice(["", "ws://", "wss://", "ws:", "WS://["]) + body
    return text, lambda: check_uri(text)


HANDSHAKE_TARGETS: dict[str, tuple[int, Callable[[random.Random], Case]]] = {
    "server-valid": (8, server_valid),
    "server-mutated": (30, server_mutated),
    "server-random": (10, server_random),
    "server-endless": (1, server_endless),
    "client-valid": (5, lambda rng: client_case(rng, mutated=False)),
    "client-mutated": (25, lambda rng: client_case(rng, mutated=True)),
    "client-random": (6, client_random),
    "uri-mutated": (10, uri_mutated),
    "uri-random": (5, uri_random),
}
GROUPS = {"handshake": HANDSHAKE_TARGETS, "frames": FRAME_TARGETS}
#: The inputs of each group in a --quick run (multiples of 10,000), under 30 s in all for CI:
#: a frame input takes about twice as long as a handshake input.
QUICK = {"handshake": 20_000, "frames": 10_000}
TARGETS = {**HANDSHAKE_TARGETS, **FRAME_TARGETS}


@dataclass
class Stats:
    inputs: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: int = 0
    slowest: float = 0.0  # seconds, the longest one input took
    traced_peak: int = 0  # bytes, server-endless only


STATS = {name: Stats() for name in TARGETS}


@dataclass
class Current:
    """What the main loop is running, for the watchdog."""

    index: int = -1
    target: str = ""
    started: float = 0.0
    case: object = None


def watchdog(current: Current, hang: float, stop: threading.Event) -> None:
    """End the process with status 2 if one input runs longer than ``hang`` seconds."""
    while not stop.wait(1.0):
        if current.index >= 0 and time.monotonic() - current.started > hang:
            print(
                f"\nHANG: {current.target} input {current.index} ran over {hang} s:\n"
                f"{shorten(current.case)}",
                flush=True,
            )
            os._exit(2)


def shorten(case: object, limit: int = 4000) -> str:
    text = repr(case)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs in all")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="seconds at most")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds one input may take")
    parser.add_argument(
        "--targets", choices=["frames", "handshake", "all"], default="all", help="which ones"
    )
    parser.add_argument(
        "--quick", action="store_true", help="QUICK inputs per group, 300 s at most"
    )
    parser.add_argument("--max-failures", type=int, default=5, help="stop after this many")
    args = parser.parse_args()
    groups = list(GROUPS) if args.targets == "all" else [args.targets]
    # Each group gets an equal share of the inputs (--quick: QUICK's), and each target its
    # share of its group's.
    shares = {group: QUICK[group] // 10_000 if args.quick else 1 for group in groups}
    if args.quick:
        args.inputs = sum(QUICK[group] for group in groups)
        args.time_limit = min(args.time_limit, 300.0)
    schedule = [
        name
        for group in groups
        for name, (weight, _) in GROUPS[group].items()
        for _ in range(weight * shares[group])
    ]
    print(
        f"fuzz_long: {args.inputs:,} inputs, targets {args.targets}, seed {args.seed}, "
        f"commit {commit()}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"Python {platform.python_version()}, h11 {importlib.metadata.version('h11')}, "
        f"wsproto {importlib.metadata.version('wsproto')}",
        flush=True,
    )
    current = Current()
    stop = threading.Event()
    threading.Thread(target=watchdog, args=(current, args.hang, stop), daemon=True).start()
    failures = 0
    started = time.monotonic()
    done = 0
    for index in range(args.inputs):
        if index % 1000 == 0 and time.monotonic() - started > args.time_limit:
            print(f"time limit reached after {index:,} of {args.inputs:,} inputs", flush=True)
            break
        name = schedule[index % len(schedule)]
        stats = STATS[name]
        rng = random.Random(args.seed * 1_000_000_007 + index)
        case: object = f"input {index} of {name}: not generated"
        current.target, current.case, current.started = name, case, time.monotonic()
        current.index = index
        try:
            case, run = TARGETS[name][1](rng)
            current.case = case
            outcome = run()
        except Exception:  # an assertion, an exception the handshake does not document, or ours
            failures += 1
            stats.failures += 1
            outcome = "INVARIANT BROKEN"
            print(
                f"\nFAILED: {name} input {index} (seed {args.seed}):\n{shorten(case)}\n"
                f"{traceback.format_exc()}",
                flush=True,
            )
        elapsed = time.monotonic() - current.started
        current.index = -1
        stats.slowest = max(stats.slowest, elapsed)
        stats.inputs += 1
        stats.outcomes[outcome] += 1
        done += 1
        if done % 100_000 == 0:
            print(f"  {done:,} inputs, {time.monotonic() - started:,.0f} s", flush=True)
        if failures >= args.max_failures:
            print(f"stopping after {failures} failures", flush=True)
            break
    stop.set()
    duration = time.monotonic() - started

    print(f"\n{done:,} inputs in {duration:,.1f} s ({done / duration:,.0f}/s)")
    for name, stats in STATS.items():
        if not stats.inputs:
            continue
        extra = f", traced peak {stats.traced_peak / 1024:,.1f} KiB" if stats.traced_peak else ""
        extra += report(name)
        print(f"{name}: {stats.inputs:,} inputs, slowest {stats.slowest * 1000:,.1f} ms{extra}")
        for outcome, count in stats.outcomes.most_common():
            print(f"    {count:>10,}  {outcome}")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"peak RSS {peak_rss / 1024:,.1f} MiB; invariants broken: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
