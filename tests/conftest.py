"""Shared fixtures: connected pairs over memory streams, file-descriptor counts."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
import trustme

from trio_ws._handshake import ClientHandshake, Opened, ServerHandshake
from trio_ws._options import connection_options
from trio_ws._session import session
from trio_ws._uri import parse_uri
from trio_ws.client import ClientConnection
from trio_ws.connection import Connection
from trio_ws.http import Headers
from trio_ws.server import ServerConnection

C = TypeVar("C", bound=Connection)

_DEFAULTS: dict[str, Any] = {
    "close_timeout": 10,
    "ping_interval": None,
    "ping_timeout": 20,
    "max_size": 2**20,
    "max_queue": 16,
}


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


async def _handshake(
    client_stream: trio.abc.Stream,
    server_stream: trio.abc.Stream,
    compression: str | None,
    client_max_size: int | None,
    server_max_size: int | None,
    subprotocols: tuple[str, ...] = (),
) -> tuple[Any, Any]:
    client = ClientHandshake(
        parse_uri("ws://test.invalid/"),
        subprotocols=subprotocols,
        compression=compression,
        max_size=client_max_size,
        headers=Headers(),
    )
    server = ServerHandshake(server_header=None)
    await client_stream.send_all(client.request_bytes)
    request = None
    while request is None:
        request = server.receive_data(await server_stream.receive_some(65536))
    response, server_opened = server.accept(
        subprotocols=subprotocols,
        compression=compression,
        max_size=server_max_size,
        headers=Headers(),
    )
    await server_stream.send_all(response)
    client_opened = None
    while client_opened is None:
        client_opened = client.receive_data(await client_stream.receive_some(65536))
    return client_opened, server_opened


@asynccontextmanager
async def connection_pair(
    *,
    compression: str | None = None,
    client_options: dict[str, Any] | None = None,
    server_options: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncGenerator[tuple[ClientConnection, ServerConnection], None]:
    """A client and a server connection joined by in-memory streams, both sessions running.

    ``options`` apply to both sides (keepalive is off unless ``ping_interval`` is given);
    ``client_options``/``server_options`` override per side. On exit both sessions end as a
    normal exit does (close with 1000).
    """
    client_stream, server_stream = trio.testing.memory_stream_pair()
    common = {**_DEFAULTS, **options}
    c_opts = {**common, **(client_options or {})}
    s_opts = {**common, **(server_options or {})}
    client_opened, server_opened = await _handshake(
        client_stream, server_stream, compression, c_opts["max_size"], s_opts["max_size"]
    )
    logger = logging.getLogger("tests")
    client = open_connection(ClientConnection, client_stream, client_opened, logger, **c_opts)
    server = open_connection(ServerConnection, server_stream, server_opened, logger, **s_opts)
    async with session(client), session(server):
        yield client, server


def open_connection(
    cls: type[C], stream: trio.abc.Stream, opened: Opened, logger: logging.Logger, **options: Any
) -> C:
    """A ``cls`` connection over ``stream`` after ``opened``, with connect()'s ``options``."""
    ws = cls(
        stream,
        is_client=cls is ClientConnection,
        options=connection_options(logger=logger, **options),
    )
    ws._open(opened)
    return ws


def pair_side(pair: tuple[Connection, Connection], side: str) -> tuple[Connection, Connection]:
    """(this side, the other side) for a test parametrized over "client" and "server"."""
    client, server = pair
    return (client, server) if side == "client" else (server, client)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """With TRIO_WS_CI=1 (.ci/run), a test skipped for a missing component ("needs ...") fails:
    CI installs them all and must run every test that uses one (Node's ws, Chromium)."""
    report: pytest.TestReport = yield
    if (
        os.environ.get("TRIO_WS_CI") == "1"
        and report.skipped
        and not hasattr(report, "wasxfail")
        and isinstance(report.longrepr, tuple)
    ):
        reason = report.longrepr[2].removeprefix("Skipped: ")
        if reason.startswith("needs "):
            report.outcome = "failed"
            report.longrepr = f"TRIO_WS_CI=1 and a component CI installs is missing: {reason}"
    return report


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """connect() takes its proxy from the environment by default: the tests reach 127.0.0.1
    directly, whatever proxy the machine running them names (tests of proxies set their own)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A certificate authority for the module's TLS tests."""
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server's TLS context, its certificate valid for 127.0.0.1, ::1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client's TLS context that trusts ``ca``."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(params=["client", "server"])
def side(request: pytest.FixtureRequest) -> str:
    """Run a test once from each side of the connection."""
    return str(request.param)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many cancellation points each sweep tried (tests/test_sweep.py)."""
    from tests.sweeping import SWEPT

    if SWEPT:
        terminalreporter.section("cancellation points swept")
        for name, points in SWEPT.items():
            terminalreporter.write_line(f"{points:6,d}  {name}")
        terminalreporter.write_line(f"{sum(SWEPT.values()):6,d}  in all")
