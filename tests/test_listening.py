"""Tests for trio_ws._listening: TCP and Unix listeners, one port for all, no leaked socket."""

from __future__ import annotations

import errno
import os
import shutil
import socket as stdlib_socket
import ssl
import stat
import struct
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.conftest import open_fds
from trio_ws import _listening
from trio_ws._listening import describe, open_tcp_listeners, open_unix_listener, port_of


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
needs_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="Linux only (TCP_INFO, abstract sockets)"
)


def _exists(path: str) -> bool:
    """Whether anything (a dangling symbolic link too) is at ``path``."""
    return os.path.lexists(path)


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A socket path in a fresh directory, short enough for sun_path (about 100 bytes)."""
    directory = tempfile.mkdtemp(prefix="tws")
    try:
        yield os.path.join(directory, "s.sock")
    finally:
        shutil.rmtree(directory)


async def _close(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        await listener.aclose()


async def _accepts(listener: trio.SocketListener, address: str) -> None:
    """Connect to ``listener`` at ``address`` and check bytes flow both ways."""
    client = await trio.open_tcp_stream(address, port_of(listener))
    async with client, await listener.accept() as server:
        await client.send_all(b"ping")
        assert await server.receive_some(4) == b"ping"
        await server.send_all(b"pong")
        assert await client.receive_some(4) == b"pong"


# TCP: addresses and ports


@needs_ipv6
async def test_host_list_listens_on_one_port_for_every_address() -> None:
    """With port 0, every address of the list gets the same port, and accepts on it."""
    listeners = await open_tcp_listeners(["127.0.0.1", "::1"], 0)
    try:
        assert [describe(listener).rsplit(":", 1)[0] for listener in listeners] == [
            "127.0.0.1",
            "[::1]",
        ]
        assert len({port_of(listener) for listener in listeners}) == 1
        assert port_of(listeners[0]) != 0
        await _accepts(listeners[0], "127.0.0.1")
        await _accepts(listeners[1], "::1")
    finally:
        await _close(listeners)


async def test_host_none_listens_on_every_wildcard_on_one_port() -> None:
    """host=None binds the wildcard of each family the machine has, all on one port."""
    listeners = await open_tcp_listeners(None, 0)
    try:
        names = {listener.socket.getsockname()[0] for listener in listeners}
        assert names <= {"0.0.0.0", "::"}
        assert "0.0.0.0" in names
        assert len({port_of(listener) for listener in listeners}) == 1
        await _accepts(listeners[0], "127.0.0.1")
    finally:
        await _close(listeners)


async def test_empty_host_means_every_interface() -> None:
    """host="" is None, as asyncio has it, rather than a name that fails to resolve."""
    listeners = await open_tcp_listeners("", 0)
    try:
        assert "0.0.0.0" in {listener.socket.getsockname()[0] for listener in listeners}
    finally:
        await _close(listeners)


async def test_an_address_given_twice_is_bound_once() -> None:
    """Duplicates in the host list (or names resolving alike) give one listener, no EADDRINUSE."""
    listeners = await open_tcp_listeners(["127.0.0.1", "127.0.0.1"], 0)
    try:
        assert len(listeners) == 1
    finally:
        await _close(listeners)


async def test_given_port_is_used() -> None:
    """A nonzero port is bound as given."""
    first = await open_tcp_listeners("127.0.0.1", 0)
    port = port_of(first[0])
    await _close(first)
    listeners = await open_tcp_listeners("127.0.0.1", port)  # SO_REUSEADDR: no TIME_WAIT issue
    try:
        assert port_of(listeners[0]) == port
        await _accepts(listeners[0], "127.0.0.1")
    finally:
        await _close(listeners)


async def test_port_in_use_raises_eaddrinuse_naming_the_address() -> None:
    """Without reuse_port, a second bind to a listening port fails, and says where."""
    first = await open_tcp_listeners("127.0.0.1", 0)
    port = port_of(first[0])
    fds = open_fds()
    try:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}") as info:
            await open_tcp_listeners("127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
        assert open_fds() == fds
    finally:
        await _close(first)


@pytest.mark.skipif(not hasattr(stdlib_socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
async def test_reuse_port_lets_two_listener_sets_share_a_port() -> None:
    """With reuse_port on both, two sets bind one port, and a connection reaches one of them."""
    first = await open_tcp_listeners("127.0.0.1", 0, reuse_port=True)
    port = port_of(first[0])
    second = await open_tcp_listeners("127.0.0.1", port, reuse_port=True)
    try:
        assert port_of(second[0]) == port
        with pytest.raises(OSError) as info:
            await open_tcp_listeners("127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE

        client = await trio.open_tcp_stream("127.0.0.1", port)
        accepted: list[int] = []
        async with client, trio.open_nursery() as nursery:

            async def accept(index: int, listener: trio.SocketListener) -> None:
                stream = await listener.accept()
                async with stream:
                    accepted.append(index)
                    assert await stream.receive_some(5) == b"hello"
                nursery.cancel_scope.cancel()

            nursery.start_soon(accept, 0, first[0])
            nursery.start_soon(accept, 1, second[0])
            await client.send_all(b"hello")
        assert len(accepted) == 1
    finally:
        await _close(first + second)


@pytest.mark.skipif(hasattr(stdlib_socket, "SO_REUSEPORT"), reason="this platform has it")
async def test_reuse_port_without_so_reuseport_raises_value_error() -> None:
    """Where the platform lacks SO_REUSEPORT, reuse_port=True says so before opening anything."""
    with pytest.raises(ValueError, match="reuse_port"):
        await open_tcp_listeners("127.0.0.1", 0, reuse_port=True)


@needs_ipv6
async def test_port_zero_tries_another_port_when_taken_on_another_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EADDRINUSE on the second address closes the first socket and tries a new port."""
    real = _listening._open_tcp_listener  # pyright: ignore[reportPrivateUsage]
    calls = 0

    async def taken_once(*args: Any) -> trio.SocketListener | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.EADDRINUSE, "taken by someone else")
        return await real(*args)

    monkeypatch.setattr(_listening, "_open_tcp_listener", taken_once)
    fds = open_fds()
    listeners = await open_tcp_listeners(["127.0.0.1", "::1"], 0)
    try:
        assert calls == 4
        assert len(listeners) == 2
        assert len({port_of(listener) for listener in listeners}) == 1
        assert open_fds() == fds + 2
    finally:
        await _close(listeners)


