"""HTTP Basic authentication (RFC 7617) for :func:`~trio_ws.server.serve`: :func:`basic_auth`.

How this works: ``basic_auth()`` checks its arguments and returns a ``process_request`` hook.
The hook runs in the server's opening handshake, before the upgrade: it reads the request's
Authorization header, and either sets ``connection.username`` and lets the handshake go on
(None), or returns a 401 with a ``WWW-Authenticate`` challenge, which the server sends instead
of the 101. Nothing here keeps state between requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, cast

import trio

if TYPE_CHECKING:
    from .http import Request, Response
    from .server import ServerConnection

__all__ = ["basic_auth"]

#: ``credentials`` (RFC 9110 §11.4): an auth-scheme, then what it takes after 1*SP.
_CREDENTIALS = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?: +(.*))?")
#: A token68 (RFC 9110 §11.2), which holds Basic's base64.
_TOKEN68 = re.compile(r"[0-9A-Za-z._~+/-]+=*")
#: What a realm may hold to go in a quoted-string (RFC 9110 §5.6.4): HTAB, SP, VCHAR, obs-text.
_REALM = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
#: RFC 7617 §2: "The user-id and password MUST NOT contain any control characters".
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Compared with the password given for an unknown user, so that it takes as long as a known one.
_DUMMY_PASSWORD = hashlib.sha256(b"trio_ws: no such user").digest()


def basic_auth(
    realm: str = "",
    credentials: tuple[str, str] | Iterable[tuple[str, str]] | None = None,
    check_credentials: Callable[[str, str], bool | Awaitable[bool]] | None = None,
) -> Callable[[ServerConnection, Request], Awaitable[Response | None]]:
    """Build a ``process_request`` hook for :func:`~trio_ws.server.serve` that enforces HTTP
    Basic authentication (RFC 7617).

    ::

        auth = trio_ws.basic_auth(realm="chat", credentials=("alice", "wonderland"))
        server = await nursery.start(
            partial(trio_ws.serve, handler, "127.0.0.1", 8765, process_request=auth)
        )

    The hook is an async function, a :data:`~trio_ws.server.ProcessRequest`: ``await`` it from
    a ``process_request`` of your own to combine it with other checks.

    A request whose ``Authorization: Basic ...`` header holds valid credentials goes on to the
    upgrade, and its connection's ``username`` is the user-id; ``password`` is not kept. Any
    other request gets 401 with ``WWW-Authenticate: Basic realm="...", charset="UTF-8"``: no
    header, another scheme, credentials that are not base64 of UTF-8 ``user-id:password``, or
    credentials that do not check out. A request with several Authorization headers gets 400.

    Give exactly one of ``credentials`` and ``check_credentials``. The hook blocks only in an
    async ``check_credentials``, within the handshake's ``open_timeout``; it keeps nothing from
    one request to the next.

    Args:
        realm: the protection space named in the challenge (browsers show it).
        credentials: the ``(username, password)`` pair allowed in, or an iterable of them;
            a pair may be a list, as JSON gives it. Passwords are compared in constant time.
        check_credentials: ``check_credentials(username, password)``, a plain or async function
            that returns True to let the user in, False to refuse. What it raises propagates:
            the client gets 500 and the server logs it. Returning anything but a bool raises
            TypeError there too.

    Returns:
        The async ``process_request(connection, request)`` hook: None to go on with the
        upgrade, or the 400 or 401 response to send instead.

    Raises:
        ValueError: neither or both of ``credentials`` and ``check_credentials`` are given;
            ``credentials`` is empty or names a user twice; ``realm`` holds a character that
            cannot go in a header's quoted-string (CR, LF, other control characters but
            HTAB, anything beyond Latin-1).
        TypeError: ``realm`` is not a str, ``credentials`` is not a pair of str or an iterable
            of them, or ``check_credentials`` is not callable.
    """
    challenge = _challenge(realm)
    if credentials is None and check_credentials is None:
        raise ValueError("basic_auth() needs credentials or check_credentials")
    if credentials is not None and check_credentials is not None:
        raise ValueError("basic_auth() takes credentials or check_credentials, not both")
    check: Callable[[str, str], bool | Awaitable[bool]]
    if credentials is not None:
        check = _fixed_credentials(_credentials(credentials))
    else:
        if not callable(check_credentials):
            raise TypeError(f"check_credentials must be a function, not {check_credentials!r}")
        check = check_credentials

    async def process_request(connection: ServerConnection, request: Request) -> Response | None:
        await trio.lowlevel.checkpoint()
        values = request.headers.get_all("Authorization")
        if len(values) > 1:
            # RFC 9110 §5.3: Authorization is no list, so two of them make a malformed request,
            # which no other credentials would mend: not a challenge. Which one would a proxy
            # in front have checked? Refusing both leaves no room for disagreement.
            return connection.respond(400, "more than one Authorization header\n")
        if not values:
            return _refuse(connection, challenge, "missing credentials")
        parsed = _parse_basic(values[0])
        if isinstance(parsed, str):
            return _refuse(connection, challenge, parsed)
        username, password = parsed
        valid = check(username, password)
        if inspect.isawaitable(valid):
            valid = await valid
        if not isinstance(valid, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"check_credentials must return a bool, not {valid!r}")
        if not valid:
            return _refuse(connection, challenge, "invalid credentials")
        connection.username = username
        return None

    return process_request


def _challenge(realm: object) -> str:
    """The WWW-Authenticate value for ``realm`` (RFC 7617 §2, §2.1)."""
    if not isinstance(realm, str):
        raise TypeError(f"realm must be a str, not {realm!r}")
    if not _REALM.fullmatch(realm):
        raise ValueError(
            f"realm cannot go in a header (control or non-Latin-1 character): {realm!r}"
        )
    quoted = realm.replace("\\", "\\\\").replace('"', '\\"')
    return f'Basic realm="{quoted}", charset="UTF-8"'


def _credentials(credentials: object) -> dict[str, str]:
    """``credentials`` checked: a dict of password by username."""
    pair = _pair(credentials)
    if pair is not None:
        return dict([pair])
    if isinstance(credentials, str | bytes) or not isinstance(credentials, Iterable):
        raise TypeError(
            f"credentials must be a (username, password) pair of str or an iterable of them, "
            f"not {credentials!r}"
        )
    passwords: dict[str, str] = {}
    for item in cast("Iterable[object]", credentials):
        pair = _pair(item)
        if pair is None:
            raise TypeError(
                f"credentials must hold (username, password) pairs of str, not {item!r}"
            )
        username, password = pair
        if username in passwords:
            raise ValueError(f"credentials name the user {username!r} twice")
        passwords[username] = password
    if not passwords:
        raise ValueError("credentials is empty: no one could log in")
    return passwords


def _pair(value: object) -> tuple[str, str] | None:
    """``value`` as a (username, password) pair, if it is one: a tuple or list of two str."""
    if isinstance(value, tuple | list):
        items = cast("tuple[object, ...] | list[object]", value)
        if len(items) == 2:
            username, password = items
            if isinstance(username, str) and isinstance(password, str):
                return username, password
    return None


def _fixed_credentials(passwords: dict[str, str]) -> Callable[[str, str], bool]:
    """check_credentials for a fixed set of users, whose timing tells neither which users
    exist nor how long their passwords are."""
    digests = {
        user: hashlib.sha256(password.encode()).digest() for user, password in passwords.items()
    }

    def check_credentials(username: str, password: str) -> bool:
        expected = digests.get(username)
        # Hashing both sides makes them the same length, which compare_digest needs to take
        # a time that depends on neither; an unknown user is compared with a dummy all the same.
        given = hashlib.sha256(password.encode()).digest()
        matches = hmac.compare_digest(given, _DUMMY_PASSWORD if expected is None else expected)
        return matches and expected is not None

    return check_credentials


def _parse_basic(value: str) -> tuple[str, str] | str:
    """The (user-id, password) in an Authorization header's value, or what is wrong with it."""
    match = _CREDENTIALS.fullmatch(value)
    if match is None:
        return "malformed credentials"
    scheme, token = match.groups()
    if scheme.lower() != "basic":  # RFC 9110 §11.1: the scheme is case-insensitive
        return "unsupported authentication scheme"
    if token is None or not _TOKEN68.fullmatch(token):
        return "malformed credentials"
    try:
        decoded = base64.b64decode(token, validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError both
        return "malformed credentials"
    username, colon, password = decoded.partition(":")  # RFC 7617 §2: the user-id has no colon
    if not colon or _CONTROL.search(decoded):
        return "malformed credentials"
    return username, password


def _refuse(connection: ServerConnection, challenge: str, why: str) -> Response:
    response = connection.respond(401, why + "\n")
    response.headers.add("WWW-Authenticate", challenge)
    return response
