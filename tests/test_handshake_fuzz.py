"""The opening handshake and parse_uri under random input: untrusted bytes outside the frames.

For any bytes, split into reads anywhere:

- ``ServerHandshake.receive_data``, then ``accept``: a Request only for a head that is a valid
  WebSocket upgrade (RFC 6455 §4.2.1, checked here on an independent parse of the head), and
  only from the read that brought the head's last byte; otherwise ``HandshakeRejected`` with a
  well-formed 4xx response (501 for a transfer coding h11 does not know, as RFC 9112 §6.1 asks),
  or ``InvalidHandshake`` at EOF. Never another exception; and while it waits for more of a
  head, it has been fed at most ``MAX_HEAD_SIZE`` bytes, which is all it holds.
- ``ClientHandshake.receive_data``, then ``receive_eof``: an Opened only for a valid 101 (RFC
  6455 §4.2.2, RFC 7692 §6); otherwise ``InvalidStatus`` (with at most ``MAX_REJECT_BODY`` bytes
  of body) or ``InvalidHandshake``.
- ``parse_uri``: a WebSocketURI whose parts agree, and from which a client can write a request
  that a server reads back; otherwise ``InvalidURI``.

The generators and checks take a ``random.Random``, so that ``stress/fuzz_long.py`` runs the
same properties on millions of plain random inputs; here hypothesis drives them through
``st.randoms()``, derandomized, so that CI sees the same examples every run.
"""

from __future__ import annotations

import base64
import itertools
import os
import random
import re
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trio_ws._handshake import (
    MAX_HEAD_SIZE,
    MAX_REJECT_BODY,
    ClientHandshake,
    HandshakeRejected,
    Opened,
    ServerHandshake,
)
from trio_ws._uri import WebSocketURI, parse_uri
from trio_ws.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from trio_ws.http import Headers, Request

from .test_handshake import accept_key, parse_response

