"""trio_ws.router over real sockets on 127.0.0.1: which endpoint runs, with which parameters,
and what a request no rule takes gets back."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from werkzeug.routing import Map, Rule
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, TextMessage
from wsproto.events import Request as WsRequest

import trio_ws
from tests.test_handshake import parse_response
from trio_ws.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from trio_ws.http import Request, Response
from trio_ws.router import Router, route
from trio_ws.server import Server, ServerConnection

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# -- helpers ---------------------------------------------------------------------------------


def uri(server: Server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


@asynccontextmanager
async def routing(url_map: Map, **options: Any) -> AsyncGenerator[Server, None]:
    """route(url_map) on 127.0.0.1, port 0, keepalive off; hard-stop it on exit."""
    options.setdefault("ping_interval", None)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(partial(route, url_map, "127.0.0.1", 0, **options))
        yield server
        server.cancel_scope.cancel()


async def say_params(ws: ServerConnection, **params: object) -> None:
    """An endpoint that sends its parameters, with their types, then returns (1000)."""
    await ws.send(repr(sorted(params.items())))


async def chat(ws: ServerConnection, room: str) -> None:
    await ws.send(f"chat {room!r} {ws.request.path}")


async def user(ws: ServerConnection, uid: int) -> None:
    await ws.send(f"user {uid!r} {type(uid).__name__}")


def chat_and_user_map() -> Map:
    return Map([Rule("/chat/<room>", endpoint=chat), Rule("/user/<int:uid>", endpoint=user)])


async def first_message(server: Server, path: str) -> str:
    """Connect to ``path``, return the first message, and check the server then closed 1000."""
    async with trio_ws.connect(uri(server, path), ping_interval=None) as ws:
        message = await ws.recv()
        with pytest.raises(ConnectionClosedOK) as caught:
            await ws.recv()
    assert caught.value.code == 1000
    assert isinstance(message, str)
    return message


async def refused(server: Server, path: str) -> Response:
    """Connect to ``path`` expecting the handshake to be refused; return the response."""
    with pytest.raises(InvalidStatus) as caught:
        async with trio_ws.connect(uri(server, path), ping_interval=None):
            pytest.fail("the handshake should have been refused")
    return caught.value.response


async def plain_get(server: Server, target: str, host: str = "127.0.0.1") -> Response:
    """A plain HTTP GET without any upgrade header; the server's whole response."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    return parse_response(bytes(data))


async def handshake_with_host(server: Server, target: str, host: str) -> tuple[int, str | None]:
    """An opening handshake sending ``Host: host`` (trio_ws.connect sends the URI's): the
    status, and for a 101 the first text message."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(WsRequest(host=host, target=target)))
        while data := await stream.receive_some(65536):
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, RejectConnection):
                    return event.status_code, None
                if isinstance(event, TextMessage):
                    return 101, event.data
                assert isinstance(event, AcceptConnection)
    raise AssertionError("the server closed before a response or a message")


# -- matching --------------------------------------------------------------------------------


async def test_each_rule_runs_its_endpoint_with_its_converted_params() -> None:
    """/chat/<room> runs chat with room as a str, /user/<int:uid> runs user with uid as an
    int, each on its own connection of the same server."""
    async with routing(chat_and_user_map()) as server:
        assert await first_message(server, "/user/42") == "user 42 int"
        assert await first_message(server, "/chat/lobby") == "chat 'lobby' /chat/lobby"
        assert server.stats.connections_total == 2


async def test_query_string_stays_in_request_path_and_takes_no_part_in_matching() -> None:
    """/chat/lobby?token=a%20b&x=1 matches /chat/<room> with room "lobby"; the endpoint reads
    the whole target, query string included, as connection.request.path."""
    async with routing(chat_and_user_map()) as server:
        message = await first_message(server, "/chat/lobby?token=a%20b&x=1")
    assert message == "chat 'lobby' /chat/lobby?token=a%20b&x=1"


async def test_path_is_matched_percent_decoded() -> None:
    """A percent-encoded path reaches the converters decoded, as WSGI's PATH_INFO does."""
    async with routing(chat_and_user_map()) as server:
        message = await first_message(server, "/chat/caf%C3%A9%20noir")
    assert message == "chat 'café noir' /chat/caf%C3%A9%20noir"


async def test_converter_refusing_a_value_means_no_match() -> None:
    """/user/abc matches no rule: the int converter refuses "abc", so the client gets 404."""
    async with routing(chat_and_user_map()) as server:
        response = await refused(server, "/user/abc")
    assert response.status_code == 404


