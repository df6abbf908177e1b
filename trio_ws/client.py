"""The client: :class:`connect` opens connections and owns everything that runs for them.

How this works: a ``connect(...)`` object holds checked options and opens a connection each
time it is used. Opening one (``_Opener.open``) runs, under one ``open_timeout`` deadline: the
stream (TCP, through a proxy, a Unix socket, or the caller's ``stream=``), TLS for ``wss://``,
and the opening handshake, following redirects. Then one of three owners runs the connection's
background work:

- ``async with connect(...) as ws``: a session in the caller's task, closed when the block exits;
- ``await nursery.start(connect_in, ...)``: a session in a task of the caller's nursery, closed
  by ``ws.aclose()`` or when that nursery's scope ends;
- ``async for ws in connect(...)`` (``_Reconnecting``): an ``async for`` offers no place to hold
  a nursery across iterations, so each connection's session runs in a task of trio_ws's own
  (a trio system task), which closes it at the next iteration, when the loop is left and the
  iterator dropped, or when ``trio.run`` ends, whichever comes first.
"""

from __future__ import annotations

import base64
import os
import random
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, NoReturn, Unpack, cast

import trio

from . import _direct
from ._handshake import ClientHandshake, Opened
from ._options import HandshakeOptions, SharedOptions, call_options, header_option
from ._proxy import Proxy, open_proxied_stream, parse_proxy, proxy_for
from ._session import session
from ._uri import WebSocketURI, parse_uri
from ._version import __version__
from .connection import Connection, LoggerLike
from .exceptions import (
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    ProxyError,
    SecurityError,
)
from .http import Headers, HeadersLike

__all__ = [
    "DEFAULT_USER_AGENT",
    "MAX_REDIRECTS",
    "Backoff",
    "ClientConnection",
    "ConnectOptions",
    "connect",
    "connect_in",
    "process_exception",
    "unix_connect",
]

#: The User-Agent header sent unless ``user_agent_header`` says otherwise.
DEFAULT_USER_AGENT = f"trio_ws/{__version__}"
#: The most redirects followed during one opening handshake.
MAX_REDIRECTS = 10

_RECEIVE_SIZE = 16 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class ClientConnection(Connection):
    """The client's side of a WebSocket connection; see :class:`~trio_ws.connection.Connection`."""

    __slots__ = ()


@dataclass(frozen=True)
class Backoff:
    """How long ``async for ws in connect(...)`` waits before each new attempt.

    The first wait after a connection is lost, or after the first failed attempt, is random
    between 0 and ``initial_delay`` (so that clients that lost the same server do not all come
    back at once); the next ones grow from ``min_delay`` by ``factor`` up to ``max_delay``,
    each with jitter: a random part of up to ``jitter`` of it taken off. The defaults are
    websockets' (3.1 s, 5.0 s, 8.1 s... up to 90 s).

    Raises:
        ValueError: a delay is negative or NaN, ``factor`` is below 1, ``jitter`` is outside
            0-1, or ``min_delay`` exceeds ``max_delay``.
    """

    initial_delay: float = 5.0
    min_delay: float = 3.1
    factor: float = 1.618
    max_delay: float = 90.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        for name in ("initial_delay", "min_delay", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"Backoff.{name} must be a number of seconds >= 0, not {value!r}")
        if not self.factor >= 1:
            raise ValueError(f"Backoff.factor must be at least 1, not {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff.jitter must be between 0 and 1, not {self.jitter!r}")
        if self.min_delay > self.max_delay:
            raise ValueError("Backoff.min_delay must not exceed Backoff.max_delay")

    def delays(self) -> Generator[float, None, None]:
        """The waits before each attempt of a run of failures, forever."""
        yield random.uniform(0, self.initial_delay)
        delay = self.min_delay
        while True:
            yield delay * (1 - random.uniform(0, self.jitter))
            delay = min(delay * self.factor, self.max_delay)


_DEFAULT_BACKOFF = Backoff()  # frozen: every connect() without backoff= shares it


