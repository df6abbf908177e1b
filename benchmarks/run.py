"""Benchmark trio_ws against websockets.trio and trio-websocket, side by side, in one run.

Run it with ``python benchmarks/run.py [--quick] [--rounds R] [--deflate] [--json out.json]``.

How this works: every library is its own client and its own server, both ends in this process
and in one trio run on 127.0.0.1, so a figure is the cost of both ends together. A round runs
every scenario once for every library, in an order rotated round by round so that none is
always first on a noisy machine; each measurement gets a fresh ``trio.run``, a fresh server and
a ``gc.collect()`` before it. The table quotes the median over the rounds, and for the ratios
the median of the per-round ratios (each round's peer against that round's trio_ws).

Every library runs with its defaults except: compression off (``--deflate`` adds a run with
permessage-deflate on for the libraries that support it) and keepalive pings off.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import datetime
import gc
import importlib.metadata
import json
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import trio
import trio.testing
import trio_websocket
import websockets.exceptions
import websockets.trio.client
import websockets.trio.server

import trio_ws

Data = str | bytes
HOST = "127.0.0.1"


# -- one interface over the three libraries --------------------------------------------------


class Channel(NamedTuple):
    """One end of a connection: the library's own send and recv, bound, with no wrapper."""

    send: Callable[[Data], Awaitable[None]]
    recv: Callable[[], Awaitable[Data]]


#: What a benchmark server runs for each connection; it returns or the connection closes.
Handler = Callable[[Channel], Awaitable[None]]


class Library(abc.ABC):
    """A WebSocket library seen through :class:`Channel`: a server and a client."""

    name: str
    package: str
    supports_deflate: bool = True

    @abc.abstractmethod
    def serve(self, handler: Handler, deflate: bool) -> AbstractAsyncContextManager[int]:
        """Serve ``handler`` on 127.0.0.1 while the block runs; yield the port."""

    @abc.abstractmethod
    def connect(self, port: int, deflate: bool) -> AbstractAsyncContextManager[Channel]:
        """Open a client connection to 127.0.0.1:``port``; close it when the block exits."""

    @property
    def version(self) -> str:
        return importlib.metadata.version(self.package)


class TrioWs(Library):
    name = "trio_ws"
    package = "trio-ws"

    @asynccontextmanager
    async def serve(self, handler: Handler, deflate: bool) -> AsyncGenerator[int, None]:
        async def on_connection(ws: trio_ws.ServerConnection) -> None:
            with contextlib.suppress(trio_ws.ConnectionClosed):
                await handler(Channel(ws.send, ws.recv))

        async with trio.open_nursery() as nursery:
            server: trio_ws.Server = await nursery.start(
                partial(
                    trio_ws.serve,
                    on_connection,
                    HOST,
                    0,
                    compression="deflate" if deflate else None,
                    ping_interval=None,
                )
            )
            yield server.port
            await server.aclose()

    @asynccontextmanager
    async def connect(self, port: int, deflate: bool) -> AsyncGenerator[Channel, None]:
        async with trio_ws.connect(
            f"ws://{HOST}:{port}/",
            compression="deflate" if deflate else None,
            ping_interval=None,
        ) as ws:
            yield Channel(ws.send, ws.recv)


class WebsocketsTrio(Library):
    name = "websockets.trio"
    package = "websockets"

    @asynccontextmanager
    async def serve(self, handler: Handler, deflate: bool) -> AsyncGenerator[int, None]:
        async def on_connection(ws: websockets.trio.server.ServerConnection) -> None:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await handler(Channel(ws.send, ws.recv))

        async with trio.open_nursery() as nursery:
            server: websockets.trio.server.Server = await nursery.start(
                partial(
                    websockets.trio.server.serve,
                    on_connection,
                    0,
                    host=HOST,
                    compression="deflate" if deflate else None,
                    ping_interval=None,
                )
            )
            port: int = server.listeners[0].socket.getsockname()[1]
            yield port
            await server.aclose()

    @asynccontextmanager
    async def connect(self, port: int, deflate: bool) -> AsyncGenerator[Channel, None]:
        async with websockets.trio.client.connect(
            f"ws://{HOST}:{port}/",
            compression="deflate" if deflate else None,
            ping_interval=None,
            proxy=None,  # never let a proxy from the environment into a loopback benchmark
        ) as ws:
            yield Channel(ws.send, ws.recv)


