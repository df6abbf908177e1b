"""trio_ws behind a real nginx, configured by the deployment guide's own nginx.conf.

How this works: each test starts two trio_ws servers on 127.0.0.1 (ports picked by the
system), copies ``docs/deployment/nginx.conf`` into a temporary prefix with only its three
port numbers replaced (nginx's 8080 by a free port, the upstreams' 8001 and 8002 by the
servers'; if those lines change, or another port appears, every test fails loudly), and runs
``nginx -p <prefix> -c <prefix>/nginx.conf -g 'daemon off;' -e stderr`` in a process group
of its own. Each server's handler first sends its own name, so a client knows which server
nginx picked. When the test ends, nginx's process group, by its id, gets SIGTERM
(master and workers exit at once), then SIGKILL if the master is still there.

nginx's round robin is kept per worker process (``worker_processes auto``: one per CPU), and
each worker starts with the first server; so a test that needs nginx to pick both servers
opens up to one connection more than there are CPUs online: then some worker has handled
two in a row.

The clients connect from 127.0.0.2, a loopback address that is not nginx's: trio_ws walks
X-Forwarded-For from the right past every trusted address, so a client on 127.0.0.1, nginx's
own address, would be taken for a proxy and the entry it made up believed.

Needs nginx (on PATH or /usr/sbin/nginx); without it the tests skip with a reason starting
"needs nginx", which CI turns into a failure. Linux only (127.0.0.2, process groups).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_ws

CONF = Path(__file__).parent.parent / "docs" / "deployment" / "nginx.conf"
WAIT = 10  # seconds, for any one step with nginx
TEST_LIMIT = 30  # seconds, for a whole test: a hang fails, it does not stall the run
CLIENT_HOST = "127.0.0.2"
# nginx's "worker_processes auto" starts one worker per online CPU (at most): with one
# connection more than that, some worker has handled two and picked both servers.
TRIES = os.sysconf("SC_NPROCESSORS_ONLN") + 1
NAMES = ("first", "second")  # the upstream servers, in nginx.conf's order


@pytest.fixture
def nginx() -> str:
    """The nginx binary: on PATH, or where Debian puts it (/usr/sbin is not on every PATH)."""
    binary = shutil.which("nginx")
    if binary is None and os.access("/usr/sbin/nginx", os.X_OK):
        binary = "/usr/sbin/nginx"
    if binary is None:
        pytest.skip("needs nginx (on PATH or /usr/sbin/nginx) for the reverse-proxy tests")
    return binary


def configure(nginx_port: int, upstream_ports: list[int]) -> str:
    """docs/deployment/nginx.conf with its three ports replaced, and nothing else."""
    text = CONF.read_text()
    first, second = upstream_ports
    replacements = [
        ("listen 8080;", f"listen {nginx_port};"),
        ("server 127.0.0.1:8001;", f"server 127.0.0.1:{first};"),
        ("server 127.0.0.1:8002;", f"server 127.0.0.1:{second};"),
    ]
    for old, new in replacements:
        count = text.count(old)
        assert count == 1, (
            f"{CONF} has {old!r} {count} times, not once: tests/test_nginx.py must follow it"
        )
        text = text.replace(old, new)
    # What nginx reads (comments left out) must now name our ports and no other.
    directives = "\n".join(line.partition("#")[0] for line in text.splitlines())
    assert re.findall(r"^\s*listen\s+([^;]*);", directives, re.MULTILINE) == [str(nginx_port)]
    assert re.findall(r"^\s*server\s+([^\s{;]+)\s*;", directives, re.MULTILINE) == [
        f"127.0.0.1:{first}",
        f"127.0.0.1:{second}",
    ]
    for port in ("8080", "8001", "8002"):
        assert port not in directives, f"{CONF} uses port {port} beyond the three replaced"
    return text


def free_port() -> int:
    """A TCP port free on every IPv4 address now (nginx's ``listen PORT`` binds them all)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def run_nginx(binary: str, prefix: Path, conf: str, port: int) -> AsyncGenerator[Path, None]:
    """nginx with ``conf`` under ``prefix``, until its port takes connections; yields its
    error log. Stopped, workers included, when the block exits."""
    (prefix / "logs").mkdir()
    conf_file = prefix / "nginx.conf"
    conf_file.write_text(conf)
    stderr_log = prefix / "stderr.log"
    command = [binary, "-p", f"{prefix}/", "-c", str(conf_file), "-g", "daemon off;"]
    with stderr_log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*command, "-e", "stderr"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group: the workers are stopped with it
        )
    try:
        with trio.fail_after(WAIT):
            while True:
                if process.poll() is not None:
                    raise AssertionError(
                        f"nginx exited with {process.returncode}: {stderr_log.read_text()}"
                    )
                try:
                    probe = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    # Another process's port: there is no event to wait on, only polling.
                    await trio.sleep(0.01)
                else:
                    await probe.aclose()
                    break
        yield prefix / "logs" / "error.log"
    finally:
        # The group we created, by its id, signalled only while its leader (the master) is
        # not reaped yet, so that the id cannot belong to anything else: SIGTERM, on which
        # nginx exits at once, then SIGKILL if the master is still there.
        with trio.move_on_after(WAIT, shield=True):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if process.returncode is None:
                    with suppress(ProcessLookupError):
                        os.killpg(process.pid, sig)
                with trio.move_on_after(WAIT / 2):
                    await process.wait()