def process_exception(exc: Exception) -> Exception | None:
    """The default ``process_exception`` of ``async for ws in connect(...)``: what to retry.

    Returns None (retry) for what a restarting or overloaded server causes: network errors
    (:class:`OSError` but a TLS certificate that fails verification), ``open_timeout``
    (:class:`TimeoutError`), a connection lost during the handshake or an answer that is no
    HTTP (:exc:`~trio_ws.exceptions.InvalidMessage`), a proxy failure
    (:exc:`~trio_ws.exceptions.ProxyError`), and HTTP 429 or 5xx. Returns ``exc`` (raise it) for
    the rest: other statuses (401, 403, 404...), a 101 that breaks RFC 6455
    (:exc:`~trio_ws.exceptions.InvalidHeader`, :exc:`~trio_ws.exceptions.NegotiationError`), a
    redirect to ``ws://`` from ``wss://`` (:exc:`~trio_ws.exceptions.SecurityError`), and
    anything else.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return None if status == 429 or status >= 500 else exc
    if isinstance(exc, OSError | TimeoutError | InvalidMessage | ProxyError):
        return None
    return exc


class ConnectOptions(SharedOptions, total=False):
    """The options of :class:`connect`, which :func:`connect_in` and :func:`unix_connect`
    take too, with the same meaning."""

    ssl: ssl.SSLContext | None
    server_hostname: str | None
    stream: trio.abc.Stream | None
    proxy: str | Literal[True] | None
    proxy_ssl: ssl.SSLContext | None
    proxy_server_hostname: str | None
    happy_eyeballs_delay: float | None
    local_address: str | None
    origin: str | None
    process_exception: Callable[[Exception], Exception | None]
    backoff: Backoff
    additional_headers: HeadersLike | None
    user_agent_header: str | None


class connect:
    """Open a WebSocket connection to ``uri``: in a block, in a loop that reconnects, or in a
    nursery.

    ::

        async with trio_ws.connect("wss://example.com/chat") as ws:
            await ws.send("hello")
            print(await ws.recv())

    The connection's background work (reading frames, answering pings, keepalive) runs in a
    nursery that this context owns: when the block exits, all of it has ended and the socket is
    closed. Leaving the block normally closes with 1000, by an exception with 1011, by
    cancellation with 1001; the closing handshake is bounded by ``close_timeout`` and, when
    cancelled, shielded for that long so the server sees a close frame rather than a dropped
    connection. The same object may be entered again, for a new connection each time.

    ``async for ws in trio_ws.connect(uri):`` yields a new open connection after each one ends,
    retrying failed attempts with ``backoff``; ``process_exception`` says which failures are
    retried. Each connection is closed (1000) before the next attempt; leaving the loop
    (``break``, ``return``, an exception) closes the current one at once: no ``aclosing()``
    is needed. See :doc:`/topics/client`.

    A connection that must outlive a block lives in a nursery: ``ws = await
    nursery.start(trio_ws.connect_in, uri)``. ``await trio_ws.connect(uri)`` raises
    :exc:`TypeError`.

    Args:
        uri: ``ws://`` or ``wss://`` URI; IPv6 hosts in brackets (``ws://[::1]:8765/``);
            ``ws://user:password@host/`` sends the credentials with HTTP Basic authentication.
        ssl: the TLS context for ``wss://`` (default: :func:`ssl.create_default_context`).
        server_hostname: the host name TLS verifies and sends (SNI), instead of the URI's.
        stream: a connected :class:`trio.abc.Stream` to run the handshake over, instead of
            opening one (in-memory streams in tests, a stream of your own); it is used once, and
            closed with the connection. ``wss://`` still layers TLS on it.
        proxy: True (the default) uses the proxy that the environment names
            (``HTTPS_PROXY`` for ``wss://``, ``HTTP_PROXY`` for ``ws://``, ``ALL_PROXY``,
            ``NO_PROXY``), as websockets does; None connects directly; or a proxy URL:
            ``http://``, ``https://`` (HTTP CONNECT), ``socks5://``, ``socks5h://``,
            ``socks4://`` (the ``socks`` extra). Credentials in the URL are sent to the proxy.
        proxy_ssl: the TLS context for an ``https://`` proxy.
        proxy_server_hostname: the host name TLS verifies for an ``https://`` proxy.
        happy_eyeballs_delay, local_address: as for :func:`trio.open_tcp_stream`.
        origin: the Origin header, for servers that check it.
        process_exception: for ``async for``: given a failed attempt's exception, returns
            None to retry or an exception to raise; default :func:`process_exception`.
        backoff: for ``async for``: the waits between attempts (:class:`Backoff`).
        open_timeout: seconds allowed for DNS, TCP, a proxy, TLS and the opening handshake
            (redirects included) together; None for no limit.
        close_timeout: seconds allowed for the closing handshake; None for no limit.
        ping_interval: seconds between keepalive pings; None turns keepalive off.
        ping_timeout: seconds to wait for a keepalive pong before failing with 1011; None for
            no limit.
        max_size: the largest message accepted, in payload bytes (text counted as UTF-8);
            a larger one fails the connection with 1009. None for no limit. A
            ``(max_message_size, max_fragment_size)`` pair also bounds each frame; either may
            be None.
        max_queue: the messages received but not yet read: when that many wait (the
            high-water mark), trio_ws stops reading the socket so that TCP pushes back on the
            server, until you have brought them down to a quarter of it (the low-water mark).
            A ``(high, low)`` pair sets both. None for no limit.
        write_limit: the bytes buffered to send: above this high-water mark, ``send()`` waits
            until the socket has taken all but a quarter of it (the low-water mark). A
            ``(high, low)`` pair sets both.
        compression: "deflate" to offer permessage-deflate (RFC 7692), None not to.
        subprotocols: subprotocols to offer (HTTP tokens), most preferred first.
        additional_headers: extra headers for the upgrade request.
        user_agent_header: the User-Agent header; None sends none.
        logger: where to log; default ``logging.getLogger("trio_ws.client")``.

    Every option is checked when ``connect()`` is called: a wrong one raises at once.

    Raises:
        TypeError: an option has the wrong type (``max_size=True``, a str for
            ``subprotocols``...); the message names it. Raised by ``connect()`` itself.
        ValueError: an option has a wrong value (a negative timeout, a header value with CR,
            LF or NUL, ``ssl`` with a ``ws://`` URI...); the message names it. Raised by
            ``connect()`` itself.
        InvalidURI: ``uri`` is not a valid WebSocket URI. Raised by ``connect()`` itself.
        InvalidProxy: ``proxy`` is not a proxy URL trio_ws can use. Raised by ``connect()``
            itself, or when opening, for one from the environment.
        OSError: DNS, TCP or TLS failed (connection refused, certificate rejected...).
        TimeoutError: the opening handshake took longer than ``open_timeout``.
        InvalidStatus: the server answered with an HTTP status other than 101 (after
            :data:`~trio_ws.client.MAX_REDIRECTS` redirects, the last one).
        SecurityError: the server redirected a ``wss://`` URI to ``ws://``.
        ProxyError: the proxy refused to connect to the server, or broke its protocol.
        InvalidHandshake: the server's answer broke RFC 6455, or it closed the connection.

    Cancelling at any point, from DNS to the closing handshake, leaves no socket and no task.
    """

    def __init__(
        self,
        uri: str,
        *,
        ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        stream: trio.abc.Stream | None = None,
        proxy: str | Literal[True] | None = True,
        proxy_ssl: ssl.SSLContext | None = None,
        proxy_server_hostname: str | None = None,
        happy_eyeballs_delay: float | None = None,
        local_address: str | None = None,
        origin: str | None = None,
        process_exception: Callable[[Exception], Exception | None] = process_exception,
        backoff: Backoff | None = None,
        open_timeout: float | None = 10,
        close_timeout: float | None = 10,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        max_size: int | tuple[int | None, int | None] | None = 2**20,
        max_queue: int | tuple[int | None, int | None] | None = 16,
        write_limit: int | tuple[int, int | None] = 32 * 1024,
        compression: str | None = "deflate",
        subprotocols: Sequence[str] | None = None,
        additional_headers: HeadersLike | None = None,
        user_agent_header: str | None = DEFAULT_USER_AGENT,
        logger: LoggerLike | None = None,
    ) -> None:
        opening, options = call_options(locals(), logger_name="trio_ws.client")
        parsed = parse_uri(uri)
        if opening.ssl is not None and not parsed.secure:
            raise ValueError("ssl= was given for a ws:// URI; use wss://")
        if stream is not None and not isinstance(cast("object", stream), trio.abc.Stream):
            raise TypeError(f"stream must be a trio.abc.Stream or None, not {stream!r}")
        if not callable(process_exception):
            raise TypeError(f"process_exception must be a function, not {process_exception!r}")
        if backoff is not None and not isinstance(cast("object", backoff), Backoff):
            raise TypeError(f"backoff must be a trio_ws.Backoff or None, not {backoff!r}")
        headers = Headers(opening.headers)
        user_agent = header_option("user_agent_header", user_agent_header)
        if user_agent is not None and "User-Agent" not in headers:
            headers.add("User-Agent", user_agent)
        origin = header_option("origin", origin)
        if origin is not None and "Origin" not in headers:
            headers.add("Origin", origin)
        checked_proxy = _proxy_option(proxy)
        if isinstance(checked_proxy, Proxy) and checked_proxy.scheme != "https":
            for name, value in [
                ("proxy_ssl", proxy_ssl),
                ("proxy_server_hostname", proxy_server_hostname),
            ]:
                if value is not None:
                    scheme = checked_proxy.scheme
                    raise ValueError(f"{name}= is for https:// proxies, not {scheme}://")
        self._opener = _Opener(
            parsed,
            opening,
            headers,
            max_size=options.max_message_size,
            stream=stream,
            proxy=checked_proxy,
            proxy_ssl=_ssl_option("proxy_ssl", proxy_ssl),
            proxy_server_hostname=_hostname_option("proxy_server_hostname", proxy_server_hostname),
            server_hostname=_hostname_option("server_hostname", server_hostname),
            happy_eyeballs_delay=happy_eyeballs_delay,
            local_address=local_address,
            open_timeout_option=open_timeout,
        )
        self._options = options
        self._process_exception = process_exception
        self._backoff = backoff if backoff is not None else _DEFAULT_BACKOFF
        # The contexts entered and not yet exited, by task, most recent last.
        self._entered: dict[trio.lowlevel.Task, list[AbstractAsyncContextManager[Any]]] = {}

    # -- async with ------------------------------------------------------------------------

    async def __aenter__(self) -> ClientConnection:
        ws = await self._open()
        context = session(ws)  # entered directly: no generator-based context on the way
        await context.__aenter__()
        self._entered.setdefault(trio.lowlevel.current_task(), []).append(context)
        return ws

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        task = trio.lowlevel.current_task()
        contexts = self._entered[task]
        context = contexts.pop()
        if not contexts:
            del self._entered[task]
        return await context.__aexit__(exc_type, exc, traceback)

    async def _open(self) -> ClientConnection:
        opened = await self._opener.open()
        ws = ClientConnection(opened.stream, is_client=True, options=self._options)
        ws._open(opened.opened)  # pyright: ignore[reportPrivateUsage]
        return ws

    # -- no await --------------------------------------------------------------------------

    def __await__(self) -> NoReturn:
        raise TypeError(
            "trio_ws.connect() cannot be awaited: a connection needs a nursery for its "
            "background work. Use 'async with trio_ws.connect(uri) as ws:' for a connection "
            "that lives in a block, or 'ws = await nursery.start(trio_ws.connect_in, uri)' for "
            "one that lives in a nursery."
        )

    # -- async for -------------------------------------------------------------------------

    def __aiter__(self) -> _Reconnecting:
        return _Reconnecting(self)


class _Reconnecting:
    """``async for ws in connect(...)``: a new connection whenever the last one has ended.

    Each connection's session runs in a system task (``_Host``): see the module docstring.
    Leaving the loop drops this iterator; CPython then frees it at once, and ``__del__`` tells
    the host to close the connection (1000). ``aclose()`` does the same and waits.

    The work is ``_Attempts``', which this only holds: a failed attempt's exception holds the
    frame that caught it, and ``process_exception`` may keep it; that must not keep this
    iterator, and so the connection, alive.
    """

    __slots__ = ("_attempts",)

    def __init__(self, connector: connect) -> None:
        self._attempts = _Attempts(connector)

    def __anext__(self) -> Awaitable[ClientConnection]:
        # Not a coroutine of its own: a failure's traceback, which process_exception or a log
        # handler may keep, would hold its frame and, through it, this iterator.
        return self._attempts.next()

    async def aclose(self) -> None:
        """Close the current connection (1000) and wait until it is closed."""
        await self._attempts.close_current()
        await trio.lowlevel.checkpoint()

    def __del__(self) -> None:
        self._attempts.leave_soon()

    def __aiter__(self) -> _Reconnecting:
        return self


class _Attempts:
    """The reconnecting loop's state: the current connection's host and the waits."""

    def __init__(self, connector: connect) -> None:
        self._connector = connector
        self._host: _Host | None = None
        self._delays: Generator[float, None, None] | None = None  # during a run of failures

    async def next(self) -> ClientConnection:
        """Close the current connection, then open the next one, retrying with backoff."""
        await self.close_current()
        connector = self._connector
        if self._delays is not None:  # the connection before this one was lost: wait first
            await self._wait(None)
        while True:
            try:
                ws = await connector._open()  # pyright: ignore[reportPrivateUsage]
            except Exception as exc:
                raised = connector._process_exception(exc)  # pyright: ignore[reportPrivateUsage]
                if raised is not None:
                    if raised is exc:
                        raise
                    raise raised from exc
                await self._wait(exc)
                continue
            self._delays = connector._backoff.delays()  # pyright: ignore[reportPrivateUsage]
            self._host = await _Host.start(ws)
            return ws

    async def _wait(self, failure: Exception | None) -> None:
        if self._delays is None:
            self._delays = self._connector._backoff.delays()  # pyright: ignore[reportPrivateUsage]
        delay = next(self._delays)
        logger = self._connector._options.logger  # pyright: ignore[reportPrivateUsage]
        if failure is None:
            logger.info("connection lost; reconnecting in %.1f s", delay)
        else:
            # The repr, not the exception: a log handler that keeps records must not keep its
            # traceback, and the frames in it.
            logger.info("connecting failed (%s); retrying in %.1f s", repr(failure), delay)
        await trio.sleep(delay)

    async def close_current(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            await host.close()

    def leave_soon(self) -> None:
        if self._host is not None:
            self._host.leave_soon()


class _Host:
    """A system task that runs one connection's session until told to leave."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._leave = trio.Event()
        self._running = trio.Event()
        self._finished = trio.Event()
        self._token = trio.lowlevel.current_trio_token()

    @classmethod
    async def start(cls, ws: ClientConnection) -> _Host:
        host = cls(ws)
        trio.lowlevel.spawn_system_task(host._run, name=f"trio_ws connection {ws.id}")
        # Shielded, since the connection is running once spawned and must be handed over to be
        # closed; bounded, since its session starts at once.
        with trio.CancelScope(shield=True):
            await host._running.wait()
        return host

    async def _run(self) -> None:
        ws = self._ws
        try:
            async with session(ws):
                self._running.set()
                await self._leave.wait()
        except Exception:  # a system task must not raise: a bug, logged by the session
            ws.logger.debug("connection %s: its session ended on an error", ws.id, exc_info=True)
        finally:
            self._running.set()
            self._finished.set()

    async def close(self) -> None:
        """Close the connection (1000, as a block that ends) and wait until it is closed."""
        self._leave.set()
        with trio.CancelScope(shield=True):  # bounded: the session's close_timeout
            await self._finished.wait()
        await trio.lowlevel.checkpoint()

    def leave_soon(self) -> None:
        """From anywhere, even another thread or after trio.run: close when trio next can."""
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._leave.set)


