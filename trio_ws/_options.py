"""The options a connection runs with, checked once when connect() or serve() is called.

``connect()`` and ``serve()`` take the same options and check them here, before they open a
socket: :func:`connection_options` checks the per-connection ones and returns the one
:class:`ConnectionOptions` that every connection of that call shares;
:func:`handshake_options` and :func:`header_option` check those of the opening handshake.
A wrong type is a TypeError, a wrong value a ValueError, and both name the option and the value,
so that a mistake never surfaces later as a failed connection or a server that stops.

:func:`check_close_code` checks a close code and reason the same way, for every ``aclose()``.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import reprlib
import ssl as ssl_module
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from ._closing import SENDABLE_CODES
from .http import Headers, HeadersLike

__all__ = [
    "ConnectionOptions",
    "HandshakeOptions",
    "LoggerLike",
    "SharedOptions",
    "call_options",
    "check_close_code",
    "check_timeout",
    "connection_options",
    "handshake_options",
    "header_option",
]

#: What the ``logger`` option accepts.
LoggerLike = logging.Logger | logging.LoggerAdapter[logging.Logger]

_DEFAULT_LOGGER = logging.getLogger("trio_ws")


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Checked per-connection options; timeouts in seconds, sizes in bytes, None for no limit."""

    close_timeout: float = 10.0  # math.inf for no limit
    ping_interval: float | None = 20.0  # None: no keepalive
    ping_timeout: float = 20.0  # math.inf for no limit
    max_message_size: int | None = 2**20
    max_fragment_size: int | None = None
    max_queue_high: int | None = 16  # None: no limit, no backpressure
    max_queue_low: int | None = 4
    write_limit_high: int = 32 * 1024
    write_limit_low: int = 8 * 1024
    logger: LoggerLike = _DEFAULT_LOGGER


@dataclass(frozen=True)
class HandshakeOptions:
    """Checked options of the opening handshake, the same on both sides."""

    open_timeout: float  # math.inf for no limit
    ssl: ssl_module.SSLContext | None
    compression: str | None
    subprotocols: tuple[str, ...]
    headers: Headers  # the additional headers, each one valid on the wire


class SharedOptions(TypedDict, total=False):
    """The options that connect() and serve() both take, with the same meaning: the base of
    ``client.ConnectOptions``, ``server.ServeOptions`` and ``testing.CommonOptions``."""

    open_timeout: float | None
    close_timeout: float | None
    ping_interval: float | None
    ping_timeout: float | None
    max_size: int | tuple[int | None, int | None] | None
    max_queue: int | tuple[int | None, int | None] | None
    write_limit: int | tuple[int, int | None]
    compression: str | None
    subprotocols: Sequence[str] | None
    logger: LoggerLike | None


def connection_options(
    *,
    close_timeout: float | None = 10,
    ping_interval: float | None = 20,
    ping_timeout: float | None = 20,
    max_size: int | tuple[int | None, int | None] | None = 2**20,
    max_queue: int | tuple[int | None, int | None] | None = 16,
    write_limit: int | tuple[int, int | None] = 32 * 1024,
    logger: LoggerLike | None = None,
) -> ConnectionOptions:
    """Check the per-connection options of connect() and serve(); the defaults are theirs.

    ``max_size`` is a size, or ``(max_message_size, max_fragment_size)``; ``max_queue`` a
    high-water mark, or ``(high, low)``; ``write_limit`` likewise. A low-water mark left out
    (or None) is a quarter of the high one. None for ``logger`` means the ``trio_ws`` logger.

    Raises:
        TypeError: an option has the wrong type (``True`` is not a number).
        ValueError: an option has a value out of its range.
    """
    max_message_size, max_fragment_size = _max_size(max_size)
    max_queue_high, max_queue_low = _max_queue(max_queue)
    write_limit_high, write_limit_low = _write_limit(write_limit)
    interval = _seconds("ping_interval", ping_interval, minimum="more than 0", allow_zero=False)
    return ConnectionOptions(
        close_timeout=check_timeout("close_timeout", close_timeout),
        ping_interval=None if interval == math.inf else interval,
        ping_timeout=check_timeout("ping_timeout", ping_timeout),
        max_message_size=max_message_size,
        max_fragment_size=max_fragment_size,
        max_queue_high=max_queue_high,
        max_queue_low=max_queue_low,
        write_limit_high=write_limit_high,
        write_limit_low=write_limit_low,
        logger=_DEFAULT_LOGGER if logger is None else _logger(logger),
    )


