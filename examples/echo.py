"""Echo, end to end: a server and a client in one trio program.

Run it with ``python examples/echo.py``; it serves on a free port, talks to itself, then shuts
the server down gracefully and exits.
"""

from __future__ import annotations

import trio

import trio_ws


async def handler(ws: trio_ws.ServerConnection) -> None:
    """Send every message back to the client that sent it."""
    async for message in ws:
        await ws.send(message)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_ws.serve, handler, "127.0.0.1", 0)
        print(f"serving on ws://127.0.0.1:{server.port}/")
        async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send("hello")
            print(f"text echoed: {await ws.recv()!r}")
            await ws.send(b"\x00\x01\x02")
            print(f"bytes echoed: {await ws.recv()!r}")
            rtt = await ws.ping()
            print(f"ping answered in {rtt * 1000:.2f} ms")
        print(f"client closed with code {ws.close_code}")
        await server.aclose()  # graceful: 1001 to every client, then serve() returns
    print("server stopped")


if __name__ == "__main__":
    trio.run(main)
