"""How a connection ends: the close frames sent and received, the first failure, and the error
that receivers and senders get from then on (RFC 6455 §7). No trio: state only.
"""

from __future__ import annotations

import enum
from typing import TypeVar, cast

from .exceptions import OK_CLOSE_CODES, ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from .frames import Close

__all__ = ["SENDABLE_CODES", "Ending", "State"]

# RFC 6455 §7.4.1 codes an endpoint may send, plus the IANA-registered 1012 and 1013. Not 1014:
# wsproto, so every trio_ws peer, fails a close frame with it as a protocol error.
SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1014)})


class State(enum.Enum):
    """Where a connection is in its life (RFC 6455 §4-7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Ending:
    """The close frames of one connection and its first failure, as they happen."""

    __slots__ = ("_rcvd_first", "failure", "rcvd", "sent")

    def __init__(self) -> None:
        self.rcvd: tuple[int, str] | None = None  # the peer's close frame
        self.sent: tuple[int, str] | None = None  # ours
        self.failure: tuple[int, str, BaseException | None] | None = None
        self._rcvd_first: bool | None = None  # once a close frame went either way

    def received(self, code: int, reason: str) -> None:
        """The peer's close frame came."""
        self.rcvd = (code, reason)
        if self._rcvd_first is None:
            self._rcvd_first = True

    def sending(self, code: int, reason: str) -> None:
        """Our close frame goes out."""
        self.sent = (code, reason)
        if self._rcvd_first is None:
            self._rcvd_first = False

    def record_failure(self, code: int, reason: str, cause: BaseException | None) -> None:
        """Note why the connection failed, unless it failed or was closed by the peer before."""
        if self.failure is None and self.rcvd is None:
            self.failure = (code, reason, cause)

    def frame_to_send(self, code: int, reason: str) -> tuple[int, str]:
        """The code and reason our close frame says: the first cause wins, whoever sends it.

        The answer to the peer's close frame echoes its code; a connection that failed says why.
        """
        if self.rcvd is not None:
            return self.rcvd[0], ""
        if self.failure is not None and self.failure[0] in SENDABLE_CODES:
            return self.failure[0], self.failure[1]
        return code, reason

    def error(self, closed: bool) -> ConnectionClosed:
        """The exception that says how the connection ended (or is ending)."""
        rcvd, sent = self.rcvd, self.sent
        if self.failure is not None:
            code, reason, cause = self.failure
            error = self._closed(ConnectionClosedError, code, reason)
            error.__cause__ = cause
            return error
        if rcvd is None and (sent is None or closed):
            return self._closed(
                ConnectionClosedError, 1006, "connection lost without a close frame"
            )
        code, reason = rcvd if rcvd is not None else cast("tuple[int, str]", sent)
        if code in OK_CLOSE_CODES and (sent is None or sent[0] in OK_CLOSE_CODES):
            return self._closed(ConnectionClosedOK, code, reason)
        return self._closed(ConnectionClosedError, code, reason)

    def _closed(self, kind: type[_Closed], code: int, reason: str) -> _Closed:
        """A ConnectionClosed of ``kind`` carrying the close frames, as websockets' does."""
        rcvd, sent = self.rcvd, self.sent
        return kind(
            code,
            reason,
            rcvd=None if rcvd is None else Close(*rcvd),
            sent=None if sent is None else Close(*sent),
            rcvd_then_sent=self._rcvd_first if rcvd is not None and sent is not None else None,
        )


_Closed = TypeVar("_Closed", bound=ConnectionClosed)
