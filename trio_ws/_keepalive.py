"""Keepalive: one task times the pings of many connections; each ping round is a short task.

How this works: a connection that waits for its next keepalive ping is an entry in a
``KeepaliveTimer``'s heap, not a sleeping task of its own (a task costs about 4 KiB). A server
runs one timer task for all its connections; a client connection's timer is hosted by its
reader task, in the waits it makes anyway (over TLS, by a task of its own). When an entry falls
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
from typing import TYPE_CHECKING

import trio

from ._closing import State
from ._options import LoggerLike

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["Keepalive", "KeepaliveTimer", "Timed"]


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
    """Calls callbacks when they fall due, from one task, until ``stop()``.

    Either ``run()`` is that task (a server's timer, for all its connections), or a task
    hosts the timer in the waits it makes anyway: in :meth:`wait_scope`, then
    :meth:`fire_due` once that scope has ended (a client's reader: a task less per
    connection).

    Callbacks must not block or raise: they start tasks. One that raises is logged as an
    internal error on ``logger`` (default: the ``trio_ws`` logger), and the others still run.
    """

    __slots__ = ("_heap", "_logger", "_order", "_stopped", "_wakeup")

    def __init__(self, logger: LoggerLike | None = None) -> None:
        self._logger = logger if logger is not None else logging.getLogger("trio_ws")
        self._heap: list[tuple[float, int, Timed]] = []
        self._order = itertools.count()  # ties keep their order; Timed is never compared
        self._wakeup: trio.CancelScope | None = None  # the current wait for the next due time
        self._stopped = False

    def call_at(self, when: float, callback: Callable[[], None]) -> Timed:
        """Call ``callback`` at ``when`` (trio time)."""
        timed = Timed(callback)
        heapq.heappush(self._heap, (when, next(self._order), timed))
        if self._wakeup is not None and when < self._wakeup.deadline:
            self._wakeup.deadline = when
        return timed

    def stop(self) -> None:
        """Fire nothing more, and end ``run()``."""
        self._stopped = True
        self._heap.clear()
        if self._wakeup is not None:
            self._wakeup.cancel()

    def wait_scope(self) -> trio.CancelScope:
        """A cancel scope that ends the hosting task's waits when the next callback falls due
        (:meth:`call_at` brings its deadline forward); call :meth:`fire_due` once it ends."""
        heap = self._heap
        self._wakeup = trio.CancelScope(deadline=heap[0][0] if heap else math.inf)
        return self._wakeup

    def fire_due(self) -> None:
        """Call the callbacks that are due."""
        self._wakeup = None
        heap = self._heap
        if not heap:
            return
        now = trio.current_time()
        while heap and heap[0][0] <= now and not self._stopped:
            timed = heapq.heappop(heap)[2]
            try:
                timed.fire()
            except Exception:
                self._logger.exception("internal error in a keepalive callback: %r", timed)

    async def run(self) -> None:
        """Host the timer in a task of its own, until ``stop()``."""
        while not self._stopped:
            with self.wait_scope():
                await trio.sleep_forever()
            self.fire_due()


class Keepalive:
    """One connection's keepalive: a ping round every ``ping_interval``, timed by a
    :class:`KeepaliveTimer`, each round a short task in the connection's nursery.

    A round fails the connection with 1011 when its pong has not come ``ping_timeout`` after
    the ping went out while we were reading, and aborts it when the peer took none of our
    bytes for that long. A peer whose messages fill our queue, or that slowly reads a large
    message of ours, is alive.
    """

    __slots__ = ("_core", "_round_scope", "_timed", "_timer")

    def __init__(self, core: Core, timer: KeepaliveTimer) -> None:
        self._core = core
        self._timer = timer
        self._timed: Timed | None = None  # the next round, while it waits
        self._round_scope: trio.CancelScope | None = None  # the round's, while it runs

    def schedule(self) -> None:
        """Start a ping round one ``ping_interval`` from now."""
        interval = self._core.options.ping_interval
        assert interval is not None
        self._timed = self._timer.call_at(trio.current_time() + interval, self._start_round)

    def stop(self) -> None:
        if self._timed is not None:
            self._timed.cancel()
            self._timed = None
        if self._round_scope is not None:
            self._round_scope.cancel()

    def _start_round(self) -> None:
        self._timed = None
        core = self._core
        if core.state is State.OPEN and core.tasks is not None:
            core.tasks.start_soon(self._round)

    async def _round(self) -> None:
        """Send a keepalive ping and wait for its pong; schedule the next round if it came."""
        core = self._core
        answered = False
        try:
            with trio.CancelScope() as self._round_scope:
                answered = await self.ping()
        except Exception as exc:  # a bug in trio_ws: reported, never raised
            core.logger.error("connection %s: internal error in keepalive", core.id, exc_info=exc)
            await core.fail(1011, "internal error", exc)
            return
        finally:
            self._round_scope = None
        if answered and core.state is State.OPEN:
            self.schedule()

    async def ping(self) -> bool:
        """One keepalive ping; True if its pong came, False if the connection failed."""
        core = self._core
        if core.state is not State.OPEN:
            return False
        timeout = core.options.ping_timeout
        payload = core.pings.new_payload()
        pending = core.pings.add(payload)
        core.writer.write(core.protocol.send_ping(payload))
        try:
            while True:
                with trio.move_on_after(timeout):
                    return await pending.wait() is not None
                if core.writer.stalled_for(trio.current_time()) >= timeout:
                    stalled = f"no write progress for {timeout:g} s: the peer stopped reading"
                    core.stats.keepalive_failures += 1
                    await core.abort(1011, stalled)
                    return False
                # Our ping may still wait behind writes that progress, or its pong behind
                # messages we stopped reading for backpressure: the peer is alive.
                if not core.writer.buffered and not core.inbox.is_full():
                    core.stats.keepalive_failures += 1
                    await core.fail(1011, "keepalive ping timeout", None)
                    return False
        finally:
            core.pings.forget(payload, pending)
