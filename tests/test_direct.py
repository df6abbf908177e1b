"""The opening handshake's reads and writes (``_direct``): over a plain socket they yield only
to wait, fail as trio's ``SocketStream`` does, and other streams use their own methods."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_ws import _direct


@asynccontextmanager
async def socket_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    ours, theirs = trio.socket.socketpair()
    async with trio.SocketStream(ours) as a, trio.SocketStream(theirs) as b:
        yield a, b


class Steps(trio.abc.Instrument):
    """Counts the scheduling steps of one task: a call that does not yield takes none."""

    def __init__(self) -> None:
        self.task = trio.lowlevel.current_task()
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1

    def __enter__(self) -> Steps:
        trio.lowlevel.add_instrument(self)
        return self

    def __exit__(self, *_: object) -> None:
        trio.lowlevel.remove_instrument(self)


async def test_receive_some_takes_waiting_bytes_without_yielding() -> None:
    async with socket_pair() as (a, b):
        await b.send_all(b"hello")
        with Steps() as steps:
            assert await _direct.receive_some(a, 1024) == b"hello"
        assert steps.count == 0
        await b.send_all(b"again")
        with Steps() as steps:  # trio's own yields after every read
            assert await a.receive_some(1024) == b"again"
        assert steps.count == 1


async def test_receive_some_waits_for_bytes_then_returns_them() -> None:
    async with socket_pair() as (a, b), trio.open_nursery() as nursery:

        async def later() -> None:
            await trio.testing.wait_all_tasks_blocked()
            await b.send_all(b"late")

        nursery.start_soon(later)
        assert await _direct.receive_some(a, 1024) == b"late"


async def test_receive_some_returns_empty_bytes_at_the_end_of_the_stream() -> None:
    async with socket_pair() as (a, b):
        await b.send_eof()
        assert await _direct.receive_some(a, 1024) == b""


async def test_a_cancelled_receive_some_raises_and_consumes_nothing() -> None:
    async with socket_pair() as (a, b):
        await b.send_all(b"kept")
        with trio.CancelScope() as scope:
            scope.cancel()
            await _direct.receive_some(a, 1024)
        assert scope.cancelled_caught
        assert await _direct.receive_some(a, 1024) == b"kept"


async def test_receive_some_on_a_closed_socket_raises_closed_resource_error() -> None:
    async with socket_pair() as (a, _):
        a.socket.close()
        with pytest.raises(trio.ClosedResourceError):
            await _direct.receive_some(a, 1024)


async def test_receive_some_on_a_reset_connection_raises_broken_resource_error() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    with listener:
        stream = await trio.open_tcp_stream(*listener.getsockname())
        accepted, _ = await listener.accept()
        with accepted:
            # SO_LINGER 0: closing sends a reset instead of a FIN.
            accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        async with stream:
            with pytest.raises(trio.BrokenResourceError):
                await _direct.receive_some(stream, 1024)


async def test_send_all_writes_without_yielding_when_the_socket_takes_it() -> None:
    async with socket_pair() as (a, b):
        with Steps() as steps:
            await _direct.send_all(a, b"x" * 1000)
        assert steps.count == 0
        assert await b.receive_some(2000) == b"x" * 1000


async def test_send_all_waits_for_room_for_what_the_socket_did_not_take() -> None:
    """More than the socket buffers: the rest goes out as the peer reads, whole and in order."""
    data = bytes(range(256)) * 20_000  # 5 MB
    received = bytearray()
    async with socket_pair() as (a, b), trio.open_nursery() as nursery:

        async def read_all() -> None:
            while len(received) < len(data):
                received.extend(await b.receive_some(65536))

        nursery.start_soon(read_all)
        await _direct.send_all(a, data)
    assert received == data


async def test_send_all_on_a_closed_socket_raises_closed_resource_error() -> None:
    async with socket_pair() as (a, _):
        a.socket.close()
        with pytest.raises(trio.ClosedResourceError):
            await _direct.send_all(a, b"late")


async def test_other_streams_use_their_own_methods() -> None:
    a, b = trio.testing.memory_stream_pair()
    await _direct.send_all(a, b"over memory")
    assert await _direct.receive_some(b, 1024) == b"over memory"
