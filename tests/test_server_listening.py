"""How serve() and unix_serve() listen and stop, over real sockets: hosts, TLS, reuse_port,
given listeners, Unix sockets, and aclose() from outside and from inside a handler."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket as stdlib_socket
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, TextMessage
from wsproto.events import Request as WsRequest

import trio_ws
from tests.conftest import open_fds
from tests.raw_peer import Seen, run_client
from trio_ws.exceptions import ConnectionClosed, ConnectionClosedOK
from trio_ws.server import Server, ServerConnection

Handler = Callable[[ServerConnection], Awaitable[None]]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _can_bind_ipv6_loopback() -> bool:
    try:
        with stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(
    not _can_bind_ipv6_loopback(), reason="this machine cannot bind ::1 (no IPv6 loopback)"
)
needs_unix = pytest.mark.skipif(
    not hasattr(stdlib_socket, "AF_UNIX"), reason="this platform has no Unix sockets"
)
needs_reuse_port = pytest.mark.skipif(
    not hasattr(stdlib_socket, "SO_REUSEPORT"), reason="this platform has no SO_REUSEPORT"
)


def _exists(path: str) -> bool:
    """Whether anything (a dangling symbolic link too) is at ``path``."""
    return os.path.lexists(path)


# -- helpers ---------------------------------------------------------------------------------


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def echo_once(ws: ServerConnection) -> None:
    """Echo one message, then return: the server closes with 1000 (what a raw client that
    waits for the server to close needs)."""
    await ws.send(await ws.recv())


@asynccontextmanager
async def serving(
    handler: Handler, *args: Any, **options: Any
) -> AsyncGenerator[tuple[Server, trio.Nursery], None]:
    """serve(handler, *args, **options) with keepalive off; yield the server and the nursery
    that runs only serve(); hard-stop the server on exit."""
    options.setdefault("ping_interval", None)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(partial(trio_ws.serve, handler, *args, **options))
        yield server, nursery
        server.cancel_scope.cancel()


async def assert_echoes(uri: str, **options: Any) -> None:
    """A client connecting to ``uri`` gets its message back."""
    async with trio_ws.connect(uri, ping_interval=None, **options) as ws:
        await ws.send("echo?")
        assert await ws.recv() == "echo?"


async def assert_refused(port: int) -> None:
    """Nothing accepts TCP connections on 127.0.0.1:``port`` any more."""
    with pytest.raises(OSError) as caught:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.aclose()  # pragma: no cover - only if the test fails
    # trio reports the failed attempts as an ExceptionGroup, the cause of one OSError.
    cause = caught.value.__cause__ or caught.value
    attempts = cause.exceptions if isinstance(cause, BaseExceptionGroup) else [cause]
    assert all(isinstance(exc, ConnectionRefusedError) for exc in attempts), repr(attempts)


class Gate:
    """Counts handlers that reached it; ``full`` is set once ``size`` have."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.arrived: list[ServerConnection] = []
        self.full = trio.Event()

    def arrive(self, ws: ServerConnection) -> None:
        self.arrived.append(ws)
        if len(self.arrived) == self.size:
            self.full.set()


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are in-memory stream pairs: ``connect()`` hands the server
    one end through a memory channel and returns the other."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](0)
        self.closed = False

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self.closed = True
        await self._receive.aclose()


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A socket path in a fresh directory, short enough for sun_path (about 100 bytes)."""
    directory = tempfile.mkdtemp(prefix="tws")
    try:
        yield os.path.join(directory, "ws.sock")
    finally:
        shutil.rmtree(directory)


async def raw_exchange(stream: trio.abc.Stream, *messages: str) -> Seen:
    """Upgrade over ``stream`` with a wsproto client, send ``messages``, record what comes
    back until the server closes the connection."""
    seen = Seen()
    with trio.fail_after(5):
        await run_client(stream, seen, messages)
    return seen


async def talk_and_close(stream: trio.abc.Stream, *messages: str) -> tuple[list[str], int | None]:
    """Upgrade over ``stream`` with a wsproto client, send each message and read its echo,
    then close with 1000; the messages received and the server's close code."""
    client = WSConnection(ConnectionType.CLIENT)
    received: list[str] = []
    close_code: int | None = None

    async def events() -> AsyncGenerator[Event, None]:
        while data := await stream.receive_some(65536):
            client.receive_data(data)
            for event in client.events():
                yield event
        client.receive_data(None)

    with trio.fail_after(5):
        async with stream:
            await stream.send_all(client.send(WsRequest(host="localhost", target="/")))
            incoming = events()
            assert isinstance(await anext(incoming), AcceptConnection)
            for message in messages:
                await stream.send_all(client.send(TextMessage(data=message)))
                event = await anext(incoming)
                assert isinstance(event, TextMessage)
                received.append(event.data)
            await stream.send_all(client.send(CloseConnection(code=1000)))
            async for event in incoming:
                if isinstance(event, CloseConnection):
                    close_code = event.code
    return received, close_code


