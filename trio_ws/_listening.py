"""Listening sockets: TCP on one port for every address, Unix sockets, and their addresses.

How this works: we build the sockets ourselves, as :func:`trio.open_tcp_listeners` does, because
it can neither set ``SO_REUSEPORT`` nor give several addresses one port chosen by the kernel.
Every function here owns the sockets it opens until it returns them: whatever fails on the way
(an address that cannot be bound, a bad ``mode``, cancellation) closes every socket opened so
far, and removes the socket file it created, before the error propagates.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket as stdlib_socket
import stat
import sys
from collections.abc import Sequence
from typing import cast

import trio

__all__ = ["describe", "open_tcp_listeners", "open_unix_listener", "port_of"]

# How many ports open_tcp_listeners(..., port=0) tries before giving up on one free on every
# address: another process can take the chosen port on the second address between our binds.
_PORT_ATTEMPTS = 16
# Many systems store the backlog in a uint16 with no overflow check (golang/go#5030); above
# this, listen() silently truncates to the system's maximum anyway, which is what we want.
_MAX_BACKLOG = 0xFFFF
_INET_FAMILIES = (trio.socket.AF_INET, trio.socket.AF_INET6)
# One address from getaddrinfo: (family, type, proto, sockaddr).
_Address = tuple[int, int, int, tuple[object, ...]]


async def open_tcp_listeners(
    host: str | Sequence[str] | None,
    port: int,
    *,
    reuse_port: bool = False,
    backlog: int | None = None,
) -> list[trio.SocketListener]:
    """Listen for TCP connections on every address of ``host``, all on one port.

    ::

        listeners = await open_tcp_listeners(["127.0.0.1", "::1"], 0)
        port = port_of(listeners[0])  # the same on both

    Args:
        host: None (or "", as asyncio has it) for every interface: the IPv4 and IPv6 wildcard
            addresses, where the machine has them. A str: every address it resolves to. A
            sequence of str: every address of each; an address met twice is bound once.
        port: the TCP port, 0 to 65535. With 0, the kernel picks a free port for the first
            address, and the others are bound to that same one; if it is taken on another
            address, every socket is closed and another port is tried, 16 times at most.
        reuse_port: set ``SO_REUSEPORT`` so that other processes (or other calls) doing the
            same can listen on this port too; the kernel spreads connections among them.
        backlog: the listen backlog, at least 1; None for the system's maximum, as trio does.
            Values above 65535 are capped to it.

    Returns:
        One listener per address, in ``getaddrinfo`` order, ``host`` by ``host``.

    Raises:
        TypeError: ``host``, ``port``, ``reuse_port`` or ``backlog`` has the wrong type; the
            message names it.
        ValueError: ``port`` is outside 0-65535, ``backlog`` is below 1, ``host`` is an empty
            sequence, or ``reuse_port`` is asked where the platform has no ``SO_REUSEPORT``.
        OSError: an address could not be resolved (:exc:`socket.gaierror`) or bound (port in
            use, not a local address...); the message names the address.

    Blocks while resolving ``host`` and binding. Cancelling is safe: every socket opened so
    far is closed, nothing is left listening.
    """
    hosts = _check_host(host)
    _check_port(port)
    _check_reuse_port(reuse_port)
    if reuse_port and not hasattr(trio.socket, "SO_REUSEPORT"):
        raise ValueError(f"reuse_port=True: SO_REUSEPORT is not available on {sys.platform}")
    listen_backlog = _check_backlog(backlog)

    addresses: dict[tuple[int, tuple[object, ...]], _Address] = {}
    for name in hosts:
        found = await trio.socket.getaddrinfo(
            name, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
        )
        for family, type_, proto, _, sockaddr in found:
            address = (int(family), int(type_), proto, tuple(sockaddr))
            addresses.setdefault((address[0], address[3]), address)
    if not addresses:  # getaddrinfo raises rather than answer nothing; checked all the same
        raise OSError(errno.EADDRNOTAVAIL, f"host={host!r} has no address to listen on")
    ordered = list(addresses.values())

    for _ in range(_PORT_ATTEMPTS):
        listeners: list[trio.SocketListener] = []
        try:
            for address in ordered:
                if listeners and port == 0:
                    # The first socket's port, chosen by the kernel, for every other address.
                    address = (*address[:3], _with_port(address[3], port_of(listeners[0])))
                listener = await _open_tcp_listener(address, reuse_port, listen_backlog)
                if listener is not None:
                    listeners.append(listener)
        except BaseException as exc:
            for listener in listeners:
                listener.socket.close()
            if port == 0 and listeners and _is_addr_in_use(exc):
                continue  # the chosen port is taken on another address: try another
            raise
        if not listeners:
            raise OSError(
                errno.EAFNOSUPPORT,
                f"host={host!r}: this system supports none of its addresses' families",
            )
        return listeners
    raise OSError(
        errno.EADDRINUSE,
        f"found no port free on every address of host={host!r} in {_PORT_ATTEMPTS} attempts",
    )


async def _open_tcp_listener(
    address: _Address, reuse_port: bool, backlog: int
) -> trio.SocketListener | None:
    """One listening socket, or None if this system has no such address family."""
    family, type_, proto, sockaddr = address
    try:
        sock = trio.socket.socket(family, type_, proto)
    except OSError as exc:
        # A host with IPv4 only (or IPv6 only) still resolves None to both wildcards.
        if exc.errno == errno.EAFNOSUPPORT:
            return None
        raise
    try:
        # Without SO_REUSEADDR, a restarted server cannot bind while old connections linger
        # in TIME_WAIT; on Windows it means something else (steal a port in use), so not there.
        if sys.platform != "win32":
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
        if family == trio.socket.AF_INET6:
            # Else "::" would take the IPv4 port too, and the IPv4 wildcard could not bind.
            sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
        try:
            await sock.bind(sockaddr)
        except OSError as exc:
            where = _format(sockaddr, family)
            raise OSError(exc.errno, f"{exc.strerror or exc}: cannot listen on {where}") from exc
        sock.listen(backlog)
        return trio.SocketListener(sock)
    except BaseException:
        sock.close()
        raise


async def open_unix_listener(
    path: str | os.PathLike[str],
    *,
    backlog: int | None = None,
    mode: int | None = None,
) -> trio.SocketListener:
    """Listen for connections on a Unix socket at ``path``.

    A socket file left at ``path`` by a previous run is replaced, as asyncio's
    ``create_unix_server`` does; but only if nothing listens on it any more (a connection to it
    is refused), so that a second server does not take the path from a running one. Closing
    the listener does not remove the socket file.

    Args:
        path: where to create the socket file. A path starting with NUL (Linux) names an
            abstract socket, which has no file: nothing is replaced, and ``mode`` cannot apply.
        backlog: the listen backlog, at least 1; None for the system's maximum.
        mode: permission bits for the socket file (connecting needs write permission), e.g.
            ``0o660``. None leaves what the umask gives. Applied before the socket listens, so
            no connection is accepted under wider permissions.

    Raises:
        TypeError: ``path``, ``backlog`` or ``mode`` has the wrong type; the message names it.
        ValueError: ``path`` is empty, ``backlog`` is below 1, ``mode`` is outside 0-0o7777
            or given for an abstract socket.
        FileExistsError: something other than a socket (a regular file, a directory, a
            symbolic link) is at ``path``; it is left untouched.
        OSError: a server is listening at ``path`` already (EADDRINUSE), or binding failed
            (no such directory, no permission...).
        RuntimeError: this platform has no Unix sockets.

    Blocks while binding (a thread walks the file system). Cancelling is safe: the socket is
    closed, and its file removed if it was created.
    """
    if not hasattr(trio.socket, "AF_UNIX"):
        raise RuntimeError(f"Unix sockets are not supported on {sys.platform}")
    name = _check_path(path)
    listen_backlog = _check_backlog(backlog)
    abstract = name.startswith("\0")
    _check_mode(mode, abstract)

    if not abstract:
        _remove_stale_socket(name)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    created = False
    try:
        await sock.bind(name)
        created = not abstract
        if mode is not None:
            # Before listen(): until then connecting is refused, whatever the file's mode.
            os.chmod(name, mode)
        sock.listen(listen_backlog)
        return trio.SocketListener(sock)
    except BaseException:
        sock.close()
        if created:
            with contextlib.suppress(OSError):  # already gone: nothing of ours is left
                os.unlink(name)
        raise


def _remove_stale_socket(path: str) -> None:
    """Remove the socket file at ``path`` if nothing listens on it; refuse any other file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(
            errno.EEXIST, f"not a socket, left untouched; cannot listen at {path!r}", path
        )
    # A plain non-blocking connect: a Unix socket connects, or is refused, at once.
    with stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            pass  # stale: its server is gone
        except FileNotFoundError:
            return  # removed meanwhile
        except BlockingIOError:
            # Its backlog is full: a server is there, and busy.
            raise OSError(errno.EADDRINUSE, f"a server is listening at {path!r}") from None
        else:
            raise OSError(errno.EADDRINUSE, f"a server is listening at {path!r}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def port_of(listener: trio.abc.Listener[trio.abc.Stream]) -> int:
    """The TCP port ``listener`` listens on, looking through TLS.

    Raises:
        TypeError: ``listener`` is not a TCP listener (a Unix socket, a memory listener...).
        OSError: its socket is closed.
    """
    inner = _unwrap(listener)
    if not isinstance(inner, trio.SocketListener) or inner.socket.family not in _INET_FAMILIES:
        raise TypeError(f"{listener!r} is not a TCP listener")
    port: int = inner.socket.getsockname()[1]
    return port


def describe(listener: trio.abc.Listener[trio.abc.Stream]) -> str:
    """Where ``listener`` listens, for log lines; never raises.

    ``127.0.0.1:8765``, ``[::1]:8765``, ``unix:/run/app.sock``, ``unix:@name`` (an abstract
    socket); TLS is looked through and not shown. For any other listener, or a closed one,
    its ``repr()``.
    """
    inner = _unwrap(listener)
    if not isinstance(inner, trio.SocketListener):
        return repr(inner)
    try:
        sockname: object = inner.socket.getsockname()
    except OSError:
        return repr(inner)
    return _format(sockname, inner.socket.family) or repr(inner)


def _unwrap(listener: trio.abc.Listener[trio.abc.Stream]) -> trio.abc.Listener[trio.abc.Stream]:
    while isinstance(listener, trio.SSLListener):
        listener = cast(
            "trio.abc.Listener[trio.abc.Stream]",
            listener.transport_listener,  # pyright: ignore[reportUnknownMemberType]
        )
    return listener


def _format(sockname: object, family: int) -> str:
    """``host:port``, ``[host]:port`` or ``unix:path`` for a socket address; "" if unknown."""
    if family in _INET_FAMILIES and isinstance(sockname, tuple):
        parts = cast("tuple[object, ...]", sockname)
        host, port = parts[0], parts[1]
        return f"[{host}]:{port}" if family == trio.socket.AF_INET6 else f"{host}:{port}"
    if family == getattr(trio.socket, "AF_UNIX", None):
        if isinstance(sockname, bytes):  # Linux gives an abstract name as bytes
            sockname = sockname.decode(errors="backslashreplace")
        if isinstance(sockname, str):
            if sockname.startswith("\0"):
                return f"unix:@{sockname[1:]}"
            return f"unix:{sockname}" if sockname else "unix:(unnamed)"
    return ""


def _with_port(sockaddr: tuple[object, ...], port: int) -> tuple[object, ...]:
    return (sockaddr[0], port, *sockaddr[2:])


def _check_host(host: object) -> list[str | None]:
    """The names to resolve, each once; None for every interface."""
    if host is None:
        return [None]
    if isinstance(host, str):
        return [host or None]
    if not isinstance(host, Sequence) or isinstance(host, bytes | bytearray):
        raise TypeError(f"host must be a str, a sequence of str or None, not {host!r}")
    names = cast("Sequence[object]", host)
    if not names:
        raise ValueError("host=[] names no address to listen on")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"host must be a str, a sequence of str or None; {name!r} is not a str"
            )
    return list(dict.fromkeys(cast("str", name) or None for name in names))


