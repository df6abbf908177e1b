"""Fan-in messages/s against 1 and 2 worker processes: what ``serve --workers 2`` buys.

Run it with ``python benchmarks/workers.py`` (3 runs of 1,000 connections, medians) or
``python benchmarks/workers.py --short`` (1 run of 200: a smoke test, seconds).

How this works: for each run and each worker count (1, then 2, the order alternating from run
to run), this process starts ``python -m trio_ws serve workers:echo --workers N`` (this file's
``echo``: 1 is today's single process, 2 a supervisor and two workers sharing the port with
SO_REUSEPORT), pinned with taskset to ``--server-cpus`` (children inherit the pinning), and
reads its port from its "Serving on" line. Then it runs the fan-in client of ``workloads.py``
(``trio_peer.py --lib trio_ws --role client --workload fanin``, the one ``run.py`` uses),
pinned to ``--client-cpus``: it opens every connection, says ``READY``, and on ``GO`` each
connection does 20 sequential echoes of 32 bytes, all at once; its last line is its result.
The server is then stopped with SIGTERM (its workers drain with 1001), SIGKILL if it
overruns; the process group it leads is killed by its id at the end, whatever happened.

On a 2-core machine the defaults pin the server to CPU 0 and the client to CPU 1, as run.py
does: two workers then share one core, so the ratio shows what splitting costs, not what a
second core buys. ``--server-cpus 0,1`` gives the workers both cores, the client sharing one
of them; on a larger machine, ``--server-cpus 0,1 --client-cpus 2`` measures scaling itself.
Beside each rate it prints how busy each side was while timed (CPU seconds per second, from
/proc): a side near its cores' count is the bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import trio
from workloads import FULL_COUNTS, QUICK_COUNTS

import trio_ws

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER_COUNTS = (1, 2)
END_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


async def echo(ws: trio_ws.ServerConnection) -> None:
    """The server's handler: ``workers:echo``, as trio_peer.py's trio_ws echo."""
    async for message in ws:
        await ws.send(message)


class BenchmarkError(Exception):
    """A process said something unexpected, or nothing, or exited."""


async def read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> str:
    """The next line on ``stream``; ``buffer`` keeps what came after it."""
    while (end := buffer.find(b"\n")) < 0:
        chunk = await stream.receive_some()
        if not chunk:
            raise BenchmarkError("the process closed its stdout (exited?)")
        buffer += chunk
    line = buffer[:end].decode()
    del buffer[: end + 1]
    return line


def pinned(cpus: str) -> list[str]:
    """The command prefix that pins a process (and its children) to ``cpus``."""
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


def environment() -> dict[str, str]:
    """This environment, with this trio_ws importable by the children."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