async def connect_in(
    uri: str,
    *,
    task_status: trio.TaskStatus[ClientConnection] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[ConnectOptions],
) -> None:
    """Open a connection that lives in a nursery rather than a block.

    ::

        ws = await nursery.start(trio_ws.connect_in, "wss://example.com/feed")
        ...
        await ws.aclose()

    Reports the open connection through ``task_status``, then runs its background work in the
    nursery's task until it closes: by ``ws.aclose()``, by the server, or, at the latest, with
    1001 when the nursery's scope is cancelled. Pass options with :func:`functools.partial`
    (``nursery.start(partial(trio_ws.connect_in, uri, ping_interval=None))``).

    Args:
        uri: as for :class:`connect`.
        task_status: given by :meth:`trio.Nursery.start`.
        options: any option of :class:`connect`.

    Raises:
        Everything :class:`connect` raises, before the connection is reported.
    """
    async with connect(uri, **options) as ws:
        task_status.started(ws)
        await ws.wait_closed()


def unix_connect(
    path: str | os.PathLike[str], uri: str | None = None, **options: Unpack[ConnectOptions]
) -> connect:
    """:class:`connect` over the Unix socket ``path``, for a server on the same machine.

    ::

        async with trio_ws.unix_connect("/run/app/ws.sock") as ws:
            ...

    ``uri`` (default ``ws://localhost/``) gives the path and the Host header; ``wss://`` layers
    TLS on the socket. Everything else works as with :class:`connect` (``async with``,
    ``async for``, :func:`connect_in` through ``stream=`` of your own); no proxy is used.

    Raises:
        As :class:`connect` does.
    """
    if options.get("proxy") is not None:
        raise ValueError("unix_connect() takes no proxy")
    options["proxy"] = None
    connector = connect(uri or "ws://localhost/", **options)
    connector._opener.unix_path = os.fspath(path)  # pyright: ignore[reportPrivateUsage]
    return connector


