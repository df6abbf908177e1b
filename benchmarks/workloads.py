"""The six client workloads, written once for every library, and the peers' side of run.py.

How this works: ``run.py`` starts an echo server (``trio_peer.py`` or ``asyncio_peer.py`` with
``--role server``), which prints ``PORT <n>`` once it listens, then a client (``--role
client``) that runs one workload from this module against it. The client talks to ``run.py``
in lines: it prints ``READY`` once warmed up and waits for ``GO`` on stdin, so that ``run.py``
can read the server's memory first; the idle workload also prints ``HOLDING`` with every
connection open and waits for ``RELEASE``; the client's last line is its result, one JSON
object. What differs between trio and asyncio (a semaphore, an event, running tasks together,
reading stdin) goes through :class:`Runtime`, and each library's send and recv are reached
through :class:`Channel` (its own bound methods, no wrapper): every library runs the very same
client code.

Nothing here checks a deadline: ``run.py`` bounds every step and ends the processes that
overrun. Every loop is bounded by its count.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple, Protocol

HOST = "127.0.0.1"
#: Every library's largest message, client and server: room for bulk's 1 MiB and more.
MAX_SIZE = 2 * 2**20

WORKLOADS = ("rtt", "pipe", "bulk", "handshake", "fanin", "idle")
#: What ``--count`` means for each workload, and its value in a full and a ``--quick`` run.
COUNTED = {
    "rtt": "sequential echoes",
    "pipe": "messages",
    "bulk": "sequential echoes",
    "handshake": "connections, one after the other",
    "fanin": "concurrent connections",
    "idle": "connections held open",
}
FULL_COUNTS = {
    "rtt": 20_000,
    "pipe": 100_000,
    "bulk": 100,
    "handshake": 1_000,
    "fanin": 1_000,
    "idle": 5_000,
}
QUICK_COUNTS = {
    "rtt": 2_000,
    "pipe": 10_000,
    "bulk": 10,
    "handshake": 100,
    "fanin": 100,
    "idle": 500,
}

RTT_MESSAGE = "0123456789abcdef" * 2  # 32 bytes of text, for rtt, fanin and idle
PIPE_MESSAGE = bytes(range(64))  # 64 bytes, binary
PIPE_WINDOW = 256  # pipe: messages in flight at most
BULK_SIZE = 2**20  # 1 MiB, binary
FANIN_ECHOES = 20  # per connection
#: fanin and idle: opening handshakes in flight at once (all connections stay open).
OPENING_AT_ONCE = 100

Data = str | bytes


class Channel(NamedTuple):
    """One end of a connection: the library's own send and recv, bound, with no wrapper."""

    send: Callable[[Data], Awaitable[None]]
    recv: Callable[[], Awaitable[Data]]


#: Opens a client connection to the server under test; closes it when the block exits.
Connect = Callable[[], AbstractAsyncContextManager[Channel]]


class Semaphore(Protocol):
    async def acquire(self) -> object: ...

    def release(self) -> None: ...


class Event(Protocol):
    def set(self) -> None: ...

    async def wait(self) -> object: ...


class Runtime(Protocol):
    """What the workloads need from trio or asyncio."""

    def semaphore(self, value: int) -> Semaphore: ...

    def event(self) -> Event: ...

    async def run_all(self, functions: Sequence[Callable[[], Awaitable[None]]]) -> None:
        """Run every function in a task of its own; return when all have returned."""

    async def read_line(self) -> str:
        """The next line of stdin (read in a thread); "" at end of file."""


Result = dict[str, float]


class Control:
    """The client's side of the line protocol with run.py."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def ready(self) -> None:
        """Say the workload is warmed up; wait until run.py has read the server's memory."""
        await self._exchange("READY", "GO")

    async def holding(self) -> None:
        """Say every idle connection is open; wait until run.py has read the server's memory."""
        await self._exchange("HOLDING", "RELEASE")

    async def _exchange(self, say: str, expect: str) -> None:
        print(say, flush=True)
        line = (await self._runtime.read_line()).strip()
        if line != expect:
            raise RuntimeError(f"expected {expect!r} on stdin, got {line!r}")


