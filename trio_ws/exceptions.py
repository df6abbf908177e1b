"""Exceptions raised by trio_ws.

Every exception the library defines derives from :class:`WebSocketError`. Besides these, network
failures surface as plain :class:`OSError` (connection refused, TLS verification failed) and
timeouts as :class:`TimeoutError`; never as an :class:`ExceptionGroup` from the library's own
nurseries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .frames import Close
    from .http import Response

__all__ = [
    "ConcurrencyError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidHeaderFormat",
    "InvalidHeaderValue",
    "InvalidMessage",
    "InvalidProxy",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "InvalidUpgrade",
    "NegotiationError",
    "PayloadTooBig",
    "ProtocolError",
    "ProxyError",
    "SecurityError",
    "WebSocketError",
]

#: Close codes that mean the connection ended as intended (1005: a close frame without a code).
OK_CLOSE_CODES = frozenset({1000, 1001, 1005})


class WebSocketError(Exception):
    """Base class of every exception raised by trio_ws."""


class ConnectionClosed(WebSocketError):
    """The connection is closed: no message can be sent or received any more.

    Attributes:
        code: the close code that ended the connection. It is the code of the peer's close frame
            (1005 when that frame had none), the code trio_ws closed with when it failed the
            connection (1009 for an oversized message, 1011 when a keepalive pong was missing...),
            or 1006 when the TCP connection ended without a close frame.
        reason: the close reason that goes with ``code`` ("" when there is none).
        rcvd: the peer's close frame, or None if none came (websockets' name).
        sent: our close frame, or None if none went out.
        rcvd_then_sent: with both frames, whether the peer's came first (we answered it); None
            unless both were exchanged.
    """

    def __init__(
        self,
        code: int,
        reason: str = "",
        *,
        rcvd: Close | None = None,
        sent: Close | None = None,
        rcvd_then_sent: bool | None = None,
    ) -> None:
        self.code = code
        self.reason = reason
        self.rcvd = rcvd
        self.sent = sent
        self.rcvd_then_sent = rcvd_then_sent
        super().__init__(code, reason)

    def __str__(self) -> str:
        text = f"connection closed with code {self.code}"
        if self.reason:
            text += f" ({self.reason})"
        return text


class ConnectionClosedOK(ConnectionClosed):
    """The connection was closed properly, with code 1000, 1001 or none."""


class ConnectionClosedError(ConnectionClosed):
    """The connection failed or was closed with an error code."""


class InvalidState(WebSocketError, AssertionError):
    """An operation that the connection's state does not allow, such as sending a message
    from a server's ``process_request`` hook, before the opening handshake is done."""


class InvalidURI(WebSocketError, ValueError):
    """The URI given to :func:`~trio_ws.connect` is not a valid ws:// or wss:// URI."""


class InvalidHandshake(WebSocketError):
    """The opening handshake failed: the peer's HTTP request or response broke RFC 6455."""


class InvalidProxy(WebSocketError, ValueError):
    """The proxy given to :func:`~trio_ws.connect` (or found in the environment) is not one
    trio_ws can use: not a valid URL, or a scheme it does not speak.

    Attributes:
        proxy: the proxy URL, as given.
        msg: what is wrong with it.
    """

    def __init__(self, proxy: str, msg: str) -> None:
        self.proxy = proxy
        self.msg = msg
        super().__init__(f"{msg}: {proxy}")


class InvalidMessage(InvalidHandshake):
    """The server's answer to the opening handshake was no valid HTTP response, or the
    connection ended before it was complete."""


class InvalidHeader(InvalidHandshake):
    """A header of the server's 101 response is missing or has a value RFC 6455 forbids.

    Attributes:
        name: the header's name.
        value: its value, or None when it is missing.
    """

    def __init__(self, name: str, value: str | None = None) -> None:
        self.name = name
        self.value = value
        super().__init__(name, value)

    def __str__(self) -> str:
        if self.value is None:
            return f"missing {self.name} header"
        if not self.value:
            return f"empty {self.name} header"
        return f"invalid {self.name} header: {self.value}"


class InvalidHeaderFormat(InvalidHeader):
    """A header of the 101 response cannot be parsed (such as an extension name that is no
    HTTP token)."""


class InvalidHeaderValue(InvalidHeader):
    """A header of the 101 response has a value that does not fit the request (such as a
    Sec-WebSocket-Accept that does not answer the key sent)."""


class InvalidUpgrade(InvalidHeader):
    """The 101 response lacks ``Upgrade: websocket`` or ``Connection: Upgrade``."""


class NegotiationError(InvalidHandshake):
    """The server accepted a subprotocol or an extension that the client did not offer, or
    accepted one twice."""


class ProxyError(InvalidHandshake):
    """The proxy refused to connect to the server, or broke the proxy protocol (HTTP CONNECT,
    SOCKS). Network failures on the way to the proxy are plain :class:`OSError`."""


class SecurityError(InvalidHandshake):
    """The opening handshake broke a security rule, such as a redirect from ``wss://`` to
    ``ws://``, which would send what TLS protected in clear."""


class InvalidStatus(InvalidHandshake):
    """The server answered the opening handshake with an HTTP status other than 101.

    Attributes:
        response: the server's HTTP response, with ``status_code``, ``headers`` and ``body``.
    """

    def __init__(self, response: Response) -> None:
        self.response = response
        super().__init__(f"server rejected WebSocket connection: HTTP {response.status_code}")


class PayloadTooBig(WebSocketError):
    """A received message was too big; the connection failed with 1009.

    Too big: a message over ``max_size`` (refused as soon as a frame header announces it), a
    frame over ``max_fragment_size``, or a message in more frames than ``max_size`` allows
    (each frame after the first counts 64 bytes against it, so that tiny fragments cannot
    make a message cost far more memory than its payload).

    It arrives as the ``__cause__`` of the :exc:`ConnectionClosedError` (code 1009) that
    ``recv()`` raises once the messages received before it have been read.
    """


class ProtocolError(WebSocketError):
    """The peer broke the WebSocket protocol; the connection failed with 1002 or 1007.

    It arrives as the ``__cause__`` of the :exc:`ConnectionClosedError` (code 1002, or 1007 for
    invalid data such as bad UTF-8 in a text message) that ``recv()`` raises once the messages
    received before it have been read.
    """


class ConcurrencyError(WebSocketError, RuntimeError):
    """Two tasks did what only one may do at a time, such as both waiting in ``recv()``."""
