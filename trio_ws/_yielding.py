"""Checkpoints that let other tasks run once per time slice, not at every call.

A trio checkpoint is a cancel point and a schedule point. The calls that do not block
(``send()`` below the write limit, ``recv()`` with a message waiting, ``ping()``...) are always
cancel points, but switch tasks only when the running task has had the CPU for a time slice
(:data:`SLICE`) since trio_ws last gave it back, the policy trio's own maintainers propose for
trio's checkpoints (python-trio/trio#1757). A task that sends or receives many small messages in
a row so makes one pass of the scheduler per slice instead of one per message, and the rest of
the program still runs at least once per slice: fair, and several times cheaper.

The slice is measured with the system's monotonic clock, not trio's, so that it holds under a
:class:`trio.testing.MockClock` too. One record per thread: the time the last task resumed from
a trio_ws yield (a schedule point, or a receiver's wait) in this thread's trio run. The running
task's step started at or after it, so a slice from that record bounds the step from above.
"""

from __future__ import annotations

import threading
from time import perf_counter

import trio

__all__ = ["SLICE", "checkpoint", "resumed", "schedule_point"]

#: The longest a task runs through trio_ws calls that do not block before they yield, in seconds.
SLICE = 0.0005


class _Resumed(threading.local):
    at = 0.0  # perf_counter() when a task last resumed from a trio_ws yield in this thread


_resumed = _Resumed()


def resumed() -> None:
    """Note that the running task has just resumed from a wait: its slice starts now.

    Only after a real yield (a wait that blocked), or a task could run on without end.
    """
    _resumed.at = perf_counter()


async def schedule_point() -> None:
    """Let other tasks run if the running task has had a slice. Never raises Cancelled."""
    if perf_counter() - _resumed.at < SLICE:
        return
    await trio.lowlevel.cancel_shielded_checkpoint()
    _resumed.at = perf_counter()


async def checkpoint() -> None:
    """A cancel point, and a schedule point as :func:`schedule_point` says."""
    await trio.lowlevel.checkpoint_if_cancelled()
    await schedule_point()
