"""parse_uri: ws:// and wss:// URIs (RFC 6455 §3) into host, port, resource name, Host header."""

from __future__ import annotations

import pytest

from trio_ws._uri import WebSocketURI, parse_uri
from trio_ws.exceptions import InvalidURI, WebSocketError


@pytest.mark.parametrize(
    ("uri", "secure", "port"),
    [("ws://example.com/", False, 80), ("wss://example.com/", True, 443)],
)
def test_default_port_follows_the_scheme(uri: str, secure: bool, port: int) -> None:
    """ws:// defaults to port 80 and wss:// to 443; the Host header then carries no port."""
    assert parse_uri(uri) == WebSocketURI(
        secure=secure,
        host="example.com",
        port=port,
        resource_name="/",
        host_header="example.com",
    )


@pytest.mark.parametrize(
    ("uri", "port", "host_header"),
    [
        ("ws://example.com:8765/", 8765, "example.com:8765"),
        ("wss://example.com:8443/", 8443, "example.com:8443"),
        ("ws://example.com:443/", 443, "example.com:443"),
        ("wss://example.com:80/", 80, "example.com:80"),
    ],
)
def test_explicit_port_is_kept_and_named_in_the_host_header(
    uri: str, port: int, host_header: str
) -> None:
    """A port other than the scheme's default appears in the Host header (RFC 6455 §4.1)."""
    parsed = parse_uri(uri)
    assert parsed.port == port
    assert parsed.host_header == host_header


def test_explicit_default_port_is_left_out_of_the_host_header() -> None:
    """ws://host:80/ is the same URI as ws://host/, Host header included."""
    assert parse_uri("ws://example.com:80/") == parse_uri("ws://example.com/")


def test_ipv6_literal_host_loses_its_brackets_but_the_host_header_keeps_them() -> None:
    """The host to connect to is the bare address; the Host header needs the brackets."""
    parsed = parse_uri("ws://[::1]:8765/")
    assert parsed.host == "::1"
    assert parsed.port == 8765
    assert parsed.host_header == "[::1]:8765"


def test_ipv6_literal_with_default_port_has_a_bracketed_host_header_without_port() -> None:
    """wss://[2001:db8::1]/ has Host: [2001:db8::1], no port."""
    parsed = parse_uri("wss://[2001:db8::1]/")
    assert parsed.host == "2001:db8::1"
    assert parsed.port == 443
    assert parsed.host_header == "[2001:db8::1]"


def test_query_is_kept_in_the_resource_name() -> None:
    """The request target is the path plus the query (RFC 6455 §3, resource name)."""
    assert parse_uri("ws://example.com/chat?room=1&user=a%20b").resource_name == (
        "/chat?room=1&user=a%20b"
    )


@pytest.mark.parametrize(
    ("uri", "resource_name"),
    [
        ("ws://example.com", "/"),
        ("ws://example.com?x=1", "/?x=1"),
        ("ws://[::1]:9000", "/"),
    ],
)
def test_empty_path_becomes_slash(uri: str, resource_name: str) -> None:
    """An empty path is sent as "/" (RFC 6455 §3), with the query after it."""
    assert parse_uri(uri).resource_name == resource_name


def test_scheme_and_host_are_case_insensitive() -> None:
    """WS://EXAMPLE.COM/Path parses as ws://example.com/Path; the path keeps its case."""
    parsed = parse_uri("WS://EXAMPLE.COM/Path")
    assert parsed.secure is False
    assert parsed.host == "example.com"
    assert parsed.resource_name == "/Path"


def test_non_ascii_host_is_idna_encoded() -> None:
    """A non-ASCII host name is IDNA-encoded, so DNS and the Host header see the same name."""
    parsed = parse_uri("ws://exämple.com:81/")
    assert parsed.host == "xn--exmple-cua.com"
    assert parsed.host_header == "xn--exmple-cua.com:81"


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/",
        "https://example.com/",
        "example.com/",
        "ftp://example.com/",
    ],
)
def test_non_websocket_scheme_is_rejected(uri: str) -> None:
    """Only ws:// and wss:// are WebSocket URIs."""
    with pytest.raises(InvalidURI, match="scheme must be ws or wss"):
        parse_uri(uri)


