"""Soak trio_ws: thousands of idle connections, then thousands of connections one after another.

Run it with ``python stress/soak.py`` (3,000 idle connections, 20,000 cycles: about a minute)
or ``python stress/soak.py --quick`` (300 and 2,000: a few seconds, for CI); ``--help`` lists
the options. It exits with 1 if a connection or a cycle failed, or if file descriptors did not
come back to their count at the start; with 0 otherwise.

How this works: each phase starts a fresh echo server (this script with ``--serve``) in a
process of its own, so that its memory is the server's alone: VmRSS read from
``/proc/<pid>/status``, its open files counted in ``/proc/<pid>/fd``. A fresh server per phase,
because memory freed by the idle phase would otherwise hide what the cycles leak. This process
is the client, on trio_ws too.

- idle: open N connections (at most ``OPENING_AT_ONCE`` handshakes at a time), echo once on
  each (so that every handler runs), hold them all, read the server's memory, close them all.
  Reported: KiB of server RSS per held connection, (RSS holding - RSS before) / N.
- cycles: M times, one after the other: connect, echo once, close. Reported: the open files of
  the server and of this process at the start and at the end (they must be equal), and the
  drift of the server's RSS per cycle, (RSS after - RSS after the warm-up) / M, in bytes; the
  warm-up is ``WARM_UP`` cycles more, run first, so that the caches and free lists a working
  server keeps are full before the first reading.

Both processes take their open-file soft limit up to the hard one. Every loop is bounded by its
count, every phase by a time limit; the server is ended by its PID (SIGTERM, then SIGKILL),
whatever happens.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, TypeVar

import trio

import trio_ws

HOST = "127.0.0.1"
MESSAGE = "0123456789abcdef" * 2  # 32 bytes of text, echoed once per connection
OPENING_AT_ONCE = 100  # idle: opening handshakes in flight at once
WARM_UP = 1_000  # cycles run before the first memory reading (fewer if --cycles is smaller)
MAX_ECHOES = 1_000_000  # per connection on the server: the bound of the echo loop
CYCLE_LIMIT = 10.0  # seconds for one connect/echo/close cycle
PHASE_LIMIT = 60.0  # seconds for a phase, plus PER_CONNECTION for each connection or cycle
PER_CONNECTION = 0.05
SETTLE_LIMIT = 10.0  # seconds for the server's fds to come back once the clients closed
SETTLE_POLL = 0.01  # seconds between two counts meanwhile (another process: nothing to wait on)
END_GRACE = 5.0  # seconds between SIGTERM and SIGKILL, and after SIGKILL
LINE_LIMIT = 10_000  # bytes in the server's one line; more is a broken server
FULL = {"idle": 3_000, "cycles": 20_000}
QUICK = {"idle": 300, "cycles": 2_000}
# What a failed connection or cycle raises: counted, reported, never a crash of the soak.
FAILURES = (OSError, trio_ws.WebSocketError, trio.TooSlowError, ValueError)

T = TypeVar("T")


def raise_open_file_limit() -> tuple[int, int]:
    """Take the open-file soft limit up to the hard one; the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65_536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- the server process ------------------------------------------------------------------------


async def echo(ws: trio_ws.ServerConnection) -> None:
    for _ in range(MAX_ECHOES):
        try:
            message = await ws.recv()
        except trio_ws.ConnectionClosed:
            return
        await ws.send(message)


async def serve(compression: str | None) -> None:
    """Serve echo on HOST, say ``PORT <n>``, and run until ended by a signal."""
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            partial(trio_ws.serve, echo, HOST, 0, compression=compression)
        )
        print(f"PORT {server.port}", flush=True)
        await trio.sleep_forever()


# -- reading a process from /proc ------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (/proc says "kB")."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def settled_fds(pid: int, wanted: int) -> int:
    """The server's open files once they are back to ``wanted``, or after SETTLE_LIMIT: its
    sockets close as the closing handshakes end, a little after this process saw them end."""
    count = open_fds(pid)
    with trio.move_on_after(SETTLE_LIMIT):
        while count != wanted:
            await trio.sleep(SETTLE_POLL)
            count = open_fds(pid)
    return count