class TrioWebsocket(Library):
    """trio-websocket: no permessage-deflate, no keepalive pings (neither exists in it)."""

    name = "trio-websocket"
    package = "trio-websocket"
    supports_deflate = False

    @asynccontextmanager
    async def serve(self, handler: Handler, deflate: bool) -> AsyncGenerator[int, None]:
        assert not deflate, "trio-websocket has no permessage-deflate"

        async def on_request(request: trio_websocket.WebSocketRequest) -> None:
            ws = await request.accept()
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await handler(Channel(ws.send_message, ws.get_message))

        async with trio.open_nursery() as nursery:
            server: trio_websocket.WebSocketServer = await nursery.start(
                partial(trio_websocket.serve_websocket, on_request, HOST, 0, None)
            )
            yield server.port
            nursery.cancel_scope.cancel()  # it has no graceful stop

    @asynccontextmanager
    async def connect(self, port: int, deflate: bool) -> AsyncGenerator[Channel, None]:
        assert not deflate, "trio-websocket has no permessage-deflate"
        async with trio_websocket.open_websocket_url(f"ws://{HOST}:{port}/") as ws:
            yield Channel(ws.send_message, ws.get_message)


LIBRARIES: list[Library] = [TrioWs(), WebsocketsTrio(), TrioWebsocket()]


# -- the scenarios ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much work one measurement does; every scenario is bounded by these counts."""

    round_trips: int
    small_messages: int
    large_messages: int
    connections: int
    idle_connections: int
    time_limit: float  # seconds for one measurement, after which it fails rather than hang


FULL = Sizes(
    round_trips=5_000,
    small_messages=20_000,
    large_messages=3_000,
    connections=500,
    idle_connections=200,
    time_limit=120,
)
QUICK = Sizes(
    round_trips=300,
    small_messages=1_000,
    large_messages=50,
    connections=20,
    idle_connections=20,
    time_limit=20,
)
# Run once per library before the first round, untimed: imports, caches, first-use costs.
WARM_UP = Sizes(
    round_trips=20,
    small_messages=40,
    large_messages=4,
    connections=4,
    idle_connections=4,
    time_limit=20,
)

SMALL_TEXT = "0123456789abcdef"  # 16 bytes, for round trips
SMALL_SIZE = 1024
LARGE_SIZE = 64 * 1024


def payload(size: int) -> bytes:
    """Deterministic random words: deflate shrinks 1 KiB of them about 3.7:1, 64 KiB 6:1."""
    rng = random.Random(size)
    words = [b"alpha", b"bravo", b"trio", b"socket", b"frame", b"7", b"42", b"1024", b"{", b"}"]
    data = bytearray()
    while len(data) < size:
        data += rng.choice(words) + b" "
    return bytes(data[:size])


async def echo(channel: Channel) -> None:
    """Send every message back."""
    while True:
        await channel.send(await channel.recv())


async def sink(channel: Channel) -> None:
    """Count binary messages until a text one, then answer "count total_bytes"; repeat."""
    while True:
        count = total = 0
        while not isinstance(message := await channel.recv(), str):
            count += 1
            total += len(message)
        await channel.send(f"{count} {total}")


async def measure_latency(lib: Library, deflate: bool, sizes: Sizes) -> dict[str, float]:
    """Sequential echo round trips of a 16-byte text message; mean microseconds per trip."""
    async with lib.serve(echo, deflate) as port, lib.connect(port, deflate) as channel:
        for _ in range(50):  # warm-up, untimed
            await channel.send(SMALL_TEXT)
            await channel.recv()
        start = time.perf_counter()
        for _ in range(sizes.round_trips):
            await channel.send(SMALL_TEXT)
            if await channel.recv() != SMALL_TEXT:
                raise AssertionError(f"{lib.name}: echo differs")
        elapsed = time.perf_counter() - start
    return {"us_per_round_trip": elapsed / sizes.round_trips * 1e6}


async def _send_batch(channel: Channel, data: bytes, count: int) -> None:
    for _ in range(count):
        await channel.send(data)
    await channel.send("end")
    answer = await channel.recv()
    if answer != f"{count} {count * len(data)}":
        raise AssertionError(f"the server counted {answer!r}, not {count} x {len(data)} bytes")


