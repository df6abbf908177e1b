"""The HTTP side of the opening handshake: headers, the client's request, the server's response."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, cast

__all__ = ["Headers", "HeadersLike", "Request", "Response"]


class Headers:
    """HTTP headers: an ordered list of (name, value) pairs, looked up without regard to case.

    ``headers["Host"]`` returns the first value of that name and raises :class:`KeyError` when
    there is none; :meth:`get_all` returns every value. Iterating yields (name, value) pairs in
    the order they were received or added; ``"host" in headers`` and ``len(headers)`` work too.

    Args:
        items: the initial headers: another :class:`Headers`, a mapping, or (name, value)
            pairs, kept in order; None for none.
    """

    __slots__ = ("_head", "_list")

    def __init__(self, items: HeadersLike | None = None) -> None:
        self._list: list[tuple[str, str]] = []
        self._head: bytes | None = None  # an HTTP head to parse into _list when first read
        if isinstance(items, _Head):
            self._head = items.head
        elif items is not None:
            if isinstance(items, Headers):
                pairs: Iterable[tuple[str, str]] = items.items()
            elif isinstance(items, Mapping):
                pairs = cast("Mapping[str, str]", items).items()
            else:
                pairs = items
            for name, value in pairs:
                self.add(name, value)

    @property
    def _items(self) -> list[tuple[str, str]]:
        if self._head is not None:
            self._list = _parse_head(self._head)
            self._head = None
        return self._list

    def add(self, name: str, value: str) -> None:
        """Append a header; earlier headers of the same name stay."""
        self._items.append((name, value))

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of ``name``, or ``default`` when it is absent."""
        key = name.lower()
        for item_name, value in self._items:
            if item_name.lower() == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name``, in order (an empty list when it is absent)."""
        key = name.lower()
        return [value for item_name, value in self._items if item_name.lower() == key]

    def items(self) -> list[tuple[str, str]]:
        """Return all (name, value) pairs, in order."""
        return list(self._items)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # mutable: unhashable

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def headers_from_head(head: bytes) -> Headers:
    """The headers of an HTTP head (start line, header lines) that h11 accepted.

    For the opening handshake: a connection keeps its handshake's headers for its whole life,
    and most are never read, so the head is parsed only when they first are. One bytes object
    takes a fraction of the memory of their pairs of strings.
    """
    return Headers(_Head(head))


class _Head:
    """An HTTP head for :class:`Headers` to parse when first read; its pairs if iterated."""

    __slots__ = ("head",)

    def __init__(self, head: bytes) -> None:
        self.head = head

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(_parse_head(self.head))


_LINE_END = re.compile(rb"\r?\n")


def _parse_head(head: bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs of an HTTP head that h11 accepted: its header lines, decoded."""
    items: list[tuple[str, str]] = []
    for line in _LINE_END.split(head)[1:]:
        if not line:
            break
        name, _, value = line.partition(b":")
        items.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return items


#: What ``additional_headers`` accepts: a :class:`Headers`, a mapping or (name, value) pairs.
HeadersLike = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True)
class Request:
    """The client's opening-handshake request.

    Both sides read it as :attr:`Connection.request <trio_ws.connection.Connection.request>`.

    Attributes:
        path: the request target, such as ``"/chat?room=1"``.
        headers: every header the client sent.
    """

    path: str
    headers: Headers = field(default_factory=Headers)


@dataclass(frozen=True)
class Response:
    """The server's opening-handshake response.

    Both sides read an accepted one as :attr:`Connection.response
    <trio_ws.connection.Connection.response>`; a client gets a rejection as
    :attr:`InvalidStatus.response <trio_ws.exceptions.InvalidStatus.response>`.

    A server's ``process_request`` hook returns one to answer a request without upgrading it,
    and ``process_response`` may return one to replace the 101; build it with
    :meth:`ServerConnection.respond <trio_ws.server.ServerConnection.respond>` or directly.
    Its ``Content-Length`` is set from ``body`` when it is sent.

    Attributes:
        status_code: 101 when the server accepted the WebSocket connection.
        reason_phrase: the status line's reason ("Switching Protocols"); "" to send the
            standard one for ``status_code``.
        headers: every header the server sent, in order.
        body: the response body, for a rejection (empty for 101).
    """

    status_code: int
    reason_phrase: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
