"""trio_ws.workers and `serve --workers N`: real processes on 127.0.0.1, real signals.

Every wait is bounded (trio.fail_after); nothing sleeps to synchronise: the tests read the
supervisor's log lines and the messages the workers send. Every supervisor the CLI tests start
leads a process group of its own, with its workers in it: the group is killed by its id when
the test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncGenerator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

import trio_ws
from trio_ws.client import ClientConnection
from trio_ws.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from trio_ws.workers import Supervisor, WorkerStartError, supervise

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT spreads on Linux")

ROOT = Path(__file__).resolve().parent.parent
WAIT = 15  # seconds any one expected step may take: starting Python processes is the slow part
CLIENTS = 1_000
OPENING_AT_ONCE = 100  # opening handshakes in flight at once
NEEDED_FDS = 2 * CLIENTS + 500  # this process's clients, with room for the rest
HANDLERS = '''
"""Handlers for tests/test_workers.py."""

import os
import time


async def pid(ws):
    """Say which worker serves this connection, then echo."""
    await ws.send(f"pid {os.getpid()}")
    async for message in ws:
        await ws.send(message)


async def frozen(ws):
    """Block the worker's event loop: only SIGKILL ends it."""
    await ws.send(f"pid {os.getpid()}")
    await ws.recv()
    time.sleep(3600)
