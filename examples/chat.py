"""A chat server: rooms by path, login by HTTP Basic, broadcast to the room, a health check.

Run it with ``python examples/chat.py``: it serves on a free port, checks its health the way a
load balancer would, lets three users in (and one with a wrong password not), has them talk in
two rooms, then shuts the server down gracefully. ``python examples/chat.py --serve 8765``
only serves, until Ctrl-C.

Needs the router extra: ``pip install 'trio-ws[router]'``.
"""

from __future__ import annotations

import base64
import sys
from collections import defaultdict
from functools import partial
from http import HTTPStatus

import trio
from werkzeug.routing import Map, Rule

import trio_ws
from trio_ws.router import route

USERS = [("alice", "wonderland"), ("bob", "builder"), ("carol", "singer")]

#: Who is in each room, by room name.
rooms: defaultdict[str, set[trio_ws.ServerConnection]] = defaultdict(set)


async def chat(ws: trio_ws.ServerConnection, room: str) -> None:
    """Relay what each member of ``room`` says to every member; its path is /rooms/<room>."""
    members = rooms[room]
    members.add(ws)
    trio_ws.broadcast(members, f"{ws.username} joined {room}")
    try:
        async for message in ws:
            text = message if isinstance(message, str) else message.decode(errors="replace")
            trio_ws.broadcast(members, f"{ws.username}: {text}")
    finally:
        members.discard(ws)
        trio_ws.broadcast(members, f"{ws.username} left {room}")


url_map = Map([Rule("/rooms/<room>", endpoint=chat)])
login = trio_ws.basic_auth(realm="chat", credentials=USERS)


async def process_request(
    connection: trio_ws.ServerConnection, request: trio_ws.Request
) -> trio_ws.Response | None:
    """Answer health checks without a login; let everything else through basic auth."""
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "OK\n")
    return await login(connection, request)


def credentials(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def heard(ws: trio_ws.ClientConnection) -> str:
    """The next message of the room (the server sends text only)."""
    message = await ws.recv()
    assert isinstance(message, str)
    return message


async def health(port: int) -> str:
    """The status line of GET /healthz, as a load balancer's check sees it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = b""
        while data := await stream.receive_some(4096):
            answer += data
    return answer.split(b"\r\n", 1)[0].decode()


async def demo() -> None:
    async with trio.open_nursery() as nursery:
        serving = partial(route, url_map, "127.0.0.1", 0, process_request=process_request)
        server: trio_ws.Server = await nursery.start(serving)
        base = f"ws://127.0.0.1:{server.port}"
        print(f"health check: {await health(server.port)}")
        try:
            async with trio_ws.connect(
                f"{base}/rooms/lobby", additional_headers=credentials("alice", "rabbit")
            ):
                pass  # pragma: no cover - the server refuses it
        except trio_ws.InvalidStatus as exc:
            print(f"wrong password: HTTP {exc.response.status_code}")
        alice_in = credentials("alice", "wonderland")
        async with trio_ws.connect(f"{base}/rooms/lobby", additional_headers=alice_in) as alice:
            print(f"alice reads: {await heard(alice)}")
            bob_in = credentials("bob", "builder")
            async with trio_ws.connect(f"{base}/rooms/lobby", additional_headers=bob_in) as bob:
                print(f"alice reads: {await heard(alice)}")
                print(f"bob reads: {await heard(bob)}")
                carol_in = credentials("carol", "singer")
                async with trio_ws.connect(
                    f"{base}/rooms/garden", additional_headers=carol_in
                ) as carol:
                    print(f"carol reads: {await heard(carol)}")
                    await alice.send("hello, bob")
                    print(f"bob reads: {await heard(bob)}")
                    await carol.send("anyone here?")
                    print(f"carol reads: {await heard(carol)}")
                    await bob.send("hi alice")
                    print(f"alice reads: {await heard(alice)}")
                    print(f"alice reads: {await heard(alice)}")  # her own message came first
            print(f"alice reads: {await heard(alice)}")
        stats = server.stats
        print(f"refused: {dict(stats.handshakes_refused)}, opened: {stats.connections_total}")
        await server.aclose()
    print("server stopped")


async def serve_forever(port: int) -> None:
    async with trio.open_nursery() as nursery:
        serving = partial(route, url_map, "127.0.0.1", port, process_request=process_request)
        server: trio_ws.Server = await nursery.start(serving)
        print(f"chat rooms at ws://127.0.0.1:{server.port}/rooms/<room>", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        trio.run(serve_forever, int(sys.argv[2]))
    else:
        trio.run(demo)
