"""The benchmark peers on trio: trio_ws, websockets.trio, trio-websocket and raw TCP.

``python benchmarks/trio_peer.py --lib trio_ws --role server --workload rtt`` serves an echo
server on 127.0.0.1 and prints ``PORT <n>``; with ``--role client --port <n> --count <c>`` it
runs the workload against that server (``workloads.py`` has the line protocol). run.py starts
both, each pinned to its own core. Servers run until run.py ends them (SIGTERM).

Every library runs with its defaults but for compression (off) and the largest message
(``MAX_SIZE``); keepalive pings stay as each library has them by default. With ``--deflate``,
trio_ws and websockets.trio run with permessage-deflate on, with their default settings
(``compression="deflate"``); trio-websocket has no compression, and raw-trio none either.

``raw-trio`` is the ceiling: no WebSocket at all, a message is a 4-byte big-endian header
(the top bit marks text, the rest is the length) and the payload. Its "opening handshake" is
one empty message echoed, its "closing handshake" a half-close answered by the server's close:
one round trip each, as in WebSocket. What any WebSocket library on trio could at best reach.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal

import trio
import trio_websocket
import websockets.trio.client
import websockets.trio.server
import workloads
from workloads import HOST, MAX_SIZE, Channel, Data

import trio_ws

#: What a library is given for ``compression``: "deflate" with --deflate, None otherwise.
Compression = Literal["deflate"] | None


@dataclass(frozen=True)
class Library:
    """An echo server and a client connection of one library."""

    #: Serve in the nursery, with this compression; return the port.
    start_server: Callable[[trio.Nursery, Compression], Awaitable[int]]
    #: Connect to this port, with this compression.
    connect: Callable[[int, Compression], AbstractAsyncContextManager[Channel]]
    deflate: bool = True  # has permessage-deflate


# -- trio_ws ---------------------------------------------------------------------------------


async def trio_ws_echo(ws: trio_ws.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def trio_ws_server(nursery: trio.Nursery, compression: Compression) -> int:
    server: trio_ws.Server = await nursery.start(
        partial(trio_ws.serve, trio_ws_echo, HOST, 0, compression=compression, max_size=MAX_SIZE)
    )
    return server.port


@asynccontextmanager
async def trio_ws_connect(port: int, compression: Compression) -> AsyncGenerator[Channel, None]:
    uri = f"ws://{HOST}:{port}/"
    async with trio_ws.connect(uri, compression=compression, max_size=MAX_SIZE, proxy=None) as ws:
        assert ws.response is not None  # set by the opening handshake
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        workloads.check_compression(extensions, compression is not None)
        yield Channel(ws.send, ws.recv)


# -- websockets.trio -------------------------------------------------------------------------


async def websockets_echo(ws: websockets.trio.server.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def websockets_server(nursery: trio.Nursery, compression: Compression) -> int:
    server: websockets.trio.server.Server = await nursery.start(
        partial(
            websockets.trio.server.serve,
            websockets_echo,
            0,
            host=HOST,
            compression=compression,
            max_size=MAX_SIZE,
        )
    )
    port: int = server.listeners[0].socket.getsockname()[1]
    return port


@asynccontextmanager
async def websockets_connect(port: int, compression: Compression) -> AsyncGenerator[Channel, None]:
    async with websockets.trio.client.connect(
        f"ws://{HOST}:{port}/",
        compression=compression,
        max_size=MAX_SIZE,
        proxy=None,  # never let a proxy from the environment into a loopback benchmark
    ) as ws:
        assert ws.response is not None  # set by the opening handshake
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        workloads.check_compression(extensions, compression is not None)
        yield Channel(ws.send, ws.recv)


# -- trio-websocket (no compression to turn off) ----------------------------------------------


async def trio_websocket_echo(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except trio_websocket.ConnectionClosed:
        pass


async def trio_websocket_server(nursery: trio.Nursery, compression: Compression) -> int:
    server: trio_websocket.WebSocketServer = await nursery.start(
        partial(
            trio_websocket.serve_websocket,
            trio_websocket_echo,
            HOST,
            0,
            None,
            max_message_size=MAX_SIZE,
        )
    )
    return server.port


@asynccontextmanager
async def trio_websocket_connect(
    port: int, compression: Compression
) -> AsyncGenerator[Channel, None]:
    uri = f"ws://{HOST}:{port}/"
    async with trio_websocket.open_websocket_url(uri, max_message_size=MAX_SIZE) as ws:
        yield Channel(ws.send_message, ws.get_message)


# -- raw TCP, the ceiling ---------------------------------------------------------------------

TEXT = 1 << 31  # the header's top bit: the payload is UTF-8 text
RECEIVE_SIZE = 65_536  # what trio's SocketStream reads by default


class RawChannel:
    """Length-prefixed messages over a trio stream: 4-byte header, then the payload."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def send(self, message: Data) -> None:
        if isinstance(message, str):
            data = message.encode()
            header = len(data) | TEXT
        else:
            data = message
            header = len(data)
        await self._stream.send_all(header.to_bytes(4, "big") + data)

    async def recv(self) -> Data:
        """The next message; EOFError when the peer closed between messages."""
        buffer = self._buffer
        wanted = RECEIVE_SIZE
        while True:
            if len(buffer) >= 4:
                header = int.from_bytes(buffer[:4], "big")
                end = 4 + (header & ~TEXT)
                if len(buffer) >= end:
                    with memoryview(buffer) as view:
                        data = bytes(view[4:end])
                    del buffer[:end]
                    return data.decode() if header & TEXT else data
                # A large message: read the rest of it in as few calls as the kernel allows.
                wanted = max(RECEIVE_SIZE, end - len(buffer))
            chunk = await self._stream.receive_some(wanted)
            if not chunk:
                raise EOFError("the peer closed the connection")
            buffer += chunk


