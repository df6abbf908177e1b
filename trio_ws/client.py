"""The client: :func:`connect` opens a connection and owns everything that runs for it."""

from __future__ import annotations

import ssl as ssl_module
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager

import trio

from ._handshake import ClientHandshake, Opened
from ._options import call_options, header_option
from ._session import session
from ._uri import WebSocketURI, parse_uri
from ._version import __version__
from .connection import Connection, LoggerLike
from .exceptions import InvalidHandshake
from .http import Headers, HeadersLike

__all__ = ["DEFAULT_USER_AGENT", "ClientConnection", "connect"]

#: The User-Agent header sent unless ``user_agent`` says otherwise.
DEFAULT_USER_AGENT = f"trio_ws/{__version__}"

_RECEIVE_SIZE = 16 * 1024


class ClientConnection(Connection):
    """The client's side of a WebSocket connection; see :class:`~trio_ws.connection.Connection`."""

    __slots__ = ()


@asynccontextmanager
async def connect(
    uri: str,
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
    user_agent: str | None = DEFAULT_USER_AGENT,
    logger: LoggerLike | None = None,
) -> AsyncGenerator[ClientConnection, None]:
    """Open a WebSocket connection to ``uri``; close it when the block exits.

    ::

        async with trio_ws.connect("wss://example.com/chat") as ws:
            await ws.send("hello")
            print(await ws.recv())

    The connection's background work (reading frames, answering pings, keepalive) runs in a
    nursery that this context owns: when the block exits, all of it has ended and the socket is
    closed. Leaving the block normally closes with 1000, by an exception with 1011, by
    cancellation with 1001; the closing handshake is bounded by ``close_timeout`` and, when
    cancelled, shielded for that long so the server sees a close frame rather than a dropped
    connection.

    Args:
        uri: ``ws://`` or ``wss://`` URI; IPv6 hosts in brackets (``ws://[::1]:8765/``).
        ssl: the TLS context for ``wss://`` (default: :func:`ssl.create_default_context`).
        open_timeout: seconds allowed for DNS, TCP, TLS and the opening handshake together;
            None for no limit.
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
        user_agent: the User-Agent header; None sends none.
        logger: where to log; default ``logging.getLogger("trio_ws.client")``.

    Every option is checked before anything else is done: a wrong one raises at once.

    Raises:
        TypeError: an option has the wrong type (``max_size=True``, a str for
            ``subprotocols``...); the message names it.
        ValueError: an option has a wrong value (a negative timeout, a header value with CR,
            LF or NUL, ``ssl`` with a ``ws://`` URI...); the message names it.
        InvalidURI: ``uri`` is not a valid WebSocket URI.
        OSError: DNS, TCP or TLS failed (connection refused, certificate rejected...).
        TimeoutError: the opening handshake took longer than ``open_timeout``.
        InvalidStatus: the server answered with an HTTP status other than 101.
        InvalidHandshake: the server's answer broke RFC 6455, or it closed the connection.

    Cancelling at any point, from DNS to the closing handshake, leaves no socket and no task.
    """
    opening, options = call_options(locals(), logger_name="trio_ws.client")
    user_agent = header_option("user_agent", user_agent)
    parsed = parse_uri(uri)
    if opening.ssl is not None and not parsed.secure:
        raise ValueError("ssl= was given for a ws:// URI; use wss://")
    headers = Headers(opening.headers)
    if user_agent is not None and "User-Agent" not in headers:
        headers.add("User-Agent", user_agent)
    handshake = ClientHandshake(
        parsed,
        subprotocols=opening.subprotocols,
        compression=opening.compression,
        max_size=options.max_message_size,
        headers=headers,
    )
    deadline = trio.current_time() + opening.open_timeout
    stream, opened = await _open(parsed, handshake, opening.ssl, deadline, open_timeout)
    ws = ClientConnection(stream, is_client=True, options=options)
    ws._open(opened)  # pyright: ignore[reportPrivateUsage]
    del handshake, opened  # the handshake's state, not needed while the connection lives
    async with session(ws):
        yield ws


async def _open(
    uri: WebSocketURI,
    handshake: ClientHandshake,
    ssl: ssl_module.SSLContext | None,
    deadline: float,
    open_timeout: float | None,
) -> tuple[trio.abc.Stream, Opened]:
    """Connect TCP, TLS and the opening handshake, before ``deadline``."""
    try:
        with trio.fail_at(deadline):
            stream: trio.abc.Stream = await trio.open_tcp_stream(uri.host, uri.port)
            try:
                if uri.secure:
                    stream = await _start_tls(stream, uri.host, ssl)
                return stream, await _handshake(stream, handshake)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError:
        raise TimeoutError(
            f"opening handshake with {uri.host_header} exceeded open_timeout={open_timeout} s"
        ) from None


async def _start_tls(
    stream: trio.abc.Stream, host: str, context: ssl_module.SSLContext | None
) -> trio.SSLStream[trio.abc.Stream]:
    tls = trio.SSLStream(
        stream,
        context or ssl_module.create_default_context(),
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


async def _handshake(stream: trio.abc.Stream, handshake: ClientHandshake) -> Opened:
    try:
        await stream.send_all(handshake.request_bytes)
        while True:
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                handshake.receive_eof()
            opened = handshake.receive_data(data)
            if opened is not None:
                return opened
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise InvalidHandshake("connection lost during the opening handshake") from exc