def handshake_options(
    *,
    ssl: ssl_module.SSLContext | None,
    open_timeout: float | None,
    compression: str | None,
    subprotocols: Sequence[str] | None,
    additional_headers: HeadersLike | None,
) -> HandshakeOptions:
    """Check the opening handshake's options of connect() and serve().

    Raises:
        TypeError: an option has the wrong type (a bare str for ``subprotocols``...).
        ValueError: an option has a value that cannot go on the wire, or is not supported.
    """
    return HandshakeOptions(
        open_timeout=check_timeout("open_timeout", open_timeout),
        ssl=_ssl(ssl),
        compression=_compression(compression),
        subprotocols=_subprotocols(subprotocols),
        headers=_headers(additional_headers),
    )


def call_options(
    arguments: Mapping[str, Any], *, logger_name: str
) -> tuple[HandshakeOptions, ConnectionOptions]:
    """Check the options that connect() or serve() was called with, from its ``locals()``.

    One list of names for both, so that an option is forwarded and checked in one place; the
    ``logger`` default is the caller's own logger, ``logger_name``.

    The results are frozen, so options given as hashable values (numbers, strings, None,
    tuples, a context or a logger by identity) are checked once and the result shared: a client
    that connects again and again with the same options does not check them every time. Each
    value is keyed with its type (a tuple's items too), so that ``True`` never passes for the
    ``1`` checked before it.
    """
    key: _OptionsKey = tuple(_typed(arguments[name]) for name in _ALL_OPTIONS)
    try:
        hash(key)
    except TypeError:  # a list, a dict, a Headers...: checked every time
        return _check_options(key, logger_name)
    return _checked_options(key, logger_name)


def _typed(value: object) -> tuple[type[object], object]:
    """``value`` with its type, and those of a tuple's items, for a cache key: ``(1, True)``
    equals ``(1, 1)``, but its key does not."""
    if isinstance(value, tuple):
        return tuple, tuple(_typed(item) for item in cast("tuple[object, ...]", value))
    return type(value), value


def _untyped(typed: tuple[type[object], object]) -> object:
    kind, value = typed
    if kind is tuple:
        return tuple(_untyped(item) for item in cast("_OptionsKey", value))
    return value


def _check_options(
    key: _OptionsKey, logger_name: str
) -> tuple[HandshakeOptions, ConnectionOptions]:
    arguments: dict[str, Any] = dict(zip(_ALL_OPTIONS, map(_untyped, key), strict=True))
    opening = handshake_options(**{name: arguments[name] for name in _HANDSHAKE_OPTIONS})
    connection = {name: arguments[name] for name in _CONNECTION_OPTIONS}
    if connection["logger"] is None:
        connection["logger"] = logging.getLogger(logger_name)
    return opening, connection_options(**connection)


_checked_options = functools.lru_cache(maxsize=64)(_check_options)

_HANDSHAKE_OPTIONS = ("ssl", "open_timeout", "compression", "subprotocols", "additional_headers")
_CONNECTION_OPTIONS = (
    "close_timeout",
    "ping_interval",
    "ping_timeout",
    "max_size",
    "max_queue",
    "write_limit",
    "logger",
)
_ALL_OPTIONS = _HANDSHAKE_OPTIONS + _CONNECTION_OPTIONS
#: Every option's value with its type, in _ALL_OPTIONS's order.
_OptionsKey = tuple[tuple[type[object], object], ...]


def header_option(option: str, value: str | None) -> str | None:
    """Check an option that is a header's value (``user_agent``, ``server_header``).

    Raises:
        TypeError: ``value`` is not a str or None.
        ValueError: ``value`` cannot be a header's value (CR, LF, NUL...).
    """
    return _header_value(option, value)


