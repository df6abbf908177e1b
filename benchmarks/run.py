"""Benchmark trio_ws against its peers, each library against itself, in one run.

Run it with ``python benchmarks/run.py`` (3 runs of everything, two Markdown tables on stdout:
compression off, then permessage-deflate on) or ``python benchmarks/run.py --quick`` (1 run,
smaller counts: a smoke test under a minute); ``--help`` lists the options,
``benchmarks/README.md`` defines every figure.

How this works: for each run, workload and library (the libraries interleaved, in an order
rotated from run to run and workload to workload; a library with permessage-deflate counts
twice, compression off and deflate on), this process starts an echo server
(``trio_peer.py`` or ``asyncio_peer.py --role server``, pinned to CPU 0 with taskset) and
reads its port from its stdout, then starts a client (``--role client``, pinned to CPU 1)
that warms up and says ``READY``. Here the server's memory is read from /proc (VmRSS,
VmHWM); ``GO`` on the client's stdin starts the timed part; the idle workload says
``HOLDING`` with every connection open, the server's memory is read again, and ``RELEASE``
lets it close them. The client's last line is its result (JSON). Both processes are then
ended by PID: SIGTERM, then SIGKILL. Every step is bounded by the measurement's time limit;
a measurement that fails or overruns is reported as failed, its processes ended, and the run
goes on. ``report.py`` turns the measurements into the tables and the pages, ``chart.py``
into the docs page's chart.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import trio
from report import (
    CEILING,
    DEFLATING,
    REFERENCE,
    Figure,
    Measurement,
    deflate_figures,
    environment,
    figures,
    markdown_report,
    ratio,
    rst_page,
    update_readme,
)
from workloads import FULL_COUNTS, QUICK_COUNTS, WORKLOADS

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Peer:
    """A library under test, and the script that serves and drives it."""

    name: str
    script: str
    deflate: bool = False  # this measurement with permessage-deflate on

    @property
    def label(self) -> str:
        return self.name + (" +deflate" if self.deflate else "")


PEERS = [
    Peer("trio_ws", "trio_peer.py"),
    Peer("websockets.trio", "trio_peer.py"),
    Peer("trio-websocket", "trio_peer.py"),
    Peer("websockets.asyncio", "asyncio_peer.py"),
    Peer("raw-trio", "trio_peer.py"),
]

SERVER_CPU, CLIENT_CPU = 0, 1
#: Where --docs draws the chart, next to the page (``docs/_static/performance.svg``).
CHART = Path("_static") / "performance.svg"
LINE_LIMIT = 1_000_000  # bytes in one line from a peer; more is a broken peer
END_GRACE = 5.0  # seconds between SIGTERM and SIGKILL, and after SIGKILL


# -- one measurement: a server process, a client process --------------------------------------


class PeerError(Exception):
    """A peer process said something unexpected, or nothing, or exited."""


class Lines:
    """The lines a peer prints on its stdout, one at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> str:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > LINE_LIMIT:
                raise PeerError(f"a line of over {LINE_LIMIT:,} bytes")
            chunk = await self._stream.receive_some()
            if not chunk:
                raise PeerError("the process closed its stdout (exited?)")
            self._buffer += chunk
        line = self._buffer[:end].decode()
        del self._buffer[: end + 1]
        return line

    async def expect(self, prefix: str) -> str:
        line = await self.next()
        if not line.startswith(prefix):
            raise PeerError(f"expected {prefix!r}, got {line[:200]!r}")
        return line[len(prefix) :]


