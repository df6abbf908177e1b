"""trio_ws against Node's ``ws`` (tests/peers/node, pinned in its package-lock.json), both ways
round: ws's server for our client, ws's client for our server.

How this works: each test starts one node process (``echo_server.js`` or ``client.js``) with
pipes for stdin and stdout. The process prints one JSON line per event (the server's port
first); the test reads those lines, each wait bounded by ``trio.fail_after``. Closing the
process's stdin makes it exit; it is killed by PID anyway when the test ends.

Needs node and ``npm ci --prefix tests/peers/node``; without them the tests skip with a reason
starting "needs ", which CI turns into a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_ws

PEERS = Path(__file__).parent / "peers" / "node"
MAX_SIZE = 4 * 2**20  # both sides: above the 2 MiB message
WAIT = 20  # seconds, for any one step with a node process


@pytest.fixture
def node() -> str:
    """The node binary, once the ws package is installed next to the scripts."""
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("needs node (Node.js 20 or later) on PATH for the ws interop tests")
    if not (PEERS / "node_modules" / "ws" / "package.json").is_file():
        pytest.skip("needs the ws package: run `npm ci --prefix tests/peers/node`")
    return binary


class NodePeer:
    """A running node script and the JSON lines it prints."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        self.process = process
        self._stdout = process.stdout
        self._buffer = bytearray()

    async def event(self) -> dict[str, Any]:
        """The next JSON line; fails if the process ends first or stays silent too long."""
        with trio.fail_after(WAIT):
            while b"\n" not in self._buffer:
                chunk = await self._stdout.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"node exited ({self.process.returncode}) mid-test")
                self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        result: dict[str, Any] = json.loads(line)
        return result

    async def event_named(self, name: str) -> dict[str, Any]:
        """The next line whose "event" is ``name``, skipping others."""
        while (event := await self.event()).get("event") != name:
            pass
        return event


@asynccontextmanager
async def run_node(node: str, script: str, *args: str) -> AsyncGenerator[NodePeer, None]:
    process = await trio.lowlevel.open_process(
        [node, script, *args], cwd=PEERS, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        yield NodePeer(process)
    finally:
        # By PID: this process only. Closing stdin alone would make it exit too, but a stuck
        # script must not outlive the test.
        with suppress(ProcessLookupError):
            process.kill()
        with trio.move_on_after(WAIT, shield=True):
            await process.wait()
        assert process.stdin is not None and process.stdout is not None
        await process.stdin.aclose()
        await process.stdout.aclose()


@asynccontextmanager
async def ws_echo_server(node: str) -> AsyncGenerator[tuple[NodePeer, int], None]:
    """ws's server (echo_server.js) on 127.0.0.1, and its port, read from its first line."""
    async with run_node(node, "echo_server.js") as peer:
        port = (await peer.event())["port"]
        assert isinstance(port, int)
        yield peer, port


def digest(message: str | bytes) -> dict[str, Any]:
    """How client.js describes a message."""
    data = message.encode() if isinstance(message, str) else message
    return {
        "binary": isinstance(message, bytes),
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


# -- trio_ws's client, ws's server ---------------------------------------------------------


async def test_trio_ws_client_exchanges_every_kind_of_message_with_a_ws_server(node: str) -> None:
    """Text, binary, empty and 2 MiB messages come back from ws's server as sent, with
    permessage-deflate negotiated: ws names it in its 101 and reads a compressible megabyte
    as a small fraction of that on the wire."""
    big = os.urandom(2 * 2**20)
    async with (
        ws_echo_server(node) as (peer, port),
        trio_ws.connect(f"ws://127.0.0.1:{port}/", max_size=MAX_SIZE) as ws,
    ):
        offered = await peer.event_named("connection")
        messages: list[str | bytes] = ["hello, ws", "é☃𝄞" * 1000, bytes(range(256)), b"", "", big]
        for message in messages:
            await ws.send(message)
            assert await ws.recv() == message

        await ws.send("stats")
        before = json.loads(str(await ws.recv()))
        compressible = "trio_ws and ws agree on permessage-deflate. " * 24000
        await ws.send(compressible)
        assert await ws.recv() == compressible
        await ws.send("stats")
        after = json.loads(str(await ws.recv()))
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")

    assert offered["extensions"].startswith("permessage-deflate")
    assert extensions is not None and extensions.startswith("permessage-deflate")
    assert after["extensions"] == "permessage-deflate"
    on_the_wire = after["bytesRead"] - before["bytesRead"]
    assert 0 < on_the_wire < len(compressible) // 20


async def test_pings_are_answered_both_ways_with_a_ws_server(node: str) -> None:
    """Our ping gets ws's pong (ping() returns the round trip); ws's ping gets our pong."""
    async with (
        ws_echo_server(node) as (_, port),
        trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws,
    ):
        rtt = await ws.ping()
        await ws.send("ping:from ws")
        # echo_server.js sends this only from its "pong" event.
        assert await ws.recv() == "pong:from ws"
    assert isinstance(rtt, float)
    assert 0 <= rtt < WAIT


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (1000, "", trio_ws.ConnectionClosedOK),
        (4001, "bye from ws", trio_ws.ConnectionClosedError),
    ],
)
async def test_ws_server_closing_reaches_the_trio_ws_client(
    node: str, code: int, reason: str, error: type[trio_ws.ConnectionClosed]
) -> None:
    """ws's close code and reason reach recv() as the matching ConnectionClosed, and ws gets
    the same code echoed back in our close frame."""
    async with (
        ws_echo_server(node) as (peer, port),
        trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws,
    ):
        await ws.send(f"close:{code}:{reason}")
        with pytest.raises(error) as info:
            await ws.recv()
        closed = await peer.event_named("close")
    assert (info.value.code, info.value.reason) == (code, reason)
    assert (ws.close_code, ws.close_reason) == (code, reason)
    assert closed["code"] == code


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4001, "bye from trio_ws")])
async def test_trio_ws_client_closing_reaches_the_ws_server(
    node: str, code: int, reason: str
) -> None:
    """Our close code and reason are what ws's server reports, and ws answers the close."""
    async with ws_echo_server(node) as (peer, port):
        async with trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.aclose(code, reason)
        closed = await peer.event_named("close")
    assert (closed["code"], closed["reason"]) == (code, reason)
    assert ws.close_code == code  # ws echoes the code in its close frame


