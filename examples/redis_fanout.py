"""A chat served by several worker processes: what any client sends, every client gets.

Each worker relays the Redis channel "chat" to its own clients (trio_ws.redis.relay) and
publishes what its clients send (trio_ws.redis.publish), so a message reaches the clients of
every worker. Start Redis, then two workers, each on a port of its own:

    python examples/redis_fanout.py 8001 redis://127.0.0.1:6379
    python examples/redis_fanout.py 8002 redis://127.0.0.1:6379

then connect to either (``python -m trio_ws ws://127.0.0.1:8001``). Port 0 picks a free port;
each worker prints its URI once it is subscribed. Needs the redis extra: pip install
trio-ws[redis]. See docs/topics/redis.rst.
"""

from __future__ import annotations

import sys

import coredis
import trio

import trio_ws
from trio_ws.redis import publish, relay

CHANNEL = "chat"


async def main(port: int, redis_url: str) -> None:
    # One client for publishing, entered once: its connection is reused for every message.
    async with coredis.Redis.from_url(redis_url) as redis:

        async def handler(ws: trio_ws.ServerConnection) -> None:
            # Once a client has this, it is in server.connections: it gets every message.
            await ws.send("welcome: you get what any client of any worker sends")
            async for message in ws:
                await publish(redis, CHANNEL, message)  # str stays text, bytes stay binary

        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_ws.serve, handler, "127.0.0.1", port)
            await nursery.start(relay, redis_url, CHANNEL, lambda: server.connections)
            print(f"listening on ws://127.0.0.1:{server.port}", flush=True)


if __name__ == "__main__":
    trio.run(
        main,
        int(sys.argv[1]) if len(sys.argv) > 1 else 8001,
        sys.argv[2] if len(sys.argv) > 2 else "redis://127.0.0.1:6379",
    )