# -- opening ---------------------------------------------------------------------------------


@dataclass
class _Opened:
    stream: trio.abc.Stream
    opened: Opened


class _Opener:
    """Opens one connection at a time with connect()'s options: stream, TLS, handshake."""

    def __init__(
        self,
        uri: WebSocketURI,
        opening: HandshakeOptions,
        headers: Headers,
        *,
        max_size: int | None,
        stream: trio.abc.Stream | None,
        proxy: Proxy | Literal[True] | None,
        proxy_ssl: ssl.SSLContext | None,
        proxy_server_hostname: str | None,
        server_hostname: str | None,
        happy_eyeballs_delay: float | None,
        local_address: str | None,
        open_timeout_option: float | None,
    ) -> None:
        self.uri = uri
        self.opening = opening
        self.headers = headers
        self.max_size = max_size
        self.stream = stream
        self.proxy = proxy
        self.proxy_ssl = proxy_ssl
        self.proxy_server_hostname = proxy_server_hostname
        self.server_hostname = server_hostname
        self.happy_eyeballs_delay = happy_eyeballs_delay
        self.local_address = local_address
        self.open_timeout_option = open_timeout_option
        self.unix_path: str | None = None
        self.stream_used = False

    async def open(self) -> _Opened:
        """Open a connection: stream, TLS, handshake, redirects, before one deadline."""
        uri = self.uri
        try:
            with trio.fail_after(self.opening.open_timeout):
                for redirects in range(MAX_REDIRECTS + 1):
                    stream = await self._open_stream(uri)
                    try:
                        opened = await self._handshake(stream, uri)
                    except BaseException as exc:
                        await trio.aclose_forcefully(stream)
                        if not isinstance(exc, InvalidStatus) or redirects == MAX_REDIRECTS:
                            raise
                        locations = exc.response.headers.get_all("Location")
                        location = locations[0] if len(locations) == 1 else None
                        if exc.response.status_code not in _REDIRECT_STATUSES or not location:
                            raise
                        uri = self._redirected(uri, location, exc)
                        continue
                    return _Opened(stream, opened)
                raise AssertionError("unreachable")  # pragma: no cover
        except trio.TooSlowError:
            raise TimeoutError(
                f"opening handshake with {uri.host_header} exceeded "
                f"open_timeout={self.open_timeout_option} s"
            ) from None

    def _redirected(self, uri: WebSocketURI, location: str, exc: InvalidStatus) -> WebSocketURI:
        """The URI a redirect points to; raise if it may not be followed."""
        if self.stream is not None or self.unix_path is not None:
            raise exc  # a given stream or a socket file has no other address to go to
        base = ("wss://" if uri.secure else "ws://") + uri.host_header + uri.resource_name
        try:
            new = parse_uri(urllib.parse.urljoin(base, location))
        except (InvalidURI, ValueError) as invalid:  # urljoin raises ValueError too
            raise InvalidHandshake(f"redirect to an invalid URI {location!r}") from invalid
        if uri.secure and not new.secure:
            raise SecurityError(f"redirect from {uri.host_header} to a ws:// URI refused")
        if new.user_info is None and new.origin == uri.origin:
            # The same server: the credentials of the first URI still apply.
            new = WebSocketURI(
                new.secure, new.host, new.port, new.resource_name, new.host_header, uri.user_info
            )
        return new

    async def _open_stream(self, uri: WebSocketURI) -> trio.abc.Stream:
        stream: trio.abc.Stream
        if self.stream is not None:
            if self.stream_used:
                raise RuntimeError("stream= was used already: a stream carries one connection")
            stream, self.stream_used = self.stream, True
        elif self.unix_path is not None:
            stream = await trio.open_unix_socket(self.unix_path)
        else:
            stream = await self._open_network_stream(uri)
        try:
            if uri.secure:
                # server_hostname names the URI's host: a redirect elsewhere verifies its own.
                given = self.server_hostname if uri.host == self.uri.host else None
                hostname = given or uri.host
                stream = await _start_tls(stream, hostname, self.opening.ssl)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def _open_network_stream(self, uri: WebSocketURI) -> trio.abc.Stream:
        proxy: Proxy | None
        if isinstance(self.proxy, Proxy) or self.proxy is None:
            proxy = self.proxy
        else:  # True: the environment's, for this URI
            url = proxy_for(uri, True)
            proxy = parse_proxy(url) if url is not None else None
        if proxy is not None:
            return await open_proxied_stream(
                proxy,
                uri.host,
                uri.port,
                proxy_ssl=self.proxy_ssl,
                proxy_server_hostname=self.proxy_server_hostname,
                local_address=self.local_address,
                happy_eyeballs_delay=self.happy_eyeballs_delay,
                user_agent=next(iter(self.headers.get_all("User-Agent")), None),
            )
        family = _ip_family(uri.host)
        if family is None or self.local_address is not None:
            return await trio.open_tcp_stream(
                uri.host,
                uri.port,
                happy_eyeballs_delay=self.happy_eyeballs_delay,
                local_address=self.local_address,
            )
        return await _connect_to_ip(family, uri.host, uri.port)

    async def _handshake(self, stream: trio.abc.Stream, uri: WebSocketURI) -> Opened:
        headers = Headers(self.headers)
        if uri.user_info is not None and "Authorization" not in headers:
            user, password = uri.user_info
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers.add("Authorization", f"Basic {token}")
        handshake = ClientHandshake(
            uri,
            subprotocols=self.opening.subprotocols,
            compression=self.opening.compression,
            max_size=self.max_size,
            headers=headers,
        )
        try:
            await _direct.send_all(stream, handshake.request_bytes)
            while True:
                data = await _direct.receive_some(stream, _RECEIVE_SIZE)
                if not data:
                    handshake.receive_eof()
                opened = handshake.receive_data(data)
                if opened is not None:
                    return opened
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise InvalidMessage("connection lost during the opening handshake") from exc