async def test_invalid_utf8_from_a_ws_server_fails_the_connection_with_1007(node: str) -> None:
    """A text message that is not UTF-8 ends the connection with 1007 (RFC 6455 §8.1): recv()
    raises, and ws's server receives that code."""
    async with (
        ws_echo_server(node) as (peer, port),
        trio_ws.connect(f"ws://127.0.0.1:{port}/") as ws,
    ):
        await ws.send("bad-utf8")
        with pytest.raises(trio_ws.ConnectionClosedError):
            await ws.recv()
        closed = await peer.event_named("close")
    assert closed["code"] == 1007


# -- ws's client, trio_ws's server ---------------------------------------------------------


class EchoHandler:
    """Echoes every message, pings once after the first, counts the bytes each message took
    on the wire, and closes with 4001 on "done"; records how the connection ended."""

    def __init__(self) -> None:
        self.server: trio_ws.Server | None = None
        self.received: list[str | bytes] = []
        self.wire_bytes: list[int] = []
        self.rtt: float | None = None
        self.extensions: str | None = None
        self.closed: trio_ws.ConnectionClosed | None = None
        self.done = trio.Event()

    async def __call__(self, ws: trio_ws.ServerConnection) -> None:
        assert self.server is not None
        self.extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        try:
            while True:
                read_before = self.server.stats.bytes_in
                message = await ws.recv()
                if message == "done":
                    await ws.aclose(4001, "bye from trio_ws")
                    return
                self.wire_bytes.append(self.server.stats.bytes_in - read_before)
                self.received.append(message)
                if self.rtt is None:
                    self.rtt = await ws.ping()
                await ws.send(message)
        except trio_ws.ConnectionClosed as exc:
            self.closed = exc
        finally:
            self.done.set()


@asynccontextmanager
async def trio_ws_server(handler: EchoHandler) -> AsyncGenerator[int, None]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_ws.serve, handler, "127.0.0.1", 0, max_size=MAX_SIZE)
        )
        handler.server = server
        yield server.port
        server.cancel_scope.cancel()


async def test_ws_client_exchanges_every_kind_of_message_with_a_trio_ws_server(
    node: str,
) -> None:
    """ws's client gets back each message as sent (text, binary, 2 MiB), permessage-deflate is
    negotiated (in the 101 both sides see), a compressible megabyte comes compressed, pings
    are answered both ways, and our handler's close code and reason reach ws."""
    handler = EchoHandler()
    async with (
        trio_ws_server(handler) as port,
        run_node(node, "client.js", f"ws://127.0.0.1:{port}/") as peer,
    ):
        events = []
        while (event := await peer.event())["event"] != "close":
            events.append(event)
        with trio.fail_after(WAIT):
            await handler.done.wait()

    [opened] = [event for event in events if event["event"] == "open"]
    sent = [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "sent"]
    echoed = [{k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "echo"]
    assert len(sent) == 5
    assert echoed == sent
    assert [digest(message) for message in handler.received] == sent
    assert max(item["length"] for item in sent) == 2 * 2**20

    assert opened["extensions"].startswith("permessage-deflate")
    assert handler.extensions == opened["extensions"]
    compressible = 3  # client.js's fourth message: one sentence, repeated to 1 MiB
    assert handler.wire_bytes[compressible] < sent[compressible]["length"] // 20

    assert [e["data"] for e in events if e["event"] == "pong"] == ["from node"]
    assert isinstance(handler.rtt, float) and handler.rtt >= 0
    assert event["code"] == 4001
    assert event["reason"] == "bye from trio_ws"


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (1000, "", trio_ws.ConnectionClosedOK),
        (4001, "bye from ws", trio_ws.ConnectionClosedError),
    ],
)
async def test_ws_client_closing_reaches_the_trio_ws_handler(
    node: str, code: int, reason: str, error: type[trio_ws.ConnectionClosed]
) -> None:
    """ws's close code and reason reach our handler's recv() as the matching
    ConnectionClosed, and ws gets its code back in our close frame."""
    handler = EchoHandler()
    async with (
        trio_ws_server(handler) as port,
        run_node(node, "client.js", f"ws://127.0.0.1:{port}/", str(code), reason) as peer,
    ):
        closed = await peer.event_named("close")
        with trio.fail_after(WAIT):
            await handler.done.wait()
    assert isinstance(handler.closed, error)
    assert (handler.closed.code, handler.closed.reason) == (code, reason)
    assert closed["code"] == code
