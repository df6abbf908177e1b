"""The opening handshake (RFC 6455 §4), both sides: bytes in, bytes and outcomes out. No trio.

Both sides speak HTTP with h11 and hand the frames to a wsproto ``Connection`` once the
handshake is done, negotiating extensions with wsproto's own functions; no handshake machine
outlives the handshake. The client writes its request and checks the 101 against RFC 6455
§4.2.2. The server parses the request once, checks all of RFC 6455 §4.2.1 so that it can answer
each breach with the right status (wsproto's handshake only knows 400 and 426), and writes the
101 with the same h11 connection.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import http
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import h11
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.extensions import Extension
from wsproto.handshake import client_extensions_handshake, server_extensions_handshake
from wsproto.utilities import RemoteProtocolError, generate_accept_token, generate_nonce

from ._deflate import BoundedDeflate
from ._uri import WebSocketURI
from .exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidHeaderFormat,
    InvalidHeaderValue,
    InvalidMessage,
    InvalidStatus,
    InvalidUpgrade,
    NegotiationError,
)
from .http import Headers, Request, Response, headers_from_head

#: The longest HTTP request head the server accepts (h11 answers 431 past it); the client's
#: limit for the response is h11's default, also 16 KiB.
MAX_HEAD_SIZE = 16 * 1024
#: The most of a rejection's body kept for :class:`~trio_ws.exceptions.InvalidStatus`.
MAX_REJECT_BODY = 64 * 1024
#: The most header lines the server accepts in a request (h11 bounds only the head's size).
MAX_HEADERS = 128


#: Optional whitespace around list items (RFC 9110 §5.6.3): SP and HTAB, nothing else.
_OWS = " \t"
#: A token (RFC 9110 §5.6.2), such as an extension's name.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _comma_list(values: Sequence[str]) -> list[str]:
    """The items of comma-separated header values (RFC 9110 §5.6.1), stripped of SP and HTAB,
    empty ones left out."""
    return [item.strip(_OWS) for value in values for item in value.split(",") if item.strip(_OWS)]


def _raw_headers(event: h11.InformationalResponse | h11.Response) -> Headers:
    """A response's headers as the server wrote them (h11 lowercases the names it exposes)."""
    return _decode_pairs(event.headers.raw_items())


def _decode_pairs(pairs: Sequence[tuple[bytes, bytes]]) -> Headers:
    return Headers([(name.decode("latin-1"), value.decode("latin-1")) for name, value in pairs])


@dataclass
class Opened:
    """A completed handshake: the wsproto connection to carry on with, and what was said."""

    ws: Connection
    request: Request
    response: Response
    subprotocol: str | None


