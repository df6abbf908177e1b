"""The command line: an interactive client, and a server for a handler of yours.

::

    python -m trio_ws ws://localhost:8765/            # type messages, read the replies
    python -m trio_ws serve app:handler --port 8765   # serve app.handler until Ctrl-C

How this works. The client runs two tasks on one connection: the main task prints each message
as it arrives until the connection closes; the other reads standard input line by line, sends
each line as a text message, and closes with 1000 at end of file (Ctrl-D). Standard input is
read with ``os.read()`` in a worker thread that is abandoned when cancelled, rather than with a
``trio.lowlevel.FdStream``: that would make fd 0 non-blocking, and on a terminal fds 0, 1 and 2
usually share one open file, so our own output would become non-blocking too (and stay so for
the shell if we were killed). On a terminal, a message that arrives while the user types is
inserted above the line being typed.

The server listens for SIGINT and SIGTERM from before it binds: the first one closes every
connection with 1001 and gives the handlers ``--close-timeout`` seconds to return; a second one
stops at once.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import dataclasses
import functools
import importlib
import logging
import math
import os
import shutil
import signal
import socket as stdlib_socket
import ssl
import sys
import unicodedata
from typing import TYPE_CHECKING, TextIO, cast

import trio

from . import _groups
from ._version import __version__
from .client import connect
from .exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketError
from .server import Server, serve
from .workers import Supervisor, WorkerStartError, supervise

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from .client import ClientConnection
    from .server import Handler

__all__ = ["main"]

_OK = 0
_FAILED = 1  # could not connect, could not listen, or the connection failed
_USAGE = 2  # as argparse: bad arguments, or a handler that cannot be loaded
_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# RFC 6455 §7.4.1 and the IANA registry: what a close code means, for the closing line.
_CLOSE_CODES = {
    1000: "OK",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status code",
    1006: "connection lost",
    1007: "invalid data",
    1008: "policy violation",
    1009: "message too big",
    1010: "extension required",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS failure",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    ``serve MODULE:HANDLER [options]`` runs a server; anything else is the interactive client
    (``URI [options]``). See :doc:`/topics/cli`.

    Returns:
        0 when the connection closed normally (1000, 1001, no code) or the server stopped on a
        signal;
        1 when connecting or listening failed, or the connection closed with an error code;
        2 for bad arguments or a handler that cannot be loaded; 130 after Ctrl-C in the client.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args[:1] == ["serve"]:
            return _serve_command(args[1:])
        return _client_command(args)
    except SystemExit as exc:  # argparse, for --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else _USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return _INTERRUPTED


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name if name.startswith("trio-ws") else "python -m trio_ws"


def _error(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the client ------------------------------------------------------------------------------


def _client_command(argv: list[str]) -> int:
    prog = _prog()
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Connect to a WebSocket server: every line typed is sent as a text message, every "
            "message received is printed. Ctrl-D closes the connection (1000)."
        ),
        epilog=f"To run a server instead: {prog} serve --help",
    )
    parser.add_argument("uri", metavar="URI", help="ws:// or wss:// URI to connect to")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        type=_header,
        metavar="'NAME: VALUE'",
        help="an HTTP header for the opening handshake (repeat for several)",
    )
    parser.add_argument(
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="a subprotocol to offer, most preferred first (repeat for several)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's TLS certificate (wss://): for tests only",
    )
    parser.add_argument("--version", action="version", version=f"trio_ws {__version__}")
    args = parser.parse_args(argv)
    uri = cast("str", args.uri)

    context: ssl.SSLContext | None = None
    if args.insecure and uri.lower().startswith("wss:"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _error("warning: --insecure: the server's TLS certificate is not verified")
    try:
        connector = connect(
            uri,
            ssl=context,
            additional_headers=cast("list[tuple[str, str]]", args.header),
            subprotocols=cast("list[str]", args.subprotocol) or None,
        )
    except (ValueError, TypeError) as exc:  # InvalidURI is a ValueError
        parser.error(str(exc))
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    return trio.run(_run_client, connector, uri, _Console(sys.stdout, interactive))


def _header(value: str) -> tuple[str, str]:
    name, colon, text = value.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', not {value!r}")
    return name.strip(), text.strip()


async def _run_client(connector: connect, uri: str, console: _Console) -> int:
    async with contextlib.AsyncExitStack() as stack:
        try:
            ws: ClientConnection = await stack.enter_async_context(connector)
        except (OSError, TimeoutError, ValueError, WebSocketError) as exc:
            _error(f"Failed to connect to {uri}: {_explain(exc)}.")
            return _FAILED
        subprotocol = f" (subprotocol {ws.subprotocol})" if ws.subprotocol else ""
        console.line(f"Connected to {uri}{subprotocol}.")
        console.prompt()
        async with _groups.open_nursery() as nursery:
            nursery.start_soon(_send_lines, ws, console)
            closed = await _print_messages(ws, console)
            nursery.cancel_scope.cancel()  # stop reading standard input
    console.end(f"Connection closed: {_explain_close(closed.code, closed.reason)}.")
    return _OK if isinstance(closed, ConnectionClosedOK) else _FAILED


def _explain(exc: BaseException) -> str:
    """One line for a failure to connect: the error and, for trio's "all attempts to connect
    ... failed", what the attempts met."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = {
            os.strerror(attempt.errno) if attempt.errno else str(attempt)
            for attempt in cast("BaseExceptionGroup[BaseException]", cause).exceptions
            if isinstance(attempt, OSError)
        }
        if reasons:
            text += f" ({', '.join(sorted(reasons))})"
    return text.rstrip(".")


