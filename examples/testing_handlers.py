"""Testing a trio_ws app with pytest-trio and trio_ws.testing: no socket, and no waiting for
timeouts (MockClock). Run it with ``python -m pytest examples/testing_handlers.py``."""

import pytest
import trio
import trio.testing

from trio_ws import ConnectionClosedOK, InvalidStatus, Request, Response, ServerConnection
from trio_ws.testing import connection_pair, serving

# -- the app ---------------------------------------------------------------------------------

IDLE_TIMEOUT = 60  # seconds


async def greeter(ws: ServerConnection) -> None:
    """Answer each name with a greeting; close a connection that stays silent for
    IDLE_TIMEOUT seconds with 1000, "idle", and one that sends bytes with 1003."""
    try:
        while True:
            with trio.fail_after(IDLE_TIMEOUT):
                name = await ws.recv()
            if not isinstance(name, str):
                await ws.aclose(1003, "text only")
                return
            await ws.send(f"hello, {name}!")
    except trio.TooSlowError:
        await ws.aclose(1000, "idle")
    except ConnectionClosedOK:
        pass  # the client left


def only_greet(connection: ServerConnection, request: Request) -> Response | None:
    """process_request: the greeter lives at /greet, nothing else does."""
    if request.path != "/greet":
        return connection.respond(404, "not found\n")
    return None


# -- its tests -------------------------------------------------------------------------------

pytestmark = pytest.mark.trio  # or trio_mode = true in your pytest configuration


async def test_greets_by_name() -> None:
    async with (
        serving(greeter, process_request=only_greet) as server,
        server.connect("/greet") as ws,
    ):
        await ws.send("alice")
        assert await ws.recv() == "hello, alice!"


async def test_bytes_close_the_connection_with_1003() -> None:
    async with (
        serving(greeter, process_request=only_greet) as server,
        server.connect("/greet") as ws,
    ):
        await ws.send(b"alice")
        await ws.wait_closed()
    assert (ws.close_code, ws.close_reason) == (1003, "text only")


async def test_other_paths_get_404() -> None:
    async with serving(greeter, process_request=only_greet) as server:
        with pytest.raises(InvalidStatus) as caught:
            async with server.connect("/elsewhere"):
                pass
    assert caught.value.response.status_code == 404


async def test_a_silent_client_is_closed_after_a_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # autojump_clock (a pytest-trio fixture) runs the test under
    # trio.testing.MockClock(autojump_threshold=0): when every task waits, virtual time jumps
    # to the next deadline, so this minute passes at once, and exactly.
    async with (
        serving(greeter, process_request=only_greet) as server,
        server.connect("/greet") as ws,
    ):
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        assert trio.current_time() == IDLE_TIMEOUT
        assert (ws.close_code, ws.close_reason) == (1000, "idle")


async def test_greeter_on_a_connection_pair() -> None:
    # No server of your own: call the handler yourself with the server's side of a pair.
    async with connection_pair() as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(greeter, server)
        await client.send("bob")
        assert await client.recv() == "hello, bob!"
        await client.aclose()  # the greeter returns: the client left
