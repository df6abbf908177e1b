"""Test your handlers and clients in memory: the real handshake, no sockets, any clock.

How this works: a :class:`MemoryListener` is a :class:`trio.abc.Listener` whose connections
are :func:`trio.testing.memory_stream_pair` halves: ``connect()`` makes a pair, hands the server
half to ``accept()`` and returns the client half. :func:`serving` runs the real
:func:`~trio_ws.serve` on one such listener, in a nursery of its own, and its
:meth:`MemoryServer.connect` gives the real :class:`~trio_ws.connect` a client stream that
dials the listener when the handshake first uses it. :func:`connection_pair` is
:func:`serving` with a handler that hands its :class:`~trio_ws.ServerConnection` out and holds
it until the pair's block exits.

Nothing here reads the wall clock or opens a file descriptor, so every test can run under
``trio.testing.MockClock(autojump_threshold=0)``, where ``open_timeout``, ``close_timeout`` and
keepalive fire at exact virtual times. Memory streams buffer without limit: ``write_limit`` is
never reached through the transport, and both addresses of every connection are None.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Unpack, cast

import trio
import trio.testing

from . import _groups
from . import client as _client
from ._options import SharedOptions
from .client import ClientConnection, ConnectOptions
from .server import ServeOptions, Server, ServerConnection, serve

if TYPE_CHECKING:
    from .server import Handler

__all__ = [
    "MEMORY_HOST",
    "CommonOptions",
    "MemoryListener",
    "MemoryServer",
    "connection_pair",
    "serving",
]

#: The host of the URIs :meth:`MemoryServer.connect` opens (and so of the Host header): no
#: name is looked up, it only names the server in requests and logs.
MEMORY_HOST = "testserver"

_NOT_FOR_MEMORY = ("stream", "proxy")


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener of in-memory streams: :meth:`connect` is the client's side of ``accept()``.

    ::

        listener = trio_ws.testing.MemoryListener()
        server = await nursery.start(partial(trio_ws.serve, handler, listeners=[listener]))
        stream = await listener.connect()  # speak HTTP or WebSocket over it yourself

    No queue: each :meth:`connect` waits for an ``accept()`` to take its connection (a
    rendezvous, as a listen queue of length 0 would be). Once connect() returns, the server
    has the other half; a listener that nobody accepts from holds no connection, so none is
    left half-open when it closes. :func:`~trio_ws.serve` always waits in ``accept()``, so a
    connect() to a running server returns at once.
    """

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](0)

    async def connect(self) -> trio.abc.Stream:
        """Open a connection: make a memory stream pair, hand the server's half to
        ``accept()``, return the client's half.

        Blocks until an ``accept()`` takes the server's half.

        Raises:
            ConnectionRefusedError: the listener is closed, before or while this waits (as a
                socket whose server stopped listening refuses connections).

        Cancelling is safe: a cancelled connect() handed nothing over and leaves nothing open.
        """
        client, server = trio.testing.memory_stream_pair()
        try:
            await self._send.send(server)
        except trio.BrokenResourceError:
            raise ConnectionRefusedError(f"{self!r} is closed: nothing accepts") from None
        return client

    async def accept(self) -> trio.abc.Stream:
        """Wait for the next :meth:`connect` and return the server's half of its streams.

        Raises:
            trio.ClosedResourceError: the listener is closed, before or while this waits.

        Cancelling is safe: a connection is taken by the call that returns it, or not at all.
        """
        return await self._receive.receive()

    async def aclose(self) -> None:
        """Stop accepting: waiting and later ``accept()`` calls raise
        :exc:`trio.ClosedResourceError`, :meth:`connect` calls raise
        :exc:`ConnectionRefusedError`.

        Never blocks (it still checkpoints), and may be called again.
        """
        await self._receive.aclose()

    def __repr__(self) -> str:
        return f"<MemoryListener at {id(self):#x}>"


