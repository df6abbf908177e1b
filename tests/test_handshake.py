"""The opening handshake (RFC 6455 §4) without I/O: request bytes in, 101 or HTTP error out."""

from __future__ import annotations

import base64
import hashlib
import random
from typing import NamedTuple

import h11
import pytest
from wsproto.events import BytesMessage, TextMessage

from tests.test_deflate import inflate_within
from trio_ws._handshake import (
    MAX_HEAD_SIZE,
    MAX_REJECT_BODY,
    ClientHandshake,
    HandshakeRejected,
    Opened,
    ServerHandshake,
    write_head,
)
from trio_ws._uri import parse_uri
from trio_ws.exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidHeaderFormat,
    InvalidHeaderValue,
    InvalidMessage,
    InvalidStatus,
    InvalidUpgrade,
    NegotiationError,
)
from trio_ws.http import Headers, Request, Response, headers_from_head

# RFC 6455 §1.3: the example key and the Sec-WebSocket-Accept it calls for.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

VALID_HEADERS: tuple[tuple[str, str], ...] = (
    ("Host", "example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Sec-WebSocket-Version", "13"),
)


def build_request(
    headers: tuple[tuple[str, str], ...] = VALID_HEADERS,
    *,
    start_line: str = "GET /chat HTTP/1.1",
) -> bytes:
    """An HTTP request head, as a client would send it."""
    return "\r\n".join([start_line, *(f"{n}: {v}" for n, v in headers), "", ""]).encode()


def without(name: str) -> tuple[tuple[str, str], ...]:
    """The valid headers, less ``name``."""
    return tuple(header for header in VALID_HEADERS if header[0] != name)


def replacing(name: str, value: str) -> tuple[tuple[str, str], ...]:
    """The valid headers, with ``value`` for ``name``."""
    return tuple((n, value if n == name else v) for n, v in VALID_HEADERS)


def padded_request(head_size: int) -> bytes:
    """A valid request whose head is exactly ``head_size`` bytes long."""
    base = len(build_request((*VALID_HEADERS, ("X-Padding", ""))))
    request = build_request((*VALID_HEADERS, ("X-Padding", "a" * (head_size - base))))
    assert len(request) == head_size
    return request


def parse_response(data: bytes) -> Response:
    """Split an HTTP response into status, headers and body; check its Content-Length."""
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, f"no end of head in {data!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = Headers()
    for line in lines:
        name, _, value = line.partition(": ")
        headers.add(name, value)
    if "Content-Length" in headers:
        assert int(headers["Content-Length"]) == len(body)
    return Response(int(status), reason, headers, body)


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept that answers ``key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


def masked_text_frame(text: str) -> bytes:
    """One client-to-server text frame (masked, RFC 6455 §5.3); short texts only."""
    payload = text.encode()
    assert len(payload) < 126
    mask = b"\x37\xfa\x21\x3d"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


class BadRequest(NamedTuple):
    """A request that breaks RFC 6455 §4.2.1 or HTTP, and the answer it must get."""

    data: bytes
    status: int
    headers: dict[str, str]  # headers the answer must carry
    names: str  # what the answer's body must mention


_SHORT_KEY = base64.b64encode(b"x" * 15).decode()

