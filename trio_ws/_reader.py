"""A connection's reader task: it alone reads the stream, from the opening to the closing.

How this works: the task reads whatever arrives and hands it to ``take_in``, which acts on it at
once (messages to the inbox, pongs and close answers to the writer), so that a ping is answered
as soon as it is read, whatever the application is doing. It stops reading while the inbox is
full, so that TCP pushes back on the peer, except while the connection is closing: the peer's
close frame must be read. It runs in a shielded cancel scope of its own, so that a cancelled
application can still finish the closing handshake; the connection cancels that scope, or
gives it a deadline, when it is done with the stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ._inbox import Inbox

__all__ = ["Reader"]

_RECEIVE_SIZE = 64 * 1024


class Reader:
    """Reads ``stream`` until ``take_in`` says stop, the stream ends or ``scope`` is cancelled.

    Args:
        take_in: acts on bytes read; returns False when nothing more should be read.
        on_end: called with the error when the stream failed, with None at its end.
        on_bug: called with an exception that a bug in trio_ws raised while reading.
        finish: awaited once reading is over, whatever ended it.
    """

    __slots__ = ("_finish", "_inbox", "_on_bug", "_on_end", "_stream", "_take_in", "scope")

    def __init__(
        self,
        stream: trio.abc.Stream,
        inbox: Inbox,
        *,
        take_in: Callable[[bytes | bytearray], bool],
        on_end: Callable[[BaseException | None], None],
        on_bug: Callable[[Exception], None],
        finish: Callable[[], Awaitable[None]],
    ) -> None:
        self._stream = stream
        self._inbox = inbox
        self._take_in = take_in
        self._on_end = on_end
        self._on_bug = on_bug
        self._finish = finish
        self.scope = trio.CancelScope(shield=True)

    async def run(self) -> None:
        try:
            with self.scope:
                await self._read()
        except Exception as exc:  # reported, never raised: see _groups
            self._on_bug(exc)
        finally:
            await self._finish()

    async def _read(self) -> None:
        inbox, stream = self._inbox, self._stream
        while True:
            if inbox.is_full():
                await inbox.wait_for_room()
                continue
            try:
                data = await stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._on_end(exc)
                return
            if not data:
                self._on_end(None)
                return
            if not self._take_in(data):
                return
