"""The server: :func:`serve` listens, and a :class:`Server` owns every connection it accepted.

How this works: ``serve()`` runs one accept loop per listener inside the server's cancel scope.
Each accepted TCP connection becomes a task in the server's nursery: it runs the opening
handshake (bounded by ``open_timeout``), then the user's handler inside the connection's
session, which closes the connection when the handler returns (1000), raises (1011, logged) or
is cancelled (1001). Nothing a client or a handler does escapes ``serve()``, and neither does
a bug in trio_ws met in a connection's task: it is logged as an internal error, that connection
is closed, and the server goes on serving. One more task times the keepalive pings of every
connection (``_keepalive``).

A request that cannot be upgraded gets its HTTP error, then the socket is read until the client
closes (bounded by ``close_timeout``): closing it with unread bytes would reset the connection
and could destroy the response on its way. ``aclose()`` marks the server closing, so that a
handshake finishing meanwhile gets 503, or, if its 101 is already out, is closed at once.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import ipaddress
import math
import os
import re
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar, Unpack, cast

import trio

from . import _direct, _groups
from ._handshake import HandshakeRejected, ServerHandshake, plain_response
from ._keepalive import KeepaliveTimer
from ._listening import describe, open_tcp_listeners, open_unix_listener, port_of
from ._options import (
    ConnectionOptions,
    SharedOptions,
    call_options,
    check_close_code,
    check_timeout,
    header_option,
)
from ._session import session
from ._version import __version__
from ._writer import close_stream
from .connection import Address, Connection, LoggerLike
from .exceptions import ConnectionClosed, InvalidHandshake
from .http import Headers, HeadersLike, Request, Response
from .stats import Stats

__all__ = [
    "DEFAULT_SERVER_HEADER",
    "Handler",
    "Origin",
    "ProcessRequest",
    "ProcessResponse",
    "SelectSubprotocol",
    "ServeOptions",
    "Server",
    "ServerConnection",
    "serve",
    "unix_serve",
]

#: The Server header sent unless ``server_header`` says otherwise.
DEFAULT_SERVER_HEADER = f"trio_ws/{__version__}"

_RECEIVE_SIZE = 16 * 1024
# accept() errors that mean "out of file descriptors or memory for now": wait, then go on.
_ACCEPT_CAPACITY_ERRNOS = frozenset(
    code
    for code in (getattr(errno, name, None) for name in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS"))
    if code is not None
)

#: The connection tasks' name, one string for all: trio makes one per task otherwise.
_HANDLER_TASK = "trio_ws.server.Server._handle"


class ServerConnection(Connection):
    """The server's side of a WebSocket connection; see :class:`~trio_ws.connection.Connection`.

    The server creates it when it accepts a TCP connection, so that the hooks that run during
    the opening handshake (``process_request``, ``select_subprotocol``, ``process_response``)
    see the object the handler gets later. Until the handshake is done, its ``state`` is
    CONNECTING: ``id``, ``request`` (once read), the addresses, ``logger`` and ``username``
    work, while sending or receiving raises :exc:`~trio_ws.exceptions.InvalidState`.

    Attributes:
        username: the user that :func:`~trio_ws.basic_auth` let in, or None. Hooks of your
            own may set it too.
    """

    __slots__ = ("_client_address", "_routed", "username")

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        is_client: bool = False,
        options: ConnectionOptions,
        stats: Stats | None = None,
    ) -> None:
        super().__init__(stream, is_client=is_client, options=options, stats=stats)
        self.username: str | None = None
        self._routed: object = None  # what trio_ws.route() matched, for its handler
        self._client_address: Address | None = None  # from X-Forwarded-For, when trusted

    @property
    def client_address(self) -> Address | None:
        """The client's address: the one a trusted proxy names in X-Forwarded-For (port 0),
        else ``remote_address``.

        Only with ``serve(trusted_proxies=...)`` and a connection from one of them.
        ``remote_address`` stays the socket's peer, the proxy.
        """
        return self._client_address if self._client_address is not None else self.remote_address

    def respond(self, status: int, text: str) -> Response:
        """Build a plain-text HTTP response for ``process_request`` to return.

        ::

            def process_request(connection, request):
                if request.path == "/healthz":
                    return connection.respond(HTTPStatus.OK, "OK\\n")
                return None

        Args:
            status: the HTTP status code (an :class:`http.HTTPStatus` is an int).
            text: the body, sent in UTF-8 as ``text/plain``.

        Raises:
            ValueError: ``status`` is not a status code from 100 to 599.
        """
        return plain_response(status, text)


#: What :func:`serve` runs for each connection.
Handler = Callable[[ServerConnection], Awaitable[None]]

_T = TypeVar("_T")
#: A hook's result, or an awaitable of it: hooks may be plain or async functions.
_MaybeAwaitable: TypeAlias = _T | Awaitable[_T]
#: ``process_request(connection, request)``: a Response to send instead of upgrading, or None.
#: A plain or async function, as every hook may be.
ProcessRequest = Callable[[ServerConnection, Request], _MaybeAwaitable[Response | None]]
#: ``process_response(connection, request, response)``: a Response to send instead of the 101
#: (or the 101 changed in place), or None to send it as it is.
ProcessResponse = Callable[[ServerConnection, Request, Response], _MaybeAwaitable[Response | None]]
#: ``select_subprotocol(connection, subprotocols)``: one of the client's, or None for none.
SelectSubprotocol = Callable[[ServerConnection, Sequence[str]], _MaybeAwaitable[str | None]]
#: What ``origins`` holds: an exact Origin, a compiled pattern it must match in full, or None
#: for a request without an Origin header (a client that is no browser).
Origin = str | re.Pattern[str] | None


@dataclass(frozen=True)
class _Handshaking:
    """serve()'s checked options for the opening handshake."""

    open_timeout: float
    compression: str | None
    subprotocols: Sequence[str]
    headers: Headers
    server_header: str | None
    max_message_size: int | None
    process_request: ProcessRequest | None
    process_response: ProcessResponse | None
    select_subprotocol: SelectSubprotocol | None
    origins: tuple[Origin, ...] | None
    max_connections: int | None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class Server:
    """A running WebSocket server, as reported by :func:`serve` through ``task_status``.

    Stop it gracefully with :meth:`aclose`, or at once with ``server.cancel_scope.cancel()``;
    either way ``serve()`` returns once every connection has ended.

    Only :func:`serve` creates a Server, with options it has checked.
    """

    def __init__(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        handler: Handler,
        *,
        handshaking: _Handshaking,
        options: ConnectionOptions,
    ) -> None:
        self._listeners = list(listeners)
        self._handler = handler
        self._handshaking = handshaking
        self._options = options
        self._logger = options.logger
        self._stats = Stats()
        self._cancel_scope = trio.CancelScope()
        self._accept_scope = trio.CancelScope()
        self._connections: dict[trio.lowlevel.Task, ServerConnection] = {}  # by handler task
        self._admitting = 0  # handshakes counted against max_connections, not open yet
        self._handlers = 0
        self._idle = trio.Event()
        self._closing: tuple[int, str] | None = None  # aclose()'s code and reason, once called
        self._closer: trio.Nursery | None = None  # where aclose() from a handler closes
        self._stopped = trio.Event()
        self._keepalive = KeepaliveTimer(self._logger)  # times every connection's pings

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """Cancel it for a hard stop: stop listening and cancel every handler.

        Each connection still sends a close frame with 1001 in a shielded step bounded by
        ``close_timeout`` before its socket closes.
        """
        return self._cancel_scope

    @property
    def connections(self) -> frozenset[ServerConnection]:
        """The connections whose handler is running."""
        return frozenset(self._connections.values())

    @property
    def listeners(self) -> list[trio.abc.Listener[trio.abc.Stream]]:
        """The listeners accepting connections (one per address family when host is None)."""
        return list(self._listeners)

    @property
    def port(self) -> int:
        """The TCP port the server listens on (the one chosen, when serve() was given 0).

        Raises:
            TypeError: the server listens on no TCP port (a Unix socket, listeners of other
                kinds); :attr:`listeners` says where it listens.
        """
        listener = self._listeners[0]
        try:
            return port_of(listener)
        except TypeError:
            raise TypeError(
                f"this server listens on {describe(listener)}, not on a TCP port; "
                "see Server.listeners"
            ) from None

    @property
    def stats(self) -> Stats:
        """What the server did so far: connections, refusals, close codes, messages, bytes.

        Live counters, updated as things happen; see :class:`~trio_ws.stats.Stats`.
        """
        return self._stats

    async def aclose(
        self,
        code: int = 1001,
        reason: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the handlers' deadline, not this call's
        *,
        close_connections: bool = True,
    ) -> None:
        """Stop gracefully: stop accepting, close every connection, wait for the handlers.

        Sends a close frame with ``code`` and ``reason`` to every open connection, so that the
        handlers' ``recv()`` ends (with ConnectionClosedOK for 1001), then waits for the
        handlers up to ``timeout`` seconds (default: ``close_timeout``) and cancels those still
        running. Returns once ``serve()`` has returned.

        With ``close_connections=False`` it only stops listening: the open connections carry
        on until their handlers return, for as long as they take (or ``timeout`` seconds, if
        given, after which they are closed with ``code`` as above).

        A handshake still in progress gets 503 instead of 101; one that completes as this
        starts closes at once with ``code``, without running the handler.

        Called from a handler (or a task it started), it cannot wait for that handler: it
        starts the shutdown as above, except that it leaves the caller's own connection
        alone, and returns at once. That connection closes as usual when its handler returns,
        and ``serve()`` returns after it.

        Raises:
            ValueError: ``code`` may not be sent (RFC 6455 §7.4: only 1000-1003, 1007-1013 and
                3000-4999), ``reason`` is longer than 123 bytes in UTF-8, or ``timeout`` is
                negative. Nothing has been done then: the server still runs.
            TypeError: an argument has the wrong type.
        """
        check_close_code(code, reason)
        if timeout is not None:
            wait = check_timeout("timeout", timeout)
        else:
            wait = self._options.close_timeout if close_connections else math.inf
        deadline = trio.current_time() + wait
        caller = self._calling_handler()
        if caller is not None and self._closer is not None:
            # This task cannot wait for its own handler: shut down from a task of the server's.
            self._closer.start_soon(
                self._shut_down, code, reason, deadline, close_connections, caller
            )
            await trio.lowlevel.checkpoint()
            return
        await self._shut_down(code, reason, deadline, close_connections, None)

    def _calling_handler(self) -> ServerConnection | None:
        """The connection whose handler (or a task under it) is running this, if any."""
        task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        while task is not None:
            if task in self._connections:
                return self._connections[task]
            nursery = task.parent_nursery
            task = nursery.parent_task if nursery is not None else None
        return None

    async def _shut_down(
        self,
        code: int,
        reason: str,
        deadline: float,
        close_connections: bool,
        spared: ServerConnection | None,
    ) -> None:
        """aclose()'s work; ``spared`` (aclose()'s caller) closes when its handler returns."""
        self._closing = (code, reason)
        self._accept_scope.cancel()
        with trio.move_on_at(deadline):
            async with _groups.open_nursery() as nursery:
                if close_connections:
                    self._close_all(nursery, code, reason, spared)
                await self._wait_idle()
        if self._handlers and not close_connections:
            # The deadline passed: close what is left, bounded by close_timeout.
            with trio.move_on_after(self._options.close_timeout):
                async with _groups.open_nursery() as nursery:
                    self._close_all(nursery, code, reason, spared)
                    await self._wait_idle()
        self._cancel_scope.cancel()
        await self._stopped.wait()

    def _close_all(
        self, nursery: trio.Nursery, code: int, reason: str, spared: ServerConnection | None
    ) -> None:
        for connection in list(self._connections.values()):
            if connection is not spared:
                nursery.start_soon(connection.aclose, code, reason)

    async def _wait_idle(self) -> None:
        if self._handlers:
            await self._idle.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def _serve(self, task_status: trio.TaskStatus[Server]) -> None:
        try:
            with self._cancel_scope:
                async with _groups.open_nursery() as timing:
                    self._closer = timing
                    timing.start_soon(self._keepalive.run)
                    async with _groups.open_nursery() as handlers:
                        with self._accept_scope:
                            async with _groups.open_nursery() as accepting:
                                for listener in self._listeners:
                                    accepting.start_soon(self._accept_loop, listener, handlers)
                                self._log_listening()
                                task_status.started(self)
                        await self._close_listeners()
                    self._keepalive.stop()
        finally:
            self._closer = None
            with trio.CancelScope(shield=True):
                await self._close_listeners()
            self._stopped.set()

    def _log_listening(self) -> None:
        for listener in self._listeners:
            where = describe(listener)
            tls = " (TLS)" if isinstance(listener, trio.SSLListener) else ""
            self._logger.info("server listening on %s%s", where, tls)

    async def _close_listeners(self) -> None:
        for listener in self._listeners:
            await trio.aclose_forcefully(listener)

    async def _accept_loop(
        self, listener: trio.abc.Listener[trio.abc.Stream], handlers: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    self._logger.error("accept() failed for lack of resources", exc_info=True)
                    await trio.sleep(0.1)
                    continue
                self._logger.error("accept() failed; this listener stops", exc_info=True)
                return
            self._handlers += 1
            if self._idle.is_set():
                self._idle = trio.Event()
            handlers.start_soon(self._handle, stream, name=_HANDLER_TASK)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted connection, from its handshake to its closed socket.

        Raises nothing but Cancelled: whatever goes wrong ends this connection, never serve().

        The handler runs in this coroutine, not in a helper's: every open connection has this
        task waiting in its handler, and each coroutine it waits in costs about 270 bytes.
        """
        ws: ServerConnection | None = None
        opened = False
        try:
            try:
                ws = ServerConnection(stream, options=self._options, stats=self._stats)
                opened = await self._open(ws, stream)
                if not opened:
                    return
                task = trio.lowlevel.current_task()
                self._connections[task] = ws
                # Each log record gets its extra dict: one held for the connection's life would
                # cost every idle connection 184 bytes.
                self._logger.debug(
                    "connection %s opened from %s",
                    ws.id,
                    _peer(ws.client_address),
                    extra={"websocket": ws},
                )
                raised: Exception | None = None
                try:
                    async with session(ws, self._keepalive):
                        if self._closing is not None:
                            # Its 101 went out as aclose() began, which did not see it: close
                            # it here.
                            await ws.aclose(*self._closing)
                        else:
                            try:
                                await self._handler(ws)
                            except Exception as exc:
                                # Logged now, not after the closing handshake, which can take
                                # close_timeout.
                                raised = exc
                                self._log_handler_error(ws, exc)
                                raise  # for the session to close with 1011
                except Exception as exc:
                    if exc is not raised:
                        self._logger.error(
                            "connection %s: internal error",
                            ws.id,
                            exc_info=True,
                            extra={"websocket": ws},
                        )
                finally:
                    del self._connections[task]
                    self._logger.debug(
                        "connection %s closed: code %s",
                        ws.id,
                        ws.close_code,
                        extra={"websocket": ws},
                    )
            finally:
                await close_stream(stream)
        except Exception:
            # A bug in trio_ws (the handler's own exceptions never get here): it ends this
            # connection only.
            where = "" if opened else " in the opening handshake"
            self._logger.exception(
                "connection %s: internal error%s", _id(ws), where, extra={"websocket": ws}
            )
        finally:
            # Counted off even when closing the stream was cancelled (a hard stop), or aclose()
            # would wait for this connection until its deadline.
            self._handlers -= 1
            if not self._handlers:
                self._idle.set()

    def _log_handler_error(self, ws: ServerConnection, exc: Exception) -> None:
        extra = {"websocket": ws}
        if isinstance(exc, ConnectionClosed):
            self._logger.debug("connection %s: handler ended on %r", ws.id, exc, extra=extra)
        else:
            self._logger.error("connection %s: handler raised", ws.id, exc_info=exc, extra=extra)

    async def _open(self, ws: ServerConnection, stream: trio.abc.Stream) -> bool:
        """Run the server's side of the opening handshake; whether it opened the connection."""
        handshake = ServerHandshake(server_header=self._handshaking.server_header)
        try:
            with trio.fail_after(self._handshaking.open_timeout):
                response = await self._answer(ws, stream, handshake)
                if response is None:
                    return True
                try:
                    data = handshake.respond(response)
                except ValueError as exc:
                    raise self._hook_failed(ws, handshake, "a hook's response", exc) from None
            status = response.status_code
            self._count_refused(str(status) if status >= 400 else "response")
            await self._reject(stream, data)
        except HandshakeRejected as exc:
            self._count_refused(exc.kind)
            self._logger.info(
                "connection %s: refused the handshake: %s", ws.id, exc, extra={"websocket": ws}
            )
            await self._reject(stream, exc.response)
        except InvalidHandshake as exc:
            self._count_refused("lost")
            self._logger.debug("connection %s: opening handshake failed: %r", ws.id, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._count_refused("lost")
            self._logger.debug(
                "connection %s: connection lost during the opening handshake: %r", ws.id, exc
            )
        except trio.TooSlowError:
            self._count_refused("timeout")
            self._logger.debug(
                "connection %s: opening handshake exceeded open_timeout=%g s",
                ws.id,
                self._handshaking.open_timeout,
            )
        return False

    def _count_refused(self, reason: str) -> None:
        self._stats.handshakes_refused[reason] += 1

    async def _answer(
        self, ws: ServerConnection, stream: trio.abc.Stream, handshake: ServerHandshake
    ) -> Response | None:
        """Read the request, run the checks and hooks, send the 101 and open ``ws``; or return
        the response to send instead.

        Raises:
            HandshakeRejected: the request is invalid or not allowed, or a hook failed (500):
                send its response.
            InvalidHandshake: the client closed the connection before finishing its request.
        """
        options = self._handshaking
        request = None
        while request is None:
            request = handshake.receive_data(await _direct.receive_some(stream, _RECEIVE_SIZE))
        ws._request = request  # pyright: ignore[reportPrivateUsage]
        if options.trusted_proxies:
            ws._client_address = _forwarded_client(  # pyright: ignore[reportPrivateUsage]
                ws.remote_address, request, options.trusted_proxies
            )
        if self._closing is not None:
            raise handshake.rejection(503, "the server is shutting down")
        limit = options.max_connections
        if limit is None:
            return await self._upgrade(ws, stream, handshake, request)
        # Handshakes past this point count against the limit until they end, so that hooks
        # that take their time cannot let more than max_connections in.
        if len(self._connections) + self._admitting >= limit:
            raise handshake.rejection(503, "too many connections, try again later", kind="limit")
        self._admitting += 1
        try:
            return await self._upgrade(ws, stream, handshake, request)
        finally:
            self._admitting -= 1  # an opened connection is in _connections before any await

    async def _upgrade(
        self,
        ws: ServerConnection,
        stream: trio.abc.Stream,
        handshake: ServerHandshake,
        request: Request,
    ) -> Response | None:
        """The hooks and checks after the request is read, then the 101: see ``_answer``."""
        options = self._handshaking
        if options.process_request is not None:
            response = await self._call_hook(
                ws, handshake, "process_request", options.process_request, ws, request
            )
            if response is not None:
                return self._check_result(ws, handshake, "process_request", response)
        handshake.check_upgrade()
        self._check_origin(handshake, request)
        offered = handshake.offered_subprotocols()
        if options.select_subprotocol is not None:
            subprotocol = await self._call_hook(
                ws, handshake, "select_subprotocol", options.select_subprotocol, ws, offered
            )
            if not isinstance(cast("object", subprotocol), str | None):
                problem = TypeError(f"it returned {subprotocol!r}, not a str or None")
                raise self._hook_failed(ws, handshake, "select_subprotocol", problem)
            if subprotocol is not None and subprotocol not in offered:
                unoffered = ValueError(f"it chose {subprotocol!r}, which the client did not offer")
                raise self._hook_failed(ws, handshake, "select_subprotocol", unoffered)
        else:
            subprotocol = next((name for name in options.subprotocols if name in offered), None)
        response = handshake.response_101(
            subprotocol=subprotocol,
            compression=options.compression,
            max_size=options.max_message_size,
            headers=options.headers,
        )
        if options.process_response is not None:
            replaced = await self._call_hook(
                ws, handshake, "process_response", options.process_response, ws, request, response
            )
            if replaced is not None:
                response = self._check_result(ws, handshake, "process_response", replaced)
        if response.status_code != 101:
            return response
        try:
            data, opened = handshake.finish(response)
        except ValueError as exc:
            raise self._hook_failed(ws, handshake, "process_response", exc) from None
        await _direct.send_all(stream, data)
        ws._open(opened)  # pyright: ignore[reportPrivateUsage]
        return None

    def _check_origin(self, handshake: ServerHandshake, request: Request) -> None:
        """Raise 403 unless the request's Origin is one of ``origins`` (when given)."""
        origins = self._handshaking.origins
        if origins is None:
            return
        values = request.headers.get_all("Origin")
        if len(values) > 1:
            raise handshake.rejection(400, "more than one Origin header")
        origin = values[0] if values else None
        for allowed in origins:
            if allowed is None or isinstance(allowed, str):
                if origin == allowed:
                    return
            elif origin is not None and allowed.fullmatch(origin):
                return
        raise handshake.rejection(403, f"origin not allowed: {origin!r}")

    async def _call_hook(
        self,
        ws: ServerConnection,
        handshake: ServerHandshake,
        name: str,
        hook: Callable[..., _MaybeAwaitable[_T]],
        *args: object,
    ) -> _T:
        """Call a plain or async hook; what it raises becomes a 500, logged."""
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise self._hook_failed(ws, handshake, name, exc) from None
        return cast("_T", result)

    def _check_result(
        self, ws: ServerConnection, handshake: ServerHandshake, hook: str, result: object
    ) -> Response:
        """A hook's result, which must be a Response; a 500 to raise otherwise."""
        if not isinstance(result, Response):
            problem = TypeError(f"it returned {result!r}, not a Response or None")
            raise self._hook_failed(ws, handshake, hook, problem)
        return result

    def _hook_failed(
        self, ws: ServerConnection, handshake: ServerHandshake, name: str, exc: Exception
    ) -> HandshakeRejected:
        self._logger.error(
            "connection %s: %s failed", ws.id, name, exc_info=exc, extra={"websocket": ws}
        )
        return handshake.rejection(500, "internal server error")

    async def _reject(self, stream: trio.abc.Stream, response: bytes) -> None:
        """Send an HTTP response that ends the connection, then let the client read it before
        the socket closes."""
        with (
            trio.move_on_after(self._options.close_timeout),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(response)
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            # Closing a socket with unread bytes in it resets the connection, which can destroy
            # the response on its way: read what the client still sends, until it closes.
            while await stream.receive_some(_RECEIVE_SIZE):
                pass


def _id(ws: ServerConnection | None) -> str:
    return "?" if ws is None else str(ws.id)


def _peer(address: Address | None) -> str:
    if address is None:
        return "an unknown address"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(
    handler: Handler,
    host: str | Sequence[str] | None = None,
    port: int = 0,
    *,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]] | None = None,
    ssl: ssl_module.SSLContext | None = None,
    reuse_port: bool = False,
    backlog: int | None = None,
    process_request: ProcessRequest | None = None,
    process_response: ProcessResponse | None = None,
    select_subprotocol: SelectSubprotocol | None = None,
    origins: Sequence[Origin] | None = None,
    max_connections: int | None = None,
    trusted_proxies: Sequence[str] | None = None,
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
    server_header: str | None = DEFAULT_SERVER_HEADER,
    logger: LoggerLike | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host``:``port`` and run ``handler(ws)`` for every WebSocket connection.

    ::

        server = await nursery.start(trio_ws.serve, handler, "127.0.0.1", 8765)

    Reports a :class:`Server` through ``task_status`` once listening, then runs until
    ``server.cancel_scope`` is cancelled, :meth:`Server.aclose` is called or the caller is
    cancelled. When a handler returns, its connection closes with 1000; when it raises, the
    error is logged with the connection's id and the connection closes with 1011. Either way
    the server goes on serving.

    The opening handshake, bounded by ``open_timeout`` from the first byte to the 101, runs in
    this order: the request's head is read (431 past 16 KiB or 128 header lines, 405 for a
    method other than GET); 503 at ``max_connections``; ``process_request`` may answer instead
    of upgrading (plain HTTP requests such as health checks get here too); the request must
    then be a valid WebSocket upgrade (RFC 6455 §4.2.1: 426 or 400 otherwise); its Origin
    must be one of ``origins`` (403 otherwise); ``select_subprotocol`` picks the subprotocol;
    ``process_response`` may change or replace the 101. A hook that raises, or returns what
    cannot be sent, gets the client a 500 and is logged at ERROR with the connection's id;
    the server goes on serving. Hooks may be plain or async functions.

    Every option is checked before anything listens: a wrong one raises at once.

    Args:
        handler: an async function taking a :class:`ServerConnection`.
        host: the address to listen on, or a list of them (``["127.0.0.1", "::1"]``); None
            for every interface. By position or keyword, in websockets' order (``trio.serve_tcp``
            takes the port first).
        port: the TCP port; 0 picks a free one, the same on every address (see
            :attr:`Server.port`).
        listeners: listeners to accept from instead of ``host`` and ``port``: any
            :class:`trio.abc.Listener` of streams (a socket passed by systemd, one shared by
            worker processes, :func:`trio.testing.memory_stream_pair`-based ones in tests).
            The server closes them when it stops. ``ssl`` still applies: TLS is layered on them.
        ssl: a TLS context to serve ``wss://``.
        reuse_port: set SO_REUSEPORT, so that several processes can listen on the same port;
            Linux spreads the connections among them, other systems may hand them all to one.
        backlog: the listen() queue length; default: as large as the system allows.
        process_request: ``process_request(connection, request)`` returns a
            :class:`~trio_ws.http.Response` to send instead of upgrading (the connection then
            closes), or None to go on; build one with ``connection.respond(status, text)``.
        process_response: ``process_response(connection, request, response)`` may change
            the 101 in place (``response.headers.add("Set-Cookie", ...)``) or return another
            response to send instead; None keeps the 101.
        select_subprotocol: ``select_subprotocol(connection, subprotocols)`` returns one of
            the subprotocols the client offered, or None for none; it replaces the choice by
            ``subprotocols``.
        origins: the Origin header values accepted: exact strings, compiled patterns that
            must match the whole value (``re.compile(r"https://.*\\.example\\.com")``), and
            None to accept a request without an Origin header (clients that are no browsers).
            Any other request gets 403. None (the default) accepts every request.
        max_connections: the most connections open at once; a handshake beyond it gets 503.
            None for no limit.
        trusted_proxies: the reverse proxies (IP addresses or networks, such as
            ``["127.0.0.1", "10.0.0.0/8"]``) whose X-Forwarded-For header is believed: a
            connection from one of them has the client it names as its ``client_address``
            (:attr:`~trio_ws.server.ServerConnection.client_address`). None (the default)
            trusts no one, since any client can send the header.
        open_timeout: seconds allowed for TLS and the opening handshake, the hooks included;
            None for no limit.
        close_timeout: seconds allowed for each closing handshake; None for no limit.
        ping_interval: seconds between keepalive pings; None turns keepalive off.
        ping_timeout: seconds to wait for a keepalive pong before failing with 1011; None for
            no limit.
        max_size: the largest message accepted, in payload bytes (text counted as UTF-8);
            a larger one fails the connection with 1009. None for no limit. A
            ``(max_message_size, max_fragment_size)`` pair also bounds each frame; either may
            be None.
        max_queue: the messages received but not yet read per connection: when that many
            wait (the high-water mark), the connection stops reading its socket so that TCP
            pushes back, until the handler has brought them down to a quarter of it (the
            low-water mark). A ``(high, low)`` pair sets both. None: no limit.
        write_limit: the bytes a connection buffers to send: above this high-water mark,
            ``send()`` waits until the socket has taken all but a quarter of it (the low-water
            mark). A ``(high, low)`` pair sets both.
        compression: "deflate" to accept permessage-deflate (RFC 7692), None to refuse it.
        subprotocols: subprotocols supported (HTTP tokens), most preferred first; the first
            one the client also offers is chosen.
        additional_headers: extra headers for the 101 response.
        server_header: the Server header; None sends none.
        logger: where to log; default ``logging.getLogger("trio_ws.server")``. Records about
            a connection carry it as the ``websocket`` attribute (``extra``).
        task_status: given by :meth:`trio.Nursery.start`.

    Raises:
        TypeError: an option has the wrong type (``max_size=True``, a str for
            ``subprotocols``...); the message names it.
        ValueError: an option has a wrong value (a negative timeout, a header value with CR,
            LF or NUL, both ``listeners`` and ``host``...); the message names it.
        OSError: the address could not be bound (port in use, no such interface...).
    """
    if not callable(handler):
        raise TypeError(f"handler must be an async function, not {handler!r}")
    opening, options = call_options(locals(), logger_name="trio_ws.server")
    handshaking = _Handshaking(
        open_timeout=opening.open_timeout,
        compression=opening.compression,
        subprotocols=opening.subprotocols,
        headers=opening.headers,
        server_header=header_option("server_header", server_header),
        max_message_size=options.max_message_size,
        process_request=_hook("process_request", process_request),
        process_response=_hook("process_response", process_response),
        select_subprotocol=_hook("select_subprotocol", select_subprotocol),
        origins=_origins(origins),
        max_connections=_max_connections(max_connections),
        trusted_proxies=_trusted_proxies(trusted_proxies),
    )
    if listeners is None:
        bound: list[trio.abc.Listener[trio.abc.Stream]] = list(
            await open_tcp_listeners(host, port, reuse_port=reuse_port, backlog=backlog)
        )
    else:
        bound = _given_listeners(listeners, host, port, reuse_port, backlog)
    if opening.ssl is not None:
        bound = [
            trio.SSLListener(listener, opening.ssl, https_compatible=True) for listener in bound
        ]
    server = Server(bound, handler, handshaking=handshaking, options=options)
    await server._serve(task_status)  # pyright: ignore[reportPrivateUsage]


_H = TypeVar("_H")


def _hook(option: str, value: _H | None) -> _H | None:
    if value is not None and not callable(value):
        raise TypeError(f"{option} must be a function or None, not {value!r}")
    return value


def _origins(value: object) -> tuple[Origin, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | frozenset | set):
        raise TypeError(f"origins must be a list of str, re.Pattern or None, not {value!r}")
    origins: list[Origin] = []
    for origin in cast("Iterable[object]", value):
        if origin is not None and not isinstance(origin, str | re.Pattern):
            raise TypeError(f"origins must hold str, re.Pattern or None, not {origin!r}")
        origins.append(cast("Origin", origin))
    return tuple(origins)


def _trusted_proxies(
    value: object,
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"trusted_proxies must be a list of addresses or None, not {value!r}")
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for item in cast("Iterable[object]", value):
        if not isinstance(item, str):
            raise TypeError(f"trusted_proxies must hold str addresses, not {item!r}")
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {item!r} is no IP address or network") from exc
    return tuple(networks)


def _forwarded_client(
    peer: Address | None,
    request: Request,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> Address | None:
    """The client a trusted proxy names in X-Forwarded-For, or None to keep the peer.

    The header lists each hop's client, the nearest last: walking it from the right past our
    trusted proxies, the first address that is not one of them is the client. An entry that is
    no IP address stops the walk, with the peer kept: nothing beyond it can be believed.
    """

    def is_trusted(host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in trusted)

    if peer is None or not is_trusted(peer[0]):
        return None
    hops = _comma_values(request.headers.get_all("X-Forwarded-For"))
    client: str | None = None
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        client = hop
        if not is_trusted(hop):
            break
    return None if client is None else (client, 0)


def _comma_values(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _max_connections(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_connections must be an int or None, not {value!r}")
    if value < 1:
        raise ValueError(f"max_connections must be at least 1, not {value}")
    return value


def _given_listeners(
    listeners: Iterable[object],
    host: object,
    port: int,
    reuse_port: bool,
    backlog: int | None,
) -> list[trio.abc.Listener[trio.abc.Stream]]:
    """Check ``listeners=``, which excludes the options that say how to listen."""
    if host is not None or port != 0 or reuse_port or backlog is not None:
        raise ValueError("listeners= excludes host, port, reuse_port and backlog")
    given: list[trio.abc.Listener[trio.abc.Stream]] = []
    for listener in listeners:
        if not isinstance(listener, trio.abc.Listener):
            raise TypeError(f"listeners must hold trio.abc.Listener objects, not {listener!r}")
        given.append(cast("trio.abc.Listener[trio.abc.Stream]", listener))
    if not given:
        raise ValueError("listeners must hold at least one listener")
    return given


class ServeOptions(SharedOptions, total=False):
    """The options of :func:`serve` that :func:`unix_serve` takes too, with the same meaning."""

    ssl: ssl_module.SSLContext | None
    process_request: ProcessRequest | None
    process_response: ProcessResponse | None
    select_subprotocol: SelectSubprotocol | None
    origins: Sequence[Origin] | None
    max_connections: int | None
    trusted_proxies: Sequence[str] | None
    additional_headers: HeadersLike | None
    server_header: str | None


async def unix_serve(
    handler: Handler,
    path: str | os.PathLike[str],
    *,
    mode: int | None = None,
    backlog: int | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[ServeOptions],
) -> None:
    """Listen on the Unix socket ``path`` and run ``handler(ws)`` for every connection.

    ::

        server = await nursery.start(trio_ws.unix_serve, handler, "/run/app/ws.sock")

    The same as :func:`serve` (``options`` are its options) on a Unix domain socket, for a
    reverse proxy on the same machine. A socket file left at ``path`` by a server that is
    gone is replaced; the file is removed when the server stops. A connection's
    ``remote_address`` is None (Unix sockets have no host and port).

    Args:
        handler: an async function taking a :class:`ServerConnection`.
        path: where the socket file goes.
        mode: the socket file's permissions (such as ``0o660``), set before it listens;
            default: as the umask leaves them.
        backlog: the listen() queue length; default: as large as the system allows.
        task_status: given by :meth:`trio.Nursery.start`.
        options: any option of :func:`serve` but those that say where it listens.

    Raises:
        TypeError, ValueError: as for :func:`serve`.
        FileExistsError: something other than a socket is at ``path``.
        OSError: another server listens at ``path``, or it could not be bound.
    """
    listener = await open_unix_listener(path, backlog=backlog, mode=mode)
    try:
        await serve(handler, listeners=[listener], task_status=task_status, **options)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