BAD_REQUESTS = {
    "post": BadRequest(
        build_request(start_line="POST /chat HTTP/1.1"), 405, {"Allow": "GET"}, "GET"
    ),
    "http-1.0": BadRequest(build_request(start_line="GET /chat HTTP/1.0"), 400, {}, "HTTP/1.1"),
    "no-host": BadRequest(build_request(without("Host")), 400, {}, "Host"),
    "no-upgrade": BadRequest(
        build_request(without("Upgrade")), 426, {"Upgrade": "websocket"}, "Upgrade"
    ),
    "wrong-upgrade": BadRequest(
        build_request(replacing("Upgrade", "h2c")), 426, {"Upgrade": "websocket"}, "Upgrade"
    ),
    "no-connection": BadRequest(
        build_request(without("Connection")), 426, {"Upgrade": "websocket"}, "Connection"
    ),
    "wrong-connection": BadRequest(
        build_request(replacing("Connection", "keep-alive")),
        426,
        {"Upgrade": "websocket"},
        "Connection",
    ),
    "no-version": BadRequest(
        build_request(without("Sec-WebSocket-Version")), 400, {}, "Sec-WebSocket-Version"
    ),
    "wrong-version": BadRequest(
        build_request(replacing("Sec-WebSocket-Version", "8")),
        426,
        {"Sec-WebSocket-Version": "13"},
        "Sec-WebSocket-Version",
    ),
    "no-key": BadRequest(
        build_request(without("Sec-WebSocket-Key")), 400, {}, "Sec-WebSocket-Key"
    ),
    "two-keys": BadRequest(
        build_request((*VALID_HEADERS, ("Sec-WebSocket-Key", RFC_KEY))),
        400,
        {},
        "Sec-WebSocket-Key",
    ),
    "short-key": BadRequest(
        build_request(replacing("Sec-WebSocket-Key", _SHORT_KEY)), 400, {}, "16 bytes"
    ),
    "non-base64-key": BadRequest(
        build_request(replacing("Sec-WebSocket-Key", "not base64 at all!!!")),
        400,
        {},
        "16 bytes",
    ),
    "oversized-head": BadRequest(padded_request(2**20), 431, {}, f"{MAX_HEAD_SIZE:,}-byte limit"),
    "not-http": BadRequest(b"HELLO THERE\r\n\r\n", 400, {}, "invalid HTTP request"),
    "header-without-colon": BadRequest(
        build_request(start_line="GET /chat HTTP/1.1\r\nno colon here"),
        400,
        {},
        "invalid HTTP request",
    ),
}


def accept(
    data: bytes,
    *,
    subprotocols: tuple[str, ...] = (),
    compression: str | None = None,
    headers: Headers | None = None,
    server_header: str | None = None,
) -> tuple[Request, Response, Opened]:
    """Feed ``data`` to a ServerHandshake and accept: (request, parsed 101, outcome)."""
    handshake = ServerHandshake(server_header=server_header)
    request = handshake.receive_data(data)
    assert request is not None
    response, opened = handshake.accept(
        subprotocols=subprotocols,
        compression=compression,
        max_size=None,
        headers=headers or Headers(),
    )
    return request, parse_response(response), opened


def client_handshake(subprotocols: tuple[str, ...] = ()) -> ClientHandshake:
    return ClientHandshake(
        parse_uri("ws://example.com/chat?room=1"),
        subprotocols=subprotocols,
        compression=None,
        max_size=None,
        headers=Headers(),
    )


def key_of(client: ClientHandshake) -> str:
    """The Sec-WebSocket-Key in a client's request."""
    request = ServerHandshake(server_header=None).receive_data(client.request_bytes)
    assert request is not None
    return request.headers["Sec-WebSocket-Key"]


def test_the_client_request_is_written_as_h11_would_parse_it() -> None:
    """The request head, written by trio_ws (h11 only reads the answer): the request line, the
    handshake's headers in order, then the additional ones as given, each as one line."""
    client = ClientHandshake(
        parse_uri("ws://example.com:8080/chat?room=1"),
        subprotocols=("chat", "superchat"),
        compression=None,
        max_size=None,
        headers=Headers([("User-Agent", "tests/1"), ("X-Trace", "a b\tc")]),
    )
    key = key_of(client)
    assert (
        client.request_bytes
        == (
            "GET /chat?room=1 HTTP/1.1\r\n"
            "Host: example.com:8080\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: chat, superchat\r\n"
            "User-Agent: tests/1\r\n"
            "X-Trace: a b\tc\r\n"
            "\r\n"
        ).encode()
    )
    server = h11.Connection(h11.SERVER)
    server.receive_data(client.request_bytes)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert (request.method, request.target) == (b"GET", b"/chat?room=1")
    assert len(request.headers) == 8