# -- host and port ---------------------------------------------------------------------------


@needs_ipv6
async def test_a_list_of_hosts_listens_on_each_address_on_one_port() -> None:
    """host=["127.0.0.1", "::1"] with port 0: one listener per address, both on server.port,
    and a client reaches the server through either address."""
    peers: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.remote_address is not None
        peers.append(ws.remote_address[0])
        await echo(ws)

    async with serving(handler, ["127.0.0.1", "::1"], 0) as (server, _):
        assert len(server.listeners) == 2
        await assert_echoes(f"ws://127.0.0.1:{server.port}/")
        await assert_echoes(f"ws://[::1]:{server.port}/")
    assert peers == ["127.0.0.1", "::1"]


@pytest.mark.parametrize(
    ("args", "options"),
    [(("127.0.0.1", 0), {}), ((), {"host": "127.0.0.1", "port": 0})],
    ids=["by-position", "by-keyword"],
)
async def test_host_and_port_by_position_or_keyword(
    args: tuple[Any, ...], options: dict[str, Any]
) -> None:
    """serve(handler, host, port) in websockets' order, or both by keyword, listens there."""
    async with serving(echo, *args, **options) as (server, _):
        assert len(server.listeners) == 1
        await assert_echoes(f"ws://127.0.0.1:{server.port}/")


async def test_the_port_first_as_trio_serve_tcp_has_it_raises_type_error_naming_host() -> None:
    """serve(handler, 8765), the order of trio.serve_tcp(handler, 8765), is refused with a
    TypeError naming host before anything listens, rather than read as a host."""
    with pytest.raises(TypeError, match=r"host must be a str"):
        await trio_ws.serve(echo, 8765)  # type: ignore[arg-type]


async def test_host_none_listens_on_every_interface() -> None:
    """host=None binds the wildcard address of every family the machine has, all on one
    port; a client reaches it through 127.0.0.1."""
    async with serving(echo, None, 0) as (server, _):
        names = {listener.socket.getsockname()[0] for listener in server.listeners}  # type: ignore[attr-defined]
        assert "0.0.0.0" in names
        assert names <= {"0.0.0.0", "::"}
        await assert_echoes(f"ws://127.0.0.1:{server.port}/")


async def test_tls_serves_wss(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """ssl= layers TLS on every listener: a wss:// client with the CA's trust is served,
    and the listener is a trio.SSLListener."""
    async with serving(echo, "127.0.0.1", 0, ssl=server_context) as (server, _):
        assert all(isinstance(listener, trio.SSLListener) for listener in server.listeners)
        await assert_echoes(f"wss://127.0.0.1:{server.port}/", ssl=client_context)


@needs_reuse_port
async def test_reuse_port_lets_two_servers_share_a_port() -> None:
    """Two servers with reuse_port=True start on the same port, as worker processes would;
    every client is served by one of them, and the kernel gives each some."""
    served_by: list[str] = []

    def named(name: str) -> Handler:
        async def handler(ws: ServerConnection) -> None:
            await ws.send(name)

        return handler

    async with serving(named("a"), "127.0.0.1", 0, reuse_port=True) as (first, _):
        port = first.port
        async with serving(named("b"), "127.0.0.1", port, reuse_port=True) as (second, _):
            assert second.port == port
            for _ in range(24):
                async with trio_ws.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
                    served_by.append(str(await ws.recv()))
    # Linux hashes each connection's addresses to one socket: 24 on one alone is ~1e-7.
    assert set(served_by) == {"a", "b"}


async def test_without_reuse_port_a_second_server_on_the_port_raises_eaddrinuse() -> None:
    """reuse_port=False: a second server on a port in use raises OSError(EADDRINUSE) from
    serve(), and the first one goes on serving."""
    async with serving(echo, "127.0.0.1", 0) as (first, _):
        with pytest.raises(OSError) as caught:
            await trio_ws.serve(echo, "127.0.0.1", first.port)
        assert caught.value.errno == errno.EADDRINUSE
        await assert_echoes(f"ws://127.0.0.1:{first.port}/")


# -- listeners= ------------------------------------------------------------------------------


async def test_a_listener_from_an_inherited_socket_is_served_and_closed_on_stop() -> None:
    """The systemd case: a listening socket handed over as a file descriptor becomes a
    trio.SocketListener; serve(listeners=[...]) serves on it, and closes it when it stops."""
    fds = open_fds()
    bound = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
    bound.bind(("127.0.0.1", 0))
    bound.listen()
    fd = bound.detach()  # what systemd passes as fd 3
    inherited = stdlib_socket.socket(fileno=fd)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(inherited))
    port = inherited.getsockname()[1]

    async with serving(echo, listeners=[listener]) as (server, nursery):
        assert server.listeners == [listener]
        assert server.port == port
        await assert_echoes(f"ws://127.0.0.1:{port}/")
        await server.aclose()
        assert not nursery.child_tasks
    assert inherited.fileno() == -1
    await assert_refused(port)
    assert open_fds() == fds


