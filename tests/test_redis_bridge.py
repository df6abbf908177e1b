"""trio_ws.redis: Redis pub/sub bridged to broadcast(), against a real redis-server.

A session-scoped redis-server runs on 127.0.0.1 and a free port. Two trio_ws servers in one
trio.run stand in for two worker processes (each relays the channel into its own connections);
the example runs as two real worker processes. Redis is killed and restarted under running
relays to check that they log the loss, come back, and relay again.

Synchronising: nursery.start(relay) returns once subscribed; a relay's reconnection is awaited
on its log record (a logging handler sets a trio.Event); a client waits for its handler's
"ready" message, after which its connection is in server.connections. The only polling is for
a redis-server process to accept connections, since it offers nothing to wait on.
"""

from __future__ import annotations

import functools
import gc
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

import trio_ws
from trio_ws.client import Backoff

coredis = pytest.importorskip("coredis", reason="needs coredis: pip install trio-ws[redis]")

from trio_ws.redis import DEFAULT_BACKOFF, publish, relay  # noqa: E402

# coredis 6.9 creates a connection's anyio memory streams in its __init__ and closes them only
# in its run(): a connection that fails to connect is collected with them open, and anyio warns
# from __del__ (ResourceWarning; no file descriptor is involved). Ignored in this module only,
# and collected at the end of each test here (_collect_garbage) so that none surfaces later in
# another module's test.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in.*MemoryObject(Send|Receive)Stream\.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHANNEL = "news"
# Tests reconnect at once: 50 ms between attempts.
FAST = Backoff(initial_delay=0.05, min_delay=0.05, factor=1.0, max_delay=0.05, jitter=0.0)
_START_TIMEOUT = 10.0  # s for a redis-server to accept connections


