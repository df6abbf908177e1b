"""trio_ws against other implementations: websockets.trio and trio-websocket (stock wsproto) as
the peer, both ways round.

RFC 7692 negotiation is where implementations disagree most; these tests run it, and messages
and closing codes, against each one's own client and server.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager, suppress
from functools import partial

import pytest
import trio
from wsproto.events import AcceptConnection
from wsproto.extensions import PerMessageDeflate

import trio_ws

ws_client = pytest.importorskip("websockets.trio.client")
ws_server = pytest.importorskip("websockets.trio.server")
websockets_exceptions = pytest.importorskip("websockets.exceptions")
websockets_deflate = pytest.importorskip("websockets.extensions.permessage_deflate")
trio_websocket = pytest.importorskip("trio_websocket")
trio_websocket_impl = pytest.importorskip("trio_websocket._impl")

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


async def test_trio_ws_client_keeps_to_the_deflate_parameters_a_websockets_server_sets() -> None:
    """A websockets server that imposes smaller windows and no context takeover on both sides
    answers our first offer with them; we take them, and every kind of message still goes both
    ways, compressed."""
    restrictive = websockets_deflate.ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=10,
        client_max_window_bits=9,
    )
    async with (
        websockets_echo_server(compression=None, extensions=[restrictive]) as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws,
    ):
        for message in [*MESSAGES, bytes(range(256)) * 64, "again " * 2000, "again " * 2000]:
            await ws.send(message)
            assert await ws.recv() == message
        extensions = ws.response.headers.get_all("Sec-WebSocket-Extensions")
    assert ws.close_code == 1000
    assert extensions == [
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=9"
    ]


@asynccontextmanager
async def trio_websocket_echo_server() -> AsyncGenerator[int, None]:
    async def echo(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        with suppress(trio_websocket.ConnectionClosed):
            while True:
                await ws.send_message(await ws.get_message())

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, echo, "127.0.0.1", 0, ssl_context=None)
        )
        yield server.port
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("server_deflate", "answer"),
    [
        (False, None),
        (True, "permessage-deflate; client_no_context_takeover; client_max_window_bits=15"),
    ],
    ids=["stock", "with-wsproto-deflate"],
)
async def test_trio_ws_client_talks_to_a_trio_websocket_server(
    monkeypatch: pytest.MonkeyPatch, server_deflate: bool, answer: str | None
) -> None:
    """trio-websocket never accepts permessage-deflate: our offers are declined and messages go
    uncompressed. With wsproto's own PerMessageDeflate switched on in its server (trio-websocket
    has no option for it, so the test adds it to the AcceptConnection it sends), stock wsproto
    answers our second offer, and every kind of message goes both ways compressed."""
    if server_deflate:

        def accept_with_deflate(**kwargs: object) -> AcceptConnection:
            return AcceptConnection(extensions=[PerMessageDeflate()], **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(trio_websocket_impl, "AcceptConnection", accept_with_deflate)
    async with (
        trio_websocket_echo_server() as port,
        trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws,
    ):
        for message in [*MESSAGES, "again " * 2000, "again " * 2000]:
            await ws.send(message)
            assert await ws.recv() == message
        extensions = ws.response.headers.get_all("Sec-WebSocket-Extensions")
    assert ws.close_code == 1000
    assert extensions == ([answer] if answer else [])


async def test_trio_websocket_client_talks_to_a_trio_ws_server() -> None:
    """A trio-websocket client, which offers no extension, exchanges every kind of message with
    trio_ws.serve uncompressed, and its close code and reason reach the handler.

    The client closes: trio-websocket leaves its socket open when the server closes first.
    """
    closed: list[trio_ws.ConnectionClosed] = []
    handler_done = trio.Event()

    async def echo(ws: trio_ws.ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except trio_ws.ConnectionClosed as exc:
            closed.append(exc)
        finally:
            handler_done.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(trio_ws.serve, echo, "127.0.0.1", 0))
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            for message in MESSAGES:
                await ws.send_message(message)
                assert await ws.get_message() == message
            await ws.aclose(4000, "done")
        await handler_done.wait()
        server.cancel_scope.cancel()
    [error] = closed
    assert (error.code, error.reason) == (4000, "done")