class _DialingStream(trio.abc.Stream):
    """The client's stream of :meth:`MemoryServer.connect`: it connects to the listener when
    the handshake first uses it, so that connect() checks its options before any await, as
    :class:`~trio_ws.connect` does, and a connect() never entered opens nothing."""

    def __init__(self, listener: MemoryListener) -> None:
        self._listener = listener
        self._stream: trio.abc.Stream | None = None
        self._dialing = trio.Lock()
        self._closed = False

    async def _connected(self) -> trio.abc.Stream:
        if self._stream is None:
            async with self._dialing:
                if self._stream is None and not self._closed:
                    self._stream = await self._listener.connect()
        if self._closed or self._stream is None:
            raise trio.ClosedResourceError("this stream was closed")
        return self._stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        stream = await self._connected()
        await stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        stream = await self._connected()
        await stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        stream = await self._connected()
        return await stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        self._closed = True
        if self._stream is not None:
            await self._stream.aclose()
        else:
            await trio.lowlevel.checkpoint()


class MemoryServer:
    """A server running over a :class:`MemoryListener`, as :func:`serving` gives it.

    Only :func:`serving` creates one.
    """

    def __init__(self, server: Server, listener: MemoryListener) -> None:
        self._server = server
        self._listener = listener

    @property
    def server(self) -> Server:
        """The running :class:`~trio_ws.Server`: its ``connections``, ``stats``, ``aclose()``."""
        return self._server

    @property
    def listener(self) -> MemoryListener:
        """The listener it accepts from: ``await listener.connect()`` gives a raw stream, for
        requests that are no WebSocket client's (a health check, a malformed request)."""
        return self._listener

    def connect(self, path: str = "/", **options: Unpack[ConnectOptions]) -> _client.connect:
        """Connect a client to this server: :class:`trio_ws.connect` for ``path`` on it.

        ::

            async with server.connect("/chat", subprotocols=["chat"]) as ws:
                await ws.send("hello")

        Returns the :class:`~trio_ws.connect` object that ``trio_ws.connect(uri, stream=...)``
        returns, for ``ws://testserver`` + ``path`` (``wss://`` when ``ssl`` is given): use it
        with ``async with`` once; call this again for another connection. Its stream connects
        to the listener when the opening handshake starts, within ``open_timeout``. Keepalive,
        timeouts and close codes work as over TCP; no proxy is used.

        Args:
            path: the request's path, with its query if any; it starts with "/".
            options: any option of :class:`~trio_ws.connect` but ``stream`` and ``proxy``.

        Raises:
            ValueError: ``path`` does not start with "/", or an option has a wrong value.
            TypeError: ``stream`` or ``proxy`` is given, or an option has the wrong type.
            InvalidURI: ``path`` makes no valid URI.

        When the block is entered, it raises what :class:`~trio_ws.connect` raises;
        :exc:`ConnectionRefusedError` once the server has stopped.
        """
        if not isinstance(cast("object", path), str) or not path.startswith("/"):
            raise ValueError(f"path must start with '/', not {path!r}")
        for name in _NOT_FOR_MEMORY:
            if name in options:
                raise TypeError(
                    f"MemoryServer.connect() takes no {name}=: it connects through the "
                    "server's MemoryListener"
                )
        scheme = "ws" if options.get("ssl") is None else "wss"
        stream = _DialingStream(self._listener)
        dialed: ConnectOptions = {**options, "stream": stream, "proxy": None}
        return _client.connect(f"{scheme}://{MEMORY_HOST}{path}", **dialed)

    def __repr__(self) -> str:
        return f"<MemoryServer {self._server!r}>"