async def _echo(channel: Channel, message: Data) -> None:
    await channel.send(message)
    reply = await channel.recv()
    if reply != message:
        raise AssertionError(f"echo differs: sent {len(message)}, got {len(reply)} units")


async def _warm_up(connect: Connect) -> None:
    """Untimed: a few connections with a few echoes, so that first-use costs are paid."""
    for _ in range(3):
        async with connect() as channel:
            for _ in range(20):
                await _echo(channel, RTT_MESSAGE)
                await _echo(channel, PIPE_MESSAGE)


def _percentile(ordered: Sequence[float], percent: int) -> float:
    """Nearest rank: the smallest value with at least ``percent`` % of them at or below it."""
    rank = max(1, -(-len(ordered) * percent // 100))  # ceil, in integers
    return ordered[rank - 1]


async def rtt(runtime: Runtime, connect: Connect, count: int, control: Control) -> Result:
    """One connection, ``count`` sequential echoes of a 32-byte text message."""
    await _warm_up(connect)
    clock = time.perf_counter
    async with connect() as channel:
        for _ in range(200):
            await _echo(channel, RTT_MESSAGE)
        await control.ready()
        latencies: list[float] = []
        start = clock()
        for _ in range(count):
            sent = clock()
            await channel.send(RTT_MESSAGE)
            reply = await channel.recv()
            latencies.append(clock() - sent)
            if reply != RTT_MESSAGE:
                raise AssertionError(f"echo differs: {reply!r}")
        elapsed = clock() - start
    latencies.sort()
    return {
        "messages": count,
        "seconds": elapsed,
        "p50_us": _percentile(latencies, 50) * 1e6,
        "p99_us": _percentile(latencies, 99) * 1e6,
    }


async def _pipe(runtime: Runtime, channel: Channel, count: int) -> None:
    window = runtime.semaphore(PIPE_WINDOW)

    async def send_all() -> None:
        for _ in range(count):
            await window.acquire()
            await channel.send(PIPE_MESSAGE)

    async def receive_all() -> None:
        for _ in range(count):
            reply = await channel.recv()
            window.release()
            if reply != PIPE_MESSAGE:
                raise AssertionError(f"echo differs: {reply!r}")

    await runtime.run_all([send_all, receive_all])


async def pipe(runtime: Runtime, connect: Connect, count: int, control: Control) -> Result:
    """One connection: one task sends ``count`` 64-byte binary messages, another receives the
    echoes; at most 256 in flight."""
    await _warm_up(connect)
    async with connect() as channel:
        await _pipe(runtime, channel, 2_000)
        await control.ready()
        start = time.perf_counter()
        await _pipe(runtime, channel, count)
        elapsed = time.perf_counter() - start
    return {"messages": count, "seconds": elapsed}


async def bulk(runtime: Runtime, connect: Connect, count: int, control: Control) -> Result:
    """One connection, ``count`` sequential echoes of a 1 MiB binary message."""
    data = random.Random(0).randbytes(BULK_SIZE)
    await _warm_up(connect)
    async with connect() as channel:
        for _ in range(3):
            await _echo(channel, data)
        await control.ready()
        start = time.perf_counter()
        for _ in range(count):
            await _echo(channel, data)
        elapsed = time.perf_counter() - start
    return {"messages": count, "bytes": count * BULK_SIZE, "seconds": elapsed}


async def handshake(runtime: Runtime, connect: Connect, count: int, control: Control) -> Result:
    """``count`` connections one after the other: open (TCP and handshake), then close."""
    await _warm_up(connect)
    for _ in range(20):
        async with connect():
            pass
    await control.ready()
    start = time.perf_counter()
    for _ in range(count):
        async with connect():
            pass
    elapsed = time.perf_counter() - start
    return {"connections": count, "seconds": elapsed}


async def fanin(runtime: Runtime, connect: Connect, count: int, control: Control) -> Result:
    """``count`` connections open at once, then each does 20 sequential echoes concurrently.

    Timed: from the moment the last connection is open to the moment the last echo is back.
    Opening and closing are not timed (handshake measures them).
    """
    await _warm_up(connect)
    await control.ready()
    opening = runtime.semaphore(OPENING_AT_ONCE)
    all_open = runtime.event()
    opened = finished = 0
    start = end = 0.0

    async def one() -> None:
        nonlocal opened, finished, start, end
        await opening.acquire()
        async with connect() as channel:
            opening.release()
            opened += 1
            if opened == count:
                start = time.perf_counter()
                all_open.set()
            await all_open.wait()
            for _ in range(FANIN_ECHOES):
                await _echo(channel, RTT_MESSAGE)
            finished += 1
            if finished == count:
                end = time.perf_counter()

    await runtime.run_all([one] * count)
    return {"connections": count, "messages": count * FANIN_ECHOES, "seconds": end - start}


async def idle(runtime: Runtime, connect: Connect, count: int, control: Control) -> Result:
    """Open ``count`` connections, echo once on each (so the server's handler surely runs),
    then hold them all, idle, until run.py has read the server's memory; then close all."""
    await _warm_up(connect)
    await control.ready()
    opening = runtime.semaphore(OPENING_AT_ONCE)
    all_open = runtime.event()
    release = runtime.event()
    opened = 0
    start = time.perf_counter()
    open_seconds = 0.0

    async def one() -> None:
        nonlocal opened
        await opening.acquire()
        async with connect() as channel:
            opening.release()
            await _echo(channel, RTT_MESSAGE)
            opened += 1
            if opened == count:
                all_open.set()
            await release.wait()

    async def hold() -> None:
        nonlocal open_seconds
        await all_open.wait()
        open_seconds = time.perf_counter() - start
        await control.holding()
        release.set()

    await runtime.run_all([hold, *[one] * count])
    return {"connections": count, "open_seconds": open_seconds}


Workload = Callable[[Runtime, Connect, int, Control], Awaitable[Result]]
CLIENTS: dict[str, Workload] = {
    "rtt": rtt,
    "pipe": pipe,
    "bulk": bulk,
    "handshake": handshake,
    "fanin": fanin,
    "idle": idle,
}


async def run_client(runtime: Runtime, connect: Connect, workload: str, count: int) -> None:
    """Run one workload and print its result as the last line: one JSON object."""
    result = await CLIENTS[workload](runtime, connect, count, Control(runtime))
    print(json.dumps({"workload": workload, "count": count, **result}), flush=True)


def announce_port(port: int) -> None:
    """The server's one line to run.py: it listens and echoes from now on."""
    print(f"PORT {port}", flush=True)


def check_compression(extensions: str | None, deflate: bool) -> None:
    """Fail the client unless its handshake did what was asked: permessage-deflate agreed when
    ``deflate``, no extension at all otherwise. ``extensions`` is the response's
    Sec-WebSocket-Extensions header (None when absent)."""
    agreed = extensions is not None and "permessage-deflate" in extensions
    if agreed != deflate or (not deflate and extensions):
        wanted = "permessage-deflate" if deflate else "no extension"
        raise AssertionError(f"asked for {wanted}, the server answered {extensions!r}")


def peer_arguments(
    libraries: Collection[str], deflating: Collection[str] = ()
) -> argparse.Namespace:
    """Parse a peer's command line (run.py writes it) and raise its open-file limit.

    ``deflating``: the libraries that may run with ``--deflate`` (permessage-deflate on, with
    the library's default settings).
    """
    parser = argparse.ArgumentParser(description="One benchmark peer: an echo server or a client.")
    parser.add_argument("--lib", required=True, choices=sorted(libraries))
    parser.add_argument("--role", required=True, choices=["server", "client"])
    parser.add_argument("--workload", required=True, choices=WORKLOADS)
    parser.add_argument("--count", type=int, default=1, help="see COUNTED in workloads.py")
    parser.add_argument("--port", type=int, help="the server's port (client only)")
    parser.add_argument(
        "--deflate", action="store_true", help="permessage-deflate on (default: compression off)"
    )
    args = parser.parse_args()
    if args.role == "client" and args.port is None:
        parser.error("a client needs --port")
    if args.deflate and args.lib not in deflating:
        parser.error(f"{args.lib} has no permessage-deflate")
    if args.count < 1:
        parser.error("--count must be at least 1")
    raise_open_file_limit()
    return args


def raise_open_file_limit() -> None:
    """Idle holds thousands of sockets open: take the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = 65_536 if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
