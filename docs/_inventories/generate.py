"""Write the intersphinx inventories the docs build reads instead of downloading them.

The docs are built with ``-W -n`` on machines without internet access, so ``conf.py`` points
intersphinx at the small inventories in this directory rather than at the projects' own
``objects.inv``. Each lists only the targets our pages and docstrings reference, with the URLs
of the real documentation, so links still go to docs.python.org, trio.readthedocs.io and
python-hyper.org.

When a page or docstring references a new Python, trio or wsproto object, add it below and run::

    python docs/_inventories/generate.py

A missing entry fails the nitpicky build ("py:class reference target not found"), so the list
cannot silently fall behind.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, "domain:role", "page.html#anchor"); "$" in the anchor stands for the name.
Entry = tuple[str, str, str]

_BUILTIN_CLASSES = {
    "bool": "library/functions.html#$",
    "bytearray": "library/stdtypes.html#$",
    "bytes": "library/stdtypes.html#$",
    "dict": "library/stdtypes.html#$",
    "float": "library/functions.html#$",
    "frozenset": "library/stdtypes.html#$",
    "int": "library/functions.html#$",
    "list": "library/stdtypes.html#$",
    "memoryview": "library/stdtypes.html#$",
    "object": "library/functions.html#$",
    "str": "library/stdtypes.html#$",
    "tuple": "library/stdtypes.html#$",
}

_BUILTIN_EXCEPTIONS = [
    "BaseException",
    "BaseExceptionGroup",
    "ConnectionRefusedError",
    "Exception",
    "ExceptionGroup",
    "KeyError",
    "KeyboardInterrupt",
    "OSError",
    "RuntimeError",
    "StopAsyncIteration",
    "TimeoutError",
    "TypeError",
    "ValueError",
]

_COLLECTIONS_ABC = [
    "AsyncGenerator",
    "AsyncIterable",
    "AsyncIterator",
    "Awaitable",
    "Callable",
    "Generator",
    "Iterable",
    "Iterator",
    "Mapping",
    "Sequence",
]

PYTHON: list[Entry] = [
    ("None", "py:data", "library/constants.html#$"),
    *((name, "py:class", uri) for name, uri in _BUILTIN_CLASSES.items()),
    *((name, "py:exception", "library/exceptions.html#$") for name in _BUILTIN_EXCEPTIONS),
    *(
        (f"collections.abc.{name}", "py:class", "library/collections.abc.html#$")
        for name in _COLLECTIONS_ABC
    ),
    ("contextlib.asynccontextmanager", "py:function", "library/contextlib.html#$"),
    ("functools.partial", "py:function", "library/functools.html#$"),
    ("enum.Enum", "py:class", "library/enum.html#$"),
    ("logging.Logger", "py:class", "library/logging.html#$"),
    ("logging.LoggerAdapter", "py:class", "library/logging.html#$"),
    ("logging.getLogger", "py:function", "library/logging.html#$"),
    ("logging.basicConfig", "py:function", "library/logging.html#$"),
    ("ssl.SSLContext", "py:class", "library/ssl.html#$"),
    ("ssl.SSLContext.load_cert_chain", "py:method", "library/ssl.html#$"),
    ("ssl.create_default_context", "py:function", "library/ssl.html#$"),
    ("ssl.SSLError", "py:exception", "library/ssl.html#$"),
    ("uuid.UUID", "py:class", "library/uuid.html#$"),
    ("re.Pattern", "py:class", "library/re.html#$"),
    ("urllib.parse.urlsplit", "py:function", "library/urllib.parse.html#$"),
    ("urllib.parse.parse_qs", "py:function", "library/urllib.parse.html#$"),
    ("os.PathLike", "py:class", "library/os.html#$"),
    ("typing.TypedDict", "py:class", "library/typing.html#$"),
    ("re.compile", "py:function", "library/re.html#$"),
    ("http.HTTPStatus", "py:class", "library/http.html#$"),
    ("collections.Counter", "py:class", "library/collections.html#$"),
    ("hmac.compare_digest", "py:function", "library/hmac.html#$"),
    ("hashlib.scrypt", "py:function", "library/hashlib.html#$"),
    ("socket.socket", "py:class", "library/socket.html#$"),
    ("socket.SO_REUSEPORT", "py:data", "library/socket.html#socket-unix-constants"),
    ("AssertionError", "py:exception", "library/exceptions.html#$"),
]

TRIO: list[Entry] = [
    ("trio.run", "py:function", "reference-core.html#$"),
    ("trio.open_nursery", "py:function", "reference-core.html#$"),
    ("trio.Nursery", "py:class", "reference-core.html#$"),
    ("trio.Nursery.start", "py:method", "reference-core.html#$"),
    ("trio.Nursery.start_soon", "py:method", "reference-core.html#$"),
    ("trio.Nursery.cancel_scope", "py:attribute", "reference-core.html#$"),
    ("trio.TaskStatus", "py:class", "reference-core.html#$"),
    ("trio.CancelScope", "py:class", "reference-core.html#$"),
    ("trio.CancelScope.cancel", "py:method", "reference-core.html#$"),
    ("trio.CancelScope.shield", "py:attribute", "reference-core.html#$"),
    ("trio.move_on_after", "py:function", "reference-core.html#$"),
    ("trio.move_on_at", "py:function", "reference-core.html#$"),
    ("trio.fail_after", "py:function", "reference-core.html#$"),
    ("trio.fail_at", "py:function", "reference-core.html#$"),
    ("trio.sleep", "py:function", "reference-core.html#$"),
    ("trio.current_time", "py:function", "reference-core.html#$"),
    ("trio.Cancelled", "py:exception", "reference-core.html#$"),
    ("trio.TooSlowError", "py:exception", "reference-core.html#$"),
    ("trio.BrokenResourceError", "py:exception", "reference-core.html#$"),
    ("trio.ClosedResourceError", "py:exception", "reference-core.html#$"),
    ("trio.abc.Stream", "py:class", "reference-io.html#$"),
    ("trio.abc.Listener", "py:class", "reference-io.html#$"),
    ("trio.SocketStream", "py:class", "reference-io.html#$"),
    ("trio.SocketListener", "py:class", "reference-io.html#$"),
    ("trio.SSLStream", "py:class", "reference-io.html#$"),
    ("trio.SSLListener", "py:class", "reference-io.html#$"),
    ("trio.open_tcp_stream", "py:function", "reference-io.html#$"),
    ("trio.open_tcp_listeners", "py:function", "reference-io.html#$"),
    ("trio.serve_tcp", "py:function", "reference-io.html#$"),
    ("trio.serve_listeners", "py:function", "reference-io.html#$"),
    ("trio.open_unix_socket", "py:function", "reference-io.html#$"),
    ("trio.CapacityLimiter", "py:class", "reference-core.html#$"),
    ("trio.WouldBlock", "py:exception", "reference-core.html#$"),
    ("trio.socket.from_stdlib_socket", "py:function", "reference-io.html#$"),
    ("trio.open_signal_receiver", "py:function", "reference-io.html#$"),
    ("trio.testing.MockClock", "py:class", "reference-testing.html#$"),
    ("trio.testing.memory_stream_pair", "py:function", "reference-testing.html#$"),
    ("trio.testing.assert_checkpoints", "py:function", "reference-testing.html#$"),
    ("trio.lowlevel.checkpoint", "py:function", "reference-lowlevel.html#$"),
    ("trio.Event", "py:class", "reference-core.html#$"),
]

WSPROTO: list[Entry] = [
    ("wsproto.WSConnection", "py:class", "api.html#$"),
    ("wsproto.events.CloseConnection", "py:class", "api.html#$"),
    ("wsproto.extensions.Extension", "py:class", "api.html#$"),
]

WERKZEUG: list[Entry] = [
    ("werkzeug.routing.Map", "py:class", "routing/#$"),
    ("werkzeug.exceptions.HTTPException", "py:exception", "exceptions/#$"),
]

INVENTORIES = {
    "python.inv": ("Python", "3", PYTHON),
    "trio.inv": ("Trio", "stable", TRIO),
    "wsproto.inv": ("wsproto", "stable", WSPROTO),
    "werkzeug.inv": ("Werkzeug", "stable", WERKZEUG),
}


def render(project: str, version: str, entries: list[Entry]) -> bytes:
    """An ``objects.inv`` in Sphinx's version 2 format: a text header, then zlib-compressed lines.

    Each line is ``name domain:role priority uri display-name``, where ``$`` at the end of the
    uri stands for the name and ``-`` as display name means "the name itself".
    """
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    lines = [f"{name} {role} 1 {uri} -\n" for name, role, uri in sorted(entries)]
    return header + zlib.compress("".join(lines).encode(), 9)


def main() -> None:
    for filename, (project, version, entries) in INVENTORIES.items():
        (HERE / filename).write_bytes(render(project, version, entries))


if __name__ == "__main__":
    main()
