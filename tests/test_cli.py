"""The command line, run as users run it: `python -m trio_ws` in a child process, the client on a
real terminal (a pty) against a server in this test, the server against clients in this test.

Every child is bounded: reads wait under trio.fail_after, and each child is killed by its PID
when its test ends. Nothing sleeps to synchronise: the tests read the lines they expect.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import termios
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

import trio_ws
from trio_ws.exceptions import ConnectionClosedOK
from trio_ws.server import ServerConnection

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="ptys and signals are POSIX")

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10  # seconds any one expected output may take: a child's start is the slow part
HANDLERS = '''
"""Handlers for `python -m trio_ws serve` in tests/test_cli.py."""

import trio


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def stubborn(ws):
    """Never reads, so never sees the close frame: only the deadline ends it."""
    await ws.send("hello")
    await trio.sleep(3600)

not_a_function = 42
'''


def child_env() -> dict[str, str]:
    """This environment (without the proxies conftest removed), with trio_ws importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


class Terminal:
    """The master side of a pty whose slave is a child's stdin, stdout and stderr."""

    def __init__(self, master: int) -> None:
        self._stream = trio.lowlevel.FdStream(master)
        self.output = b""  # everything the child wrote (and the terminal echoed) so far
        self._seen = 0

    async def expect(self, text: bytes) -> bytes:
        """Wait until ``text`` appears after what the last expect() matched; return the output
        up to its end."""
        with trio.fail_after(WAIT):
            while (found := self.output.find(text, self._seen)) < 0:
                data = await self._read()
                if not data:
                    raise AssertionError(f"{text!r} never came; the output was {self.output!r}")
                self.output += data
        start, self._seen = self._seen, found + len(text)
        return self.output[start : self._seen]

    async def read_to_end(self) -> bytes:
        """Read until the child has closed the terminal; return what came after expect()."""
        with trio.fail_after(WAIT):
            while data := await self._read():
                self.output += data
        return self.output[self._seen :]

    async def type(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def _read(self) -> bytes:
        try:
            return await self._stream.receive_some(4096)
        except (trio.BrokenResourceError, OSError):  # EIO: every slave fd is closed
            return b""

    async def aclose(self) -> None:
        await self._stream.aclose()


@asynccontextmanager
async def terminal_client(*args: str) -> AsyncIterator[tuple[Terminal, trio.Process]]:
    """`python -m trio_ws ARGS` on a new 80x24 pty; killed on exit if still running."""
    master, slave = os.openpty()
    termios.tcsetwinsize(slave, (24, 80))
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_ws", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=child_env(),
            start_new_session=True,
        )
    finally:
        os.close(slave)  # the child holds it now: when the child exits, reads get EIO
    terminal = Terminal(master)
    try:
        yield terminal, process
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            await terminal.aclose()


async def exit_status(process: trio.Process) -> int:
    with trio.fail_after(WAIT):
        return await process.wait()


async def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    """`python -m trio_ws ARGS` with no terminal, its output captured."""
    with trio.fail_after(WAIT):
        return await trio.run_process(
            [sys.executable, "-m", "trio_ws", *args],
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=cwd,
            env=child_env(),
        )


class Recorder:
    """A handler that echoes, sends what the test pushes, and records how each connection
    ended."""

    def __init__(self) -> None:
        self.connected = trio.Event()
        self.closed = trio.Event()
        self.received: list[str | bytes] = []
        self.close_code: int | None = None
        self.ws: ServerConnection | None = None

    async def __call__(self, ws: ServerConnection) -> None:
        self.ws = ws
        token = ws.request.headers.get("X-Token")
        if token is not None:
            await ws.send(f"token={token} subprotocol={ws.subprotocol}")
        self.connected.set()
        async for message in ws:
            self.received.append(message)
            await ws.send(message)
        self.close_code = ws.close_code
        self.closed.set()


@asynccontextmanager
async def server(handler: Recorder, **options: object) -> AsyncIterator[int]:
    """A trio_ws server on 127.0.0.1 running ``handler``; yields its port."""
    async with trio.open_nursery() as nursery:
        running: trio_ws.Server = await nursery.start(
            partial(trio_ws.serve, handler, "127.0.0.1", 0, **options)  # type: ignore[arg-type]
        )
        yield running.port
        running.cancel_scope.cancel()


# -- the client ------------------------------------------------------------------------------