def _explain_close(code: int, reason: str) -> str:
    text = f"{code} ({_CLOSE_CODES.get(code, 'application-defined' if code >= 3000 else '?')})"
    return f"{text}: {reason!r}" if reason else text


async def _print_messages(ws: ClientConnection, console: _Console) -> ConnectionClosed:
    """Print each message as it arrives; return how the connection ended."""
    while True:
        try:
            message = await ws.recv()
        except ConnectionClosed as closed:
            return closed
        if isinstance(message, str):
            console.message(f"< {message}")
        else:
            console.message(f"< (binary, {len(message)} bytes) {message.hex(' ')}")


async def _send_lines(ws: ClientConnection, console: _Console) -> None:
    """Send each line of standard input; close with 1000 at its end. Never raises."""
    lines = _LineReader(sys.stdin.fileno(), sys.stdin.encoding or "utf-8")
    try:
        while (line := await lines.readline()) is not None:
            await ws.send(line)
            console.prompt()
        await ws.aclose(1000)
    except ConnectionClosed:
        pass  # the main task reports how the connection ended


class _LineReader:
    """Lines of a file descriptor, read in a worker thread so that trio's loop never blocks.

    A cancelled read abandons its thread, still blocked in ``os.read()``: the process is about
    to exit then, and trio's worker threads are daemon threads.
    """

    def __init__(self, fd: int, encoding: str) -> None:
        self._fd = fd
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._lines: list[str] = []
        self._partial = ""
        self._eof = False

    async def readline(self) -> str | None:
        """The next line, without its line ending; None at end of file."""
        while not self._lines and not self._eof:
            try:
                data = await trio.to_thread.run_sync(
                    os.read, self._fd, 4096, abandon_on_cancel=True
                )
            except OSError:  # EIO: the terminal went away
                data = b""
            if data:
                *complete, self._partial = (self._partial + self._decoder.decode(data)).split("\n")
                self._lines.extend(line.removesuffix("\r") for line in complete)
            else:
                self._eof = True
                rest = self._partial + self._decoder.decode(b"", final=True)
                if rest:  # a last line without a line ending
                    self._lines.append(rest)
        if self._lines:
            return self._lines.pop(0)
        await trio.lowlevel.checkpoint()
        return None


class _Console:
    """Where the client writes: plain lines; on a terminal, with a prompt, and with messages
    inserted above the line the user is typing, and stripped of control characters."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self._out = out
        self._interactive = interactive

    def line(self, text: str) -> None:
        self._write(text + "\n")

    def prompt(self) -> None:
        if self._interactive:
            self._write("> ")

    def message(self, text: str) -> None:
        if not self._interactive:
            self._write(text + "\n")
            return
        text = _printable(text)
        rows = _rows(text, shutil.get_terminal_size().columns)
        # VT100 sequences: the cursor is on the prompt line, after what the user has typed
        # (which the terminal, not we, holds and shows).
        self._write(
            "\x1b7"  # DECSC: remember where the user is typing
            + "\n" * rows  # room below: the screen scrolls if the prompt line is the last one
            + f"\x1b[{rows}A"  # CUU: back up to the prompt line, wherever scrolling left it
            + f"\x1b[{rows}L"  # IL: insert blank lines there, pushing the prompt line down
            + text
            + "\n"
            + "\x1b8"  # DECRC: back to the remembered position...
            + f"\x1b[{rows}B"  # ...and down to where the prompt line went (CUD stops at the
        )  # bottom of the screen, where it went when the screen scrolled)

    def end(self, text: str) -> None:
        if self._interactive:
            text = "\r\x1b[K" + text  # over the prompt and whatever was typed
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


def _printable(text: str) -> str:
    """``text`` with control characters but newline and tab escaped: a server must not be able
    to drive the user's terminal (move the cursor, retitle the window...)."""
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char in "\n\t" or unicodedata.category(char) != "Cc":  # Cc: C0, DEL and C1 controls
        return char
    return f"\\x{ord(char):02x}"


