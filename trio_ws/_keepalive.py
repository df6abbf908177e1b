"""Keepalive scheduling: one task times the pings of many connections.

How this works: a connection that waits for its next keepalive ping is an entry in a
``KeepaliveTimer``'s heap, not a sleeping task of its own (a task costs about 4 KiB). A server
runs one timer for all its connections, a client one for its connection. When an entry falls
due, the timer calls its callback, which starts that connection's ping round as a short-lived
task in the connection's own nursery; the round adds the next entry when it ends.

Callbacks must not block or raise. One that raises anyway (a bug) is logged, and the timer goes
on with the others: one connection's bug must not end the keepalive of every connection.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable

import trio

from ._options import LoggerLike

__all__ = ["KeepaliveTimer", "Timed"]


class Timed:
    """A callback due at a time; ``cancel()`` drops it (and what it refers to) at once."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self._callback = None

    def fire(self) -> None:
        if self._callback is not None:
            self._callback()

    def __repr__(self) -> str:
        return f"<Timed {self._callback!r}>"


class KeepaliveTimer:
    """Calls callbacks when they fall due, from one task: ``run()``, until ``stop()``.

    Callbacks must not block or raise: they start tasks. One that raises is logged as an
    internal error on ``logger`` (default: the ``trio_ws`` logger), and the others still run.
    """

    def __init__(self, logger: LoggerLike | None = None) -> None:
        self._logger = logger if logger is not None else logging.getLogger("trio_ws")
        self._heap: list[tuple[float, int, Timed]] = []
        self._order = itertools.count()  # ties keep their order; Timed is never compared
        self._wakeup: trio.CancelScope | None = None
        self._scope = trio.CancelScope()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timed:
        """Call ``callback`` at ``when`` (trio time)."""
        timed = Timed(callback)
        heapq.heappush(self._heap, (when, next(self._order), timed))
        if self._wakeup is not None and when < self._wakeup.deadline:
            self._wakeup.deadline = when
        return timed

    def stop(self) -> None:
        self._scope.cancel()

    async def run(self) -> None:
        heap = self._heap
        with self._scope:
            while True:
                with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as wakeup:
                    self._wakeup = wakeup
                    await trio.sleep_forever()
                self._wakeup = None
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    timed = heapq.heappop(heap)[2]
                    try:
                        timed.fire()
                    except Exception:
                        self._logger.exception("internal error in a keepalive callback: %r", timed)
