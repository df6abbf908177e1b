"""Parse ws:// and wss:// URIs (RFC 6455 §3) into what connect() needs."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from .exceptions import InvalidURI

_DEFAULT_PORTS = {"ws": 80, "wss": 443}


@dataclass(frozen=True)
class WebSocketURI:
    """A parsed WebSocket URI.

    ``host`` has no brackets (``::1``); ``host_header`` is what goes in the Host header
    (``[::1]:8765``, the port left out when it is the scheme's default).
    """

    secure: bool
    host: str
    port: int
    resource_name: str
    host_header: str


def parse_uri(uri: str) -> WebSocketURI:
    """Parse ``uri``; raise :class:`InvalidURI` naming what is wrong with it."""
    try:
        parsed = urllib.parse.urlsplit(uri)
        port = parsed.port
    except ValueError as exc:
        raise InvalidURI(f"{uri!r} is not a valid URI: {exc}") from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise InvalidURI(f"{uri!r} is not a WebSocket URI: the scheme must be ws or wss")
    if parsed.fragment:
        raise InvalidURI(f"{uri!r} has a fragment, which RFC 6455 §3 forbids")
    if parsed.username is not None or parsed.password is not None:
        raise InvalidURI(f"{uri!r} has user info, which trio_ws does not send")
    host = parsed.hostname
    if not host:
        raise InvalidURI(f"{uri!r} has no host")
    default_port = _DEFAULT_PORTS[parsed.scheme]
    if port is None:
        port = default_port
    resource_name = parsed.path or "/"
    if parsed.query:
        resource_name += "?" + parsed.query
    try:
        resource_name.encode("ascii")
    except UnicodeEncodeError as exc:
        raise InvalidURI(f"{uri!r} has a non-ASCII path; percent-encode it") from exc
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    return WebSocketURI(
        secure=parsed.scheme == "wss",
        host=host,
        port=port,
        resource_name=resource_name,
        host_header=host_header,
    )