async def test_an_in_memory_listener_runs_a_full_handshake_and_echo() -> None:
    """Any trio.abc.Listener of streams works: over memory streams, a wsproto client
    upgrades, gets its message echoed and a 1000 close; both addresses are None (no socket);
    the server closes the listener when it stops."""
    listener = MemoryListener()
    addresses: list[object] = []

    async def handler(ws: ServerConnection) -> None:
        addresses.append((ws.local_address, ws.remote_address))
        await echo_once(ws)

    async with serving(handler, listeners=[listener]) as (server, _):
        seen = await raw_exchange(await listener.connect(), "hello")
        assert not listener.closed
        await server.aclose()
    assert seen.upgraded
    assert seen.messages == ["hello"]
    assert seen.close_code == 1000
    assert addresses == [(None, None)]
    assert listener.closed


@pytest.mark.parametrize(
    "option",
    [{"host": "127.0.0.1"}, {"port": 8765}, {"reuse_port": True}, {"backlog": 10}],
    ids=["host", "port", "reuse_port", "backlog"],
)
async def test_listeners_with_an_option_saying_where_to_listen_raises_value_error(
    option: dict[str, Any],
) -> None:
    """listeners= excludes host, port, reuse_port and backlog: ValueError before serving."""
    listener = MemoryListener()
    with pytest.raises(ValueError, match=r"listeners= excludes host, port, reuse_port"):
        await trio_ws.serve(echo, listeners=[listener], **option)
    assert not listener.closed


async def test_listeners_empty_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"at least one listener"):
        await trio_ws.serve(echo, listeners=[])


async def test_listeners_holding_something_else_raises_type_error() -> None:
    """A socket is not a listener: TypeError naming what was given."""
    with (
        trio.socket.socket() as sock,
        pytest.raises(TypeError, match=r"listeners must hold trio.abc.Listener objects"),
    ):
        await trio_ws.serve(echo, listeners=[sock])  # type: ignore[list-item]


# -- unix_serve ------------------------------------------------------------------------------


@needs_unix
async def test_unix_serve_serves_through_the_socket_file_and_removes_it(sock_path: str) -> None:
    """unix_serve: a client connecting through the socket file is upgraded and echoed;
    mode= gives the file its permissions; remote_address is None; once aclose() returns the
    socket file is gone."""
    addresses: list[object] = []

    async def handler(ws: ServerConnection) -> None:
        addresses.append(ws.remote_address)
        await echo_once(ws)

    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(trio_ws.unix_serve, handler, sock_path, mode=0o600, ping_interval=None)
        )
        info = os.stat(sock_path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
        seen = await raw_exchange(await trio.open_unix_socket(sock_path), "over unix")
        await server.aclose()
        assert not _exists(sock_path)
    assert seen.messages == ["over unix"]
    assert seen.close_code == 1000
    assert addresses == [None]


@needs_unix
async def test_unix_serve_replaces_a_stale_socket_file(sock_path: str) -> None:
    """A socket file left by a server that is gone does not stop unix_serve from listening."""
    with stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM) as old:
        old.bind(sock_path)
    assert _exists(sock_path)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(trio_ws.unix_serve, echo_once, sock_path, ping_interval=None)
        )
        seen = await raw_exchange(await trio.open_unix_socket(sock_path), "fresh")
        server.cancel_scope.cancel()
    assert seen.messages == ["fresh"]
    assert not _exists(sock_path)


