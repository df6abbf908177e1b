"""What one connection costs, both ends in one trio run: time, and what makes it up.

``python benchmarks/handshake_cost.py`` opens and closes connections one after the other
against a trio_ws echo server in the same trio run on 127.0.0.1 (``connect()``'s block exits at
once), and prints, per connection pair (client and server):

- the time: the median of 9 batches of 200 (a noisy machine: compare figures of one run);
- with ``--count``, from 1,000 more under instruments: the tasks started, the event loop's
  passes (its waits for I/O), the cancel scopes entered and the Python function calls (cProfile,
  which slows the loop, so no time is taken from that part).

``--lib raw-trio`` or ``--lib websockets.trio`` runs the same loop with another library of
``trio_peer.py``, for a ratio in the same run. The figures for issue 15 are in README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any

import trio
import trio_peer

BATCHES, BATCH, COUNTED = 9, 200, 1_000


class Counter(trio.abc.Instrument):
    """Tasks spawned and event-loop passes, while installed."""

    def __init__(self) -> None:
        self.tasks = self.passes = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.tasks += 1

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


async def measure(
    lib: str, count: bool, *, batches: int = BATCHES, batch: int = BATCH, counted: int = COUNTED
) -> dict[str, float]:
    """The figures for ``lib`` (see the module's docstring); ``count``: with the counts."""
    library = trio_peer.LIBRARIES[lib]
    async with trio.open_nursery() as nursery:
        port = await library.start_server(nursery, None)
        connect = partial(library.connect, port, None)
        for _ in range(50):  # warm-up
            async with connect():
                pass
        times = []
        for _ in range(batches):
            start = time.perf_counter()
            for _ in range(batch):
                async with connect():
                    pass
            times.append((time.perf_counter() - start) / batch)
        result = {"us_per_pair": statistics.median(times) * 1e6}
        if count:
            result |= await _count(connect, counted)
        nursery.cancel_scope.cancel()
    return result


async def _count(
    connect: Callable[[], AbstractAsyncContextManager[Any]], n: int
) -> dict[str, float]:
    counter = Counter()
    profile = cProfile.Profile()
    trio.lowlevel.add_instrument(counter)
    profile.enable()
    try:
        for _ in range(n):
            async with connect():
                pass
    finally:
        profile.disable()
        trio.lowlevel.remove_instrument(counter)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    calls = sum(entry[1] for entry in stats.values())
    # CancelScope.__enter__ is the one __enter__ in trio's _run.py that runs (nurseries and
    # timeouts enter a CancelScope too).
    scopes = sum(
        entry[1]
        for (path, _, name), entry in stats.items()
        if name == "__enter__" and path.endswith("_core/_run.py")
    )
    return {
        "tasks": counter.tasks / n,
        "passes": counter.passes / n,
        "cancel_scopes": scopes / n,
        "calls": calls / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lib", default="trio_ws", choices=sorted(trio_peer.LIBRARIES))
    parser.add_argument("--count", action="store_true", help="count tasks, passes, scopes, calls")
    args = parser.parse_args()
    result = trio.run(measure, args.lib, args.count)
    print(args.lib, "  ".join(f"{name} {value:,.1f}" for name, value in result.items()))


if __name__ == "__main__":
    main()
