"""connect(): the client over real sockets on 127.0.0.1 (and ::1), against trio_ws.serve and
against hand-written TCP servers that misbehave on purpose."""

from __future__ import annotations

import base64
import errno
import gc
import hashlib
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_ws
from tests.conftest import open_fds
from trio_ws.client import DEFAULT_USER_AGENT
from trio_ws.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from trio_ws.server import DEFAULT_SERVER_HEADER, ServerConnection

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# -- helpers ---------------------------------------------------------------------------------


def live_tasks() -> int:
    """How many tasks this trio run has, system tasks included."""
    root = trio.lowlevel.current_root_task()
    assert root is not None

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    return count(root)


@contextmanager
def no_leaks() -> Iterator[None]:
    """Assert that the block leaves as many open fds and live tasks as it found.

    Garbage from earlier tests is collected first, so that a socket it holds cannot close
    during the block and pass for one the block closed.
    """
    gc.collect()
    fds, tasks = open_fds(), live_tasks()
    yield
    assert open_fds() == fds
    assert live_tasks() == tasks


class EchoHandler:
    """A trio_ws.serve handler that echoes, and records what the server side saw."""

    def __init__(self) -> None:
        self.connections: list[ServerConnection] = []
        self.closed_with: ConnectionClosed | None = None
        self.done = trio.Event()

    async def __call__(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        try:
            while True:
                await ws.send(await ws.recv())
        except ConnectionClosed as exc:
            self.closed_with = exc
        finally:
            self.done.set()

    @property
    def connection(self) -> ServerConnection:
        [ws] = self.connections
        return ws


@asynccontextmanager
async def ws_server(
    handler: Callable[[ServerConnection], Awaitable[None]], host: str = "127.0.0.1", **options: Any
) -> AsyncIterator[int]:
    """Run trio_ws.serve on ``host``, port 0 (keepalive off unless asked); yield its port;
    stop it on exit."""
    options.setdefault("ping_interval", None)
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(
            partial(trio_ws.serve, handler, host, 0, **options)
        )
        yield server.port
        server.cancel_scope.cancel()


@asynccontextmanager
async def tcp_server(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    """Run a plain trio TCP server on 127.0.0.1, port 0; yield its port; stop it on exit."""
    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def read_request(stream: trio.abc.ReceiveStream) -> bytes:
    """Read an HTTP request head, up to and including the blank line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, "the client closed before finishing its request"
        data += chunk
    return data


def accept_value(request: bytes) -> bytes:
    """The Sec-WebSocket-Accept value that answers ``request`` (RFC 6455 §4.2.2)."""
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return base64.b64encode(hashlib.sha1(value.strip() + _GUID).digest())
    raise AssertionError("no Sec-WebSocket-Key in the request")


def switching_protocols(request: bytes) -> bytes:
    """A minimal, valid 101 answer to ``request`` (no extension, no subprotocol)."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_value(request) + b"\r\n\r\n"
    )


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- the happy path --------------------------------------------------------------------------
# Assertions about what happened inside a connect() block are made after it: an exception that
# connect() failed to propagate could otherwise hide a failed assertion.


async def test_echo_round_trip_text_and_bytes() -> None:
    """Messages go out and come back unchanged and with their type: str stays str."""
    handler = EchoHandler()
    async with ws_server(handler) as port, trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send("hello")
        text = await ws.recv()
        await ws.send(b"\x00\xff" * 1000)
        data = await ws.recv()
    assert text == "hello"
    assert data == b"\x00\xff" * 1000


async def test_exit_closes_with_1000_and_releases_the_socket() -> None:
    """Leaving the block normally runs the closing handshake with 1000, and the socket is
    closed (fd count back where it was) by the time the block has exited."""
    handler = EchoHandler()
    async with ws_server(handler) as port:
        fds_before = open_fds()
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
            state_inside, code_inside = ws.state, ws.close_code
            fds_inside = open_fds()
        # RFC 6455 §7.1.1: the client waits for the server to close TCP first, so both are.
        fds_after = open_fds()
        await handler.done.wait()
    assert (state_inside, code_inside) == (trio_ws.State.OPEN, None)
    assert fds_inside == fds_before + 2  # the client's socket and the server's
    assert fds_after == fds_before
    assert ws.state is trio_ws.State.CLOSED
    assert (ws.close_code, ws.close_reason) == (1000, "")
    assert isinstance(handler.closed_with, ConnectionClosedOK)
    assert handler.connection.close_code == 1000


async def test_exit_leaves_no_task_and_no_fd_behind() -> None:
    """Once the block and the server have exited, the run has the tasks and fds it had."""
    with no_leaks():
        async with (
            ws_server(EchoHandler()) as port,
            trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws,
        ):
            await ws.send("x")
            await ws.recv()
    assert ws.close_code == 1000


async def test_response_is_the_servers_101() -> None:
    """ws.response is the server's answer: status 101 with its Server header, no body."""
    handler = EchoHandler()
    async with ws_server(handler) as port, trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        pass
    assert ws.response.status_code == 101
    assert ws.response.headers["Server"] == DEFAULT_SERVER_HEADER
    assert ws.response.body == b""


async def test_request_carries_path_query_and_host_header() -> None:
    """The server sees the URI's resource name and a Host header with the explicit port;
    ws.request on the client is the request that was sent."""
    handler = EchoHandler()
    async with (
        ws_server(handler) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/chat?room=1") as ws,
    ):
        pass
    host = f"127.0.0.1:{port}"
    assert handler.connection.request.path == "/chat?room=1"
    assert handler.connection.request.headers["Host"] == host
    assert ws.request.path == "/chat?room=1"
    assert ws.request.headers["Host"] == host


async def test_local_and_remote_addresses_match_the_servers_view() -> None:
    """remote_address is the server's (host, port); local_address is what the server sees as
    its peer's address."""
    handler = EchoHandler()
    async with ws_server(handler) as port, trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        pass
    assert ws.remote_address == ("127.0.0.1", port)
    assert ws.local_address is not None
    assert ws.local_address == handler.connection.remote_address
    assert ws.remote_address == handler.connection.local_address


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_connect_over_ipv6_loopback() -> None:
    """ws://[::1]:port/ connects over IPv6; the server sees Host: [::1]:port."""
    handler = EchoHandler()
    with no_leaks():
        async with (
            ws_server(handler, host="::1") as port,
            trio_ws.connect(f"ws://[::1]:{port}/") as ws,
        ):
            await ws.send("six")
            echoed = await ws.recv()
    assert echoed == "six"
    assert ws.remote_address is not None
    assert ws.remote_address[:2] == ("::1", port)
    assert len(ws.remote_address) == 4  # (host, port, flowinfo, scope_id)
    assert handler.connection.request.headers["Host"] == f"[::1]:{port}"
    assert ws.close_code == 1000


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        (["chat.v1", "chat.v2"], ["chat.v2", "chat.v1"], "chat.v2"),
        (["chat.v1"], ["chat.v2", "chat.v1"], "chat.v1"),
        (["chat.v3"], ["chat.v2", "chat.v1"], None),
        (None, ["chat.v2"], None),
        (["chat.v1"], None, None),
    ],
)
async def test_subprotocol_negotiation(
    offered: list[str] | None, supported: list[str] | None, chosen: str | None
) -> None:
    """Both sides agree on the server's most preferred subprotocol that the client offered,
    or on none; the client's offer reaches the server."""
    handler = EchoHandler()
    async with (
        ws_server(handler, subprotocols=supported) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/", subprotocols=offered) as ws,
    ):
        pass
    assert ws.subprotocol == chosen
    assert handler.connection.subprotocol == chosen
    assert ws.response.headers.get("Sec-WebSocket-Protocol") == chosen
    sent = handler.connection.request.headers.get("Sec-WebSocket-Protocol")
    assert sent == (", ".join(offered) if offered else None)


