"""The one door from ``connect()`` and ``serve()`` into a connection's machinery."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from ._keepalive import KeepaliveTimer
    from .connection import Connection

__all__ = ["session"]


def session(
    ws: Connection, keepalive: KeepaliveTimer | None = None
) -> AbstractAsyncContextManager[None]:
    """Run the background work of ``ws`` around a body; close the connection when it exits.

    ``keepalive`` times the pings (a server's timer, for all its connections); without it the
    session runs a timer of its own. See ``_core.Core.session``.
    """
    return ws._core.session(keepalive)  # pyright: ignore[reportPrivateUsage]
