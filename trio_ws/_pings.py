"""The pings a connection sent and waits to see answered (RFC 6455 §5.5.2-3).

A pong answers the ping whose payload it carries and every ping sent before it; a pong that
matches no ping is ignored (an unsolicited heartbeat, or the answer to a ping given up on).
"""

from __future__ import annotations

import os

import trio

from .exceptions import ConcurrencyError

__all__ = ["PendingPing", "Pings"]


class PendingPing:
    """One ping waiting for its pong; ``rtt`` is set when it came, None if it never will."""

    __slots__ = ("_done", "rtt", "sent_at")

    def __init__(self, sent_at: float) -> None:
        self._done = trio.Event()
        self.sent_at = sent_at
        self.rtt: float | None = None

    async def wait(self) -> float | None:
        """Wait for the pong (or the end of the connection); the round-trip time, or None."""
        await self._done.wait()
        return self.rtt

    def settle(self, rtt: float | None) -> None:
        self.rtt = rtt
        self._done.set()

    @property
    def settled(self) -> bool:
        return self._done.is_set()


class Pings:
    """The pings in flight on one connection, oldest first."""

    __slots__ = ("_pending", "latency")

    def __init__(self) -> None:
        self._pending: dict[bytes, PendingPing] = {}
        self.latency = 0.0  # the last round-trip time measured

    def new_payload(self) -> bytes:
        """4 random bytes that no ping in flight carries."""
        payload = os.urandom(4)
        while payload in self._pending:  # pragma: no cover - 1 in 4 billion
            payload = os.urandom(4)
        return payload

    def add(self, payload: bytes) -> PendingPing:
        """Note a ping about to go out.

        Raises:
            ConcurrencyError: a ping with the same payload still waits for its pong.
        """
        if payload in self._pending:
            raise ConcurrencyError("a ping with the same data is already waiting for its pong")
        pending = self._pending[payload] = PendingPing(trio.current_time())
        return pending

    def forget(self, payload: bytes, pending: PendingPing) -> None:
        """Stop waiting for this ping's pong (its waiter was cancelled)."""
        if not pending.settled and self._pending.get(payload) is pending:
            del self._pending[payload]

    def settle(self, payload: bytes) -> None:
        """A pong came: settle its ping and every ping sent before it."""
        if payload not in self._pending:
            return
        now = trio.current_time()
        pending = self._pending
        while pending:
            key = next(iter(pending))
            ping = pending.pop(key)
            ping.settle(now - ping.sent_at)
            if key == payload:
                self.latency = now - ping.sent_at
                return

    def settle_all(self) -> None:
        """The connection closed: no pong will come."""
        for ping in self._pending.values():
            ping.settle(None)
        self._pending.clear()