async def test_additional_headers_and_user_agent_reach_the_server() -> None:
    """additional_headers are sent as given, repeated names included; user_agent sets the
    User-Agent header."""
    handler = EchoHandler()
    async with (
        ws_server(handler) as port,
        trio_ws.connect(
            f"ws://127.0.0.1:{port}/",
            additional_headers=[("X-Token", "abc"), ("X-Tag", "1"), ("X-Tag", "2")],
            user_agent_header="test-agent/1.0",
        ),
    ):
        pass
    headers = handler.connection.request.headers
    assert headers["X-Token"] == "abc"
    assert headers.get_all("X-Tag") == ["1", "2"]
    assert headers.get_all("User-Agent") == ["test-agent/1.0"]


async def test_default_user_agent_names_trio_ws() -> None:
    """Without user_agent, the client sends User-Agent: trio_ws/<version>."""
    handler = EchoHandler()
    async with ws_server(handler) as port, trio_ws.connect(f"ws://127.0.0.1:{port}/"):
        pass
    assert handler.connection.request.headers.get_all("User-Agent") == [DEFAULT_USER_AGENT]
    assert f"trio_ws/{trio_ws.__version__}" == DEFAULT_USER_AGENT


async def test_user_agent_none_sends_no_user_agent() -> None:
    """user_agent_header=None leaves the header out entirely."""
    handler = EchoHandler()
    async with (
        ws_server(handler) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/", user_agent_header=None),
    ):
        pass
    assert "User-Agent" not in handler.connection.request.headers