class ServerProcess:
    """A soak server in its own process: its port and PID; ended by PID by :meth:`end`."""

    def __init__(self, process: trio.Process, port: int, errors: IO[bytes]) -> None:
        self.process, self.port, self._errors = process, port, errors

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, compression: str, errors: IO[bytes]) -> ServerProcess:
        process = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--serve", "--compression", compression],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        try:
            assert process.stdout is not None
            line = bytearray()
            while not line.endswith(b"\n"):
                if len(line) > LINE_LIMIT:
                    raise RuntimeError(f"the server said over {LINE_LIMIT:,} bytes, no port")
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise RuntimeError("the server exited before saying its port")
                line += chunk
            if not line.startswith(b"PORT "):
                raise RuntimeError(f"expected PORT <n> from the server, got {bytes(line)!r}")
            return cls(process, int(line[5:]), errors)
        except BaseException:
            await end_process(process)
            raise

    async def end(self) -> None:
        await end_process(self.process)

    def error_tail(self, lines: int = 12) -> str:
        self._errors.seek(0)
        text = self._errors.read().decode(errors="replace").strip()
        return "\n".join(text.splitlines()[-lines:])


async def end_process(process: trio.Process) -> None:
    """End a process by its PID: SIGTERM, then SIGKILL; bounded, even when cancelled."""
    with trio.CancelScope(shield=True):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if process.returncode is not None:
                break
            process.send_signal(sig)
            with trio.move_on_after(END_GRACE):
                await process.wait()
        if process.stdout is not None:
            await trio.aclose_forcefully(process.stdout)


# -- the client: this process ----------------------------------------------------------------