async def test_client_echoes_typed_lines_shows_pushed_messages_and_closes_on_ctrl_d() -> None:
    """On a terminal: a typed line goes out as a text message and its echo is printed; a
    message the server pushes shows while nothing is typed, and above a half-typed line, which
    survives; Ctrl-D closes with 1000 and the client exits 0."""
    handler = Recorder()
    async with server(handler) as port:
        uri = f"ws://127.0.0.1:{port}/"
        async with terminal_client(uri) as (terminal, process):
            await terminal.expect(f"Connected to {uri}.".encode())
            await terminal.expect(b"> ")
            await terminal.type(b"hello\n")
            await terminal.expect(b"< hello")
            assert handler.received == ["hello"]

            assert handler.ws is not None
            await handler.ws.send("pushed by the server")
            await terminal.expect(b"< pushed by the server")
            await handler.ws.send(b"\x00\xff")
            await terminal.expect(b"< (binary, 2 bytes) 00 ff")

            await terminal.type(b"half-")
            await terminal.expect(b"half-")  # the terminal's echo: the user sees it typed
            await handler.ws.send("while typing")
            await terminal.expect(b"< while typing")
            await terminal.type(b"typed\n")
            await terminal.expect(b"< half-typed")
            assert handler.received == ["hello", "half-typed"]

            await terminal.type(b"\x04")  # Ctrl-D on an empty line: end of file
            await terminal.expect(b"Connection closed: 1000 (OK).")
            assert await exit_status(process) == 0
            with trio.fail_after(WAIT):
                await handler.closed.wait()
            assert handler.close_code == 1000


async def test_client_escapes_control_characters_a_server_sends_to_the_terminal() -> None:
    """A server cannot drive the user's terminal: ESC and other control characters in its
    messages are shown escaped."""
    handler = Recorder()
    async with (
        server(handler) as port,
        terminal_client(f"ws://127.0.0.1:{port}/") as (terminal, process),
    ):
        await terminal.expect(b"> ")
        assert handler.ws is not None
        await handler.ws.send("\x1b]0;pwned\x07title")
        shown = await terminal.expect(b"title")
        assert b"< \\x1b]0;pwned\\x07title" in shown
        assert b"\x1b]0;" not in shown
        await terminal.type(b"\x04")
        assert await exit_status(process) == 0


@pytest.mark.parametrize(
    ("code", "name", "status"), [(1001, "going away", 0), (1011, "internal error", 1)]
)
async def test_client_reports_the_server_closing_and_exits(
    code: int, name: str, status: int
) -> None:
    """When the server closes, the client prints its code and reason and exits: 0 for 1001,
    1 for an error code such as 1011."""
    handler = Recorder()
    async with (
        server(handler) as port,
        terminal_client(f"ws://127.0.0.1:{port}/") as (terminal, process),
    ):
        await terminal.expect(b"> ")
        assert handler.ws is not None
        await handler.ws.aclose(code, "bye")
        await terminal.expect(f"Connection closed: {code} ({name}): 'bye'.".encode())
        assert await exit_status(process) == status


async def test_client_sends_headers_and_negotiates_subprotocols() -> None:
    """--header reaches the server's request; --subprotocol is offered and the one negotiated
    is shown."""
    handler = Recorder()
    async with server(handler, subprotocols=["chat"]) as port:
        uri = f"ws://127.0.0.1:{port}/"
        args = [uri, "--header", "X-Token: s3cret", "--subprotocol", "other", "--subprotocol"]
        async with terminal_client(*args, "chat") as (terminal, process):
            await terminal.expect(f"Connected to {uri} (subprotocol chat).".encode())
            await terminal.expect(b"< token=s3cret subprotocol=chat")
            await terminal.type(b"\x04")
            assert await exit_status(process) == 0
        assert handler.ws is not None
        assert handler.ws.request.headers["X-Token"] == "s3cret"


@pytest.fixture(scope="module")
def untrusted_tls() -> ssl.SSLContext:
    """A server context whose certificate comes from a CA that no client knows."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


async def test_insecure_connects_to_a_server_with_an_unknown_certificate(
    untrusted_tls: ssl.SSLContext,
) -> None:
    """--insecure skips certificate verification for wss://, and says so."""
    handler = Recorder()
    async with server(handler, ssl=untrusted_tls) as port:
        uri = f"wss://127.0.0.1:{port}/"
        async with terminal_client(uri, "--insecure") as (terminal, process):
            await terminal.expect(b"certificate is not verified")
            await terminal.expect(f"Connected to {uri}.".encode())
            await terminal.type(b"over tls\n")
            await terminal.expect(b"< over tls")
            await terminal.type(b"\x04")
            assert await exit_status(process) == 0


async def test_unknown_certificate_fails_in_one_line_without_insecure(
    untrusted_tls: ssl.SSLContext,
) -> None:
    """Without --insecure, an unknown CA is refused: exit 1, one line naming the cause."""
    async with server(Recorder(), ssl=untrusted_tls) as port:
        result = await run_cli(f"wss://127.0.0.1:{port}/")
    assert result.returncode == 1
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Failed to connect to wss://127.0.0.1:{port}/: ")
    assert "certificate verify failed" in lines[0]