async def test_rule_flagged_websocket_matches_like_any_other() -> None:
    """werkzeug's websocket flag makes no difference: Rule(..., websocket=True) and a plain
    Rule both route (every request routed here is a WebSocket handshake)."""
    url_map = Map(
        [
            Rule("/flagged/<name>", endpoint=say_params, websocket=True),
            Rule("/plain/<name>", endpoint=say_params),
        ]
    )
    async with routing(url_map) as server:
        assert await first_message(server, "/flagged/a") == "[('name', 'a')]"
        assert await first_message(server, "/plain/b") == "[('name', 'b')]"


async def test_rule_defaults_reach_the_endpoint() -> None:
    """A rule's defaults arrive as keyword arguments, with the converted values."""
    url_map = Map([Rule("/page/<int:n>", endpoint=say_params, defaults={"kind": "page"})])
    async with routing(url_map) as server:
        assert await first_message(server, "/page/3") == "[('kind', 'page'), ('n', 3)]"


# -- what a request no rule takes gets -------------------------------------------------------


async def test_unknown_path_gets_404_and_is_counted() -> None:
    """A path no rule matches is refused with 404 before the upgrade, counted under "404",
    and the server goes on routing."""
    async with routing(chat_and_user_map()) as server:
        assert server.stats.handshakes_refused["404"] == 0
        response = await refused(server, "/nowhere")
        assert response.status_code == 404
        assert response.body == b"Not Found\n"
        assert server.stats.handshakes_refused["404"] == 1
        assert server.stats.connections_total == 0
        assert await first_message(server, "/user/7") == "user 7 int"


@pytest.mark.parametrize("websocket", [False, True], ids=["plain-rule", "websocket-rule"])
async def test_missing_trailing_slash_gets_308_to_the_same_server_with_the_query(
    websocket: bool,
) -> None:
    """For Rule("/rooms/"), /rooms?x=1 gets werkzeug's redirect: 308 with a Location on this
    server, its port and the query string kept, which trio_ws.connect follows. The same
    for a rule flagged websocket=True."""
    url_map = Map([Rule("/rooms/", endpoint=say_params, websocket=websocket)])
    async with routing(url_map) as server:
        response = await plain_get(server, "/rooms?x=1", host=f"127.0.0.1:{server.port}")
        assert response.status_code == 308
        location = response.headers["Location"]
        assert location == uri(server, "/rooms/?x=1")
        assert server.stats.handshakes_refused["308"] == 0  # not an error
        assert server.stats.handshakes_refused["response"] == 1
        assert await first_message(server, "/rooms?x=1") == "[]"  # redirected
        assert server.stats.handshakes_refused["response"] == 2


async def test_redirect_follows_url_scheme_and_server_name_not_the_request() -> None:
    """A Router with url_scheme="wss" and a server_name (a server behind a TLS-terminating
    proxy) redirects to wss://server_name, whatever Host the request had."""
    router = Router(
        Map([Rule("/rooms/", endpoint=say_params)]), server_name="chat.example", url_scheme="wss"
    )
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(
                trio_ws.serve,
                router.handler,
                "127.0.0.1",
                0,
                process_request=router.process_request,
                ping_interval=None,
            )
        )
        response = await plain_get(server, "/rooms")
        server.cancel_scope.cancel()
    assert response.status_code == 308
    assert response.headers["Location"] == "wss://chat.example/rooms/"


async def test_rule_for_other_methods_gets_405_with_allow() -> None:
    """Any other werkzeug HTTP error gets its own status: a rule only for POST answers a
    WebSocket GET with 405 and an Allow header naming POST."""
    url_map = Map([Rule("/post-only", endpoint=say_params, methods=["POST"])])
    async with routing(url_map) as server:
        response = await refused(server, "/post-only")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


async def test_plain_http_get_to_a_known_path_gets_426_and_to_an_unknown_one_404() -> None:
    """Routing runs before the upgrade check: a GET without Upgrade to a routed path passes
    routing, then gets 426; to an unrouted path it gets 404."""
    async with routing(chat_and_user_map()) as server:
        known = await plain_get(server, "/chat/lobby")
        unknown = await plain_get(server, "/nowhere")
        assert known.status_code == 426
        assert known.headers["Upgrade"] == "websocket"
        assert unknown.status_code == 404
        assert server.stats.handshakes_refused["426"] == 1
        assert server.stats.handshakes_refused["404"] == 1


