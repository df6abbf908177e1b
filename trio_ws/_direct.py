"""The opening handshake's reads and writes: direct over a plain socket, trio's otherwise.

trio's ``SocketStream`` yields to the scheduler after every read and every write, even one that
did not wait; an opening handshake makes a read and a write on each side, so each costs a pass
of the scheduler for nothing. Over a plain socket these read and write the file descriptor as
the connection's reader and writer do, and yield only to wait: still a cancel point each, but a
schedule point only when the socket is not ready. Other streams (TLS, a proxy's tunnel, a
stream given to ``connect()``) use the stream's own methods.
"""

from __future__ import annotations

import errno
import os

import trio

from ._writer import plain_socket

__all__ = ["receive_some", "send_all"]


async def receive_some(stream: trio.abc.Stream, max_bytes: int) -> bytes | bytearray:
    """``stream.receive_some(max_bytes)``, without a schedule point when bytes are waiting."""
    sock = plain_socket(stream)
    if sock is None:
        return await stream.receive_some(max_bytes)
    await trio.lowlevel.checkpoint_if_cancelled()
    while True:
        try:
            return os.read(sock.fileno(), max_bytes)
        except BlockingIOError:
            pass
        except OSError as exc:  # reset by the peer, or closed under us
            raise _stream_error(exc) from exc
        if sock.fileno() < 0:
            raise trio.ClosedResourceError("the socket was closed")
        await trio.lowlevel.wait_readable(sock)


async def send_all(stream: trio.abc.Stream, data: bytes) -> None:
    """``stream.send_all(data)``, without a schedule point when the socket takes it all."""
    sock = plain_socket(stream)
    if sock is None:
        await stream.send_all(data)
        return
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        written = os.write(sock.fileno(), data)
    except BlockingIOError:
        written = 0
    except OSError as exc:
        raise _stream_error(exc) from exc
    if written < len(data):  # rare in a handshake: trio waits for room
        await stream.send_all(memoryview(data)[written:])


def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    """The error trio's ``SocketStream`` raises for ``exc``."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")