def _rows(text: str, columns: int) -> int:
    """The terminal rows ``text`` takes, wrapped at ``columns`` (one column per character)."""
    return sum(max(1, math.ceil(len(line) / max(columns, 1))) for line in text.split("\n"))


# -- the server ------------------------------------------------------------------------------


def _serve_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{_prog()} serve",
        description=(
            "Serve HANDLER, an async function in MODULE that takes a ServerConnection, until "
            "SIGINT (Ctrl-C) or SIGTERM: then every connection is closed with 1001."
        ),
    )
    parser.add_argument(
        "handler",
        metavar="MODULE:HANDLER",
        help="such as app:handler; MODULE is imported as python -m would, from the current "
        "directory too",
    )
    parser.add_argument("--host", default="localhost", help="the address to listen on")
    parser.add_argument(
        "--port", type=_port, default=8765, help="the TCP port (default 8765; 0 picks one)"
    )
    parser.add_argument(
        "--close-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="on SIGINT or SIGTERM, how long the handlers get to return after the close frames "
        "(default 10 s); each closing handshake is bounded by it too",
    )
    parser.add_argument(
        "--workers",
        type=_count,
        default=1,
        metavar="N",
        help="serve from N worker processes sharing the port, restarted when they die "
        "(default 1: this process serves)",
    )
    parser.add_argument(
        "--reuse-port",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="set SO_REUSEPORT: each worker binds the port itself and the kernel spreads "
        "connections (default with --workers on Linux); --no-reuse-port with --workers: "
        "this process binds and the workers share its socket",
    )
    # Worker mode, for trio_ws.workers only: report readiness on this fd, serve these sockets.
    parser.add_argument("--worker-ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--listen-fd", type=int, action="append", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"trio_ws {__version__}")
    args = parser.parse_args(argv)
    target = cast("str", args.handler)
    if args.workers > 1:
        return trio.run(
            _run_supervisor,
            target,
            args.host,
            args.port,
            args.close_timeout,
            args.workers,
            args.reuse_port,
        )
    ready_fd = cast("int | None", args.worker_ready_fd)
    if ready_fd is not None:
        # The supervisor decides when to stop: a Ctrl-C meant for it must not reach us first.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        handler = _load_handler(target)
    except ImportError as exc:
        _error(f"{parser.prog}: error: {exc}")
        return _USAGE
    return trio.run(
        functools.partial(
            _run_server,
            handler,
            args.host,
            args.port,
            args.close_timeout,
            reuse_port=bool(args.reuse_port),
            listen_fds=cast("list[int] | None", args.listen_fd),
            ready_fd=ready_fd,
        )
    )


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes >= 1, not {value!r}")
    return int(value)


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 0 to 65535, not {value!r}")
    return int(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, not {value!r}")
    return seconds


def _load_handler(spec: str) -> Handler:
    """Import ``MODULE:HANDLER`` (HANDLER may be dotted: ``app:chat.handler``).

    Raises:
        ImportError: the spec is malformed, the module cannot be imported (whatever its import
            raised), it has no such attribute, or that is not callable.
    """
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise ImportError(f"expected MODULE:HANDLER (such as app:handler), not {spec!r}")
    # As `python -m` does: modules in the current directory come first, even when we run as
    # the trio-ws script (whose sys.path[0] is its bin/ directory).
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ImportError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}", name=module_name
        ) from exc
    try:
        handler: object = functools.reduce(getattr, name.split("."), module)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {name!r}") from None
    if not callable(handler):
        raise ImportError(f"{spec} is {handler!r}, not an async function")
    return cast("Handler", handler)


