"""trio_ws._proxy: tunnels through real proxies (pproxy, in a subprocess) and scripted ones.

pproxy serves HTTP CONNECT (with and without Basic auth, and over TLS), SOCKS5 and SOCKS4;
the scripted proxies, written here with trio, misbehave on purpose (garbage, silence, an early
close, bytes right behind the answer) or record what the client asked for.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from tests.conftest import open_fds
from trio_ws._proxy import Proxy, open_proxied_stream, parse_proxy, proxy_for
from trio_ws._uri import parse_uri
from trio_ws.exceptions import InvalidProxy, ProxyError

GREETING = b"hello from the server\n"
PING = b"ping through the tunnel"

Script = Callable[[trio.abc.Stream], Awaitable[None]]


# ---------------------------------------------------------------------------------------------
# Helpers: an echo server behind the proxy, scripted proxies, pproxy.


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    """Read exactly ``size`` bytes, never more (so that nothing behind them is consumed)."""
    data = bytearray()
    with trio.fail_after(10):  # a lost byte fails the test instead of hanging it
        while len(data) < size:
            chunk = await stream.receive_some(size - len(data))
            if not chunk:
                raise AssertionError(f"EOF after {bytes(data)!r}, expected {size} bytes")
            data += chunk
    return bytes(data)


async def echo(stream: trio.abc.Stream) -> None:
    """Greet at once (the client has not spoken yet), then echo until EOF."""
    with contextlib.suppress(trio.BrokenResourceError):
        async with stream:
            await stream.send_all(GREETING)
            while data := await stream.receive_some():
                await stream.send_all(data)


async def assert_tunnel_works(stream: trio.abc.Stream) -> None:
    """The greeting the server sent first arrives intact, then an echo makes the round trip."""
    async with stream:
        assert await receive_exactly(stream, len(GREETING)) == GREETING
        await stream.send_all(PING)
        assert await receive_exactly(stream, len(PING)) == PING


@pytest.fixture
async def echo_port(nursery: trio.Nursery) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def scripted_proxy(script: Script) -> AsyncIterator[tuple[int, trio.Event]]:
    """Serve ``script`` on 127.0.0.1; yield the port and an event set once a connection's
    script has ended and its socket is closed."""
    done = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        try:
            with contextlib.suppress(trio.BrokenResourceError):
                async with stream:
                    await script(stream)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(trio.serve_listeners, handler, listeners)
        yield int(listeners[0].socket.getsockname()[1]), done
        nursery.cancel_scope.cancel()


async def read_head(stream: trio.abc.Stream) -> bytes:
    """The HTTP request head, read one byte at a time so that nothing after it is consumed."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = await stream.receive_some(1)
        assert byte, f"EOF inside the request head {head!r}"
        head += byte
    return head


async def wait_for_eof(stream: trio.abc.Stream) -> None:
    while await stream.receive_some():
        pass


def answering(answer: bytes) -> Script:
    """An HTTP proxy that reads the CONNECT head, sends ``answer``, then echoes (or closes)."""

    async def script(stream: trio.abc.Stream) -> None:
        await read_head(stream)
        if answer:
            await stream.send_all(answer)
            while data := await stream.receive_some():
                await stream.send_all(data)

    return script


@dataclass(frozen=True)
class PProxy:
    """The ports of one pproxy process, and the CA that signed its https:// listener's cert."""

    http: int
    http_auth: int
    https: int
    socks5: int
    socks4: int
    ca: trustme.CA


async def _wait_until_listening(process: subprocess.Popen[bytes], ports: list[int]) -> None:
    with trio.fail_after(15):
        for port in ports:
            while True:
                assert process.poll() is None, "pproxy exited at startup"
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    # Polling another process: there is no event to wait on.
                    await trio.sleep(0.02)
                else:
                    await stream.aclose()
                    break


