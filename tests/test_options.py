"""trio_ws._options: every option checked when connect() or serve() is called, with errors that
name the option and the value; and the close code check every aclose() shares."""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import trio_ws
from tests.conftest import open_fds
from trio_ws._options import (
    ConnectionOptions,
    check_close_code,
    check_timeout,
    connection_options,
    handshake_options,
    header_option,
)
from trio_ws.http import Headers

# -- connection_options ------------------------------------------------------------------------


def test_defaults_are_those_of_connect_and_serve() -> None:
    """Nothing given: websockets' defaults, low-water marks a quarter of the high ones."""
    options = connection_options()
    assert options == ConnectionOptions(
        close_timeout=10.0,
        ping_interval=20.0,
        ping_timeout=20.0,
        max_message_size=2**20,
        max_fragment_size=None,
        max_queue_high=16,
        max_queue_low=4,
        write_limit_high=32768,
        write_limit_low=8192,
        logger=logging.getLogger("trio_ws"),
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"close_timeout": None}, {"close_timeout": math.inf}),
        ({"close_timeout": 0}, {"close_timeout": 0.0}),
        ({"close_timeout": 2.5}, {"close_timeout": 2.5}),
        ({"ping_timeout": None}, {"ping_timeout": math.inf}),
        ({"ping_timeout": 3}, {"ping_timeout": 3.0}),
        ({"ping_interval": None}, {"ping_interval": None}),
        ({"ping_interval": math.inf}, {"ping_interval": None}),
        ({"ping_interval": 0.5}, {"ping_interval": 0.5}),
        ({"max_size": None}, {"max_message_size": None, "max_fragment_size": None}),
        ({"max_size": 100}, {"max_message_size": 100, "max_fragment_size": None}),
        ({"max_size": (2**20, None)}, {"max_message_size": 2**20, "max_fragment_size": None}),
        ({"max_size": (None, 4096)}, {"max_message_size": None, "max_fragment_size": 4096}),
        ({"max_size": (2**20, 4096)}, {"max_message_size": 2**20, "max_fragment_size": 4096}),
        ({"max_size": (None, None)}, {"max_message_size": None, "max_fragment_size": None}),
        ({"max_queue": None}, {"max_queue_high": None, "max_queue_low": None}),
        ({"max_queue": (None, None)}, {"max_queue_high": None, "max_queue_low": None}),
        ({"max_queue": 1}, {"max_queue_high": 1, "max_queue_low": 0}),
        ({"max_queue": 64}, {"max_queue_high": 64, "max_queue_low": 16}),
        ({"max_queue": (64, None)}, {"max_queue_high": 64, "max_queue_low": 16}),
        ({"max_queue": (64, 60)}, {"max_queue_high": 64, "max_queue_low": 60}),
        ({"max_queue": (8, 8)}, {"max_queue_high": 8, "max_queue_low": 8}),
        ({"max_queue": (8, 0)}, {"max_queue_high": 8, "max_queue_low": 0}),
        ({"write_limit": 0}, {"write_limit_high": 0, "write_limit_low": 0}),
        ({"write_limit": 65536}, {"write_limit_high": 65536, "write_limit_low": 16384}),
        ({"write_limit": (65536, None)}, {"write_limit_high": 65536, "write_limit_low": 16384}),
        ({"write_limit": (65536, 1000)}, {"write_limit_high": 65536, "write_limit_low": 1000}),
    ],
    ids=repr,
)
def test_good_values_map_to_the_fields(given: dict[str, Any], expected: dict[str, Any]) -> None:
    """None means no limit (math.inf for a timeout), pairs set both bounds, a low-water mark
    left out is a quarter of the high one."""
    options = connection_options(**given)
    assert {name: getattr(options, name) for name in expected} == expected


def test_logger_and_logger_adapter_are_kept() -> None:
    logger = logging.getLogger("tests.options")
    adapter = logging.LoggerAdapter(logger, {"app": "x"})
    assert connection_options(logger=logger).logger is logger
    assert connection_options(logger=adapter).logger is adapter


