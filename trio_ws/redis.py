"""Fan-out across processes: Redis pub/sub bridged to :func:`~trio_ws.broadcast`.

How this works: each worker process runs :func:`relay`, one task that holds one Redis
subscription (a coredis PubSub on its own TCP connection) and calls
``broadcast(connections(), message)`` for every message on the channel, so the worker's clients
get it as if ``broadcast()`` had been called there. Any process sends with :func:`publish`,
one ``PUBLISH``. coredis runs on anyio, hence on trio; it is the ``redis`` extra
(``pip install trio-ws[redis]``), so the package face does not import this module.

Text or bytes: a Redis message is bytes, so :func:`publish` puts one byte in front of the
payload, ``t`` for text (then UTF-8) or ``b`` for binary, and :func:`relay` strips it: a str
reaches clients as a text frame, bytes as a binary frame, and the two kinds keep their order,
since they share one channel. A message without that byte (``redis-cli PUBLISH`` by hand) is
logged and skipped.

Reconnecting: coredis can resubscribe by itself, but it does not tell us, and its message
iterator may end silently after it did; so :func:`relay` turns coredis's retries off and owns
the loop: when the subscription fails it logs a WARNING, waits a :class:`~trio_ws.client.Backoff`
delay, subscribes again, and logs at INFO once subscribed. Pub/sub stores nothing: whatever is
published while a worker is not subscribed never reaches that worker's clients.

coredis's task groups wrap a failure in ExceptionGroups; ``_redis_down()`` and ``_unwrapped()``
look into them, and the user's own exception (from ``connections()``) never goes through them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Literal, NoReturn, cast
from urllib.parse import urlsplit, urlunsplit

import trio

from ._groups import reraise
from .broadcasting import broadcast
from .client import Backoff

try:
    import anyio
    import coredis
    from coredis.exceptions import ConnectionError as _RedisConnectionError
    from coredis.retry import NoRetryPolicy
except ImportError as _missing:  # pragma: no cover - needs an environment without coredis
    raise ImportError(
        "trio_ws.redis needs coredis, an optional dependency: pip install trio-ws[redis]"
    ) from _missing

if TYPE_CHECKING:
    from coredis.patterns.pubsub import PubSub

    from .connection import Connection

__all__ = ["DEFAULT_BACKOFF", "publish", "relay"]

#: How long :func:`relay` waits before each new subscription attempt after Redis failed: at
#: first up to 0.1 s, then from 0.25 s doubling up to 10 s. Shorter than a WebSocket client's
#: default, since every second without a subscription loses that second's messages.
DEFAULT_BACKOFF = Backoff(initial_delay=0.1, min_delay=0.25, factor=2.0, max_delay=10.0)

_TEXT = b"t"
_BINARY = b"b"

# What a lost or unreachable Redis raises, through coredis: its ConnectionError (EOF, refused
# connection, BusyLoadingError...), and OSError, TimeoutError included (coredis raises
# TimeoutError when Redis does not acknowledge a subscription within a second).
_REDIS_DOWN = (_RedisConnectionError, OSError)

# What coredis's cleanup may raise when a cancellation has closed its connection under it.
_CLEANUP_NOISE = (
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    *_REDIS_DOWN,
)

_logger = logging.getLogger("trio_ws.redis")


async def relay(
    redis_url: str,
    channel: str,
    connections: Callable[[], Iterable[Connection]],
    *,
    slow: Literal["skip", "close"] = "skip",
    backoff: Backoff = DEFAULT_BACKOFF,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Subscribe to ``channel`` and broadcast each message to ``connections()``, until cancelled.

    Start it with ``await nursery.start(relay, url, channel, lambda: server.connections)``:
    :meth:`~trio.Nursery.start` returns once Redis has acknowledged the subscription, so a
    message published after that reaches this process's clients. Each message goes out with
    ``broadcast(connections(), message, slow=slow)``: a str published with :func:`publish` as a
    text frame, bytes as a binary frame, to the connections open at that moment.
    ``connections`` is called once per message (``server.connections`` is a new frozenset
    each time; a room's set works too: ``lambda: room``).

    When the subscription fails later (Redis restarted, the network lost), it logs a WARNING
    ("redis bridge: connection lost, reconnecting"), subscribes again after ``backoff``'s
    delays, for as long as it takes, and logs at INFO once it is back ("redis bridge:
    reconnected"). Messages published meanwhile are lost for this process: pub/sub delivers
    at most once, to the subscribers of the moment.

    Args:
        redis_url: where Redis is: ``redis://[[user]:password@]host[:port][/db]``,
            ``rediss://`` for TLS, ``unix:///path/to/socket``.
        channel: the Redis channel :func:`publish` sends to.
        connections: called for each message: the connections to broadcast it to.
        slow: what :func:`~trio_ws.broadcast` does with a client that does not keep up:
            "skip" drops the message for it, "close" fails it with 1008.
        backoff: the delays between attempts to subscribe again.
        task_status: for :meth:`trio.Nursery.start`; ``started()`` once subscribed.

    Raises:
        ConnectionError: Redis cannot be reached for the first subscription (before
            ``started()``; later failures are retried, never raised).
        Exception: whatever ``connections()`` raised, as it was raised; the subscription is
            closed first. Redis refusing us (a wrong password, an unknown database) raises
            coredis's own ``RedisError``, at any time.

    Cancelling is safe at any point: the subscription's connection is closed (after an
    UNSUBSCRIBE that waits 0.1 s at most) and no task is left behind.
    """
    if slow not in ("skip", "close"):
        raise ValueError(f'slow must be "skip" or "close", not {slow!r}')
    try:
        async with coredis.Redis.from_url(redis_url, decode_responses=False) as client:
            await _relay_forever(
                client, _redacted(redis_url), channel, connections, slow, backoff, task_status
            )
    except BaseExceptionGroup as group:  # from the client's task group, around everything
        reraise(_unwrapped(group))