async def end_group(process: trio.Process) -> None:
    """SIGTERM to the server, SIGKILL after END_GRACE; then its whole process group."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(END_GRACE):
                await process.wait()
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                await trio.aclose_forcefully(stream)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) ``pid`` has used so far; 0 without /proc or once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # After the command's ")": state, ppid, ... utime and stime are the 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """``pid`` and its children (a supervisor's workers), from /proc."""
    children = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                    ppid = int(stat.read().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                children.append(int(entry))
    return [pid, *children]


class Busy:
    """How busy a set of processes was between two readings: CPU seconds per second."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._cpu = sum(map(cpu_seconds, pids))
        self._start = time.perf_counter()

    def share(self) -> float:
        elapsed = time.perf_counter() - self._start
        return (sum(map(cpu_seconds, self._pids)) - self._cpu) / elapsed if elapsed else 0.0


@dataclass
class Result:
    """One measurement: the rate, and how busy each side was while it was timed."""

    rate: float  # messages/s
    server_busy: float  # CPU seconds per second, all of the server's processes together
    client_busy: float


def tail(file: IO[bytes], lines: int = 12) -> str:
    file.seek(0)
    return "\n".join(file.read().decode(errors="replace").strip().splitlines()[-lines:])


async def measure(workers: int, count: int, args: argparse.Namespace) -> Result:
    """One fan-in run against ``workers`` worker processes."""
    server_command = [sys.executable, "-m", "trio_ws", "serve", "workers:echo"]
    server_command += ["--host", "127.0.0.1", "--port", "0", "--close-timeout", "1"]
    server_command += ["--workers", str(workers)]
    processes: list[trio.Process] = []
    with tempfile.TemporaryFile() as errors:
        try:
            with trio.fail_after(args.timeout):
                server = await trio.lowlevel.open_process(
                    [*pinned(args.server_cpus), *server_command],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    cwd=HERE,
                    env=environment(),
                    start_new_session=True,  # its workers in its group, killed with it
                )
                processes.append(server)
                assert server.stdout is not None
                line = await read_line(server.stdout, bytearray())
                match = re.match(r"Serving on ws://127\.0\.0\.1:(\d+)", line)
                if match is None:
                    raise BenchmarkError(f"expected 'Serving on', got {line!r}")
                client_command = [sys.executable, str(HERE / "trio_peer.py"), "--lib", "trio_ws"]
                client_command += ["--role", "client", "--workload", "fanin"]
                client_command += ["--count", str(count), "--port", match[1]]
                client = await trio.lowlevel.open_process(
                    [*pinned(args.client_cpus), *client_command],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    env=environment(),
                    start_new_session=True,
                )
                processes.append(client)
                assert client.stdin is not None and client.stdout is not None
                buffer = bytearray()
                if (line := await read_line(client.stdout, buffer)) != "READY":
                    raise BenchmarkError(f"expected READY, got {line!r}")
                server_busy, client_busy = Busy(family(server.pid)), Busy([client.pid])
                await client.stdin.send_all(b"GO\n")
                result = json.loads(await read_line(client.stdout, buffer))
                busy = server_busy.share(), client_busy.share()
                if await client.wait() != 0:
                    raise BenchmarkError(f"the client exited with {client.returncode}")
                if server.returncode is not None:
                    raise BenchmarkError(f"the server exited with {server.returncode}")
                return Result(float(result["messages"]) / float(result["seconds"]), *busy)
        except (trio.TooSlowError, BenchmarkError, OSError, ValueError, KeyError) as exc:
            raise BenchmarkError(f"{workers} worker(s): {exc!r}\n{tail(errors)}") from exc
        finally:
            for process in reversed(processes):
                await end_group(process)


async def run_all(args: argparse.Namespace) -> dict[int, list[Result]]:
    results: dict[int, list[Result]] = {workers: [] for workers in WORKER_COUNTS}
    for run in range(args.runs):
        order = WORKER_COUNTS if run % 2 == 0 else WORKER_COUNTS[::-1]  # neither always first
        for workers in order:
            result = await measure(workers, args.count, args)
            results[workers].append(result)
            print(
                f"run {run + 1}/{args.runs}: {workers} worker(s): {result.rate:,.0f} messages/s; "
                f"CPU busy: server {result.server_busy:.2f}, client {result.client_busy:.2f}",
                file=sys.stderr,
                flush=True,
            )
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fan-in messages/s against 1 and 2 trio_ws worker processes."
    )
    parser.add_argument("--short", action="store_true", help="1 run of 200 connections")
    parser.add_argument("--runs", type=int, help="runs of each (default 3; --short: 1)")
    parser.add_argument("--count", type=int, help="concurrent connections (default 1,000)")
    parser.add_argument("--server-cpus", default="0", help="taskset CPU list for the server")
    parser.add_argument("--client-cpus", default="1", help="taskset CPU list for the client")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds one measurement may take"
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.short else 3
    if args.count is None:
        args.count = 2 * QUICK_COUNTS["fanin"] if args.short else FULL_COUNTS["fanin"]
    if args.runs < 1 or args.count < 1:
        parser.error("--runs and --count must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pinning = (
        f"server on CPUs {args.server_cpus}, client on CPUs {args.client_cpus} (taskset)"
        if pinned(args.server_cpus)
        else "none (no taskset)"
    )
    print(
        f"fan-in, {args.count:,} connections x 20 echoes; {args.runs} run(s); "
        f"{os.cpu_count()} CPUs; pinning: {pinning}"
    )
    try:
        results = trio.run(run_all, args)
    except BenchmarkError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    medians: dict[int, float] = {}
    for workers, runs in results.items():
        rates = [result.rate for result in runs]
        medians[workers] = statistics.median(rates)
        server = statistics.median(result.server_busy for result in runs)
        client = statistics.median(result.client_busy for result in runs)
        print(
            f"{workers} worker(s): median {medians[workers]:,.0f} messages/s "
            f"(min-max {min(rates):,.0f}-{max(rates):,.0f}); CPU busy while timed "
            f"(CPU seconds per second, median): server {server:.2f}, client {client:.2f}"
        )
    print(f"scaling ratio (2 workers / 1 worker): {medians[2] / medians[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
