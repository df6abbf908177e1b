"""Cancellation at every scheduling step: the instrument behind the sweep tests.

A sweep runs an operation again and again, cancelling it as its k-th scheduling step from the
start begins, for k = 0, 1, 2, ... until one run completes before the cancellation fires:
every point where the operation can be cancelled is then tried once, deterministically.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

__all__ = ["SWEPT", "CancelAfterSteps", "cancel_after"]

#: Points swept per test, reported at the end of the session (see conftest.py).
SWEPT: dict[str, int] = {}


class CancelAfterSteps(trio.abc.Instrument):
    """Cancels ``scope`` as the ``steps``-th task step from now begins: ``task``'s steps only
    when a task is given, else any task's."""

    def __init__(
        self, scope: trio.CancelScope, steps: int, task: trio.lowlevel.Task | None = None
    ) -> None:
        self.scope, self.steps, self.task = scope, steps, task

    @property
    def fired(self) -> bool:
        return self.steps <= 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.steps > 0 and (self.task is None or task is self.task):
            self.steps -= 1
            if self.steps == 0:
                self.scope.cancel()


@contextmanager
def cancel_after(
    scope: trio.CancelScope, steps: int, task: trio.lowlevel.Task | None = None
) -> Iterator[CancelAfterSteps]:
    """Cancel ``scope`` after ``steps`` steps (at once for 0) while the block runs."""
    instrument = CancelAfterSteps(scope, steps, task)
    if steps == 0:
        scope.cancel()
    trio.lowlevel.add_instrument(instrument)
    try:
        yield instrument
    finally:
        trio.lowlevel.remove_instrument(instrument)
