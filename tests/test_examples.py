"""The examples in examples/ run, as a user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

import trio_ws

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def test_echo_example_runs_end_to_end() -> None:
    """examples/echo.py echoes text and bytes, closes with 1000 and stops its server."""
    result = await trio.run_process(
        [sys.executable, str(EXAMPLES / "echo.py")], capture_stdout=True, capture_stderr=True
    )
    output = result.stdout.decode()
    assert "text echoed: 'hello'" in output
    assert "bytes echoed: b'\\x00\\x01\\x02'" in output
    assert "client closed with code 1000" in output
    assert output.rstrip().endswith("server stopped")


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1024)
        assert chunk, f"the server exited before printing a line; got {data!r}"
        data += chunk
    return data.decode()


async def test_echo_server_example_echoes_until_terminated() -> None:
    """examples/echo_server.py serves clients until it is stopped."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / "echo_server.py"), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(30):
            line = await _read_line(process.stdout)
            assert line.startswith("listening on ws://127.0.0.1:")
            uri = line.split()[-1]
            async with trio_ws.connect(uri) as ws:
                await ws.send("ping?")
                assert await ws.recv() == "ping?"
    finally:
        process.kill()
        await process.wait()
    assert process.returncode is not None


async def test_chat_example_routes_logs_in_broadcasts_and_checks_health() -> None:
    """examples/chat.py: the health check is answered without a login, a wrong password gets
    401, members of a room hear each other (and themselves) and nobody else, in order."""
    result = await trio.run_process(
        [sys.executable, str(EXAMPLES / "chat.py")], capture_stdout=True, capture_stderr=True
    )
    assert result.stdout.decode().splitlines() == [
        "health check: HTTP/1.1 200 OK",
        "wrong password: HTTP 401",
        "alice reads: alice joined lobby",
        "alice reads: bob joined lobby",
        "bob reads: bob joined lobby",
        "carol reads: carol joined garden",
        "bob reads: alice: hello, bob",
        "carol reads: carol: anyone here?",
        "alice reads: alice: hello, bob",
        "alice reads: bob: hi alice",
        "alice reads: bob left lobby",
        "refused: {'response': 1, '401': 1}, opened: 3",
        "server stopped",
    ]


async def test_reconnect_example_comes_back_after_each_server_restart() -> None:
    """examples/reconnect.py: the client's async for loop reconnects after each of two server
    restarts, and break closes the last connection with 1000."""
    result = await trio.run_process(
        [sys.executable, str(EXAMPLES / "reconnect.py")], capture_stdout=True, capture_stderr=True
    )
    assert result.stdout.decode().splitlines() == [
        "echoed: hello from connection 1",
        "server closed the connection with 1001",
        "echoed: hello from connection 2",
        "server closed the connection with 1001",
        "echoed: hello from connection 3",
        "left the loop after 3 connections",
        "last connection closed with 1000",
        "server stopped",
    ]
