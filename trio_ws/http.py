"""The HTTP side of the opening handshake: headers, the client's request, the server's response."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import ClassVar, cast

__all__ = ["Headers", "HeadersLike", "MultipleValuesError", "Request", "Response"]


class MultipleValuesError(LookupError):
    """``headers[name]`` for a name that has several values: use ``get_all(name)``."""


class Headers(MutableMapping[str, str]):
    """HTTP headers: a multi-dict whose names are looked up without regard to case.

    websockets' API: ``headers["Host"]`` returns the value of that name, raising
    :class:`KeyError` when there is none and :exc:`MultipleValuesError` when there are several;
    :meth:`get_all` returns every value. Iterating yields each name once, in lower case, as
    ``keys()`` does; :meth:`raw_items` yields every (name, value) pair as received or added,
    names as written. ``headers[name] = value`` *adds* a header (earlier ones of that name
    stay), ``del headers[name]`` removes every header of that name; ``update()`` adds too.
    ``len(headers)`` counts names, not pairs.

    Args:
        items: the initial headers: another :class:`Headers`, a mapping, or (name, value)
            pairs, kept in order; None for none.
        **more: more headers, as name=value.
    """

    __slots__ = ("_head", "_list")

    def __init__(self, items: HeadersLike | None = None, /, **more: str) -> None:
        self._list: list[tuple[str, str]] = []
        self._head: bytes | None = None  # an HTTP head to parse into _list when first read
        if isinstance(items, _Head):
            self._head = items.head
        elif items is not None:
            self.update(items)
        if more:
            self.update(more)

    @property
    def _items(self) -> list[tuple[str, str]]:
        if self._head is not None:
            self._list = _parse_head(self._head)
            self._head = None
        return self._list

    def add(self, name: str, value: str) -> None:
        """Append a header; earlier headers of the same name stay (``headers[name] = value``)."""
        self._items.append((name, value))

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name``, in order (an empty list when it is absent)."""
        key = name.lower()
        if not name.isascii():  # lower() may lengthen it: no comparing lengths first
            return [value for item_name, value in self._items if item_name.lower() == key]
        size = len(name)  # an ASCII key: only a name of its length can match it
        return [
            value
            for item_name, value in self._items
            if len(item_name) == size and item_name.lower() == key
        ]

    def raw_items(self) -> Iterator[tuple[str, str]]:
        """Every (name, value) pair, in order, names as written."""
        return iter(list(self._items))

    def update(self, *args: HeadersLike, **more: str) -> None:  # type: ignore[override]
        """Add headers from Headers, mappings, (name, value) pairs or name=value keywords."""
        own = self._items
        for items in (*args, more) if more else args:
            if isinstance(items, list | tuple):  # the usual case first: no ABC check
                pairs: Iterable[tuple[str, str]] = items
            elif isinstance(items, Headers):
                pairs = items.raw_items()
            elif isinstance(items, Mapping):
                pairs = cast("Mapping[str, str]", items).items()
            else:
                pairs = items
            own.extend([(name, value) for name, value in pairs])

    def copy(self) -> Headers:
        """A copy: changing one leaves the other as it was."""
        return Headers(self)

    def clear(self) -> None:
        """Remove every header."""
        self._head = None
        self._list = []

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        if len(values) > 1:
            raise MultipleValuesError(name)
        return values[0]

    def __setitem__(self, name: str, value: str) -> None:
        self.add(name, value)

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        kept = [item for item in self._items if item[0].lower() != key]
        if len(kept) == len(self._items):
            raise KeyError(name)
        self._list = kept

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return bool(self.get_all(name))

    def __iter__(self) -> Iterator[str]:
        seen: dict[str, None] = {}
        for name, _ in self._items:
            seen.setdefault(name.lower(), None)
        return iter(seen)

    def __len__(self) -> int:
        return len({name.lower() for name, _ in self._items})

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        return super().__eq__(other)

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # mutable: unhashable

    def __str__(self) -> str:
        return "".join(f"{name}: {value}\r\n" for name, value in self._items) + "\r\n"

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