def check_timeout(option: str, value: float | None) -> float:
    """Check a timeout in seconds: a number at least 0, or None (math.inf) for no limit.

    Raises:
        TypeError: ``value`` is not an int, a float or None.
        ValueError: ``value`` is negative or NaN.
    """
    return _seconds(option, value, minimum="at least 0", allow_zero=True)


# RFC 6455 §5.5: a control frame carries at most 125 bytes, 2 of which are the close code.
_MAX_CLOSE_REASON = 123


def check_close_code(code: int, reason: str) -> None:
    """Check a close code and reason that ``aclose()`` was given, before it does anything.

    Raises:
        TypeError: ``code`` is not an int, or ``reason`` not a str.
        ValueError: ``code`` may not be sent (RFC 6455 §7.4: only 1000-1003, 1007-1013 and
            3000-4999), or ``reason`` is longer than 123 bytes in UTF-8 (RFC 6455 §5.5).
    """
    _close_code(code, reason)


def _close_code(code: object, reason: object) -> None:
    if isinstance(code, bool) or not isinstance(code, int):
        raise _type_error("close code", "an int", code)
    if not isinstance(reason, str):
        raise _type_error("close reason", "a str", reason)
    if code not in SENDABLE_CODES and not 3000 <= code <= 4999:
        raise ValueError(
            f"close code {code} may not be sent (RFC 6455 §7.4): "
            "use 1000-1003, 1007-1013 or 3000-4999"
        )
    size = len(reason.encode("utf-8", "surrogatepass"))
    if size > _MAX_CLOSE_REASON:
        raise ValueError(
            f"close reason of {size:,} bytes in UTF-8 exceeds the "
            f"{_MAX_CLOSE_REASON}-byte limit (RFC 6455 §5.5)"
        )


# -- the checks --------------------------------------------------------------------------------

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80


def _type_error(option: str, expected: str, value: object) -> TypeError:
    return TypeError(
        f"{option} must be {expected}, not {type(value).__name__} {_repr.repr(value)}"
    )


def _seconds(option: str, value: object, *, minimum: str, allow_zero: bool) -> float:
    """A duration in seconds, math.inf for None."""
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(option, "a number of seconds or None", value)
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(
            f"{option} must be {minimum} seconds, or None for no limit; not {value!r}"
        )
    return seconds


