"""What Server.stats costs: the counters a message moves, timed alone.

Each message received adds to ``bytes_in`` and ``messages_in``; each one sent to
``messages_out`` and ``bytes_out``. This times those four updates on a real
:class:`trio_ws.Stats` against the same function without them (the ``len()`` calls kept), and
prints the median difference per message echoed (one in, one out). Compare it with the time a
message takes in ``run.py``'s pipe workload (``1 / messages per second``).

    python benchmarks/stats_cost.py
"""

from __future__ import annotations

import statistics
import timeit

from trio_ws.stats import Stats

_NUMBER = 1_000_000
_REPEAT = 15


def main() -> None:
    stats = Stats()
    data = b"x" * 64

    def counted() -> None:
        s = stats
        s.bytes_in += len(data)
        s.messages_in += 1
        s.messages_out += 1
        s.bytes_out += len(data)

    def uncounted() -> None:
        s = stats
        len(data)
        len(data)
        del s

    costs = []
    for _ in range(_REPEAT):
        with_counters = timeit.timeit(counted, number=_NUMBER)
        without = timeit.timeit(uncounted, number=_NUMBER)
        costs.append((with_counters - without) / _NUMBER * 1e9)
    print(
        f"Stats counters: {statistics.median(costs):.0f} ns per message echoed "
        f"(median of {_REPEAT}, min {min(costs):.0f}, max {max(costs):.0f})"
    )


if __name__ == "__main__":
    main()