async def test_user_agent_in_additional_headers_wins_over_user_agent() -> None:
    """A User-Agent given in additional_headers (any case) is sent once, instead of
    user_agent's."""
    handler = EchoHandler()
    async with (
        ws_server(handler) as port,
        trio_ws.connect(
            f"ws://127.0.0.1:{port}/",
            additional_headers={"user-agent": "mine/2"},
            user_agent_header="theirs/1",
        ),
    ):
        pass
    assert handler.connection.request.headers.get_all("User-Agent") == ["mine/2"]


async def test_compression_is_negotiated_by_default_and_carries_messages() -> None:
    """By default permessage-deflate is offered and accepted; large messages of both kinds
    survive the round trip compressed."""
    handler = EchoHandler()
    text, data = "compress me " * 20_000, bytes(range(256)) * 1000
    async with ws_server(handler) as port, trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send(text)
        text_back = await ws.recv()
        await ws.send(data)
        data_back = await ws.recv()
    assert text_back == text
    assert data_back == data
    offer = handler.connection.request.headers["Sec-WebSocket-Extensions"]
    assert offer.startswith("permessage-deflate")
    answer = handler.connection.response.headers["Sec-WebSocket-Extensions"]
    assert answer.startswith("permessage-deflate")


async def test_compression_none_offers_no_extension() -> None:
    """compression=None sends no Sec-WebSocket-Extensions, and messages still flow."""
    handler = EchoHandler()
    async with (
        ws_server(handler) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/", compression=None) as ws,
    ):
        await ws.send("plain " * 1000)
        echoed = await ws.recv()
    assert echoed == "plain " * 1000
    assert "Sec-WebSocket-Extensions" not in handler.connection.request.headers
    assert "Sec-WebSocket-Extensions" not in handler.connection.response.headers


async def test_server_refusing_compression_leaves_it_off() -> None:
    """When the server does not accept permessage-deflate, the connection works without it."""
    handler = EchoHandler()
    async with (
        ws_server(handler, compression=None) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws,
    ):
        await ws.send("x" * 10_000)
        echoed = await ws.recv()
    assert echoed == "x" * 10_000
    assert "Sec-WebSocket-Extensions" in handler.connection.request.headers
    assert "Sec-WebSocket-Extensions" not in handler.connection.response.headers


async def test_invalid_options_are_rejected_before_any_socket_is_opened() -> None:
    """A bad URI, ssl= with ws://, or an unknown compression fail at once, opening nothing."""
    context = ssl.create_default_context()
    with no_leaks():
        with pytest.raises(InvalidURI):
            async with trio_ws.connect("http://127.0.0.1:1/"):
                pass  # pragma: no cover
        with pytest.raises(ValueError, match="wss://"):
            async with trio_ws.connect("ws://127.0.0.1:1/", ssl=context):
                pass  # pragma: no cover
        with pytest.raises(ValueError, match="compression"):
            async with trio_ws.connect("ws://127.0.0.1:1/", compression="gzip"):
                pass  # pragma: no cover


# -- TLS -------------------------------------------------------------------------------------