async def measure_throughput(
    lib: Library, deflate: bool, size: int, count: int
) -> dict[str, float]:
    """``count`` binary messages of ``size`` bytes, client to server, until the server has all."""
    data = payload(size)
    async with lib.serve(sink, deflate) as port, lib.connect(port, deflate) as channel:
        await _send_batch(channel, data, max(count // 20, 1))  # warm-up, untimed
        start = time.perf_counter()
        await _send_batch(channel, data, count)
        elapsed = time.perf_counter() - start
    return {"msg_per_s": count / elapsed, "MB_per_s": count * size / elapsed / 1e6}


async def measure_setup(lib: Library, deflate: bool, sizes: Sizes) -> dict[str, float]:
    """Open (TCP + opening handshake) and close (closing handshake) connections one by one."""
    async with lib.serve(echo, deflate) as port:
        async with lib.connect(port, deflate):  # warm-up, untimed
            pass
        start = time.perf_counter()
        for _ in range(sizes.connections):
            async with lib.connect(port, deflate):
                pass
        elapsed = time.perf_counter() - start
    return {"ms_per_connection": elapsed / sizes.connections * 1e3}


async def measure_memory(lib: Library, deflate: bool, sizes: Sizes) -> dict[str, float]:
    """Python heap held per open connection (client end + server end), as tracemalloc sees it.

    Each connection exchanges one echo, then idles: state built lazily on the first message,
    such as a deflate compressor, counts. Kernel socket buffers do not.
    """
    count = sizes.idle_connections
    handlers = 0
    all_idle = trio.Event()

    async def echo_once(channel: Channel) -> None:
        nonlocal handlers
        await channel.send(await channel.recv())
        handlers += 1
        if handlers == count:
            all_idle.set()
        await channel.recv()

    async with lib.serve(echo_once, deflate) as port:
        async with lib.connect(port, deflate) as channel:  # warm-up, uncounted
            await channel.send(SMALL_TEXT)
            await channel.recv()
        handlers = 0
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(count):
                    channel = await stack.enter_async_context(lib.connect(port, deflate))
                    await channel.send(SMALL_TEXT)
                    await channel.recv()
                await all_idle.wait()
                await trio.testing.wait_all_tasks_blocked()
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    return {"KiB_per_connection": held / count / 1024}


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    run: Callable[[Library, bool, Sizes], Awaitable[dict[str, float]]]


SCENARIOS = [
    Scenario("latency", "16 B text echo, sequential", measure_latency),
    Scenario(
        "throughput 1KiB",
        "1 KiB binary, one way",
        lambda lib, deflate, s: measure_throughput(lib, deflate, SMALL_SIZE, s.small_messages),
    ),
    Scenario(
        "throughput 64KiB",
        "64 KiB binary, one way",
        lambda lib, deflate, s: measure_throughput(lib, deflate, LARGE_SIZE, s.large_messages),
    ),
    Scenario("connection setup", "open + close, sequential", measure_setup),
    Scenario("memory", "connections held open, idle after one echo", measure_memory),
]

#: Metrics where more is better; for the others (time, bytes), less is better.
RATES = frozenset({"msg_per_s", "MB_per_s"})


# -- rounds, medians, the table --------------------------------------------------------------


@dataclass
class Row:
    """One metric of one scenario: every library's figure, round by round."""

    scenario: str
    metric: str
    deflate: bool
    values: dict[str, list[float]] = field(default_factory=dict[str, list[float]])

    @property
    def label(self) -> str:
        return self.scenario + (" +deflate" if self.deflate else "")

    def median(self, lib: str) -> float | None:
        values = self.values.get(lib)
        return statistics.median(values) if values else None

    def ratio(self, peer: str) -> float | None:
        """Median of the per-round ratios, as peer's cost / trio_ws's: above 1, trio_ws wins."""
        ours, theirs = self.values.get("trio_ws"), self.values.get(peer)
        if not ours or not theirs:
            return None
        if self.metric in RATES:
            return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
        return statistics.median(b / a for a, b in zip(ours, theirs, strict=True))


def run_rounds(rounds: int, sizes: Sizes, modes: Sequence[bool]) -> list[Row]:
    for deflate in modes:
        for scenario in SCENARIOS:
            for lib in LIBRARIES:
                if lib.supports_deflate or not deflate:
                    trio.run(_bounded, scenario, lib, deflate, WARM_UP)
    rows: dict[tuple[str, str, bool], Row] = {}
    for index in range(rounds):
        # Rotate the order every round, so that no library always runs first (or last).
        shift = index % len(LIBRARIES)
        order = LIBRARIES[shift:] + LIBRARIES[:shift]
        for deflate in modes:
            for scenario in SCENARIOS:
                for lib in order:
                    if deflate and not lib.supports_deflate:
                        continue
                    gc.collect()
                    start = time.perf_counter()
                    result = trio.run(_bounded, scenario, lib, deflate, sizes)
                    print(
                        f"round {index + 1}/{rounds}: {scenario.name}"
                        f"{' +deflate' if deflate else ''}, {lib.name}: "
                        f"{time.perf_counter() - start:.2f} s",
                        file=sys.stderr,
                    )
                    for metric, value in result.items():
                        key = (scenario.name, metric, deflate)
                        row = rows.setdefault(key, Row(scenario.name, metric, deflate))
                        row.values.setdefault(lib.name, []).append(value)
    return list(rows.values())


async def _bounded(
    scenario: Scenario, lib: Library, deflate: bool, sizes: Sizes
) -> dict[str, float]:
    with trio.fail_after(sizes.time_limit):
        return await scenario.run(lib, deflate, sizes)


def _figure(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def format_table(rows: Sequence[Row]) -> str:
    names = [lib.name for lib in LIBRARIES]
    peers = names[1:]
    header = ["scenario", "metric", *names, *(f"{peer} / trio_ws" for peer in peers)]
    lines = [
        [
            row.label,
            row.metric,
            *(_figure(row.median(name)) for name in names),
            *("n/a" if (ratio := row.ratio(peer)) is None else f"{ratio:.2f}x" for peer in peers),
        ]
        for row in rows
    ]
    widths = [max(len(line[col]) for line in [header, *lines]) for col in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        first = [cell.ljust(width) for cell, width in zip(cells[:2], widths, strict=False)]
        rest = [cell.rjust(width) for cell, width in zip(cells[2:], widths[2:], strict=True)]
        return "  ".join(first + rest).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), rule, *(render(line) for line in lines)])


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark trio_ws against websockets.trio and trio-websocket."
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds per library (default: 7, quick: 2)"
    )
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="also run every scenario with permessage-deflate on (trio-websocket has none)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw figures here")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 7
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    sizes = QUICK if args.quick else FULL
    modes = [False, True] if args.deflate else [False]
    started = time.perf_counter()
    rows = run_rounds(args.rounds, sizes, modes)
    elapsed = time.perf_counter() - started

    versions = ", ".join(f"{lib.name} {lib.version}" for lib in LIBRARIES)
    print()
    print(f"{versions}; trio {trio.__version__}; Python {platform.python_version()}")
    print(
        f"{args.rounds} round(s), libraries interleaved; medians over rounds; "
        f"compression off{' (and on, +deflate rows)' if args.deflate else ''}; "
        "keepalive pings off; client and server in one process on 127.0.0.1."
    )
    print(
        "ratio = the peer's time or memory / trio_ws's (median of per-round ratios): "
        "above 1.00x, trio_ws is faster or smaller."
    )
    print(
        f"counts: {sizes.round_trips} round trips; {sizes.small_messages} x 1 KiB and "
        f"{sizes.large_messages} x 64 KiB messages; {sizes.connections} connections opened "
        f"and closed; {sizes.idle_connections} idle connections held."
    )
    print()
    print(format_table(rows))
    print(f"\ntotal {elapsed:.1f} s")

    if args.json:
        report = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([sys.executable, *sys.argv]),
            "python": platform.python_version(),
            "versions": {lib.name: lib.version for lib in LIBRARIES} | {"trio": trio.__version__},
            "rounds": args.rounds,
            "sizes": sizes.__dict__,
            "rows": [
                {
                    "scenario": row.scenario,
                    "metric": row.metric,
                    "deflate": row.deflate,
                    "values": row.values,
                    "medians": {name: row.median(name) for name in row.values},
                    "ratios": {lib.name: row.ratio(lib.name) for lib in LIBRARIES[1:]},
                }
                for row in rows
            ],
        }
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=2)
            file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