async def test_port_zero_gives_up_after_bounded_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the chosen port is always taken elsewhere, the search ends with EADDRINUSE."""
    real = _listening._open_tcp_listener  # pyright: ignore[reportPrivateUsage]
    calls = 0

    async def always_taken(*args: Any) -> trio.SocketListener | None:
        nonlocal calls
        calls += 1
        if calls % 2 == 0:
            raise OSError(errno.EADDRINUSE, "taken by someone else")
        return await real(*args)

    monkeypatch.setattr(_listening, "_open_tcp_listener", always_taken)
    fds = open_fds()
    with pytest.raises(OSError, match="no port free on every address") as info:
        # The second address is never bound: every attempt fails there.
        await open_tcp_listeners(["127.0.0.1", "127.0.0.2"], 0)
    assert info.value.errno == errno.EADDRINUSE
    assert calls == 2 * 16
    assert open_fds() == fds


async def test_failure_on_second_address_leaks_no_fd() -> None:
    """A non-local second address fails with EADDRNOTAVAIL; the first socket is closed."""
    fds = open_fds()
    with pytest.raises(OSError, match=r"192\.0\.2\.1") as info:
        await open_tcp_listeners(["127.0.0.1", "192.0.2.1"], 0)
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert open_fds() == fds


async def test_unresolvable_host_raises_gaierror() -> None:
    """A name that does not resolve raises socket.gaierror, an OSError."""
    with pytest.raises(stdlib_socket.gaierror):
        await open_tcp_listeners("no-such-host.invalid", 0)


# TCP: cancellation and checkpoints


async def test_cancel_before_open_tcp_listeners_leaves_no_open_fd() -> None:
    """In a cancelled scope, open_tcp_listeners raises Cancelled and opens nothing."""
    fds = open_fds()
    with trio.CancelScope() as scope:
        scope.cancel()
        await open_tcp_listeners(["127.0.0.1", "127.0.0.1"], 0)
    assert scope.cancelled_caught
    assert open_fds() == fds


@needs_ipv6
async def test_cancel_while_binding_second_address_leaves_no_open_fd() -> None:
    """Cancelled once the first socket listens, both sockets are closed."""
    created = 0

    class CancellingFactory(trio.abc.SocketFactory):
        def socket(
            self,
            family: int = stdlib_socket.AF_INET,
            type: int = stdlib_socket.SOCK_STREAM,
            proto: int = 0,
        ) -> trio.socket.SocketType:
            nonlocal created
            created += 1
            if created == 2:
                scope.cancel()  # the second bind's checkpoint raises Cancelled
            return trio.socket.from_stdlib_socket(stdlib_socket.socket(family, type, proto))

    fds = open_fds()
    trio.socket.set_custom_socket_factory(CancellingFactory())
    try:
        with trio.CancelScope() as scope:
            await open_tcp_listeners(["127.0.0.1", "::1"], 0)
    finally:
        trio.socket.set_custom_socket_factory(None)
    assert scope.cancelled_caught
    assert created == 2
    assert open_fds() == fds


async def test_open_tcp_listeners_checkpoints() -> None:
    """It can block, so it always checkpoints."""
    with trio.testing.assert_checkpoints():
        listeners = await open_tcp_listeners("127.0.0.1", 0)
    await _close(listeners)


# TCP: options


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"host": b"127.0.0.1"}, TypeError, "host"),
        ({"host": 127}, TypeError, "host"),
        ({"host": ["127.0.0.1", 1]}, TypeError, "host"),
        ({"host": []}, ValueError, "host"),
        ({"port": "80"}, TypeError, "port"),
        ({"port": True}, TypeError, "port"),
        ({"port": 8.0}, TypeError, "port"),
        ({"port": -1}, ValueError, "port"),
        ({"port": 65536}, ValueError, "port"),
        ({"backlog": 0}, ValueError, "backlog"),
        ({"backlog": -5}, ValueError, "backlog"),
        ({"backlog": True}, TypeError, "backlog"),
        ({"backlog": 1.5}, TypeError, "backlog"),
        ({"backlog": "10"}, TypeError, "backlog"),
        ({"reuse_port": 1}, TypeError, "reuse_port"),
    ],
)
async def test_bad_tcp_option_raises_naming_it(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    """A wrong type raises TypeError, a wrong value ValueError; the message names the option."""
    arguments: dict[str, Any] = {"host": "127.0.0.1", "port": 0, **kwargs}
    fds = open_fds()
    with pytest.raises(error, match=name):
        await open_tcp_listeners(**arguments)
    assert open_fds() == fds


def _listen_backlog(listener: trio.SocketListener) -> int:
    """The backlog the kernel applies to a listening TCP socket (Linux: TCP_INFO's sacked)."""
    info = listener.socket.getsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_INFO, 104)
    backlog: int = struct.unpack_from("I", info, 28)[0]
    return backlog