async def _relay_forever(
    client: coredis.Redis[bytes],
    where: str,
    channel: str,
    connections: Callable[[], Iterable[Connection]],
    slow: Literal["skip", "close"],
    backoff: Backoff,
    task_status: trio.TaskStatus[None],
) -> NoReturn:
    """relay() inside its client: subscribe, relay, and subscribe again after each failure."""
    started = False
    delays: Iterator[float] | None = None  # while the subscription is lost
    lost_at = 0.0
    while True:
        try:
            async with _subscription(client, channel) as pubsub:
                if not started:
                    started = True
                    task_status.started()
                elif delays is not None:
                    _logger.info(
                        "redis bridge: reconnected to %s, subscribed to %r again; what was "
                        "published in the %.1f s without a subscription is lost",
                        where,
                        channel,
                        trio.current_time() - lost_at,
                    )
                delays = None
                error = await _relay_messages(pubsub, connections, slow)
        except BaseException as exc:
            failure = _redis_down(exc)
            if failure is None:
                raise
            if not started:
                raise ConnectionError(
                    f"redis bridge: cannot subscribe to {channel!r} at {where}: {failure}"
                ) from failure
            if delays is None:
                _logger.warning(
                    "redis bridge: connection lost, reconnecting to %s: %s", where, failure
                )
                delays = backoff.delays()
                lost_at = trio.current_time()
            else:
                _logger.debug("redis bridge: cannot reach %s yet: %s", where, failure)
            await trio.sleep(next(delays))
        else:
            raise error


