"""trio_ws against a real browser: headless Chromium's WebSocket talks to trio_ws.serve.

How this works: the server itself serves the test page (``process_request`` answers GET /page)
and, on the same port, the WebSocket endpoints: /ws/echo echoes and closes with 4001 on
"close-me"; /ws/report takes one JSON message, everything the page saw. Chromium runs headless
in a process group of its own, on that page; the test waits for the report (bounded), asserts
on it and on what the server saw, then kills the whole group.

Needs a Chromium binary (``apt-get install chromium``); without one the test skips with a
reason starting "needs ", which CI turns into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_ws
from trio_ws.http import Headers, Request, Response

BROWSER_START = 60  # seconds: Chromium's first start on a slow machine, page and report included
MAX_SIZE = 4 * 2**20

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>trio_ws interop</title></head><body><script>
"use strict";
const base = `ws://127.0.0.1:${location.port}`;

function open(path, protocols) {
  return new Promise((resolve, reject) => {
    const ws = protocols === undefined ? new WebSocket(base + path)
                                       : new WebSocket(base + path, protocols);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`could not open ${path}`));
  });
}

function next(ws) {
  return new Promise((resolve, reject) => {
    ws.onmessage = (event) => resolve(event.data);
    ws.onclose = (event) => reject(new Error(`closed (${event.code}) awaiting a message`));
  });
}

function closed(ws) {
  return new Promise((resolve) => {
    ws.onclose = (event) =>
      resolve({code: event.code, reason: event.reason, wasClean: event.wasClean});
  });
}

function same(a, b) {
  if (typeof a === "string" || typeof b === "string") return a === b;
  const x = new Uint8Array(a), y = new Uint8Array(b);
  return x.length === y.length && x.every((value, i) => value === y[i]);
}

function binary(length, step) {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * step) & 255;
  return bytes.buffer;
}

// The server expects exactly these (tests/test_interop_browser.py: MESSAGES).
const MESSAGES = [
  "hello from chromium",
  "\\u00e9\\u2603\\u{1d11e}".repeat(1000),
  binary(256, 1),
  "chromium and trio_ws agree on permessage-deflate. ".repeat(24000),
  binary(1536 * 1024, 31),
];

async function run() {
  const report = {};
  const ws = await open("/ws/echo", ["chat.v2", "chat.v1"]);
  report.protocol = ws.protocol;
  report.extensions = ws.extensions;
  report.echoes = [];
  for (const message of MESSAGES) {
    const reply = next(ws);
    ws.send(message);
    const data = await reply;
    report.echoes.push({
      type: typeof data === "string" ? "string" : data.constructor.name,
      length: typeof data === "string" ? new TextEncoder().encode(data).length : data.byteLength,
      same: same(message, data),
    });
  }
  const serverClose = closed(ws);
  ws.send("close-me");
  report.serverClose = await serverClose;

  const plain = await open("/ws/echo");
  report.plainProtocol = plain.protocol;
  const reply = next(plain);
  plain.send("again");
  report.plainEcho = await reply;
  const clientClose = closed(plain);
  plain.close(4002, "bye from chromium");
  report.clientClose = await clientClose;
  return report;
}

run().catch((error) => ({error: String(error)})).then(async (report) => {
  const ws = await open("/ws/report");
  ws.send(JSON.stringify(report));
});
</script></body></html>
"""

MESSAGES: list[str | bytes] = [
    "hello from chromium",
    "é☃𝄞" * 1000,
    bytes(range(256)),
    "chromium and trio_ws agree on permessage-deflate. " * 24000,
    bytes((i * 31) & 255 for i in range(1536 * 1024)),
]
COMPRESSIBLE = 3