@pytest.mark.parametrize(
    ("start_line", "headers", "problem"),
    [
        ("GET / HTTP/1.1", [("X-Bad", "a\r\nInjected: yes")], "cannot send the header"),
        ("GET / HTTP/1.1", [("X-Bad", "nul\x00")], "cannot send the header"),
        ("GET / HTTP/1.1", [("Bad Name", "x")], "cannot send the header"),
        ("GET / HTTP/1.1", [("", "x")], "cannot send the header"),
        ("HTTP/1.1 101 OK\r\nInjected: yes", [], "cannot send the line"),
        ("GET / HTTP/1.1", [("X-Euro", "€")], "cannot send this head in latin-1"),
    ],
)
def test_a_head_that_cannot_go_on_the_wire_is_refused(
    start_line: str, headers: list[tuple[str, str]], problem: str
) -> None:
    """write_head() refuses what would smuggle another header or line in, or what the
    encoding cannot carry, with a ValueError that says which."""
    with pytest.raises(ValueError, match=problem):
        write_head(start_line, headers, "latin-1")


def switching_protocols(key: str, *extra: str) -> bytes:
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
        *extra,
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


# -- the server side -----------------------------------------------------------------------------


def test_valid_request_is_answered_101_with_the_rfc_accept_key() -> None:
    """A request that follows RFC 6455 §4.2.1 gets a 101 whose Sec-WebSocket-Accept is the one
    RFC 6455 §1.3 computes for its key; the outcome records the request and the response."""
    request, response, opened = accept(build_request())

    assert request.path == "/chat"
    assert request.headers["Sec-WebSocket-Key"] == RFC_KEY
    assert response.status_code == 101
    assert response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT
    assert response.headers["Upgrade"].lower() == "websocket"
    assert response.headers["Connection"].lower() == "upgrade"
    assert opened.request == request
    assert opened.response.status_code == 101
    assert opened.response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT
    assert opened.subprotocol is None


def test_opened_connection_keeps_both_heads_as_sent_on_the_wire() -> None:
    """The opened connection's request and response headers are those on the wire: names as
    sent, in order, repeated names kept, values without surrounding whitespace."""
    data = build_request((*VALID_HEADERS, ("x-Custom", "  a  "), ("X-CUSTOM", "b")))
    handshake = ServerHandshake(server_header="trio_ws-test")
    assert handshake.receive_data(data) is not None
    sent, opened = handshake.accept(
        subprotocols=(), compression=None, max_size=None, headers=Headers([("X-Extra", "1")])
    )
    assert list(opened.request.headers.raw_items()) == [
        *VALID_HEADERS,
        ("x-Custom", "a"),
        ("X-CUSTOM", "b"),
    ]
    assert opened.request.headers.get_all("x-custom") == ["a", "b"]
    assert list(opened.response.headers.raw_items()) == [
        tuple(line.split(": ", 1)) for line in sent.decode().split("\r\n")[1:-2]
    ]
    assert opened.response.headers["X-Extra"] == "1"


def test_opened_request_headers_parse_from_a_head_with_bare_newlines() -> None:
    """h11 accepts LF line endings as well as CRLF; the kept head parses the same."""
    handshake = ServerHandshake(server_header=None)
    assert handshake.receive_data(build_request().replace(b"\r\n", b"\n")) is not None
    _, opened = handshake.accept(
        subprotocols=(), compression=None, max_size=None, headers=Headers()
    )
    assert list(opened.request.headers.raw_items()) == list(VALID_HEADERS)


def test_headers_from_head_behave_like_headers_built_from_their_pairs() -> None:
    """http.headers_from_head (what the handshake keeps) is a Headers like any other: equal to
    one built from the same pairs, copied by Headers(), added to, never parsed twice wrong."""
    head = build_request((*VALID_HEADERS, ("X-A", "1"), ("x-a", " 2 ")))
    pairs = [*VALID_HEADERS, ("X-A", "1"), ("x-a", "2")]
    lazy = headers_from_head(head)
    assert type(lazy) is Headers
    assert lazy == Headers(pairs)
    assert list(Headers(headers_from_head(head)).raw_items()) == pairs
    assert headers_from_head(head).get_all("X-A") == ["1", "2"]
    lazy.add("X-B", "3")
    assert list(lazy.raw_items()) == [*pairs, ("X-B", "3")]
    assert repr(headers_from_head(b"HTTP/1.1 101 OK\r\nA: b\r\n\r\n")) == "Headers([('A', 'b')])"


