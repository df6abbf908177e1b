"""An echo server on a Unix socket, as behind a reverse proxy, that stops cleanly on SIGTERM.

Run it with ``python examples/unix_server.py [PATH]``; without PATH it listens in a new
temporary directory. It prints ``listening on unix:PATH`` and serves until SIGINT (Ctrl-C) or
SIGTERM (what systemd and container runtimes send), then closes every connection with 1001,
removes the socket file and exits.

Point a reverse proxy on the same machine at it, for example nginx::

    location /ws/ {
        proxy_pass http://unix:/run/app/ws.sock:/;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
    }

The proxy's user needs write permission on the socket file: ``mode=0o660`` below lets the
file's group in (put the proxy's user in it), nobody else.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from functools import partial

import trio

import trio_ws


async def handler(ws: trio_ws.ServerConnection) -> None:
    """Send every message back to the client that sent it."""
    async for message in ws:
        await ws.send(message)


async def main(path: str) -> None:
    # Signals are received from before the server listens, so that none is missed.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(trio_ws.unix_serve, handler, path, mode=0o660))
            print(f"listening on unix:{path}", flush=True)
            async for signum in signals:
                print(f"stopping on {signal.Signals(signum).name}", flush=True)
                await server.aclose()  # 1001 to every client, then serve() returns
                break
    # unix_serve() has removed the socket file.
    print("server stopped", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="trio_ws-") as directory:
            trio.run(main, os.path.join(directory, "ws.sock"))
