"""basic_auth(): HTTP Basic authentication as serve()'s process_request, over real sockets."""

from __future__ import annotations

import base64
import hmac
import logging
import ssl
import subprocess
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

import trio_ws
from trio_ws._options import connection_options
from trio_ws.auth import basic_auth
from trio_ws.exceptions import InvalidStatus
from trio_ws.http import Headers, Request, Response
from trio_ws.server import Server, ServerConnection

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

ALICE = ("alice", "wonderland")

# -- helpers ---------------------------------------------------------------------------------


def basic(username: str, password: str) -> str:
    """The Authorization value for these credentials (RFC 7617: base64 of UTF-8 user:pass)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def header(value: str) -> dict[str, str]:
    return {"Authorization": value}


async def greet(ws: ServerConnection) -> None:
    """Tell the client who the server thinks it is."""
    await ws.send(repr(ws.username))


@asynccontextmanager
async def serving(
    process_request: Callable[..., Any], **options: Any
) -> AsyncGenerator[Server, None]:
    """serve(greet) on 127.0.0.1, port 0, keepalive off; hard-stop it on exit."""
    async with trio.open_nursery() as nursery:
        serve = partial(
            trio_ws.serve, process_request=process_request, ping_interval=None, **options
        )
        server: Server = await nursery.start(serve, greet, "127.0.0.1", 0)
        yield server
        server.cancel_scope.cancel()


async def username_seen(
    server: Server, headers: Iterable[tuple[str, str]] | dict[str, str], **options: Any
) -> str:
    """Connect with these headers; what greet() saw as ws.username (a repr)."""
    scheme = "wss" if "ssl" in options else "ws"
    uri = f"{scheme}://127.0.0.1:{server.port}/"
    async with trio_ws.connect(
        uri, additional_headers=headers, ping_interval=None, **options
    ) as ws:
        message = await ws.recv()
    assert isinstance(message, str)
    return message


async def refusal(server: Server, headers: Iterable[tuple[str, str]] | dict[str, str]) -> Response:
    """Connect with these headers, expecting the handshake to be refused; the response."""
    uri = f"ws://127.0.0.1:{server.port}/"
    with pytest.raises(InvalidStatus) as caught:
        async with trio_ws.connect(uri, additional_headers=headers, ping_interval=None):
            pass  # pragma: no cover
    return caught.value.response


def assert_challenge(response: Response, realm: str = "chat") -> None:
    """A 401 with one Basic challenge for ``realm``, in UTF-8 (RFC 7617 §2.1)."""
    assert response.status_code == 401
    assert response.headers.get_all("WWW-Authenticate") == [
        f'Basic realm="{realm}", charset="UTF-8"'
    ]


def offline_connection() -> ServerConnection:
    """A ServerConnection in its opening handshake, for calling the hook directly."""
    stream, _ = trio.testing.memory_stream_pair()
    return ServerConnection(stream, options=connection_options())


# -- accepted --------------------------------------------------------------------------------


async def test_good_credentials_let_the_handler_see_the_username() -> None:
    """Valid credentials pass the handshake, and the handler reads the user-id as ws.username;
    nothing is counted as refused."""
    async with serving(basic_auth("chat", credentials=ALICE)) as server:
        assert await username_seen(server, header(basic(*ALICE))) == "'alice'"
        assert not server.stats.handshakes_refused
        assert server.stats.connections_total == 1


async def test_several_credentials_each_let_their_own_user_in() -> None:
    """With several pairs, each user gets in with their own password, not with another's."""
    users = [("alice", "wonderland"), ("bob", "builder"), ("carol", "")]
    async with serving(basic_auth("chat", credentials=users)) as server:
        for username, password in users:
            assert await username_seen(server, header(basic(username, password))) == repr(username)
        assert_challenge(await refusal(server, header(basic("bob", "wonderland"))))