@needs_linux
@pytest.mark.parametrize("backlog", [1, 7])
async def test_backlog_reaches_listen(backlog: int) -> None:
    """The backlog given is the one the kernel applies."""
    listeners = await open_tcp_listeners("127.0.0.1", 0, backlog=backlog)
    try:
        assert _listen_backlog(listeners[0]) == backlog
        await _accepts(listeners[0], "127.0.0.1")
    finally:
        await _close(listeners)


@needs_linux
@pytest.mark.parametrize("backlog", [None, 2**16 + 3, 10**9])
async def test_default_and_huge_backlog_give_the_system_maximum(backlog: int | None) -> None:
    """None, and a backlog beyond 65535 (capped, not wrapped around), give somaxconn."""
    somaxconn = min(int(await trio.Path("/proc/sys/net/core/somaxconn").read_text()), 0xFFFF)
    listeners = await open_tcp_listeners("127.0.0.1", 0, backlog=backlog)
    try:
        assert _listen_backlog(listeners[0]) == somaxconn
    finally:
        await _close(listeners)


# Unix sockets


@needs_unix
async def test_unix_listener_exchanges_bytes(sock_path: str) -> None:
    """A client connecting to the path is accepted; bytes flow both ways."""
    listener = await open_unix_listener(sock_path)
    async with listener:
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        client = await trio.open_unix_socket(sock_path)
        async with client, await listener.accept() as server:
            await client.send_all(b"ping")
            assert await server.receive_some(4) == b"ping"
            await server.send_all(b"pong")
            assert await client.receive_some(4) == b"pong"