@pytest.fixture
def chromium_binary() -> str:
    """Chromium's binary (a sync fixture: a skip raised in a trio test loses its reason)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if (binary := shutil.which(name)) is not None:
            return binary
    pytest.skip(
        "needs Chromium for the browser interop test: `apt-get install chromium` "
        "(or chromium-browser / google-chrome on PATH)"
    )


class Site:
    """The page, the echo endpoint and the report endpoint, and what each saw."""

    def __init__(self) -> None:
        self.server: trio_ws.Server | None = None
        self.page_requested_at: float | None = None
        self.echo_connections: list[dict[str, Any]] = []
        self.report: dict[str, Any] | None = None
        self.reported = trio.Event()

    def process_request(self, ws: trio_ws.ServerConnection, request: Request) -> Response | None:
        if request.path == "/page":
            self.page_requested_at = trio.current_time()
            return Response(
                200,
                "OK",
                Headers([("Content-Type", "text/html; charset=utf-8")]),
                PAGE.encode(),
            )
        if request.path in ("/ws/echo", "/ws/report"):
            return None
        return ws.respond(404, "not found\n")  # /favicon.ico

    async def handler(self, ws: trio_ws.ServerConnection) -> None:
        if ws.request.path == "/ws/report":
            self.report = json.loads(str(await ws.recv()))
            self.reported.set()
            return
        await self._echo(ws)

    async def _echo(self, ws: trio_ws.ServerConnection) -> None:
        assert self.server is not None
        seen: dict[str, Any] = {
            "offered": ws.request.headers.get("Sec-WebSocket-Extensions"),
            "accepted": ws.response.headers.get("Sec-WebSocket-Extensions"),
            "subprotocol": ws.subprotocol,
            "received": [],
            "wire_bytes": [],
            "closed": None,
        }
        self.echo_connections.append(seen)
        try:
            while True:
                read_before = self.server.stats.bytes_in
                message = await ws.recv()
                if message == "close-me":
                    await ws.aclose(4001, "bye from trio_ws")
                    return
                seen["wire_bytes"].append(self.server.stats.bytes_in - read_before)
                seen["received"].append(message)
                await ws.send(message)
        except trio_ws.ConnectionClosed as exc:
            seen["closed"] = (exc.code, exc.reason)


@asynccontextmanager
async def run_chromium(
    binary: str, url: str, home: Path, escaped: list[int]
) -> AsyncGenerator[trio.Process, None]:
    """Headless Chromium on ``url``, in a process group of its own, killed whole at the end.

    Everything it writes goes under ``home`` (its HOME, its profile, its log), so that every
    process it starts names ``home`` on its command line: :func:`survivors` finds them. Its
    crash handlers leave the group (they call setsid()) but exit when the browser dies; any
    process still alive then is killed by PID. (``--disable-crashpad-for-testing`` would keep
    them from starting, but makes Chromium 156's network service crash.)
    """
    command = [
        binary,
        "--headless=new",
        "--no-sandbox",  # as root in a container there is no user namespace for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers have a small /dev/shm
        "--no-first-run",
        "--no-default-browser-check",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--disable-sync",
        "--disable-breakpad",
        f"--user-data-dir={home / 'profile'}",
        url,
    ]
    async with await trio.open_file(home / "chromium.log", "wb") as log:
        process = await trio.lowlevel.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log.fileno(),
            stderr=log.fileno(),
            start_new_session=True,
            env={**os.environ, "HOME": str(home)},
        )
    try:
        yield process
    finally:
        # The group: the browser, its zygotes and renderers, not only the launcher's PID.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with trio.move_on_after(10, shield=True):
            await process.wait()
            # SIGKILL takes effect asynchronously, and the crash handlers exit on their own:
            # poll the OS (there is nothing of ours to wait on).
            for _ in range(200):
                if not survivors(home):
                    break
                await trio.sleep(0.05)
        # Whatever is left escaped the group: kill it by PID, and let the test fail on it.
        escaped.extend(survivors(home))
        for pid in escaped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def first_of(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    """Wait, then cancel ``scope``: the other waits in it are over too."""
    await wait()
    scope.cancel()


def survivors(home: Path) -> list[int]:
    """PIDs of live processes with ``home`` on their command line."""
    needle = str(home).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:  # a zombie is dead, only not yet reaped
                    found.append(int(entry.name))
    return found


async def test_chromium_talks_to_a_trio_ws_server(chromium_binary: str, tmp_path: Path) -> None:
    """Chromium's WebSocket, offered a subprotocol and not, exchanges text, ArrayBuffer and
    1.5 MiB messages with trio_ws.serve, negotiates permessage-deflate (a compressible
    megabyte arrives small), sees the server's close code and reason, and its own close
    code and reason reach the handler."""
    site = Site()
    home = tmp_path / "chromium"
    home.mkdir()
    escaped: list[int] = []
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_ws.serve,
                site.handler,
                "127.0.0.1",
                0,
                process_request=site.process_request,
                subprotocols=["chat.v1"],
                max_size=MAX_SIZE,
            )
        )
        site.server = server
        async with run_chromium(
            chromium_binary, f"http://127.0.0.1:{server.port}/page", home, escaped
        ) as chromium:
            # Until the report comes or Chromium exits (a crash), whichever is first.
            with trio.move_on_after(BROWSER_START):
                async with trio.open_nursery() as waiting:
                    waiting.start_soon(first_of, site.reported.wait, waiting.cancel_scope)
                    waiting.start_soon(first_of, chromium.wait, waiting.cancel_scope)
            exited = chromium.returncode
        server.cancel_scope.cancel()
    if site.report is None:
        log = (home / "chromium.log").read_text(errors="replace")[-3000:]
        why = f"Chromium exited ({exited})" if exited is not None else f"{BROWSER_START} s passed"
        pytest.fail(f"no report from the page: {why}; Chromium's log ends:\n{log}")
    assert site.page_requested_at is not None  # the page came from process_request
    assert escaped == [], "Chromium processes outlived its process group and the wait"
    assert chromium.returncode == -signal.SIGKILL  # it ran until killed

    report = site.report
    assert report is not None
    assert "error" not in report, report
    # Chromium's view.
    assert report["protocol"] == "chat.v1"
    assert report["extensions"].startswith("permessage-deflate")
    assert report["echoes"] == [
        {
            "type": "string" if isinstance(m, str) else "ArrayBuffer",
            "length": len(m.encode() if isinstance(m, str) else m),
            "same": True,
        }
        for m in MESSAGES
    ]
    assert report["serverClose"] == {"code": 4001, "reason": "bye from trio_ws", "wasClean": True}
    assert report["plainProtocol"] == ""
    assert report["plainEcho"] == "again"
    # The reason Chromium shows is the one in the server's answering close frame, which trio_ws
    # leaves empty (RFC 6455 §5.5.1 asks only for the code); the handler's view is below.
    assert report["clientClose"]["code"] == 4002
    assert report["clientClose"]["wasClean"] is True

    # The server's view.
    first, plain = site.echo_connections
    assert first["offered"].startswith("permessage-deflate")  # Chromium offers it by default
    assert first["accepted"].startswith("permessage-deflate")
    assert first["accepted"] == report["extensions"]
    assert first["subprotocol"] == "chat.v1"
    assert first["received"] == MESSAGES
    assert first["wire_bytes"][COMPRESSIBLE] < len(MESSAGES[COMPRESSIBLE]) // 20
    assert first["closed"] is None  # the handler closed: no ConnectionClosed
    assert plain["subprotocol"] is None
    assert plain["received"] == ["again"]
    assert plain["closed"] == (4002, "bye from chromium")
