"""The close frames of a connection, as :exc:`~trio_ws.ConnectionClosed` reports them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Close"]


@dataclass(frozen=True)
class Close:
    """A close frame's code and reason (RFC 6455 §5.5.1), as websockets' ``frames.Close``.

    Attributes:
        code: the close code; 1005 for a close frame that had none.
        reason: the close reason ("" when there is none).
    """

    code: int
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.code} ({self.reason})" if self.reason else str(self.code)