BAD_CONNECTION_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    # Timeouts: numbers of seconds, at least 0 (more than 0 between pings), or None.
    ({"close_timeout": -1}, ValueError, r"close_timeout must be at least 0 seconds.*-1"),
    ({"close_timeout": math.nan}, ValueError, r"close_timeout .*nan"),
    ({"close_timeout": "10"}, TypeError, r"close_timeout must be a number .*not str '10'"),
    ({"close_timeout": True}, TypeError, r"close_timeout must be a number .*not bool True"),
    ({"ping_timeout": -0.5}, ValueError, r"ping_timeout .*-0\.5"),
    ({"ping_timeout": math.nan}, ValueError, r"ping_timeout .*nan"),
    ({"ping_timeout": False}, TypeError, r"ping_timeout .*bool False"),
    ({"ping_interval": 0}, ValueError, r"ping_interval must be more than 0 seconds.*not 0"),
    ({"ping_interval": -20}, ValueError, r"ping_interval .*-20"),
    ({"ping_interval": math.nan}, ValueError, r"ping_interval .*nan"),
    ({"ping_interval": [20]}, TypeError, r"ping_interval .*list \[20\]"),
    # max_size: bytes, or (max_message_size, max_fragment_size), at least 1 each, or None.
    ({"max_size": True}, TypeError, r"max_size must be an int, a \(max_message_size.*bool True"),
    ({"max_size": 1.5e6}, TypeError, r"max_size .*float 1500000\.0"),
    ({"max_size": "1M"}, TypeError, r"max_size .*str '1M'"),
    ({"max_size": 0}, ValueError, r"max_size's max_message_size must be at least 1 bytes.*0"),
    ({"max_size": -1}, ValueError, r"max_size's max_message_size .*-1"),
    ({"max_size": (2**20,)}, ValueError, r"max_size must be a pair.*tuple of 1"),
    ({"max_size": (1, 2, 3)}, ValueError, r"max_size must be a pair.*tuple of 3"),
    ({"max_size": [2**20, None]}, TypeError, r"max_size .*list"),
    ({"max_size": (2**20, 0)}, ValueError, r"max_size's max_fragment_size .*not 0"),
    ({"max_size": (2**20, True)}, TypeError, r"max_size's max_fragment_size .*bool True"),
    ({"max_size": ("1M", None)}, TypeError, r"max_size's max_message_size .*str '1M'"),
    # max_queue: messages, or (high, low) with low <= high, or None.
    ({"max_queue": True}, TypeError, r"max_queue must be an int, a \(high, low\).*bool True"),
    ({"max_queue": 0}, ValueError, r"max_queue's high-water mark must be at least 1.*0"),
    ({"max_queue": -4}, ValueError, r"max_queue's high-water mark .*-4"),
    ({"max_queue": 16.0}, TypeError, r"max_queue .*float 16\.0"),
    ({"max_queue": (16,)}, ValueError, r"max_queue must be a pair.*tuple of 1"),
    ({"max_queue": (16, 17)}, ValueError, r"max_queue's low-water mark exceeds.*\(16, 17\)"),
    ({"max_queue": (16, -1)}, ValueError, r"max_queue's low-water mark must be at least 0"),
    ({"max_queue": (None, 4)}, ValueError, r"max_queue has a low-water mark but no high.*"),
    ({"max_queue": (16, 4.0)}, TypeError, r"max_queue's low-water mark .*float 4\.0"),
    # write_limit: bytes, or (high, low) with low <= high; never None.
    ({"write_limit": None}, TypeError, r"write_limit must be an int or a \(high, low\).*None"),
    ({"write_limit": True}, TypeError, r"write_limit .*bool True"),
    ({"write_limit": -1}, ValueError, r"write_limit's high-water mark must be at least 0.*-1"),
    ({"write_limit": (None, 10)}, TypeError, r"write_limit must be an int .*\(None, 10\)"),
    ({"write_limit": (100, 200)}, ValueError, r"write_limit's low-water mark exceeds"),
    ({"write_limit": (100, 20, 1)}, ValueError, r"write_limit must be a pair.*tuple of 3"),
    # logger: a Logger or a LoggerAdapter.
    ({"logger": "trio_ws"}, TypeError, r"logger must be a logging\.Logger.*str 'trio_ws'"),
    ({"logger": print}, TypeError, r"logger .*builtin_function_or_method"),
]


