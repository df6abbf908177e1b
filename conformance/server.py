"""The server under test: an echo server for ``kosoku -m fuzzingclient`` (Autobahn TestSuite).

``python conformance/server.py [--port P]`` listens on 127.0.0.1:P (0, the default, picks a free
port), prints ``listening on ws://127.0.0.1:PORT/`` on stdout once it accepts connections, and
echoes every message back on the connection it came from. SIGTERM or SIGINT stops it gracefully
(``Server.aclose()``, bounded by ``close_timeout``); ``conformance/run.py`` starts and stops it.

The limits are off so that the suite's large messages (up to 16 MiB in 9.*) and bursts (1000
messages in 12.*/13.*) get through, and so is keepalive, whose pings would be unexpected frames
in the suite's wire-level expectations. Compression stays on ("deflate") for 12.* and 13.*.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal

import trio

import trio_ws


async def echo(ws: trio_ws.ServerConnection) -> None:
    """Send every message back until the client closes; the suite judges what happens at the end.

    ConnectionClosedError (a case that sends invalid frames, which our side answers with 1002 or
    1007) is the expected end of many cases, so it is not an error of the handler.
    """
    try:
        async for message in ws:
            await ws.send(message)
    except trio_ws.ConnectionClosed:
        pass


async def main(port: int) -> None:
    """Serve until SIGTERM or SIGINT, then close every connection with 1001 and return."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                trio_ws.serve, max_size=None, max_queue=None, ping_interval=None
            )
            server: trio_ws.Server = await nursery.start(serve, echo, "127.0.0.1", port)
            print(f"listening on ws://127.0.0.1:{server.port}/", flush=True)
            async for _ in signals:
                await server.aclose()
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="server: %(levelname)s %(message)s")
    trio.run(main, args.port)
