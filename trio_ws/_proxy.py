"""Reach a server through a proxy: HTTP CONNECT (http://, https://) or SOCKS (socks4, socks5).

How this works: :func:`proxy_for` picks the proxy URL (the ``proxy=`` option, or the environment
as urllib reads it), :func:`parse_proxy` checks it, and :func:`open_proxied_stream` connects to
the proxy and asks it for a tunnel to the server. The caller then speaks TLS (``wss://``) and the
WebSocket handshake through the stream it gets back, exactly as over a direct TCP connection.
No task runs here: each call does its work in the caller's task, under the caller's deadline.
"""

from __future__ import annotations

import base64
import math
import socket
import ssl as ssl_module
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Literal

import h11
import trio

from ._uri import WebSocketURI
from .exceptions import InvalidProxy, ProxyError

_DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "socks5": 1080,
    "socks5h": 1080,
    "socks4": 1080,
    "socks4a": 1080,
}
#: The longest answer head accepted from an HTTP proxy, as for a server's handshake response.
_MAX_HEAD_SIZE = 16 * 1024
_RECEIVE_SIZE = 16 * 1024


@dataclass(frozen=True)
class Proxy:
    """A parsed proxy URL.

    ``scheme`` is one of http, https, socks5, socks5h, socks4, socks4a; ``host`` is lower case,
    ASCII, without brackets (``::1``); ``port`` is always set (80, 443 or 1080 by default);
    ``username`` and ``password`` are percent-decoded, None when the URL has no user info.
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def proxy_for(uri: WebSocketURI, proxy: str | Literal[True] | None) -> str | None:
    """The proxy URL to reach ``uri`` through, or None to connect directly.

    ``proxy`` is the ``proxy=`` option: None connects directly, a str is the proxy's URL, and
    True reads the environment as websockets does: None when ``uri``'s host or host:port is in
    ``no_proxy`` (``*`` matches every host); otherwise the first of ``wss_proxy``, ``socks_proxy``,
    ``https_proxy``, ``all_proxy`` for wss://, or of ``ws_proxy``, ``socks_proxy``,
    ``https_proxy``, ``http_proxy``, ``all_proxy`` for ws:// (RFC 6455 §4.1 suggests the proxy
    configured for HTTPS). Names are case-insensitive, lower case first; on macOS and Windows
    the system's proxy settings count too (:func:`urllib.request.getproxies`).

    The URL is returned unchecked: :func:`parse_proxy` checks it.

    Raises:
        TypeError: ``proxy`` is not a str, True or None.
    """
    if proxy is None:
        return None
    if proxy is True:
        return _proxy_from_environment(uri)
    if not isinstance(proxy, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"proxy must be a URL, True or None, not {proxy!r}")
    return proxy


def _proxy_from_environment(uri: WebSocketURI) -> str | None:
    # No brackets around an IPv6 host: proxy_bypass() splits the port off at the last colon.
    if urllib.request.proxy_bypass(f"{uri.host}:{uri.port}"):
        return None
    proxies = urllib.request.getproxies()
    if uri.secure:
        keys = ["wss", "socks", "https", "all"]
    else:
        keys = ["ws", "socks", "https", "http", "all"]
    for key in keys:
        url = proxies.get(key)
        if url:
            # The system settings of macOS and Windows give a SOCKS proxy as http://host:port.
            if key == "socks" and url.startswith("http://"):
                url = "socks5h://" + url.removeprefix("http://")
            return url
    return None


def parse_proxy(proxy: str) -> Proxy:
    """Parse and check a proxy URL such as ``http://user:pass@proxy:3128``.

    Raises:
        InvalidProxy: ``proxy`` is not a URL trio_ws can use; its ``msg`` says why (a scheme
            other than http, https, socks5, socks5h, socks4, socks4a; no host; a bad port; a
            path, query or fragment; a user name without a password).
    """
    if any(char <= " " or char == "\x7f" for char in proxy):
        raise InvalidProxy(proxy, "the proxy URL contains whitespace or a control character")
    try:
        parsed = urllib.parse.urlsplit(proxy)
        port = parsed.port
    except ValueError as exc:
        raise InvalidProxy(proxy, f"the proxy URL is not valid ({exc})") from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise InvalidProxy(
            proxy,
            f"proxy scheme {parsed.scheme!r} is not supported; "
            "use http, https, socks5, socks5h, socks4 or socks4a",
        )
    host = parsed.hostname
    if not host:
        raise InvalidProxy(proxy, "the proxy URL has no host")
    if port == 0:
        raise InvalidProxy(proxy, "the proxy URL has port 0, which cannot be connected to")
    if parsed.path not in ("", "/") or parsed.query or "#" in proxy:
        raise InvalidProxy(proxy, "a proxy URL has no path, query or fragment")
    username, password = parsed.username, parsed.password
    if username is not None:
        # SOCKS4 sends a user id and no password; HTTP Basic and SOCKS5 need both.
        if password is None and not parsed.scheme.startswith("socks4"):
            raise InvalidProxy(proxy, "the proxy URL has a user name but no password")
        try:
            username = urllib.parse.unquote(username, errors="strict")
            if password is not None:
                password = urllib.parse.unquote(password, errors="strict")
        except UnicodeDecodeError as exc:
            raise InvalidProxy(proxy, "the proxy URL's user info is not UTF-8") from exc
    try:
        host = host.encode("idna").decode("ascii") if ":" not in host else host
    except UnicodeError as exc:
        raise InvalidProxy(proxy, f"the proxy URL has an invalid host name ({exc})") from exc
    return Proxy(
        scheme=parsed.scheme,
        host=host,
        port=_DEFAULT_PORTS[parsed.scheme] if port is None else port,
        username=username,
        password=password,
    )


async def open_proxied_stream(
    proxy: Proxy,
    host: str,
    port: int,
    *,
    proxy_ssl: ssl_module.SSLContext | None,
    proxy_server_hostname: str | None,
    local_address: str | None = None,
    happy_eyeballs_delay: float | None = None,
    user_agent: str | None = None,
) -> trio.abc.Stream:
    """Connect to ``proxy`` and return a stream tunnelled through it to ``host``:``port``.

    An http:// or https:// proxy is asked with ``CONNECT host:port HTTP/1.1`` (with
    Basic ``Proxy-Authorization`` when the URL has credentials, and ``user_agent`` as
    User-Agent unless None); for https://, TLS to the proxy comes first, with ``proxy_ssl``
    (default: :func:`ssl.create_default_context`) and ``proxy_server_hostname`` (default: the
    proxy's host). A SOCKS proxy is asked through python-socks (the ``socks`` extra); socks5h
    and socks4a let the proxy resolve ``host``, socks5 and socks4 resolve it here.

    ``local_address`` binds the socket to the proxy; ``happy_eyeballs_delay`` (seconds, None for
    trio's default) paces the attempts at the proxy's addresses; SOCKS tries only the first.

    Blocks until the tunnel is open: bound it with a cancel scope, as connect() does with
    ``open_timeout``. The stream is a :class:`trio.SocketStream` (http://, SOCKS) or a
    :class:`trio.SSLStream` (https://), except when the server's first bytes came in the same
    read as the proxy's answer: then a wrapper returns those bytes first, so none is lost.

    Raises:
        ValueError: ``proxy_ssl`` or ``proxy_server_hostname`` with a proxy that is not https,
            or a ``user_agent`` that HTTP cannot carry (CR, LF, non-ASCII).
        InvalidProxy: a SOCKS proxy, and python-socks is not installed.
        OSError: the proxy could not be reached (DNS, connection refused, TLS to an https://
            proxy failed), or, for socks5 and socks4, ``host`` could not be resolved.
        ProxyError: the proxy refused the tunnel (an HTTP status other than 2xx, a SOCKS error
            reply), answered something that is not HTTP or SOCKS, or closed the connection.

    Cancelling, or any failure, closes every socket this call opened.
    """
    if proxy.scheme != "https" and (proxy_ssl is not None or proxy_server_hostname is not None):
        raise ValueError(
            f"proxy_ssl= and proxy_server_hostname= are for an https:// proxy, "
            f"not a {proxy.scheme}:// one"
        )
    if proxy.scheme in ("http", "https"):
        return await _open_http_tunnel(
            proxy,
            host,
            port,
            proxy_ssl=proxy_ssl,
            proxy_server_hostname=proxy_server_hostname,
            local_address=local_address,
            happy_eyeballs_delay=happy_eyeballs_delay,
            user_agent=user_agent,
        )
    return await _open_socks_tunnel(proxy, host, port, local_address=local_address)


async def _open_http_tunnel(
    proxy: Proxy,
    host: str,
    port: int,
    *,
    proxy_ssl: ssl_module.SSLContext | None,
    proxy_server_hostname: str | None,
    local_address: str | None,
    happy_eyeballs_delay: float | None,
    user_agent: str | None,
) -> trio.abc.Stream:
    stream: trio.abc.Stream = await trio.open_tcp_stream(
        proxy.host,
        proxy.port,
        happy_eyeballs_delay=happy_eyeballs_delay,
        local_address=local_address,
    )
    try:
        if proxy.scheme == "https":
            stream = await _start_tls(stream, proxy_ssl, proxy_server_hostname or proxy.host)
        trailing = await _http_connect(stream, proxy, host, port, user_agent)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return _PrefixedStream(stream, trailing) if trailing else stream


async def _start_tls(
    stream: trio.abc.Stream, context: ssl_module.SSLContext | None, server_hostname: str
) -> trio.SSLStream[trio.abc.Stream]:
    tls = trio.SSLStream(
        stream,
        context or ssl_module.create_default_context(),
        server_hostname=server_hostname,
        https_compatible=True,
    )
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        # A rejected certificate is an ssl.SSLError, an OSError, as for a direct wss:// server.
        if isinstance(exc.__cause__, OSError):
            raise exc.__cause__ from None
        raise OSError(f"TLS handshake with proxy {server_hostname} failed") from exc
    return tls


def _connect_request(
    proxy: Proxy, target: str, user_agent: str | None
) -> tuple[h11.Connection, bytes]:
    """The h11 connection and the bytes of ``CONNECT target``."""
    headers = [("Host", target)]
    if user_agent is not None:
        headers.append(("User-Agent", user_agent))
    if proxy.username is not None:
        credentials = f"{proxy.username}:{proxy.password or ''}".encode()
        headers.append(("Proxy-Authorization", "Basic " + base64.b64encode(credentials).decode()))
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_SIZE)
    try:
        request = connection.send(h11.Request(method="CONNECT", target=target, headers=headers))
        request = (request or b"") + (connection.send(h11.EndOfMessage()) or b"")
    except (h11.LocalProtocolError, UnicodeError) as exc:
        raise ValueError(f"cannot send CONNECT {target} to the proxy: {exc}") from exc
    return connection, request


async def _http_connect(
    stream: trio.abc.Stream, proxy: Proxy, host: str, port: int, user_agent: str | None
) -> bytes:
    """Ask for the tunnel; return the bytes received after the proxy's 2xx answer."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    connection, request = _connect_request(proxy, target, user_agent)
    received = 0
    try:
        await stream.send_all(request)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_RECEIVE_SIZE)
                received += len(data)
                connection.receive_data(bytes(data))  # b"" is EOF
            elif isinstance(event, h11.Response):
                if not 200 <= event.status_code < 300:
                    reason = event.reason.decode("ascii", "replace")
                    raise ProxyError(
                        f"proxy rejected CONNECT {target}: HTTP {event.status_code} {reason}"
                    )
                # h11 has switched protocols: what follows the head is the tunnel's first bytes.
                return connection.trailing_data[0]
            elif isinstance(event, h11.ConnectionClosed):
                raise ProxyError(f"proxy closed the connection before answering CONNECT {target}")
            elif not isinstance(event, h11.InformationalResponse):  # pragma: no cover
                raise ProxyError(f"proxy answered CONNECT {target} with {event!r}")
    except h11.RemoteProtocolError as exc:
        if not received:  # h11 calls an EOF before any answer a protocol error
            raise ProxyError(
                f"proxy closed the connection before answering CONNECT {target}"
            ) from exc
        raise ProxyError(f"proxy sent an invalid answer to CONNECT {target}: {exc}") from exc
    except trio.BrokenResourceError as exc:
        raise ProxyError(f"connection to the proxy lost during CONNECT {target}") from exc


class _PrefixedStream(trio.abc.Stream):
    """A stream that returns ``prefix`` before what its transport receives.

    It carries the bytes that arrived in the same read as the proxy's answer to CONNECT.
    """

    def __init__(self, transport: trio.abc.Stream, prefix: bytes) -> None:
        self._transport = transport
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._prefix:
            return await self._transport.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(self._prefix) if max_bytes is None else max_bytes
        data, self._prefix = self._prefix[:size], self._prefix[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._transport.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._prefix = b""
        await self._transport.aclose()


async def _open_socks_tunnel(
    proxy: Proxy, host: str, port: int, *, local_address: str | None
) -> trio.abc.Stream:
    url = f"{proxy.scheme}://{proxy.host}:{proxy.port}"
    try:
        # python-socks is an optional extra (trio-ws[socks]): trio_ws imports and works without
        # it, and only a SOCKS proxy needs it.
        from python_socks import ProxyConnectionError, ProxyType
        from python_socks import ProxyError as SocksError
        from python_socks.async_.trio import Proxy as SocksProxy
    except ImportError:
        raise InvalidProxy(
            url, "SOCKS proxies need the socks extra: pip install 'trio-ws[socks]'"
        ) from None
    socks = SocksProxy(
        ProxyType.SOCKS5 if proxy.scheme.startswith("socks5") else ProxyType.SOCKS4,
        proxy.host,
        proxy.port,
        proxy.username,
        proxy.password,
        rdns=proxy.scheme in ("socks5h", "socks4a"),
    )
    try:
        # No timeout of python-socks' own (it defaults to 60 s): the caller's deadline rules.
        # python-socks closes its socket when it fails or is cancelled.
        sock = await socks.connect(
            host,
            port,
            timeout=math.inf,
            local_addr=None if local_address is None else (local_address, 0),
        )
    except ProxyConnectionError as exc:
        # python-socks wraps the failure to reach the proxy: raise what a direct connection
        # would (ConnectionRefusedError, socket.gaierror...).
        if isinstance(exc.__cause__, OSError):
            raise exc.__cause__ from None
        raise  # pragma: no cover
    except SocksError as exc:
        raise ProxyError(f"SOCKS proxy {url} refused the tunnel to {host}:{port}: {exc}") from exc
    except socket.gaierror:
        raise  # socks5 and socks4 resolve ``host`` here
    except OSError as exc:
        raise ProxyError(f"connection to SOCKS proxy {url} lost during its handshake") from exc
    return trio.SocketStream(sock)