class Upstream:
    """One trio_ws server behind nginx: sends its name, then echoes; "close" closes with
    4001, "ping" pings the client. Records each connection and how its peer closed it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server: trio_ws.Server | None = None
        self.connections: list[trio_ws.ServerConnection] = []
        self.rtts: list[float] = []
        self._closed, self.closes = trio.open_memory_channel[trio_ws.ConnectionClosed](math.inf)

    @property
    def stats(self) -> trio_ws.Stats:
        assert self.server is not None
        return self.server.stats

    async def __call__(self, ws: trio_ws.ServerConnection) -> None:
        self.connections.append(ws)
        try:
            await ws.send(self.name)
            while True:
                message = await ws.recv()
                if message == "close":
                    await ws.aclose(4001, f"bye from {self.name}")
                    return
                if message == "ping":
                    self.rtts.append(await ws.ping())
                    await ws.send("pinged")
                    continue
                await ws.send(message)
        except trio_ws.ConnectionClosed as exc:
            self._closed.send_nowait(exc)


@dataclass
class Deployment:
    """Two servers behind nginx, as the deployment guide sets them up."""

    uri: str
    upstreams: dict[str, Upstream]
    error_log: Path

    def connect(self, **options: Any) -> trio_ws.connect:
        """A client of nginx, from CLIENT_HOST."""
        return trio_ws.connect(self.uri, local_address=CLIENT_HOST, **options)


@asynccontextmanager
async def deployed(
    nginx: str, prefix: Path, **serve_options: Any
) -> AsyncGenerator[Deployment, None]:
    """Two servers, started with ``serve_options``, and nginx in front of them."""
    upstreams = {name: Upstream(name) for name in NAMES}
    async with trio.open_nursery() as nursery:
        ports = []
        for upstream in upstreams.values():
            server = await nursery.start(
                partial(trio_ws.serve, upstream, "127.0.0.1", 0, **serve_options)
            )
            upstream.server = server
            ports.append(server.port)
        port = free_port()
        async with run_nginx(nginx, prefix, configure(port, ports), port) as error_log:
            with trio.fail_after(TEST_LIMIT):
                yield Deployment(f"ws://127.0.0.1:{port}/", upstreams, error_log)
        nursery.cancel_scope.cancel()


async def test_messages_flow_both_ways_through_nginx(nginx: str, tmp_path: Path) -> None:
    """Text, binary, empty and 1 MiB messages (the default max_size) sent through nginx on two
    connections at once reach a server and come back as sent."""
    messages: list[str | bytes] = [
        "hello through nginx",
        "é☃𝄞" * 1000,
        bytes(range(256)),
        b"",
        os.urandom(2**19).hex(),  # 1 MiB of text that does not compress
        os.urandom(2**20),
    ]
    assert max(len(message) for message in messages) == 2**20
    async with (
        deployed(nginx, tmp_path) as deployment,
        deployment.connect() as one,
        deployment.connect() as two,
    ):
        assert await one.recv() in NAMES
        assert await two.recv() in NAMES
        for message in messages:
            await one.send(message)
            await two.send(message)
            assert await one.recv() == message
            assert await two.recv() == message


async def test_nginx_spreads_connections_over_both_servers(nginx: str, tmp_path: Path) -> None:
    """Within TRIES connections (CPUs online + 1) nginx hands some to each server, and each
    server's handler ran for exactly the connections whose client it named itself to."""
    seen: list[str] = []
    async with deployed(nginx, tmp_path) as deployment:
        while set(seen) != set(NAMES):
            assert len(seen) < TRIES, f"nginx sent {TRIES} connections to {seen}"
            async with deployment.connect() as ws:
                seen.append(str(await ws.recv()))
        for name, upstream in deployment.upstreams.items():
            assert len(upstream.connections) == seen.count(name)
            assert upstream.stats.connections_total == seen.count(name)


async def test_permessage_deflate_is_negotiated_end_to_end_through_nginx(
    nginx: str, tmp_path: Path
) -> None:
    """The client's offer of permessage-deflate reaches the server through nginx, the server's
    answer reaches the client, and a compressible message arrives compressed at the server."""
    compressible = "trio_ws behind nginx compresses end to end. " * 20000
    async with deployed(nginx, tmp_path) as deployment, deployment.connect() as ws:
        upstream = deployment.upstreams[str(await ws.recv())]
        before = upstream.stats.bytes_in  # the handler waits in recv(): nothing is in flight
        await ws.send(compressible)
        assert await ws.recv() == compressible
        on_the_wire = upstream.stats.bytes_in - before
        [seen] = upstream.connections
        offered = seen.request.headers.get("Sec-WebSocket-Extensions")
        answered = seen.response.headers.get("Sec-WebSocket-Extensions")
        received = ws.response.headers.get("Sec-WebSocket-Extensions")
    assert offered is not None and offered.startswith("permessage-deflate")
    assert answered is not None and answered.startswith("permessage-deflate")
    assert received == answered
    assert 0 < on_the_wire < len(compressible) // 20


