"""A client that stays connected to a server that restarts.

Run it with ``python examples/reconnect.py``: it serves on a free port, connects with
``async for ws in trio_ws.connect(...)``, and restarts the server twice under the client, which
comes back each time on its own; then it leaves the loop with ``break`` and stops the server.
"""

from __future__ import annotations

import trio

import trio_ws

# Short waits for the demo; the defaults (websockets') start at a few seconds.
BACKOFF = trio_ws.Backoff(initial_delay=0.1, min_delay=0.1, max_delay=1.0)


async def echo(ws: trio_ws.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        server: trio_ws.Server = await nursery.start(trio_ws.serve, echo, "127.0.0.1", 0)
        port = server.port
        connections = 0
        async for ws in trio_ws.connect(f"ws://127.0.0.1:{port}/", backoff=BACKOFF):
            connections += 1
            await ws.send(f"hello from connection {connections}")
            print(f"echoed: {await ws.recv()}")
            if connections == 3:
                break  # closes this connection: no aclosing() needed
            await server.aclose()  # the server goes away (1001)...
            try:
                await ws.recv()
            except trio_ws.ConnectionClosed as exc:
                print(f"server closed the connection with {exc.code}")
            # ...and comes back on the same port; the loop reconnects by itself.
            server = await nursery.start(trio_ws.serve, echo, "127.0.0.1", port)
        print(f"left the loop after {connections} connections")
        await ws.wait_closed()
        print(f"last connection closed with {ws.close_code}")
        await server.aclose()
    print("server stopped")


if __name__ == "__main__":
    trio.run(main)