def test_request_head_is_complete_only_at_its_last_byte() -> None:
    """Fed one byte at a time, the request is reported once, on its last byte, and not before."""
    handshake = ServerHandshake(server_header=None)
    data = build_request()
    outcomes = [handshake.receive_data(data[i : i + 1]) for i in range(len(data))]

    assert outcomes[:-1] == [None] * (len(data) - 1)
    assert outcomes[-1] is not None
    assert outcomes[-1].path == "/chat"


def test_upgrade_and_connection_tokens_match_regardless_of_case_and_company() -> None:
    """Upgrade and Connection are token lists compared without regard to case (RFC 6455 §4.2.1):
    "keep-alive, Upgrade" and "WebSocket" qualify."""
    headers = replacing("Connection", "keep-alive, Upgrade")
    headers = tuple((n, "WebSocket" if n == "Upgrade" else v) for n, v in headers)

    _, response, _ = accept(build_request(headers))

    assert response.status_code == 101


@pytest.mark.parametrize("case", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_request_breaking_rfc_6455_gets_its_specific_http_error(case: BadRequest) -> None:
    """Each breach of RFC 6455 §4.2.1 or HTTP is answered with its own status and headers, a
    text body naming the problem and Connection: close."""
    handshake = ServerHandshake(server_header=None)

    with pytest.raises(HandshakeRejected) as caught:
        assert handshake.receive_data(case.data) is not None
        handshake.check_upgrade()

    assert caught.value.status_code == case.status
    response = parse_response(caught.value.response)
    assert response.status_code == case.status
    assert "close" in response.headers.get_all("Connection")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    for name, value in case.headers.items():
        assert response.headers.get_all(name) == [value]
    assert case.names in response.body.decode()
    assert case.names in str(caught.value)


def test_oversized_head_arriving_in_pieces_gets_431() -> None:
    """A head over MAX_HEAD_SIZE gets 431 even when read in chunks, as the server reads it."""
    data = padded_request(2**20)
    handshake = ServerHandshake(server_header=None)

    with pytest.raises(HandshakeRejected) as caught:
        for start in range(0, len(data), 16 * 1024):
            assert handshake.receive_data(data[start : start + 16 * 1024]) is None

    assert caught.value.status_code == 431
    assert f"{MAX_HEAD_SIZE:,}-byte limit" in parse_response(caught.value.response).body.decode()


@pytest.mark.parametrize("chunk_size", [1024, 16 * 1024, 64 * 1024], ids=lambda n: f"{n}B-reads")
def test_head_size_limit_is_exact_whatever_the_reads(chunk_size: int) -> None:
    """A head of exactly MAX_HEAD_SIZE bytes is accepted and one byte more gets 431, however
    the bytes are split into reads."""

    def feed(data: bytes) -> Request | None:
        handshake = ServerHandshake(server_header=None)
        request = None
        for start in range(0, len(data), chunk_size):
            request = handshake.receive_data(data[start : start + chunk_size])
        return request

    assert feed(padded_request(MAX_HEAD_SIZE)) is not None
    with pytest.raises(HandshakeRejected) as caught:
        feed(padded_request(MAX_HEAD_SIZE + 1))
    assert caught.value.status_code == 431


@pytest.mark.parametrize(
    "sent", [b"", b"GET /chat HTTP/1.1\r\nHost: exa"], ids=["nothing", "half"]
)
def test_eof_before_the_head_is_complete_raises_invalid_handshake(sent: bytes) -> None:
    """A client that closes before finishing its request gets no answer: there is nobody to
    read it, so the outcome is InvalidHandshake, not an HTTP error."""
    handshake = ServerHandshake(server_header=None)
    if sent:
        assert handshake.receive_data(sent) is None

    with pytest.raises(InvalidHandshake) as caught:
        handshake.receive_data(b"")

    assert "closed the connection" in str(caught.value)


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        ("chat, superchat", ("superchat", "chat"), "superchat"),
        ("superchat, chat", ("chat", "superchat"), "chat"),
        ("chat", ("superchat",), None),
        (None, ("chat",), None),
    ],
    ids=["server-prefers-second", "server-prefers-first", "no-overlap", "none-offered"],
)
def test_subprotocol_is_the_servers_first_choice_that_the_client_offers(
    offered: str | None, supported: tuple[str, ...], chosen: str | None
) -> None:
    """The server picks its most preferred subprotocol among the client's; with no overlap it
    picks none and sends no Sec-WebSocket-Protocol header."""
    headers = (
        VALID_HEADERS if offered is None else (*VALID_HEADERS, ("Sec-WebSocket-Protocol", offered))
    )

    _, response, opened = accept(build_request(headers), subprotocols=supported)

    assert opened.subprotocol == chosen
    assert response.headers.get_all("Sec-WebSocket-Protocol") == (
        [] if chosen is None else [chosen]
    )


