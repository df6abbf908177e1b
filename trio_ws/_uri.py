"""Parse ws:// and wss:// URIs (RFC 6455 §3) into what connect() needs."""

from __future__ import annotations

import functools
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from .exceptions import InvalidURI

_DEFAULT_PORTS = {"ws": 80, "wss": 443}
# RFC 3986 §3.2.2 reg-name: unreserved, pct-encoded and sub-delims.
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=]+")


@dataclass(frozen=True)
class WebSocketURI:
    """A parsed WebSocket URI.

    ``host`` has no brackets (``::1``) and is ASCII (a non-ASCII name is IDNA-encoded, so DNS
    and the Host header agree); ``host_header`` is what goes in the Host header (``[::1]:8765``,
    the port left out when it is the scheme's default). ``user_info`` is the user name and
    password of ``ws://user:pass@host/``, percent-decoded, for HTTP Basic authentication.
    """

    secure: bool
    host: str
    port: int
    resource_name: str
    host_header: str
    user_info: tuple[str, str] | None = None

    @property
    def origin(self) -> tuple[bool, str, int]:
        """What says whether two URIs reach the same server (scheme, host and port)."""
        return self.secure, self.host, self.port


_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


@functools.lru_cache(maxsize=256)
def parse_uri(uri: str) -> WebSocketURI:
    """Parse ``uri``; raise :class:`InvalidURI` naming what is wrong with it.

    Cached: a client connects to the same few URIs again and again, and the result is frozen.
    """
    # urlsplit silently drops tabs and line breaks, and a space would split the request line.
    if _CONTROL_OR_SPACE.search(uri):
        raise InvalidURI(f"{uri!r} contains whitespace or a control character; percent-encode it")
    try:
        parsed = urllib.parse.urlsplit(uri)
        port = parsed.port
    except ValueError as exc:
        raise InvalidURI(f"{uri!r} is not a valid URI: {exc}") from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise InvalidURI(f"{uri!r} is not a WebSocket URI: the scheme must be ws or wss")
    if "#" in uri:  # an empty fragment ("ws://host/#") is still one
        raise InvalidURI(f"{uri!r} has a fragment, which RFC 6455 §3 forbids")
    user_info = _user_info(uri, parsed)
    host = _host(uri, parsed)
    if port == 0:
        raise InvalidURI(f"{uri!r} has port 0, which cannot be connected to")
    default_port = _DEFAULT_PORTS[parsed.scheme]
    if port is None:
        port = default_port
    resource_name = parsed.path or "/"
    if parsed.query:
        resource_name += "?" + parsed.query
    if not resource_name.isascii():
        raise InvalidURI(f"{uri!r} has a non-ASCII path or query; percent-encode it")
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    return WebSocketURI(
        secure=parsed.scheme == "wss",
        host=host,
        port=port,
        resource_name=resource_name,
        host_header=host_header,
        user_info=user_info,
    )


def _user_info(uri: str, parsed: urllib.parse.SplitResult) -> tuple[str, str] | None:
    """The user name and password of the URI, percent-decoded; None when it has none."""
    if "@" not in parsed.netloc:
        return None
    user, password = parsed.username or "", parsed.password
    if not user or password is None:
        raise InvalidURI(f"{uri!r} has user info without a user name and a password")
    user = urllib.parse.unquote(user, errors="strict")
    password = urllib.parse.unquote(password, errors="strict")
    if ":" in user:  # RFC 7617 §2: the user-id cannot contain a colon
        raise InvalidURI(f"{uri!r} has a colon in its user name")
    return user, password


def _host(uri: str, parsed: urllib.parse.SplitResult) -> str:
    """The host to connect to: an IPv6 literal without brackets, or an ASCII name."""
    host = parsed.hostname
    if not host:
        raise InvalidURI(f"{uri!r} has no host")
    if parsed.netloc.startswith("["):
        # urlsplit ignores what follows "]" ("[::1]x") and lets IPvFuture ("[v1.x]") through.
        after = parsed.netloc[parsed.netloc.index("]") + 1 :]
        if after and not after.startswith(":"):
            raise InvalidURI(f"{uri!r} has {after!r} after its IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InvalidURI(f"{uri!r} has an address in brackets that is not IPv6") from exc
        return host
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidURI(f"{uri!r} has an invalid host name {host!r}: {exc}") from exc
    if not _REG_NAME.fullmatch(ascii_host):
        raise InvalidURI(f"{uri!r} has an invalid host name {host!r}")
    return ascii_host