@dataclass
class Failures:
    """Connections or cycles that failed: how many, and the first few reasons."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, what: str, exc: BaseException) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(f"{what}: {exc!r}")


async def echo_once(ws: trio_ws.ClientConnection) -> None:
    await ws.send(MESSAGE)
    reply = await ws.recv()
    if reply != MESSAGE:
        raise ValueError(f"echoed {reply!r}, not {MESSAGE!r}")


@dataclass
class IdleReport:
    connections: int
    failures: Failures
    open_seconds: float
    rss_before: int  # KiB, the server's, with one warm-up connection made and closed
    rss_holding: int
    fds_before: int  # the server's
    fds_holding: int
    fds_after: int

    @property
    def kib_per_connection(self) -> float:
        return (self.rss_holding - self.rss_before) / max(self.connections, 1)


async def idle(server: ServerProcess, count: int, compression: str | None) -> IdleReport:
    """Open ``count`` connections, echo once on each, hold them all, read the server's memory
    and open files, then close them all."""
    uri = f"ws://{HOST}:{server.port}/"
    connect = partial(trio_ws.connect, uri, compression=compression, proxy=None)
    failures = Failures()
    fds_before = open_fds(server.pid)
    async with connect() as ws:  # the warm-up: the server's first connection is no idle one
        await echo_once(ws)
    await settled_fds(server.pid, fds_before)
    rss_before = rss_kib(server.pid)
    opening = trio.CapacityLimiter(OPENING_AT_ONCE)
    settled = trio.Event()
    release = trio.Event()
    held = arrived = 0  # arrived: held, or failed before it was

    def arrive() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            settled.set()

    async def one(number: int) -> None:
        nonlocal held
        holding = False
        try:
            async with AsyncExitStack() as stack:
                async with opening:
                    ws = await stack.enter_async_context(connect())
                    await echo_once(ws)
                holding = True
                held += 1
                arrive()
                await release.wait()
        except FAILURES as exc:
            failures.add(f"idle connection {number}", exc)
            if holding:
                held -= 1  # it failed while held: not one of the connections measured
            else:
                arrive()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for number in range(count):
            nursery.start_soon(one, number)
        await settled.wait()
        open_seconds = time.perf_counter() - start
        rss_holding = rss_kib(server.pid)
        fds_holding = open_fds(server.pid)
        release.set()
    return IdleReport(
        connections=held,
        failures=failures,
        open_seconds=open_seconds,
        rss_before=rss_before,
        rss_holding=rss_holding,
        fds_before=fds_before,
        fds_holding=fds_holding,
        fds_after=await settled_fds(server.pid, fds_before),
    )


@dataclass
class CycleReport:
    cycles: int
    warm_up: int
    failures: Failures
    seconds: float  # the measured cycles, warm-up excluded
    server_fds: tuple[int, int]  # at the start, at the end
    own_fds: tuple[int, int]
    rss: list[tuple[int, int]]  # (cycles done, server KiB), from the end of the warm-up

    @property
    def drift_bytes_per_cycle(self) -> float:
        return _drift(self.rss[0], self.rss[-1])

    @property
    def late_drift_bytes_per_cycle(self) -> float:
        """Over the second half only: a leak keeps growing, a cache that fills up does not."""
        return _drift(self.rss[len(self.rss) // 2], self.rss[-1])


def _drift(first: tuple[int, int], last: tuple[int, int]) -> float:
    """Bytes of RSS per cycle between two (cycles done, KiB) samples."""
    return (last[1] - first[1]) * 1024 / max(last[0] - first[0], 1)


async def cycles(server: ServerProcess, count: int, compression: str | None) -> CycleReport:
    """Connect, echo once and close, ``count`` times one after the other, after a warm-up."""
    uri = f"ws://{HOST}:{server.port}/"
    failures = Failures()
    server_fds, own_fds = open_fds(server.pid), open_fds()
    warm_up = min(WARM_UP, count)

    async def cycle(number: int) -> None:
        try:
            with trio.fail_after(CYCLE_LIMIT):
                async with trio_ws.connect(uri, compression=compression, proxy=None) as ws:
                    await echo_once(ws)
        except FAILURES as exc:
            failures.add(f"cycle {number}", exc)

    for number in range(warm_up):
        await cycle(-1 - number)
    await settled_fds(server.pid, server_fds)
    rss = [(0, rss_kib(server.pid))]
    quarter = max(count // 4, 1)
    start = time.perf_counter()
    for number in range(count):
        await cycle(number)
        if (number + 1) % quarter == 0 and number + 1 < count:
            rss.append((number + 1, rss_kib(server.pid)))
    seconds = time.perf_counter() - start
    server_fds_end = await settled_fds(server.pid, server_fds)
    rss.append((count, rss_kib(server.pid)))
    return CycleReport(
        cycles=count,
        warm_up=warm_up,
        failures=failures,
        seconds=seconds,
        server_fds=(server_fds, server_fds_end),
        own_fds=(own_fds, open_fds()),
        rss=rss,
    )


async def in_server(
    compression: str, limit: float, phase: Callable[[ServerProcess], Awaitable[T]]
) -> T:
    """Run ``phase`` against a fresh server process, bounded by ``limit``; end the server.

    Raises:
        trio.TooSlowError: the phase overran ``limit``.
        RuntimeError: the server did not start, or /proc did not say its memory.
    """
    with tempfile.TemporaryFile() as errors:
        server = await ServerProcess.start(compression, errors)
        try:
            with trio.fail_after(limit):
                return await phase(server)
        except BaseException:
            if tail := server.error_tail():
                print(f"-- server stderr:\n{tail}", file=sys.stderr)
            raise
        finally:
            await server.end()


# -- the report --------------------------------------------------------------------------------


def commit() -> str:
    """The commit checked out here (with "+changes" when the tree differs), or "unknown"."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+changes" if dirty else head


def report_idle(report: IdleReport, asked: int) -> list[str]:
    return [
        f"idle: {report.connections:,} of {asked:,} connections held, opened in "
        f"{report.open_seconds:.1f} s, {report.failures.count} failed",
        f"  server RSS {report.rss_before:,} KiB before, {report.rss_holding:,} KiB holding: "
        f"{report.kib_per_connection:.1f} KiB per idle connection",
        f"  server fds {report.fds_before:,} before, {report.fds_holding:,} holding, "
        f"{report.fds_after:,} after",
    ]