async def test_connection_refused_fails_in_one_line() -> None:
    """Nothing listening: exit 1, one line, no traceback."""
    with socket.socket() as bound:  # bound, not listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        result = await run_cli(f"ws://127.0.0.1:{port}/")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"Failed to connect to ws://127.0.0.1:{port}/: all attempts to connect to "
        f"127.0.0.1:{port} failed (Connection refused)."
    ]


async def test_http_error_status_fails_in_one_line() -> None:
    """A server that answers 403 instead of 101: exit 1, the status shown."""

    def forbid(ws: ServerConnection, request: trio_ws.Request) -> trio_ws.Response:
        return ws.respond(403, "no\n")

    async with server(Recorder(), process_request=forbid) as port:
        result = await run_cli(f"ws://127.0.0.1:{port}/")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"Failed to connect to ws://127.0.0.1:{port}/: "
        "server rejected WebSocket connection: HTTP 403."
    ]


async def test_bad_uri_and_header_are_usage_errors() -> None:
    """A URI that is no WebSocket URI, or a header without a colon: exit 2, as argparse."""
    result = await run_cli("http://example.com/")
    assert result.returncode == 2
    assert b"is not a WebSocket URI" in result.stderr
    result = await run_cli("ws://example.com/", "--header", "no colon")
    assert result.returncode == 2
    assert b"expected 'Name: value'" in result.stderr


async def test_version() -> None:
    result = await run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"trio_ws {trio_ws.__version__}\n".encode())


# -- the server ------------------------------------------------------------------------------


@pytest.fixture
def handlers_dir(tmp_path: Path) -> Path:
    """A directory holding handlers.py, to run `serve` from: imported from the current
    directory, as `python -m` does."""
    (tmp_path / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    return tmp_path


@asynccontextmanager
async def serving(cwd: Path, *args: str) -> AsyncIterator[tuple[trio.Process, int]]:
    """`python -m trio_ws serve ARGS` in ``cwd``; yields it and the port from "Serving on"."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_ws", "serve", *args, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=child_env(),
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(WAIT):
            while b"\n" not in output:
                data = await process.stdout.receive_some(1024)
                assert data, f"serve exited before listening: {output!r}"
                output += data
        match = re.fullmatch(rb"Serving on ws://127\.0\.0\.1:(\d+)\n", output)
        assert match, output
        yield process, int(match[1])
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


async def stderr_after_exit(process: trio.Process) -> str:
    """What an exited child wrote on its stderr pipe."""
    assert process.returncode is not None and process.stderr is not None
    data = b""
    with trio.fail_after(WAIT):
        while chunk := await process.stderr.receive_some(65536):
            data += chunk
    return data.decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_closes_clients_with_1001_and_exits_0_on_signal(
    handlers_dir: Path, signum: signal.Signals
) -> None:
    """`serve module:handler` serves it on the port it prints; SIGTERM or SIGINT closes every
    client with 1001, says so on stderr and nothing else, and the process exits 0."""
    async with serving(handlers_dir, "handlers:echo") as (process, port):
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
            process.send_signal(signum)
            with trio.fail_after(WAIT), pytest.raises(ConnectionClosedOK) as closed:
                await ws.recv()
            assert closed.value.code == 1001
        assert await exit_status(process) == 0
        # Nothing else is logged: no handler error, no internal error.
        assert await stderr_after_exit(process) == (
            f"{signum.name}: closing every connection with 1001 (handlers get 10 s to return)\n"
        )


async def test_serve_stops_within_close_timeout_when_a_handler_ignores_the_close(
    handlers_dir: Path,
) -> None:
    """A handler that does not return is cancelled at --close-timeout: the client still gets
    1001 at once, and the process exits 0 soon after the deadline."""
    async with serving(handlers_dir, "handlers:stubborn", "--close-timeout", "0.5") as (
        process,
        port,
    ):
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
            assert await ws.recv() == "hello"
            process.send_signal(signal.SIGTERM)
            start = trio.current_time()
            with trio.fail_after(WAIT), pytest.raises(ConnectionClosedOK) as closed:
                await ws.recv()
            assert closed.value.code == 1001
        assert await exit_status(process) == 0
        # The deadline (0.5 s) plus the shielded closing handshake, far below the handler's hour.
        assert trio.current_time() - start < 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("handlers:missing", "module 'handlers' has no attribute 'missing'"),
        ("no_such_module:echo", "cannot import 'no_such_module': ModuleNotFoundError"),
        ("handlers", "expected MODULE:HANDLER"),
        ("handlers:not_a_function", "handlers:not_a_function is 42, not an async function"),
    ],
)
async def test_serve_with_a_bad_handler_exits_2_with_a_message(
    handlers_dir: Path, spec: str, message: str
) -> None:
    result = await run_cli("serve", spec, "--port", "0", cwd=handlers_dir)
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert b"Traceback" not in result.stderr
