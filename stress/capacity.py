"""Capacity: how many idle connections one trio_ws server process holds, at what cost.

Run ``python stress/capacity.py`` (20,000 connections: about a minute and a half) or
``--quick`` (2,000, for CI: a few seconds); ``--no-deflate`` turns permessage-deflate off on
both sides; ``--help`` lists the options. It prints a table and a JSON summary (``--json PATH``
writes it to a file too), and exits with 0 when every connection was held and then closed by the
server with 1001, 1 when one was not, 2 when the open-file limits are too low for the count.

How this works: three kinds of process, all this script.

- **The server** (``--serve``): ``trio_ws.serve`` with its defaults (keepalive pings every
  20 s, compression "deflate" unless ``--no-deflate``) and a handler that echoes every message;
  on SIGTERM it calls ``Server.aclose()`` (1001 to every client), prints how long that took and
  the server's stats, and exits.
- **The clients** (``--client``, two by default): each opens its share of the connections, at
  most ``OPENING_AT_ONCE`` handshakes at a time, bound in turn to the source addresses
  127.0.0.2, 127.0.0.3, ... (``local_address=``), so that no source address runs out of
  ephemeral ports; each connection echoes one message (so that every handler runs and
  deflate's contexts exist), then waits in ``recv()`` for the server to close it and records
  the close code. Clients send no keepalive pings of their own (browsers don't); they answer
  the server's.
- **This process** starts the server, reads its memory (VmRSS from ``/proc/<pid>/status``,
  Pss from ``/proc/<pid>/smaps_rollup``) and open files before, starts the clients, tells them
  to go at once and times the opening until the last of them has all its connections open;
  with ``--hold S``, holds them S seconds more and reads the server's CPU time meanwhile (its
  keepalive pings: one per connection every 20 s); reads the memory again, sends SIGTERM to
  the server and times until the server process has exited; then collects the clients' close
  codes. The CPU time of each process is read from ``/proc/<pid>/stat`` around each step: on a
  machine with fewer cores than processes, the clients' share tells whether the server was the
  bottleneck.

Every process raises its open-file soft limit to the hard one and checks it is enough for the
sockets it will hold; every loop is bounded by its count, every wait by a time limit, and every
process lives at most ``--time-limit`` seconds, after which it exits by itself. This process
ends only the processes it started, by PID (SIGTERM, then SIGKILL), whatever happens.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass
from functools import partial
from typing import IO

import trio

import trio_ws

HOST = "127.0.0.1"
MESSAGE = "0123456789abcdef" * 2  # 32 bytes of text, echoed once per connection
OPENING_AT_ONCE = 100  # opening handshakes in flight at once, per client process
MAX_ECHOES = 1_000_000  # per connection on the server: the bound of the echo loop
FD_MARGIN = 32  # open files a process needs besides its sockets (std streams, epoll, ...)
FULL, QUICK = 20_000, 2_000
GIB_KIB = 1024 * 1024
LINE_LIMIT = 100_000  # bytes in one line from a child; more is a broken child
END_GRACE = 5.0  # seconds between SIGTERM and SIGKILL, and after SIGKILL
SETTLE_LIMIT = 10.0  # seconds for the server's fds to come back after the warm-up connection
SETTLE_POLL = 0.01
START_LIMIT = 30.0  # seconds for a child to start and say it is ready
OPEN_LIMIT = 60.0  # seconds for the opening, plus PER_CONNECTION for each connection
SHUTDOWN_LIMIT = 60.0  # seconds for the graceful shutdown, plus PER_CONNECTION for each
PER_CONNECTION = 0.02
# What a failed connection raises: counted, reported, never a crash of a client.
FAILURES = (OSError, trio_ws.WebSocketError, trio.TooSlowError, ValueError)


def open_file_limit(needed: int) -> tuple[int, str | None]:
    """Raise the open-file soft limit up to the hard one; the limit now, and a problem when
    it is below ``needed`` (raising the hard limit takes root: CAP_SYS_RESOURCE)."""
    infinite = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(needed, 65_536) if hard == infinite else hard
    if soft != infinite and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        return soft, (
            f"this needs {needed:,} open files in one process, the hard limit is {soft:,}: "
            f"raise it (`ulimit -n {max(needed, 65_536)}` as root, LimitNOFILE= for systemd) "
            f"or ask for fewer connections (--connections {max(soft - FD_MARGIN, 0):,} fits)"
        )
    return soft, None


# -- the server process ------------------------------------------------------------------------


async def echo(ws: trio_ws.ServerConnection) -> None:
    for _ in range(MAX_ECHOES):
        try:
            message = await ws.recv()
        except trio_ws.ConnectionClosed:
            return
        await ws.send(message)


async def run_server(compression: str | None, lifetime: float) -> None:
    """Serve echo on HOST, say ``PORT <n>``; on SIGTERM close gracefully and say ``CLOSED
    <seconds> <CPU seconds> <stats>``. Exits by itself after ``lifetime`` seconds."""
    with trio.move_on_after(lifetime), trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: trio_ws.Server = await nursery.start(
                partial(trio_ws.serve, echo, HOST, 0, compression=compression)
            )
            print(f"PORT {server.port}", flush=True)
            async for _ in signals:
                break
            started, cpu = time.perf_counter(), time.process_time()
            await server.aclose()
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"CLOSED {seconds:.6f} {cpu:.6f} {json.dumps(server.stats.as_dict())}", flush=True)


# -- the client processes ----------------------------------------------------------------------


async def run_client(args: argparse.Namespace) -> None:
    """Say ``READY``; on ``GO`` from stdin open ``args.count`` connections, say ``OPEN <held>
    <failed> <source addresses> <first failures>``; once the server closed them all, say
    ``CLOSES <CPU seconds so far> <codes>``. Exits by itself after ``args.time_limit`` s."""
    compression = None if args.no_deflate else "deflate"
    uri = f"ws://{HOST}:{args.port}/"
    sources = [f"127.0.0.{2 + (args.first_source + i) % args.sources}" for i in range(args.count)]
    opening = trio.CapacityLimiter(OPENING_AT_ONCE)
    all_arrived, all_closed = trio.Event(), trio.Event()
    failures: list[str] = []
    codes: dict[str, int] = {}
    bound: set[str] = set()  # the source addresses the connections really have
    held = arrived = ended = 0

    def end(code: str) -> None:
        nonlocal ended
        codes[code] = codes.get(code, 0) + 1
        ended += 1
        if ended == args.count:
            all_closed.set()

    def arrive() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == args.count:
            all_arrived.set()

    async def one(number: int) -> None:
        nonlocal held
        opened = False
        try:
            async with AsyncExitStack() as stack:
                async with opening:
                    ws = await stack.enter_async_context(
                        trio_ws.connect(
                            uri,
                            local_address=sources[number],
                            compression=compression,
                            ping_interval=None,
                            proxy=None,
                        )
                    )
                    await ws.send(MESSAGE)
                    if (reply := await ws.recv()) != MESSAGE:
                        raise ValueError(f"echoed {reply!r}, not {MESSAGE!r}")
                opened = True
                if ws.local_address is not None:
                    bound.add(ws.local_address[0])
                held += 1
                arrive()
                try:
                    for _ in range(MAX_ECHOES):
                        await ws.recv()  # the server sends nothing but its close frame
                except trio_ws.ConnectionClosed:
                    pass
            end(str(ws.close_code))
        except FAILURES as exc:
            if opened:
                end(f"failed while held: {type(exc).__name__}")
                return
            if len(failures) < 5:
                failures.append(f"connection {number} from {sources[number]}: {exc!r}")
            arrive()
            end("failed to open")

    with trio.move_on_after(args.time_limit):
        print("READY", flush=True)
        command = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if command.strip() != "GO":
            return
        async with trio.open_nursery() as nursery:
            for number in range(args.count):
                nursery.start_soon(one, number)
            await all_arrived.wait()
            failed = json.dumps(failures)
            print(f"OPEN {held} {args.count - held} {len(bound)} {failed}", flush=True)
            await all_closed.wait()
        print(f"CLOSES {time.process_time():.6f} {json.dumps(codes)}", flush=True)


# -- this process: the children, /proc ---------------------------------------------------------


class Child:
    """A process of this script's: reads its stdout by lines; ended by PID by :meth:`end`."""

    def __init__(self, process: trio.Process, name: str, errors: IO[bytes]) -> None:
        self.process, self.name, self._errors = process, name, errors
        self._buffer = bytearray()

    @classmethod
    async def start(cls, name: str, arguments: list[str], errors: IO[bytes]) -> Child:
        process = await trio.lowlevel.open_process(
            [sys.executable, __file__, *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        return cls(process, name, errors)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def line(self, expected: str) -> str:
        """The next line from the child, which must start with ``expected``; without it.

        Raises:
            RuntimeError: the child exited, said something else, or over LINE_LIMIT bytes.
        """
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            if len(self._buffer) > LINE_LIMIT:
                raise RuntimeError(f"{self.name} said over {LINE_LIMIT:,} bytes in one line")
            chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise RuntimeError(f"{self.name} exited before saying {expected}")
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        text = line.decode(errors="replace")
        if not text.startswith(expected):
            raise RuntimeError(f"expected {expected} from {self.name}, got {text[:200]!r}")
        return text[len(expected) :].strip()

    async def say(self, command: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(command.encode() + b"\n")

    async def end(self) -> None:
        """End the process by its PID: SIGTERM, then SIGKILL; bounded, even when cancelled."""
        with trio.CancelScope(shield=True):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.process.returncode is not None:
                    break
                self.process.send_signal(sig)
                with trio.move_on_after(END_GRACE):
                    await self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    await trio.aclose_forcefully(pipe)

    def error_tail(self, lines: int = 12) -> str:
        self._errors.seek(0)
        text = self._errors.read().decode(errors="replace").strip()
        return "\n".join(text.splitlines()[-lines:])


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM from /proc/<pid>/status, Pss from smaps_rollup, in KiB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line.split(":")[0]] = int(line.split()[1])
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    found["Pss"] = int(line.split()[1])
    except OSError:
        pass  # no smaps_rollup before Linux 4.14: VmRSS alone
    if "VmRSS" not in found:
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()  # the name, in (), may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def settled_fds(pid: int, wanted: int) -> int:
    """The server's open files once back to ``wanted``, or after SETTLE_LIMIT."""
    count = open_fds(pid)
    with trio.move_on_after(SETTLE_LIMIT):
        while count != wanted:
            await trio.sleep(SETTLE_POLL)
            count = open_fds(pid)
    return count


@dataclass
class Result:
    connections: int  # asked for
    compression: str
    clients: int
    sources: int
    sources_used: int = 0  # source addresses seen by one client process
    held: int = 0
    failed_to_open: int = 0
    open_seconds: float = math.nan
    open_server_cpu_seconds: float = math.nan  # the server's CPU time meanwhile
    open_clients_cpu_seconds: float = math.nan  # the clients', their start-up included
    hold_seconds: float = 0.0  # --hold: the connections held idle, after the opening
    hold_server_cpu_seconds: float = math.nan
    server_fds_before: int = 0
    server_fds_holding: int = 0
    rss_before_kib: int = 0
    rss_holding_kib: int = 0
    pss_before_kib: int = 0
    pss_holding_kib: int = 0
    hwm_holding_kib: int = 0
    aclose_seconds: float = math.nan  # inside the server, aclose() alone
    aclose_server_cpu_seconds: float = math.nan
    shutdown_clients_cpu_seconds: float = math.nan  # SIGTERM to their last close
    shutdown_seconds: float = math.nan  # SIGTERM sent to the server process gone
    server_exit_status: int | None = None
    client_close_codes: dict[str, int] | None = None
    server_close_codes: dict[str, int] | None = None

    @property
    def kib_per_connection(self) -> float:
        return (self.rss_holding_kib - self.rss_before_kib) / max(self.held, 1)

    @property
    def pss_kib_per_connection(self) -> float:
        return (self.pss_holding_kib - self.pss_before_kib) / max(self.held, 1)

    @property
    def connections_per_gib(self) -> int:
        """Connections in 1 GiB of the server's RSS beyond what it holds with none."""
        return int(GIB_KIB / self.kib_per_connection) if self.kib_per_connection > 0 else 0

    @property
    def closed_1001(self) -> int:
        return (self.client_close_codes or {}).get("1001", 0)


async def measure(args: argparse.Namespace, result: Result, errors: list[IO[bytes]]) -> None:
    """Fill ``result``: the server, the warm-up, the opening, the memory, the shutdown."""
    server_args = ["--serve", "--time-limit", str(args.time_limit)]
    server_args += ["--no-deflate"] if args.no_deflate else []
    children: list[Child] = []
    try:
        server = await Child.start("the server", server_args, errors[0])
        children.append(server)
        with trio.fail_after(START_LIMIT):
            port = int(await server.line("PORT "))
        # The warm-up: the server's first connection is no idle one (imports, caches).
        result.server_fds_before = open_fds(server.pid)
        async with trio_ws.connect(
            f"ws://{HOST}:{port}/", compression=None if args.no_deflate else "deflate", proxy=None
        ) as ws:
            await ws.send(MESSAGE)
            await ws.recv()
        await settled_fds(server.pid, result.server_fds_before)
        before = memory_kib(server.pid)
        result.rss_before_kib, result.pss_before_kib = before["VmRSS"], before.get("Pss", 0)

        shares = [args.connections // args.clients] * args.clients
        shares[0] += args.connections - sum(shares)
        clients: list[Child] = []
        for index, share in enumerate(shares):
            client_args = ["--client", "--port", str(port), "--count", str(share)]
            client_args += ["--sources", str(args.sources), "--first-source", str(index)]
            client_args += ["--time-limit", str(args.time_limit)]
            client_args += ["--no-deflate"] if args.no_deflate else []
            client = await Child.start(f"client {index + 1}", client_args, errors[index + 1])
            children.append(client)
            clients.append(client)
        with trio.fail_after(START_LIMIT):
            for client in clients:
                await client.line("READY")

        with trio.fail_after(OPEN_LIMIT + PER_CONNECTION * args.connections):
            started, cpu = time.perf_counter(), cpu_seconds(server.pid)
            for client in clients:
                await client.say("GO")
            first_failures: list[str] = []
            for client in clients:
                held, failed, used, failures = (await client.line("OPEN ")).split(" ", 3)
                result.sources_used = max(result.sources_used, int(used))
                result.held += int(held)
                result.failed_to_open += int(failed)
                first_failures += json.loads(failures)
            result.open_seconds = time.perf_counter() - started
            result.open_server_cpu_seconds = cpu_seconds(server.pid) - cpu
            result.open_clients_cpu_seconds = sum(cpu_seconds(client.pid) for client in clients)
        for failure in first_failures[:5]:
            print(f"  failed to open: {failure}", file=sys.stderr, flush=True)
        if args.hold:
            # Idle, but not free: every connection gets a keepalive ping each 20 s.
            cpu = cpu_seconds(server.pid)
            await trio.sleep(args.hold)
            result.hold_seconds = args.hold
            result.hold_server_cpu_seconds = cpu_seconds(server.pid) - cpu
        holding = memory_kib(server.pid)
        result.rss_holding_kib, result.pss_holding_kib = holding["VmRSS"], holding.get("Pss", 0)
        result.hwm_holding_kib = holding["VmHWM"]
        result.server_fds_holding = open_fds(server.pid)

        with trio.fail_after(SHUTDOWN_LIMIT + PER_CONNECTION * args.connections):
            clients_cpu = sum(cpu_seconds(client.pid) for client in clients)
            started = time.perf_counter()
            server.process.send_signal(signal.SIGTERM)
            closed = await server.line("CLOSED ")
            result.server_exit_status = await server.process.wait()
            result.shutdown_seconds = time.perf_counter() - started
            aclose_seconds, aclose_cpu, stats = closed.split(" ", 2)
            result.aclose_seconds = float(aclose_seconds)
            result.aclose_server_cpu_seconds = float(aclose_cpu)
            result.server_close_codes = json.loads(stats)["close_codes"]
            codes: dict[str, int] = {}
            for client in clients:
                client_cpu, client_codes = (await client.line("CLOSES ")).split(" ", 1)
                clients_cpu -= float(client_cpu)
                for code, count in json.loads(client_codes).items():
                    codes[code] = codes.get(code, 0) + count
                await client.process.wait()
            result.client_close_codes = codes
            result.shutdown_clients_cpu_seconds = -clients_cpu
    except BaseException:
        for child in children:
            if tail := child.error_tail():
                print(f"-- {child.name} stderr:\n{tail}", file=sys.stderr)
        raise
    finally:
        for child in children:
            await child.end()


def table(result: Result) -> list[str]:
    rows = [
        ("connections held", f"{result.held:,} of {result.connections:,}"),
        ("compression", result.compression),
        (
            "source addresses",
            f"{result.sources_used} per client process, {result.clients} processes",
        ),
        (
            "opened in",
            f"{result.open_seconds:.1f} s, CPU: server {result.open_server_cpu_seconds:.1f} s, "
            f"clients {result.open_clients_cpu_seconds:.1f} s ({result.failed_to_open} failed)",
        ),
        (
            "server CPU while idle",
            f"{result.hold_server_cpu_seconds / result.hold_seconds:.1%} of a core over "
            f"{result.hold_seconds:.0f} s"
            if result.hold_seconds
            else "not measured (--hold)",
        ),
        (
            "server RSS before, holding",
            f"{result.rss_before_kib:,} KiB, {result.rss_holding_kib:,} KiB",
        ),
        ("  per connection (RSS)", f"{result.kib_per_connection:.1f} KiB"),
        ("  per connection (Pss)", f"{result.pss_kib_per_connection:.1f} KiB"),
        ("  connections per GiB", f"{result.connections_per_gib:,}"),
        (
            "server fds before, holding",
            f"{result.server_fds_before}, {result.server_fds_holding:,}",
        ),
        (
            "graceful shutdown",
            f"{result.shutdown_seconds:.1f} s to exit (aclose() {result.aclose_seconds:.1f} s), "
            f"CPU: server {result.aclose_server_cpu_seconds:.1f} s, "
            f"clients {result.shutdown_clients_cpu_seconds:.1f} s",
        ),
        ("clients' close codes", json.dumps(result.client_close_codes)),
    ]
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}" for name, value in rows]


def problems_of(result: Result) -> list[str]:
    problems = []
    if result.held != result.connections:
        problems.append(f"held {result.held:,} of {result.connections:,} connections")
    if result.closed_1001 != result.held:
        problems.append(f"{result.closed_1001:,} of {result.held:,} clients got 1001")
    if result.server_exit_status != 0:
        problems.append(f"the server exited with {result.server_exit_status}")
    return problems


def header(args: argparse.Namespace) -> str:
    return (
        f"trio_ws capacity, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"Python {platform.python_version()}, trio {trio.__version__}, {os.cpu_count()} CPUs, "
        f"open files {resource.getrlimit(resource.RLIMIT_NOFILE)[0]:,}; "
        f"{args.connections:,} connections from {args.clients} processes, "
        f"{args.sources} source addresses"
    )


async def orchestrate(
    args: argparse.Namespace, errors: list[IO[bytes]]
) -> tuple[Result, list[str]]:
    """Measure; the result and what went wrong (nothing: an empty list)."""
    result = Result(
        connections=args.connections,
        compression="none" if args.no_deflate else "deflate",
        clients=args.clients,
        sources=args.sources,
    )
    try:
        with trio.fail_after(args.time_limit):
            await measure(args, result, errors)
    except trio.TooSlowError:
        return result, ["a step overran its time limit"]
    except RuntimeError as exc:
        return result, [str(exc)]
    return result, problems_of(result)


def report(args: argparse.Namespace, result: Result, problems: list[str]) -> None:
    summary = {
        # NaN (a step not reached) is no JSON: null instead.
        **{
            name: None if isinstance(value, float) and math.isnan(value) else value
            for name, value in asdict(result).items()
        },
        "kib_per_connection": round(result.kib_per_connection, 2),
        "pss_kib_per_connection": round(result.pss_kib_per_connection, 2),
        "connections_per_gib": result.connections_per_gib,
        "problems": problems,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            file.write(text + "\n")
    for line in table(result):
        print(line)
    for problem in problems:
        print(f"FAILED: {problem}")
    print("FAILED" if problems else "OK", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Hold N idle connections on one trio_ws server process: memory per "
        "connection, time to open them, time to close them all gracefully.",
    )
    parser.add_argument("--connections", type=int, help=f"connections to hold (default {FULL:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK:,} connections: for CI")
    parser.add_argument(
        "--no-deflate", action="store_true", help="turn compression off on both sides"
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument(
        "--sources",
        type=int,
        default=8,
        help="client source addresses, 127.0.0.2 and on (default 8)",
    )
    parser.add_argument(
        "--time-limit", type=float, help="seconds each process may live (default: from the count)"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="seconds to hold the connections idle, measuring the server's CPU (keepalive "
        "pings every 20 s); default 0",
    )
    parser.add_argument("--json", help="also write the JSON summary to this file")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first-source", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(run_server, None if args.no_deflate else "deflate", args.time_limit)
        return
    if args.client:
        _, problem = open_file_limit(args.count + FD_MARGIN)
        if problem:
            sys.exit(f"capacity client: {problem}")
        trio.run(run_client, args)
        return
    if args.connections is None:
        args.connections = QUICK if args.quick else FULL
    if args.connections < 1 or args.clients < 1 or not 1 <= args.sources <= 253:
        parser.error("--connections and --clients must be at least 1, --sources 1 to 253")
    if not 0 <= args.hold <= 3600:
        parser.error("--hold must be 0 to 3,600 seconds")
    if args.time_limit is None:
        args.time_limit = (
            START_LIMIT * 2
            + OPEN_LIMIT
            + SHUTDOWN_LIMIT
            + 2 * PER_CONNECTION * args.connections
            + args.hold
        )
    # The server holds them all; each client its share (the first one the remainder too).
    share = args.connections // args.clients + args.connections % args.clients
    _, problem = open_file_limit(max(args.connections, share) + FD_MARGIN)
    if problem:
        print(f"capacity: {problem}", file=sys.stderr)
        sys.exit(2)
    print(header(args), flush=True)
    with ExitStack() as stack:
        # The children's stderr, shown when a step fails.
        errors: list[IO[bytes]] = [
            stack.enter_context(tempfile.TemporaryFile()) for _ in range(args.clients + 1)
        ]
        result, problems = trio.run(orchestrate, args, errors)
    report(args, result, problems)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
