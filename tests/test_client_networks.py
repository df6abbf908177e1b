"""connect() end to end over real sockets, against trio_ws.serve: through real proxies (pproxy),
across redirects, with credentials, Origin and User-Agent, over Unix sockets and streams of
the caller's own, with server_hostname, local_address and happy_eyeballs_delay.

Each test proves the option reached the network: the server's handler sees the path, the
headers, the address the option implies (the proxy's, a local address of our choosing).
"""

from __future__ import annotations

import base64
import gc
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_ws
from tests.conftest import open_fds
from tests.test_client import has_ipv6_loopback, no_leaks, tcp_server, ws_server
from tests.test_proxy import PProxy, closed_port
from tests.test_proxy import pproxy as pproxy  # a fixture: pytest finds it here
from tests.test_server_listening import MemoryListener
from tests.test_server_listening import sock_path as sock_path  # a fixture, as pproxy
from trio_ws.client import MAX_REDIRECTS
from trio_ws.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidProxy,
    InvalidStatus,
    ProxyError,
    SecurityError,
)
from trio_ws.http import Headers, Request, Response
from trio_ws.server import ServerConnection

# -- helpers ---------------------------------------------------------------------------------


class Site:
    """A trio_ws server's view of its clients: every request (``process_request`` sees them
    all, redirected ones too) and every connection its echo handler ran.

    ``redirects`` maps a request path to the (status, Location) answered instead of the
    upgrade; a Location of None sends the status without one.
    """

    def __init__(self, redirects: dict[str, tuple[int, str | None]] | None = None) -> None:
        self.redirects = dict(redirects or {})
        self.requests: list[Request] = []
        self.connections: list[ServerConnection] = []

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if request.path not in self.redirects:
            return None
        status, location = self.redirects[request.path]
        headers = Headers() if location is None else Headers([("Location", location)])
        return Response(status, headers=headers)

    async def handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        with suppress(ConnectionClosed):
            async for message in ws:
                await ws.send(message)

    @property
    def connection(self) -> ServerConnection:
        [ws] = self.connections
        return ws

    def authorizations(self) -> list[str | None]:
        """The Authorization header of each request, in order."""
        return [request.headers.get("Authorization") for request in self.requests]


@asynccontextmanager
async def site_server(site: Site, **options: Any) -> AsyncIterator[int]:
    """Serve ``site`` on 127.0.0.1, port 0; yield the port."""
    async with ws_server(site.handler, process_request=site.process_request, **options) as port:
        yield port


async def assert_echoes(ws: trio_ws.ClientConnection, message: str = "round trip") -> None:
    await ws.send(message)
    with trio.fail_after(5):  # a lost message fails the test instead of hanging it
        assert await ws.recv() == message


