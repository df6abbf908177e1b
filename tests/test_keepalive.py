"""trio_ws._keepalive: one task calls many connections' keepalive callbacks when due."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trio_ws._keepalive import KeepaliveTimer


async def test_callbacks_are_called_at_their_exact_times_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each callback runs at its due time, including one added while the timer sleeps
    towards a later one; callbacks due together run in the order they were added."""
    timer = KeepaliveTimer()
    calls: list[tuple[str, float]] = []

    def call(name: str) -> None:
        calls.append((name, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        timer.call_at(10.0, lambda: call("late"))
        await trio.testing.wait_all_tasks_blocked()
        timer.call_at(4.0, lambda: call("early"))
        timer.call_at(7.0, lambda: call("first at 7"))
        timer.call_at(7.0, lambda: call("second at 7"))
        await trio.sleep(20)
        timer.stop()
    assert calls == [("early", 4.0), ("first at 7", 7.0), ("second at 7", 7.0), ("late", 10.0)]


async def test_a_cancelled_callback_is_never_called(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = KeepaliveTimer()
    calls: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        timed = timer.call_at(5.0, lambda: calls.append("cancelled"))
        timer.call_at(6.0, lambda: calls.append("kept"))
        timed.cancel()
        await trio.sleep(10)
        timer.stop()
    assert calls == ["kept"]


async def test_stop_ends_run_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """stop() ends run() even with callbacks still waiting, without calling them."""
    timer = KeepaliveTimer()
    calls: list[str] = []
    timer.call_at(5.0, lambda: calls.append("never"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        await trio.testing.wait_all_tasks_blocked()
        timer.stop()
    assert trio.current_time() == 0.0
    assert calls == []


async def test_a_raising_callback_is_logged_and_the_timer_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback that raises (a bug) is logged as an internal error on the timer's logger;
    callbacks due at the same time and later still run, at their times."""
    timer = KeepaliveTimer(logging.getLogger("tests.keepalive"))
    calls: list[tuple[str, float]] = []

    def broken() -> None:
        raise RuntimeError("bug in a callback")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        timer.call_at(3.0, broken)
        timer.call_at(3.0, lambda: calls.append(("same time", trio.current_time())))
        timer.call_at(5.0, lambda: calls.append(("later", trio.current_time())))
        await trio.sleep(10)
        timer.stop()
    assert calls == [("same time", 3.0), ("later", 5.0)]
    [record] = [r for r in caplog.records if r.name == "tests.keepalive"]
    assert record.levelno == logging.ERROR
    assert "internal error in a keepalive callback" in record.getMessage()
    assert "broken" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
