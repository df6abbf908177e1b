"""Run the Autobahn TestSuite (kosoku) against trio_ws's server, client or both; summarize it.

    python conformance/run.py [--mode server|client|both] [--all | --performance | --case ID]
                              [--port P] [--out DIR]

Selection: every case but 9.* (limits/performance) by default, as CI runs it; --performance
runs only 9.*, --all every case, --case ID (repeatable) the cases given.

Exit status: 0 when every case passed, 1 when one did not: its behavior is anything but OK,
NON-STRICT or INFORMATIONAL (FAILED, UNIMPLEMENTED, or ERROR: kosoku could not run it), or its
behaviorClose anything but OK or INFORMATIONAL (FAILED, UNCLEAN, WRONG CODE...); 2 when a run did
not complete (a process did not start, crashed or ran out of time; no report).

How this works: each mode starts two subprocesses, owns them, and ends them by their PID
(SIGTERM, then SIGKILL if one is still there after STOP_TIMEOUT), whatever happens:

- server mode: ``server.py`` (the server under test), then ``kosoku -m fuzzingclient``, which
  connects to it, runs the cases, writes the report and exits.
- client mode: ``kosoku -m fuzzingserver``, then ``client.py`` (the client under test), which
  runs every case the fuzzing server offers and asks it for the report; kosoku then exits.

Each side announces its port on a pipe (port 0 lets the OS choose), which run.py reads while
forwarding everything the children print to stderr. Every wait is bounded: START_TIMEOUT to
announce a port, ``--timeout`` for a whole mode, REPORT_TIMEOUT for kosoku to write its report
once the client is done. The summary goes to stdout; the reports stay in ``--out``: kosoku's in
``DIR/MODE/``, and beside them ``run.json`` with the run's date, wall time, versions and command,
which ``report.py`` reads to write docs/conformance.rst.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Seconds allowed for a child to announce its port (kosoku imports 500 case modules first).
START_TIMEOUT = 60.0
# Seconds allowed, after SIGTERM, for a child to exit before it gets SIGKILL; then for SIGKILL.
STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0
# Seconds allowed for kosoku -m fuzzingserver to write its report once the client has finished.
REPORT_TIMEOUT = 120.0
# Seconds allowed for a whole mode, unless --timeout says otherwise: about 6 times what a mode
# takes with every case on a 2-CPU machine (conformance/README.md).
MODE_TIMEOUT = 1800.0

# The limits/performance cases (messages and frames of up to 16 MiB): left out by default, run
# with --performance or --all.
PERFORMANCE = "9.*"

# A case passes when both its verdicts are in these sets; everything else fails the run,
# UNIMPLEMENTED included (kosoku's own exit status agrees): both sides implement every feature
# the suite tests, permessage-deflate's parameters included.
PASSING_BEHAVIOR = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})
PASSING_CLOSE = frozenset({"OK", "INFORMATIONAL"})
# Always shown in the summary, in this order; any other verdict is shown after them.
VERDICTS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")

SERVER_READY = re.compile(r"listening on ws://127\.0\.0\.1:(\d+)/")
KOSOKU_READY = re.compile(r"fuzzingserver listening on ws://[^:]+:(\d+)")


class RunIncomplete(Exception):
    """A mode could not run to its report; the message says which step and why."""


@dataclass
class Options:
    kosoku: Path
    out: Path
    port: int
    select: list[str]
    selection: str
    parallelism: int
    timeout: float
    case_timeout: float
    command: str


class Verdicts(TypedDict):
    """The part of a case's entry in kosoku's index.json that the summary reads."""

    behavior: str
    behaviorClose: str


@dataclass
class Outcome:
    """What one mode produced: its report's verdicts, or why there is none."""

    mode: str
    seconds: float = 0.0
    report: Path | None = None
    cases: dict[str, Verdicts] = field(default_factory=dict[str, Verdicts])
    problems: list[str] = field(default_factory=list[str])

    @property
    def failing(self) -> list[str]:
        """Ids of the cases whose behavior or behaviorClose is a failing verdict."""
        return [
            case
            for case, entry in self.cases.items()
            if entry["behavior"] not in PASSING_BEHAVIOR
            or entry["behaviorClose"] not in PASSING_CLOSE
        ]


# -- owned subprocesses ------------------------------------------------------------------------


@asynccontextmanager
async def owned_process(
    name: str, command: Sequence[str], **options: Any
) -> AsyncGenerator[trio.Process, None]:
    """Start ``command``; on exit, end it by its PID (SIGTERM, then SIGKILL) and reap it.

    The ending is shielded and bounded (STOP_TIMEOUT + KILL_TIMEOUT), so that cancelling or
    interrupting run.py never leaves a child behind.
    """
    process = await trio.lowlevel.open_process(list(command), **options)
    log(f"started {name} (pid {process.pid}): {' '.join(command)}")
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            await stop(name, process)


