"""trio_ws against another implementation: websockets.trio as the peer, both ways round.

RFC 7692 negotiation is where implementations disagree most; these tests run it, and messages
and closing codes, against websockets' own client and server.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

import trio_ws

ws_client = pytest.importorskip("websockets.trio.client")
ws_server = pytest.importorskip("websockets.trio.server")
websockets_exceptions = pytest.importorskip("websockets.exceptions")

MESSAGES: list[str | bytes] = ["hello", "é" * 3000, b"\x00\xff" * 40000, b""]


@asynccontextmanager
async def websockets_echo_server(**options: object) -> AsyncGenerator[int, None]:
    async def echo(ws: ws_server.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(ws_server.serve, echo, 0, host="127.0.0.1", **options)
        )
        yield server.listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_trio_ws_client_talks_to_a_websockets_server(compression: str | None) -> None:
    """Messages of every kind go both ways through a websockets.trio server, compressed when
    both agree, and the close is clean."""
    async with (
        websockets_echo_server() as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/", compression=compression) as ws,
    ):
        for message in MESSAGES:
            await ws.send(message)
            assert await ws.recv() == message
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
    assert ws.close_code == 1000
    if compression is None:
        assert extensions is None
    else:
        assert extensions is not None
        assert extensions.startswith("permessage-deflate")


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_websockets_client_talks_to_a_trio_ws_server(compression: str | None) -> None:
    """A websockets.trio client negotiates with trio_ws.serve (12-bit windows when
    compressing), exchanges every kind of message, and sees the handler's close code."""

    async def echo_then_close(ws: trio_ws.ServerConnection) -> None:
        for _ in MESSAGES:
            await ws.send(await ws.recv())
        await ws.aclose(4000, "done")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_ws.serve, echo_then_close, "127.0.0.1", 0, compression=compression)
        )
        async with ws_client.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            for message in MESSAGES:
                await ws.send(message)
                assert await ws.recv() == message
            with pytest.raises(websockets_exceptions.ConnectionClosed) as info:
                await ws.recv()
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        server.cancel_scope.cancel()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "done")
    if compression is None:
        assert extensions is None
    else:
        assert extensions is not None
        assert "server_max_window_bits=12" in extensions


async def test_oversized_message_from_websockets_is_refused_with_1009() -> None:
    """A message over max_size from another implementation closes with 1009 on its side."""

    async def drain(ws: trio_ws.ServerConnection) -> None:
        async for _ in ws:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(trio_ws.serve, drain, "127.0.0.1", 0, max_size=1000))
        async with ws_client.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send(b"x" * 1001)
            with pytest.raises(websockets_exceptions.ConnectionClosed) as info:
                await ws.recv()
        server.cancel_scope.cancel()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1009
