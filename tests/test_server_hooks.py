"""The server's production features over real sockets on 127.0.0.1: the hooks that run before
the upgrade (process_request, process_response, select_subprotocol), origins, the limits
(max_connections, open_timeout, the request head), Server.stats, logging, and the examples
that show them (examples/health_check.py, examples/prometheus_metrics.py). Tests that only need
a server, not the network, run it in memory with trio_ws.testing.serving."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import socket
import struct
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trio.testing

import trio_ws
from trio_ws.exceptions import InvalidHandshake, InvalidState, InvalidStatus
from trio_ws.http import Headers, Request, Response
from trio_ws.server import DEFAULT_SERVER_HEADER, Server, ServerConnection
from trio_ws.testing import serving as serving_in_memory

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

Handler = Callable[[ServerConnection], Awaitable[None]]

# -- helpers ---------------------------------------------------------------------------------


def uri(server: Server, path: str = "/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


@asynccontextmanager
async def serving(handler: Handler = echo, **options: Any) -> AsyncGenerator[Server, None]:
    """serve(handler) on 127.0.0.1, port 0, keepalive off unless asked; hard-stop on exit."""
    options.setdefault("ping_interval", None)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(trio_ws.serve, handler, "127.0.0.1", 0, **options)
        )
        yield server
        server.cancel_scope.cancel()


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


def parse_response(data: bytes) -> Response:
    """Split an HTTP response into status, reason, headers and body."""
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, f"no end of head in {data!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = Headers()
    for line in lines:
        name, _, value = line.partition(": ")
        headers.add(name, value)
    return Response(int(status), reason, headers, body)


async def http_exchange(server: Server, data: bytes) -> Response:
    """Send raw bytes to the server over TCP; the response it sends before closing."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(data)
        return parse_response(await read_until_eof(stream))


def get(path: str, *headers: str) -> bytes:
    """A plain HTTP GET, such as a load balancer's health check: no upgrade headers."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def assert_connects(server: Server, path: str = "/", **options: Any) -> None:
    """A WebSocket client connects and gets its message echoed."""
    async with trio_ws.connect(uri(server, path), ping_interval=None, **options) as ws:
        await ws.send("still serving?")
        assert await ws.recv() == "still serving?"


async def refused(server: Server, path: str = "/", **options: Any) -> InvalidStatus:
    """Connect, expecting the server to refuse the handshake; the client's InvalidStatus."""
    with pytest.raises(InvalidStatus) as caught:
        async with trio_ws.connect(uri(server, path), ping_interval=None, **options):
            pass  # pragma: no cover
    return caught.value


async def open_raw_websocket(server: Server) -> trio.SocketStream:
    """A TCP connection whose opening handshake is done by hand, with nothing running on it:
    it answers no ping and sends no close frame."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(
        get(
            "/",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        )
    )
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        head += await stream.receive_some(1)  # one byte at a time: keep what follows unread
    assert head.startswith(b"HTTP/1.1 101 ")
    return stream


def reset(stream: trio.SocketStream) -> None:
    """Make the next close send RST instead of FIN (SO_LINGER with a timeout of 0)."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py as a module, as a user's program would run it."""
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def run_example(name: str) -> str:
    """Run examples/<name>.py in a new Python process; what it printed."""
    result = await trio.run_process(
        [sys.executable, str(EXAMPLES / f"{name}.py")], capture_stdout=True, capture_stderr=True
    )
    return result.stdout.decode()


