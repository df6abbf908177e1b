"""A server that routes by path, until interrupted: ``python examples/router_server.py [PORT]``.

Needs werkzeug: ``pip install trio-ws[router]``. Try it with
``python -m websockets ws://127.0.0.1:8765/chat/lobby``: every message comes back with the
room's name; ``/user/42`` greets user 42 and closes; any other path (``/user/abc``, ``/chat``
without a room) gets 404.
"""

from __future__ import annotations

import logging
import sys

import trio
from werkzeug.routing import Map, Rule

from trio_ws.router import route
from trio_ws.server import ServerConnection


async def chat(ws: ServerConnection, room: str) -> None:
    """Send every message back, prefixed by the room named in the path."""
    async for message in ws:
        await ws.send(f"[{room}] {message!s}")


async def user(ws: ServerConnection, uid: int) -> None:
    """Greet the user whose id is in the path (an int: the converter checked it), then close."""
    await ws.send(f"hello, user {uid}; next is {uid + 1}")


url_map = Map(
    [
        Rule("/chat/<room>", endpoint=chat),
        Rule("/user/<int:uid>", endpoint=user),
    ]
)


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(route, url_map, "127.0.0.1", port)
        print(f"listening on ws://127.0.0.1:{server.port}/", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8765)