#: A few thousand examples in all, derandomized; ``TRIO_WS_FUZZ_EXAMPLES=20000`` for a longer
#: hunt (stress/fuzz_long.py is faster still). No example database: nothing written to the tree.
_SCALE = int(os.environ.get("TRIO_WS_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=_SCALE or examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


randoms = st.randoms(use_true_random=False)

# -- splitting into reads -------------------------------------------------------------------


def cuts_for(rng: random.Random, size: int) -> list[int]:
    """Where to split ``size`` bytes into reads: none, a few, many, or (short data) every byte."""
    if size < 2:
        return []
    shape = rng.random()
    if shape < 0.2:
        return []
    if shape < 0.3 and size <= 600:
        return list(range(1, size))
    count = rng.choice([1, 2, 3, 8, 30])
    return sorted({rng.randrange(1, size) for _ in range(count)})


def reads(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at ``cuts``, never an empty piece (b"" means EOF to receive_data)."""
    bounds = [0, *sorted({cut for cut in cuts if 0 < cut < len(data)}), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds) if end > start]


# -- building heads -------------------------------------------------------------------------

_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:@/?"
_HOSTS = ["example.com", "localhost:8765", "[::1]:9000", "127.0.0.1", "xn--bcher-kva.example"]
_OWS = ["", " ", "  ", "\t", " \t "]
SUBPROTOCOLS = ("chat", "superchat")
DEFLATE_OFFERS = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
    "permessage-deflate; client_max_window_bits=9, permessage-deflate",
    "x-webkit-deflate-frame",
]
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_HEAD_END = re.compile(rb"\n\r?\n")  # h11's: a head ends at its first empty line
_LINE_END = re.compile(rb"\r?\n")


def _spelled(rng: random.Random, name: str) -> str:
    """A header name in any case: names are case-insensitive (RFC 9110 §5.1)."""
    return rng.choice([name, name.lower(), name.upper()])


def _head(rng: random.Random, start_line: str, headers: list[tuple[str, str]]) -> bytes:
    rng.shuffle(headers)
    newline = rng.choice(["\r\n", "\r\n", "\n"])
    lines = [start_line]
    for name, value in headers:
        lines.append(f"{_spelled(rng, name)}:{rng.choice(_OWS)}{value}{rng.choice(_OWS)}")
    return (newline.join([*lines, "", ""])).encode("latin-1")


def valid_request(rng: random.Random) -> bytes:
    """A valid WebSocket upgrade request head, shuffled, spelled and spaced at random."""
    path = "/" + "".join(rng.choice(_PATH_CHARS) for _ in range(rng.randrange(24)))
    key = base64.b64encode(rng.randbytes(16)).decode()
    headers = [
        ("Host", rng.choice(_HOSTS)),
        ("Upgrade", rng.choice(["websocket", "WebSocket", "h2c, websocket"])),
        ("Connection", rng.choice(["Upgrade", "upgrade", "keep-alive, Upgrade"])),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if rng.random() < 0.4:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(rng.sample(SUBPROTOCOLS, 2))))
    if rng.random() < 0.4:
        headers.append(("Sec-WebSocket-Extensions", rng.choice(DEFLATE_OFFERS)))
    for name in rng.sample(["User-Agent", "Origin", "Accept", "X-Trace", "Cookie"], 2):
        if rng.random() < 0.5:
            headers.append((name, "".join(rng.choice(_PATH_CHARS) for _ in range(12))))
    return _head(rng, f"GET {path} HTTP/1.1", headers)


def nonce_of(client: ClientHandshake) -> str:
    """The Sec-WebSocket-Key in the client's request."""
    match = re.search(rb"\r\nSec-WebSocket-Key: ([^\r]*)\r\n", client.request_bytes)
    assert match is not None
    return match[1].decode()


#: Where a response's Sec-WebSocket-Accept goes until ``answering`` fills it in: the client's key
#: is random, and the bytes hypothesis mutates must not depend on it.
ACCEPT_SLOT = "?" * 28


def answering(data: bytes, client: ClientHandshake) -> bytes:
    """``data`` with every intact ACCEPT_SLOT holding the accept value for ``client``'s key."""
    return data.replace(ACCEPT_SLOT.encode(), accept_key(nonce_of(client)).encode())


def valid_response(
    rng: random.Random, *, subprotocols: Sequence[str], compression: str | None
) -> bytes:
    """A valid 101 (once ``answering`` a client) accepting some of what the client offers,
    sometimes with a frame after it."""
    headers = [
        ("Upgrade", rng.choice(["websocket", "WebSocket"])),
        ("Connection", rng.choice(["Upgrade", "upgrade", "keep-alive, Upgrade"])),
        ("Sec-WebSocket-Accept", ACCEPT_SLOT),
    ]
    if subprotocols and rng.random() < 0.6:
        headers.append(("Sec-WebSocket-Protocol", rng.choice(subprotocols)))
    if compression and rng.random() < 0.6:
        bits = rng.choice(["", "; server_max_window_bits=10", "; client_max_window_bits=12"])
        headers.append(("Sec-WebSocket-Extensions", "permessage-deflate" + bits))
    if rng.random() < 0.5:
        headers.append(("Server", "fuzz/1.0"))
    head = _head(rng, rng.choice(_STATUS_101), headers)
    if rng.random() < 0.2:
        head += b"\x81\x05hello"  # the server's first frame, in the same read
    return head


_STATUS_101 = ["HTTP/1.1 101 Switching Protocols", "HTTP/1.1 101 ", "HTTP/1.1 101 OK"]
REQUEST_LINES = [
    b"POST / HTTP/1.1",
    b"GET / HTTP/1.0",
    b"GET / HTTP/2.0",
    b"GET http://example.com/ HTTP/1.1",
    b"CONNECT example.com:443 HTTP/1.1",
    b"get / HTTP/1.1",
    b"GET  / HTTP/1.1",
    b"GET /\xff HTTP/1.1",
    b"GET / HTTP/1.1 ",
    b"",
]
STATUS_LINES = [
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 404 Not Found",
    b"HTTP/1.0 101 Switching Protocols",
    b"HTTP/1.1 1010 Switching",
    b"HTTP/1.1 101",
    b"HTTP/2 101",
    b"ICY 200 OK",
]
#: Header lines that shake h11's framing and the WebSocket checks.
EXTRA_LINES = [
    b"Content-Length: 5",
    b"Content-Length: -1",
    b"Content-Length: 5, 6",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip",
    b"Host: evil.example",
    b"Upgrade: h2c",
    b"Connection: close",
    b"Sec-WebSocket-Version: 8",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
    b"Sec-WebSocket-Protocol: superchat",
    b"Sec-WebSocket-Protocol: chat, superchat",
    b"Sec-WebSocket-Extensions: permessage-deflate",
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=8",
    b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=\xb9",
    b"Sec-WebSocket-Extensions: x-unknown",
    b" folded continuation",
    b"No-Colon",
    b": no name",
    b"Bad Name: x",
    b"X-Nul: a\x00b",
    b"X-Obs-Text: \x85websocket\xa0",
]
_HTTP_BYTES = b'GET HTTP/1.1 :\r\n\r\n,; =\t"websocket upgrade13ab/'


def random_bytes(rng: random.Random, alphabet: bytes | None = None, max_size: int = 32) -> bytes:
    """Up to ``max_size`` bytes: any byte, or bytes that mean something in an HTTP head."""
    size = rng.randrange(1, max_size + 1)
    if alphabet is None and rng.random() < 0.5:
        alphabet = _HTTP_BYTES
    if alphabet is None:
        return rng.randbytes(size)
    return bytes(rng.choice(alphabet) for _ in range(size))


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def mutate(rng: random.Random, data: bytes, start_lines: Sequence[bytes]) -> bytes:
    """``data`` with one to four random breakages: bytes flipped, inserted or deleted, header
    lines duplicated, removed, swapped or garbled, a huge header, another start line."""
    for _ in range(rng.randint(1, 4)):
        action = rng.randrange(11)
        lines = _lines(data)
        # The header lines, not the blank one; any line of what is too short to have them.
        inner = range(1, len(lines) - 2) if len(lines) > 3 else range(len(lines))
        if action == 0 and data:  # flip
            at = rng.randrange(len(data))
            data = data[:at] + bytes([data[at] ^ rng.randrange(1, 256)]) + data[at + 1 :]
        elif action == 1:  # insert
            at = rng.randrange(len(data) + 1)
            data = data[:at] + random_bytes(rng, max_size=16) + data[at:]
        elif action == 2 and data:  # delete
            at = rng.randrange(len(data))
            data = data[:at] + data[at + rng.randint(1, 16) :]
        elif action == 3:  # duplicate a header line
            at = rng.choice(inner)
            lines.insert(rng.choice(inner), lines[at])
            data = b"\n".join(lines)
        elif action == 4 and len(lines) > 3:  # remove a header line
            del lines[rng.choice(inner)]
            data = b"\n".join(lines)
        elif action == 5:  # garble a header line's name or value
            at = rng.choice(inner)
            name, colon, value = lines[at].partition(b":")
            if rng.random() < 0.5:
                name = random_bytes(rng, max_size=12)
            else:
                value = random_bytes(rng, max_size=40) + value[-1:]
            lines[at] = name + colon + value
            data = b"\n".join(lines)
        elif action == 6:  # a huge header, around the head size limit or past it
            size = rng.choice(
                [rng.randrange(MAX_HEAD_SIZE - 300, MAX_HEAD_SIZE + 50), rng.randrange(70_000)]
            )
            lines.insert(rng.choice(inner), b"X-Huge: " + b"a" * size + b"\r")
            data = b"\n".join(lines)
        elif action == 7:  # another start line
            lines[0] = rng.choice(start_lines) + b"\r"
            data = b"\n".join(lines)
        elif action == 8:  # one more header line of a troublesome kind
            lines.insert(rng.choice(inner), rng.choice(EXTRA_LINES) + b"\r")
            data = b"\n".join(lines)
        elif action == 9 and len(lines) > 3:  # swap two lines, the start line included
            first, second = rng.randrange(len(lines) - 2), rng.choice(inner)
            lines[first], lines[second] = lines[second], lines[first]
            data = b"\n".join(lines)
        elif action == 10:  # bytes after the head: a body, a frame, or anything
            data += random_bytes(rng, max_size=64)
    return data


# -- an independent reading of a head -------------------------------------------------------


def split_head(data: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """(length, start line, header pairs) of the head at the start of ``data``; None if it has
    no end yet. Lines end with LF or CRLF, continuation lines fold into the line before, values
    lose their spaces and tabs at both ends: what RFC 9112 §5 lets a recipient accept."""
    end = _HEAD_END.search(data)
    if end is None:
        return None
    start_line, *lines = _LINE_END.split(data[: end.start() + 1])
    pairs: list[tuple[bytes, bytes]] = []
    for line in lines:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            name, value = pairs[-1]
            pairs[-1] = (name, value + b" " + line.lstrip(b" \t"))
            continue
        name, colon, value = line.partition(b":")
        assert colon, f"accepted a header line without a colon: {line!r}"
        assert _TOKEN.fullmatch(name), f"accepted a header name that is no token: {name!r}"
        pairs.append((name, value))
    return end.end(), start_line, [(name, value.strip(b" \t")) for name, value in pairs]


def values(pairs: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in pairs if key.lower() == name]


def tokens(pairs: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The comma-separated items of every ``name`` header, lowercased, without SP/HTAB."""
    return [
        item.strip(b" \t").lower() for value in values(pairs, name) for item in value.split(b",")
    ]


def assert_valid_upgrade_request(head: bytes, request: Request) -> str:
    """``head`` is a WebSocket upgrade RFC 6455 §4.2.1 lets a server accept, and ``request``
    says what it says; return "accepted"."""
    parsed = split_head(head)
    assert parsed is not None and parsed[0] == len(head)
    _, start_line, pairs = parsed
    # RFC 6455 §4.2.1: GET, and an HTTP version of at least 1.1.
    match = re.fullmatch(rb"GET ([!-~]+) HTTP/([0-9]\.[0-9])", start_line)
    assert match and match[2] >= b"1.1", f"accepted the request line {start_line!r}"
    assert request.path == match[1].decode()
    # h11 folds repeated Content-Length lines into one and lowercases Transfer-Encoding.
    framing = ("content-length", "transfer-encoding")
    assert [
        (n.decode("latin-1"), v.decode("latin-1"))
        for n, v in pairs
        if n.lower() not in (b"content-length", b"transfer-encoding")
    ] == [(n, v) for n, v in request.headers.raw_items() if n.lower() not in framing]
    assert len(values(pairs, b"host")) == 1, "RFC 9112 §3.2: exactly one Host"
    assert values(pairs, b"sec-websocket-version") == [b"13"]
    [key] = values(pairs, b"sec-websocket-key")
    assert len(base64.b64decode(key, validate=True)) == 16
    assert b"websocket" in tokens(pairs, b"upgrade")
    assert b"upgrade" in tokens(pairs, b"connection")
    return "accepted"


# -- the checks ----------------------------------------------------------------------------

#: The statuses a rejected request may get: 4xx, and 501 for an unknown transfer coding.
REJECTION_STATUSES = frozenset(range(400, 500)) | {501}


def check_server(data: bytes, cuts: Sequence[int], *, eof: bool, compression: bool) -> str:
    """Feed ``data`` to a ServerHandshake in reads split at ``cuts`` (then EOF if ``eof``);
    accept the request if one comes; check every invariant; return what happened."""
    handshake = ServerHandshake(server_header=None)
    fed = 0
    for chunk in [*reads(data, cuts), *([b""] if eof else [])]:
        before, fed = fed, fed + len(chunk)
        try:
            request = handshake.receive_data(chunk)
            if request is not None:
                handshake.check_upgrade()
        except HandshakeRejected as exc:
            assert exc.status_code in REJECTION_STATUSES, exc
            response = parse_response(exc.response)
            assert response.status_code == exc.status_code
            assert "close" in response.headers.get_all("Connection")
            return f"rejected {exc.status_code}"
        except InvalidHandshake as exc:
            assert type(exc) is InvalidHandshake
            assert chunk == b"", f"InvalidHandshake before EOF: {exc}"
            return "InvalidHandshake at EOF"
        if request is None:
            assert chunk, "receive_data(b'') returned instead of raising"
            assert fed <= MAX_HEAD_SIZE, f"still waiting after {fed:,} bytes of head"
            continue
        assert chunk
        head_end = _HEAD_END.search(data)
        assert head_end is not None, "a request from a head without an end"
        assert before < head_end.end() <= fed, "the request came from the wrong read"
        assert head_end.end() <= MAX_HEAD_SIZE
        outcome = assert_valid_upgrade_request(data[: head_end.end()], request)
        sent, opened = handshake.accept(
            subprotocols=SUBPROTOCOLS,
            compression="deflate" if compression else None,
            max_size=1000,
            headers=Headers(),
        )
        answer = split_head(sent)
        assert answer is not None and answer[0] == len(sent)
        assert answer[1] == b"HTTP/1.1 101 Switching Protocols"
        key = request.headers["Sec-WebSocket-Key"]
        assert values(answer[2], b"sec-websocket-accept") == [accept_key(key).encode()]
        assert isinstance(opened, Opened)
        return outcome
    return "waiting for more"


def new_client(compression: bool, subprotocols: Sequence[str]) -> ClientHandshake:
    return ClientHandshake(
        parse_uri("ws://example.com/chat"),
        subprotocols=subprotocols,
        compression="deflate" if compression else None,
        max_size=1000,
        headers=Headers(),
    )


def assert_valid_101(
    head: bytes, key: str, opened: Opened, *, compression: bool, subprotocols: Sequence[str]
) -> str:
    """``head`` is a 101 that RFC 6455 §4.2.2 and RFC 7692 let a client accept; return
    "opened"."""
    parsed = split_head(head)
    assert parsed is not None and parsed[0] == len(head)
    _, status_line, pairs = parsed
    # RFC 6455 §4.2.2 asks for 101, whatever the HTTP version and the reason (h11 takes any).
    assert re.fullmatch(rb"HTTP/[0-9]\.[0-9] 101( [^\r\n]*)?", status_line), status_line
    assert [value.lower() for value in values(pairs, b"upgrade")] == [b"websocket"]
    assert b"upgrade" in tokens(pairs, b"connection")
    assert values(pairs, b"sec-websocket-accept") == [accept_key(key).encode()]
    protocols = values(pairs, b"sec-websocket-protocol")
    assert len(protocols) <= 1
    assert [p.decode("latin-1") for p in protocols] == (
        [opened.subprotocol] if opened.subprotocol else []
    )
    assert opened.subprotocol is None or opened.subprotocol in subprotocols
    names = [
        item.split(b";")[0].strip(b" \t")
        for value in values(pairs, b"sec-websocket-extensions")
        for item in value.split(b",")
        if item.strip(b" \t")
    ]
    # RFC 6455 §9.1: only what was offered; RFC 7692 §6: one user of RSV1 at most.
    assert names == ([b"permessage-deflate"] if compression else [])[: len(names)], names
    return "opened"


def check_client(
    data: bytes,
    cuts: Sequence[int],
    *,
    eof: bool,
    client: ClientHandshake,
    compression: bool,
    subprotocols: Sequence[str],
) -> str:
    """Feed ``data`` to ``client`` in reads split at ``cuts`` (then EOF if ``eof``); check
    every invariant; return what happened."""
    key = nonce_of(client)
    fed = 0
    try:
        for chunk in reads(data, cuts):
            before, fed = fed, fed + len(chunk)
            opened = client.receive_data(chunk)
            if opened is None:
                if _HEAD_END.search(data[:fed]) is None:
                    assert fed <= MAX_HEAD_SIZE, f"still waiting after {fed:,} bytes of head"
                continue
            head_end = _HEAD_END.search(data)
            assert head_end is not None, "opened by a head without an end"
            assert before < head_end.end() <= fed, "opened by the wrong read"
            return assert_valid_101(
                data[: head_end.end()],
                key,
                opened,
                compression=compression,
                subprotocols=subprotocols,
            )
        if not eof:
            return "waiting for more"
        client.receive_eof()
    except InvalidStatus as exc:
        response = exc.response
        assert response.status_code != 101
        assert len(response.body) <= MAX_REJECT_BODY
        return "InvalidStatus"
    except InvalidHandshake:
        return "InvalidHandshake"
    raise AssertionError("receive_eof() returned")


def check_uri(text: str) -> str:
    """Parse ``text``; a result must hold together and make a request a server reads back."""
    try:
        uri = parse_uri(text)
    except InvalidURI:
        return "InvalidURI"
    assert isinstance(uri, WebSocketURI)
    scheme = text.partition(":")[0].lower()
    assert scheme in ("ws", "wss")
    assert uri.secure == (scheme == "wss")
    assert 1 <= uri.port <= 65535
    assert uri.host and uri.host.isascii() and not any(c <= " " for c in uri.host)
    assert uri.resource_name.startswith("/") and uri.resource_name.isascii()
    assert "#" not in uri.resource_name and not any(c <= " " for c in uri.resource_name)
    bracketed = f"[{uri.host}]" if ":" in uri.host else uri.host
    default = 443 if uri.secure else 80
    assert uri.host_header == (bracketed if uri.port == default else f"{bracketed}:{uri.port}")
    client = ClientHandshake(
        uri, subprotocols=(), compression=None, max_size=None, headers=Headers()
    )
    request = ServerHandshake(server_header=None).receive_data(client.request_bytes)
    assert request is not None
    assert request.path == uri.resource_name
    assert request.headers["Host"] == uri.host_header
    return "parsed"


VALID_URIS = [
    "ws://example.com/",
    "wss://example.com:8443/chat?room=1&x=%20",
    "ws://[::1]:8765/",
    "wss://[2001:db8::1]/a/b",
    "ws://127.0.0.1:9000",
    "ws://b\u00fccher.example/",
    "WSS://EXAMPLE.COM:443/?",
    "ws://a-b.c_d~e/%7E",
]
_URI_CHARS = "wsWS:/[]@#?%.:-_~0123456789abcdef\u00fc\u4e2d \t\x00\x7f\u2028"


def mutate_uri(rng: random.Random, text: str) -> str:
    """``text`` with one to three characters or pieces changed, inserted or deleted."""
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text) + 1)
        action = rng.randrange(4)
        piece = rng.choice(
            [
                rng.choice(_URI_CHARS),
                ":" + str(rng.randrange(-1, 70000)),
                "a" * rng.choice([rng.randrange(70), rng.randrange(56, 64)]),
            ]
        )
        if action == 0:
            text = text[:at] + piece + text[at:]
        elif action == 1:
            text = text[:at] + text[at + rng.randint(1, 4) :]
        elif action == 2:
            text = text[:at] + rng.choice(_URI_CHARS) + text[at + 1 :]
        else:
            text = text.replace(rng.choice(["ws", "//", "/", ":", "."]), piece, 1)
    return text


# -- the properties ------------------------------------------------------------------------


@fuzz(300)
@given(rng=randoms)
def test_valid_request_split_anywhere_is_accepted_with_its_path_and_headers(
    rng: random.Random,
) -> None:
    """A valid upgrade request, however spelled and split into reads, is accepted at its last
    byte with the path and headers it carries, and answered 101."""
    data = valid_request(rng)
    outcome = check_server(
        data, cuts_for(rng, len(data)), eof=False, compression=rng.random() < 0.5
    )
    assert outcome == "accepted"


@fuzz(700)
@given(rng=randoms)
def test_mutated_request_is_accepted_only_if_valid_else_rejected_with_4xx(
    rng: random.Random,
) -> None:
    """A valid request broken at random: accepted only if still valid, else a 4xx answer (or
    InvalidHandshake at EOF); never another exception, never more than the head limit held."""
    data = mutate(rng, valid_request(rng), REQUEST_LINES)
    eof = rng.random() < 0.5
    event(check_server(data, cuts_for(rng, len(data)), eof=eof, compression=rng.random() < 0.5))


@fuzz(400)
@given(raw=st.binary(max_size=400), rng=randoms)
def test_random_bytes_to_the_server_get_a_4xx_or_wait(raw: bytes, rng: random.Random) -> None:
    """Arbitrary bytes: a 4xx answer, InvalidHandshake at EOF, or a wait for more."""
    eof = rng.random() < 0.5
    event(check_server(raw, cuts_for(rng, len(raw)), eof=eof, compression=False))


@fuzz(60)
@given(size=st.sampled_from([4096, 1000, 100, 7, 1]), line=st.integers(0, 3000))
def test_endless_head_gets_431_once_past_the_limit(size: int, line: int) -> None:
    """A head that never ends, in reads of any size, gets 431 from the read that takes it past
    MAX_HEAD_SIZE bytes, and not before."""
    handshake = ServerHandshake(server_header=None)
    data = b"GET / HTTP/1.1\r\n"
    fed = 0
    with pytest.raises(HandshakeRejected) as caught:
        while True:
            if len(data) < 8192:
                data += b"X-%d: %s\r\n" % (fed, b"v" * line)
            chunk, data = data[:size], data[size:]
            fed += len(chunk)
            assert handshake.receive_data(chunk) is None
            assert fed <= MAX_HEAD_SIZE
    assert caught.value.status_code == 431
    assert fed - len(chunk) <= MAX_HEAD_SIZE < fed


@fuzz(300)
@given(rng=randoms, compression=st.booleans(), offered=st.booleans())
def test_valid_101_split_anywhere_opens_the_connection(
    rng: random.Random, compression: bool, offered: bool
) -> None:
    """A valid 101, however spelled and split into reads, opens at its last byte."""
    subprotocols = SUBPROTOCOLS if offered else ()
    client = new_client(compression, subprotocols)
    data = answering(
        valid_response(rng, subprotocols=subprotocols, compression="deflate" * compression),
        client,
    )
    outcome = check_client(
        data,
        cuts_for(rng, len(data)),
        eof=False,
        client=client,
        compression=compression,
        subprotocols=subprotocols,
    )
    assert outcome == "opened"


@fuzz(700)
@given(rng=randoms, compression=st.booleans(), offered=st.booleans())
def test_mutated_101_opens_only_if_valid_else_raises_invalid_handshake(
    rng: random.Random, compression: bool, offered: bool
) -> None:
    """A valid 101 broken at random (bad status, bad Sec-WebSocket-Accept, extra or missing
    headers, garbage): opens only if still valid, else InvalidStatus or InvalidHandshake."""
    subprotocols = SUBPROTOCOLS[:1] if offered else ()
    client = new_client(compression, subprotocols)
    valid = valid_response(rng, subprotocols=subprotocols, compression="deflate" * compression)
    data = answering(mutate(rng, valid, STATUS_LINES), client)
    event(
        check_client(
            data,
            cuts_for(rng, len(data)),
            eof=rng.random() < 0.5,
            client=client,
            compression=compression,
            subprotocols=subprotocols,
        )
    )


@fuzz(300)
@given(raw=st.binary(max_size=400), rng=randoms)
def test_random_bytes_to_the_client_raise_invalid_handshake_or_wait(
    raw: bytes, rng: random.Random
) -> None:
    """Arbitrary bytes: InvalidStatus, InvalidHandshake, or a wait for more."""
    client = new_client(False, ())
    event(
        check_client(
            raw,
            cuts_for(rng, len(raw)),
            eof=True,
            client=client,
            compression=False,
            subprotocols=(),
        )
    )


@fuzz(400)
@given(text=st.text(max_size=60))
def test_random_text_is_a_consistent_uri_or_invalid_uri(text: str) -> None:
    """Any text: a WebSocketURI whose parts agree, or InvalidURI."""
    check_uri(text)


@fuzz(700)
@given(rng=randoms)
def test_mutated_uri_is_a_consistent_uri_or_invalid_uri(rng: random.Random) -> None:
    """A valid ws:// or wss:// URI broken at random: a WebSocketURI whose parts agree and
    whose request a server reads back, or InvalidURI; never another exception."""
    event(check_uri(mutate_uri(rng, rng.choice(VALID_URIS))))


# -- what the fuzzing found ----------------------------------------------------------------


def test_client_fails_a_101_accepting_permessage_deflate_twice() -> None:
    """Two acceptances of permessage-deflate both claim RSV1 (RFC 7692 §6): InvalidHandshake."""
    client = new_client(True, ())
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(nonce_of(client))}\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate\r\n\r\n"
    )

    with pytest.raises(InvalidHandshake):
        client.receive_data(head.encode())


def test_uri_with_a_long_last_label_and_a_port_makes_a_request() -> None:
    """A URI that parse_uri accepts, "ws://" + "a" * 62 + ":1", gives a request a server reads."""
    uri = parse_uri("ws://" + "a" * 62 + ":1")

    ClientHandshake(uri, subprotocols=(), compression=None, max_size=None, headers=Headers())


def test_connection_token_with_a_control_character_is_not_upgrade() -> None:
    """RFC 9110 §5.6.1: list items are separated by commas and SP/HTAB only."""
    head = (
        b"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
        b"Connection: upgrade \x1d\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )

    handshake = ServerHandshake(server_header=None)
    assert handshake.receive_data(head) is not None
    with pytest.raises(HandshakeRejected):
        handshake.check_upgrade()


@pytest.mark.parametrize("space", ["\x1d", "\x85", "\xa0"])
def test_client_fails_a_101_with_an_extension_name_that_is_no_token(space: str) -> None:
    """wsproto would strip() the name and take it for permessage-deflate: not a token, fail."""
    client = new_client(True, ())
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(nonce_of(client))}\r\n"
        f"Sec-WebSocket-Extensions: permessage-deflate{space}\r\n\r\n"
    )

    with pytest.raises(InvalidHandshake):
        client.receive_data(head.encode("latin-1"))