def report_cycles(report: CycleReport) -> list[str]:
    (first_fds, last_fds), (own_first, own_last) = report.server_fds, report.own_fds
    per_cycle = report.seconds / max(report.cycles, 1) * 1000
    samples = ", ".join(f"{kib:,}" for _, kib in report.rss)
    return [
        f"cycles: {report.cycles:,} connect/echo/close after {report.warm_up:,} of warm-up, "
        f"{report.failures.count} failed, in {report.seconds:.1f} s ({per_cycle:.2f} ms each)",
        f"  fds: server {first_fds} at the start, {last_fds} at the end; "
        f"soak {own_first} at the start, {own_last} at the end",
        f"  server RSS at 0, 1/4, 1/2, 3/4, all of the cycles: {samples} KiB",
        f"  drift {report.drift_bytes_per_cycle:+.1f} bytes per cycle "
        f"({report.late_drift_bytes_per_cycle:+.1f} over the second half)",
    ]


async def soak(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    compression = None if args.compression == "none" else args.compression
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(
        f"trio_ws soak, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit "
        f"{commit()}, Python {platform.python_version()}, trio {trio.__version__}, "
        f"{os.cpu_count()} CPUs, open files {limits[0]:,}",
        flush=True,
    )
    print(
        "  memory: the server's VmRSS, alone in its own process (a fresh one per phase); "
        f"serve() defaults but compression={args.compression}",
        flush=True,
    )
    problems: list[str] = []
    try:
        if args.idle:
            limit = PHASE_LIMIT + PER_CONNECTION * args.idle
            idle_phase = partial(idle, count=args.idle, compression=compression)
            idle_report = await in_server(args.compression, limit, idle_phase)
            for line in report_idle(idle_report, args.idle):
                print(line, flush=True)
            problems += idle_report.failures.first
            if idle_report.fds_after != idle_report.fds_before:
                problems.append("idle: the server's fds did not come back to their count before")
        if args.cycles:
            limit = PHASE_LIMIT + PER_CONNECTION * (args.cycles + WARM_UP)
            cycle_phase = partial(cycles, count=args.cycles, compression=compression)
            cycle_report = await in_server(args.compression, limit, cycle_phase)
            for line in report_cycles(cycle_report):
                print(line, flush=True)
            problems += cycle_report.failures.first
            if len(set(cycle_report.server_fds)) != 1:
                problems.append("cycles: the server's fds did not come back to their start")
            if len(set(cycle_report.own_fds)) != 1:
                problems.append("cycles: this process's fds did not come back to their start")
    except trio.TooSlowError:
        problems.append("a phase overran its time limit")
    except RuntimeError as exc:
        problems.append(str(exc))
    print(f"run time: {time.perf_counter() - started:.1f} s", flush=True)
    for problem in problems:
        print(f"FAILED: {problem}", flush=True)
    print("FAILED" if problems else "OK", flush=True)
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Soak trio_ws: idle connections held, then connect/echo/close cycles.",
    )
    parser.add_argument(
        "--idle", type=int, help=f"connections held open at once (default {FULL['idle']:,})"
    )
    parser.add_argument(
        "--cycles",
        type=int,
        help=f"sequential connect/echo/close cycles (default {FULL['cycles']:,})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK['idle']:,} idle, {QUICK['cycles']:,} cycles unless given: for CI",
    )
    parser.add_argument(
        "--compression",
        choices=["deflate", "none"],
        default="deflate",
        help="both sides' compression option (default deflate, serve()'s own default)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_open_file_limit()
    if args.serve:
        trio.run(serve, None if args.compression == "none" else args.compression)
        return
    defaults = QUICK if args.quick else FULL
    args.idle = defaults["idle"] if args.idle is None else args.idle
    args.cycles = defaults["cycles"] if args.cycles is None else args.cycles
    if args.idle < 0 or args.cycles < 0:
        parser.error("--idle and --cycles must be at least 0")
    sys.exit(trio.run(soak, args))


if __name__ == "__main__":
    main()