@pytest.mark.parametrize(("given", "error", "message"), BAD_CONNECTION_OPTIONS, ids=repr)
def test_bad_values_raise_an_error_naming_the_option_and_the_value(
    given: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A wrong type is a TypeError, a wrong value a ValueError (bool is not a number); the
    message names the option (and the part of a pair) and shows the value."""
    with pytest.raises(error, match=message) as caught:
        connection_options(**given)
    assert type(caught.value) is error


def test_options_checked_once_are_shared_and_a_bad_one_always_raises() -> None:
    """connect() with the same hashable options twice checks them once (both share the frozen
    result); a bool never passes for the int checked before it, not even inside a tuple, a bad
    value raises every time, and unhashable options (a list, a dict) are checked on every
    call."""
    uri = "ws://127.0.0.1:9/"
    first = trio_ws.connect(uri, ping_interval=1, close_timeout=2.5, proxy=None)
    again = trio_ws.connect(uri, ping_interval=1, close_timeout=2.5, proxy=None)
    assert first._options is again._options  # pyright: ignore[reportPrivateUsage]
    other = trio_ws.connect(uri, ping_interval=2, close_timeout=2.5, proxy=None)
    assert other._options is not first._options  # pyright: ignore[reportPrivateUsage]
    assert other._options.ping_interval == 2  # pyright: ignore[reportPrivateUsage]
    for _ in range(2):
        with pytest.raises(TypeError, match="ping_interval must be a number"):
            trio_ws.connect(uri, ping_interval=True, close_timeout=2.5, proxy=None)
        trio_ws.connect(uri, max_size=(2**20, 1), proxy=None)  # a tuple's items are keyed too
        with pytest.raises(TypeError, match=r"max_fragment_size .*bool True"):
            trio_ws.connect(uri, max_size=(2**20, True), proxy=None)
        with pytest.raises(ValueError, match="subprotocols"):
            trio_ws.connect(uri, subprotocols=["no spaces allowed"], proxy=None)
    listed = trio_ws.connect(uri, subprotocols=["chat"], additional_headers={"X-A": "1"})
    assert listed._opener.opening.subprotocols == ("chat",)  # pyright: ignore[reportPrivateUsage]
    assert listed._opener.opening.headers.get_all("X-A") == ["1"]  # pyright: ignore[reportPrivateUsage]


def test_check_timeout_names_its_option() -> None:
    assert check_timeout("open_timeout", None) == math.inf
    assert check_timeout("open_timeout", 0) == 0.0
    with pytest.raises(ValueError, match=r"open_timeout .*-3"):
        check_timeout("open_timeout", -3)


# -- handshake_options and header_option -----------------------------------------------------


def handshake(**given: Any) -> Any:
    """handshake_options() with connect()'s defaults, and ``given``."""
    options: dict[str, Any] = {
        "ssl": None,
        "open_timeout": 10,
        "compression": "deflate",
        "subprotocols": None,
        "additional_headers": None,
    }
    return handshake_options(**{**options, **given})


def test_handshake_options_defaults_and_good_values() -> None:
    context = ssl.create_default_context()
    opening = handshake()
    assert (opening.open_timeout, opening.ssl, opening.compression) == (10.0, None, "deflate")
    assert (opening.subprotocols, opening.headers) == ((), Headers())
    opening = handshake(
        ssl=context,
        open_timeout=None,
        compression=None,
        subprotocols=["chat.v2", "chat.v1"],
        additional_headers={"X-Token": "a b\tc", "X-Empty": "", "X-Utf8": "é"},
    )
    assert (opening.open_timeout, opening.ssl, opening.compression) == (math.inf, context, None)
    assert opening.subprotocols == ("chat.v2", "chat.v1")
    assert list(opening.headers.raw_items()) == [
        ("X-Token", "a b\tc"),
        ("X-Empty", ""),
        ("X-Utf8", "é"),
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Headers([("X-A", "1"), ("x-a", "2")]),
        lambda: {"X-A": "1", "x-a": "2"},
        lambda: [("X-A", "1"), ("x-a", "2")],
        lambda: [["X-A", "1"], ["x-a", "2"]],
        lambda: (pair for pair in [("X-A", "1"), ("x-a", "2")]),
    ],
    ids=["headers", "mapping", "pairs", "lists", "generator"],
)
def test_additional_headers_take_every_headers_like_form(make: Callable[[], Any]) -> None:
    """A Headers, a mapping, or (name, value) pairs: copied into a new Headers, in order."""
    given = make()
    opening = handshake(additional_headers=given)
    assert opening.headers is not given
    assert list(opening.headers.raw_items()) == [("X-A", "1"), ("x-a", "2")]