@pytest.fixture(scope="session")
def pproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PProxy]:
    """One pproxy process listening on 127.0.0.1 for every kind of proxy; killed at the end."""
    pytest.importorskip(
        "pproxy", reason="needs pproxy for real proxies: pip install pproxy (the test extra)"
    )
    ca = trustme.CA()
    pem = tmp_path_factory.mktemp("pproxy") / "proxy.pem"
    ca.issue_cert("proxy.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
    sockets = [socket.socket() for _ in range(5)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [int(sock.getsockname()[1]) for sock in sockets]
    for sock in sockets:
        sock.close()
    http, http_auth, https, socks5, socks4 = ports
    command = [
        sys.executable,
        "-m",
        "pproxy",
        "--auth",  # re-authenticate every request, not once per client address
        "0",
        "--ssl",
        str(pem),
        "-l",
        f"http://127.0.0.1:{http}",
        "-l",
        f"http://127.0.0.1:{http_auth}#alice:s3cret",
        "-l",
        f"http+ssl://127.0.0.1:{https}",
        "-l",
        f"socks5://127.0.0.1:{socks5}",
        "-l",
        f"socks4://127.0.0.1:{socks4}",
    ]
    log = Path(pem.parent / "pproxy.log")
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        try:
            trio.run(_wait_until_listening, process, ports)
        except (AssertionError, trio.TooSlowError):
            pytest.fail(f"pproxy did not start: {log.read_text(errors='replace')}")
        yield PProxy(http, http_auth, https, socks5, socks4, ca)
    finally:
        process.kill()  # by PID: only the process this fixture started
        process.wait()


async def open_through(
    url: str,
    host: str,
    port: int,
    *,
    proxy_ssl: ssl.SSLContext | None = None,
    proxy_server_hostname: str | None = None,
) -> trio.abc.Stream:
    return await open_proxied_stream(
        parse_proxy(url),
        host,
        port,
        proxy_ssl=proxy_ssl,
        proxy_server_hostname=proxy_server_hostname,
    )


# ---------------------------------------------------------------------------------------------
# Through pproxy.


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_http_connect_through_pproxy_reaches_the_server(
    pproxy: PProxy, echo_port: int, host: str
) -> None:
    """An http:// proxy's CONNECT tunnel carries bytes both ways, the server's first ones too."""
    stream = await open_through(f"http://127.0.0.1:{pproxy.http}", host, echo_port)
    await assert_tunnel_works(stream)


async def test_http_connect_with_good_credentials_goes_through(
    pproxy: PProxy, echo_port: int
) -> None:
    """Credentials in the proxy URL are sent as Basic Proxy-Authorization, which pproxy
    accepts."""
    url = f"http://alice:s3cret@127.0.0.1:{pproxy.http_auth}"
    await assert_tunnel_works(await open_through(url, "127.0.0.1", echo_port))


@pytest.mark.parametrize("userinfo", ["", "alice:wrong@", "mallory:s3cret@"])
async def test_http_connect_without_good_credentials_fails_with_407(
    pproxy: PProxy, echo_port: int, userinfo: str
) -> None:
    """A proxy that wants credentials and does not get the right ones answers 407; that is a
    ProxyError naming the status, and the socket is closed."""
    fds = open_fds()
    with pytest.raises(ProxyError, match="HTTP 407 Proxy Authentication Required"):
        await open_through(
            f"http://{userinfo}127.0.0.1:{pproxy.http_auth}", "127.0.0.1", echo_port
        )
    assert open_fds() == fds


@pytest.mark.parametrize(
    ("scheme", "host"),
    [
        ("socks5", "localhost"),
        ("socks5h", "localhost"),
        ("socks5", "127.0.0.1"),
        ("socks4", "127.0.0.1"),
    ],
)
async def test_socks_through_pproxy_reaches_the_server(
    pproxy: PProxy, echo_port: int, scheme: str, host: str
) -> None:
    """SOCKS5 (names resolved here or by the proxy) and SOCKS4 tunnels carry bytes both ways."""
    port = pproxy.socks4 if scheme == "socks4" else pproxy.socks5
    stream = await open_through(f"{scheme}://127.0.0.1:{port}", host, echo_port)
    assert isinstance(stream, trio.SocketStream)
    await assert_tunnel_works(stream)


async def test_https_proxy_through_pproxy_reaches_the_server(
    pproxy: PProxy, echo_port: int
) -> None:
    """An https:// proxy is reached over TLS, checked with proxy_ssl against
    proxy_server_hostname (the cert names proxy.test, the URL an address)."""
    context = ssl.create_default_context()
    pproxy.ca.configure_trust(context)
    stream = await open_through(
        f"https://127.0.0.1:{pproxy.https}",
        "127.0.0.1",
        echo_port,
        proxy_ssl=context,
        proxy_server_hostname="proxy.test",
    )
    assert isinstance(stream, trio.SSLStream)
    await assert_tunnel_works(stream)


async def test_tls_to_the_server_runs_inside_tls_to_an_https_proxy(
    pproxy: PProxy, nursery: trio.Nursery
) -> None:
    """wss:// through an https:// proxy is TLS inside TLS: an SSLStream over the tunnel's
    SSLStream reaches a TLS server, whose certificate is checked end to end."""
    server_ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("server.test").configure_cert(server_context)
    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, echo, 0, server_context, host="127.0.0.1")
    )
    proxy_context = ssl.create_default_context()
    pproxy.ca.configure_trust(proxy_context)
    tunnel = await open_through(
        f"https://127.0.0.1:{pproxy.https}",
        "127.0.0.1",
        int(listeners[0].transport_listener.socket.getsockname()[1]),
        proxy_ssl=proxy_context,
        proxy_server_hostname="proxy.test",
    )
    client_context = ssl.create_default_context()
    server_ca.configure_trust(client_context)
    stream = trio.SSLStream(tunnel, client_context, server_hostname="server.test")
    await stream.do_handshake()
    assert stream.getpeercert() is not None
    await assert_tunnel_works(stream)