async def stop(name: str, process: trio.Process) -> None:
    """End ``process`` if it still runs: SIGTERM, wait, SIGKILL, wait; never raises."""
    if process.returncode is None:
        log(f"stopping {name} (pid {process.pid})")
        process.terminate()
        with trio.move_on_after(STOP_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        log(f"{name} (pid {process.pid}) ignored SIGTERM for {STOP_TIMEOUT:g} s: SIGKILL")
        process.kill()
        with trio.move_on_after(KILL_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        log(f"{name} (pid {process.pid}) survived SIGKILL for {KILL_TIMEOUT:g} s")


class Announcement:
    """The port a child prints once it listens; ``port`` stays None if its output ends first."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self._pattern = pattern
        self.port: int | None = None
        self.settled = trio.Event()

    def feed(self, line: str) -> None:
        match = self._pattern.search(line)
        if match and not self.settled.is_set():
            self.port = int(match[1])
            self.settled.set()

    def end(self) -> None:
        self.settled.set()

    async def wait(self, name: str) -> int:
        """The announced port; RunIncomplete if the child exits or is silent for too long."""
        with trio.move_on_after(START_TIMEOUT):
            await self.settled.wait()
        if self.port is None:
            state = "exited" if self.settled.is_set() else f"was silent for {START_TIMEOUT:g} s"
            raise RunIncomplete(f"{name} {state} before announcing its port")
        return self.port


async def forward(
    stream: trio.abc.ReceiveStream,
    prefix: str,
    on_line: Callable[[str], None] = lambda line: None,
    on_end: Callable[[], None] = lambda: None,
) -> None:
    """Copy a child's output to stderr line by line, with ``prefix``, until it ends."""
    pending = b""
    async for chunk in stream:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace").rstrip()
            print(f"{prefix}{text}", file=sys.stderr, flush=True)
            on_line(text)
    if pending:
        print(f"{prefix}{pending.decode(errors='replace').rstrip()}", file=sys.stderr, flush=True)
    on_end()


# -- the two modes -----------------------------------------------------------------------------


async def run_server_mode(options: Options, report: Path, nursery: trio.Nursery) -> None:
    """kosoku -m fuzzingclient drives conformance/server.py until it has written the report.

    Raises:
        RunIncomplete: a process did not start, crashed or ran out of time.
    """
    deadline = trio.current_time() + options.timeout
    ready = Announcement(SERVER_READY)
    server_command = [sys.executable, str(HERE / "server.py"), "--port", str(options.port)]
    async with owned_process("server.py", server_command, stdout=subprocess.PIPE) as server:
        assert server.stdout is not None
        nursery.start_soon(forward, server.stdout, "server: ", ready.feed, ready.end)
        port = await ready.wait("server.py")
        kosoku_command = [
            str(options.kosoku),
            "-m",
            "fuzzingclient",
            f"ws://127.0.0.1:{port}",
            "-p",
            str(options.parallelism),
            "-o",
            str(report),
            *options.select,
        ]
        async with owned_process(
            "kosoku", kosoku_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as kosoku:
            assert kosoku.stdout is not None
            nursery.start_soon(forward, kosoku.stdout, "kosoku: ")
            with trio.move_on_at(deadline):
                await kosoku.wait()
            if kosoku.returncode is None:
                raise RunIncomplete(
                    f"kosoku did not finish within --timeout={options.timeout:g} s"
                )
            # 1: some case did not pass, which the report says; anything else is a crash.
            if kosoku.returncode not in (0, 1):
                raise RunIncomplete(f"kosoku exited with status {kosoku.returncode}")
        if server.returncode is not None:
            raise RunIncomplete(f"server.py exited during the run, status {server.returncode}")


async def run_client_mode(options: Options, report: Path, nursery: trio.Nursery) -> None:
    """conformance/client.py runs every case kosoku -m fuzzingserver offers; kosoku reports.

    Raises:
        RunIncomplete: a process did not start, crashed or ran out of time; or client.py
            abandoned a case (the report is written all the same).
    """
    deadline = trio.current_time() + options.timeout
    ready = Announcement(KOSOKU_READY)
    kosoku_command = [
        str(options.kosoku),
        "-m",
        "fuzzingserver",
        f"127.0.0.1:{options.port}",
        "-o",
        str(report),
        *options.select,
    ]
    async with owned_process(
        "kosoku", kosoku_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as kosoku:
        assert kosoku.stdout is not None
        nursery.start_soon(forward, kosoku.stdout, "kosoku: ", ready.feed, ready.end)
        port = await ready.wait("kosoku")
        client_command = [
            sys.executable,
            str(HERE / "client.py"),
            "--port",
            str(port),
            "--case-timeout",
            str(options.case_timeout),
        ]
        async with owned_process("client.py", client_command) as client:
            with trio.move_on_at(deadline):
                await client.wait()
            if client.returncode is None:
                raise RunIncomplete(
                    f"client.py did not finish within --timeout={options.timeout:g} s"
                )
        with trio.move_on_after(REPORT_TIMEOUT):
            await kosoku.wait()
        if kosoku.returncode is None:
            raise RunIncomplete(f"kosoku wrote no report within {REPORT_TIMEOUT:g} s")
        if kosoku.returncode not in (0, 1):
            raise RunIncomplete(f"kosoku exited with status {kosoku.returncode}")
        if client.returncode != 0:
            # It still asked for the report: read it, but the run is not complete.
            raise RunIncomplete(f"client.py exited with status {client.returncode} (see above)")


MODES = {"server": run_server_mode, "client": run_client_mode}
DESCRIPTIONS = {
    "server": "kosoku -m fuzzingclient against conformance/server.py (trio_ws.serve)",
    "client": "conformance/client.py (trio_ws.connect) against kosoku -m fuzzingserver",
}


async def run_mode(mode: str, options: Options, environment: dict[str, Any]) -> Outcome:
    """Run one mode, read its report (also after a problem, when there is one), write run.json."""
    outcome = Outcome(mode)
    report = options.out / mode
    clear_report(report)
    log(f"== {mode} mode: {DESCRIPTIONS[mode]}")
    date = datetime.datetime.now(datetime.UTC)
    started = trio.current_time()
    # The nursery holds the tasks that forward the children's output; they end with the
    # children, which the mode ends before it returns or raises.
    async with trio.open_nursery() as nursery:
        try:
            await MODES[mode](options, report, nursery)
        except RunIncomplete as exc:
            outcome.problems.append(str(exc))
    outcome.seconds = trio.current_time() - started
    index = report / "index.json"
    if index.exists():
        outcome.report = report / "index.html"
        for cases in json.loads(index.read_text()).values():
            outcome.cases.update(cases)
        # index.json sorts ids as strings (1.1.10 before 1.1.2): back to the suite's order.
        outcome.cases = dict(sorted(outcome.cases.items(), key=lambda item: case_key(item[0])))
    else:
        outcome.problems.append(f"no report: {index} was not written")
    run = {
        "mode": mode,
        "command": options.command,
        "selection": options.selection,
        "parallelism": options.parallelism,
        "date": date.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(outcome.seconds, 1),
        "cases": len(outcome.cases),
        "problems": outcome.problems,
        "environment": environment,
    }
    (report / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return outcome


async def describe_environment() -> dict[str, Any]:
    """What the run's figures depend on: versions, the trio_ws commit, the machine."""

    def version(distribution: str) -> str:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    async def output(*command: str, cwd: Path) -> str | None:
        try:
            done = await trio.run_process(
                command, cwd=cwd, capture_stdout=True, stderr=subprocess.DEVNULL
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.decode().strip()

    # The trio_ws under test is the one server.py and client.py import: the same Python, run
    # from this folder (their sys.path[0]), so PYTHONPATH and editable installs count.
    location = await output(
        sys.executable, "-c", "import trio_ws; print(trio_ws.__file__)", cwd=HERE
    )
    package = Path(location).parent if location else ROOT / "trio_ws"
    # An installed (not editable) copy is outside any checkout: it was built from this one.
    inside = await output("git", "rev-parse", "--show-toplevel", cwd=package)
    tree = package if inside else ROOT / "trio_ws"
    changes = await output("git", "status", "--porcelain", "--", ".", cwd=tree)
    return {
        "python": platform.python_version(),
        "trio": version("trio"),
        "wsproto": version("wsproto"),
        "kosoku": version("kosoku"),
        "trio_ws": version("trio-ws"),
        "trio_ws_path": str(package),
        "commit": await output("git", "rev-parse", "--short", "HEAD", cwd=tree) or "unknown",
        "uncommitted": bool(changes),
        "system": f"{platform.system()} {platform.release()}",
        "cpu": f"{os.cpu_count()} x {cpu_model()}",
    }


def cpu_model() -> str:
    """The processor's name: from /proc/cpuinfo on Linux, else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if models:
            return str(models[0])
    return platform.processor() or platform.machine()


def case_key(case: str) -> list[int]:
    """Sort key for case ids: 1.1.2 before 1.1.10."""
    return [int(part) for part in case.split(".")]


def clear_report(report: Path) -> None:
    """Remove what kosoku wrote there last time, so that a stale index is never read."""
    if report.is_dir():
        for pattern in ("run.json", "index.json", "index.html", "*_case_*.json", "*_case_*.html"):
            for path in report.glob(pattern):
                path.unlink()
    report.mkdir(parents=True, exist_ok=True)


# -- the summary -------------------------------------------------------------------------------


def summarize(outcome: Outcome) -> list[str]:
    """The summary lines of one mode: counts per verdict, the non-OK ids, the result."""
    lines = [
        f"== {outcome.mode} mode: {DESCRIPTIONS[outcome.mode]}",
        f"   {len(outcome.cases)} cases in {outcome.seconds:.0f} s; report: {outcome.report}",
    ]
    verdicts = {
        "behavior": {case: entry["behavior"] for case, entry in outcome.cases.items()},
        "behaviorClose": {case: entry["behaviorClose"] for case, entry in outcome.cases.items()},
    }
    for key, by_case in verdicts.items() if outcome.cases else ():
        counts = Counter(by_case.values())
        shown = [*VERDICTS, *sorted(set(counts) - set(VERDICTS))]
        lines.append(f"   {key:<14}" + "  ".join(f"{v} {counts[v]}" for v in shown))
    for key, by_case in verdicts.items():
        by_verdict: dict[str, list[str]] = {}
        for case, verdict in by_case.items():
            if verdict != "OK":
                by_verdict.setdefault(verdict, []).append(case)
        for verdict, cases in sorted(by_verdict.items()):
            lines.append(f"   {key} {verdict} ({len(cases)}): {' '.join(cases)}")
    for problem in outcome.problems:
        lines.append(f"   INCOMPLETE: {problem}")
    failing = outcome.failing
    if failing:
        lines.append(f"   FAILED: {len(failing)} case(s) did not pass: {' '.join(failing)}")
    elif not outcome.problems:
        lines.append("   passed")
    return lines


def log(message: str) -> None:
    print(f"run: {message}", file=sys.stderr, flush=True)


def find_kosoku(given: str | None) -> Path:
    """The kosoku console script: --kosoku, else next to this Python, else on PATH."""
    if given is not None:
        return Path(given)
    beside = Path(sys.executable).parent / "kosoku"
    if beside.exists():
        return beside
    found = shutil.which("kosoku")
    if found is None:
        sys.exit(
            "run: kosoku not found; install it with pip install -e '.[conformance]' "
            "or give --kosoku PATH"
        )
    return Path(found)


def parse_options(argv: Sequence[str] | None = None) -> tuple[list[str], Options]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["server", "client", "both"], default="both")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--all", action="store_true", help="run every case, the 9.* performance cases included"
    )
    choice.add_argument(
        "--performance",
        action="store_true",
        help="run only the 9.* limits/performance cases (messages of up to 16 MiB)",
    )
    choice.add_argument(
        "--case",
        action="append",
        metavar="ID",
        help="run only this case id or kosoku glob, e.g. 5.19 or '7.*' (repeatable)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port of the side that listens (our server, or kosoku's); default: a free one",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "reports",
        help="report directory; each mode writes to a subdirectory (default: %(default)s)",
    )
    parser.add_argument("--kosoku", help="the kosoku executable (default: found as for pip)")
    parser.add_argument(
        "-p",
        "--parallelism",
        type=int,
        default=2,
        help="cases kosoku runs at once in server mode (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=MODE_TIMEOUT,
        help="seconds allowed per mode (default: %(default)g)",
    )
    parser.add_argument(
        "--case-timeout",
        type=float,
        default=300.0,
        help="seconds client.py allows each case (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.case:
        select = [arg for case in args.case for arg in ("-i", case)]
        selection = f"the cases {' '.join(args.case)}"
    elif args.all:
        select, selection = [], "every case"
    elif args.performance:
        select, selection = ["-i", PERFORMANCE], f"the {PERFORMANCE} performance cases"
    else:
        select, selection = ["-x", PERFORMANCE], f"every case but {PERFORMANCE}"
    modes = ["server", "client"] if args.mode == "both" else [args.mode]
    return modes, Options(
        kosoku=find_kosoku(args.kosoku),
        out=args.out.resolve(),
        port=args.port,
        select=select,
        selection=selection,
        parallelism=args.parallelism,
        timeout=args.timeout,
        case_timeout=args.case_timeout,
        command=shlex.join(["python", *(sys.argv if argv is None else ["run.py", *argv])]),
    )


async def main(modes: list[str], options: Options) -> int:
    """Run the modes one after the other, print the summary; return the exit status."""
    started = trio.current_time()
    environment = await describe_environment()
    log(f"running {options.selection}")
    outcomes = [await run_mode(mode, options, environment) for mode in modes]
    print()
    for outcome in outcomes:
        print("\n".join(summarize(outcome)))
    print(f"== total: {trio.current_time() - started:.0f} s, {options.selection}")
    if any(outcome.problems for outcome in outcomes):
        return 2
    if any(outcome.failing for outcome in outcomes):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, *parse_options()))