def _ip_family(host: str) -> int | None:
    """The address family of an IP address; None for a name (or an IPv6 zone)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.inet_pton(family, host)
    except OSError:
        return None
    return family


async def _connect_to_ip(family: int, host: str, port: int) -> trio.SocketStream:
    """:func:`trio.open_tcp_stream` for an IP address: one address to try, so no resolver
    and no happy-eyeballs nursery; a failure reads as trio's does."""
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        message = f"all attempts to connect to {where} failed"
        raise OSError(message) from ExceptionGroup(message, [exc])
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _start_tls(
    stream: trio.abc.Stream, host: str, context: ssl.SSLContext | None
) -> trio.SSLStream[trio.abc.Stream]:
    tls = trio.SSLStream(
        stream,
        context or ssl.create_default_context(),
        server_hostname=host,
        https_compatible=True,
    )
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        if isinstance(exc.__cause__, OSError):
            raise exc.__cause__ from None
        raise OSError(f"TLS handshake with {host} failed") from exc
    return tls


def _proxy_option(value: object) -> Proxy | Literal[True] | None:
    if value is None or value is True:
        return value
    if not isinstance(value, str):
        raise TypeError(f"proxy must be a URL, True or None, not {value!r}")
    return parse_proxy(value)


def _ssl_option(option: str, value: object) -> ssl.SSLContext | None:
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise TypeError(f"{option} must be an ssl.SSLContext or None, not {value!r}")
    return value


def _hostname_option(option: str, value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{option} must be a host name or None, not {value!r}")
    return value