def _count(option: str, value: object, unit: str, *, minimum: int) -> int:
    """A size or a number of messages: an int (not a bool), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(option, f"an int ({unit})", value)
    if value < minimum:
        raise ValueError(f"{option} must be at least {minimum} {unit}, not {value!r}")
    return value


def _pair(option: str, value: object, expected: str) -> tuple[object, object]:
    """The two items of a tuple option; (value, None) when it is an int or None."""
    if isinstance(value, tuple):
        items = cast("tuple[object, ...]", value)
        if len(items) != 2:
            raise ValueError(f"{option} must be a pair, not a tuple of {len(items)}: {value!r}")
        return items[0], items[1]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _type_error(option, expected, value)
    return value, None


def _max_size(value: object) -> tuple[int | None, int | None]:
    """``max_size``: (max_message_size, max_fragment_size), either None for no limit."""
    expected = "an int, a (max_message_size, max_fragment_size) pair or None"
    message, fragment = _pair("max_size", value, expected)
    if message is not None:
        message = _count("max_size's max_message_size", message, "bytes", minimum=1)
    if fragment is not None:
        fragment = _count("max_size's max_fragment_size", fragment, "bytes", minimum=1)
    return message, fragment


def _max_queue(value: object) -> tuple[int | None, int | None]:
    """``max_queue``: (high, low), both None without flow control."""
    high, low = _pair("max_queue", value, "an int, a (high, low) pair or None")
    if high is None:
        if low is not None:
            raise ValueError(f"max_queue has a low-water mark but no high one: {value!r}")
        return None, None
    return _marks("max_queue", value, high, low, "messages", minimum=1)


def _write_limit(value: object) -> tuple[int, int]:
    """``write_limit``: (high, low)."""
    expected = "an int or a (high, low) pair"
    high, low = _pair("write_limit", value, expected)
    if high is None:
        raise _type_error("write_limit", expected, value)
    return _marks("write_limit", value, high, low, "bytes", minimum=0)


def _marks(
    option: str, value: object, high: object, low: object, unit: str, *, minimum: int
) -> tuple[int, int]:
    """A high-water mark and a low-water mark at most as high (a quarter of it by default)."""
    high_mark = _count(f"{option}'s high-water mark", high, unit, minimum=minimum)
    if low is None:
        return high_mark, high_mark // 4
    low_mark = _count(f"{option}'s low-water mark", low, unit, minimum=0)
    if low_mark > high_mark:
        raise ValueError(f"{option}'s low-water mark exceeds its high-water mark: {value!r}")
    return high_mark, low_mark


def _logger(value: object) -> LoggerLike:
    if not isinstance(value, logging.Logger | logging.LoggerAdapter):
        raise _type_error("logger", "a logging.Logger, a logging.LoggerAdapter or None", value)
    return cast("LoggerLike", value)


def _ssl(value: object) -> ssl_module.SSLContext | None:
    if value is not None and not isinstance(value, ssl_module.SSLContext):
        raise _type_error("ssl", "an ssl.SSLContext or None", value)
    return value


def _compression(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _type_error("compression", '"deflate" or None', value)
    if value not in ("deflate", None):
        raise ValueError(f'compression must be "deflate" or None, not {value!r}')
    return value


# RFC 9110 §5.6.2: the characters of a token (a header's name, a subprotocol).
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
# What h11 accepts as a header's value once encoded: no NUL, no CR or LF (no other header can
# be smuggled in), no other white space but inner spaces and tabs.
_FIELD_VALUE = re.compile(rb"([^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
# A handshake has no body: a header that frames one would mislead the peer (h11 refuses too).
_BODY_HEADERS = frozenset({"content-length", "transfer-encoding"})


def _subprotocols(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Sequence):
        raise _type_error("subprotocols", "a sequence of str (a list, a tuple) or None", value)
    names: list[str] = []
    for name in cast("Sequence[object]", value):
        if not isinstance(name, str):
            raise _type_error("each of subprotocols", "a str", name)
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"subprotocols: {name!r} is not an HTTP token (RFC 6455 §4.1)")
        names.append(name)
    return tuple(names)


def _headers(value: object) -> Headers:
    """``additional_headers``, each one checked, as a new Headers."""
    if value is None:
        return Headers()
    if isinstance(value, Headers):
        pairs: Iterable[object] = value.raw_items()
    elif isinstance(value, Mapping):
        pairs = cast("Mapping[object, object]", value).items()
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes | bytearray):
        pairs = cast("Iterable[object]", value)
    else:
        expected = "a Headers, a mapping, an iterable of (name, value) pairs or None"
        raise _type_error("additional_headers", expected, value)
    headers = Headers()
    for pair in pairs:
        name, item = _header_pair(pair)
        if not isinstance(name, str) or not isinstance(item, str):
            raise _type_error("additional_headers' names and values", "str", (name, item))
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"additional_headers: {name!r} is not a valid header name")
        if name.lower() in _BODY_HEADERS:
            raise ValueError(f"additional_headers: {name} has no place in a handshake (no body)")
        problem = _header_value_problem(item)
        if problem is not None:
            raise ValueError(f"additional_headers: the value of {name} {problem}: {item!r}")
        headers.add(name, item)
    return headers


def _header_pair(pair: object) -> tuple[object, object]:
    fields = _items_of(pair)
    if fields is None or len(fields) != 2:
        raise _type_error("each of additional_headers", "a (name, value) pair", pair)
    return fields[0], fields[1]


def _items_of(value: object) -> list[object] | None:
    return list(cast("Sequence[object]", value)) if isinstance(value, tuple | list) else None


def _header_value(option: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _type_error(option, "a str or None", value)
    problem = _header_value_problem(value)
    if problem is not None:
        raise ValueError(f"{option} {problem}: {value!r}")
    return value


def _header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be a header's value on the wire, or None if it can."""
    if "\r" in value or "\n" in value:
        return "contains CR or LF"
    if "\x00" in value:
        return "contains NUL"
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        return "cannot be encoded in UTF-8"
    if not _FIELD_VALUE.fullmatch(encoded):
        return "has white space other than inner spaces and tabs"
    return None
