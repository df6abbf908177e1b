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
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import trio

from . import _groups
from ._handshake import HandshakeRejected, Opened, ServerHandshake
from ._keepalive import KeepaliveTimer
from ._options import (
    call_options,
    check_close_code,
    check_timeout,
    header_option,
)
from ._session import session
from ._version import __version__
from .connection import Connection, LoggerLike
from .exceptions import ConnectionClosed, InvalidHandshake
from .http import Headers, HeadersLike

__all__ = ["DEFAULT_SERVER_HEADER", "Handler", "Server", "ServerConnection", "serve"]

#: The Server header sent unless ``server_header`` says otherwise.
DEFAULT_SERVER_HEADER = f"trio_ws/{__version__}"

_RECEIVE_SIZE = 16 * 1024
# How many ports serve(host, 0) tries before giving up on one free on every address.
_PORT_ATTEMPTS = 16
# accept() errors that mean "out of file descriptors or memory for now": wait, then go on.
_ACCEPT_CAPACITY_ERRNOS = frozenset(
    code
    for code in (getattr(errno, name, None) for name in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS"))
    if code is not None
)


class ServerConnection(Connection):
    """The server's side of a WebSocket connection; see :class:`~trio_ws.connection.Connection`."""

    __slots__ = ()


#: What :func:`serve` runs for each connection.
Handler = Callable[[ServerConnection], Awaitable[None]]

# What makes the connection of a completed handshake; given by serve() when the server starts.
_NewConnection = Callable[[trio.abc.Stream, Opened], ServerConnection]


class Server:
    """A running WebSocket server, as reported by :func:`serve` through ``task_status``.

    Stop it gracefully with :meth:`aclose`, or at once with ``server.cancel_scope.cancel()``;
    either way ``serve()`` returns once every connection has ended.

    Only :func:`serve` creates a Server, with options it has checked; timeouts are in seconds,
    ``math.inf`` for no limit.
    """

    def __init__(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        handler: Handler,
        *,
        open_timeout: float,
        close_timeout: float,
        max_message_size: int | None,
        compression: str | None,
        subprotocols: Sequence[str],
        headers: Headers,
        server_header: str | None,
        logger: LoggerLike,
    ) -> None:
        self._listeners = list(listeners)
        self._handler = handler
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._max_message_size = max_message_size
        self._compression = compression
        self._subprotocols = subprotocols
        self._headers = headers
        self._server_header = server_header
        self._logger = logger
        self._cancel_scope = trio.CancelScope()
        self._accept_scope = trio.CancelScope()
        self._connections: set[ServerConnection] = set()
        self._handlers = 0
        self._idle = trio.Event()
        self._closing: tuple[int, str] | None = None  # aclose()'s code and reason, once called
        self._stopped = trio.Event()
        self._keepalive = KeepaliveTimer(logger)  # times every connection's keepalive pings

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
        return frozenset(self._connections)

    @property
    def listeners(self) -> list[trio.abc.Listener[trio.abc.Stream]]:
        """The listeners accepting connections (one per address family when host is None)."""
        return list(self._listeners)

    @property
    def port(self) -> int:
        """The TCP port the server listens on (the one chosen, when serve() was given 0)."""
        return _port_of(self._listeners[0])

    async def aclose(
        self,
        code: int = 1001,
        reason: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the handlers' deadline, not this call's
    ) -> None:
        """Stop gracefully: stop accepting, close every connection, wait for the handlers.

        Sends a close frame with ``code`` and ``reason`` to every open connection, so that the
        handlers' ``recv()`` ends (with ConnectionClosedOK for 1001), then waits for the
        handlers up to ``timeout`` seconds (default: ``close_timeout``) and cancels those still
        running. Returns once ``serve()`` has returned. Call it from outside the handlers.

        A handshake still in progress gets 503 instead of 101; one that completes as this
        starts closes at once with ``code``, without running the handler.

        Raises:
            ValueError: ``code`` may not be sent (RFC 6455 §7.4: only 1000-1003, 1007-1013 and
                3000-4999), ``reason`` is longer than 123 bytes in UTF-8, or ``timeout`` is
                negative. Nothing has been done then: the server still runs.
            TypeError: an argument has the wrong type.
        """
        check_close_code(code, reason)
        wait = self._close_timeout if timeout is None else check_timeout("timeout", timeout)
        deadline = trio.current_time() + wait
        self._closing = (code, reason)
        self._accept_scope.cancel()
        with trio.move_on_at(deadline):
            async with _groups.open_nursery() as nursery:
                for connection in list(self._connections):
                    nursery.start_soon(connection.aclose, code, reason)
                await self._wait_idle()
        self._cancel_scope.cancel()
        await self._stopped.wait()

    async def _wait_idle(self) -> None:
        if self._handlers:
            await self._idle.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def _serve(
        self, new_connection: _NewConnection, task_status: trio.TaskStatus[Server]
    ) -> None:
        try:
            with self._cancel_scope:
                async with _groups.open_nursery() as timing:
                    timing.start_soon(self._keepalive.run)
                    async with _groups.open_nursery() as handlers:
                        with self._accept_scope:
                            async with _groups.open_nursery() as accepting:
                                for listener in self._listeners:
                                    accepting.start_soon(
                                        self._accept_loop, listener, handlers, new_connection
                                    )
                                task_status.started(self)
                        await self._close_listeners()
                    self._keepalive.stop()
        finally:
            with trio.CancelScope(shield=True):
                await self._close_listeners()
            self._stopped.set()

    async def _close_listeners(self) -> None:
        for listener in self._listeners:
            await trio.aclose_forcefully(listener)

    async def _accept_loop(
        self,
        listener: trio.abc.Listener[trio.abc.Stream],
        handlers: trio.Nursery,
        new_connection: _NewConnection,
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
            handlers.start_soon(self._handle, stream, new_connection)

    async def _handle(self, stream: trio.abc.Stream, new_connection: _NewConnection) -> None:
        """Serve one accepted connection, from its handshake to its closed socket.

        Raises nothing but Cancelled: whatever goes wrong ends this connection, never serve().
        """
        ws: ServerConnection | None = None
        try:
            try:
                opened = await self._open(stream)
                if opened is not None:
                    ws = new_connection(stream, opened)
                    del opened  # the handshake's state, not needed while the connection lives
                    await self._run_handler(ws)
            finally:
                await trio.aclose_forcefully(stream)
        except Exception:
            # A bug in trio_ws (the handler's own exceptions never get here): it ends this
            # connection only.
            where = "opening handshake" if ws is None else f"connection {ws.id}"
            self._logger.exception("%s: internal error", where)
        finally:
            # Counted off even when closing the stream was cancelled (a hard stop), or aclose()
            # would wait for this connection until its deadline.
            self._handlers -= 1
            if not self._handlers:
                self._idle.set()

    async def _run_handler(self, ws: ServerConnection) -> None:
        self._connections.add(ws)
        raised: Exception | None = None
        try:
            async with session(ws, self._keepalive):
                if self._closing is not None:
                    # Its 101 went out as aclose() began, which did not see it: close it here.
                    await ws.aclose(*self._closing)
                    return
                try:
                    await self._handler(ws)
                except Exception as exc:
                    # Logged now, not after the closing handshake, which can take close_timeout.
                    raised = exc
                    self._log_handler_error(ws, exc)
                    raise  # for the session to close with 1011
        except Exception as exc:
            if exc is not raised:
                self._logger.error("connection %s: internal error", ws.id, exc_info=True)
        finally:
            self._connections.discard(ws)

    def _log_handler_error(self, ws: ServerConnection, exc: Exception) -> None:
        if isinstance(exc, ConnectionClosed):
            self._logger.debug("connection %s: handler ended on %r", ws.id, exc)
        else:
            self._logger.error("connection %s: handler raised", ws.id, exc_info=exc)

    async def _open(self, stream: trio.abc.Stream) -> Opened | None:
        """Run the server's side of the opening handshake; None if it did not succeed."""
        handshake = ServerHandshake(server_header=self._server_header)
        try:
            with trio.fail_after(self._open_timeout):
                while await self._read_request(stream, handshake) is None:
                    pass
                if self._closing is not None:
                    message = "the server is shutting down"
                    self._logger.info("refused a handshake: %s", message)
                    await self._reject(stream, handshake.reject(503, message))
                    return None
                response, opened = handshake.accept(
                    subprotocols=self._subprotocols,
                    compression=self._compression,
                    max_size=self._max_message_size,
                    headers=self._headers,
                )
                await stream.send_all(response)
                return opened
        except HandshakeRejected as exc:
            self._logger.info("rejected a handshake: %s", exc)
            await self._reject(stream, exc.response)
        except (InvalidHandshake, trio.TooSlowError) as exc:
            self._logger.debug("opening handshake failed: %r", exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._logger.debug("connection lost during the opening handshake: %r", exc)
        return None

    async def _reject(self, stream: trio.abc.Stream, response: bytes) -> None:
        """Send an HTTP error response, then let the client read it before the socket closes."""
        with (
            trio.move_on_after(self._close_timeout),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(response)
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            # Closing a socket with unread bytes in it resets the connection, which can destroy
            # the response on its way: read what the client still sends, until it closes.
            while await stream.receive_some(_RECEIVE_SIZE):
                pass

    @staticmethod
    async def _read_request(stream: trio.abc.Stream, handshake: ServerHandshake) -> object:
        return handshake.receive_data(await stream.receive_some(_RECEIVE_SIZE))


def _port_of(listener: trio.abc.Listener[trio.abc.Stream]) -> int:
    while isinstance(listener, trio.SSLListener):
        listener = cast(
            "trio.abc.Listener[trio.abc.Stream]",
            listener.transport_listener,  # pyright: ignore[reportUnknownMemberType]
        )
    if not isinstance(listener, trio.SocketListener):
        raise TypeError(f"{listener!r} is not a TCP listener")
    port: int = listener.socket.getsockname()[1]
    return port


async def _open_listeners(host: str | None, port: int) -> list[trio.SocketListener]:
    """Listen on every address of ``host``; with port 0, on one port chosen for all of them."""
    for _ in range(_PORT_ATTEMPTS):
        listeners = await trio.open_tcp_listeners(port, host=host)
        if port != 0 or len({_port_of(listener) for listener in listeners}) == 1:
            return listeners
        # The kernel picked a port per address; keep the first one's and bind the others to it.
        first, *others = listeners
        chosen = _port_of(first)
        addresses = [listener.socket.getsockname()[0] for listener in others]
        for listener in others:
            listener.socket.close()
        rebound = [first]
        try:
            for address in addresses:
                rebound += await trio.open_tcp_listeners(chosen, host=address)
        except BaseException as exc:
            for listener in rebound:
                listener.socket.close()
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                continue  # taken on another address: try another port
            raise
        return rebound
    raise OSError(
        errno.EADDRINUSE,
        f"found no port free on every address of host={host!r} in {_PORT_ATTEMPTS} attempts",
    )


async def serve(
    handler: Handler,
    host: str | None,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
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

    Every option is checked before anything listens: a wrong one raises at once.

    Args:
        handler: an async function taking a :class:`ServerConnection`.
        host: the address to listen on; None for every interface.
        port: the TCP port; 0 picks a free one (see :attr:`Server.port`).
        ssl: a TLS context to serve ``wss://``.
        open_timeout: seconds allowed for TLS and the opening handshake; None for no limit.
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
        logger: where to log; default ``logging.getLogger("trio_ws.server")``.
        task_status: given by :meth:`trio.Nursery.start`.

    Raises:
        TypeError: an option has the wrong type (``max_size=True``, a str for
            ``subprotocols``...); the message names it.
        ValueError: an option has a wrong value (a negative timeout, a header value with CR,
            LF or NUL...); the message names it.
        OSError: the address could not be bound (port in use, no such interface...).
    """
    if not callable(handler):
        raise TypeError(f"handler must be an async function, not {handler!r}")
    opening, options = call_options(locals(), logger_name="trio_ws.server")
    server_header = header_option("server_header", server_header)
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = []
    for listener in await _open_listeners(host, port):
        if opening.ssl is None:
            listeners.append(listener)
        else:
            listeners.append(trio.SSLListener(listener, opening.ssl, https_compatible=True))

    def new_connection(stream: trio.abc.Stream, opened: Opened) -> ServerConnection:
        return ServerConnection(
            stream,
            opened.ws,
            opened.request,
            opened.response,
            opened.subprotocol,
            is_client=False,
            options=options,
        )

    server = Server(
        listeners,
        handler,
        open_timeout=opening.open_timeout,
        close_timeout=options.close_timeout,
        max_message_size=options.max_message_size,
        compression=opening.compression,
        subprotocols=opening.subprotocols,
        headers=opening.headers,
        server_header=server_header,
        logger=options.logger,
    )
    await server._serve(new_connection, task_status)  # pyright: ignore[reportPrivateUsage]
