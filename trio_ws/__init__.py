"""trio_ws: WebSocket client and server for trio (RFC 6455, RFC 7692), built on wsproto."""

from ._version import __version__ as __version__
from .auth import basic_auth as basic_auth
from .broadcasting import broadcast as broadcast
from .client import Backoff as Backoff
from .client import ClientConnection as ClientConnection
from .client import connect as connect
from .client import connect_in as connect_in
from .client import unix_connect as unix_connect
from .connection import Connection as Connection
from .connection import State as State
from .exceptions import ConcurrencyError as ConcurrencyError
from .exceptions import ConnectionClosed as ConnectionClosed
from .exceptions import ConnectionClosedError as ConnectionClosedError
from .exceptions import ConnectionClosedOK as ConnectionClosedOK
from .exceptions import InvalidHandshake as InvalidHandshake
from .exceptions import InvalidHeader as InvalidHeader
from .exceptions import InvalidHeaderFormat as InvalidHeaderFormat
from .exceptions import InvalidHeaderValue as InvalidHeaderValue
from .exceptions import InvalidMessage as InvalidMessage
from .exceptions import InvalidProxy as InvalidProxy
from .exceptions import InvalidState as InvalidState
from .exceptions import InvalidStatus as InvalidStatus
from .exceptions import InvalidUpgrade as InvalidUpgrade
from .exceptions import InvalidURI as InvalidURI
from .exceptions import NegotiationError as NegotiationError
from .exceptions import PayloadTooBig as PayloadTooBig
from .exceptions import ProtocolError as ProtocolError
from .exceptions import ProxyError as ProxyError
from .exceptions import SecurityError as SecurityError
from .exceptions import WebSocketError as WebSocketError
from .frames import Close as Close
from .http import Headers as Headers
from .http import MultipleValuesError as MultipleValuesError
from .http import Request as Request
from .http import Response as Response
from .server import Server as Server
from .server import ServerConnection as ServerConnection
from .server import serve as serve
from .server import unix_serve as unix_serve
from .stats import Stats as Stats

__all__ = [
    "Backoff",
    "ClientConnection",
    "Close",
    "ConcurrencyError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Headers",
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
    "MultipleValuesError",
    "NegotiationError",
    "PayloadTooBig",
    "ProtocolError",
    "ProxyError",
    "Request",
    "Response",
    "SecurityError",
    "Server",
    "ServerConnection",
    "State",
    "Stats",
    "WebSocketError",
    "__version__",
    "basic_auth",
    "broadcast",
    "connect",
    "connect_in",
    "serve",
    "unix_connect",
    "unix_serve",
]