# -- combining with process_request ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_user_process_request_answers_first_and_none_lets_routing_run(kind: str) -> None:
    """A process_request of the user's runs before routing: its 200 for /healthz (a path no
    rule matches) is sent; for other requests it returns None and routing goes on."""
    seen: list[str] = []

    def health(connection: ServerConnection, request: Request) -> Response | None:
        seen.append(request.path)
        if request.path == "/healthz":
            return connection.respond(200, "OK\n")
        return None

    async def async_health(connection: ServerConnection, request: Request) -> Response | None:
        await trio.lowlevel.checkpoint()
        return health(connection, request)

    hook = health if kind == "sync" else async_health
    async with routing(chat_and_user_map(), process_request=hook) as server:
        response = await plain_get(server, "/healthz")
        assert response.status_code == 200
        assert response.body == b"OK\n"
        assert await first_message(server, "/user/1") == "user 1 int"
        assert (await refused(server, "/nowhere")).status_code == 404
        assert server.stats.handshakes_refused["response"] == 1
    assert seen == ["/healthz", "/user/1", "/nowhere"]


async def test_router_plugs_into_serve_directly() -> None:
    """Router(url_map).handler and .process_request do with serve() what route() does."""
    router = Router(chat_and_user_map())
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(
                trio_ws.serve,
                router.handler,
                "127.0.0.1",
                0,
                process_request=router.process_request,
                ping_interval=None,
            )
        )
        assert await first_message(server, "/chat/x") == "chat 'x' /chat/x"
        assert (await refused(server, "/nowhere")).status_code == 404
        server.cancel_scope.cancel()


async def test_router_handler_without_its_process_request_closes_1011_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Router.handler given to serve() without Router.process_request cannot know the
    endpoint: the connection closes with 1011 and the log says what to pass."""
    router = Router(chat_and_user_map())
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(trio_ws.serve, router.handler, "127.0.0.1", 0, ping_interval=None)
        )
        async with trio_ws.connect(uri(server, "/chat/x"), ping_interval=None) as ws:
            with pytest.raises(ConnectionClosedError) as caught:
                await ws.recv()
        server.cancel_scope.cancel()
    assert caught.value.code == 1011
    assert any(
        record.exc_info is not None and "process_request" in str(record.exc_info[1])
        for record in caplog.records
    )


# -- endpoints -------------------------------------------------------------------------------


async def test_endpoint_raising_closes_1011_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An endpoint that raises gets its connection closed with 1011, logged at ERROR; the
    other rules still route."""

    async def broken(ws: ServerConnection) -> None:
        raise ValueError("bug in the endpoint")

    url_map = Map([Rule("/broken", endpoint=broken), Rule("/user/<int:uid>", endpoint=user)])
    async with routing(url_map) as server:
        async with trio_ws.connect(uri(server, "/broken"), ping_interval=None) as ws:
            with pytest.raises(ConnectionClosedError) as caught:
                await ws.recv()
        assert caught.value.code == 1011
        assert await first_message(server, "/user/5") == "user 5 int"
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], ValueError)


async def test_non_callable_endpoint_raises_type_error_naming_the_rule_before_listening() -> None:
    """route() checks every rule's endpoint: a string endpoint (werkzeug's usual style for
    HTTP apps) raises TypeError naming the rule, and nothing listens."""
    url_map = Map([Rule("/chat/<room>", endpoint=chat), Rule("/index", endpoint="index")])
    with pytest.raises(TypeError, match=r"rule '/index' has the endpoint 'index'"):
        await route(url_map, "127.0.0.1", 0)
    with pytest.raises(TypeError, match=r"rule '/index'"):
        Router(url_map)