@asynccontextmanager
async def no_fd_left() -> AsyncIterator[None]:
    """Assert that the block leaves as many open fds as it found, once every task has settled
    (a server closes its side of a connection when it sees the client's go)."""
    fds = open_fds()
    yield
    await trio.testing.wait_all_tasks_blocked()
    assert open_fds() == fds


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def can_bind(host: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


def record_sni(context: ssl.SSLContext) -> list[str | None]:
    """The server names (SNI) the clients of ``context`` send, in order (None: no SNI)."""
    names: list[str | None] = []

    def callback(sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = callback
    return names


async def silent(stream: trio.SocketStream) -> None:
    """Accept TCP, read the request, never answer."""
    while await stream.receive_some(65536):
        pass


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A fresh context per test, in place of conftest's shared one (tests set its
    sni_callback): 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def example_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context whose certificate names example.test only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("example.test").configure_cert(context)
    return context


@pytest.fixture
def proxy_context(pproxy: PProxy) -> ssl.SSLContext:
    """Trusts the CA of pproxy's https:// listener, whose certificate names proxy.test."""
    context = ssl.create_default_context()
    pproxy.ca.configure_trust(context)
    return context


# -- 1. proxies ------------------------------------------------------------------------------


def assert_went_through(
    ws: trio_ws.ClientConnection, server_side: ServerConnection, proxy_port: int
) -> None:
    """The client's socket goes to the proxy, and the server's peer is not the client's
    socket but the proxy's own outgoing one."""
    assert ws.remote_address == ("127.0.0.1", proxy_port)
    assert server_side.remote_address is not None
    assert server_side.remote_address != ws.local_address


async def test_ws_through_an_http_connect_proxy_reaches_the_server(pproxy: PProxy) -> None:
    """ws:// through pproxy's CONNECT: the handshake and messages cross the tunnel, and the
    server sees the proxy's address as its peer."""
    site = Site()
    async with site_server(site) as port:
        uri = f"ws://127.0.0.1:{port}/through?proxy=http"
        async with trio_ws.connect(uri, proxy=f"http://127.0.0.1:{pproxy.http}") as ws:
            await assert_echoes(ws)
            assert_went_through(ws, site.connection, pproxy.http)
    assert site.connection.request.path == "/through?proxy=http"
    assert ws.close_code == 1000


@pytest.mark.parametrize(
    ("host", "server_hostname", "sni"),
    [
        ("localhost", None, "localhost"),
        ("127.0.0.1", None, None),  # an address: no SNI, the cert's IP entry is checked
        ("127.0.0.1", "localhost", "localhost"),
    ],
)
async def test_wss_through_an_http_connect_proxy_runs_tls_inside_the_tunnel(
    pproxy: PProxy,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    host: str,
    server_hostname: str | None,
    sni: str | None,
) -> None:
    """wss:// through a CONNECT tunnel: TLS runs end to end with the server, which gets the
    URI's host (or server_hostname) as SNI; the proxy only relays bytes."""
    names = record_sni(server_context)
    site = Site()
    async with (
        site_server(site, ssl=server_context) as port,
        trio_ws.connect(
            f"wss://{host}:{port}/secure",
            ssl=client_context,
            server_hostname=server_hostname,
            proxy=f"http://127.0.0.1:{pproxy.http}",
        ) as ws,
    ):
        await assert_echoes(ws)
        assert_went_through(ws, site.connection, pproxy.http)
    assert names == [sni]
    assert site.connection.request.path == "/secure"


async def test_proxy_credentials_in_the_url_let_the_client_through(pproxy: PProxy) -> None:
    site = Site()
    async with site_server(site) as port:
        proxy = f"http://alice:s3cret@127.0.0.1:{pproxy.http_auth}"
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/", proxy=proxy) as ws:
            await assert_echoes(ws)
            assert_went_through(ws, site.connection, pproxy.http_auth)
    # The proxy's credentials are for the proxy: the server never sees them.
    assert site.authorizations() == [None]
    assert site.connection.request.headers.get("Proxy-Authorization") is None


@pytest.mark.parametrize("userinfo", ["", "alice:wrong@"])
async def test_missing_or_wrong_proxy_credentials_raise_proxy_error_with_407(
    pproxy: PProxy, userinfo: str
) -> None:
    """The proxy's 407 is a ProxyError naming the status; no socket stays open and the server
    never hears of the client."""
    site = Site()
    async with site_server(site) as port:
        proxy = f"http://{userinfo}127.0.0.1:{pproxy.http_auth}"
        async with no_fd_left():
            with pytest.raises(ProxyError, match="407"):
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/", proxy=proxy):
                    pass  # pragma: no cover
    assert site.requests == []


@pytest.mark.parametrize(
    ("scheme", "host"),
    [
        ("socks5", "127.0.0.1"),
        ("socks5", "localhost"),
        ("socks5h", "localhost"),
        ("socks4", "127.0.0.1"),
    ],
)
async def test_ws_through_a_socks_proxy_reaches_the_server(
    pproxy: PProxy, scheme: str, host: str
) -> None:
    """SOCKS5 (names resolved here), SOCKS5h (resolved by the proxy) and SOCKS4 carry the
    handshake and messages; the Host header is still the URI's."""
    port_of_proxy = pproxy.socks4 if scheme == "socks4" else pproxy.socks5
    site = Site()
    async with site_server(site) as port:
        uri = f"ws://{host}:{port}/socks"
        async with trio_ws.connect(uri, proxy=f"{scheme}://127.0.0.1:{port_of_proxy}") as ws:
            await assert_echoes(ws)
            assert_went_through(ws, site.connection, port_of_proxy)
    assert site.connection.request.headers["Host"] == f"{host}:{port}"


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_through_an_https_proxy_with_proxy_ssl_and_proxy_server_hostname(
    pproxy: PProxy,
    proxy_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    scheme: str,
) -> None:
    """An https:// proxy is reached over TLS checked with proxy_ssl against
    proxy_server_hostname (its cert names proxy.test, the URL an address); wss:// then runs
    TLS to the server inside TLS to the proxy."""
    site = Site()
    secure = scheme == "wss"
    async with (
        site_server(site, ssl=server_context if secure else None) as port,
        trio_ws.connect(
            f"{scheme}://127.0.0.1:{port}/",
            ssl=client_context if secure else None,
            proxy=f"https://127.0.0.1:{pproxy.https}",
            proxy_ssl=proxy_context,
            proxy_server_hostname="proxy.test",
        ) as ws,
    ):
        await assert_echoes(ws)
        assert_went_through(ws, site.connection, pproxy.https)


async def test_an_https_proxy_whose_name_does_not_match_raises_cert_error(
    pproxy: PProxy, proxy_context: ssl.SSLContext
) -> None:
    """Without proxy_server_hostname the proxy's cert (proxy.test) is checked against the
    URL's address, and refused."""
    with no_leaks(), pytest.raises(ssl.SSLCertVerificationError):
        async with trio_ws.connect(
            "ws://127.0.0.1:9/",
            proxy=f"https://127.0.0.1:{pproxy.https}",
            proxy_ssl=proxy_context,
        ):
            pass  # pragma: no cover


async def test_proxy_true_takes_http_proxy_for_ws(
    pproxy: PProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{pproxy.http}")
    site = Site()
    async with (
        site_server(site) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws,
    ):  # proxy=True by default
        await assert_echoes(ws)
        assert_went_through(ws, site.connection, pproxy.http)


async def test_proxy_true_takes_https_proxy_for_ws_before_http_proxy(
    pproxy: PProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As websockets does (RFC 6455 §4.1), ws:// prefers the proxy configured for HTTPS:
    HTTP_PROXY names a dead one here, and is not used."""
    monkeypatch.setenv("HTTPS_PROXY", f"socks5://127.0.0.1:{pproxy.socks5}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    site = Site()
    async with (
        site_server(site) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/", proxy=True) as ws,
    ):
        await assert_echoes(ws)
        assert_went_through(ws, site.connection, pproxy.socks5)


async def test_proxy_true_takes_https_proxy_for_wss(
    pproxy: PProxy,
    monkeypatch: pytest.MonkeyPatch,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """wss:// takes HTTPS_PROXY, and never HTTP_PROXY (a dead one here)."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{pproxy.http}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    site = Site()
    async with (
        site_server(site, ssl=server_context) as port,
        trio_ws.connect(f"wss://localhost:{port}/", ssl=client_context) as ws,
    ):
        await assert_echoes(ws)
        assert_went_through(ws, site.connection, pproxy.http)


@pytest.mark.parametrize("name", ["NO_PROXY", "no_proxy"])
async def test_no_proxy_bypasses_the_environments_proxy(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The proxies named are not running: the connection succeeds only because NO_PROXY
    sends it directly."""
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HTTPS_PROXY", dead)
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv(name, "127.0.0.1")
    site = Site()
    async with site_server(site) as port, trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        await assert_echoes(ws)
        assert ws.remote_address == ("127.0.0.1", port)
        assert site.connection.remote_address == ws.local_address


async def test_proxy_none_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "WS_PROXY"):
        monkeypatch.setenv(name, dead)
    site = Site()
    async with (
        site_server(site) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/", proxy=None) as ws,
    ):
        await assert_echoes(ws)
        assert site.connection.remote_address == ws.local_address


async def test_a_dead_proxy_from_the_environment_raises_oserror(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counterpart of the two tests above: without NO_PROXY or proxy=None, the dead
    proxy is tried, and fails as a refused connection does."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    async with site_server(Site()) as port, no_fd_left():
        with pytest.raises(OSError):
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                pass  # pragma: no cover


@pytest.mark.parametrize(
    "proxy", ["ftp://127.0.0.1:21", "http://", "http://proxy/path", "http://alice@proxy"]
)
def test_an_invalid_proxy_url_raises_invalid_proxy_when_connect_is_called(proxy: str) -> None:
    """Raised by connect() itself, before any await: nothing to enter."""
    with pytest.raises(InvalidProxy) as caught:
        trio_ws.connect("ws://127.0.0.1:9/", proxy=proxy)
    assert caught.value.proxy == proxy


async def test_an_invalid_proxy_from_the_environment_raises_invalid_proxy_when_opening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "ftp://127.0.0.1:21")
    connector = trio_ws.connect("ws://127.0.0.1:9/")  # the environment is read when opening
    with no_leaks(), pytest.raises(InvalidProxy, match="ftp"):
        async with connector:
            pass  # pragma: no cover


@pytest.mark.parametrize("scheme", ["http", "socks5h"])
@pytest.mark.parametrize("option", ["proxy_ssl", "proxy_server_hostname"])
def test_proxy_tls_options_with_a_proxy_that_is_not_https_raise_value_error(
    scheme: str, option: str
) -> None:
    value: Any = ssl.create_default_context() if option == "proxy_ssl" else "proxy.test"
    with pytest.raises(ValueError, match=f"{option}= is for https:// proxies"):
        trio_ws.connect("ws://127.0.0.1:9/", proxy=f"{scheme}://127.0.0.1:3128", **{option: value})


@pytest.mark.parametrize("scheme", ["http", "https", "socks5", "socks4"])
async def test_a_proxy_that_is_not_listening_raises_oserror(scheme: str) -> None:
    """Failing to reach the proxy is a plain OSError (connection refused), as for a server."""
    async with site_server(Site()) as port, no_fd_left():
        with pytest.raises(OSError):
            async with trio_ws.connect(
                f"ws://127.0.0.1:{port}/", proxy=f"{scheme}://127.0.0.1:{closed_port()}"
            ):
                pass  # pragma: no cover


async def test_a_proxy_that_cannot_reach_the_server_raises_proxy_error(pproxy: PProxy) -> None:
    with no_leaks(), pytest.raises(ProxyError):
        async with trio_ws.connect(
            f"ws://127.0.0.1:{closed_port()}/", proxy=f"http://127.0.0.1:{pproxy.http}"
        ):
            pass  # pragma: no cover


# -- 2. redirects ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("location", ["/final?x=1", "final?x=1", "absolute"])
async def test_a_redirect_to_another_path_is_followed(status: int, location: str) -> None:
    """Relative (to the root or to the path) and absolute Locations all land on /final."""
    site = Site()
    async with site_server(site) as port:
        if location == "absolute":
            location = f"ws://127.0.0.1:{port}/final?x=1"
        site.redirects["/start/here"] = (status, location)
        target = "/start/final?x=1" if location == "final?x=1" else "/final?x=1"
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/start/here") as ws:
            await assert_echoes(ws)
            assert ws.request.path == target
    assert [request.path for request in site.requests] == ["/start/here", target]
    assert site.connection.request.path == target


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_server_is_followed(status: int) -> None:
    first, second = Site(), Site()
    async with site_server(first) as port1, site_server(second) as port2:
        first.redirects["/"] = (status, f"ws://127.0.0.1:{port2}/moved")
        async with trio_ws.connect(f"ws://127.0.0.1:{port1}/") as ws:
            await assert_echoes(ws)
            assert ws.remote_address == ("127.0.0.1", port2)
    assert first.connections == []
    assert second.connection.request.path == "/moved"
    assert second.connection.request.headers["Host"] == f"127.0.0.1:{port2}"


def hops(count: int) -> dict[str, tuple[int, str | None]]:
    """/hop/N redirects to /hop/N-1, down to /hop/0, which upgrades."""
    return {f"/hop/{n}": (302, f"/hop/{n - 1}") for n in range(1, count + 1)}


async def test_a_chain_of_max_redirects_is_followed() -> None:
    assert MAX_REDIRECTS == 10
    site = Site(hops(MAX_REDIRECTS + 1))
    async with (
        site_server(site) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/hop/{MAX_REDIRECTS}") as ws,
    ):
        await assert_echoes(ws)
    assert len(site.requests) == MAX_REDIRECTS + 1
    assert site.connection.request.path == "/hop/0"


async def test_one_redirect_too_many_raises_the_last_one_as_invalid_status() -> None:
    site = Site(hops(MAX_REDIRECTS + 1))
    async with site_server(site) as port, no_fd_left():
        with pytest.raises(InvalidStatus) as caught:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/hop/{MAX_REDIRECTS + 1}"):
                pass  # pragma: no cover
    assert caught.value.response.status_code == 302
    assert caught.value.response.headers["Location"] == "/hop/0"
    assert len(site.requests) == MAX_REDIRECTS + 1
    assert site.connections == []


@pytest.mark.parametrize("status", [301, 302, 307])
async def test_a_redirect_without_location_raises_invalid_status(status: int) -> None:
    site = Site({"/": (status, None)})
    async with site_server(site) as port:
        with pytest.raises(InvalidStatus) as caught:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                pass  # pragma: no cover
    assert caught.value.response.status_code == status
    assert len(site.requests) == 1


@pytest.mark.parametrize("status", [300, 304])
async def test_other_3xx_statuses_are_not_followed(status: int) -> None:
    site = Site({"/": (status, "/elsewhere")})
    async with site_server(site) as port:
        with pytest.raises(InvalidStatus) as caught:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                pass  # pragma: no cover
    assert caught.value.response.status_code == status
    assert len(site.requests) == 1


async def test_a_redirect_from_ws_to_wss_is_followed(
    ca: trustme.CA,
    server_context: ssl.SSLContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ws:// may be upgraded to wss://. connect() refuses ssl= with a ws:// URI, so the
    wss:// hop uses the default context: SSL_CERT_FILE makes it trust the test CA."""
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    plain, secure = Site(), Site()
    async with site_server(plain) as port1, site_server(secure, ssl=server_context) as port2:
        plain.redirects["/"] = (301, f"wss://localhost:{port2}/secure")
        async with trio_ws.connect(f"ws://127.0.0.1:{port1}/") as ws:
            await assert_echoes(ws)
    assert secure.connection.request.path == "/secure"


async def test_a_redirect_from_wss_to_ws_raises_security_error(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    secure, plain = Site(), Site()
    async with site_server(secure, ssl=server_context) as port1, site_server(plain) as port2:
        secure.redirects["/"] = (302, f"ws://127.0.0.1:{port2}/")
        async with no_fd_left():
            with pytest.raises(SecurityError, match="ws://"):
                async with trio_ws.connect(f"wss://127.0.0.1:{port1}/", ssl=client_context):
                    pass  # pragma: no cover
    assert plain.requests == []


async def test_uri_credentials_go_to_the_first_server_and_same_origin_redirects_only() -> None:
    """ws://user:pass@ sends Basic credentials to the first server and along a redirect to
    the same scheme, host and port; not to another port, nor to another host name."""
    first, other_port = Site(), Site()
    async with site_server(first) as port1, site_server(other_port) as port2:
        first.redirects["/"] = (302, "/same-origin")
        first.redirects["/same-origin"] = (302, f"ws://127.0.0.1:{port2}/other-port")
        async with trio_ws.connect(f"ws://user:pass@127.0.0.1:{port1}/") as ws:
            await assert_echoes(ws)
        other_port.redirects["/other-port"] = (302, f"ws://localhost:{port2}/other-host")
        other_port.requests.clear()
        async with trio_ws.connect(f"ws://user:pass@127.0.0.1:{port2}/other-port") as ws:
            await assert_echoes(ws)
    credentials = basic("user", "pass")
    assert first.authorizations() == [credentials, credentials]
    assert other_port.authorizations() == [credentials, None]
    assert [request.path for request in other_port.requests] == ["/other-port", "/other-host"]


async def test_credentials_in_the_location_are_used_for_the_redirect() -> None:
    """A Location with its own user info sends those, wherever it points."""
    first, second = Site(), Site()
    async with site_server(first) as port1, site_server(second) as port2:
        first.redirects["/"] = (302, f"ws://bob:b0b@127.0.0.1:{port2}/")
        async with trio_ws.connect(f"ws://user:pass@127.0.0.1:{port1}/") as ws:
            await assert_echoes(ws)
    assert second.authorizations() == [basic("bob", "b0b")]


@pytest.mark.parametrize("location", ["//127.0.0.1:{port2}/there", "ws://127.0.0.1:{port2}/there"])
async def test_a_scheme_relative_or_absolute_location_keeps_ws(location: str) -> None:
    first, second = Site(), Site()
    async with site_server(first) as port1, site_server(second) as port2:
        first.redirects["/"] = (301, location.format(port2=port2))
        async with trio_ws.connect(f"ws://127.0.0.1:{port1}/") as ws:
            await assert_echoes(ws)
    assert second.connection.request.path == "/there"


@pytest.mark.parametrize(
    "location",
    [
        "https://127.0.0.1/",
        "http://127.0.0.1/x",
        "ws://127.0.0.1:99999/",
        "ws://127.0.0.1/#fragment",
        "ws://[::1/",
    ],
)
async def test_a_redirect_to_what_is_not_a_websocket_uri_raises_invalid_handshake(
    location: str,
) -> None:
    site = Site({"/": (302, location)})
    async with site_server(site) as port, no_fd_left():
        with pytest.raises(Exception) as caught:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                pass  # pragma: no cover
    assert isinstance(caught.value, InvalidHandshake), repr(caught.value)
    assert "redirect to an invalid URI" in str(caught.value)


async def test_a_redirect_to_a_closed_port_raises_oserror_and_leaves_no_fd() -> None:
    site = Site()
    async with site_server(site) as port, no_fd_left():
        site.redirects["/"] = (307, f"ws://127.0.0.1:{closed_port()}/")
        with pytest.raises(OSError):
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                pass  # pragma: no cover
    assert len(site.requests) == 1


async def test_a_redirect_from_wss_to_another_wss_server_keeps_the_ssl_context(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    first, second = Site(), Site()
    async with (
        site_server(first, ssl=server_context) as port1,
        site_server(second, ssl=server_context) as port2,
    ):
        first.redirects["/"] = (308, f"wss://localhost:{port2}/there")
        async with trio_ws.connect(f"wss://127.0.0.1:{port1}/", ssl=client_context) as ws:
            await assert_echoes(ws)
    assert second.connection.request.path == "/there"


async def test_an_explicit_proxy_carries_every_hop_of_a_redirect(pproxy: PProxy) -> None:
    first, second = Site(), Site()
    async with site_server(first) as port1, site_server(second) as port2:
        first.redirects["/"] = (302, f"ws://127.0.0.1:{port2}/there")
        proxy = f"http://127.0.0.1:{pproxy.http}"
        async with trio_ws.connect(f"ws://127.0.0.1:{port1}/", proxy=proxy) as ws:
            await assert_echoes(ws)
            assert_went_through(ws, second.connection, pproxy.http)
    assert len(first.requests) == 1


async def test_the_environments_proxy_is_chosen_again_for_each_hop(
    pproxy: PProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_PROXY sends the first hop (127.0.0.1) directly; the redirect to localhost, which
    NO_PROXY does not list, goes through HTTP_PROXY."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{pproxy.http}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    first, second = Site(), Site()
    async with site_server(first) as port1, site_server(second) as port2:
        first.redirects["/"] = (302, f"ws://localhost:{port2}/there")
        async with trio_ws.connect(f"ws://127.0.0.1:{port1}/") as ws:
            await assert_echoes(ws)
            assert_went_through(ws, second.connection, pproxy.http)
    assert len(first.requests) == 1


async def test_redirects_run_within_one_open_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each answer takes 2 s and the redirects go round in a loop: TimeoutError at exactly
    open_timeout (5 s), after the third request, not a fresh timeout per hop."""
    site = Site({"/a": (302, "/b"), "/b": (302, "/a")})

    async def slow(ws: ServerConnection, request: Request) -> Response | None:
        await trio.sleep(2)
        return site.process_request(ws, request)

    with no_leaks():
        async with ws_server(site.handler, process_request=slow) as port:
            start = trio.current_time()
            with pytest.raises(TimeoutError, match="open_timeout=5"):
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/a", open_timeout=5):
                    pass  # pragma: no cover
            assert trio.current_time() == start + 5
    assert [request.path for request in site.requests] == ["/a", "/b"]


async def test_a_redirect_to_a_server_that_never_answers_times_out_at_open_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three hops, then a server that reads the request and says nothing."""
    received: list[bytes] = []

    async def silent_recording(stream: trio.SocketStream) -> None:
        received.append(await stream.receive_some(65536))
        await silent(stream)

    site = Site({"/1": (307, "/2"), "/2": (307, "/3")})
    with no_leaks():
        async with tcp_server(silent_recording) as silent_port, site_server(site) as port:
            site.redirects["/3"] = (307, f"ws://127.0.0.1:{silent_port}/silent")
            start = trio.current_time()
            with pytest.raises(TimeoutError, match="open_timeout=7"):
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/1", open_timeout=7):
                    pass  # pragma: no cover
            assert trio.current_time() == start + 7
    assert len(site.requests) == 3
    assert [data.split(b"\r\n")[0] for data in received] == [b"GET /silent HTTP/1.1"]


async def test_redirects_close_each_intermediate_socket() -> None:
    """While the final connection is open, only its two sockets (ours, the server's) are
    new: the ten redirected ones are closed on both sides."""
    site = Site(hops(MAX_REDIRECTS))
    with no_leaks():
        async with site_server(site) as port:
            fds = open_fds()
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/hop/{MAX_REDIRECTS}") as ws:
                await assert_echoes(ws)
                await trio.testing.wait_all_tasks_blocked()
                assert open_fds() == fds + 2
    assert len(site.requests) == MAX_REDIRECTS + 1


# -- 3. credentials --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("userinfo", "user", "password"),
    [
        ("user:pass", "user", "pass"),
        ("user:p%40ss", "user", "p@ss"),
        ("us%20er:p%C3%A4ss%3A%2F", "us er", "päss:/"),
    ],
)
async def test_uri_credentials_pass_basic_auth(userinfo: str, user: str, password: str) -> None:
    """The user info, percent-decoded, is sent as HTTP Basic; the handler sees the user."""
    auth = trio_ws.basic_auth(credentials=(user, password))
    handler_saw: list[str | None] = []

    async def handler(ws: ServerConnection) -> None:
        handler_saw.append(ws.username)
        await ws.send("welcome")

    async with (
        ws_server(handler, process_request=auth) as port,
        trio_ws.connect(f"ws://{userinfo}@127.0.0.1:{port}/") as ws,
    ):
        assert await ws.recv() == "welcome"
    assert handler_saw == [user]
    assert ws.request.headers["Authorization"] == basic(user, password)


async def test_an_authorization_header_in_additional_headers_wins_over_the_uri() -> None:
    auth = trio_ws.basic_auth(credentials=("alice", "right"))
    names: list[str | None] = []
    headers: list[list[str]] = []

    async def handler(ws: ServerConnection) -> None:
        names.append(ws.username)
        headers.append(ws.request.headers.get_all("Authorization"))

    async with (
        ws_server(handler, process_request=auth) as port,
        trio_ws.connect(
            f"ws://mallory:wrong@127.0.0.1:{port}/",
            additional_headers={"Authorization": basic("alice", "right")},
        ),
    ):
        pass
    assert names == ["alice"]
    assert headers == [[basic("alice", "right")]]  # one header: the URI's was not added


@pytest.mark.parametrize("userinfo", ["user:wrong@", "nobody:pass@", ""])
async def test_wrong_or_missing_credentials_raise_invalid_status_401(userinfo: str) -> None:
    auth = trio_ws.basic_auth(realm="test", credentials=("user", "pass"))
    site = Site()
    async with ws_server(site.handler, process_request=auth) as port, no_fd_left():
        with pytest.raises(InvalidStatus) as caught:
            async with trio_ws.connect(f"ws://{userinfo}127.0.0.1:{port}/"):
                pass  # pragma: no cover
    assert caught.value.response.status_code == 401
    assert caught.value.response.headers["WWW-Authenticate"].startswith('Basic realm="test"')
    assert site.connections == []


# -- 4. Origin and User-Agent ----------------------------------------------------------------


async def test_origin_sets_the_origin_header_a_server_with_origins_accepts() -> None:
    site = Site()
    async with (
        site_server(site, origins=["https://good.example"]) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/", origin="https://good.example") as ws,
    ):
        await assert_echoes(ws)
    assert site.connection.request.headers.get_all("Origin") == ["https://good.example"]


@pytest.mark.parametrize("origin", ["https://evil.example", None])
async def test_an_origin_the_server_does_not_list_gets_403(origin: str | None) -> None:
    site = Site()
    async with site_server(site, origins=["https://good.example"]) as port:
        with pytest.raises(InvalidStatus) as caught:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/", origin=origin):
                pass  # pragma: no cover
    assert caught.value.response.status_code == 403
    assert [request.headers.get("Origin") for request in site.requests] == [origin]


async def test_an_origin_in_additional_headers_wins_over_origin() -> None:
    site = Site()
    async with (
        site_server(site, origins=["https://good.example"]) as port,
        trio_ws.connect(
            f"ws://127.0.0.1:{port}/",
            origin="https://evil.example",
            additional_headers=[("origin", "https://good.example")],
        ) as ws,
    ):
        await assert_echoes(ws)
    assert site.connection.request.headers.get_all("Origin") == ["https://good.example"]


@pytest.mark.parametrize("user_agent", ["my-agent/1.0 (test)", None])
async def test_user_agent_header_sets_or_removes_user_agent(user_agent: str | None) -> None:
    site = Site()
    async with (
        site_server(site) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/", user_agent_header=user_agent) as ws,
    ):
        await assert_echoes(ws)
    expected = [] if user_agent is None else [user_agent]
    assert site.connection.request.headers.get_all("User-Agent") == expected


# -- 5. Unix sockets -------------------------------------------------------------------------


@asynccontextmanager
async def unix_site(site: Site, path: str, **options: Any) -> AsyncIterator[trio_ws.Server]:
    """unix_serve ``site`` at ``path`` (keepalive off); stop it on exit."""
    options.setdefault("ping_interval", None)
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            partial(
                trio_ws.unix_serve,
                site.handler,
                path,
                process_request=site.process_request,
                **options,
            )
        )
        yield server
        server.cancel_scope.cancel()


async def test_unix_connect_echoes_and_sends_the_uris_path_and_host(sock_path: str) -> None:
    site = Site()
    with no_leaks():
        async with unix_site(site, sock_path):
            async with trio_ws.unix_connect(sock_path) as ws:
                await assert_echoes(ws)
            async with trio_ws.unix_connect(sock_path, "ws://app.internal/chat?room=1") as ws:
                await assert_echoes(ws)
                assert ws.remote_address is None  # a Unix socket has no host and port
    assert [request.path for request in site.requests] == ["/", "/chat?room=1"]
    assert [request.headers["Host"] for request in site.requests] == ["localhost", "app.internal"]


@pytest.mark.parametrize(
    ("uri", "server_hostname", "sni"),
    [
        ("wss://localhost/secure", None, "localhost"),
        ("wss://example.test/secure", None, "example.test"),
        ("wss://localhost/secure", "example.test", "example.test"),
    ],
)
async def test_unix_connect_runs_tls_for_wss(
    sock_path: str,
    example_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    uri: str,
    server_hostname: str | None,
    sni: str,
) -> None:
    """wss:// layers TLS on the socket file; the certificate (for example.test) is checked
    against server_hostname, or else the URI's host."""
    names = record_sni(example_context)
    site = Site()
    async with unix_site(site, sock_path, ssl=example_context):
        if server_hostname is None and sni != "example.test":
            with pytest.raises(ssl.SSLCertVerificationError):
                async with trio_ws.unix_connect(sock_path, uri, ssl=client_context):
                    pass  # pragma: no cover
            return
        async with trio_ws.unix_connect(
            sock_path, uri, ssl=client_context, server_hostname=server_hostname
        ) as ws:
            await assert_echoes(ws)
    assert names == [sni]
    assert site.connection.request.path == "/secure"


async def test_async_for_unix_connect_reconnects_after_a_server_restart(sock_path: str) -> None:
    """The server stops (the connection ends, the socket file goes) and comes back at the same
    path; the loop's next connection reaches the new one."""
    first, second = Site(), Site()
    first_stopping, first_stopped = trio.Event(), trio.Event()

    async def serve_first(task_status: trio.TaskStatus[None]) -> None:
        async with unix_site(first, sock_path):
            task_status.started()
            await first_stopping.wait()
        first_stopped.set()

    async def serve_second(task_status: trio.TaskStatus[None]) -> None:
        async with unix_site(second, sock_path):
            task_status.started()
            await trio.sleep_forever()

    backoff = trio_ws.Backoff(initial_delay=0, min_delay=0, max_delay=0)
    connections = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_first)
        with trio.fail_after(10):
            async for ws in trio_ws.unix_connect(
                sock_path, "ws://localhost/feed", backoff=backoff
            ):
                connections += 1
                await assert_echoes(ws, f"connection {connections}")
                if connections == 2:
                    break
                first_stopping.set()
                await ws.wait_closed()  # the server stopping closed the connection
                await first_stopped.wait()
                await nursery.start(serve_second)
        nursery.cancel_scope.cancel()
    assert connections == 2
    assert len(first.connections) == 1
    assert second.connection.request.path == "/feed"


@pytest.mark.parametrize("proxy", ["http://127.0.0.1:3128", True])
def test_unix_connect_with_a_proxy_raises_value_error(sock_path: str, proxy: Any) -> None:
    with pytest.raises(ValueError, match="unix_connect"):
        trio_ws.unix_connect(sock_path, proxy=proxy)


async def test_unix_connect_does_not_follow_redirects(sock_path: str) -> None:
    """A socket file has no other address to go to: the redirect is raised."""
    site = Site({"/": (302, "/elsewhere")})
    async with unix_site(site, sock_path), no_fd_left():
        with pytest.raises(InvalidStatus) as caught:
            async with trio_ws.unix_connect(sock_path):
                pass  # pragma: no cover
    assert caught.value.response.status_code == 302
    assert len(site.requests) == 1


# -- 6. stream= ------------------------------------------------------------------------------


async def test_stream_of_our_own_over_tcp() -> None:
    """The handshake runs over the given stream; the URI only gives the path and Host."""
    site = Site()
    with no_leaks():
        async with site_server(site) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            uri = "ws://ignored.invalid:1/own?stream=tcp"
            async with trio_ws.connect(uri, stream=stream) as ws:
                await assert_echoes(ws)
                assert ws.local_address == site.connection.remote_address
    assert site.connection.request.path == "/own?stream=tcp"
    assert site.connection.request.headers["Host"] == "ignored.invalid:1"


@asynccontextmanager
async def memory_site(site: Site, **options: Any) -> AsyncIterator[MemoryListener]:
    """serve() ``site`` on an in-memory listener; yield it (its connect() gives a stream)."""
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            partial(
                trio_ws.serve,
                site.handler,
                listeners=[listener],
                process_request=site.process_request,
                ping_interval=None,
                **options,
            )
        )
        yield listener
        server.cancel_scope.cancel()


async def test_stream_of_our_own_in_memory_is_used_once() -> None:
    """Over a memory stream pair the whole client works; entering the same connect object
    again raises RuntimeError, since the stream carried its one connection."""
    site = Site()
    async with memory_site(site) as listener:
        connector = trio_ws.connect("ws://memory.test/mem", stream=await listener.connect())
        async with connector as ws:
            await assert_echoes(ws)
            assert ws.remote_address is None
        assert ws.close_code == 1000
        with pytest.raises(RuntimeError, match="stream= was used already"):
            async with connector:
                pass  # pragma: no cover
    assert site.connection.request.path == "/mem"
    assert len(site.requests) == 1


async def test_stream_of_our_own_carries_wss(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """wss:// layers TLS on the given stream, checked against the URI's host (as SNI)."""
    names = record_sni(server_context)
    site = Site()
    async with memory_site(site, ssl=server_context) as listener:
        stream = await listener.connect()
        async with trio_ws.connect("wss://localhost/tls", stream=stream, ssl=client_context) as ws:
            await assert_echoes(ws)
    assert names == ["localhost"]
    assert site.connection.request.path == "/tls"


async def test_stream_of_our_own_cannot_follow_a_redirect() -> None:
    site = Site({"/": (307, "/elsewhere")})
    async with memory_site(site) as listener:
        stream = await listener.connect()
        with pytest.raises(InvalidStatus) as caught:
            async with trio_ws.connect("ws://memory.test/", stream=stream):
                pass  # pragma: no cover
        assert caught.value.response.status_code == 307
        with pytest.raises(trio.ClosedResourceError):  # closed once the redirect was refused
            await stream.send_all(b"x")
    assert len(site.requests) == 1


# -- 7. server_hostname ----------------------------------------------------------------------


async def test_server_hostname_names_the_certificate_to_check(
    example_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """wss:// to an address with a certificate for example.test: server_hostname names it,
    and is sent as SNI."""
    names = record_sni(example_context)
    site = Site()
    async with (
        site_server(site, ssl=example_context) as port,
        trio_ws.connect(
            f"wss://127.0.0.1:{port}/", ssl=client_context, server_hostname="example.test"
        ) as ws,
    ):
        await assert_echoes(ws)
    assert names == ["example.test"]
    # The Host header is still the URI's.
    assert site.connection.request.headers["Host"] == f"127.0.0.1:{port}"


async def test_without_server_hostname_the_address_does_not_match_the_certificate(
    example_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    site = Site()
    async with site_server(site, ssl=example_context) as port, no_fd_left():
        with pytest.raises(ssl.SSLCertVerificationError):
            async with trio_ws.connect(f"wss://127.0.0.1:{port}/", ssl=client_context):
                pass  # pragma: no cover
    assert site.requests == []


# -- 8. local_address and happy_eyeballs_delay -----------------------------------------------

needs_127_0_0_2 = pytest.mark.skipif(
    not can_bind("127.0.0.2"), reason="this machine cannot bind 127.0.0.2"
)


@needs_127_0_0_2
async def test_local_address_binds_the_clients_socket() -> None:
    """Another loopback address than the kernel would pick: the server sees it."""
    site = Site()
    async with (
        site_server(site) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/", local_address="127.0.0.2") as ws,
    ):
        await assert_echoes(ws)
        assert ws.local_address is not None
        assert ws.local_address[0] == "127.0.0.2"
    assert site.connection.remote_address is not None
    assert site.connection.remote_address[0] == "127.0.0.2"


@needs_127_0_0_2
@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_local_address_binds_the_socket_to_the_proxy(pproxy: PProxy, scheme: str) -> None:
    port_of_proxy = pproxy.http if scheme == "http" else pproxy.socks5
    async with (
        site_server(Site()) as port,
        trio_ws.connect(
            f"ws://127.0.0.1:{port}/",
            proxy=f"{scheme}://127.0.0.1:{port_of_proxy}",
            local_address="127.0.0.2",
        ) as ws,
    ):
        await assert_echoes(ws)
        assert ws.local_address is not None
        assert ws.local_address[0] == "127.0.0.2"


async def test_local_address_and_happy_eyeballs_delay_reach_open_tcp_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, int, dict[str, Any]]] = []
    open_tcp_stream: Callable[..., Any] = trio.open_tcp_stream

    async def spy(host: str, port: int, **kwargs: Any) -> trio.SocketStream:
        calls.append((host, port, kwargs))
        return await open_tcp_stream(host, port, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(trio, "open_tcp_stream", spy)
    site = Site()
    async with (
        site_server(site) as port,
        trio_ws.connect(
            f"ws://localhost:{port}/", local_address="127.0.0.1", happy_eyeballs_delay=0.125
        ) as ws,
    ):
        await assert_echoes(ws)
    assert calls == [
        ("localhost", port, {"happy_eyeballs_delay": 0.125, "local_address": "127.0.0.1"})
    ]
    assert site.connection.remote_address == ws.local_address


async def test_an_ip_address_is_connected_to_without_the_resolver_or_a_nursery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An IP address has one address to try: no trio.open_tcp_stream (its resolver and its
    happy-eyeballs nursery); a name, or an IP with local_address, still goes through it."""
    hosts: list[str] = []
    open_tcp_stream: Callable[..., Any] = trio.open_tcp_stream

    async def spy(host: str, port: int, **kwargs: Any) -> trio.SocketStream:
        hosts.append(host)
        return await open_tcp_stream(host, port, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(trio, "open_tcp_stream", spy)
    site = Site()
    async with site_server(site) as port:
        for uri, options in [
            (f"ws://127.0.0.1:{port}/", {}),
            (f"ws://localhost:{port}/", {}),
            (f"ws://127.0.0.1:{port}/", {"local_address": "127.0.0.1"}),
        ]:
            async with trio_ws.connect(uri, **options) as ws:
                await assert_echoes(ws)
                assert ws.remote_address == ("127.0.0.1", port)
    assert hosts == ["localhost", "127.0.0.1"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_refused_at_an_ip_address_fails_as_trio_says_for_a_name(host: str) -> None:
    """Connecting to an IP address where nothing listens: the OSError that trio raises for a
    name ("all attempts to connect to ... failed", the refusal as its cause), and no socket
    left open."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if family == socket.AF_INET6 and not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    with socket.socket(family) as bound:  # bound, not listening: connecting is refused
        bound.bind((host, 0))
        port = bound.getsockname()[1]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        with no_leaks(), pytest.raises(OSError) as info:
            async with trio_ws.connect(f"ws://{where}/"):
                pass  # pragma: no cover - never opens
    assert str(info.value) == f"all attempts to connect to {where} failed"
    cause = info.value.__cause__
    assert isinstance(cause, ExceptionGroup)
    [refusal] = cause.exceptions
    assert isinstance(refusal, ConnectionRefusedError)


async def test_cancelled_connecting_to_an_ip_address_leaks_nothing() -> None:
    """Cancelled at the socket's connect (its first checkpoint, the socket made): the socket
    is closed, not left to the garbage collector, and the cancellation is caught by its
    scope."""
    with no_leaks(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with trio.CancelScope() as scope:
            scope.cancel()
            async with trio_ws.connect("ws://127.0.0.1:9/"):
                pass  # pragma: no cover - never opens
        gc.collect()
    assert scope.cancelled_caught
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