BAD_HANDSHAKE_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"ssl": True}, TypeError, r"ssl must be an ssl\.SSLContext or None, not bool True"),
    ({"ssl": "wss"}, TypeError, r"ssl must be .*str 'wss'"),
    ({"open_timeout": -1}, ValueError, r"open_timeout must be at least 0 seconds.*-1"),
    ({"open_timeout": math.nan}, ValueError, r"open_timeout .*nan"),
    ({"open_timeout": True}, TypeError, r"open_timeout .*bool True"),
    ({"compression": "gzip"}, ValueError, r"compression must be \"deflate\" or None.*'gzip'"),
    ({"compression": True}, TypeError, r"compression must be \"deflate\" or None.*bool True"),
    ({"subprotocols": "chat"}, TypeError, r"subprotocols must be a sequence of str.*str 'chat'"),
    ({"subprotocols": b"chat"}, TypeError, r"subprotocols .*bytes b'chat'"),
    ({"subprotocols": {"chat"}}, TypeError, r"subprotocols .*set"),
    ({"subprotocols": ["chat", 1]}, TypeError, r"each of subprotocols must be a str.*int 1"),
    ({"subprotocols": ["a b"]}, ValueError, r"subprotocols: 'a b' is not an HTTP token"),
    ({"subprotocols": ["chat,v2"]}, ValueError, r"subprotocols: 'chat,v2' is not an HTTP"),
    ({"subprotocols": [""]}, ValueError, r"subprotocols: '' is not an HTTP token"),
    ({"additional_headers": "X-A: 1"}, TypeError, r"additional_headers must be .*str"),
    ({"additional_headers": 1}, TypeError, r"additional_headers must be .*int 1"),
    ({"additional_headers": ["X-A"]}, TypeError, r"each of additional_headers .*pair.*'X-A'"),
    ({"additional_headers": [("X-A", "1", "2")]}, TypeError, r"each of additional_headers"),
    ({"additional_headers": {"X-A": 1}}, TypeError, r"names and values must be str.*1"),
    ({"additional_headers": {b"X-A": "1"}}, TypeError, r"names and values must be str"),
    ({"additional_headers": {"X A": "v"}}, ValueError, r"additional_headers: 'X A' is not a"),
    ({"additional_headers": {"X-é": "v"}}, ValueError, r"'X-é' is not a valid header name"),
    ({"additional_headers": {"": "v"}}, ValueError, r"'' is not a valid header name"),
    ({"additional_headers": {"X:A": "v"}}, ValueError, r"'X:A' is not a valid header name"),
    ({"additional_headers": {"X-Bad": "a\x00b"}}, ValueError, r"value of X-Bad contains NUL"),
    ({"additional_headers": {"X-A": "a\r\nX-Evil: 1"}}, ValueError, r"X-A contains CR or LF"),
    ({"additional_headers": {"X-A": "a\rb"}}, ValueError, r"X-A contains CR or LF"),
    ({"additional_headers": {"X-A": "a\nb"}}, ValueError, r"X-A contains CR or LF"),
    ({"additional_headers": {"X-A": " a"}}, ValueError, r"X-A has white space"),
    ({"additional_headers": {"X-A": "a\t"}}, ValueError, r"X-A has white space"),
    ({"additional_headers": {"X-A": "a\x0bb"}}, ValueError, r"X-A has white space"),
    ({"additional_headers": {"X-A": "\ud800"}}, ValueError, r"X-A cannot be encoded"),
    ({"additional_headers": {"Content-Length": "0"}}, ValueError, r"Content-Length has no"),
    ({"additional_headers": {"transfer-encoding": "chunked"}}, ValueError, r"no place"),
]