'''


@pytest.fixture
def handlers_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding handlers.py, made the current one: workers import from it."""
    (tmp_path / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    monkeypatch.chdir(tmp_path)
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", path)  # workers and supervisors import this trio_ws
    return tmp_path


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Room for CLIENTS sockets here (and in the children, which inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < NEEDED_FDS:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {NEEDED_FDS} for {CLIENTS:,} clients")
    if soft == resource.RLIM_INFINITY or soft >= NEEDED_FDS:
        yield
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (NEEDED_FDS, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Lines:
    """The lines a child writes on a pipe, read as the test asks for them."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._data = b""
        self.lines: list[str] = []
        self._seen = 0

    async def expect(self, pattern: str) -> re.Match[str]:
        """Wait for a line (after the last one matched) that matches ``pattern``."""
        with trio.fail_after(WAIT):
            while True:
                for index in range(self._seen, len(self.lines)):
                    if match := re.search(pattern, self.lines[index]):
                        self._seen = index + 1
                        return match
                self._seen = len(self.lines)
                if not await self._read():
                    raise AssertionError(f"no line matches {pattern!r}: {self.lines}")

    async def read_to_end(self) -> list[str]:
        with trio.fail_after(WAIT):
            while await self._read():
                pass
        return self.lines

    async def _read(self) -> bool:
        chunk = await self._stream.receive_some(65536)
        *complete, self._data = (self._data + chunk).split(b"\n")
        self.lines += [line.decode() for line in complete]
        return bool(chunk)


@asynccontextmanager
async def cli_supervisor(
    *args: str,
) -> AsyncGenerator[tuple[trio.Process, Lines, Lines], None]:
    """`python -m trio_ws serve ARGS` as the leader of a new process group; yields it, its
    stdout and its stderr. Its group (the workers with it) is killed by id at the end."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_ws", "serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        yield process, Lines(process.stdout), Lines(process.stderr)
    finally:
        with contextlib.suppress(ProcessLookupError):  # every process of it is gone already
            os.killpg(process.pid, signal.SIGKILL)  # the group's id is the leader's pid
        with trio.CancelScope(shield=True):
            await process.wait()
            await process.stdout.aclose()
            await process.stderr.aclose()


async def exit_status(process: trio.Process) -> int:
    with trio.fail_after(WAIT):
        return await process.wait()


async def open_clients(
    nursery: trio.Nursery, uri: str, count: int
) -> list[tuple[ClientConnection, int]]:
    """Open ``count`` connections at once (OPENING_AT_ONCE handshakes at a time); return each
    with the pid its worker reported."""
    clients: list[tuple[ClientConnection, int]] = []
    opening = trio.Semaphore(OPENING_AT_ONCE)

    async def one() -> None:
        async with opening:
            ws: ClientConnection = await nursery.start(
                partial(trio_ws.connect_in, uri, ping_interval=None)
            )
            clients.append((ws, await worker_pid(ws)))

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as tasks:
            for _ in range(count):
                tasks.start_soon(one)
    return clients


async def worker_pid(ws: ClientConnection) -> int:
    greeting = await ws.recv()
    assert isinstance(greeting, str) and greeting.startswith("pid "), greeting
    return int(greeting[4:])


async def echo_all(clients: list[ClientConnection], message: str) -> None:
    """Every client sends ``message`` and gets it back."""

    async def one(ws: ClientConnection) -> None:
        await ws.send(message)
        assert await ws.recv() == message

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as tasks:
            for ws in clients:
                tasks.start_soon(one, ws)


async def close_codes(clients: list[ClientConnection]) -> Counter[int | None]:
    """Wait for each client's connection to end; count the close codes (1006: dropped)."""
    codes: Counter[int | None] = Counter()

    async def one(ws: ClientConnection) -> None:
        try:
            message = await ws.recv()
        except ConnectionClosed as closed:
            codes[closed.code] += 1
        else:
            raise AssertionError(f"expected the connection to close, got {message!r}")

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as tasks:
            for ws in clients:
                tasks.start_soon(one, ws)
    return codes


# -- the command line ------------------------------------------------------------------------


@pytest.mark.usefixtures("handlers_dir", "many_fds")
@pytest.mark.parametrize("sharing", ["--reuse-port", "--no-reuse-port"])
async def test_two_workers_share_clients_survive_a_kill_and_drain_with_1001(sharing: str) -> None:
    """`serve --workers 2`: 1,000 concurrent clients are served by both workers; SIGKILL to
    one drops only its clients (the other's keep echoing) and a new worker takes its place
    and serves new clients; SIGTERM to the supervisor closes every client with 1001 and it
    exits 0 within its drain deadline."""
    close_timeout = 1.0  # so the drain deadline, before SIGKILL, is 2 s
    args = ["handlers:pid", "--workers", "2", "--host", "127.0.0.1", "--port", "0", sharing]
    async with (
        cli_supervisor(*args, "--close-timeout", str(close_timeout)) as (process, out, err),
        trio.open_nursery() as nursery,
    ):
        port = int((await out.expect(r"^Serving on ws://127\.0\.0\.1:(\d+) \(2 workers\)$"))[1])
        started = {int((await err.expect(r"^worker \d \(pid (\d+)\) listening"))[1]) for _ in "01"}
        uri = f"ws://127.0.0.1:{port}/"

        clients = await open_clients(nursery, uri, CLIENTS)
        per_pid = Counter(pid for _, pid in clients)
        assert set(per_pid) == started, per_pid
        assert all(count > 0 for count in per_pid.values()), per_pid  # both get connections
        await echo_all([ws for ws, _ in clients], "hello")

        victim, survivor = sorted(per_pid)
        os.kill(victim, signal.SIGKILL)
        dropped = [ws for ws, pid in clients if pid == victim]
        kept = [ws for ws, pid in clients if pid == survivor]
        assert await close_codes(dropped) == {1006: per_pid[victim]}
        await echo_all(kept, "still here")

        await err.expect(rf"^worker \d \(pid {victim}\) exited with signal SIGKILL; restarting")
        reborn = int((await err.expect(r"^worker \d \(pid (\d+)\) listening on port"))[1])
        assert reborn not in (victim, survivor)
        newcomers: list[tuple[ClientConnection, int]] = []
        with trio.fail_after(WAIT):
            while reborn not in (pid for _, pid in newcomers):
                newcomers += await open_clients(nursery, uri, 10)
        assert {pid for _, pid in newcomers} <= {survivor, reborn}
        open_now = kept + [ws for ws, _ in newcomers]
        await echo_all(open_now, "after the restart")

        process.send_signal(signal.SIGTERM)
        start = trio.current_time()
        assert await close_codes(open_now) == {1001: len(open_now)}
        assert await exit_status(process) == 0
        # A bound on shutdown behaviour, not a performance figure: deadline plus a margin.
        assert trio.current_time() - start < 2 * close_timeout + 3
        assert not [line for line in await err.read_to_end() if "killing" in line]
        nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("handlers_dir")
async def test_a_handler_that_cannot_be_imported_stops_at_once_without_restarts() -> None:
    """A worker that exits with status 2 before listening (its handler cannot be loaded)
    stops the supervisor: exit 2, the import error said once, no restart."""
    args = ["no_such_module:echo", "--workers", "2", "--host", "127.0.0.1", "--port", "0"]
    async with cli_supervisor(*args) as (process, out, err):
        assert await exit_status(process) == 2
        errors = "\n".join(await err.read_to_end())
        assert await out.read_to_end() == []
    assert errors.count("cannot import 'no_such_module': ModuleNotFoundError") == 1, errors
    assert "cannot be loaded (see its error above); not restarting" in errors
    assert "restarting in" not in errors
    assert "Traceback" not in errors


# -- the Python API --------------------------------------------------------------------------


@pytest.mark.usefixtures("handlers_dir")
async def test_supervise_reports_its_workers_and_aclose_drains_them_with_1001() -> None:
    """supervise() reports once every worker listens; aclose() closes each client with 1001,
    and when supervise() has returned no worker process is left."""
    async with trio.open_nursery() as nursery:
        supervisor: Supervisor = await nursery.start(
            partial(supervise, "handlers:pid", workers=2, host="127.0.0.1", port=0)
        )
        assert supervisor.reuse_port
        pids = supervisor.pids
        assert len(set(pids)) == 2
        async with trio_ws.connect(f"ws://127.0.0.1:{supervisor.port}/") as ws:
            assert await worker_pid(ws) in pids
            with trio.fail_after(WAIT):
                await supervisor.aclose()
            with pytest.raises(ConnectionClosedOK) as closed:
                await ws.recv()
            assert closed.value.code == 1001
    assert supervisor.pids == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # reaped by trio, not merely exited
            os.kill(pid, 0)


@pytest.mark.usefixtures("handlers_dir")
async def test_cancelling_supervise_kills_a_worker_stuck_past_the_drain_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker whose event loop is blocked cannot act on SIGTERM: it gets SIGKILL at
    drain_timeout, and cancelling supervise() returns soon after."""
    drain_timeout = 1.0
    supervising = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[Supervisor]) -> None:
        with supervising:
            await supervise(
                "handlers:frozen",
                workers=1,
                host="127.0.0.1",
                port=0,
                drain_timeout=drain_timeout,
                task_status=task_status,
            )

    async with trio.open_nursery() as nursery:
        supervisor: Supervisor = await nursery.start(run)
        async with trio_ws.connect(f"ws://127.0.0.1:{supervisor.port}/") as ws:
            pid = await worker_pid(ws)
            await ws.send("freeze")  # the worker blocks in time.sleep() from now on
            start = trio.current_time()
            supervising.cancel()
            with trio.fail_after(WAIT), pytest.raises(ConnectionClosedError) as closed:
                await ws.recv()
            assert closed.value.code == 1006  # killed: no close frame
    assert trio.current_time() - start < drain_timeout + 3
    assert f"worker 0 (pid {pid}) still running after 1 s: killing it" in caplog.messages


@pytest.mark.usefixtures("handlers_dir")
async def test_a_worker_failing_at_start_up_is_given_up_after_start_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Workers that exit before listening (here: the port is taken without SO_REUSEPORT) are
    retried with backoff, start_attempts times in all, then supervise() raises."""
    caplog.set_level(logging.WARNING, "trio_ws.workers")
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(WAIT), pytest.raises(WorkerStartError) as failed:
            await supervise(
                "handlers:pid",
                workers=2,
                host="127.0.0.1",
                port=port,
                restart_backoff=0.01,
                start_attempts=3,
            )
    assert (failed.value.index, failed.value.exit_status) == (0, 1)
    assert "exited with status 1 before listening, 3 times in a row; giving up" in str(
        failed.value
    )
    restarts = [m for m in caplog.messages if "before listening; restarting in" in m]
    assert len(restarts) == 2, caplog.messages


async def test_supervise_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="MODULE:HANDLER"):
        await supervise("handlers", workers=2)
    with pytest.raises(ValueError, match="workers=0 is out of range"):
        await supervise("handlers:pid", workers=0)
    with pytest.raises(TypeError, match="drain_timeout must be a number"):
        await supervise("handlers:pid", workers=1, drain_timeout="1")  # type: ignore[arg-type]