@pytest.mark.parametrize("trusted", [False, True])
async def test_https_proxy_with_a_certificate_that_does_not_verify_raises_oserror(
    pproxy: PProxy, trusted: bool
) -> None:
    """TLS to the proxy is checked like TLS to a server: an unknown CA, or a certificate for
    another name (no proxy_server_hostname here), is an SSLError (an OSError); no fd stays
    open."""
    context = ssl.create_default_context()
    if trusted:
        pproxy.ca.configure_trust(context)
    fds = open_fds()
    with pytest.raises(ssl.SSLCertVerificationError):
        await open_through(f"https://127.0.0.1:{pproxy.https}", "127.0.0.1", 9, proxy_ssl=context)
    assert open_fds() == fds


async def test_pproxy_closing_because_the_server_is_down_is_a_proxy_error(
    pproxy: PProxy,
) -> None:
    """When the proxy cannot reach the server it gives no tunnel (pproxy just closes): a
    ProxyError, not a stream that dies later."""
    with pytest.raises(ProxyError, match="closed the connection before answering CONNECT"):
        await open_through(f"http://127.0.0.1:{pproxy.http}", "127.0.0.1", closed_port())


# ---------------------------------------------------------------------------------------------
# Scripted HTTP proxies.


async def test_connect_request_names_the_target_and_carries_the_credentials() -> None:
    """The request is ``CONNECT host:port`` (IPv6 in brackets) with the same Host, the
    User-Agent, and the percent-decoded credentials as Basic Proxy-Authorization."""
    heads: list[bytes] = []

    async def record(stream: trio.abc.Stream) -> None:
        heads.append(await read_head(stream))
        await stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")

    async with scripted_proxy(record) as (port, _):
        stream = await open_proxied_stream(
            parse_proxy(f"http://al%40ce:p%3Ass@127.0.0.1:{port}"),
            "::1",
            8443,
            proxy_ssl=None,
            proxy_server_hostname=None,
            user_agent="trio_ws/test",
        )
        await stream.aclose()
    credentials = base64.b64encode(b"al@ce:p:ss").decode()
    assert heads == [
        b"CONNECT [::1]:8443 HTTP/1.1\r\n"
        b"Host: [::1]:8443\r\n"
        b"User-Agent: trio_ws/test\r\n"
        b"Proxy-Authorization: Basic " + credentials.encode() + b"\r\n\r\n"
    ]