class ClientHandshake:
    """Write the client's upgrade request and check the server's answer (RFC 6455 §4.2.2)."""

    def __init__(
        self,
        uri: WebSocketURI,
        *,
        subprotocols: Sequence[str],
        compression: str | None,
        max_size: int | None,
        headers: Headers,
    ) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)
        self._nonce = generate_nonce()
        self._subprotocols = list(subprotocols)
        self._extensions: list[Extension] = (
            [BoundedDeflate(max_size)] if compression == "deflate" else []
        )
        pairs = [
            ("Host", uri.host_header),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self._nonce.decode("ascii")),
            ("Sec-WebSocket-Version", "13"),
        ]
        if subprotocols:
            pairs.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
        offers = [f"{e.name}; {e.offer()}" for e in self._extensions]
        if offers:
            pairs.append(("Sec-WebSocket-Extensions", ", ".join(offers)))
        pairs += headers.raw_items()
        # parse_uri made the host and the resource name ASCII, with no white space.
        self.request_bytes = write_head(f"GET {uri.resource_name} HTTP/1.1", pairs, "utf-8")
        # h11 reads the answer: it needs to know that a GET offering an upgrade went out.
        self._h11.send(_UPGRADE_REQUEST)
        self._request = Request(uri.resource_name, Headers(pairs))
        self._rejection: Response | None = None
        self._body = bytearray()

    def receive_data(self, data: bytes | bytearray) -> Opened | None:
        """Feed the server's bytes; return the outcome once the response is complete.

        Raises:
            InvalidStatus: the server answered with a status other than 101.
            InvalidHandshake: the response broke RFC 6455 §4.2.2, or the head was too large.
        """
        self._h11.receive_data(bytes(data))
        try:
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return None
                if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    return self._accepted(event)
                if isinstance(event, h11.InformationalResponse | h11.Response):
                    self._rejection = Response(
                        event.status_code, event.reason.decode("latin-1"), _raw_headers(event)
                    )
                    if isinstance(event, h11.InformationalResponse):
                        raise InvalidStatus(self._rejection)
                elif isinstance(event, h11.Data):
                    self._body += event.data[: MAX_REJECT_BODY - len(self._body)]
                    if len(self._body) >= MAX_REJECT_BODY:
                        self._raise_rejection()
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    self._raise_rejection()
        except h11.RemoteProtocolError as exc:
            raise InvalidMessage(f"invalid opening handshake response: {exc}") from exc

    def receive_eof(self) -> NoReturn:
        """The server closed the connection before completing its response: raise why."""
        if self._rejection is not None:
            self._raise_rejection()
        raise InvalidMessage("server closed the connection during the opening handshake")

    def _raise_rejection(self) -> NoReturn:
        assert self._rejection is not None
        raise InvalidStatus(dataclasses.replace(self._rejection, body=bytes(self._body)))

    def _accepted(self, event: h11.InformationalResponse) -> Opened:
        headers = _raw_headers(event)
        connection = _comma_list(headers.get_all("Connection"))
        if "upgrade" not in (token.lower() for token in connection):
            raise InvalidUpgrade("Connection", ", ".join(headers.get_all("Connection")) or None)
        if [value.lower() for value in headers.get_all("Upgrade")] != ["websocket"]:
            raise InvalidUpgrade("Upgrade", ", ".join(headers.get_all("Upgrade")) or None)
        if headers.get_all("Sec-WebSocket-Accept") != [
            generate_accept_token(self._nonce).decode()
        ]:
            accept = headers.get_all("Sec-WebSocket-Accept")
            raise InvalidHeaderValue("Sec-WebSocket-Accept", ", ".join(accept) or None)
        protocols = headers.get_all("Sec-WebSocket-Protocol")
        if len(protocols) > 1:
            raise InvalidHeader("Sec-WebSocket-Protocol", ", ".join(protocols))
        subprotocol = protocols[0] if protocols else None
        if subprotocol is not None and subprotocol not in self._subprotocols:
            raise NegotiationError(f"the server chose a subprotocol not offered: {subprotocol}")
        accepted = _comma_list(headers.get_all("Sec-WebSocket-Extensions"))
        names = [extension.partition(";")[0].strip(_OWS).lower() for extension in accepted]
        if not all(_TOKEN.fullmatch(name) for name in names):  # wsproto would strip() them
            raise InvalidHeaderFormat("Sec-WebSocket-Extensions", ", ".join(accepted))
        if len(set(names)) < len(names):  # RFC 7692 §6: each would claim RSV1
            raise NegotiationError(f"the server accepted an extension twice: {accepted}")
        try:
            extensions = client_extensions_handshake(accepted, self._extensions)
        except RemoteProtocolError as exc:
            raise NegotiationError(f"the server accepted extensions not offered: {exc}") from exc
        ws = Connection(ConnectionType.CLIENT, extensions, self._h11.trailing_data[0])
        response = Response(101, event.reason.decode("latin-1"), headers)
        return Opened(ws, self._request, response, subprotocol)


class HandshakeRejected(Exception):
    """The client's request cannot be accepted; ``response`` is the HTTP answer to send.

    ``kind`` says why, for the server's statistics: the status code, or a word ("limit").
    """

    def __init__(
        self, status_code: int, message: str, response: bytes, kind: str | None = None
    ) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.response = response
        self.kind = str(status_code) if kind is None else kind


