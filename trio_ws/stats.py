"""Counters of what a server (or a client connection) did: what an operator watches.

Every counter is a plain int or a :class:`collections.Counter`, updated in place as things
happen: no allocation per message, nothing to sample. Read them at any time; export them with
the recipe in the docs (Prometheus).
"""

from __future__ import annotations

from collections import Counter

__all__ = ["Stats"]


class Stats:
    """What a server's connections (or one client connection) did so far.

    Attributes:
        connections_open: WebSocket connections open now (handshake done, socket not closed).
        connections_total: WebSocket connections opened so far.
        handshakes_refused: opening handshakes that did not lead to a connection, by reason:
            the HTTP status sent (``"403"``, ``"404"``, ``"426"``...), ``"timeout"`` (the client
            did not finish within ``open_timeout``), ``"limit"`` (503 at ``max_connections``),
            ``"lost"`` (the client went away) or ``"response"`` (``process_request`` answered
            a plain HTTP request, such as a health check, with a status below 400).
        close_codes: closed connections, by the peer's close code (1006 when none came).
        messages_in: data messages received.
        messages_out: data messages sent.
        bytes_in: bytes read from the sockets of open connections (frames as on the wire).
        bytes_out: bytes written to them, control frames included.
        broadcast_drops: messages :func:`~trio_ws.broadcast` skipped for a connection whose
            write buffer was over its high-water mark.
        keepalive_failures: connections failed with 1011 for want of a keepalive pong.
    """

    __slots__ = (
        "broadcast_drops",
        "bytes_in",
        "bytes_out",
        "close_codes",
        "connections_open",
        "connections_total",
        "handshakes_refused",
        "keepalive_failures",
        "messages_in",
        "messages_out",
    )

    def __init__(self) -> None:
        self.connections_open: int = 0
        self.connections_total: int = 0
        self.handshakes_refused: Counter[str] = Counter()
        self.close_codes: Counter[int] = Counter()
        self.messages_in: int = 0
        self.messages_out: int = 0
        self.bytes_in: int = 0
        self.bytes_out: int = 0
        self.broadcast_drops: int = 0
        self.keepalive_failures: int = 0

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        """Every counter by name, the per-reason ones as dicts (for JSON or a log line)."""
        return {
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "handshakes_refused": dict(self.handshakes_refused),
            "close_codes": {str(code): n for code, n in sorted(self.close_codes.items())},
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "broadcast_drops": self.broadcast_drops,
            "keepalive_failures": self.keepalive_failures,
        }

    def __repr__(self) -> str:
        return f"Stats({self.as_dict()!r})"