async def test_bytes_right_behind_the_proxy_answer_are_not_lost() -> None:
    """The proxy's 200 and the server's first bytes may arrive in one read; those bytes come
    first out of the stream, then the tunnel goes on."""
    answer = b"HTTP/1.1 200 Connection established\r\n\r\n" + GREETING
    async with scripted_proxy(answering(answer)) as (port, _):
        stream = await open_through(f"http://127.0.0.1:{port}", "example.com", 443)
        with trio.fail_after(10):  # a lost greeting fails the test instead of hanging it
            received = (await stream.receive_some(5), await stream.receive_some())
        assert received == (GREETING[:5], GREETING[5:])
        await stream.send_all(PING)
        assert await receive_exactly(stream, len(PING)) == PING
        await stream.aclose()


async def test_interim_responses_before_the_200_are_skipped() -> None:
    """A 1xx before the answer is not the answer."""
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    async with scripted_proxy(answering(answer)) as (port, _):
        stream = await open_through(f"http://127.0.0.1:{port}", "example.com", 443)
        await stream.send_all(PING)
        assert await receive_exactly(stream, len(PING)) == PING
        await stream.aclose()


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", "HTTP 502 Bad Gateway"),
        (b"HTTP/1.0 403 Forbidden\r\n\r\n", "HTTP 403 Forbidden"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "invalid answer to CONNECT"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "invalid answer to CONNECT"),
        (b"HTTP/1.1 200 OK\r\nServer: cut short", "invalid answer to CONNECT"),
        (b"", "closed the connection before answering CONNECT"),
    ],
)
async def test_a_refusal_or_a_broken_answer_is_a_proxy_error_and_leaves_no_open_fd(
    answer: bytes, match: str
) -> None:
    """Any status but 2xx, an answer that is not HTTP, or a close before the end of the head:
    ProxyError, and the socket to the proxy is closed."""

    async def script(stream: trio.abc.Stream) -> None:
        await read_head(stream)
        await stream.send_all(answer)

    async with scripted_proxy(script) as (port, done):
        fds = open_fds()
        with pytest.raises(ProxyError, match=match):
            await open_through(f"http://127.0.0.1:{port}", "example.com", 443)
        await done.wait()
        assert open_fds() == fds


async def test_an_endless_answer_head_is_a_proxy_error() -> None:
    """The answer's head is bounded (h11 stops past 16 KiB plus one read of 16 KiB): a proxy
    cannot make the client buffer without limit."""
    answer = b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"a" * 100_000 + b"\r\n\r\n"
    async with scripted_proxy(answering(answer)) as (port, _):
        with pytest.raises(ProxyError, match="invalid answer"):
            await open_through(f"http://127.0.0.1:{port}", "example.com", 443)


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks4"])
async def test_a_silent_proxy_is_cancelled_at_the_deadline_and_leaves_no_open_fd(
    autojump_clock: trio.testing.MockClock, scheme: str
) -> None:
    """A proxy that accepts and never answers holds the call exactly until the caller's
    deadline (no timeout of the SOCKS library's own); cancelling closes the socket."""
    async with scripted_proxy(wait_for_eof) as (port, done):
        fds = open_fds()
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            # Past python-socks' default timeout of 60 s, which must not apply.
            with trio.fail_after(100):
                await open_through(f"{scheme}://127.0.0.1:{port}", "127.0.0.1", 443)
        assert trio.current_time() == start + 100
        await done.wait()
        assert open_fds() == fds


@pytest.mark.parametrize("scheme", ["http", "https", "socks5", "socks4"])
async def test_a_proxy_that_does_not_listen_raises_oserror(scheme: str) -> None:
    """Failing to reach the proxy is a network error, as for a direct connection: an
    OSError (ConnectionRefusedError from SOCKS, trio's OSError from open_tcp_stream)."""
    fds = open_fds()
    with pytest.raises(OSError) as caught:
        await open_through(f"{scheme}://127.0.0.1:{closed_port()}", "127.0.0.1", 443)
    if scheme.startswith("socks"):
        assert isinstance(caught.value, ConnectionRefusedError)
    assert open_fds() == fds


