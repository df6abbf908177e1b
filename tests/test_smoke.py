from __future__ import annotations

import trio_ws
from tests.conftest import connection_pair, pair_side


async def test_memory_pair_echo(side: str) -> None:
    async with connection_pair(compression="deflate") as pair:
        this, other = pair_side(pair, side)
        await this.send("hi")
        assert await other.recv() == "hi"
        await other.send(b"\x00" * 10)
        assert await this.recv() == b"\x00" * 10
    assert this.state is trio_ws.State.CLOSED
    assert this.close_code == 1000
