"""A health check on the WebSocket port: ``process_request`` answers ``GET /healthz``.

Load balancers and orchestrators (Kubernetes probes, HAProxy, AWS target groups) check a
server with a plain HTTP request. ``process_request`` sees every request before the upgrade,
so it can answer that one itself, while WebSocket clients on any other path connect as usual.

Run it with ``python examples/health_check.py``: it serves on a free port, checks its own
health as a load balancer would, talks to itself over WebSocket, then stops.
"""

from __future__ import annotations

from functools import partial
from http import HTTPStatus

import trio

import trio_ws


def process_request(
    connection: trio_ws.ServerConnection, request: trio_ws.Request
) -> trio_ws.Response | None:
    """Answer the health check; let every other request go on to the WebSocket upgrade."""
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "OK\n")
    return None


async def handler(ws: trio_ws.ServerConnection) -> None:
    """Send every message back to the client that sent it."""
    async for message in ws:
        await ws.send(message)


async def http_get(port: int, path: str) -> bytes:
    """What a load balancer's probe does: a plain HTTP/1.1 GET, read until the server closes."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        response = bytearray()
        while chunk := await stream.receive_some(65536):
            response += chunk
    return bytes(response)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        serve = partial(trio_ws.serve, process_request=process_request)
        server = await nursery.start(serve, handler, "127.0.0.1", 0)
        response = await http_get(server.port, "/healthz")
        status_line, _, rest = response.partition(b"\r\n")
        body = rest.partition(b"\r\n\r\n")[2]
        print(f"health check: {status_line.decode()} {body!r}")
        async with trio_ws.connect(f"ws://127.0.0.1:{server.port}/chat") as ws:
            await ws.send("hello")
            print(f"websocket echoed: {await ws.recv()!r}")
        print(f"health checks answered: {server.stats.handshakes_refused['response']}")
        print(f"websocket connections: {server.stats.connections_total}")
        await server.aclose()
    print("server stopped")


if __name__ == "__main__":
    trio.run(main)