def test_proxy_ssl_with_a_plain_proxy_is_a_value_error() -> None:
    """proxy_ssl= and proxy_server_hostname= mean TLS to the proxy: only for https://."""
    with pytest.raises(ValueError, match="for an https:// proxy, not a http:// one"):
        trio.run(
            partial(
                open_proxied_stream,
                parse_proxy("http://127.0.0.1:1"),
                "example.com",
                443,
                proxy_ssl=ssl.create_default_context(),
                proxy_server_hostname=None,
            )
        )


# ---------------------------------------------------------------------------------------------
# Scripted SOCKS proxies.


@dataclass
class SocksRequest:
    version: int
    address: bytes  # the IP's bytes, or the name
    by_name: bool
    port: int


def socks_proxy(requests: list[SocksRequest], refuse: bool = False) -> Script:
    """A SOCKS4/4a/5 proxy (no auth) that records the request, then answers success and
    sends the greeting in the same write (or refuses)."""

    async def script(stream: trio.abc.Stream) -> None:
        version = (await receive_exactly(stream, 1))[0]
        if version == 5:
            methods = (await receive_exactly(stream, 1))[0]
            await receive_exactly(stream, methods)
            await stream.send_all(b"\x05\x00")
            atyp = (await receive_exactly(stream, 4))[3]
            if atyp == 3:
                address = await receive_exactly(stream, (await receive_exactly(stream, 1))[0])
            else:
                address = await receive_exactly(stream, 4 if atyp == 1 else 16)
            port = int.from_bytes(await receive_exactly(stream, 2), "big")
            requests.append(SocksRequest(5, address, atyp == 3, port))
            reply = b"\x05\x05" if refuse else b"\x05\x00"
            await stream.send_all(reply + b"\x00\x01" + bytes(6) + GREETING)
        else:
            header = await receive_exactly(stream, 7)
            port, address = int.from_bytes(header[1:3], "big"), header[3:7]
            while (await receive_exactly(stream, 1)) != b"\x00":  # the user id
                pass
            by_name = address[:3] == b"\x00\x00\x00" and address[3] != 0  # SOCKS4a
            if by_name:
                address = b""
                while (byte := await receive_exactly(stream, 1)) != b"\x00":
                    address += byte
            requests.append(SocksRequest(4, address, by_name, port))
            reply = b"\x00\x5b" if refuse else b"\x00\x5a"
            await stream.send_all(reply + bytes(6) + GREETING)
        await wait_for_eof(stream)

    return script


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("socks5", SocksRequest(5, b"\x7f\x00\x00\x01", False, 8765)),
        ("socks5h", SocksRequest(5, b"localhost", True, 8765)),
        ("socks4", SocksRequest(4, b"\x7f\x00\x00\x01", False, 8765)),
        ("socks4a", SocksRequest(4, b"localhost", True, 8765)),
    ],
)
async def test_socks5h_and_socks4a_let_the_proxy_resolve_socks5_and_socks4_resolve_here(
    scheme: str, expected: SocksRequest
) -> None:
    """socks5h and socks4a send the host name; socks5 and socks4 send the address it resolves
    to here. Bytes right behind the SOCKS reply are the tunnel's: none is lost."""
    requests: list[SocksRequest] = []
    async with scripted_proxy(socks_proxy(requests)) as (port, _):
        stream = await open_through(f"{scheme}://127.0.0.1:{port}", "localhost", 8765)
        async with stream:
            assert await receive_exactly(stream, len(GREETING)) == GREETING
    assert requests == [expected]


async def test_socks5_resolves_here_so_an_unknown_name_is_a_dns_error() -> None:
    """With socks5 (not socks5h) a name that does not resolve fails here, as a direct
    connection would: socket.gaierror, an OSError."""
    requests: list[SocksRequest] = []
    async with scripted_proxy(socks_proxy(requests)) as (port, done):
        fds = open_fds()
        with pytest.raises(socket.gaierror):
            await open_through(f"socks5://127.0.0.1:{port}", "no-such-host.invalid", 443)
        await done.wait()
        assert open_fds() == fds
    assert requests == []


