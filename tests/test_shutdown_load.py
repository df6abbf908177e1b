"""Stopping a loaded server over real sockets on 127.0.0.1: a shutdown loses nothing.

How this works: 200 clients in this process (opened 50 at a time) each keep a window of messages
``client-<i>:<n>`` in flight, as fast as the acknowledgements come back; the handler records
each message as processed, then answers ``ack:client-<i>:<n>``. Once every client has had
``ACKS_BEFORE_STOP`` acknowledgements (a counter and an event, no sleep: over 10,000 messages
acknowledged in all), the server is stopped while they all still send: gracefully with
``server.aclose()``, or at once with ``server.cancel_scope.cancel()``. Every loop is bounded
(``MAX_MESSAGES`` per client) and the whole run is guarded by ``trio.fail_after(HANG_GUARD)``,
a guard against hangs, not a timing.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio

import trio_ws
from tests.conftest import open_fds
from tests.test_client import live_tasks
from trio_ws.exceptions import ConnectionClosed, ConnectionClosedOK
from trio_ws.server import Server, ServerConnection

CLIENTS = 200
OPENING_AT_ONCE = 50  # opening handshakes in flight at once
WINDOW = 4  # messages a client has sent and not yet seen acknowledged, at most
ACKS_BEFORE_STOP = 50  # acknowledgements every client has had when the stop starts
MAX_MESSAGES = 5_000  # per client: the bound of its loops, far above what a run reaches
STOP_DEADLINE = 10.0  # seconds: aclose()'s deadline for the handlers, and close_timeout
HANG_GUARD = 60.0  # seconds: only there to turn a hang into a failure
FDS_NEEDED = 2 * CLIENTS + 64  # both ends of every connection, the listener, pytest's own


@pytest.fixture
def enough_open_files() -> Iterator[None]:
    """Raise the open-file soft limit to the hard one if CLIENTS needs it; restore it after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= FDS_NEEDED:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < FDS_NEEDED:
        pytest.skip(f"{CLIENTS} clients need {FDS_NEEDED} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (FDS_NEEDED, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class Ledger:
    """What both sides saw: the server's records and each client's."""

    processed: list[str] = field(default_factory=list)  # by the handlers, in order
    handler_endings: list[str] = field(default_factory=list)  # how each handler ended
    sent: dict[int, int] = field(default_factory=dict)  # client: messages send() accepted
    acked: dict[int, int] = field(default_factory=dict)  # client: acknowledgements seen
    close_codes: dict[int, int | None] = field(default_factory=dict)  # client: peer's code
    ready: int = 0  # clients with ACKS_BEFORE_STOP acknowledgements
    all_ready: trio.Event = field(default_factory=trio.Event)


async def handler(ledger: Ledger, ws: ServerConnection) -> None:
    """Record each message as processed, then acknowledge it; drain until recv() ends."""
    try:
        for _ in range(MAX_MESSAGES + WINDOW):
            message = await ws.recv()
            assert isinstance(message, str)
            ledger.processed.append(message)
            # Closing: the ack cannot go, but what is still queued must be processed all the same.
            with contextlib.suppress(ConnectionClosed):
                await ws.send(f"ack:{message}")
        ledger.handler_endings.append("ran out of messages")
    except ConnectionClosedOK as exc:
        ledger.handler_endings.append(f"ConnectionClosedOK {exc.code}")
    except trio.Cancelled:
        ledger.handler_endings.append("Cancelled")
        raise


async def client(
    ledger: Ledger, port: int, number: int, go: trio.Event, task_status: trio.TaskStatus[None]
) -> None:
    """Send numbered messages, a window at a time, until the server closes; check the acks."""
    ledger.sent[number] = ledger.acked[number] = 0
    window = trio.Semaphore(WINDOW)
    async with trio_ws.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
        task_status.started()
        await go.wait()

        async def send_all() -> None:
            try:
                for n in range(MAX_MESSAGES):
                    await window.acquire()
                    await ws.send(f"client-{number}:{n}")
                    ledger.sent[number] = n + 1
            except ConnectionClosed:
                pass

        async with trio.open_nursery() as sending:
            sending.start_soon(send_all)
            try:
                for n in range(MAX_MESSAGES):
                    assert await ws.recv() == f"ack:client-{number}:{n}"
                    ledger.acked[number] = n + 1
                    window.release()
                    if n + 1 == ACKS_BEFORE_STOP:
                        ledger.ready += 1
                        if ledger.ready == CLIENTS:
                            ledger.all_ready.set()
            except ConnectionClosed:
                pass
            sending.cancel_scope.cancel()  # it may wait for a window the acks no longer open
    ledger.close_codes[number] = ws.close_code


async def run_and_stop(ledger: Ledger, how: str) -> float:
    """Serve, open every client, let them all send, stop the server ``how``; the seconds from
    the stop until serve() returned."""
    go = trio.Event()
    opening = trio.CapacityLimiter(OPENING_AT_ONCE)
    async with trio.open_nursery() as clients:
        async with trio.open_nursery() as serving:
            server: Server = await serving.start(
                partial(
                    trio_ws.serve,
                    partial(handler, ledger),
                    "127.0.0.1",
                    0,
                    close_timeout=STOP_DEADLINE,  # bounds each close of a hard stop
                )
            )

            async def open_one(number: int) -> None:
                async with opening:
                    await clients.start(client, ledger, server.port, number, go)

            async with trio.open_nursery() as batches:
                for number in range(CLIENTS):
                    batches.start_soon(open_one, number)
            go.set()
            await ledger.all_ready.wait()
            stop = trio.current_time()
            if how == "graceful":
                await server.aclose(timeout=STOP_DEADLINE)
            else:
                server.cancel_scope.cancel()
        stopped = trio.current_time() - stop
    return stopped


@pytest.mark.parametrize("how", ["graceful", "hard"])
@pytest.mark.usefixtures("enough_open_files")
async def test_a_stop_under_load_loses_no_acknowledged_message_and_gives_every_client_1001(
    how: str,
) -> None:
    """Stopped while 200 clients send (each with 50 acknowledgements or more, over 10,000 in
    all), gracefully or at once: every message a client saw acknowledged was processed, each
    exactly once and in order; every client sees 1001, none 1006; serve() returns within the
    deadline (aclose()'s timeout, or close_timeout for a hard stop); no fd and no task is left.

    Gracefully, also: every message a client's send() accepted was processed (the handlers
    drain their connection until recv() raises ConnectionClosedOK 1001). At once: every handler
    is cancelled."""
    fds, tasks = open_fds(), live_tasks()
    ledger = Ledger()
    with trio.fail_after(HANG_GUARD):
        stopped = await run_and_stop(ledger, how)

    processed: dict[int, list[int]] = {number: [] for number in range(CLIENTS)}
    for message in ledger.processed:
        name, _, n = message.partition(":")
        processed[int(name.removeprefix("client-"))].append(int(n))
    for number in range(CLIENTS):
        # Exactly once and in order: the first messages, with none left out.
        assert processed[number] == list(range(len(processed[number])))
        assert ledger.acked[number] >= ACKS_BEFORE_STOP
        assert ledger.acked[number] <= len(processed[number]) <= ledger.sent[number] + WINDOW
        assert ledger.sent[number] < MAX_MESSAGES  # the stop came while it was still sending
        if how == "graceful":
            assert len(processed[number]) >= ledger.sent[number]
    assert ledger.close_codes == dict.fromkeys(range(CLIENTS), 1001)
    expected = "ConnectionClosedOK 1001" if how == "graceful" else "Cancelled"
    assert ledger.handler_endings == [expected] * CLIENTS
    assert stopped < STOP_DEADLINE
    assert open_fds() == fds
    assert live_tasks() == tasks