async def test_credentials_from_a_generator_or_json_lists_are_accepted() -> None:
    """An iterable is read once (a generator works), and pairs may be lists, as JSON has them;
    a top-level list of two str is one pair, as in websockets."""
    from_generator = basic_auth(credentials=(pair for pair in [ALICE, ("bob", "builder")]))
    from_json = basic_auth(credentials=[["alice", "wonderland"], ["bob", "builder"]])
    one_list = basic_auth(credentials=["alice", "wonderland"])
    for hook in (from_generator, from_json, one_list):
        connection = offline_connection()
        request = Request("/", Headers(header(basic(*ALICE))))
        assert await hook(connection, request) is None
        assert connection.username == "alice"


async def test_scheme_is_case_insensitive() -> None:
    """RFC 9110 §11.1: "basic", "BASIC" and "Basic" are the same scheme."""
    token = basic(*ALICE).split()[1]
    async with serving(basic_auth("chat", credentials=ALICE)) as server:
        for scheme in ("basic", "BASIC", "bAsIc"):
            assert await username_seen(server, header(f"{scheme} {token}")) == "'alice'"


async def test_a_password_may_contain_colons() -> None:
    """RFC 7617 §2: the user-id ends at the first colon; the password keeps the others."""
    seen: list[tuple[str, str]] = []

    def check(username: str, password: str) -> bool:
        seen.append((username, password))
        return True

    async with serving(basic_auth("chat", check_credentials=check)) as server:
        assert await username_seen(server, header(basic("alice", "a:b::c"))) == "'alice'"
    assert seen == [("alice", "a:b::c")]

    async with serving(basic_auth("chat", credentials=("alice", "a:b::c"))) as server:
        assert await username_seen(server, header(basic("alice", "a:b::c"))) == "'alice'"
        assert_challenge(await refusal(server, header(basic("alice", "a:b"))))


async def test_non_ascii_credentials_are_utf_8() -> None:
    """User-id and password are UTF-8 (charset="UTF-8"); fixed credentials compare them as
    bytes, so non-ASCII passwords work (hmac.compare_digest refuses non-ASCII str)."""
    user = ("jürgen", "pässwörd✓")
    async with serving(basic_auth("chat", credentials=user)) as server:
        assert await username_seen(server, header(basic(*user))) == repr("jürgen")
        assert_challenge(await refusal(server, header(basic("jürgen", "passwörd✓"))))
        # The same characters in Latin-1 are not the same credentials.
        latin1 = base64.b64encode("jürgen:pässwörd".encode("latin-1")).decode()
        assert_challenge(await refusal(server, header(f"Basic {latin1}")))


# -- refused ---------------------------------------------------------------------------------


