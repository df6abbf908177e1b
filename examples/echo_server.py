"""An echo server that runs until interrupted: ``python examples/echo_server.py [PORT]``.

Try it with ``python -m websockets ws://127.0.0.1:8765/`` or any WebSocket client.
"""

from __future__ import annotations

import logging
import sys

import trio

import trio_ws


async def handler(ws: trio_ws.ServerConnection) -> None:
    """Send every message back to the client that sent it."""
    async for message in ws:
        await ws.send(message)


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_ws.serve, handler, "127.0.0.1", port)
        print(f"listening on ws://127.0.0.1:{server.port}/", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8765)