def _check_reuse_port(reuse_port: object) -> None:
    if not isinstance(reuse_port, bool):
        raise TypeError(f"reuse_port must be a bool, not {reuse_port!r}")


def _check_path(path: object) -> str:
    name: object = os.fspath(cast("str", path)) if isinstance(path, str | os.PathLike) else None
    if not isinstance(name, str):
        raise TypeError(f"path must be a str or an os.PathLike[str], not {path!r}")
    if not name:
        raise ValueError("path must not be empty")
    return name


def _check_mode(mode: object, abstract: bool) -> None:
    if mode is None:
        return
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be an int or None, not {mode!r}")
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode={mode:#o} is outside 0-0o7777")
    if abstract:
        raise ValueError(f"mode={mode:#o}: an abstract socket has no file to chmod")


def _is_addr_in_use(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


def _check_port(port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port={port} is outside 0-65535")


def _check_backlog(backlog: object) -> int:
    """The value for listen(): ``backlog`` capped to 65535, or 65535 for None."""
    if backlog is None:
        return _MAX_BACKLOG
    if isinstance(backlog, bool) or not isinstance(backlog, int):
        raise TypeError(f"backlog must be an int or None, not {backlog!r}")
    if backlog < 1:
        raise ValueError(f"backlog={backlog} is below 1")
    return min(backlog, _MAX_BACKLOG)