@pytest.mark.parametrize("scheme", ["socks5h", "socks4a"])
async def test_a_socks_refusal_is_a_proxy_error_and_leaves_no_open_fd(scheme: str) -> None:
    """A SOCKS error reply (connection refused by the target, request rejected) is a
    ProxyError naming the proxy, and the socket is closed."""
    async with scripted_proxy(socks_proxy([], refuse=True)) as (port, done):
        fds = open_fds()
        with pytest.raises(ProxyError, match=f"SOCKS proxy {scheme}://127.0.0.1:{port}"):
            await open_through(f"{scheme}://127.0.0.1:{port}", "example.com", 443)
        await done.wait()
        assert open_fds() == fds


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"])
async def test_a_socks_proxy_that_closes_or_speaks_http_is_a_proxy_error(answer: bytes) -> None:
    async def script(stream: trio.abc.Stream) -> None:
        await stream.receive_some(1024)
        await stream.send_all(answer)

    async with scripted_proxy(script) as (port, _):
        with pytest.raises(ProxyError, match="refused the tunnel"):
            await open_through(f"socks5h://127.0.0.1:{port}", "example.com", 443)


async def test_socks_without_python_socks_is_an_invalid_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """python-socks is the optional socks extra; without it a SOCKS proxy is refused, with the
    command that installs it."""
    monkeypatch.setitem(sys.modules, "python_socks", None)
    with pytest.raises(InvalidProxy, match=r"pip install 'trio-ws\[socks\]'") as caught:
        await open_through("socks5h://127.0.0.1:1080", "example.com", 443)
    assert caught.value.proxy == "socks5h://127.0.0.1:1080"


# ---------------------------------------------------------------------------------------------
# proxy_for: the option and the environment.


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable from the machine running the tests."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "REQUEST_METHOD":
            monkeypatch.delenv(name)
    return monkeypatch