class ServerHandshake:
    """Read the client's request, check it, and write the answer.

    The steps, for the server to run its hooks between them: :meth:`receive_data` until the
    request's head is in (HTTP checks only, so that a plain HTTP request reaches
    ``process_request``), :meth:`check_upgrade` (RFC 6455 §4.2.1), :meth:`response_101`, then
    :meth:`finish` with the 101 as the hooks left it; or :meth:`respond` with another response.
    """

    def __init__(self, *, server_header: str | None) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        self._server_header = server_header
        self._request: h11.Request | None = None
        self._received = bytearray()  # the request so far: wsproto reads its head again
        self._head = b""
        self._headers = Headers()  # the request's, once its head is in
        self._extensions: list[Extension] = []  # those accepted in the 101, once built

    def receive_data(self, data: bytes | bytearray) -> Request | None:
        """Feed the client's bytes (b"" at EOF); return the request once its head is complete.

        Raises:
            HandshakeRejected: the request breaks HTTP or is no GET; send its response.
            InvalidHandshake: the client closed the connection before finishing its request.
        """
        self._received += data
        self._h11.receive_data(bytes(data))
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            if not data:
                raise InvalidHandshake(
                    "client closed the connection during the opening handshake"
                ) from exc
            if exc.error_status_hint == 431:
                raise self._head_too_large() from exc
            raise self.rejection(exc.error_status_hint, f"invalid HTTP request: {exc}") from exc
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            raise InvalidHandshake("client closed the connection during the opening handshake")
        assert isinstance(event, h11.Request)
        # h11 bounds only a head still incomplete; one that arrives whole can be any size.
        head_size = len(self._received) - len(self._h11.trailing_data[0])
        if head_size > MAX_HEAD_SIZE:
            raise self._head_too_large(head_size)
        self._head, self._received = bytes(self._received[:head_size]), bytearray()
        self._request = event
        if len(event.headers) > MAX_HEADERS:
            raise self.rejection(
                431, f"{len(event.headers):,} header lines exceed the limit of {MAX_HEADERS}"
            )
        self._headers = headers = _decode_pairs(event.headers.raw_items())
        if event.method != b"GET":
            raise self.rejection(405, "a WebSocket handshake must use GET", [("Allow", "GET")])
        if event.http_version < b"1.1":
            raise self.rejection(400, "a WebSocket handshake needs HTTP/1.1 or later")
        if "Host" not in headers:
            raise self.rejection(400, "missing Host header")
        return Request(event.target.decode("ascii", "replace"), headers)

    def check_upgrade(self) -> None:
        """Enforce RFC 6455 §4.2.1 on the request, which wsproto checks only in part.

        Raises:
            HandshakeRejected: 426 for a request without the upgrade or with another version,
                400 for a missing version or a bad key; send its response.
        """
        headers = self._headers
        upgrade = [token.lower() for token in _comma_list(headers.get_all("Upgrade"))]
        connection = [token.lower() for token in _comma_list(headers.get_all("Connection"))]
        if "websocket" not in upgrade or "upgrade" not in connection:
            raise self.rejection(
                426,
                "this is a WebSocket endpoint: send Upgrade: websocket and Connection: Upgrade",
                [("Upgrade", "websocket"), ("Connection", "Upgrade")],
            )
        versions = headers.get_all("Sec-WebSocket-Version")
        if versions != ["13"]:
            raise self.rejection(
                426 if versions else 400,
                "unsupported Sec-WebSocket-Version"
                if versions
                else "missing Sec-WebSocket-Version header",
                [("Sec-WebSocket-Version", "13")],
            )
        keys = headers.get_all("Sec-WebSocket-Key")
        if len(keys) != 1:
            raise self.rejection(400, "need exactly one Sec-WebSocket-Key header")
        try:
            nonce = base64.b64decode(keys[0].encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            nonce = b""
        if len(nonce) != 16:
            raise self.rejection(400, "Sec-WebSocket-Key must be 16 bytes in base64")

    def offered_subprotocols(self) -> list[str]:
        """The subprotocols the client offers, in its order."""
        return _comma_list(self._headers.get_all("Sec-WebSocket-Protocol"))

    def response_101(
        self,
        *,
        subprotocol: str | None,
        compression: str | None,
        max_size: int | None,
        headers: Headers,
    ) -> Response:
        """The 101 that accepts the checked request, not yet sent: hooks may still change it."""
        key = self._headers.get_all("Sec-WebSocket-Key")[0]  # check_upgrade made sure of one
        response = Response(
            101,
            "Switching Protocols",
            Headers(
                [
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", generate_accept_token(key.encode("ascii")).decode()),
                ]
            ),
        )
        if subprotocol is not None:
            response.headers.add("Sec-WebSocket-Protocol", subprotocol)
        offered: list[Extension] = [BoundedDeflate(max_size)] if compression == "deflate" else []
        requested = _comma_list(self._headers.get_all("Sec-WebSocket-Extensions"))
        if offered and requested:
            accepted = server_extensions_handshake(requested, offered)
            if accepted:
                response.headers.add("Sec-WebSocket-Extensions", accepted.decode("ascii"))
                self._extensions = offered
        for name, value in [*self._standard_headers(), *headers.raw_items()]:
            response.headers.add(name, value)
        return response

    def finish(self, response: Response) -> tuple[bytes, Opened]:
        """Write the 101; return its bytes and the opened connection's state.

        Raises:
            ValueError: a header cannot go on the wire (a hook put CR or LF in a value...).
        """
        assert self._request is not None and response.status_code == 101
        reason = response.reason_phrase or "Switching Protocols"
        data = write_head(f"HTTP/1.1 101 {reason}", response.headers.raw_items(), "latin-1")
        subprotocols = response.headers.get_all("Sec-WebSocket-Protocol")
        connection = Connection(ConnectionType.SERVER, self._extensions)
        trailing, _ = self._h11.trailing_data
        if trailing:
            connection.receive_data(trailing)
        # The connection keeps both heads as they were on the wire, parsed if ever read.
        request = Request(
            self._request.target.decode("ascii", "replace"), headers_from_head(self._head)
        )
        sent = Response(101, response.reason_phrase, headers_from_head(data))
        return data, Opened(connection, request, sent, subprotocols[0] if subprotocols else None)

    def accept(
        self,
        *,
        subprotocols: Sequence[str],
        compression: str | None,
        max_size: int | None,
        headers: Headers,
    ) -> tuple[bytes, Opened]:
        """Check the request and answer 101 with no hooks: the server's first subprotocol
        that the client offers. Raises as :meth:`check_upgrade` does."""
        self.check_upgrade()
        offered = self.offered_subprotocols()
        subprotocol = next((name for name in subprotocols if name in offered), None)
        response = self.response_101(
            subprotocol=subprotocol, compression=compression, max_size=max_size, headers=headers
        )
        return self.finish(response)

    def respond(self, response: Response) -> bytes:
        """The bytes of a response other than 101, closing the connection (``Connection:
        close``); its ``Content-Length`` is the body's.

        Raises:
            ValueError: the response cannot go on the wire (a status out of 100-599 or 101,
                a header name that is no token, a value with CR, LF or NUL...).
        """
        status = response.status_code
        if not isinstance(status, int) or not 100 <= status <= 599 or status == 101:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ValueError(f"cannot send HTTP status {status!r} here")
        skip = {"content-length", "connection", "transfer-encoding"}
        head = [(n, v) for n, v in response.headers.raw_items() if n.lower() not in skip]
        if self._server_header and "Server" not in response.headers:
            head.insert(0, ("Server", self._server_header))
        head += [("Content-Length", str(len(response.body))), ("Connection", "close")]
        reason = response.reason_phrase or _reason(status)
        return write_head(f"HTTP/1.1 {status} {reason}", head, "latin-1") + bytes(response.body)

    def reject(self, status_code: int, message: str) -> bytes:
        """The bytes of an HTTP error response with ``message`` as its body."""
        return self.rejection(status_code, message).response

    def _head_too_large(self, size: int | None = None) -> HandshakeRejected:
        what = f"request head of {size:,} bytes" if size is not None else "request head"
        return self.rejection(431, f"{what} exceeds the {MAX_HEAD_SIZE:,}-byte limit")

    def _standard_headers(self) -> list[tuple[str, str]]:
        return [("Server", self._server_header)] if self._server_header else []

    def rejection(
        self,
        status_code: int,
        message: str,
        headers: Sequence[tuple[str, str]] = (),
        *,
        kind: str | None = None,
    ) -> HandshakeRejected:
        """An HTTP error with ``message`` as its text body, to raise."""
        body = (message + "\n").encode()
        head = [
            *self._standard_headers(),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *headers,
        ]
        reason = _reason(status_code)
        lines = [f"HTTP/1.1 {status_code} {reason}", *(f"{n}: {v}" for n, v in head), "", ""]
        response = "\r\n".join(lines).encode() + body
        return HandshakeRejected(status_code, message, response, kind)


def plain_response(status: int, text: str) -> Response:
    """A plain-text response: ``ServerConnection.respond()``.

    Raises:
        ValueError: ``status`` is not a status code from 100 to 599.
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValueError(f"status must be an HTTP status code from 100 to 599, not {status!r}")
    body = text.encode()
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(int(status), _reason(status), headers, body)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def write_head(start_line: str, headers: Iterable[tuple[str, str]], encoding: str) -> bytes:
    """An HTTP head: ``start_line``, the headers and the empty line, in ``encoding``.

    Raises:
        ValueError: it cannot go on the wire: a header name that is no token, CR, LF or NUL in
            a value or the start line (which would smuggle in another header), a character
            that ``encoding`` lacks.
    """
    if _BAD_VALUE.search(start_line):
        raise ValueError(f"cannot send the line {start_line!r}")
    lines = [start_line]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ValueError(f"cannot send the header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    lines += ["", ""]
    try:
        return "\r\n".join(lines).encode(encoding)
    except UnicodeEncodeError as exc:
        raise ValueError(f"cannot send this head in {encoding}: {exc}") from exc


# What no header value or start line may contain on the wire.
_BAD_VALUE = re.compile(r"[\r\n\x00]")
#: What h11 is told the client sent (``ClientHandshake`` writes its request itself): a GET
#: that offers an upgrade, so that h11 reads a 101 as a switch of protocols, and any other
#: response as the answer to a GET. Made once: h11 checks every header of an event it makes.
_UPGRADE_REQUEST = h11.Request(
    method=b"GET",
    target=b"/",
    headers=[(b"Host", b"localhost"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")],
)