@pytest.mark.parametrize(("given", "error", "message"), BAD_HANDSHAKE_OPTIONS, ids=repr)
def test_bad_handshake_options_raise_an_error_naming_the_option(
    given: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Wrong types are TypeErrors; subprotocols must be tokens; a header must be one h11 can
    write, and never one that could smuggle another in (CR, LF) or frame a body."""
    with pytest.raises(error, match=message) as caught:
        handshake(**given)
    assert type(caught.value) is error


@pytest.mark.parametrize("option", ["user_agent", "server_header"])
def test_header_option_takes_a_header_value_or_none(option: str) -> None:
    assert header_option(option, None) is None
    assert header_option(option, "my-app/1.0 (linux)") == "my-app/1.0 (linux)"
    with pytest.raises(ValueError, match=rf"{option} contains CR or LF: 'a\\r\\nX-Evil: 1'"):
        header_option(option, "a\r\nX-Evil: 1")
    with pytest.raises(ValueError, match=rf"{option} contains NUL"):
        header_option(option, "a\x00")
    with pytest.raises(ValueError, match=rf"{option} has white space"):
        header_option(option, "app ")
    with pytest.raises(TypeError, match=rf"{option} must be a str or None, not bytes b'app'"):
        header_option(option, b"app")  # type: ignore[arg-type]


# -- check_close_code --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4999]
)
def test_close_codes_an_endpoint_may_send_pass(code: int) -> None:
    check_close_code(code, "")
    check_close_code(code, "é" * 61 + "x")  # 123 bytes


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, -1])
def test_close_codes_that_may_not_be_sent_raise_value_error_naming_the_code(code: int) -> None:
    """RFC 6455 §7.4: reserved codes, codes only for reporting (1005, 1006, 1015), 1014 that
    wsproto peers reject, and codes out of range."""
    with pytest.raises(ValueError, match=rf"close code {code} may not be sent"):
        check_close_code(code, "")


def test_close_reason_over_123_bytes_raises_value_error_with_its_size() -> None:
    with pytest.raises(ValueError, match=r"close reason of 124 bytes .* 123-byte limit"):
        check_close_code(1000, "é" * 62)


@pytest.mark.parametrize(
    ("code", "reason", "message"),
    [
        (True, "", r"close code must be an int, not bool True"),
        (1000.0, "", r"close code must be an int, not float 1000\.0"),
        ("1000", "", r"close code must be an int, not str '1000'"),
        (1000, None, r"close reason must be a str, not NoneType None"),
        (1000, b"bye", r"close reason must be a str, not bytes b'bye'"),
    ],
)
def test_close_code_and_reason_of_the_wrong_type_raise_type_error(
    code: object, reason: object, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        check_close_code(code, reason)  # type: ignore[arg-type]


# -- through connect() and serve() -------------------------------------------------------------

# One bad option of each kind, as connect() and serve() get them.
THROUGH_THE_API: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"max_size": (2**20, None, 1)}, ValueError, r"max_size must be a pair"),
    ({"max_size": True}, TypeError, r"max_size .*bool True"),
    ({"max_queue": (4, 16)}, ValueError, r"max_queue's low-water mark exceeds"),
    ({"write_limit": -1}, ValueError, r"write_limit's high-water mark"),
    ({"close_timeout": math.nan}, ValueError, r"close_timeout"),
    ({"ping_interval": 0}, ValueError, r"ping_interval"),
    ({"open_timeout": -1}, ValueError, r"open_timeout"),
    ({"compression": "gzip"}, ValueError, r"compression"),
    ({"subprotocols": "chat"}, TypeError, r"subprotocols"),
    ({"additional_headers": {"X-Bad": "a\x00b"}}, ValueError, r"X-Bad contains NUL"),
    ({"logger": "trio_ws"}, TypeError, r"logger"),
    ({"ssl": "yes"}, TypeError, r"ssl must be"),
]


@pytest.mark.parametrize(("given", "error", "message"), THROUGH_THE_API, ids=repr)
async def test_connect_raises_at_call_time_without_opening_a_socket(
    given: dict[str, Any], error: type[Exception], message: str
) -> None:
    """connect() checks every option before it resolves, connects or starts a task: the
    error comes out as itself, and nothing is left open."""
    fds = open_fds()
    with pytest.raises(error, match=message) as caught:
        async with trio_ws.connect("ws://127.0.0.1:9/", **given):
            pass  # pragma: no cover
    assert type(caught.value) is error
    with pytest.raises(ValueError, match=r"user_agent_header contains CR or LF"):
        async with trio_ws.connect("ws://127.0.0.1:9/", user_agent_header="a\r\nX-Evil: 1"):
            pass  # pragma: no cover
    assert open_fds() == fds


async def test_connect_checks_options_before_the_uri() -> None:
    """A bad option is reported even with a URI nobody could connect to."""
    with pytest.raises(TypeError, match="max_size"):
        async with trio_ws.connect("http://nowhere/", max_size=True):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def never_called(ws: trio_ws.ServerConnection) -> None:  # pragma: no cover
    raise AssertionError("serve() must not have started")


@pytest.mark.parametrize(("given", "error", "message"), THROUGH_THE_API, ids=repr)
async def test_serve_raises_at_call_time_and_never_listens(
    given: dict[str, Any], error: type[Exception], message: str
) -> None:
    """serve() checks every option before it listens: nursery.start() raises the error
    itself, and no socket was opened, so no client could ever reach the handler."""
    fds = open_fds()
    async with trio.open_nursery() as nursery:
        with pytest.raises(error, match=message) as caught:
            await nursery.start(partial(trio_ws.serve, never_called, "127.0.0.1", 0, **given))
        assert not nursery.child_tasks
    assert type(caught.value) is error
    with pytest.raises(ValueError, match=r"server_header contains CR or LF"):
        await trio_ws.serve(never_called, "127.0.0.1", 0, server_header="a\nb")
    with pytest.raises(TypeError, match=r"handler must be an async function"):
        await trio_ws.serve("echo", "127.0.0.1", 0)  # type: ignore[arg-type]
    assert open_fds() == fds