@pytest.mark.parametrize(("compression", "accepted"), [("deflate", True), (None, False)])
def test_permessage_deflate_is_accepted_only_with_compression_deflate(
    compression: str | None, accepted: bool
) -> None:
    """An offer of permessage-deflate (RFC 7692) is accepted when compression="deflate" and
    ignored, with no Sec-WebSocket-Extensions header at all, when compression=None."""
    offer = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")

    _, response, _ = accept(build_request((*VALID_HEADERS, offer)), compression=compression)

    extensions = response.headers.get_all("Sec-WebSocket-Extensions")
    if accepted:
        assert len(extensions) == 1
        assert extensions[0].startswith("permessage-deflate")
    else:
        assert extensions == []


def test_no_permessage_deflate_without_an_offer() -> None:
    """compression="deflate" accepts the extension; it never imposes it on a client that did
    not offer it."""
    _, response, _ = accept(build_request(), compression="deflate")

    assert "Sec-WebSocket-Extensions" not in response.headers


def test_frame_sent_right_after_the_request_is_kept_for_the_connection() -> None:
    """Bytes that arrive with the request, before the 101 went out, belong to the WebSocket
    connection: the opened wsproto connection yields them as a message."""
    handshake = ServerHandshake(server_header=None)
    assert handshake.receive_data(build_request() + masked_text_frame("early bird")) is not None

    _, opened = handshake.accept(
        subprotocols=(), compression=None, max_size=None, headers=Headers()
    )

    events = list(opened.ws.events())
    assert [(type(e), e.data) for e in events if isinstance(e, TextMessage)] == [
        (TextMessage, "early bird")
    ]


def test_server_header_and_additional_headers_are_sent() -> None:
    """The 101 carries the Server header and the additional headers; rejections carry the
    Server header too; server_header=None sends no Server header."""
    extra = Headers([("X-Served-By", "tests"), ("Set-Cookie", "a=1")])

    _, response, _ = accept(build_request(), headers=extra, server_header="tests/1.0")
    _, bare, _ = accept(build_request(), server_header=None)
    with pytest.raises(HandshakeRejected) as caught:
        ServerHandshake(server_header="tests/1.0").receive_data(BAD_REQUESTS["post"].data)

    assert response.headers.get_all("Server") == ["tests/1.0"]
    assert response.headers.get_all("X-Served-By") == ["tests"]
    assert response.headers.get_all("Set-Cookie") == ["a=1"]
    assert "Server" not in bare.headers
    assert parse_response(caught.value.response).headers.get_all("Server") == ["tests/1.0"]


def test_reject_builds_a_text_error_response() -> None:
    """reject() gives a complete HTTP error with the message as a text body and Connection:
    close, for answers the server chooses itself (such as 503 while shutting down)."""
    data = ServerHandshake(server_header=None).reject(503, "the server is shutting down")

    response = parse_response(data)
    assert response.status_code == 503
    assert response.headers["Connection"] == "close"
    assert response.body == b"the server is shutting down\n"


# -- the client side -----------------------------------------------------------------------------


def test_client_request_is_accepted_by_the_server_and_its_101_by_the_client() -> None:
    """The client's request passes every server check, and the server's 101 completes the
    client's handshake: both sides agree on the subprotocol and on the path."""
    client = client_handshake(subprotocols=("v2", "v1"))
    server = ServerHandshake(server_header=None)

    request = server.receive_data(client.request_bytes)
    assert request is not None
    response, server_opened = server.accept(
        subprotocols=("v1", "v2"), compression=None, max_size=None, headers=Headers()
    )
    client_opened = client.receive_data(response)

    assert request.path == "/chat?room=1"
    assert request.headers["Host"] == "example.com"
    assert client_opened is not None
    assert client_opened.response.status_code == 101
    assert client_opened.request.path == "/chat?room=1"
    assert client_opened.subprotocol == server_opened.subprotocol == "v1"