async def _run_server(
    handler: Handler,
    host: str,
    port: int,
    close_timeout: float,
    *,
    reuse_port: bool = False,
    listen_fds: list[int] | None = None,
    ready_fd: int | None = None,
) -> int:
    # A worker (ready_fd given) stops on SIGTERM, or when its supervisor goes (end of stdin).
    signums = (signal.SIGTERM,) if ready_fd is not None else (signal.SIGINT, signal.SIGTERM)
    # Opened before binding, so that a signal sent as soon as "Serving on" is out is caught.
    with trio.open_signal_receiver(*signums) as signals:
        try:
            async with _groups.open_nursery() as nursery:
                listening = _Listening(host, port, reuse_port, listen_fds)
                server: Server = await nursery.start(
                    _serve_until_closed, handler, listening, close_timeout, nursery.cancel_scope
                )
                closing = False

                def close(why: str) -> None:
                    nonlocal closing
                    if not closing:
                        closing = True
                        _error(
                            f"{prefix}{why}: closing every connection with 1001 "
                            f"(handlers get {close_timeout:g} s to return)"
                        )
                        nursery.start_soon(
                            functools.partial(server.aclose, 1001, timeout=close_timeout)
                        )
                    else:
                        _error(f"{prefix}{why} again: stopping now")
                        server.cancel_scope.cancel()

                if ready_fd is None:
                    prefix = ""
                    where = f"[{host}]" if ":" in host else host
                    print(f"Serving on ws://{where}:{server.port}", flush=True)
                else:
                    prefix = f"worker {os.getpid()}: "
                    _report_ready(ready_fd, server.port)
                    nursery.start_soon(_close_when_orphaned, close)
                async for signum in signals:
                    close(signal.Signals(signum).name)
        except OSError as exc:
            _error(f"Cannot listen on {host}:{port}: {exc}.")
            return _FAILED
    return _OK


@dataclasses.dataclass(frozen=True)
class _Listening:
    """Where serve() listens: on ``host`` and ``port``, or on inherited sockets."""

    host: str
    port: int
    reuse_port: bool
    fds: list[int] | None

    def listeners(self) -> list[trio.SocketListener] | None:
        if not self.fds:
            return None
        # socket(fileno=) finds the family and type of the inherited socket itself.
        return [
            trio.SocketListener(trio.socket.from_stdlib_socket(stdlib_socket.socket(fileno=fd)))
            for fd in self.fds
        ]


def _report_ready(fd: int, port: int) -> None:
    """Tell the supervisor this worker listens: one line on its pipe, then close it."""
    try:
        os.write(fd, f"READY {port}\n".encode())  # a few bytes into an empty pipe: no wait
    finally:
        os.close(fd)


async def _close_when_orphaned(close: Callable[[str], None]) -> None:
    """Wait for end of file on stdin, which only the supervisor holds open; then ``close``."""
    stdin = trio.lowlevel.FdStream(os.dup(0))  # our own pipe, no terminal: non-blocking is fine
    async with stdin:
        while await stdin.receive_some(4096):
            pass
    close("supervisor gone")


async def _serve_until_closed(
    handler: Handler,
    listening: _Listening,
    close_timeout: float,
    watching: trio.CancelScope,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """serve(), then stop watching for signals: the server has stopped."""
    listeners = listening.listeners()
    if listeners is not None:
        await serve(
            handler, listeners=listeners, close_timeout=close_timeout, task_status=task_status
        )
    else:
        await serve(
            handler,
            listening.host,
            listening.port,
            reuse_port=listening.reuse_port,
            close_timeout=close_timeout,
            task_status=task_status,
        )
    watching.cancel()


# -- several workers -------------------------------------------------------------------------


async def _run_supervisor(
    target: str,
    host: str,
    port: int,
    close_timeout: float,
    workers: int,
    reuse_port: bool | None,
) -> int:
    # Each worker gives its handlers close_timeout, as a single process would; SIGKILL at twice.
    drain_timeout = 2 * close_timeout
    _show_worker_log()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with _groups.open_nursery() as nursery:
                supervisor: Supervisor = await nursery.start(
                    _supervise_until_closed,
                    functools.partial(
                        supervise,
                        target,
                        workers=workers,
                        host=host,
                        port=port,
                        reuse_port=reuse_port,
                        drain_timeout=drain_timeout,
                    ),
                    nursery.cancel_scope,
                )
                where = f"[{host}]" if ":" in host else host
                print(f"Serving on ws://{where}:{supervisor.port} ({workers} workers)", flush=True)
                closing = False
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not closing:
                        closing = True
                        _error(
                            f"{name}: closing every connection with 1001 (workers get "
                            f"{drain_timeout:g} s, then SIGKILL)"
                        )
                        nursery.start_soon(supervisor.aclose)
                    else:
                        _error(f"{name} again: killing the workers")
                        supervisor.kill()
        except WorkerStartError as exc:
            _error(f"{_prog()} serve: error: {exc}")
            return _USAGE if exc.exit_status == _USAGE else _FAILED
        except OSError as exc:
            _error(f"Cannot listen on {host}:{port}: {exc}.")
            return _FAILED
    return _OK


async def _supervise_until_closed(
    run: Callable[..., Awaitable[None]],
    watching: trio.CancelScope,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """supervise(), then stop watching for signals: every worker has stopped."""
    await run(task_status=task_status)
    watching.cancel()


def _show_worker_log() -> None:
    """Print the supervisor's log lines (workers listening, dying, restarting) on stderr."""
    logger = logging.getLogger("trio_ws.workers")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