async def test_wss_round_trip_with_a_trusted_certificate(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """wss:// runs the WebSocket over TLS: messages flow, addresses are the TCP ones, and
    exiting closes with 1000 and leaves no socket."""
    handler = EchoHandler()
    with no_leaks():
        async with ws_server(handler, ssl=server_context) as port:
            uri = f"wss://127.0.0.1:{port}/secure"
            async with trio_ws.connect(uri, ssl=client_context) as ws:
                await ws.send("over tls")
                echoed = await ws.recv()
    assert echoed == "over tls"
    assert ws.remote_address == ("127.0.0.1", port)
    assert handler.connection.request.path == "/secure"
    assert ws.close_code == 1000


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_wss_over_ipv6_checks_the_certificate_against_the_address(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """wss://[::1]:port/ verifies the certificate's IP address entry for ::1."""
    with no_leaks():
        async with (
            ws_server(EchoHandler(), host="::1", ssl=server_context) as port,
            trio_ws.connect(f"wss://[::1]:{port}/", ssl=client_context) as ws,
        ):
            await ws.send("six over tls")
            echoed = await ws.recv()
    assert echoed == "six over tls"
    assert ws.close_code == 1000


async def test_wss_with_an_untrusted_certificate_raises_ssl_verification_error(
    server_context: ssl.SSLContext,
) -> None:
    """A certificate from a CA the client does not trust fails as a plain
    ssl.SSLCertVerificationError (an OSError), not a group or a BrokenResourceError."""
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)
    with no_leaks():
        async with ws_server(EchoHandler(), ssl=server_context) as port:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                async with trio_ws.connect(f"wss://127.0.0.1:{port}/", ssl=other):
                    pass  # pragma: no cover
    assert isinstance(info.value, OSError)
    assert "certificate verify failed" in str(info.value)


async def test_wss_checks_the_host_name_against_the_certificate(ca: trustme.CA) -> None:
    """A trusted certificate for another name is refused with SSLCertVerificationError."""
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("elsewhere.example").configure_cert(server_side)
    client_side = ssl.create_default_context()
    ca.configure_trust(client_side)
    with no_leaks():
        async with ws_server(EchoHandler(), ssl=server_side) as port:
            with pytest.raises(ssl.SSLCertVerificationError):
                async with trio_ws.connect(f"wss://127.0.0.1:{port}/", ssl=client_side):
                    pass  # pragma: no cover


async def test_wss_without_ssl_verifies_against_the_default_trust_store(
    server_context: ssl.SSLContext,
) -> None:
    """ssl=None means ssl.create_default_context(): a private CA is not trusted."""
    async with ws_server(EchoHandler(), ssl=server_context) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            async with trio_ws.connect(f"wss://127.0.0.1:{port}/"):
                pass  # pragma: no cover


async def test_wss_to_a_plain_http_server_raises_oserror() -> None:
    """A TLS handshake answered in plain text fails as an ssl.SSLError (an OSError)."""

    async def plain_http(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await stream.receive_some(65536)

    with no_leaks():
        async with tcp_server(plain_http) as port:
            with pytest.raises(ssl.SSLError):
                async with trio_ws.connect(f"wss://127.0.0.1:{port}/"):
                    pass  # pragma: no cover


# -- failures to connect ---------------------------------------------------------------------


async def test_connection_refused_raises_oserror() -> None:
    """Nothing listening: connect() raises OSError at once, never a group or a hang."""
    with socket.socket() as unused:  # bound but not listening: a port sure to refuse
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        with no_leaks(), pytest.raises(OSError) as info:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                pass  # pragma: no cover
    assert not isinstance(info.value, trio_ws.WebSocketError)


async def test_http_404_raises_invalid_status_with_the_response() -> None:
    """A non-101 answer raises InvalidStatus carrying the status, headers and body."""

    async def not_found(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(
            b"HTTP/1.1 404 Not Found\r\n"
            b"Content-Type: text/plain\r\n"
            b"X-Reason: nobody home\r\n"
            b"Content-Length: 10\r\n\r\n"
            b"not found\n"
        )
        await stream.receive_some(65536)  # until the client closes

    with no_leaks():
        async with tcp_server(not_found) as port:
            with pytest.raises(InvalidStatus) as info:
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/missing"):
                    pass  # pragma: no cover
    response = info.value.response
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "text/plain"
    assert response.headers["X-Reason"] == "nobody home"
    assert response.body == b"not found\n"
    assert "404" in str(info.value)


async def test_rejection_whose_body_ends_with_the_connection_keeps_the_body() -> None:
    """A rejection without Content-Length ends at EOF; its body still reaches InvalidStatus."""

    async def forbidden(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\ngo away")
        await stream.aclose()

    with no_leaks():
        async with tcp_server(forbidden) as port:
            with pytest.raises(InvalidStatus) as info:
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                    pass  # pragma: no cover
    assert info.value.response.status_code == 403
    assert info.value.response.body == b"go away"


@pytest.mark.parametrize(
    "sent_first",
    [b"", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"],
    ids=["nothing", "half a response"],
)
async def test_server_closing_during_the_handshake_raises_invalid_handshake(
    sent_first: bytes,
) -> None:
    """EOF before the response is complete is an InvalidHandshake, promptly."""

    async def hang_up(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(sent_first)
        await stream.aclose()

    with no_leaks():
        async with tcp_server(hang_up) as port:
            with pytest.raises(InvalidHandshake, match="closed the connection"):
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                    pass  # pragma: no cover


async def test_server_resetting_during_the_handshake_raises_invalid_handshake() -> None:
    """A TCP reset during the handshake is an InvalidHandshake, not a BrokenResourceError."""

    async def reset(stream: trio.SocketStream) -> None:
        await read_request(stream)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    with no_leaks():
        async with tcp_server(reset) as port:
            with pytest.raises(InvalidHandshake) as info:
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                    pass  # pragma: no cover
    assert isinstance(info.value.__cause__, trio.BrokenResourceError)


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc Oops\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nX-Filler: " + b"x" * 20_000,
    ],
    ids=["not http", "bad status", "binary", "endless header"],
)
async def test_server_sending_garbage_raises_invalid_handshake(garbage: bytes) -> None:
    """A response that is not HTTP (or whose head never ends within the limit) fails promptly
    with InvalidHandshake while the server keeps the connection open."""

    async def babble(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(garbage)
        await stream.receive_some(65536)  # until the client closes

    with no_leaks():
        async with tcp_server(babble) as port:
            with pytest.raises(InvalidHandshake):
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                    pass  # pragma: no cover


def _bad_accept(request: bytes) -> bytes:
    return switching_protocols(request).replace(accept_value(request), b"AAAA" * 7)


def _no_accept(request: bytes) -> bytes:
    head = switching_protocols(request).split(b"\r\n")
    return b"\r\n".join(line for line in head if not line.startswith(b"Sec-WebSocket-Accept"))


def _no_upgrade(request: bytes) -> bytes:
    return switching_protocols(request).replace(b"Upgrade: websocket\r\n", b"")


def _no_connection_upgrade(request: bytes) -> bytes:
    return switching_protocols(request).replace(b"Connection: Upgrade\r\n", b"")


def _two_accepts(request: bytes) -> bytes:
    accept = b"Sec-WebSocket-Accept: " + accept_value(request) + b"\r\n"
    return switching_protocols(request)[:-2] + accept + b"\r\n"


def _unoffered_subprotocol(request: bytes) -> bytes:
    return switching_protocols(request)[:-2] + b"Sec-WebSocket-Protocol: chat\r\n\r\n"


def _unoffered_extension(request: bytes) -> bytes:
    return switching_protocols(request)[:-2] + b"Sec-WebSocket-Extensions: x-custom\r\n\r\n"


@pytest.mark.parametrize(
    "answer",
    [
        _bad_accept,
        _no_accept,
        _two_accepts,
        _no_upgrade,
        _no_connection_upgrade,
        _unoffered_subprotocol,
        _unoffered_extension,
    ],
    ids=[
        "bad accept",
        "no accept",
        "two accepts",
        "no upgrade",
        "no connection upgrade",
        "unoffered subprotocol",
        "unoffered extension",
    ],
)
async def test_invalid_101_raises_invalid_handshake(answer: Callable[[bytes], bytes]) -> None:
    """A 101 that breaks RFC 6455 §4.2.2 (wrong, missing or repeated Sec-WebSocket-Accept,
    missing Upgrade or Connection: Upgrade, a subprotocol or extension the client never
    offered) is refused with InvalidHandshake."""

    async def liar(stream: trio.SocketStream) -> None:
        await stream.send_all(answer(await read_request(stream)))
        await stream.receive_some(65536)  # until the client closes

    with no_leaks():
        async with tcp_server(liar) as port:
            with pytest.raises(InvalidHandshake) as info:
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/", compression=None):
                    pass  # pragma: no cover
    assert not isinstance(info.value, InvalidStatus)


async def test_reset_right_after_the_101_leaves_no_open_fd() -> None:
    """A server that answers 101 and resets at once: whether connect() fails (the socket's
    addresses can no longer be read) or opens a connection that is already lost, no socket
    stays open."""
    outcome: BaseException | None = None
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]

        async def answer_then_reset() -> None:
            await trio.lowlevel.wait_readable(listener)
            conn, _ = listener.accept()
            with conn:
                conn.setblocking(False)
                request = b""
                while b"\r\n\r\n" not in request:
                    await trio.lowlevel.wait_readable(conn)
                    request += conn.recv(65536)
                # No checkpoint between: the client reads the 101 after the reset arrived.
                conn.send(switching_protocols(request))
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        with no_leaks():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_then_reset)
                try:
                    async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
                        await ws.recv()
                except (OSError, ConnectionClosedError) as exc:
                    outcome = exc
    if isinstance(outcome, ConnectionClosedError):
        assert outcome.code == 1006
    else:
        assert isinstance(outcome, OSError)
        assert outcome.errno == errno.ENOTCONN


# -- open_timeout ----------------------------------------------------------------------------


async def _never_answer(stream: trio.SocketStream) -> None:
    """Accept TCP, read whatever comes, never say a word."""
    while await stream.receive_some(65536):
        pass


only_linux = pytest.mark.skipif(
    sys.platform != "linux", reason="relies on Linux dropping SYNs when the listen queue is full"
)


@contextmanager
def full_listener() -> Iterator[int]:
    """A port whose listen queue is full: a TCP connect to it hangs in SYN_SENT."""
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # Linux queues one connection, then drops SYNs
        queued.connect(listener.getsockname())
        yield listener.getsockname()[1]


async def test_silent_server_raises_timeout_error_after_exactly_open_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that accepts TCP and never answers: TimeoutError at open_timeout, no leak."""
    with no_leaks():
        async with tcp_server(_never_answer) as port:
            start = trio.current_time()
            with pytest.raises(TimeoutError, match="open_timeout=5"):
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/", open_timeout=5):
                    pass  # pragma: no cover
            assert trio.current_time() == start + 5


async def test_open_timeout_bounds_the_whole_handshake_not_each_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that answers one byte every 3 s never resets the clock: TimeoutError at 5 s."""

    async def dribble(stream: trio.SocketStream) -> None:
        await read_request(stream)
        for byte in b"HTTP/1.1 101 Switching Protocols\r\n":
            await stream.send_all(bytes([byte]))
            await trio.sleep(3)  # the server's pace, in virtual time
        await _never_answer(stream)

    with no_leaks():
        async with tcp_server(dribble) as port:
            start = trio.current_time()
            with pytest.raises(TimeoutError):
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/", open_timeout=5):
                    pass  # pragma: no cover
            assert trio.current_time() == start + 5


async def test_open_timeout_covers_the_tls_handshake(
    autojump_clock: trio.testing.MockClock, client_context: ssl.SSLContext
) -> None:
    """wss:// to a server that never speaks TLS: TimeoutError at open_timeout, no leak."""
    with no_leaks():
        async with tcp_server(_never_answer) as port:
            start = trio.current_time()
            with pytest.raises(TimeoutError):
                async with trio_ws.connect(
                    f"wss://127.0.0.1:{port}/", ssl=client_context, open_timeout=4
                ):
                    pass  # pragma: no cover
            assert trio.current_time() == start + 4


@only_linux
async def test_open_timeout_covers_the_tcp_connect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A TCP connect that never completes: TimeoutError at open_timeout, no leak."""
    with full_listener() as port, no_leaks():
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/", open_timeout=3):
                pass  # pragma: no cover
        assert trio.current_time() == start + 3


async def test_open_timeout_none_waits_as_long_as_it_takes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """open_timeout=None: still waiting after 10,000 s, until the caller gives up."""
    with no_leaks():
        async with tcp_server(_never_answer) as port:
            start = trio.current_time()
            with trio.move_on_after(10_000) as scope:
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/", open_timeout=None):
                    pass  # pragma: no cover
            assert scope.cancelled_caught
            assert trio.current_time() == start + 10_000


# -- cancellation ----------------------------------------------------------------------------


@only_linux
async def test_cancel_during_tcp_connect_leaves_no_open_fd(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled while TCP connects: the attempt's socket is closed, nothing keeps running."""
    with full_listener() as port, no_leaks():
        with trio.move_on_after(1) as scope:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                pass  # pragma: no cover
        assert scope.cancelled_caught
        assert trio.current_time() == 1


async def test_cancel_during_opening_handshake_leaves_no_open_fd(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled while waiting for the 101: the socket is closed, nothing keeps running."""
    with no_leaks():
        async with tcp_server(_never_answer) as port:
            start = trio.current_time()
            with trio.move_on_after(1) as scope:
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                    pass  # pragma: no cover
            assert scope.cancelled_caught
            assert trio.current_time() == start + 1


async def test_cancel_during_tls_handshake_leaves_no_open_fd(
    autojump_clock: trio.testing.MockClock, client_context: ssl.SSLContext
) -> None:
    """Cancelled in the middle of the TLS handshake: the socket is closed at once."""
    with no_leaks():
        async with tcp_server(_never_answer) as port:
            start = trio.current_time()
            with trio.move_on_after(1) as scope:
                async with trio_ws.connect(f"wss://127.0.0.1:{port}/", ssl=client_context):
                    pass  # pragma: no cover
            assert scope.cancelled_caught
            assert trio.current_time() == start + 1


async def test_cancelled_body_closes_with_1001_and_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling the body while it waits in recv() sends a close frame with 1001: the
    server's handler sees 1001 (not 1006), and no task or fd is left."""
    handler = EchoHandler()
    with no_leaks():
        async with ws_server(handler) as port:
            with trio.move_on_after(1) as scope:
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
                    await ws.recv()
            await handler.done.wait()
    assert scope.cancelled_caught
    assert ws.state is trio_ws.State.CLOSED
    assert ws.close_code == 1001
    assert isinstance(handler.closed_with, ConnectionClosedOK)
    assert handler.closed_with.code == 1001
    assert handler.connection.close_code == 1001


async def test_body_cancelled_by_an_enclosing_scope_closes_with_1001(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A body cancelled by an enclosing scope (not a timeout) also closes with 1001: the
    closing handshake runs shielded."""
    handler = EchoHandler()
    async with ws_server(handler) as port:
        with trio.CancelScope() as scope:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send("ping")
                await ws.recv()
                scope.cancel()
                await trio.lowlevel.checkpoint()
        await handler.done.wait()
    assert scope.cancelled_caught
    assert handler.connection.close_code == 1001
    assert ws.close_code == 1001


async def test_cancelled_body_exits_as_soon_as_the_server_answers_the_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The shielded closing handshake after a cancellation ends when the server closes, not
    at close_timeout."""
    handler = EchoHandler()
    async with ws_server(handler) as port:
        start = trio.current_time()
        with trio.move_on_after(1):
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/", close_timeout=10) as ws:
                await ws.recv()
        assert trio.current_time() == start + 1
    assert ws.close_code == 1001


def _raw_ws_server_that_ignores_close() -> Callable[[trio.SocketStream], Awaitable[None]]:
    async def handler(stream: trio.SocketStream) -> None:
        await stream.send_all(switching_protocols(await read_request(stream)))
        await _never_answer(stream)  # reads the close frame, never answers it

    return handler


async def test_cancel_during_closing_handshake_leaves_no_open_fd(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelled while waiting for the server's close frame: the socket closes at once."""
    with no_leaks():
        async with tcp_server(_raw_ws_server_that_ignores_close()) as port:
            start = trio.current_time()
            with trio.move_on_after(1) as scope:
                async with trio_ws.connect(
                    f"ws://127.0.0.1:{port}/", compression=None, close_timeout=10
                ) as ws:
                    pass
            assert scope.cancelled_caught
            assert trio.current_time() == start + 1
            assert ws.state is trio_ws.State.CLOSED


async def test_closing_handshake_gives_up_after_exactly_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that never answers the close frame: the block exits at close_timeout, the
    connection CLOSED with 1006 (no close frame came)."""
    with no_leaks():
        async with tcp_server(_raw_ws_server_that_ignores_close()) as port:
            async with trio_ws.connect(
                f"ws://127.0.0.1:{port}/", compression=None, close_timeout=3
            ) as ws:
                start = trio.current_time()
            assert trio.current_time() == start + 3
            assert ws.state is trio_ws.State.CLOSED
            assert ws.close_code == 1006


async def test_cancelled_body_waits_at_most_close_timeout_for_the_close_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancellation does not cut the closing handshake short, but close_timeout bounds it."""
    with no_leaks():
        async with tcp_server(_raw_ws_server_that_ignores_close()) as port:
            start = trio.current_time()
            with trio.move_on_after(1) as scope:
                async with trio_ws.connect(
                    f"ws://127.0.0.1:{port}/", compression=None, close_timeout=3
                ) as ws:
                    await ws.recv()
            assert scope.cancelled_caught
            assert trio.current_time() == start + 1 + 3
            assert ws.state is trio_ws.State.CLOSED


# -- what leaves the block -------------------------------------------------------------------


async def test_exception_in_the_body_comes_out_as_itself_and_closes_with_1011() -> None:
    """An exception raised in the block is re-raised unchanged (not in an ExceptionGroup);
    the server sees a close frame with 1011."""
    handler = EchoHandler()
    error = KeyError("boom")
    with no_leaks():
        async with ws_server(handler) as port:
            with pytest.raises(KeyError) as info:
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
                    raise error
            await handler.done.wait()
    assert info.value is error
    assert ws.state is trio_ws.State.CLOSED
    assert ws.close_code == 1011
    assert handler.connection.close_code == 1011
    assert handler.closed_with is not None
    assert handler.closed_with.code == 1011


async def test_exception_group_raised_in_the_body_comes_out_unwrapped() -> None:
    """A group the user raises comes out as that very group, never nested in a group of
    trio_ws's nursery nor copied."""
    handler = EchoHandler()
    group = ExceptionGroup("mine", [ValueError("a"), TypeError("b")])
    async with ws_server(handler) as port:
        with pytest.raises(ExceptionGroup) as info:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                raise group
        await handler.done.wait()
    assert info.value is group
    assert handler.connection.close_code == 1011


async def test_connection_closed_by_the_server_surfaces_from_recv_unwrapped() -> None:
    """When the server's handler returns, recv() in the block raises ConnectionClosedOK with
    1000, and that exception leaves the block as itself."""

    async def say_bye(ws: ServerConnection) -> None:
        await ws.send("bye")

    with no_leaks():
        async with ws_server(say_bye) as port:
            with pytest.raises(ConnectionClosedOK) as info:
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
                    await ws.recv()
                    await ws.recv()
    assert info.value.code == 1000
    assert ws.close_code == 1000


async def test_code_after_a_cancelled_block_does_not_run() -> None:
    """Cancellation propagates out of the block: the enclosing scope catches it, and the
    statement after the block never runs."""
    reached = False
    async with ws_server(EchoHandler()) as port:
        with trio.CancelScope() as scope:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/"):
                scope.cancel()
                await trio.lowlevel.checkpoint()
            reached = True
    assert scope.cancelled_caught
    assert not reached


async def test_iterating_ends_when_the_server_closes_normally() -> None:
    """async for over the connection yields each message and stops at a 1000 close."""

    async def send_three(ws: ServerConnection) -> None:
        for word in ("one", "two", "three"):
            await ws.send(word)

    async with ws_server(send_three) as port, trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        received = [message async for message in ws]
    assert received == ["one", "two", "three"]
    assert ws.close_code == 1000


async def test_message_sent_with_the_101_is_received(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A frame in the same TCP segment as the 101 is delivered without waiting for more."""

    async def eager(stream: trio.SocketStream) -> None:
        request = await read_request(stream)
        await stream.send_all(switching_protocols(request) + b"\x81\x05hello")
        await _never_answer(stream)

    async with tcp_server(eager) as port:
        with trio.move_on_after(5):
            async with trio_ws.connect(
                f"ws://127.0.0.1:{port}/", compression=None, close_timeout=1
            ) as ws:
                message = await ws.recv()
    assert message == "hello"


async def test_response_has_every_header_the_server_sent() -> None:
    """ws.response.headers is the whole 101: Upgrade, Connection, Sec-WebSocket-Accept and
    Sec-WebSocket-Extensions included."""
    async with ws_server(EchoHandler()) as port, trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        pass
    headers = ws.response.headers
    assert headers["Upgrade"].lower() == "websocket"
    assert headers["Connection"].lower() == "upgrade"
    assert "Sec-WebSocket-Accept" in headers
    assert headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")


@pytest.mark.parametrize(
    "headers",
    [{"X-A": "a\r\nX-Evil: 1"}, {"X A": "v"}, {"X-\u00e9": "v"}],
    ids=["crlf-in-value", "space-in-name", "non-ascii-name"],
)
async def test_invalid_additional_headers_raise_value_error_before_connecting(
    headers: dict[str, str],
) -> None:
    """A header that would break the request (or smuggle another) is a ValueError naming
    additional_headers, raised before any socket is opened."""
    before = open_fds()
    with pytest.raises(ValueError, match="additional_headers"):
        async with trio_ws.connect("ws://127.0.0.1:9/", additional_headers=headers):
            pass  # pragma: no cover
    assert open_fds() == before


async def test_leaving_the_block_while_cancelled_still_sends_the_close_frame() -> None:
    """A scope cancelled inside the block, then the block exits: the server still gets our
    close frame (1000, the body returned), not a dropped connection (1006)."""
    handler = EchoHandler()
    async with ws_server(handler) as port:
        with trio.CancelScope() as scope:
            async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                scope.cancel()
        with trio.fail_after(5):
            await handler.connections[0].wait_closed()
    assert handler.connections[0].close_code == 1000
    assert ws.state is trio_ws.State.CLOSED


@pytest.mark.parametrize("before", ["a-recv-returned", "a-recv-was-cancelled"])
async def test_over_tcp_pings_are_answered_while_no_recv_waits(before: str) -> None:
    """Over a plain socket a recv() reads for itself; once it returns or is cancelled, the
    reader task is back on watch: the server's ping is answered while the client's
    application waits on something else entirely."""
    pong_came = trio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hi")
        await ws.ping()  # never answered if nobody on the client reads
        pong_came.set()
        assert await ws.recv() == "bye"

    async with ws_server(handler) as port, trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
        if before == "a-recv-was-cancelled":
            with trio.CancelScope() as scope:
                scope.cancel()
                await ws.recv()
        assert await ws.recv() == "hi"
        if before == "a-recv-was-cancelled":
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.recv)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
        with trio.fail_after(5):
            await pong_came.wait()
        await ws.send("bye")


async def test_a_task_that_only_sends_lets_others_run() -> None:
    """Over a socket that takes every frame at once no send() blocks, yet a loop of them lets
    the rest of the program run: once per slice of 0.5 ms, far sooner than 2,000 sends."""
    ran = trio.Event()
    sent = 0
    async with ws_server(EchoHandler()) as port, trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:

        async def other_task() -> None:
            ran.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            while not ran.is_set() and sent < 2_000:
                await ws.send(b"x")
                sent += 1
        assert ran.is_set()
        assert 0 < sent < 2_000