def encoded(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


BAD_HEADERS = {
    "wrong password": (header(basic("alice", "looking-glass")), "invalid credentials"),
    "unknown user": (header(basic("mallory", "wonderland")), "invalid credentials"),
    "empty password": (header(basic("alice", "")), "invalid credentials"),
    "no header": ({}, "missing credentials"),
    "bearer scheme": (header("Bearer abc.def"), "unsupported authentication scheme"),
    "digest scheme": (header('Digest username="alice"'), "unsupported authentication scheme"),
    "scheme alone": (header("Basic"), "malformed credentials"),
    "not base64": (header("Basic !!!not-base64!!!"), "malformed credentials"),
    "bad padding": (header("Basic YWxpY2U6d29uZGVybGFuZA"), "malformed credentials"),
    "two tokens": (header(basic(*ALICE) + " more"), "malformed credentials"),
    "auth-params": (header('Basic realm="chat"'), "malformed credentials"),
    "no colon": (header(encoded(b"alicewonderland")), "malformed credentials"),
    "not utf-8": (header(encoded(b"\xff\xfe:wonderland")), "malformed credentials"),
    "control character": (header(encoded(b"alice\x00:wonderland")), "malformed credentials"),
    "colon only": (header(encoded(b":")), "invalid credentials"),
}


@pytest.mark.parametrize(("headers", "body"), BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
async def test_bad_or_missing_credentials_get_401_with_the_challenge(
    headers: dict[str, str], body: str
) -> None:
    """Every failure is a 401 with the Basic challenge and a short reason, never a 500; the
    handler never runs. An unknown user and a wrong password read the same."""
    async with serving(basic_auth("chat", credentials=ALICE)) as server:
        response = await refusal(server, headers)
        assert_challenge(response)
        assert response.body == f"{body}\n".encode()
        assert server.stats.handshakes_refused == {"401": 1}
        assert server.stats.connections_total == 0


async def test_two_authorization_headers_get_400_without_a_challenge() -> None:
    """Authorization is no list (RFC 9110 §5.3): two of them make a malformed request, refused
    with 400 even when both hold valid credentials; no challenge invites a retry."""
    async with serving(basic_auth("chat", credentials=ALICE)) as server:
        twice = [("Authorization", basic(*ALICE)), ("Authorization", basic(*ALICE))]
        response = await refusal(server, twice)
        assert response.status_code == 400
        assert "WWW-Authenticate" not in response.headers
        assert response.body == b"more than one Authorization header\n"
        assert server.stats.handshakes_refused == {"400": 1}


async def test_refusals_are_counted_as_401_in_stats() -> None:
    """server.stats.handshakes_refused["401"] counts each refusal; a success is not counted."""
    async with serving(basic_auth("chat", credentials=ALICE)) as server:
        await refusal(server, {})
        await refusal(server, header(basic("alice", "nope")))
        assert await username_seen(server, header(basic(*ALICE))) == "'alice'"
        await refusal(server, header("Bearer x"))
        assert server.stats.handshakes_refused == {"401": 3}
        assert server.stats.connections_total == 1


@pytest.mark.parametrize(
    ("realm", "quoted"),
    [
        ("", '""'),
        ("chat", '"chat"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("tab\there, café", '"tab\there, café"'),
    ],
)
async def test_the_realm_is_sent_as_a_quoted_string(realm: str, quoted: str) -> None:
    """RFC 9110 §5.6.4: quotes and backslashes in the realm are escaped with a backslash;
    HTAB and Latin-1 go as they are."""
    async with serving(basic_auth(realm, credentials=ALICE)) as server:
        response = await refusal(server, {})
    challenge = f'Basic realm={quoted}, charset="UTF-8"'
    assert response.headers.get_all("WWW-Authenticate") == [challenge]


# -- check_credentials -----------------------------------------------------------------------


async def test_sync_check_credentials_decides() -> None:
    """A plain function gets the decoded user-id and password; its True lets the user in, its
    False gets 401."""
    seen: list[tuple[str, str]] = []

    def check(username: str, password: str) -> bool:
        seen.append((username, password))
        return password == f"{username}'s secret"

    async with serving(basic_auth("chat", check_credentials=check)) as server:
        assert await username_seen(server, header(basic("bob", "bob's secret"))) == "'bob'"
        assert_challenge(await refusal(server, header(basic("bob", "guess"))))
    assert seen == [("bob", "bob's secret"), ("bob", "guess")]


async def test_async_check_credentials_is_awaited() -> None:
    """An async function is awaited: it may block (a database lookup) before it decides."""
    seen: list[tuple[str, str]] = []

    async def check(username: str, password: str) -> bool:
        await trio.lowlevel.checkpoint()
        seen.append((username, password))
        return (username, password) == ALICE

    async with serving(basic_auth("chat", check_credentials=check)) as server:
        assert await username_seen(server, header(basic(*ALICE))) == "'alice'"
        assert_challenge(await refusal(server, header(basic("alice", "x"))))
    assert seen == [ALICE, ("alice", "x")]


async def test_check_credentials_not_called_for_malformed_credentials() -> None:
    """Only well-formed Basic credentials reach check_credentials."""
    seen: list[tuple[str, str]] = []

    def check(username: str, password: str) -> bool:
        seen.append((username, password))  # pragma: no cover
        return True  # pragma: no cover

    async with serving(basic_auth("chat", check_credentials=check)) as server:
        for headers, body in BAD_HEADERS.values():
            if body != "invalid credentials":
                assert_challenge(await refusal(server, headers))
    assert seen == []


class CheckFailed(Exception):
    pass


async def fail_check(username: str, password: str) -> bool:
    await trio.lowlevel.checkpoint()
    raise CheckFailed("the user database is down")


def not_a_bool(username: str, password: str) -> bool:
    return "yes"  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("check", "error"), [(fail_check, CheckFailed), (not_a_bool, TypeError)], ids=["raises", "str"]
)
async def test_failing_check_credentials_gets_500_is_logged_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
    check: Callable[[str, str], bool | Awaitable[bool]],
    error: type[Exception],
) -> None:
    """What check_credentials raises (or returning anything but a bool) propagates to the
    server: the client gets 500, the error is logged with its traceback, and the next client
    is served. A truthy non-bool never lets anyone in."""
    calls = 0

    def check_then_allow(username: str, password: str) -> bool | Awaitable[bool]:
        nonlocal calls
        calls += 1
        return check(username, password) if calls == 1 else True

    async with serving(basic_auth("chat", check_credentials=check_then_allow)) as server:
        response = await refusal(server, header(basic(*ALICE)))
        assert response.status_code == 500
        assert await username_seen(server, header(basic(*ALICE))) == "'alice'"
        assert server.stats.handshakes_refused == {"500": 1}

    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    [record] = errors
    assert record.name == "trio_ws.server"
    assert "process_request failed" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], error)