def test_client_waits_for_the_whole_101() -> None:
    """Fed one byte at a time, the client's handshake completes on the 101's last byte only."""
    client = client_handshake()
    response = switching_protocols(key_of(client))

    outcomes = [client.receive_data(response[i : i + 1]) for i in range(len(response))]

    assert outcomes[:-1] == [None] * (len(response) - 1)
    assert isinstance(outcomes[-1], Opened)


def test_client_non_101_raises_invalid_status_with_status_headers_and_body() -> None:
    """Any status but 101 raises InvalidStatus carrying the server's status, headers and body."""
    client = client_handshake()
    data = b"HTTP/1.1 403 Forbidden\r\nX-Why: tests\r\nContent-Length: 9\r\n\r\nforbidden"

    with pytest.raises(InvalidStatus) as caught:
        client.receive_data(data)

    response = caught.value.response
    assert response.status_code == 403
    assert response.headers["X-Why"] == "tests"
    assert response.body == b"forbidden"


def test_client_non_101_without_body_raises_invalid_status() -> None:
    """A rejection with an empty body raises InvalidStatus at once, with body b""."""
    client = client_handshake()

    with pytest.raises(InvalidStatus) as caught:
        client.receive_data(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    assert caught.value.response.status_code == 404
    assert caught.value.response.body == b""


@pytest.mark.parametrize("chunk_size", [1000, 2**20], ids=["in-chunks", "at-once"])
def test_client_keeps_at_most_64_kib_of_a_rejection_body(chunk_size: int) -> None:
    """A rejection body longer than MAX_REJECT_BODY is cut to its first MAX_REJECT_BODY bytes,
    and InvalidStatus comes without waiting for the rest."""
    client = client_handshake()
    body = bytes(range(256)) * 1024  # 256 KiB
    head = f"HTTP/1.1 500 Internal Server Error\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    data = head + body[: 2 * MAX_REJECT_BODY]  # never the whole body

    with pytest.raises(InvalidStatus) as caught:
        for start in range(0, len(data), chunk_size):
            client.receive_data(data[start : start + chunk_size])

    assert caught.value.response.status_code == 500
    assert caught.value.response.body == body[:MAX_REJECT_BODY]


def test_client_rejection_body_ending_at_eof_is_kept() -> None:
    """A rejection whose body runs until the server closes gets that body in InvalidStatus."""
    client = client_handshake()
    assert client.receive_data(b"HTTP/1.1 503 Service Unavailable\r\n\r\ntry later") is None

    with pytest.raises(InvalidStatus) as caught:
        client.receive_eof()

    assert caught.value.response.status_code == 503
    assert caught.value.response.body == b"try later"


@pytest.mark.parametrize(
    "accept_header",
    [f"Sec-WebSocket-Accept: {RFC_ACCEPT}", "Sec-WebSocket-Accept: bm90IGl0", None],
    ids=["another-keys-accept", "garbage", "missing"],
)
def test_client_101_with_a_wrong_accept_key_raises_invalid_handshake(
    accept_header: str | None,
) -> None:
    """A 101 whose Sec-WebSocket-Accept does not answer the client's key (RFC 6455 §4.2.2) is
    an InvalidHandshake, not an InvalidStatus."""
    client = client_handshake()
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade"]
    if accept_header is not None:
        lines.append(accept_header)
    data = "\r\n".join([*lines, "", ""]).encode()

    with pytest.raises(InvalidHeaderValue) as caught:
        client.receive_data(data)

    assert caught.value.name == "Sec-WebSocket-Accept"
    assert caught.value.value == (None if accept_header is None else accept_header.split(": ")[1])


def test_client_eof_in_the_middle_of_the_response_raises_invalid_handshake() -> None:
    """The server closing before its response head is complete is an InvalidHandshake that
    says so, not an InvalidStatus."""
    client = client_handshake()
    response = switching_protocols(key_of(client))
    assert client.receive_data(response[:30]) is None

    with pytest.raises(InvalidMessage) as caught:
        client.receive_eof()

    assert "closed the connection" in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "drop", "error", "detail"),
    [
        ((), "Upgrade: websocket", InvalidUpgrade, "missing Upgrade header"),
        (("Upgrade: h2c",), "Upgrade: websocket", InvalidUpgrade, "invalid Upgrade header: h2c"),
        ((), "Connection: Upgrade", InvalidUpgrade, "missing Connection header"),
        (
            ("Sec-WebSocket-Protocol: v1", "Sec-WebSocket-Protocol: v2"),
            None,
            InvalidHeader,
            "invalid Sec-WebSocket-Protocol header: v1, v2",
        ),
        (("Sec-WebSocket-Protocol: v9",), None, NegotiationError, "not offered: v9"),
        (("Sec-WebSocket-Extensions: x-unknown",), None, NegotiationError, "not offered"),
        (
            ("Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate",),
            None,
            NegotiationError,
            "twice",
        ),
        (
            ("Sec-WebSocket-Extensions: permessage-deflate\x1d",),
            None,
            InvalidHeaderFormat,
            "invalid Sec-WebSocket-Extensions header",
        ),
    ],
    ids=[
        "no-upgrade",
        "other-upgrade",
        "no-connection",
        "two-subprotocols",
        "subprotocol-not-offered",
        "extension-not-offered",
        "extension-twice",
        "extension-not-a-token",
    ],
)
def test_client_101_breaking_rfc_6455_raises_websockets_exception_for_it(
    extra: tuple[str, ...], drop: str | None, error: type[InvalidHandshake], detail: str
) -> None:
    """Each breach of RFC 6455 §4.2.2 in a 101 raises the exception websockets raises for it,
    all of them InvalidHandshake, with the header and value in the message."""
    client = ClientHandshake(
        parse_uri("ws://example.com/chat"),
        subprotocols=("v1", "v2"),
        compression="deflate",
        max_size=None,
        headers=Headers(),
    )
    head = switching_protocols(key_of(client), *extra).decode("latin-1")
    if drop is not None:
        head = head.replace(drop + "\r\n", "")

    with pytest.raises(error) as caught:
        client.receive_data(head.encode("latin-1"))

    assert type(caught.value) is error
    assert isinstance(caught.value, InvalidHandshake)
    assert detail in str(caught.value)