async def test_wrong_arguments_raise_before_listening() -> None:
    """Router and route() check their own arguments: a url_map that is no Map, a url_scheme
    other than ws or wss, a process_request that is no function."""
    with pytest.raises(TypeError, match=r"url_map must be a werkzeug\.routing\.Map"):
        Router([Rule("/", endpoint=chat)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="url_scheme"):
        Router(Map(), url_scheme="https")
    with pytest.raises(TypeError, match="process_request must be a function"):
        await route(Map(), "127.0.0.1", 0, process_request="nope")  # type: ignore[arg-type]


async def test_non_callable_endpoint_added_later_gets_500() -> None:
    """A rule added to the map after route() started is routed too; if its endpoint is not
    callable, the request gets 500 (a failed hook) and the server goes on."""
    url_map = chat_and_user_map()
    async with routing(url_map) as server:
        url_map.add(Rule("/late/<int:n>", endpoint=say_params))
        url_map.add(Rule("/later", endpoint="later"))
        assert await first_message(server, "/late/1") == "[('n', 1)]"
        assert (await refused(server, "/later")).status_code == 500
        assert await first_message(server, "/user/2") == "user 2 int"


async def test_sync_endpoint_closes_1011_with_a_type_error_saying_async() -> None:
    """A plain function as endpoint runs, returns None, and the handler raises TypeError:
    endpoints must be async functions."""
    ran: list[str] = []

    def sync_endpoint(ws: ServerConnection) -> None:
        ran.append(ws.request.path)

    async with (
        routing(Map([Rule("/sync", endpoint=sync_endpoint)])) as server,
        trio_ws.connect(uri(server, "/sync"), ping_interval=None) as ws,
    ):
        with pytest.raises(ConnectionClosedError) as caught:
            await ws.recv()
    assert caught.value.code == 1011
    assert ran == ["/sync"]


# -- hosts -----------------------------------------------------------------------------------


async def test_host_matching_rules_route_by_host_header_less_its_default_port() -> None:
    """With host_matching, the Host header picks the rule; ":80" is dropped as werkzeug does
    for ws://, another port is kept; an unknown host gets 404."""

    async def alpha(ws: ServerConnection) -> None:
        await ws.send("alpha")

    async def beta(ws: ServerConnection, port: int) -> None:
        await ws.send(f"beta on {port}")

    url_map = Map(
        [
            Rule("/", host="alpha.example", endpoint=alpha),
            Rule("/", host="beta.example:<int:port>", endpoint=beta),
        ],
        host_matching=True,
    )
    async with routing(url_map) as server:
        assert await handshake_with_host(server, "/", "alpha.example") == (101, "alpha")
        assert await handshake_with_host(server, "/", "ALPHA.example:80") == (101, "alpha")
        assert await handshake_with_host(server, "/", "beta.example:8080") == (101, "beta on 8080")
        assert await handshake_with_host(server, "/", "gamma.example") == (404, None)
        assert await handshake_with_host(server, "/", "alpha.example:8080") == (404, None)


async def test_server_name_replaces_the_host_header() -> None:
    """With server_name, every request is matched as if sent to that host, whatever its Host
    header says."""

    async def alpha(ws: ServerConnection) -> None:
        await ws.send("alpha")

    url_map = Map([Rule("/", host="alpha.example", endpoint=alpha)], host_matching=True)
    async with routing(url_map, server_name="alpha.example") as server:
        assert await handshake_with_host(server, "/", "beta.example") == (101, "alpha")
        assert await first_message(server, "/") == "alpha"


async def test_host_werkzeug_cannot_use_gets_400_not_500() -> None:
    """A Host header that IDNA refuses (a label over 63 characters) gets werkzeug's BadHost,
    400, from routing (the upgrade check would say 426), and the server goes on routing."""
    async with routing(chat_and_user_map()) as server:
        response = await plain_get(server, "/chat/x", host="a" * 64 + ".example")
        assert response.status_code == 400
        assert server.stats.handshakes_refused["400"] == 1
        assert await first_message(server, "/user/3") == "user 3 int"


# -- packaging and the example ---------------------------------------------------------------


def test_importing_without_werkzeug_says_how_to_install_it() -> None:
    """Without werkzeug, importing trio_ws.router raises ImportError naming the extra;
    trio_ws itself still imports."""
    code = (
        "import sys; sys.modules['werkzeug'] = None\n"
        "import trio_ws\n"
        "try:\n"
        "    import trio_ws.router\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install trio-ws[router]" in result.stdout


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1024)
        assert chunk, f"the server exited before printing a line; got {data!r}"
        data += chunk
    return data.decode()


async def test_router_server_example_routes_until_terminated() -> None:
    """examples/router_server.py, run as a user would, routes /chat/<room> and /user/<int:uid>
    and refuses other paths with 404."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / "router_server.py"), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(30):
            line = await _read_line(process.stdout)
            assert line.startswith("listening on ws://127.0.0.1:")
            base = line.split()[-1].rstrip("/")
            async with trio_ws.connect(f"{base}/chat/lobby") as ws:
                await ws.send("hi")
                assert await ws.recv() == "[lobby] hi"
            async with trio_ws.connect(f"{base}/user/41") as ws:
                assert await ws.recv() == "hello, user 41; next is 42"
            with pytest.raises(InvalidStatus) as caught:
                async with trio_ws.connect(f"{base}/nowhere"):
                    pass
            assert caught.value.response.status_code == 404
    finally:
        process.kill()
        await process.wait()
    assert process.returncode is not None