class RedisServer:
    """A redis-server process on 127.0.0.1:port that a test may kill and start again."""

    def __init__(self, executable: str, port: int) -> None:
        self._executable = executable
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _spawn(self) -> None:
        assert self._process is None
        self._process = subprocess.Popen(
            [
                *(self._executable, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _answers_ping(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self._process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        """Start it and return once it answers PING (polled: redis-server signals nothing)."""
        self._spawn()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._answers_ping():
            assert time.monotonic() < deadline, f"redis-server not up in {_START_TIMEOUT} s"
            time.sleep(0.01)

    async def start_async(self) -> None:
        """start() without blocking trio: the relays under test keep running meanwhile."""
        self._spawn()
        with trio.fail_after(_START_TIMEOUT):
            # Polling, bounded above: redis-server signals nothing to wait on.
            while not await trio.to_thread.run_sync(self._answers_ping):  # noqa: ASYNC110
                await trio.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL: Redis gets no chance to say goodbye, as in a crash."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    yield
    gc.collect()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("needs redis-server: apt-get install redis-server")
    server = RedisServer(executable, _free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


class LogWatch(logging.Handler):
    """The records of trio_ws.redis, and a way to wait for one (records come from trio's
    thread, so a trio.Event can be set from emit())."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()
        self._changed = trio.Event()

    def count(self, text: str, level: int) -> int:
        return sum(r.levelno == level and text in r.getMessage() for r in self.records)

    async def wait_for(self, text: str, level: int, count: int) -> None:
        while self.count(text, level) < count:
            await self._changed.wait()


@pytest.fixture
def log() -> Iterator[LogWatch]:
    watch = LogWatch()
    logger = logging.getLogger("trio_ws.redis")
    level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)


def _connections_of(server: trio_ws.Server) -> Callable[[], Iterable[trio_ws.Connection]]:
    return lambda: server.connections


async def _ready_handler(ws: trio_ws.ServerConnection) -> None:
    await ws.send("ready")  # once a client has it, its connection is in server.connections
    async for _ in ws:  # keep the connection open
        pass


@asynccontextmanager
async def workers(
    nursery: trio.Nursery, url: str, count: int = 2, clients: int = 2
) -> AsyncIterator[list[trio_ws.ClientConnection]]:
    """``count`` servers, each with a relay into its connections, and ``clients`` clients on
    each, all ready; yields the clients. The servers and relays run in ``nursery``."""
    async with AsyncExitStack() as stack:
        connected: list[trio_ws.ClientConnection] = []
        for _ in range(count):
            server: trio_ws.Server = await nursery.start(
                trio_ws.serve, _ready_handler, "127.0.0.1", 0
            )
            await nursery.start(
                functools.partial(relay, url, CHANNEL, _connections_of(server), backoff=FAST)
            )
            for _ in range(clients):
                ws = await stack.enter_async_context(
                    trio_ws.connect(f"ws://127.0.0.1:{server.port}")
                )
                assert await ws.recv() == "ready"
                connected.append(ws)
        yield connected


async def test_published_text_and_bytes_reach_every_client_of_every_worker(
    redis_server: RedisServer,
) -> None:
    """A str published anywhere reaches every client of both servers as text, bytes as
    binary, in order; publish() counts one subscription per relay."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with workers(nursery, redis_server.url) as clients:
                assert await publish(redis_server.url, CHANNEL, "héllo") == 2
                async with coredis.Redis.from_url(redis_server.url) as client:
                    assert await publish(client, CHANNEL, b"\x00\xff") == 2
                    assert await publish(client, CHANNEL, bytearray(b"ba")) == 2
                    assert await publish(client, CHANNEL, memoryview(b"mv")) == 2
                assert len(clients) == 4
                for ws in clients:
                    assert await ws.recv() == "héllo"
                    assert await ws.recv() == b"\x00\xff"
                    assert await ws.recv() == b"ba"
                    assert await ws.recv() == b"mv"
            nursery.cancel_scope.cancel()


async def test_publish_with_a_decoding_client_keeps_bytes_binary(
    redis_server: RedisServer,
) -> None:
    """A publishing client with decode_responses=True changes nothing on the wire."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with workers(nursery, redis_server.url, count=1, clients=1) as [ws]:
                async with coredis.Redis.from_url(
                    redis_server.url, decode_responses=True
                ) as client:
                    assert await publish(client, CHANNEL, b"\x80raw") == 1
                    assert await publish(client, CHANNEL, "text") == 1
                assert await ws.recv() == b"\x80raw"
                assert await ws.recv() == "text"
            nursery.cancel_scope.cancel()


async def test_relay_survives_a_redis_restart_and_what_is_published_meanwhile_is_lost(
    redis_server: RedisServer, log: LogWatch
) -> None:
    """Redis killed under two relays: each logs the loss (WARNING), publishing fails with
    ConnectionError and that message reaches nobody; Redis back on the same port: each relay
    logs that it is back (INFO) and relays again, and nothing crashed meanwhile."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async with workers(nursery, redis_server.url) as clients:
                assert await publish(redis_server.url, CHANNEL, "before") == 2
                for ws in clients:
                    assert await ws.recv() == "before"

                redis_server.kill()
                await log.wait_for("connection lost, reconnecting", logging.WARNING, 2)
                with pytest.raises(ConnectionError, match="cannot publish to 'news'"):
                    await publish(redis_server.url, CHANNEL, "while down")

                await redis_server.start_async()
                await log.wait_for("reconnected", logging.INFO, 2)
                assert await publish(redis_server.url, CHANNEL, "after") == 2
                for ws in clients:
                    # The next message is "after": "while down" was lost, nothing else came.
                    assert await ws.recv() == "after"
                    assert ws.state is trio_ws.State.OPEN
            nursery.cancel_scope.cancel()
    # One WARNING per relay for the outage, however many attempts failed (those log at DEBUG).
    assert log.count("connection lost", logging.WARNING) == 2
    assert log.count("reconnected", logging.INFO) == 2
    assert not [r for r in log.records if r.levelno >= logging.ERROR]


def _tasks_under(task: trio.lowlevel.Task) -> set[trio.lowlevel.Task]:
    found = {task}
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            found |= _tasks_under(child)
    return found


async def test_cancelling_relay_leaves_no_task_and_no_subscription(
    redis_server: RedisServer,
) -> None:
    """After a cancelled relay, no task it started runs anywhere in the process, and Redis
    counts no subscriber on the channel."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    async with coredis.Redis.from_url(redis_server.url) as client:
        with trio.fail_after(10):
            assert await client.ping() == b"PONG"  # this client's own connection tasks run now
            before = _tasks_under(root)
            async with trio.open_nursery() as nursery:
                await nursery.start(relay, redis_server.url, CHANNEL, list)
                assert await client.pubsub_numsub(CHANNEL) == {CHANNEL.encode(): 1}
                assert len(_tasks_under(root) - before) > 1  # relay and coredis's tasks
                nursery.cancel_scope.cancel()
            assert {t.name for t in _tasks_under(root) - before} == set()
            # The cancelled relay unsubscribed before it closed its connection.
            assert await client.pubsub_numsub(CHANNEL) == {CHANNEL.encode(): 0}


async def test_relay_raises_connection_error_when_redis_is_unreachable_at_start() -> None:
    """The first subscription is not retried: a wrong URL fails nursery.start() at once, with
    a plain ConnectionError that hides the password."""
    url = f"redis://:secret@127.0.0.1:{_free_port()}"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConnectionError) as caught:
                await nursery.start(relay, url, CHANNEL, list)
    assert "cannot subscribe to 'news' at redis://:***@127.0.0.1:" in str(caught.value)
    assert "secret" not in str(caught.value)


async def test_publish_raises_connection_error_when_redis_is_unreachable() -> None:
    with trio.fail_after(10), pytest.raises(ConnectionError, match="cannot publish"):
        await publish(f"redis://127.0.0.1:{_free_port()}", CHANNEL, "lost")


async def test_relay_reports_the_users_exception_unwrapped(redis_server: RedisServer) -> None:
    """An exception from the user's connections() ends relay() with that exception itself, not
    wrapped in coredis's ExceptionGroups."""

    def connections() -> list[trio_ws.Connection]:
        raise LookupError("no such room")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ready = trio.Event()

            async def send_once_ready() -> None:
                await ready.wait()
                await publish(redis_server.url, CHANNEL, "x")

            nursery.start_soon(send_once_ready)
            with pytest.raises(LookupError, match="no such room"):
                await relay(
                    redis_server.url,
                    CHANNEL,
                    connections,
                    task_status=_Started(ready),
                )


class _Started(trio.TaskStatus[None]):
    """A task_status for calling relay() directly: sets an event when it is subscribed."""

    def __init__(self, event: trio.Event) -> None:
        self._event = event

    def started(self, value: None = None) -> None:
        self._event.set()


async def test_a_message_not_sent_by_publish_is_skipped_with_a_warning(
    redis_server: RedisServer, log: LogWatch
) -> None:
    """A message without publish()'s type byte (or text that is not UTF-8) is logged and
    skipped; the next good one gets through."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with workers(nursery, redis_server.url, count=1, clients=1) as [ws]:
                async with coredis.Redis.from_url(redis_server.url) as client:
                    assert await client.publish(CHANNEL, "plain") == 1
                    assert await client.publish(CHANNEL, b"t\xff") == 1
                    assert await client.publish(CHANNEL, b"") == 1
                await publish(redis_server.url, CHANNEL, "good")
                assert await ws.recv() == "good"
            nursery.cancel_scope.cancel()
    assert log.count("skipped a message", logging.WARNING) == 3


async def test_publish_and_relay_check_their_arguments() -> None:
    with pytest.raises(TypeError, match="must be str or bytes-like, not int"):
        await publish("redis://127.0.0.1:1", CHANNEL, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='slow must be "skip" or "close"'):
        await relay("redis://127.0.0.1:1", CHANNEL, list, slow="drop")  # type: ignore[arg-type]


def test_default_backoff_retries_within_a_second_then_backs_off_to_10_s() -> None:
    delays = DEFAULT_BACKOFF.delays()
    first = [next(delays) for _ in range(12)]
    assert first[0] <= 0.1
    assert 0.1 < first[1] <= 0.25
    assert max(first) <= 10.0


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1024)
        assert chunk, f"the worker exited before printing a line; got {data!r}"
        data += chunk
    return data.decode()


async def test_example_two_worker_processes_fan_out_every_message(
    redis_server: RedisServer,
) -> None:
    """examples/redis_fanout.py run as two worker processes: what a client of one sends,
    text or bytes, reaches the clients of both."""
    processes: list[trio.Process] = []
    try:
        with trio.fail_after(20):
            uris = []
            for _ in range(2):
                process = await trio.lowlevel.open_process(
                    [sys.executable, str(EXAMPLES / "redis_fanout.py"), "0", redis_server.url],
                    stdout=subprocess.PIPE,
                )
                processes.append(process)
                assert process.stdout is not None
                line = await _read_line(process.stdout)
                assert line.startswith("listening on ws://127.0.0.1:"), line
                uris.append(line.split()[-1])
            async with AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(trio_ws.connect(uri)) for uri in uris + uris
                ]
                for ws in clients:
                    welcome = await ws.recv()
                    assert isinstance(welcome, str) and welcome.startswith("welcome"), welcome
                await clients[0].send("from worker 1")
                await clients[1].send(b"\x01 from worker 2")
                for ws in clients:
                    got = {await ws.recv(), await ws.recv()}
                    assert got == {"from worker 1", b"\x01 from worker 2"}
    finally:
        for process in processes:
            process.kill()
            await process.wait()