@asynccontextmanager
async def serving(
    handler: Handler, **options: Unpack[ServeOptions]
) -> AsyncGenerator[MemoryServer, None]:
    """Run :func:`~trio_ws.serve` in memory for a block, and connect clients to it.

    ::

        async with trio_ws.testing.serving(handler) as server:
            async with server.connect("/") as ws:
                await ws.send("hello")
                assert await ws.recv() == "hello"

    The real server (handshake, hooks, handler, keepalive, close codes) runs over a
    :class:`MemoryListener`, in a nursery this context owns. Entering returns once it accepts.

    Leaving the block normally stops it gracefully with :meth:`Server.aclose()
    <trio_ws.Server.aclose>`: connections still open (clients held outside the block) get
    1001, handlers get ``close_timeout`` to return before they are cancelled, and the exit
    blocks until they have ended. Leaving by an exception (cancellation included) stops it
    hard instead (``server.cancel_scope.cancel()``: each connection still sends 1001, bounded
    by ``close_timeout``) and lets the exception through, never wrapped in an ExceptionGroup.
    Either way, once the block is left no task of the server runs and the listener is closed.

    Args:
        handler: an async function taking a :class:`~trio_ws.ServerConnection`.
        options: any option of :func:`~trio_ws.serve` but those that say where it listens.

    Raises:
        TypeError, ValueError: an option is wrong, as :func:`~trio_ws.serve` says; raised on
            entering.
    """
    listener = MemoryListener()
    async with _groups.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(serve, handler, listeners=[listener], **options)
        )
        try:
            yield MemoryServer(server, listener)
        except BaseException:
            server.cancel_scope.cancel()
            raise
        await server.aclose()


class CommonOptions(SharedOptions, total=False):
    """The options of :func:`connection_pair` that apply to both sides, with the meaning
    :func:`~trio_ws.serve` and :class:`~trio_ws.connect` give them: ``open_timeout``,
    ``close_timeout``, ``ping_interval``, ``ping_timeout``, ``max_size``, ``max_queue``,
    ``write_limit``, ``compression``, ``subprotocols`` and ``logger``."""


@asynccontextmanager
async def connection_pair(
    path: str = "/",
    *,
    serve_options: ServeOptions | None = None,
    connect_options: ConnectOptions | None = None,
    **options: Unpack[CommonOptions],
) -> AsyncGenerator[tuple[ClientConnection, ServerConnection], None]:
    """Open a client and a server connection joined in memory, after a real handshake.

    ::

        async with trio_ws.testing.connection_pair() as (client, server):
            await client.send("hello")
            assert await server.recv() == "hello"

    For code that takes a connection, with no server of your own: :func:`serving` runs the
    server, whose handler hands its :class:`~trio_ws.ServerConnection` out and holds it (its
    session running) until the block exits; :meth:`MemoryServer.connect` opens the client.
    Entering blocks until both sides are open.

    On exit the client closes first, as leaving :class:`~trio_ws.connect` does: 1000 after a
    normal exit, 1011 after an exception, 1001 when cancelled; then the server's side ends
    and the server stops (see :func:`serving`). Exceptions come through unwrapped.

    Args:
        path: the request's path.
        serve_options: options of :func:`~trio_ws.serve` for the server's side
            (``process_request``, ``select_subprotocol``...); they override ``options``.
        connect_options: options of :class:`~trio_ws.connect` for the client's side
            (``additional_headers``, ``origin``...); they override ``options``.
        options: options for both sides (:class:`CommonOptions`).

    Raises:
        TypeError, ValueError: an option is wrong.
        InvalidStatus: the server refused the handshake (a ``process_request`` hook's
            response, a forbidden origin...).
        TimeoutError: the handshake took longer than the client's ``open_timeout``.
    """
    handed: list[ServerConnection] = []
    arrived = trio.Event()
    release = trio.Event()

    async def hold(ws: ServerConnection) -> None:
        handed.append(ws)
        arrived.set()
        await release.wait()

    server_side: ServeOptions = {**options, **(serve_options or {})}
    client_side: ConnectOptions = {**options, **(connect_options or {})}
    async with serving(hold, **server_side) as memory:
        try:
            async with memory.connect(path, **client_side) as client:
                await arrived.wait()
                yield client, handed[0]
        finally:
            release.set()