def sync_or_async(kind: str, hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` itself, or an async function that returns what it returns."""
    if kind == "sync":
        return hook

    async def async_hook(*args: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return hook(*args)

    return async_hook


# -- process_request ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_process_request_answers_a_health_check_and_websocket_clients_still_connect(
    kind: str,
) -> None:
    """process_request, plain or async, answers a plain HTTP GET /healthz (no upgrade headers)
    with its 200 "OK", sent with Content-Length, Connection: close and the Server header; it
    answers an unknown path with 404; a WebSocket client on a path it lets through connects."""

    def route(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(200, "OK\n")
        if request.path == "/chat":
            return None
        return connection.respond(404, "no such page\n")

    async with serving(process_request=sync_or_async(kind, route)) as server:
        health = await http_exchange(server, get("/healthz"))
        assert (health.status_code, health.reason_phrase, health.body) == (200, "OK", b"OK\n")
        assert health.headers.get_all("Content-Length") == ["3"]
        assert health.headers.get_all("Connection") == ["close"]
        assert health.headers.get_all("Server") == [DEFAULT_SERVER_HEADER]
        assert health.headers["Content-Type"].startswith("text/plain")

        missing = await http_exchange(server, get("/nowhere"))
        assert (missing.status_code, missing.body) == (404, b"no such page\n")

        await assert_connects(server, "/chat")
        assert (await refused(server, "/elsewhere")).response.status_code == 404
        assert server.stats.handshakes_refused == {"response": 1, "404": 2}
        assert server.stats.connections_total == 1


async def test_process_request_gets_the_connection_the_handler_gets_still_connecting() -> None:
    """The hook's connection has the request's path, the client's address and state
    CONNECTING; sending or receiving on it raises InvalidState; the handler then gets that
    same object, open."""
    seen: dict[str, Any] = {}
    handled: list[ServerConnection] = []

    async def process_request(connection: ServerConnection, request: Request) -> None:
        seen["connection"] = connection
        seen["path"] = connection.request.path
        seen["same request"] = connection.request is request
        seen["remote"] = connection.remote_address
        seen["state"] = connection.state
        for call in (partial(connection.send, "too early"), connection.recv):
            with pytest.raises(InvalidState, match="not open yet"):
                await call()
        seen["refused"] = True

    async def handler(ws: ServerConnection) -> None:
        handled.append(ws)
        await echo(ws)

    async with (
        serving(handler, process_request=process_request) as server,
        trio_ws.connect(uri(server, "/room?id=7"), ping_interval=None) as client,
    ):
        await client.send("hi")
        assert await client.recv() == "hi"
        client_address = client.local_address
    assert seen["path"] == "/room?id=7"
    assert seen["same request"]
    assert seen["remote"] == client_address
    assert seen["state"] is trio_ws.State.CONNECTING
    assert seen["refused"]
    assert handled == [seen["connection"]]


async def test_process_request_raising_gets_500_logged_with_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A process_request that raises gets the client a 500; the error is logged once at ERROR
    on trio_ws.server with the connection's id in the message, the exception as exc_info and
    the connection as record.websocket; the next client connects."""
    hooked: list[ServerConnection] = []

    def process_request(connection: ServerConnection, request: Request) -> None:
        hooked.append(connection)
        if request.path == "/bug":
            raise RuntimeError("bug in process_request")

    async with serving(process_request=process_request) as server:
        rejection = await refused(server, "/bug")
        assert rejection.response.status_code == 500
        await assert_connects(server)
        assert server.stats.handshakes_refused == {"500": 1}

    [record] = errors(caplog)
    assert record.name == "trio_ws.server"
    assert str(hooked[0].id) in record.getMessage()
    assert "process_request" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert getattr(record, "websocket", None) is hooked[0]


@pytest.mark.parametrize(
    "response",
    [
        Response(200, "OK", Headers([("X-Note", "a\r\nInjected: yes")])),
        Response(200, "OK", Headers([("Bad Name", "value")])),
        Response(200, "OK\r\nInjected: yes"),
        Response(101, "Switching Protocols"),
        Response(600, "Too Far"),
    ],
    ids=["crlf-in-value", "name-not-a-token", "crlf-in-reason", "status-101", "status-600"],
)
async def test_process_request_returning_an_unsendable_response_gets_500(
    response: Response, caplog: pytest.LogCaptureFixture
) -> None:
    """A Response that cannot go on the wire (a CR/LF that would smuggle in a header, a status
    that is no final answer) is never sent: the client gets 500, the error is logged, and the
    server keeps serving."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        return response if request.path == "/bad" else None

    async with serving(process_request=process_request) as server:
        sent = await http_exchange(server, get("/bad"))
        assert sent.status_code == 500
        assert "Injected" not in sent.headers
        await assert_connects(server)
    [record] = errors(caplog)
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


@pytest.mark.parametrize(
    "hook",
    ["process_request", "process_response"],
)
async def test_a_hook_returning_something_other_than_a_response_gets_500(
    hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A process_request or process_response that returns a str instead of a Response gets
    the client a 500, as serve()'s docstring promises for a hook that "returns what cannot be
    sent", logged as that hook's failure (not as an internal error of trio_ws)."""

    def wrong(*args: object) -> object:
        return "OK"

    async with serving(**{hook: wrong}) as server:
        assert (await refused(server)).response.status_code == 500
    [record] = errors(caplog)
    assert "internal error" not in record.getMessage()


# -- process_response --------------------------------------------------------------------------


async def test_process_response_adds_a_header_to_the_101() -> None:
    """A process_response that adds Set-Cookie to the 101 in place (and returns None) sends
    it: the client sees it in ws.response.headers, and the handler in its own ws.response."""
    handled: list[ServerConnection] = []

    def process_response(
        connection: ServerConnection, request: Request, response: Response
    ) -> None:
        assert response.status_code == 101
        response.headers.add("Set-Cookie", f"session={request.path.strip('/')}; HttpOnly")

    async def handler(ws: ServerConnection) -> None:
        handled.append(ws)
        await echo(ws)

    async with (
        serving(handler, process_response=process_response) as server,
        trio_ws.connect(uri(server, "/abc"), ping_interval=None) as ws,
    ):
        assert ws.response.headers.get_all("Set-Cookie") == ["session=abc; HttpOnly"]
        await ws.send("hello")
        assert await ws.recv() == "hello"
    assert handled[0].response.headers.get_all("Set-Cookie") == ["session=abc; HttpOnly"]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_process_response_returning_403_refuses_without_running_the_handler(
    kind: str,
) -> None:
    """A process_response that returns a 403 Response replaces the 101: the client gets
    InvalidStatus with that status and body, the handler never runs."""
    handled: list[ServerConnection] = []

    def forbid(connection: ServerConnection, request: Request, response: Response) -> Response:
        return connection.respond(403, "not you\n")

    async def handler(ws: ServerConnection) -> None:
        handled.append(ws)  # pragma: no cover

    async with serving(handler, process_response=sync_or_async(kind, forbid)) as server:
        rejection = await refused(server)
        assert rejection.response.status_code == 403
        assert rejection.response.body == b"not you\n"
        assert server.stats.handshakes_refused == {"403": 1}
        assert server.stats.connections_total == 0
    assert handled == []


async def test_process_response_putting_crlf_in_the_101_gets_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A header with CR/LF added to the 101 by process_response is never sent: 500, logged."""

    def process_response(
        connection: ServerConnection, request: Request, response: Response
    ) -> None:
        response.headers.add("X-Note", "a\r\nInjected: yes")

    async with serving(process_response=process_response) as server:
        rejection = await refused(server)
        assert rejection.response.status_code == 500
        assert "Injected" not in rejection.response.headers
    [record] = errors(caplog)
    assert "process_response" in record.getMessage()


# -- select_subprotocol ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_select_subprotocol_chooses_the_clients_second_offer(kind: str) -> None:
    """select_subprotocol, plain or async, gets the client's offers in order and its choice
    wins over ``subprotocols``: both sides agree on the client's second offer."""
    offers: list[list[str]] = []
    handled: list[str | None] = []

    def second(connection: ServerConnection, subprotocols: list[str]) -> str:
        offers.append(list(subprotocols))
        return subprotocols[1]

    async def handler(ws: ServerConnection) -> None:
        handled.append(ws.subprotocol)
        await echo(ws)

    select = sync_or_async(kind, second)
    async with (
        serving_in_memory(handler, subprotocols=["chat.v1"], select_subprotocol=select) as memory,
        memory.connect(subprotocols=["chat.v1", "chat.v2"]) as ws,
    ):
        assert ws.subprotocol == "chat.v2"
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert offers == [["chat.v1", "chat.v2"]]
    assert handled == ["chat.v2"]


async def test_select_subprotocol_returning_none_chooses_no_subprotocol() -> None:
    """A select_subprotocol that returns None leaves the 101 without Sec-WebSocket-Protocol,
    even though ``subprotocols`` lists one the client offers."""

    def no_subprotocol(connection: ServerConnection, offered: list[str]) -> None:
        return None

    async with (
        serving(subprotocols=["chat"], select_subprotocol=no_subprotocol) as server,
        trio_ws.connect(uri(server), ping_interval=None, subprotocols=["chat"]) as ws,
    ):
        assert ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers


async def test_select_subprotocol_choosing_what_was_not_offered_gets_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A subprotocol the client did not offer would break its handshake: 500 instead, logged
    with what the hook chose; the server keeps serving."""

    def choose(connection: ServerConnection, offered: list[str]) -> str | None:
        return "chat.v3" if offered else None

    async with serving(select_subprotocol=choose) as server:
        rejection = await refused(server, subprotocols=["chat.v1", "chat.v2"])
        assert rejection.response.status_code == 500
        await assert_connects(server)
    [record] = errors(caplog)
    assert "select_subprotocol" in record.getMessage()
    assert record.exc_info is not None
    assert "chat.v3" in str(record.exc_info[1])


async def test_select_subprotocol_returning_no_str_gets_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hook that returns neither a str nor None (here, the whole list) gets the client a 500
    naming what it returned; the server keeps serving."""

    def choose(connection: ServerConnection, offered: list[str]) -> Any:
        return offered or None

    async with serving(select_subprotocol=choose) as server:
        rejection = await refused(server, subprotocols=["chat.v1"])
        assert rejection.response.status_code == 500
        await assert_connects(server)
    [record] = errors(caplog)
    assert "select_subprotocol" in record.getMessage()
    assert record.exc_info is not None
    assert "['chat.v1']" in str(record.exc_info[1])


# -- origins -----------------------------------------------------------------------------------

ORIGINS = ["https://example.com", re.compile(r"https://[a-z]+\.example\.org"), None]


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        ("https://example.com", True),
        ("https://chat.example.org", True),
        (None, True),
        ("http://example.com", False),
        ("https://example.com.evil.net", False),  # a longer origin: exact strings only
        ("https://chat.example.org.evil.net", False),  # the pattern must match in full
        ("https://Chat.example.org", False),
    ],
)
async def test_origins_accepts_exact_strings_full_pattern_matches_and_none(
    origin: str | None, accepted: bool
) -> None:
    """With origins=[an exact string, a compiled pattern, None], a request is accepted when its
    Origin equals the string, the pattern matches all of it, or it has none; else 403."""
    headers = [] if origin is None else [("Origin", origin)]
    async with serving(origins=ORIGINS) as server:
        if accepted:
            await assert_connects(server, additional_headers=headers)
        else:
            rejection = await refused(server, additional_headers=headers)
            assert rejection.response.status_code == 403
            assert server.stats.handshakes_refused == {"403": 1}


async def test_origins_without_none_refuses_a_request_without_origin() -> None:
    """A client that sends no Origin is refused (403) unless origins holds None."""
    async with serving(origins=["https://example.com"]) as server:
        assert (await refused(server)).response.status_code == 403
        await assert_connects(server, additional_headers=[("Origin", "https://example.com")])


async def test_two_origin_headers_get_400() -> None:
    """A request with two Origin headers gets 400, even when both would be accepted."""
    both = [("Origin", "https://example.com"), ("Origin", "https://example.com")]
    async with serving(origins=ORIGINS) as server:
        rejection = await refused(server, additional_headers=both)
        assert rejection.response.status_code == 400
        assert b"Origin" in rejection.response.body


async def test_without_origins_every_origin_is_accepted() -> None:
    """With no ``origins``, the Origin header is not looked at."""
    async with serving() as server:
        await assert_connects(server, additional_headers=[("Origin", "https://evil.example")])
        await assert_connects(server)


# -- limits ------------------------------------------------------------------------------------


async def test_max_connections_refuses_the_next_client_with_503_until_one_closes() -> None:
    """With max_connections=2 and two clients connected, a third gets 503, counted as
    handshakes_refused["limit"]; once one of the two has closed, a new client connects."""
    arrived: list[ServerConnection] = []
    two = trio.Event()

    async def handler(ws: ServerConnection) -> None:
        arrived.append(ws)
        if len(arrived) == 2:
            two.set()
        await echo(ws)

    async with serving(handler, max_connections=2) as server:
        async with trio_ws.connect(uri(server), ping_interval=None) as first:
            async with trio_ws.connect(uri(server), ping_interval=None):
                await two.wait()
                rejection = await refused(server)
                assert rejection.response.status_code == 503
                assert server.stats.handshakes_refused == {"limit": 1}
            await trio.testing.wait_all_tasks_blocked()
            assert len(server.connections) == 1
            await assert_connects(server)
            await first.send("first still open")
            assert await first.recv() == "first still open"
        assert server.stats.connections_total == 3


async def test_max_connections_holds_for_handshakes_in_progress_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With max_connections=1, two clients whose handshakes run at the same time (both in an
    async process_request) cannot both connect: one gets 503."""
    arrived: list[str] = []
    both = trio.Event()
    most_open = 0

    async def process_request(connection: ServerConnection, request: Request) -> None:
        arrived.append(request.path)
        if len(arrived) == 2:
            both.set()
        with trio.move_on_after(1):  # a server that counts handshakes lets only one get here
            await both.wait()

    async def handler(ws: ServerConnection) -> None:
        nonlocal most_open
        most_open = max(most_open, server.stats.connections_open)
        await ws.wait_closed()

    outcomes: list[int | str] = []

    async def client(path: str) -> None:
        try:
            async with trio_ws.connect(uri(server, path), ping_interval=None):
                outcomes.append("connected")
                await trio.testing.wait_all_tasks_blocked()
        except InvalidStatus as exc:
            outcomes.append(exc.response.status_code)

    async with (
        serving(handler, max_connections=1, process_request=process_request) as server,
        trio.open_nursery() as clients,
    ):
        clients.start_soon(client, "/a")
        clients.start_soon(client, "/b")
    assert sorted(outcomes, key=str) == [503, "connected"]
    assert most_open == 1


async def test_slow_loris_client_is_cut_off_at_exactly_open_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that sends its request one byte per second, which would take a minute, is
    disconnected open_timeout seconds after it connected, to the virtual second, without a
    response; handshakes_refused["timeout"] counts it and the server keeps serving."""
    request = get("/", "Upgrade: websocket", "Connection: Upgrade")

    async def dribble(stream: trio.abc.Stream) -> None:
        for byte in request:
            try:
                await stream.send_all(bytes([byte]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await trio.sleep(1)

    async with serving_in_memory(echo, open_timeout=4.5) as memory:
        assert len(request) > 4.5
        stream = await memory.listener.connect()
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(dribble, stream)
            assert await read_until_eof(stream) == b""
            assert trio.current_time() == 4.5
            nursery.cancel_scope.cancel()
        assert memory.server.stats.handshakes_refused == {"timeout": 1}
        async with memory.connect() as ws:
            await ws.send("still serving?")
            assert await ws.recv() == "still serving?"


async def test_a_hook_that_never_returns_is_cut_off_by_open_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """open_timeout bounds the hooks too: a process_request that sleeps forever is cancelled
    open_timeout seconds after the client connected, and the client's connection is closed."""
    hooked = trio.Event()

    async def process_request(connection: ServerConnection, request: Request) -> None:
        if request.path == "/stuck":
            hooked.set()
            await trio.sleep_forever()

    async with serving_in_memory(echo, process_request=process_request, open_timeout=3) as memory:
        with pytest.raises(InvalidHandshake, match="closed the connection"):
            async with memory.connect("/stuck", open_timeout=60):
                pass  # pragma: no cover
        assert hooked.is_set()
        assert trio.current_time() == 3.0
        assert memory.server.stats.handshakes_refused == {"timeout": 1}
        async with memory.connect() as ws:
            await ws.send("still serving?")
            assert await ws.recv() == "still serving?"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (get("/", *(f"X-Header-{n}: {n}" for n in range(128))), 431),  # 129 lines with Host
        (get("/", "X-Big: " + "a" * (16 * 1024)), 431),
        (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 405),
    ],
    ids=["129-header-lines", "head-over-16-KiB", "POST"],
)
async def test_requests_over_the_limits_or_not_get_are_refused_before_any_hook(
    request_bytes: bytes, status: int
) -> None:
    """More than 128 header lines or a head over 16 KiB get 431, a POST 405 (with Allow: GET),
    before process_request ever runs; the server keeps serving."""
    hooked: list[str] = []

    def process_request(connection: ServerConnection, request: Request) -> None:
        hooked.append(request.path)

    async with serving(process_request=process_request) as server:
        response = await http_exchange(server, request_bytes)
        assert response.status_code == status
        if status == 405:
            assert response.headers.get_all("Allow") == ["GET"]
        assert server.stats.handshakes_refused == {str(status): 1}
        assert hooked == []
        await assert_connects(server)
        assert hooked == ["/"]


async def test_128_header_lines_are_accepted() -> None:
    """The limit is 128 header lines: a request with exactly 128 (Host included) is served."""
    request = get("/", *(f"X-Header-{n}: {n}" for n in range(127)))
    async with serving(process_request=lambda c, r: c.respond(200, "OK")) as server:
        assert (await http_exchange(server, request)).status_code == 200


# -- Server.stats ------------------------------------------------------------------------------


async def test_stats_count_connections_messages_bytes_close_codes_and_refusals() -> None:
    """Server.stats counts open and total connections, data messages and socket bytes both
    ways (bytes above the payloads: frame headers, masks, close frames), close codes by the
    peer's code (1000 for a normal close, 1006 for a reset), refusals by status; and
    as_dict() goes through JSON unchanged."""
    opened = trio.Event()

    async def handler(ws: ServerConnection) -> None:
        opened.set()
        await echo(ws)

    payloads: list[str | bytes] = ["hello", b"\x00" * 1000]
    async with serving(handler) as server:
        stats = server.stats
        assert stats is server.stats
        async with trio_ws.connect(uri(server), ping_interval=None, compression=None) as ws:
            for payload in payloads:
                await ws.send(payload)
                assert await ws.recv() == payload
            assert (stats.connections_open, stats.connections_total) == (1, 1)
        assert (stats.connections_open, stats.connections_total) == (0, 1)
        assert (stats.messages_in, stats.messages_out) == (2, 2)
        assert stats.bytes_in > 1005
        assert stats.bytes_out > 1005
        assert stats.close_codes == {1000: 1}

        opened = trio.Event()
        stream = await open_raw_websocket(server)
        await opened.wait()
        assert stats.connections_open == 1
        reset(stream)
        await stream.aclose()
        while stats.connections_open:
            await trio.testing.wait_all_tasks_blocked()
        assert stats.close_codes == {1000: 1, 1006: 1}

        assert (await http_exchange(server, get("/"))).status_code == 426
        assert stats.handshakes_refused == {"426": 1}
        assert stats.connections_total == 2

        snapshot = stats.as_dict()
        assert json.loads(json.dumps(snapshot)) == snapshot
        assert snapshot["close_codes"] == {"1000": 1, "1006": 1}
        assert snapshot["handshakes_refused"] == {"426": 1}
        assert snapshot["messages_in"] == 2


async def test_stats_count_a_client_that_never_answers_pings_as_a_keepalive_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that never answers pings fails with 1011 at ping_interval + ping_timeout and is
    counted in keepalive_failures; it sent no close frame, so its close code counts as 1006."""
    async with serving(ping_interval=5, ping_timeout=3, close_timeout=2) as server:
        async with await open_raw_websocket(server) as stream:
            start = trio.current_time()
            data = await read_until_eof(stream)  # a ping, a close frame, then EOF
        assert data[0] == 0x89  # FIN + ping
        assert b"keepalive ping timeout" in data
        assert trio.current_time() == start + 5 + 3
        assert server.stats.keepalive_failures == 1
        assert server.stats.close_codes == {1006: 1}


# -- logging -----------------------------------------------------------------------------------


async def test_logging_says_where_it_listens_and_tags_connection_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server logs "server listening on 127.0.0.1:<port>" at INFO, and each connection's
    opening and closing at DEBUG with the connection as record.websocket; ws.logger is a
    LoggerAdapter whose records carry the connection too."""
    caplog.set_level(logging.DEBUG, logger="trio_ws.server")
    handled: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        handled.append(ws)
        assert isinstance(ws.logger, logging.LoggerAdapter)
        ws.logger.info("handler says hi")
        await echo(ws)

    async with serving(handler) as server:
        await assert_connects(server)
        await trio.testing.wait_all_tasks_blocked()
        port = server.port

    [ws] = handled
    records = [record for record in caplog.records if record.name == "trio_ws.server"]
    messages = [(record.levelno, record.getMessage()) for record in records]
    assert (logging.INFO, f"server listening on 127.0.0.1:{port}") in messages
    mine = [record for record in records if getattr(record, "websocket", None) is ws]
    by_message = {record.getMessage(): record for record in mine}
    opened = [m for m in by_message if m.startswith(f"connection {ws.id} opened from 127.0.0.1:")]
    assert len(opened) == 1
    assert by_message[opened[0]].levelno == logging.DEBUG
    closed = by_message[f"connection {ws.id} closed: code 1000"]
    assert closed.levelno == logging.DEBUG
    assert by_message["handler says hi"].levelno == logging.INFO


async def test_a_refused_handshake_is_logged_at_info_with_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refusal is logged at INFO with its status and the connection as record.websocket,
    on the logger given to serve()."""
    logger = logging.getLogger("tests.production")
    caplog.set_level(logging.INFO, logger="tests.production")
    hooked: list[ServerConnection] = []

    def process_request(connection: ServerConnection, request: Request) -> None:
        hooked.append(connection)

    async with serving(process_request=process_request, origins=[], logger=logger) as server:
        assert (await refused(server)).response.status_code == 403
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.name == "tests.production"
    assert record.levelno == logging.INFO
    assert "HTTP 403" in record.getMessage()
    assert getattr(record, "websocket", None) is hooked[0]


# -- the examples ------------------------------------------------------------------------------


async def test_health_check_example_runs_end_to_end() -> None:
    """examples/health_check.py answers its own GET /healthz with 200 "OK" and still serves
    WebSocket clients on another path."""
    output = await run_example("health_check")
    assert "health check: HTTP/1.1 200 OK b'OK\\n'" in output
    assert "websocket echoed: 'hello'" in output
    assert "health checks answered: 1" in output
    assert "websocket connections: 1" in output
    assert output.rstrip().endswith("server stopped")


async def test_prometheus_example_runs_end_to_end() -> None:
    """examples/prometheus_metrics.py prints a scrape of its own /metrics that counts its one
    client's two messages each way and its normal close."""
    output = await run_example("prometheus_metrics")
    lines = output.splitlines()
    for expected in [
        "trio_ws_connections_open 0.0",
        "trio_ws_connections_total 1.0",
        'trio_ws_connections_closed_total{code="1000"} 1.0',
        "trio_ws_messages_received_total 2.0",
        "trio_ws_messages_sent_total 2.0",
        "trio_ws_keepalive_failures_total 0.0",
    ]:
        assert expected in lines
    assert output.rstrip().endswith("server stopped")


def scraped_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def expected_samples(stats: dict[str, Any]) -> Iterator[tuple[tuple[str, Any], float]]:
    yield ("trio_ws_connections_open", ()), stats["connections_open"]
    yield ("trio_ws_connections_total", ()), stats["connections_total"]
    for name, key in [
        ("messages_received", "messages_in"),
        ("messages_sent", "messages_out"),
        ("received_bytes", "bytes_in"),
        ("sent_bytes", "bytes_out"),
        ("broadcast_drops", "broadcast_drops"),
        ("keepalive_failures", "keepalive_failures"),
    ]:
        yield (f"trio_ws_{name}_total", ()), stats[key]
    for reason, count in stats["handshakes_refused"].items():
        yield ("trio_ws_handshakes_refused_total", (("reason", reason),)), count
    for code, count in stats["close_codes"].items():
        yield ("trio_ws_connections_closed_total", (("code", code),)), count


async def test_prometheus_collector_reads_stats_only_when_scraped() -> None:
    """The recipe's collector, registered on a registry served at /metrics by process_request,
    does nothing while the server works and reads Server.stats once per scrape: each scraped
    sample equals the counter it exports, refusals by reason and close codes included."""
    example = load_example("prometheus_metrics")
    from prometheus_client import CollectorRegistry

    collected: list[dict[str, Any]] = []

    class CountingCollector(example.StatsCollector):  # type: ignore[misc, name-defined]
        def collect(self) -> Any:
            collected.append(server.stats.as_dict())
            yield from super().collect()

    registry = CollectorRegistry()
    process_request = example.metrics_endpoint(registry)
    async with serving(process_request=process_request) as server:
        registry.register(CountingCollector(server.stats))
        async with trio_ws.connect(uri(server), ping_interval=None) as ws:
            for message in ("one", "two", b"three"):
                await ws.send(message)
                assert await ws.recv() == message
        assert (await http_exchange(server, get("/other"))).status_code == 426
        stream = await open_raw_websocket(server)
        reset(stream)
        await stream.aclose()
        while server.stats.connections_open:
            await trio.testing.wait_all_tasks_blocked()
        assert collected == []  # no work per message or per connection

        text = await example.scrape(server.port)
        [snapshot] = collected
        scraped = scraped_values(text)
        expected = dict(expected_samples(snapshot))
        assert {key: scraped[key] for key in expected} == expected
        assert scraped[("trio_ws_messages_received_total", ())] == 3
        assert scraped[("trio_ws_connections_closed_total", (("code", "1006"),))] == 1
        assert scraped[("trio_ws_handshakes_refused_total", (("reason", "426"),))] == 1
        # The scrape itself is counted once its response is sent: after it was built.
        assert server.stats.handshakes_refused["response"] == 1
        assert ("trio_ws_handshakes_refused_total", (("reason", "response"),)) not in scraped


# -- X-Forwarded-For from trusted proxies -----------------------------------------------------


async def forwarded_client(server: Server, *forwarded: str) -> object:
    """What the handler sees as client_address for a handshake carrying ``forwarded``."""
    headers = [("X-Forwarded-For", value) for value in forwarded]
    async with trio_ws.connect(uri(server), ping_interval=None, additional_headers=headers) as ws:
        answer = await ws.recv()
    assert isinstance(answer, str)
    return json.loads(answer)


async def say_client(ws: ServerConnection) -> None:
    await ws.send(json.dumps([ws.client_address, ws.remote_address]))


@pytest.mark.parametrize(
    ("trusted", "forwarded", "client"),
    [
        (None, ["203.0.113.7"], None),
        (["127.0.0.1"], ["203.0.113.7"], ["203.0.113.7", 0]),
        (["127.0.0.0/8"], ["198.51.100.1, 203.0.113.7"], ["203.0.113.7", 0]),
        (["127.0.0.1", "203.0.113.0/24"], ["198.51.100.1", "203.0.113.7"], ["198.51.100.1", 0]),
        (["127.0.0.1"], ["2001:db8::1"], ["2001:db8::1", 0]),
        (["127.0.0.1"], ["198.51.100.1, not-an-ip, 203.0.113.7"], ["203.0.113.7", 0]),
        (["127.0.0.1"], ["not-an-ip"], None),
        (["127.0.0.1"], [], None),
        (["10.0.0.0/8"], ["203.0.113.7"], None),
    ],
    ids=[
        "trusting-no-one",
        "one-hop",
        "rightmost-untrusted",
        "walks-past-trusted-hops",
        "ipv6",
        "garbage-before-the-client",
        "garbage-only",
        "no-header",
        "peer-not-trusted",
    ],
)
async def test_client_address_comes_from_x_forwarded_for_of_trusted_proxies_only(
    trusted: list[str] | None, forwarded: list[str], client: list[object] | None
) -> None:
    """client_address is the rightmost address of X-Forwarded-For that is not a trusted proxy,
    believed only when the connection comes from a trusted proxy; remote_address stays the
    socket's peer; without trusted_proxies nobody's header counts."""
    async with serving(say_client, trusted_proxies=trusted) as server:
        seen_client, seen_peer = await forwarded_client(server, *forwarded)  # type: ignore[misc]
    assert seen_peer[0] == "127.0.0.1"
    assert seen_client == (client if client is not None else seen_peer)


@pytest.mark.parametrize(
    ("value", "error"),
    [("127.0.0.1", TypeError), ([1], TypeError), (["nowhere"], ValueError)],
)
async def test_trusted_proxies_are_checked_before_listening(
    value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="trusted_proxies"):
        await trio_ws.serve(say_client, "127.0.0.1", 0, trusted_proxies=value)  # type: ignore[arg-type]