@needs_unix
async def test_unix_listener_accepts_a_path_object(sock_path: str) -> None:
    """An os.PathLike[str] works as well as a str."""
    listener = await open_unix_listener(Path(sock_path))
    async with listener:
        assert describe(listener) == f"unix:{sock_path}"


@needs_unix
async def test_unix_listener_replaces_a_stale_socket_file(sock_path: str) -> None:
    """A socket file left by a previous run, with no server on it, is replaced."""
    with stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM) as old:
        old.bind(sock_path)
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    listener = await open_unix_listener(sock_path)
    # Connecting proves it: a stale socket file refuses connections.
    async with listener, await trio.open_unix_socket(sock_path), await listener.accept():
        pass


@needs_unix
async def test_unix_listener_does_not_take_the_path_of_a_live_server(sock_path: str) -> None:
    """A socket someone still listens on raises EADDRINUSE, and keeps its file and server."""
    live = await open_unix_listener(sock_path)
    async with live:
        inode = os.lstat(sock_path).st_ino
        fds = open_fds()
        with pytest.raises(OSError, match="listening") as info:
            await open_unix_listener(sock_path)
        assert info.value.errno == errno.EADDRINUSE
        assert open_fds() == fds
        assert os.lstat(sock_path).st_ino == inode
        client = await trio.open_unix_socket(sock_path)
        async with client:
            await client.send_all(b"x")
            while True:  # the probe that found the server came first
                async with await live.accept() as server:
                    if await server.receive_some(1) == b"x":
                        break


@needs_unix
@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
async def test_unix_listener_refuses_a_path_that_is_not_a_socket(
    sock_path: str, kind: str
) -> None:
    """Anything but a socket at the path raises FileExistsError and is left untouched."""
    if kind == "file":
        await trio.Path(sock_path).write_bytes(b"precious")
    elif kind == "directory":
        os.mkdir(sock_path)
    else:
        target = sock_path + ".target"
        with stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM) as old:
            old.bind(target)
        os.symlink(target, sock_path)
    before = os.lstat(sock_path)
    fds = open_fds()
    with pytest.raises(FileExistsError, match="not a socket"):
        await open_unix_listener(sock_path)
    assert open_fds() == fds
    after = os.lstat(sock_path)
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (
        before.st_ino,
        before.st_mode,
        before.st_mtime_ns,
    )
    if kind == "file":
        assert await trio.Path(sock_path).read_bytes() == b"precious"


@needs_unix
@pytest.mark.parametrize("mode", [0o600, 0o660, 0o777])
async def test_unix_listener_mode_is_applied(sock_path: str, mode: int) -> None:
    """mode sets the socket file's permission bits, whatever the umask."""
    listener = await open_unix_listener(sock_path, mode=mode)
    async with listener:
        assert os.stat(sock_path).st_mode & 0o777 == mode


@needs_unix
@pytest.mark.parametrize("backlog", [1, None])
async def test_unix_listener_backlog(sock_path: str, backlog: int | None) -> None:
    """A valid backlog listens; connections are accepted."""
    listener = await open_unix_listener(sock_path, backlog=backlog)
    async with listener, await trio.open_unix_socket(sock_path), await listener.accept():
        pass


