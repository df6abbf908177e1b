"""The options a connection runs with, checked once when connect() or serve() is called.

``connect()`` and ``serve()`` take the same per-connection options; :func:`connection_options`
checks them all (a clear TypeError or ValueError naming the option) and returns the one
:class:`ConnectionOptions` that every connection of that call shares.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

__all__ = ["ConnectionOptions", "LoggerLike"]

#: What the ``logger`` option accepts.
LoggerLike = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Checked per-connection options; timeouts in seconds, sizes in bytes, None for no limit."""

    close_timeout: float = 10.0  # math.inf for no limit
    ping_interval: float | None = 20.0  # None: no keepalive
    ping_timeout: float = 20.0  # math.inf for no limit
    max_message_size: int | None = 2**20
    max_fragment_size: int | None = None
    max_queue_high: int | None = 16  # None: no limit, no backpressure
    max_queue_low: int | None = 4
    write_limit_high: int = 32 * 1024
    write_limit_low: int = 8 * 1024
    logger: LoggerLike = logging.getLogger("trio_ws")

