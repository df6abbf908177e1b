"""Headers: websockets' multi-dict API, names looked up without regard to case."""

from __future__ import annotations

import pytest

from trio_ws.http import Headers, MultipleValuesError, headers_from_head


def test_getitem_returns_the_one_value_and_raises_for_none_or_several() -> None:
    """headers[name] is the value of a name that has exactly one: KeyError without any,
    MultipleValuesError with several (get_all gives them all), as in websockets."""
    headers = Headers([("Host", "example.com"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")])
    assert headers["host"] == "example.com"
    with pytest.raises(KeyError):
        headers["Origin"]
    with pytest.raises(MultipleValuesError):
        headers["Set-Cookie"]
    assert headers.get_all("SET-COOKIE") == ["a=1", "b=2"]
    assert headers.get("Origin") is None
    assert isinstance(MultipleValuesError("x"), LookupError)


def test_setitem_adds_and_delitem_removes_every_value_of_a_name() -> None:
    """headers[name] = value appends; del headers[name] removes all of that name, whatever
    their case; deleting a name that is absent raises KeyError."""
    headers = Headers()
    headers["X-A"] = "1"
    headers["x-a"] = "2"
    headers["X-B"] = "3"
    assert list(headers.raw_items()) == [("X-A", "1"), ("x-a", "2"), ("X-B", "3")]
    del headers["X-a"]
    assert list(headers.raw_items()) == [("X-B", "3")]
    with pytest.raises(KeyError):
        del headers["X-A"]


def test_iteration_len_and_contains_are_over_names() -> None:
    """Iterating yields each name once, lowercased, in first-seen order; len counts names;
    `in` ignores case; keys() is the same list."""
    headers = Headers([("Host", "h"), ("X-A", "1"), ("x-a", "2")])
    assert list(headers) == ["host", "x-a"]
    assert list(headers.keys()) == ["host", "x-a"]
    assert len(headers) == 2
    assert "HOST" in headers
    assert "Origin" not in headers
    assert 1 not in headers


def test_update_copy_clear_and_keywords() -> None:
    """update() adds from Headers, mappings, pairs and keywords; copy() is independent;
    clear() empties; equality compares the pairs in order."""
    headers = Headers({"A": "1"}, B="2")
    headers.update([("A", "3")], C="4")
    headers.update(Headers([("D", "5")]))
    assert list(headers.raw_items()) == [
        ("A", "1"),
        ("B", "2"),
        ("A", "3"),
        ("C", "4"),
        ("D", "5"),
    ]
    copy = headers.copy()
    copy["E"] = "6"
    assert "E" not in headers
    assert copy != headers
    assert Headers(headers) == headers
    headers.clear()
    assert len(headers) == 0
    assert list(headers.raw_items()) == []


def test_a_head_parsed_lazily_behaves_the_same() -> None:
    """The handshake keeps headers as their raw head: reading, adding and deleting work as on
    headers built from pairs."""
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
    lazy = headers_from_head(head)
    assert list(lazy) == ["upgrade", "x-a"]
    assert lazy["Upgrade"] == "websocket"
    del lazy["X-A"]
    lazy["X-B"] = "3"
    assert list(lazy.raw_items()) == [("Upgrade", "websocket"), ("X-B", "3")]
    assert str(lazy) == "Upgrade: websocket\r\nX-B: 3\r\n\r\n"


def test_names_match_without_regard_to_case_even_where_lowering_changes_the_length() -> None:
    """Lookups compare lowered names: ASCII ones as usual, and a name whose lowered form is
    longer than itself ("İ" lowers to two code points) still finds its match."""
    headers = Headers([("X-Trace", "1"), ("x-trace", "2"), ("İ", "dotted"), ("X-Other", "3")])
    assert headers.get_all("X-TRACE") == ["1", "2"]
    assert headers.get_all("i̇") == ["dotted"]
    assert headers.get_all("İ") == ["dotted"]
    assert "X-OTHER" in headers
    assert "X-Othe" not in headers