@needs_unix
async def test_server_port_of_a_unix_server_raises_type_error(sock_path: str) -> None:
    """A Unix server has no TCP port: Server.port raises TypeError rather than a made-up
    number."""
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(trio_ws.unix_serve, echo, sock_path, ping_interval=None)
        )
        with pytest.raises(TypeError, match=r"listens on unix:.*, not on a TCP port"):
            _ = server.port
        server.cancel_scope.cancel()


@needs_unix
async def test_unix_server_example_echoes_and_stops_on_sigterm() -> None:
    """examples/unix_server.py listens on a socket file, echoes a client, and on SIGTERM
    closes, removes the file and exits 0."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / "unix_server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(10):
            line = await _read_line(process.stdout)
            assert line.startswith("listening on unix:"), line
            path = line.strip().removeprefix("listening on unix:")
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
            echoed, close_code = await talk_and_close(
                await trio.open_unix_socket(path), "hi", "there"
            )
            process.send_signal(signal.SIGTERM)
            rest = await _read_all(process.stdout)
            await process.wait()
    finally:
        if process.returncode is None:  # pragma: no cover - only if the test fails
            process.kill()
            await process.wait()
    assert echoed == ["hi", "there"]
    assert close_code == 1000
    assert rest.splitlines() == ["stopping on SIGTERM", "server stopped"]
    assert process.returncode == 0
    assert not _exists(path)
    assert not _exists(os.path.dirname(path))
    if process.stderr is not None:
        await process.stderr.aclose()
    await process.stdout.aclose()


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1024)
        assert chunk, f"the process exited before printing a line; got {data!r}"
        data += chunk
    return data.decode()


async def _read_all(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while chunk := await stream.receive_some(1024):
        data += chunk
    return data.decode()


# -- stopping --------------------------------------------------------------------------------


async def test_aclose_without_closing_connections_stops_listening_only() -> None:
    """aclose(close_connections=False) stops listening at once (connecting is refused) while
    an open connection keeps exchanging messages; serve() and aclose() return once its
    handler returns."""
    async with trio.open_nursery() as outer, serving(echo, "127.0.0.1", 0) as (server, nursery):
        port = server.port
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
            closed = trio.Event()

            async def close() -> None:
                await server.aclose(close_connections=False)
                closed.set()

            outer.start_soon(close)
            await trio.testing.wait_all_tasks_blocked()
            await assert_refused(port)
            for n in range(3):
                await ws.send(f"still open {n}")
                assert await ws.recv() == f"still open {n}"
            assert nursery.child_tasks
            assert not closed.is_set()
        assert ws.close_code == 1000
        await closed.wait()
        assert not nursery.child_tasks


async def test_aclose_without_closing_connections_closes_them_with_its_code_at_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """aclose(1012, "restart", timeout=5, close_connections=False): a handler that never
    returns keeps its connection for exactly 5 s; then the client gets 1012 "restart", the
    handler is cancelled once close_timeout (3 s) more has passed, and aclose() returns."""
    gate = Gate(1)
    cancelled_at: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        gate.arrive(ws)
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled_at.append(trio.current_time())
            raise

    async with (
        trio.open_nursery() as outer,
        serving(handler, "127.0.0.1", 0, close_timeout=3) as (server, nursery),
    ):
        client_closed: list[tuple[float, int, str]] = []

        async def client() -> None:
            async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None) as ws:
                with pytest.raises(ConnectionClosed) as caught:
                    await ws.recv()
            client_closed.append((trio.current_time(), caught.value.code, caught.value.reason))

        outer.start_soon(client)
        await gate.full.wait()
        start = trio.current_time()
        await server.aclose(1012, "restart", timeout=5, close_connections=False)
        assert trio.current_time() == start + 5 + 3
        assert not nursery.child_tasks
    assert cancelled_at == [start + 5 + 3]
    assert client_closed == [(start + 5, 1012, "restart")]


class HandlerCloses:
    """A server whose handler on /close calls aclose() (itself, or from a task in a nursery of
    its own), says "aclose returned", then echoes until ``release`` is set; other handlers
    wait for their connection to close. Records when things happen."""

    def __init__(self, caller: str, others: int) -> None:
        self.caller = caller
        self.server: Server | None = None
        self.gate = Gate(others)
        self.aclose_took: list[float] = []
        self.release = trio.Event()
        self.echoed_after_aclose: list[str] = []
        self.serve_returned_at: list[float] = []

    async def close_server(self) -> None:
        assert self.server is not None
        start = trio.current_time()
        await self.server.aclose()
        self.aclose_took.append(trio.current_time() - start)

    async def handler(self, ws: ServerConnection) -> None:
        if ws.request.path != "/close":
            self.gate.arrive(ws)
            await ws.wait_closed()
            return
        if self.caller == "handler":
            await self.close_server()
        else:
            async with trio.open_nursery() as own:
                own.start_soon(self.close_server)
        await ws.send("aclose returned")
        async with trio.open_nursery() as echoing:

            async def echo_until_released() -> None:
                async for message in ws:
                    self.echoed_after_aclose.append(str(message))
                    await ws.send(message)

            echoing.start_soon(echo_until_released)
            await self.release.wait()
            echoing.cancel_scope.cancel()

    async def run_serve(self, task_status: trio.TaskStatus[Server]) -> None:
        await trio_ws.serve(
            self.handler, "127.0.0.1", 0, ping_interval=None, task_status=task_status
        )
        self.serve_returned_at.append(trio.current_time())


@pytest.mark.parametrize("caller", ["handler", "task-of-the-handler"])
async def test_aclose_from_a_handler_returns_at_once_and_closes_the_others(
    autojump_clock: trio.testing.MockClock, caller: str
) -> None:
    """aclose() called by a handler (or by a task in a nursery of the handler's) returns at
    once, and leaves that handler's connection alone: it still sends, receives and echoes.
    Every other client gets 1001; nothing new is accepted; serve() returns once the calling
    handler returns (its client then gets 1000), with no wait for close_timeout (10 s)."""
    test = HandlerCloses(caller, others=2)
    others: list[int] = []

    async def other(port: int) -> None:
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
            with pytest.raises(ConnectionClosedOK) as caught:
                await ws.recv()
        others.append(caught.value.code)

    async with trio.open_nursery() as nursery:
        test.server = server = await nursery.start(test.run_serve)
        port = server.port
        for _ in range(test.gate.size):
            nursery.start_soon(other, port)
        await test.gate.full.wait()
        start = trio.current_time()
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/close", ping_interval=None) as ws:
            assert await ws.recv() == "aclose returned"
            assert test.aclose_took == [0.0]
            await trio.testing.wait_all_tasks_blocked()
            assert others == [1001, 1001]
            await assert_refused(port)
            await ws.send("still open?")
            assert await ws.recv() == "still open?"
            assert not test.serve_returned_at  # serve() waits for the calling handler
            test.release.set()
            with pytest.raises(ConnectionClosedOK) as caught:
                await ws.recv()
    assert caught.value.code == 1000
    assert test.echoed_after_aclose == ["still open?"]
    assert len(test.serve_returned_at) == 1
    assert test.serve_returned_at[0] - start < 1


# -- logging ---------------------------------------------------------------------------------


async def test_each_listener_is_logged_with_its_address(
    caplog: pytest.LogCaptureFixture, server_context: ssl.SSLContext, sock_path: str
) -> None:
    """serve() logs "server listening on <address>" at INFO for every listener, with
    " (TLS)" after it when ssl= is given; unix_serve() logs the socket's path."""
    caplog.set_level(logging.INFO, logger="trio_ws.server")

    def listening() -> list[str]:
        lines = [r.getMessage() for r in caplog.records if r.name == "trio_ws.server"]
        caplog.clear()
        return [line for line in lines if line.startswith("server listening on ")]

    async with serving(echo, "127.0.0.1", 0) as (server, _):
        assert listening() == [f"server listening on 127.0.0.1:{server.port}"]
    async with serving(echo, "127.0.0.1", 0, ssl=server_context) as (server, _):
        assert listening() == [f"server listening on 127.0.0.1:{server.port} (TLS)"]
    if _can_bind_ipv6_loopback():
        async with serving(echo, ["127.0.0.1", "::1"], 0) as (server, _):
            assert listening() == [
                f"server listening on 127.0.0.1:{server.port}",
                f"server listening on [::1]:{server.port}",
            ]
    if hasattr(stdlib_socket, "AF_UNIX"):
        async with trio.open_nursery() as nursery:
            unix: Server = await nursery.start(partial(trio_ws.unix_serve, echo, sock_path))
            assert listening() == [f"server listening on unix:{sock_path}"]
            unix.cancel_scope.cancel()