def test_client_non_http_response_raises_invalid_handshake() -> None:
    """Bytes that are not an HTTP response are an InvalidHandshake."""
    client = client_handshake()

    with pytest.raises(InvalidMessage) as caught:
        client.receive_data(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    assert isinstance(caught.value.__cause__, h11.RemoteProtocolError)


# -- permessage-deflate negotiation --------------------------------------------------------------

CLIENT_DEFLATE_OFFER = (
    "permessage-deflate; client_max_window_bits, "
    "permessage-deflate; client_max_window_bits; client_no_context_takeover"
)


def deflate_client(compression: str | None = "deflate") -> ClientHandshake:
    return ClientHandshake(
        parse_uri("ws://example.com/chat"),
        subprotocols=(),
        compression=compression,
        max_size=None,
        headers=Headers(),
    )


def frame_payload(data: bytes) -> tuple[bool, bytes]:
    """(RSV1, payload) of the one whole frame in ``data``, unmasked if it is masked."""
    rsv1, masked, length = bool(data[0] & 0x40), bool(data[1] & 0x80), data[1] & 0x7F
    start = 2
    if length >= 126:
        size = 2 if length == 126 else 8
        length, start = int.from_bytes(data[2 : 2 + size], "big"), 2 + size
    if masked:
        mask, start = data[start : start + 4], start + 4
        payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(data[start:]))
    else:
        payload = data[start:]
    assert len(payload) == length
    return rsv1, payload


@pytest.mark.parametrize(
    ("compression", "offer"), [("deflate", CLIENT_DEFLATE_OFFER), (None, None)]
)
def test_client_offers_permessage_deflate_only_with_compression_deflate(
    compression: str | None, offer: str | None
) -> None:
    """compression="deflate" offers permessage-deflate twice, the second time with
    client_no_context_takeover for servers that insist on it; compression=None offers nothing."""
    request = ServerHandshake(server_header=None).receive_data(
        deflate_client(compression).request_bytes
    )

    assert request is not None
    assert request.headers.get_all("Sec-WebSocket-Extensions") == ([offer] if offer else [])


