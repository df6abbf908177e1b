"""The asyncio reference peer: websockets.asyncio, on the default asyncio event loop.

``python benchmarks/asyncio_peer.py --lib websockets.asyncio --role server|client ...``, as
``trio_peer.py``; the client runs the same workloads (``workloads.py``) over asyncio.
Defaults but for compression (off; with ``--deflate``, permessage-deflate with websockets'
default settings) and the largest message (``MAX_SIZE``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Literal

import websockets.asyncio.client
import websockets.asyncio.server
import workloads
from workloads import HOST, MAX_SIZE, Channel

LIBRARIES = ("websockets.asyncio",)
#: What the library is given for ``compression``: "deflate" with --deflate, None otherwise.
Compression = Literal["deflate"] | None


async def echo(ws: websockets.asyncio.server.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def serve(compression: Compression) -> None:
    async with websockets.asyncio.server.serve(
        echo, HOST, 0, compression=compression, max_size=MAX_SIZE
    ) as server:
        port: int = server.sockets[0].getsockname()[1]
        workloads.announce_port(port)
        await asyncio.Event().wait()  # until run.py ends the process


@asynccontextmanager
async def connect(port: int, compression: Compression) -> AsyncGenerator[Channel, None]:
    async with websockets.asyncio.client.connect(
        f"ws://{HOST}:{port}/",
        compression=compression,
        max_size=MAX_SIZE,
        proxy=None,  # never let a proxy from the environment into a loopback benchmark
    ) as ws:
        assert ws.response is not None  # set by the opening handshake
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        workloads.check_compression(extensions, compression is not None)
        yield Channel(ws.send, ws.recv)


class AsyncioRuntime:
    """:class:`workloads.Runtime` on asyncio."""

    def semaphore(self, value: int) -> asyncio.Semaphore:
        return asyncio.Semaphore(value)

    def event(self) -> asyncio.Event:
        return asyncio.Event()

    async def run_all(self, functions: Sequence[Callable[[], Awaitable[None]]]) -> None:
        await asyncio.gather(*(function() for function in functions))

    async def read_line(self) -> str:
        return await asyncio.to_thread(sys.stdin.readline)


def main() -> None:
    args = workloads.peer_arguments(LIBRARIES, deflating=LIBRARIES)
    compression: Compression = "deflate" if args.deflate else None
    if args.role == "server":
        asyncio.run(serve(compression))
    else:
        client = workloads.run_client(
            AsyncioRuntime(), partial(connect, args.port, compression), args.workload, args.count
        )
        asyncio.run(client)


if __name__ == "__main__":
    main()