async def publish(
    redis: str | coredis.Redis[bytes] | coredis.Redis[str],
    channel: str,
    message: str | bytes | bytearray | memoryview,
) -> int:
    """Publish ``message`` on ``channel``, for every :func:`relay` subscribed to it.

    A str reaches the clients as a text frame, bytes-like as a binary frame. ``redis`` is a URL
    (a new connection for this one message) or a coredis client you entered with
    ``async with`` (its connections are reused: what a server that publishes often wants);
    either may use ``decode_responses``.

    Returns:
        The number of subscriptions that got the message, one per :func:`relay` subscribed
        now. 0 means that nobody did, as when every worker is between Redis failures; the
        message is not kept.

    Raises:
        TypeError: ``message`` is not str or bytes-like; nothing was sent.
        ConnectionError: Redis cannot be reached; the message is lost, and it is not known
            whether Redis got it if the connection failed after it was sent. Redis refusing
            the command (a wrong password...) raises coredis's own ``RedisError``.

    Cancelling may leave the message published or not.
    """
    payload = _framed(message)
    try:
        if isinstance(redis, str):
            async with coredis.Redis.from_url(redis) as client:
                return await client.publish(channel, payload)
        return await redis.publish(channel, payload)
    except BaseException as exc:
        failure = _redis_down(exc)
        if failure is None:
            reraise(_unwrapped(exc))
        where = _redacted(redis) if isinstance(redis, str) else "Redis"
        raise ConnectionError(
            f"redis bridge: cannot publish to {channel!r} at {where}: {failure}"
        ) from failure


def _subscription(client: coredis.Redis[bytes], channel: str) -> PubSub[bytes]:
    """A PubSub subscribed to ``channel`` once entered, that fails instead of retrying."""
    return client.pubsub(
        channels=[channel], ignore_subscribe_messages=True, retry_policy=NoRetryPolicy()
    )


async def _relay_messages(
    pubsub: PubSub[bytes],
    connections: Callable[[], Iterable[Connection]],
    slow: Literal["skip", "close"],
) -> Exception:
    """Broadcast every message until ``connections()`` raises; return what it raised.

    Returned, not raised: inside coredis's task group it would come out wrapped in an
    ExceptionGroup, and the caller raises it once out of there.
    """
    while True:
        received = await pubsub.get_message()
        if received is None or received["type"] != "message":
            continue  # a subscription acknowledgement
        message = _unframed(cast(bytes, received["data"]))
        if message is None:
            continue
        try:
            broadcast(connections(), message, slow=slow)
        except Exception as exc:
            return exc


def _framed(message: str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(message, str):
        return _TEXT + message.encode()
    if isinstance(message, bytes | bytearray | memoryview):  # pyright: ignore[reportUnnecessaryIsInstance]
        return _BINARY + bytes(message)
    raise TypeError(f"message must be str or bytes-like, not {type(message).__name__}")


def _unframed(data: bytes) -> str | memoryview | None:
    """The message :func:`publish` framed as ``data``; None (logged) for anything else."""
    kind = data[:1]
    if kind == _BINARY:
        return memoryview(data)[1:]  # no copy: bytes never change under the connections
    if kind == _TEXT:
        try:
            return data[1:].decode()
        except UnicodeDecodeError:
            pass
    _logger.warning(
        "redis bridge: skipped a message of %s bytes not sent by trio_ws.redis.publish() "
        "(no 't' or 'b' byte first, or invalid UTF-8 text)",
        f"{len(data):,}",
    )
    return None


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in cast(BaseExceptionGroup[BaseException], exc).exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _redis_down(exc: BaseException) -> Exception | None:
    """What says Redis failed, if ``exc`` (maybe a group from coredis) means only that."""
    leaves = list(_leaves(exc))
    if any(isinstance(leaf, trio.Cancelled) for leaf in leaves):
        return None  # being cancelled: that wins
    if all(isinstance(leaf, _REDIS_DOWN) for leaf in leaves):
        return cast(Exception, leaves[0])
    return None


def _unwrapped(exc: BaseException) -> BaseException:
    """The one exception the user should see for ``exc``, raised through coredis's groups.

    One exception alone in its groups is that exception. Cancelled comes out alone when the
    rest is what coredis's cleanup raises under cancellation (its PubSub sends UNSUBSCRIBE on a
    connection that the cancellation has just closed: anyio.ClosedResourceError). Anything
    else stays the group it is.
    """
    leaves = list(_leaves(exc))
    cancelled = [leaf for leaf in leaves if isinstance(leaf, trio.Cancelled)]
    if cancelled:
        if all(isinstance(leaf, (trio.Cancelled, *_CLEANUP_NOISE)) for leaf in leaves):
            return cancelled[0]
        return exc
    return leaves[0] if len(leaves) == 1 else exc


def _redacted(url: str) -> str:
    """``url`` without its password, for log lines and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
