"""The client under test: runs every case of ``kosoku -m fuzzingserver`` (Autobahn TestSuite).

``python conformance/client.py --port P`` asks the fuzzing server on 127.0.0.1:P how many cases
it serves (``/getCaseCount``), runs each one in turn (``/runCase?case=N&agent=NAME``), echoing
every message until the server closes, then asks it to write its report
(``/updateReports?agent=NAME``). Progress goes to stderr. ``conformance/run.py`` starts it.

Each case is bounded by ``--case-timeout``; a case that runs out is abandoned (the connection
is closed with 1001), reported on stderr, and makes the exit status 1 once the other cases and
the report are done. A fuzzing server that cannot be reached raises OSError (exit status 1).
"""

from __future__ import annotations

import argparse
import functools
import sys

import trio

import trio_ws

# The suite's own deadlines go up to 480 s (12.*/13.* with 128 KiB messages); on a machine
# where those take minutes something is wrong, not slow.
DEFAULT_CASE_TIMEOUT = 300.0
# A progress line every this many cases, and one for any case slower than SLOW_CASE seconds.
PROGRESS_EVERY = 50
SLOW_CASE = 5.0

# Limits off, as for the server under test: the suite sends up to 16 MiB per message (9.*) and
# bursts of 1000 messages (12.*/13.*); keepalive pings would be frames the cases do not expect.
connect = functools.partial(
    trio_ws.connect, max_size=None, max_queue=None, ping_interval=None, proxy=None
)


def log(message: str) -> None:
    print(f"client: {message}", file=sys.stderr, flush=True)


async def case_count(base: str) -> int:
    """Ask the fuzzing server how many cases it serves."""
    async with connect(f"{base}/getCaseCount") as ws:
        return int(await ws.recv())


async def run_case(base: str, case: int, agent: str) -> str:
    """Echo every message of case number ``case`` until the server closes; say how it ended.

    The cases that send invalid frames end with our side failing the connection
    (ConnectionClosedError): that is the behaviour under test, so it is returned, not raised.
    """
    try:
        async with connect(f"{base}/runCase?case={case}&agent={agent}") as ws:
            async for message in ws:
                await ws.send(message)
        return "closed"
    except trio_ws.WebSocketError as exc:
        return f"{type(exc).__name__}: {exc}"


async def update_reports(base: str, agent: str) -> None:
    """Ask the fuzzing server to write the report for ``agent``; it ends the run."""
    async with connect(f"{base}/updateReports?agent={agent}"):
        pass


async def main(port: int, agent: str, case_timeout: float) -> int:
    """Run every case, then the report; return the exit status (1 if a case was abandoned)."""
    base = f"ws://127.0.0.1:{port}"
    count = await case_count(base)
    log(f"{count} cases from {base}")
    abandoned: list[int] = []
    started = trio.current_time()
    for case in range(1, count + 1):
        case_started = trio.current_time()
        outcome = "abandoned"
        with trio.move_on_after(case_timeout) as scope:
            outcome = await run_case(base, case, agent)
        elapsed = trio.current_time() - case_started
        if scope.cancelled_caught:
            abandoned.append(case)
            log(f"case {case}/{count}: abandoned after {case_timeout:g} s (--case-timeout)")
        elif elapsed > SLOW_CASE:
            log(f"case {case}/{count}: {elapsed:.1f} s ({outcome})")
        if case % PROGRESS_EVERY == 0 or case == count:
            log(f"{case}/{count} cases run in {trio.current_time() - started:.0f} s")
    await update_reports(base, agent)
    if abandoned:
        log(f"{len(abandoned)} case(s) abandoned: {' '.join(map(str, abandoned))}")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True, help="the fuzzing server's port")
    parser.add_argument("--agent", default="trio_ws", help="the name the report uses")
    parser.add_argument(
        "--case-timeout",
        type=float,
        default=DEFAULT_CASE_TIMEOUT,
        help="seconds allowed per case (default: %(default)s)",
    )
    args = parser.parse_args()
    sys.exit(trio.run(main, args.port, args.agent, args.case_timeout))