async def test_trusted_nginx_names_the_client_and_a_spoofed_entry_is_ignored(
    nginx: str, tmp_path: Path
) -> None:
    """With trusted_proxies=["127.0.0.1"], client_address is the address nginx got the
    connection from (port 0), not the X-Forwarded-For entry the client made up; remote_address
    stays nginx's own socket."""
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    async with (
        deployed(nginx, tmp_path, trusted_proxies=["127.0.0.1"]) as deployment,
        deployment.connect(additional_headers=spoofed) as ws,
    ):
        [seen] = deployment.upstreams[str(await ws.recv())].connections
        client = ws.local_address
    assert client is not None and client[0] == CLIENT_HOST
    # nginx appended the address it saw to the client's header: the server had both.
    assert seen.request.headers.get_all("X-Forwarded-For") == [f"203.0.113.9, {CLIENT_HOST}"]
    assert seen.client_address == (CLIENT_HOST, 0)
    assert seen.remote_address is not None and seen.remote_address[0] == "127.0.0.1"


async def test_without_trusted_proxies_client_address_is_nginx(nginx: str, tmp_path: Path) -> None:
    """By default X-Forwarded-For is not believed, nginx's entry no more than a spoofed one:
    client_address is remote_address, nginx's socket."""
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    async with (
        deployed(nginx, tmp_path) as deployment,
        deployment.connect(additional_headers=spoofed) as ws,
    ):
        [seen] = deployment.upstreams[str(await ws.recv())].connections
    assert seen.request.headers.get_all("X-Forwarded-For") == [f"203.0.113.9, {CLIENT_HOST}"]
    assert seen.remote_address is not None and seen.remote_address[0] == "127.0.0.1"
    assert seen.client_address == seen.remote_address


async def test_a_stopped_server_is_skipped_by_nginx(nginx: str, tmp_path: Path) -> None:
    """When one server stops (aclose), its client gets 1001 through nginx, and every new
    handshake goes to the other server: nginx tried the stopped one, was refused, and moved on
    without the clients noticing."""
    async with deployed(nginx, tmp_path) as deployment:
        first = deployment.upstreams["first"]
        assert first.server is not None
        first_port = first.server.port
        async with AsyncExitStack() as stack:
            for _ in range(TRIES):
                ws = await stack.enter_async_context(deployment.connect())
                if await ws.recv() == "first":
                    break
            else:
                pytest.fail(f"nginx sent none of {TRIES} connections to the first server")
            await first.server.aclose()
            with pytest.raises(trio_ws.ConnectionClosedOK) as info:
                await ws.recv()
        names = []
        for _ in range(TRIES):
            async with deployment.connect() as ws:
                names.append(await ws.recv())
        error_log = deployment.error_log.read_text()
    assert info.value.code == 1001
    assert names == ["second"] * TRIES
    refused = [
        line
        for line in error_log.splitlines()
        if "Connection refused" in line and f'upstream: "http://127.0.0.1:{first_port}/"' in line
    ]
    assert refused, error_log


async def test_server_close_code_and_reason_reach_the_client_through_nginx(
    nginx: str, tmp_path: Path
) -> None:
    """The handler's close with 4001 and a reason reaches the client's recv() through nginx."""
    async with deployed(nginx, tmp_path) as deployment, deployment.connect() as ws:
        name = str(await ws.recv())
        await ws.send("close")
        with pytest.raises(trio_ws.ConnectionClosedError) as info:
            await ws.recv()
    assert (info.value.code, info.value.reason) == (4001, f"bye from {name}")
    assert (ws.close_code, ws.close_reason) == (4001, f"bye from {name}")


async def test_client_close_code_and_reason_reach_the_server_through_nginx(
    nginx: str, tmp_path: Path
) -> None:
    """The client's close with 4002 and a reason reaches the handler's recv() through nginx,
    and the server's answering close frame comes back with the same code."""
    async with deployed(nginx, tmp_path) as deployment:
        async with deployment.connect() as ws:
            upstream = deployment.upstreams[str(await ws.recv())]
            await ws.aclose(4002, "bye from the client")
        with trio.fail_after(WAIT):
            closed = await upstream.closes.receive()
    assert isinstance(closed, trio_ws.ConnectionClosedError)
    assert (closed.code, closed.reason) == (4002, "bye from the client")
    assert ws.close_code == 4002


async def test_pings_pass_through_nginx_both_ways(nginx: str, tmp_path: Path) -> None:
    """The client's ping gets the server's pong through nginx, and the server's the client's:
    ping() returns the round trip on both sides."""
    async with deployed(nginx, tmp_path) as deployment, deployment.connect() as ws:
        upstream = deployment.upstreams[str(await ws.recv())]
        rtt = await ws.ping()
        await ws.send("ping")
        assert await ws.recv() == "pinged"
    assert 0 <= rtt < WAIT
    [server_rtt] = upstream.rtts
    assert 0 <= server_rtt < WAIT