def test_default_offer_and_answer_compress_both_ways() -> None:
    """Both sides with compression="deflate": the server takes the client's first offer with
    12-bit windows both ways, and each side's messages go out compressed and come in whole."""
    client = deflate_client()
    server = ServerHandshake(server_header=None)
    assert server.receive_data(client.request_bytes) is not None
    response, server_opened = server.accept(
        subprotocols=(), compression="deflate", max_size=None, headers=Headers()
    )
    client_opened = client.receive_data(response)

    assert client_opened is not None
    answer = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    assert client_opened.response.headers.get_all("Sec-WebSocket-Extensions") == [answer]
    text = "compress me " * 100
    for sender, receiver in ((client_opened, server_opened), (server_opened, client_opened)):
        data = sender.ws.send(TextMessage(data=text))
        rsv1, payload = frame_payload(data)
        assert rsv1
        assert len(payload) < 50
        receiver.ws.receive_data(data)
        assert list(receiver.ws.events()) == [TextMessage(data=text)]


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        (["permessage-deflate"], "server_max_window_bits=12"),
        (["permessage-deflate; server_max_window_bits=10"], "server_max_window_bits=10"),
        (
            ["permessage-deflate; client_max_window_bits=9; server_max_window_bits=15"],
            "server_max_window_bits=12; client_max_window_bits=9",
        ),
        (
            ["permessage-deflate; server_no_context_takeover"],
            "server_no_context_takeover; server_max_window_bits=12",
        ),
        (
            ["permessage-deflate; client_no_context_takeover; client_max_window_bits"],
            "client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
        ),
        (
            ["permessage-deflate; server_max_window_bits=8, permessage-deflate"],
            "server_max_window_bits=12",
        ),
        (
            ["x-webkit-deflate-frame", "permessage-deflate; client_max_window_bits=10"],
            "server_max_window_bits=12; client_max_window_bits=10",
        ),
        (["permessage-deflate; mystery_parameter"], None),
        (["x-webkit-deflate-frame"], None),
    ],
    ids=[
        "bare",
        "server-window",
        "both-windows",
        "server-no-context-takeover",
        "client-no-context-takeover",
        "first-offer-declined-second-taken",
        "other-extension-on-another-line",
        "unknown-parameter",
        "no-permessage-deflate",
    ],
)
def test_server_answers_deflate_offers_crafted_by_hand(
    offers: list[str], answer: str | None
) -> None:
    """The server's Sec-WebSocket-Extensions answers the first acceptable offer, over any
    number of header lines, keeping each window to what the client allows and at most 12 bits;
    with nothing acceptable it sends no header at all."""
    headers = (*VALID_HEADERS, *(("Sec-WebSocket-Extensions", offer) for offer in offers))

    _, response, _ = accept(build_request(headers), compression="deflate")

    assert response.headers.get_all("Sec-WebSocket-Extensions") == (
        [f"permessage-deflate; {answer}"] if answer else []
    )


def test_negotiated_window_and_no_context_takeover_are_what_our_side_compresses_with(
    side: str,
) -> None:
    """Parameters a peer asks for by hand, 9-bit windows and no context takeover for our side,
    are the ones used: each message, even data repeating 2 KiB apart, inflates on its own
    within a 9-bit window."""
    params = f"{side}_max_window_bits=9; {side}_no_context_takeover"
    if side == "client":
        client = deflate_client()
        extensions = f"Sec-WebSocket-Extensions: permessage-deflate; {params}"
        opened = client.receive_data(switching_protocols(key_of(client), extensions))
        assert opened is not None
    else:
        offer = ("Sec-WebSocket-Extensions", f"permessage-deflate; {params}")
        _, _, opened = accept(build_request((*VALID_HEADERS, offer)), compression="deflate")
    message = random.Random(1).randbytes(2048) * 2
    for _ in range(2):
        rsv1, payload = frame_payload(opened.ws.send(BytesMessage(data=message)))
        assert rsv1
        assert inflate_within(payload, 9) == message