@needs_unix
@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"path": b"/tmp/x.sock"}, TypeError, "path"),
        ({"path": 3}, TypeError, "path"),
        ({"path": ""}, ValueError, "path"),
        ({"mode": "0o600"}, TypeError, "mode"),
        ({"mode": True}, TypeError, "mode"),
        ({"mode": -1}, ValueError, "mode"),
        ({"mode": 0o10000}, ValueError, "mode"),
        ({"backlog": 0}, ValueError, "backlog"),
        ({"backlog": 2.0}, TypeError, "backlog"),
    ],
)
async def test_bad_unix_option_raises_naming_it(
    sock_path: str, kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    """A wrong type raises TypeError, a wrong value ValueError; nothing is created."""
    arguments: dict[str, Any] = {"path": sock_path, **kwargs}
    fds = open_fds()
    with pytest.raises(error, match=name):
        await open_unix_listener(**arguments)
    assert open_fds() == fds
    assert not _exists(sock_path)


@needs_unix
async def test_cancel_before_open_unix_listener_leaves_no_fd_nor_file(sock_path: str) -> None:
    """In a cancelled scope, nothing is bound and no socket stays open."""
    fds = open_fds()
    with trio.CancelScope() as scope:
        scope.cancel()
        await open_unix_listener(sock_path)
    assert scope.cancelled_caught
    assert open_fds() == fds
    assert not _exists(sock_path)


@needs_unix
async def test_open_unix_listener_checkpoints(sock_path: str) -> None:
    """It can block, so it always checkpoints."""
    with trio.testing.assert_checkpoints():
        listener = await open_unix_listener(sock_path)
    await listener.aclose()


@needs_linux
async def test_abstract_unix_listener_has_no_file() -> None:
    """A path starting with NUL is an abstract socket: described with @, no mode allowed."""
    name = f"\0trio_ws-test-{uuid.uuid4().hex}"
    with pytest.raises(ValueError, match="abstract"):
        await open_unix_listener(name, mode=0o600)
    listener = await open_unix_listener(name)
    async with listener:
        assert describe(listener) == f"unix:@{name[1:]}"
        async with await trio.open_unix_socket(name), await listener.accept():
            pass


# port_of and describe


class _NotASocketListener(trio.abc.Listener[trio.abc.Stream]):
    async def accept(self) -> trio.abc.Stream:
        raise NotImplementedError

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return "<_NotASocketListener>"


def _tls(listener: trio.abc.Listener[trio.abc.Stream]) -> trio.SSLListener[trio.abc.Stream]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    return trio.SSLListener(listener, context, https_compatible=True)


async def test_port_of_and_describe_tcp_ipv4() -> None:
    """An IPv4 listener is host:port, through TLS too."""
    [listener] = await open_tcp_listeners("127.0.0.1", 0)
    async with listener:
        port = listener.socket.getsockname()[1]
        assert port_of(listener) == port
        assert describe(listener) == f"127.0.0.1:{port}"
        assert port_of(_tls(listener)) == port
        assert describe(_tls(_tls(listener))) == f"127.0.0.1:{port}"


@needs_ipv6
async def test_port_of_and_describe_tcp_ipv6() -> None:
    """An IPv6 listener is [host]:port, through TLS too."""
    [listener] = await open_tcp_listeners("::1", 0)
    async with listener:
        port = listener.socket.getsockname()[1]
        assert port_of(listener) == port
        assert describe(listener) == f"[::1]:{port}"
        assert describe(_tls(listener)) == f"[::1]:{port}"


@needs_unix
async def test_port_of_refuses_unix_and_describe_names_the_path(sock_path: str) -> None:
    """A Unix listener has no port: TypeError; describe says unix:path, through TLS too."""
    listener = await open_unix_listener(sock_path)
    async with listener:
        with pytest.raises(TypeError, match="not a TCP listener"):
            port_of(listener)
        with pytest.raises(TypeError, match="not a TCP listener"):
            port_of(_tls(listener))
        assert describe(listener) == f"unix:{sock_path}"
        assert describe(_tls(listener)) == f"unix:{sock_path}"


async def test_port_of_refuses_and_describe_reprs_other_listeners() -> None:
    """A listener without a socket: port_of raises TypeError, describe gives its repr."""
    other = _NotASocketListener()
    with pytest.raises(TypeError, match="not a TCP listener"):
        port_of(other)
    assert describe(other) == "<_NotASocketListener>"
    assert describe(_tls(other)) == "<_NotASocketListener>"


async def test_describe_a_closed_listener_does_not_raise() -> None:
    """For log lines after close: describe falls back to repr rather than raise."""
    [listener] = await open_tcp_listeners("127.0.0.1", 0)
    await listener.aclose()
    assert describe(listener) == repr(listener)