async def raw_echo(stream: trio.SocketStream) -> None:
    channel = RawChannel(stream)
    try:
        while True:
            await channel.send(await channel.recv())
    except (EOFError, trio.BrokenResourceError):
        pass
    finally:
        await stream.aclose()


async def raw_server(nursery: trio.Nursery, compression: Compression) -> int:
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    nursery.start_soon(trio.serve_listeners, raw_echo, listeners)
    port: int = listeners[0].socket.getsockname()[1]
    return port


@asynccontextmanager
async def raw_connect(port: int, compression: Compression) -> AsyncGenerator[Channel, None]:
    stream = await trio.open_tcp_stream(HOST, port)
    try:
        channel = RawChannel(stream)
        await channel.send(b"")  # the "opening handshake": one round trip
        if await channel.recv() != b"":
            raise AssertionError("the raw server did not echo the empty message")
        yield Channel(channel.send, channel.recv)
        await stream.send_eof()  # the "closing handshake": until the server closes too
        for _ in range(1_000):
            if not await stream.receive_some(RECEIVE_SIZE):
                break
        else:
            raise AssertionError("the raw server kept sending after the client's half-close")
    finally:
        await stream.aclose()


LIBRARIES = {
    "trio_ws": Library(trio_ws_server, trio_ws_connect),
    "websockets.trio": Library(websockets_server, websockets_connect),
    "trio-websocket": Library(trio_websocket_server, trio_websocket_connect, deflate=False),
    "raw-trio": Library(raw_server, raw_connect, deflate=False),
}


class TrioRuntime:
    """:class:`workloads.Runtime` on trio."""

    def semaphore(self, value: int) -> trio.Semaphore:
        return trio.Semaphore(value)

    def event(self) -> trio.Event:
        return trio.Event()

    async def run_all(self, functions: Sequence[Callable[[], Awaitable[None]]]) -> None:
        async with trio.open_nursery() as nursery:
            for function in functions:
                nursery.start_soon(function)

    async def read_line(self) -> str:
        return await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


async def serve(library: Library, compression: Compression) -> None:
    async with trio.open_nursery() as nursery:
        workloads.announce_port(await library.start_server(nursery, compression))
        await trio.sleep_forever()


def main() -> None:
    deflating = [name for name, library in LIBRARIES.items() if library.deflate]
    args = workloads.peer_arguments(LIBRARIES, deflating)
    library = LIBRARIES[args.lib]
    compression: Compression = "deflate" if args.deflate else None
    if args.role == "server":
        trio.run(serve, library, compression)
    else:
        connect = partial(library.connect, args.port, compression)
        trio.run(workloads.run_client, TrioRuntime(), connect, args.workload, args.count)


if __name__ == "__main__":
    main()