def test_proxy_for_an_explicit_proxy_or_none_ignores_the_environment(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setenv("https_proxy", "http://from-env:3128")
    uri = parse_uri("wss://example.com/")
    assert proxy_for(uri, None) is None
    assert proxy_for(uri, "socks5h://mine:1080") == "socks5h://mine:1080"
    assert proxy_for(uri, True) == "http://from-env:3128"


def test_proxy_for_rejects_what_is_not_a_url_true_or_none() -> None:
    with pytest.raises(TypeError, match="proxy must be a URL, True or None, not False"):
        proxy_for(parse_uri("ws://example.com/"), False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "uri", "expected"),
    [
        ({}, "wss://example.com/", None),
        ({"https_proxy": "http://s:1"}, "wss://example.com/", "http://s:1"),
        ({"HTTPS_PROXY": "http://S:1"}, "wss://example.com/", "http://S:1"),
        (
            {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://UP:1"},
            "wss://e.com/",
            "http://low:1",
        ),
        ({"http_proxy": "http://h:1"}, "wss://example.com/", None),
        ({"http_proxy": "http://h:1"}, "ws://example.com/", "http://h:1"),
        ({"HTTP_PROXY": "http://H:1"}, "ws://example.com/", "http://H:1"),
        # As websockets: ws:// prefers the proxy configured for HTTPS (RFC 6455 §4.1).
        ({"http_proxy": "http://h:1", "https_proxy": "http://s:1"}, "ws://e.com/", "http://s:1"),
        ({"all_proxy": "socks5h://a:1"}, "wss://example.com/", "socks5h://a:1"),
        ({"ALL_PROXY": "socks5h://A:1"}, "ws://example.com/", "socks5h://A:1"),
        (
            {"all_proxy": "socks5h://a:1", "https_proxy": "http://s:1"},
            "wss://e.com/",
            "http://s:1",
        ),
        (
            {"socks_proxy": "socks5://k:1", "https_proxy": "http://s:1"},
            "wss://e.com/",
            "socks5://k:1",
        ),
        ({"wss_proxy": "http://w:1", "https_proxy": "http://s:1"}, "wss://e.com/", "http://w:1"),
        ({"ws_proxy": "http://w:1", "http_proxy": "http://h:1"}, "ws://e.com/", "http://w:1"),
        ({"wss_proxy": "http://w:1"}, "ws://example.com/", None),
    ],
)
def test_proxy_for_true_reads_the_environment_by_scheme(
    environ: pytest.MonkeyPatch, env: dict[str, str], uri: str, expected: str | None
) -> None:
    for name, value in env.items():
        environ.setenv(name, value)
    assert proxy_for(parse_uri(uri), True) == expected


@pytest.mark.parametrize(
    ("no_proxy", "uri", "bypassed"),
    [
        ("example.com", "wss://example.com/", True),
        ("example.com", "wss://chat.example.com/", True),  # a domain covers its subdomains
        (".example.com", "wss://chat.example.com/", True),
        ("example.com", "wss://notexample.com/", False),
        ("other.org, example.com", "wss://example.com/", True),
        ("EXAMPLE.com", "wss://example.com/", True),
        ("example.com:8443", "wss://example.com:8443/", True),
        ("example.com:8443", "wss://example.com/", False),  # port 443, not 8443
        ("*", "wss://anything.example/", True),
        ("127.0.0.1", "wss://127.0.0.1:9000/", True),
        ("::1", "wss://[::1]:9000/", True),
    ],
)
@pytest.mark.parametrize("name", ["no_proxy", "NO_PROXY"])
def test_proxy_for_true_honours_no_proxy(
    environ: pytest.MonkeyPatch, name: str, no_proxy: str, uri: str, bypassed: bool
) -> None:
    environ.setenv("https_proxy", "http://proxy:3128")
    environ.setenv(name, no_proxy)
    assert proxy_for(parse_uri(uri), True) == (None if bypassed else "http://proxy:3128")


# ---------------------------------------------------------------------------------------------
# parse_proxy.


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://proxy:3128", Proxy("http", "proxy", 3128)),
        ("http://proxy", Proxy("http", "proxy", 80)),
        ("https://proxy/", Proxy("https", "proxy", 443)),
        ("socks5://proxy", Proxy("socks5", "proxy", 1080)),
        ("socks5h://Proxy.Example", Proxy("socks5h", "proxy.example", 1080)),
        ("socks4://proxy:9050", Proxy("socks4", "proxy", 9050)),
        ("socks4a://userid@proxy", Proxy("socks4a", "proxy", 1080, "userid")),
        ("HTTP://[::1]:3128", Proxy("http", "::1", 3128)),
        ("http://al%40ce:p%3As%20s@proxy", Proxy("http", "proxy", 80, "al@ce", "p:s s")),
        ("http://alice:@proxy", Proxy("http", "proxy", 80, "alice", "")),
        ("http://bücher.example", Proxy("http", "xn--bcher-kva.example", 80)),
    ],
)
def test_parse_proxy(url: str, expected: Proxy) -> None:
    assert parse_proxy(url) == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://proxy", "proxy scheme 'ftp' is not supported"),
        ("proxy:3128", "proxy scheme 'proxy' is not supported"),
        ("//proxy:3128", "proxy scheme '' is not supported"),
        ("http://", "has no host"),
        ("http://:3128", "has no host"),
        ("http://proxy:99999", "not valid"),
        ("http://proxy:port", "not valid"),
        ("http://[::1", "not valid"),
        ("http://proxy:0", "port 0"),
        ("http://proxy/path", "no path, query or fragment"),
        ("http://proxy/?q=1", "no path, query or fragment"),
        ("http://proxy/#", "no path, query or fragment"),
        ("http://alice@proxy", "a user name but no password"),
        ("http://alice:%ff@proxy", "not UTF-8"),
        ("http://pro xy:3128", "whitespace or a control character"),
        ("http://proxy\n:3128", "whitespace or a control character"),
    ],
)
def test_parse_proxy_rejects_what_it_cannot_use(url: str, why: str) -> None:
    """InvalidProxy (a ValueError) carries the URL and says why."""
    with pytest.raises(InvalidProxy) as caught:
        parse_proxy(url)
    assert caught.value.proxy == url
    assert why in caught.value.msg
    assert isinstance(caught.value, ValueError)


def test_a_proxy_repr_does_not_show_the_password() -> None:
    assert "s3cret" not in repr(parse_proxy("http://alice:s3cret@proxy"))