@pytest.mark.parametrize("uri", ["ws://example.com/#frag", "ws://example.com/#"])
def test_fragment_is_rejected(uri: str) -> None:
    """RFC 6455 §3: fragment identifiers MUST NOT be used, an empty one included."""
    with pytest.raises(InvalidURI, match="fragment"):
        parse_uri(uri)


@pytest.mark.parametrize(
    ("uri", "user_info"),
    [
        ("ws://user:secret@example.com/", ("user", "secret")),
        ("ws://us%C3%A9r:p%40ss%3Aword@example.com/", ("usér", "p@ss:word")),
        ("wss://a:@example.com/", ("a", "")),
    ],
)
def test_user_info_is_kept_percent_decoded(uri: str, user_info: tuple[str, str]) -> None:
    """ws://user:pass@host/ carries credentials for HTTP Basic (RFC 7617), percent-decoded;
    the Host header never shows them."""
    parsed = parse_uri(uri)
    assert parsed.user_info == user_info
    assert parsed.host_header == "example.com"
    assert "@" not in parsed.resource_name


@pytest.mark.parametrize(
    "uri", ["ws://user@example.com/", "ws://@example.com/", "ws://:secret@example.com/"]
)
def test_user_info_without_user_and_password_is_rejected(uri: str) -> None:
    """A user name alone, or a password alone, is not a credential to send."""
    with pytest.raises(InvalidURI, match="user info"):
        parse_uri(uri)


@pytest.mark.parametrize("uri", ["ws:///chat", "ws://:8765/", "wss://"])
def test_missing_host_is_rejected(uri: str) -> None:
    """A WebSocket URI must name a host."""
    with pytest.raises(InvalidURI, match="no host"):
        parse_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "ws://example.com:http/",
        "ws://example.com:-1/",
        "ws://example.com:65536/",
        "ws://example.com:99999/",
        "ws://example.com:+80/",
        "ws://example.com:0/",
    ],
)
def test_bad_port_is_rejected(uri: str) -> None:
    """A port that is not a decimal number in 1-65535 is an InvalidURI, not a later OSError."""
    with pytest.raises(InvalidURI):
        parse_uri(uri)


@pytest.mark.parametrize("uri", ["ws://example.com/café", "ws://example.com/?q=ü"])
def test_non_ascii_path_or_query_is_rejected(uri: str) -> None:
    """The request target must be ASCII; the message says to percent-encode."""
    with pytest.raises(InvalidURI, match="percent-encode"):
        parse_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "ws://example.com/a b",
        "ws://example.com/a\r\nX-Injected: 1",
        "ws://example.com/a\tb",
        " ws://example.com/",
        "ws://exa\nmple.com/",
    ],
)
def test_whitespace_or_control_character_is_rejected(uri: str) -> None:
    """No character is dropped silently (urlsplit would strip CR, LF and tab) or breaks the
    request line (a space)."""
    with pytest.raises(InvalidURI, match="whitespace or a control character"):
        parse_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "ws://[::1/",
        "ws://[not-an-address]/",
        "ws://[v1.future]/",
        "ws://[::1]junk:80/",
        "ws://a..b/",
        "ws://" + "a" * 64 + ".com/",
        "ws://a<b/",
    ],
)
def test_invalid_host_is_rejected(uri: str) -> None:
    """A host that is neither an IPv6 literal nor a valid name fails here, as InvalidURI."""
    with pytest.raises(InvalidURI):
        parse_uri(uri)


def test_invalid_uri_is_a_websocket_error_and_a_value_error() -> None:
    """Callers may catch InvalidURI as WebSocketError or as ValueError; the URI is named."""
    with pytest.raises(InvalidURI) as info:
        parse_uri("http://example.com/")
    assert isinstance(info.value, WebSocketError)
    assert isinstance(info.value, ValueError)
    assert "'http://example.com/'" in str(info.value)
