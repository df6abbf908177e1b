"""Send one message to many connections at once, without waiting for any of them.

How this works: :func:`broadcast` is a plain function, since queueing a frame never blocks in
trio_ws (the connection's writer takes whole frames into its write buffer and writes what the
socket takes at once). It looks at each connection once, in the order given, and:

- skips one that is not OPEN (in its opening handshake, closing or closed);
- skips one that is sending a fragmented message (``send()`` of an iterable, which holds the
  connection's message lock across its frames): RFC 6455 §5.4 lets no data frame come between
  them, and a sync function cannot wait for the last one;
- drops the message for a slow one, whose write buffer is over its high-water mark
  (``write_limit``), or fails it with 1008 (``slow="close"``); ``Stats.broadcast_drops`` counts
  it either way. So the buffer of a client that stopped reading stays within ``write_limit``
  plus one message, and the others never wait for it;
- queues the message for every other one.

Framing once: a server's frames are not masked, so every server connection without an extension
turns a message into the same bytes. The first such connection frames it and the others queue
that same bytes object (a message framed once however many connections get it). Client frames
are masked with a fresh key each, and permessage-deflate compresses with each connection's own
context, so those connections frame the message themselves.

Slow episodes: the first drop for a connection logs a WARNING and starts a task in the
connection's nursery, which waits until its buffer is down to the low-water mark (or the
connection has ended), logs at INFO how many messages were dropped meanwhile, and forgets the
connection. A stuck client costs one warning and one waiting task, however many messages are
broadcast; the only module state is ``_dropping``, one entry per connection dropping now.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

import trio

from ._closing import State
from .exceptions import ConcurrencyError, ConnectionClosed, InvalidState

if TYPE_CHECKING:
    import uuid

    from ._core import Core
    from .connection import Connection

__all__ = ["broadcast"]

# Our close reason for a connection failed by slow="close" (1008: policy violation).
_TOO_SLOW = "too slow to receive broadcast messages"

# Connections dropping messages now (an episode), by id: how many were dropped so far. An entry
# lives as long as its _watch_episode task: until the buffer drains or the connection ends.
_dropping: dict[uuid.UUID, int] = {}


def broadcast(
    connections: Iterable[Connection],
    message: str | bytes | bytearray | memoryview,
    raise_exceptions: bool = False,
    *,
    slow: Literal["skip", "close"] = "skip",
) -> None:
    """Queue ``message`` on every open connection: a text frame for str, binary for bytes-like.

    Never blocks (it is not async): each connection's write buffer takes the message whole and
    its socket sends it as fast as that client reads, so one slow or stuck client never delays
    the others. A connection whose buffer is over its high-water mark (``write_limit``) is too
    slow: the message is dropped for it (``slow="skip"``), or the connection is failed with
    close code 1008 (``slow="close"``), its close frame queued after what it has not read yet
    and its socket closed at the latest ``close_timeout`` later. Either way
    ``stats.broadcast_drops`` counts the message, and the first drop of an episode logs a
    WARNING with the connection's id (see the module docstring).

    A connection that is not OPEN, or that is sending a fragmented message, is skipped, as in
    websockets; the latter with a WARNING unless ``raise_exceptions``.

    Args:
        connections: the connections, iterated once: ``server.connections``, a room's set...
        message: the message, framed once for all server connections without compression.
        raise_exceptions: raise an ExceptionGroup of what happened to the connections that
            did not get the message, once all the others have it.
        slow: what to do with a connection whose write buffer is over its high-water mark:
            "skip" drops the message for it, "close" fails it with 1008.

    Raises:
        TypeError: ``message`` is not str or bytes-like; nothing was sent.
        ValueError: ``slow`` is not "skip" or "close"; nothing was sent.
        ExceptionGroup: only with ``raise_exceptions``, when some connection did not get the
            message: "skipped broadcast", with one exception per such connection, in order:
            ConnectionClosed for one that is closing or closed (ConnectionClosedError 1008
            for one that ``slow="close"`` just failed), ``trio.WouldBlock`` for one whose
            message was dropped, ConcurrencyError for one sending a fragmented message and
            InvalidState for one still in its opening handshake. This group is the answer the
            caller asked for, not a failure: every other connection got the message.
    """
    if not isinstance(message, str | bytes | bytearray | memoryview):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"message must be str or bytes-like, not {type(message).__name__}")
    if slow not in ("skip", "close"):
        raise ValueError(f'slow must be "skip" or "close", not {slow!r}')
    errors: list[Exception] = []
    shared: bytes | None = None  # the frames of a server connection without an extension
    for ws in connections:
        error: Exception | None = None
        if ws.state is State.CONNECTING:  # no machinery yet: nothing to look at
            error = InvalidState(f"connection {ws.id} is not open yet: opening handshake")
        else:
            core = _core_of(ws)
            try:
                core.check_open()
            except ConnectionClosed as exc:
                error = exc
            else:
                if _sending_fragments(ws):
                    error = ConcurrencyError(f"connection {ws.id} is sending a fragmented message")
                    if not raise_exceptions:
                        core.logger.warning(
                            "connection %s: skipped broadcast: sending a fragmented message",
                            core.id,
                        )
                elif core.writer.is_full():
                    error = _too_slow(core, slow)
                elif _frames_are_shared(core):
                    if shared is None:
                        shared = core.protocol.send_message(message)
                    core.stats.messages_out += 1
                    core.writer.write(shared)
                else:
                    core.queue_message(message)
        if error is not None and raise_exceptions:
            errors.append(error)
    if errors:
        raise ExceptionGroup("skipped broadcast", errors)


def _too_slow(core: Core, slow: str) -> Exception:
    """Drop the message for a connection whose buffer is full, or fail it; say what happened."""
    core.stats.broadcast_drops += 1
    buffered, limit = core.writer.buffered, core.options.write_limit_high
    if slow == "close":
        core.logger.warning(
            "connection %s: %s bytes queued exceed write_limit=%s: failing with 1008",
            core.id,
            buffered,
            limit,
        )
        # Closing now, not when the task runs: the connection leaves OPEN at once, so that
        # nothing else is queued for it.
        core.record_failure(1008, _TOO_SLOW, None)
        core.send_close(1008, _TOO_SLOW)
        if core.tasks is not None:  # the session runs: it closes the socket, bounded
            core.tasks.start_soon(core.fail, 1008, _TOO_SLOW, None)
        return core.closed_error()
    dropped = _dropping.get(core.id)
    if dropped is not None:
        _dropping[core.id] = dropped + 1
    else:
        core.logger.warning(
            "connection %s: %s bytes queued exceed write_limit=%s: "
            "dropping broadcast messages until it drains",
            core.id,
            buffered,
            limit,
        )
        if core.tasks is not None:  # else not tracked: each drop warns
            core.tasks.start_soon(_watch_episode, core)
            _dropping[core.id] = 1
    return trio.WouldBlock(
        f"connection {core.id}: {buffered:,} bytes queued exceed write_limit={limit:,}: "
        "message dropped"
    )


async def _watch_episode(core: Core) -> None:
    """End a connection's slow episode once its buffer is down to the low-water mark.

    Runs in the connection's nursery; returns when the connection ends (its writer stops).
    """
    try:
        await core.writer.wait_for_room()
    finally:
        dropped = _dropping.pop(core.id, 0)
    if not core.writer.lost:
        core.logger.info(
            "connection %s: caught up after %d broadcast messages were dropped", core.id, dropped
        )


def _core_of(ws: Connection) -> Core:
    return ws._core  # pyright: ignore[reportPrivateUsage]


def _sending_fragments(ws: Connection) -> bool:
    """Whether ``send()`` of an iterable is between the frames of its message."""
    lock = ws._message_lock  # pyright: ignore[reportPrivateUsage]
    return lock is not None and lock.locked()  # made by the first such send()


def _frames_are_shared(core: Core) -> bool:
    """Whether ``core`` frames a message into the same bytes as every other such connection:
    a server's (its frames are not masked) without an extension (permessage-deflate)."""
    # The extensions agreed are known only to the wsproto frame protocol that Protocol wraps
    # (``extensions`` is public on wsproto's FrameProtocol, ``_frames`` is Protocol's own).
    return not core.is_client and not core.protocol._frames.extensions  # pyright: ignore[reportPrivateUsage]
