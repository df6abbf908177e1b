"""A server behind HTTP Basic authentication: ``python examples/auth_server.py [PORT]``.

``/healthz`` answers without credentials, for a load balancer's health checks; any other path
needs ``alice``'s or ``bob``'s. Try it with a client that sends the header::

    import base64
    token = base64.b64encode(b"alice:wonderland").decode()
    async with trio_ws.connect(uri, additional_headers={"Authorization": f"Basic {token}"}):
        ...

Serve it over TLS (``ssl=``) anywhere but on localhost: Basic credentials are only base64.
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from http import HTTPStatus

import trio

import trio_ws
from trio_ws.auth import basic_auth

# Demo passwords only: keep real ones out of the source (see check_credentials in the docs).
auth = basic_auth(realm="example", credentials=[("alice", "wonderland"), ("bob", "builder")])


async def process_request(
    connection: trio_ws.ServerConnection, request: trio_ws.Request
) -> trio_ws.Response | None:
    """Answer health checks without credentials; ask for them everywhere else."""
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "OK\n")
    return await auth(connection, request)


async def handler(ws: trio_ws.ServerConnection) -> None:
    """Greet the user that logged in, then echo what they send."""
    await ws.send(f"hello {ws.username}")
    async for message in ws:
        await ws.send(message)


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        serve = partial(trio_ws.serve, process_request=process_request)
        server = await nursery.start(serve, handler, "127.0.0.1", port)
        print(f"listening on ws://127.0.0.1:{server.port}/", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8765)