# -- timing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [ALICE, ("alice", "x"), ("alice", "a much longer wrong password"), ("mallory", "x"), ("", "")],
    ids=["right", "wrong", "longer", "unknown user", "empty"],
)
async def test_fixed_credentials_take_one_equal_length_comparison_whoever_asks(
    monkeypatch: pytest.MonkeyPatch, username: str, password: str
) -> None:
    """Whether the user exists, and however long the password, the check makes exactly one
    hmac.compare_digest of two 32-byte strings: its timing reveals neither users nor lengths."""
    compared: list[tuple[int, int]] = []

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr("trio_ws.auth.hmac", SimpleNamespace(compare_digest=compare_digest))
    hook = basic_auth(credentials=[ALICE, ("bob", "builder")])
    connection = offline_connection()
    response = await hook(connection, Request("/", Headers(header(basic(username, password)))))
    assert compared == [(32, 32)]
    assert (response is None) == ((username, password) == ALICE)


# -- the hook itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, header(basic(*ALICE)), header(basic("alice", "x")), header("Basic !")],
    ids=["none", "good", "wrong", "malformed"],
)
async def test_the_hook_checkpoints_on_every_path(headers: dict[str, str]) -> None:
    """An async hook that does not block still checkpoints, whatever the outcome."""
    hook = basic_auth(credentials=ALICE)
    with trio.testing.assert_checkpoints():
        await hook(offline_connection(), Request("/", Headers(headers)))


async def test_the_hook_leaves_username_unset_on_refusal() -> None:
    """A refused request does not touch connection.username (a hook before may have set it)."""
    connection = offline_connection()
    connection.username = "set by an earlier hook"
    hook = basic_auth(credentials=ALICE)
    response = await hook(connection, Request("/", Headers(header(basic("alice", "x")))))
    assert response is not None
    assert response.status_code == 401
    assert connection.username == "set by an earlier hook"


async def test_a_process_request_of_ones_own_can_await_the_hook() -> None:
    """The recipe: answer /healthz without credentials, pass every other request to auth."""
    auth = basic_auth("chat", credentials=ALICE)

    async def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(200, "OK\n")
        return await auth(connection, request)

    async with serving(process_request) as server:
        with pytest.raises(InvalidStatus) as caught:
            async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/healthz"):
                pass  # pragma: no cover
        assert caught.value.response.status_code == 200
        assert caught.value.response.body == b"OK\n"
        assert_challenge(await refusal(server, {}))
        assert await username_seen(server, header(basic(*ALICE))) == "'alice'"