def pinned(cpu: int) -> list[str]:
    """The command prefix that pins a process to ``cpu``, when taskset and 2 CPUs exist."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def server_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in KiB (/proc says "kB"); empty without /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            lines = status.read().splitlines()
    except OSError:
        return {}
    return {
        key: int(value.split()[0])
        for key, _, value in (line.partition(":") for line in lines)
        if key in ("VmRSS", "VmHWM")
    }


async def end_process(process: trio.Process) -> None:
    """End a peer by its PID: SIGTERM, then SIGKILL; bounded, even when cancelled."""
    with trio.CancelScope(shield=True):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if process.returncode is not None:
                break
            process.send_signal(sig)
            with trio.move_on_after(END_GRACE):
                await process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                await trio.aclose_forcefully(stream)


def _tail(file: IO[bytes], lines: int = 12) -> str:
    file.seek(0)
    text = file.read().decode(errors="replace").strip()
    return "\n".join(text.splitlines()[-lines:])


async def measure(peer: Peer, workload: str, count: int, run: int, limit: float) -> Measurement:
    """Run one workload for one library: a fresh server, a fresh client, both ended after."""
    measurement = Measurement(peer.name, workload, run, count, deflate=peer.deflate)
    base = [sys.executable, str(HERE / peer.script), "--lib", peer.name, "--workload", workload]
    if peer.deflate:
        base.append("--deflate")
    started = time.perf_counter()
    server: trio.Process | None = None
    client: trio.Process | None = None
    with (
        tempfile.TemporaryFile() as server_errors,
        tempfile.TemporaryFile() as client_errors,
    ):
        try:
            with trio.fail_after(limit):
                server = await trio.lowlevel.open_process(
                    [*pinned(SERVER_CPU), *base, "--role", "server"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=server_errors,
                )
                assert server.stdout is not None
                port = int(await Lines(server.stdout).expect("PORT "))
                arguments = ["--role", "client", "--count", str(count), "--port", str(port)]
                client = await trio.lowlevel.open_process(
                    [*pinned(CLIENT_CPU), *base, *arguments],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=client_errors,
                )
                assert client.stdin is not None and client.stdout is not None
                lines = Lines(client.stdout)
                await lines.expect("READY")
                measurement.memory["before"] = server_memory(server.pid)
                await client.stdin.send_all(b"GO\n")
                if workload == "idle":
                    await lines.expect("HOLDING")
                    measurement.memory["holding"] = server_memory(server.pid)
                    await client.stdin.send_all(b"RELEASE\n")
                line = await lines.next()
                try:
                    measurement.result = json.loads(line)
                except json.JSONDecodeError:
                    raise PeerError(f"expected the result, got {line[:200]!r}") from None
                if await client.wait() != 0:
                    raise PeerError(f"the client exited with {client.returncode}")
                if server.returncode is not None:
                    raise PeerError(f"the server exited with {server.returncode}")
                measurement.memory["after"] = server_memory(server.pid)
        except (trio.TooSlowError, PeerError, OSError, ValueError) as exc:
            what = "over the time limit" if isinstance(exc, trio.TooSlowError) else str(exc)
            measurement.error = (
                f"{what}\n-- server stderr:\n{_tail(server_errors)}"
                f"\n-- client stderr:\n{_tail(client_errors)}"
            )
        finally:
            for process in (client, server):
                if process is not None:
                    await end_process(process)
    measurement.seconds = time.perf_counter() - started
    return measurement


# -- the command ------------------------------------------------------------------------------


def _names(value: str, known: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; known: {', '.join(known)}"
        )
    return names


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    peer_names = [peer.name for peer in PEERS]
    parser = argparse.ArgumentParser(
        description="Benchmark trio_ws against websockets.trio, trio-websocket, "
        "websockets.asyncio and raw TCP on trio, compression off and permessage-deflate on; "
        "print Markdown tables."
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 run with small counts: a smoke test, under 1 min"
    )
    parser.add_argument("--runs", type=int, help="runs of everything (default 3; quick: 1)")
    parser.add_argument(
        "--only",
        type=lambda v: _names(v, peer_names, "library"),
        default=peer_names,
        metavar="LIB,...",
        help=f"libraries to run (default all: {','.join(peer_names)})",
    )
    parser.add_argument(
        "--workload",
        type=lambda v: _names(v, WORKLOADS, "workload"),
        default=list(WORKLOADS),
        metavar="W,...",
        help=f"workloads to run (default all: {','.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--deflate",
        choices=["both", "off", "only"],
        default="both",
        help="both (default): every library with compression off, then those with "
        "permessage-deflate with it on; off: the first table only; only: the second only "
        f"(with {CEILING}, without compression, as its ceiling)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds allowed for one measurement, processes included (default 300; quick: 60)",
    )
    parser.add_argument("--json", metavar="PATH", help="write every measurement and figure here")
    parser.add_argument(
        "--docs",
        metavar="PATH",
        help=f"write the docs page (performance.rst), and its chart in {CHART} beside it "
        "(needs matplotlib: the bench extra)",
    )
    parser.add_argument(
        "--readme", metavar="PATH", help="replace the results section of this README"
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.timeout is None:
        args.timeout = 60.0 if args.quick else 300.0
    if args.docs and importlib.util.find_spec("matplotlib") is None:
        # Before the run, not after minutes of it: the page shows the chart.
        parser.error("--docs draws a chart with matplotlib: pip install -e '.[bench]'")
    return args


def variants(peers: Sequence[Peer], deflate: str) -> list[Peer]:
    """What each run measures for ``--deflate``: the libraries with compression off, then those
    with permessage-deflate with it on (with "only", the ceiling still runs, off)."""
    plain = [p for p in peers if deflate != "only" or p.name == CEILING]
    deflated = [
        Peer(p.name, p.script, deflate=True)
        for p in peers
        if deflate != "off" and p.name in DEFLATING
    ]
    return plain + deflated


async def run_all(
    peers: Sequence[Peer], workloads: Sequence[str], counts: dict[str, int], args: Any
) -> list[Measurement]:
    measurements = []
    for run in range(args.runs):
        for index, workload in enumerate(workloads):
            # Rotate the order, so that no library always goes first (or last) in a workload.
            shift = (run + index) % len(peers)
            for peer in [*peers[shift:], *peers[:shift]]:
                m = await measure(peer, workload, counts[workload], run, args.timeout)
                measurements.append(m)
                status = "FAILED: " + (m.error or "").splitlines()[0] if m.error else "ok"
                print(
                    f"run {run + 1}/{args.runs} {workload:<9} {peer.label:<27} "
                    f"{m.seconds:6.1f} s  {status}",
                    file=sys.stderr,
                    flush=True,
                )
    return measurements


def _figures_json(table: Sequence[Figure]) -> list[dict[str, Any]]:
    return [
        {
            "workload": f.metric.workload,
            "metric": f.metric.key,
            "library": f.peer,
            "compression": f.compression,
            "values": f.values,
            "failures": f.failures,
            "median": f.median,
            "ratio_to_" + REFERENCE: ratio(f, table, REFERENCE),
            "ratio_to_" + CEILING: ratio(f, table, CEILING),
        }
        for f in table
    ]


def _shown(argument: str) -> str:
    """An argument as the published command shows it: an absolute path by its file name only
    (it names a place on the machine that ran it, not one a reader has)."""
    option, equals, value = (
        argument.rpartition("=") if argument.startswith("--") else ("", "", argument)
    )
    if os.path.isabs(value):
        value = Path(value).name
    return f"{option}{equals}{value}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    peers = [peer for peer in PEERS if peer.name in args.only]
    workloads = [w for w in WORKLOADS if w in args.workload]
    counts = {w: (QUICK_COUNTS if args.quick else FULL_COUNTS)[w] for w in workloads}
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python", "benchmarks/run.py", *map(_shown, given)])
    pinning = (
        f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU} (taskset)"
        if pinned(SERVER_CPU)
        else "none (no taskset, or one CPU)"
    )
    env = environment(pinning)
    started = time.perf_counter()
    measurements = trio.run(run_all, variants(peers, args.deflate), workloads, counts, args)
    env["seconds"] = round(time.perf_counter() - started, 1)
    env["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    names = [peer.name for peer in peers]
    # With --deflate only, raw-trio ran without compression as the deflate table's ceiling only.
    plain = figures(measurements, names) if args.deflate != "only" else []
    deflated = deflate_figures(measurements, names)

    report = markdown_report(plain, deflated, env, args.runs, counts)
    print(report)
    failed = [m for m in measurements if m.error]
    for m in failed:
        label = m.peer + (" +deflate" if m.deflate else "")
        print(f"\nFAILED: {m.workload}, {label}, run {m.run + 1}:\n{m.error}", file=sys.stderr)
    print(f"\ntotal {env['seconds']} s", file=sys.stderr)

    data = {
        "command": command,
        "environment": env,
        "runs": args.runs,
        "counts": counts,
        "figures": _figures_json(plain),  # compression off
        "figures_deflate": _figures_json(deflated),  # permessage-deflate on; [] if not run
        "measurements": [asdict(m) for m in measurements],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if args.docs:
        # Imported here: matplotlib is needed for the docs page only (checked in _parse_args).
        import chart

        chart.draw(data, Path(args.docs).parent / CHART)
        page = rst_page(plain, deflated, env, args.runs, counts, command, CHART.as_posix())
        Path(args.docs).write_text(page, encoding="utf-8")
    if args.readme:
        update_readme(Path(args.readme), report, command)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