# -- TLS -------------------------------------------------------------------------------------


async def test_basic_auth_over_tls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """Over wss://, as Basic credentials should always travel: accepted and refused alike."""
    auth = basic_auth("chat", credentials=ALICE)
    async with serving(auth, ssl=server_context) as server:
        seen = await username_seen(server, header(basic(*ALICE)), ssl=client_context)
        assert seen == "'alice'"
        uri = f"wss://127.0.0.1:{server.port}/"
        with pytest.raises(InvalidStatus) as caught:
            async with trio_ws.connect(
                uri, ssl=client_context, additional_headers=header(basic("alice", "x"))
            ):
                pass  # pragma: no cover
        assert_challenge(caught.value.response)


# -- argument checks -------------------------------------------------------------------------


def allow(username: str, password: str) -> bool:
    return True  # pragma: no cover


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({}, ValueError, "credentials or check_credentials"),
        ({"credentials": ALICE, "check_credentials": allow}, ValueError, "not both"),
        ({"credentials": "alice:wonderland"}, TypeError, "credentials must be"),
        ({"credentials": 42}, TypeError, "credentials must be"),
        ({"credentials": ("alice", 1)}, TypeError, "credentials must hold"),
        ({"credentials": [("alice", "a", "b")]}, TypeError, "credentials must hold"),
        ({"credentials": [ALICE, "bob"]}, TypeError, "credentials must hold"),
        ({"credentials": [b"alice", b"wonderland"]}, TypeError, "credentials must hold"),
        ({"credentials": []}, ValueError, "credentials is empty"),
        ({"credentials": [ALICE, ("alice", "other")]}, ValueError, "user 'alice' twice"),
        ({"check_credentials": "allow"}, TypeError, "check_credentials must be a function"),
        ({"realm": b"chat", "credentials": ALICE}, TypeError, "realm must be a str"),
        ({"realm": "a\r\nSet-Cookie: x", "credentials": ALICE}, ValueError, "realm"),
        ({"realm": "a\nb", "credentials": ALICE}, ValueError, "realm"),
        ({"realm": "nul\x00", "credentials": ALICE}, ValueError, "realm"),
        ({"realm": "チャット", "credentials": ALICE}, ValueError, "realm"),
    ],
)
def test_wrong_arguments_raise_at_once_naming_the_argument(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    """basic_auth() checks its arguments when called, not on the first request."""
    with pytest.raises(error, match=names):
        basic_auth(**kwargs)


# -- the example -----------------------------------------------------------------------------


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1024)
        assert chunk, f"the server exited before printing a line; got {data!r}"
        data += chunk
    return data.decode()


async def test_auth_server_example_runs() -> None:
    """examples/auth_server.py, run as a user would: /healthz needs no credentials, alice gets
    in and is greeted by name, a client without credentials gets the challenge."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / "auth_server.py"), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(30):
            line = await _read_line(process.stdout)
            assert line.startswith("listening on ws://127.0.0.1:")
            uri = line.split()[-1]
            headers = header(basic("alice", "wonderland"))
            async with trio_ws.connect(uri, additional_headers=headers) as ws:
                assert await ws.recv() == "hello alice"
                await ws.send("echo?")
                assert await ws.recv() == "echo?"
            for path, status in (("", 401), ("healthz", 200)):
                with pytest.raises(InvalidStatus) as caught:
                    async with trio_ws.connect(uri + path):
                        pass  # pragma: no cover
                assert caught.value.response.status_code == status
            assert caught.value.response.body == b"OK\n"
    finally:
        process.kill()
        await process.wait()
    assert process.returncode is not None
