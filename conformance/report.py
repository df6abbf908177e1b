"""Write the docs' conformance page (docs/conformance.rst) from the reports of a run.py run.

    python conformance/run.py --all                      # both modes, every case
    python conformance/report.py -o docs/conformance.rst

It reads, for each mode, ``DIR/MODE/index.json`` (kosoku's verdicts and each case's duration)
and ``DIR/MODE/run.json`` (run.py's record: command, date, wall time, versions, machine), DIR
being run.py's ``--out`` (default ``conformance/reports/``), and writes a reStructuredText page:
how the run was made, then a table per mode with the cases of each group (the first component
of the case id: 1 Framing ... 13 compression parameters) per ``behavior`` verdict, how many
passed their closing behaviour, and the time they took; then the ids of the cases that are not
OK. Nothing in the page is written by hand: rerun both commands to update it.

Exit status 2, and no page, when a mode has no report or its run did not complete.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run import HERE, PASSING_CLOSE, VERDICTS, case_key

MODES = ("server", "client")
# How this page is written: the command it gives after run.py's.
PAGE_COMMAND = "python conformance/report.py -o docs/conformance.rst"

# The suite's names for its groups (Autobahn's CaseCategories); there is no group 8 or 11.
GROUP_NAMES = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 handling",
    "7": "Close handling",
    "9": "Limits/Performance",
    "10": "Misc",
    "12": "WebSocket compression (different payloads)",
    "13": "WebSocket compression (different parameters)",
}

TITLES = {
    "server": "Server mode: ``trio_ws.serve``",
    "client": "Client mode: ``trio_ws.connect``",
}


class ReportMissing(Exception):
    """A mode's reports cannot make a page; the message says which and why."""


@dataclass
class ModeReport:
    """One mode's run.json and index.json entries, cases in the suite's order."""

    mode: str
    run: dict[str, Any]
    cases: dict[str, dict[str, Any]]


def load(reports: Path, mode: str) -> ModeReport:
    """Read DIR/MODE/run.json and DIR/MODE/index.json.

    Raises:
        ReportMissing: either file is missing, or the run did not complete.
    """
    folder = reports / mode
    run_file, index_file = folder / "run.json", folder / "index.json"
    for path in (run_file, index_file):
        if not path.is_file():
            raise ReportMissing(f"{path} does not exist: run conformance/run.py first")
    run = json.loads(run_file.read_text())
    if run["problems"]:
        raise ReportMissing(f"the {mode} mode run did not complete: {'; '.join(run['problems'])}")
    cases: dict[str, dict[str, Any]] = {}
    for by_case in json.loads(index_file.read_text()).values():
        cases.update(by_case)
    return ModeReport(mode, run, dict(sorted(cases.items(), key=lambda item: case_key(item[0]))))


# -- the page ----------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """An RST simple table: the first row is the header."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    border = " ".join("=" * width for width in widths)

    def line(row: Sequence[str]) -> str:
        return " ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()

    return [border, line(rows[0]), border, *(line(row) for row in rows[1:]), border]


def group_table(report: ModeReport) -> list[str]:
    """Cases per group and behavior verdict, close passes, and their added-up durations."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for case, entry in report.cases.items():
        groups.setdefault(case.split(".")[0], []).append(entry)
    seen = Counter(entry["behavior"] for entry in report.cases.values())
    verdicts = [*VERDICTS, *sorted(set(seen) - set(VERDICTS))]
    header = ["Group", "Cases", *verdicts, "Close passed", "Time (s)"]

    def row(label: str, entries: list[dict[str, Any]]) -> list[str]:
        counts = Counter(entry["behavior"] for entry in entries)
        closed = sum(entry["behaviorClose"] in PASSING_CLOSE for entry in entries)
        seconds = sum(entry["duration"] for entry in entries) / 1000
        counted = [str(counts[verdict]) for verdict in verdicts]
        return [label, str(len(entries)), *counted, str(closed), f"{seconds:.1f}"]

    rows = [header]
    for group, entries in groups.items():
        rows.append(row(f"{group} {GROUP_NAMES.get(group, '')}".rstrip(), entries))
    rows.append(row("All", [entry for entries in groups.values() for entry in entries]))
    return table(rows)


def not_ok(report: ModeReport) -> list[str]:
    """One bullet per verdict other than OK, for behavior then behaviorClose, with the ids."""
    lines = []
    for key, label in (("behavior", "behaviour"), ("behaviorClose", "closing behaviour")):
        by_verdict: dict[str, list[str]] = {}
        for case, entry in report.cases.items():
            if entry[key] != "OK":
                by_verdict.setdefault(entry[key], []).append(case)
        for verdict, cases in sorted(by_verdict.items()):
            text = f"- {label} {verdict} ({len(cases)}): {', '.join(cases)}"
            lines += textwrap.wrap(text, width=99, subsequent_indent="  ", break_on_hyphens=False)
    return lines or ["- none: every case is OK, and so is its closing behaviour"]


def describe(environment: dict[str, Any]) -> tuple[str, str]:
    """The versions line and the machine line of one mode's environment."""
    commit = f"commit {environment['commit']}"
    if environment["uncommitted"]:
        commit += " with uncommitted changes to trio_ws/"
    versions = (
        f"Python {environment['python']}, trio {environment['trio']}, wsproto "
        f"{environment['wsproto']}, kosoku {environment['kosoku']}, trio_ws "
        f"{environment['trio_ws']} at {commit}"
    )
    return versions, f"{environment['system']}, {environment['cpu']}"


def page(reports: list[ModeReport]) -> str:
    """The whole page, from the reports of one mode or both."""
    commands = list(dict.fromkeys(report.run["command"] for report in reports))
    selections = list(dict.fromkeys(report.run["selection"] for report in reports))
    environments = [describe(report.run["environment"]) for report in reports]
    total = sum(report.run["seconds"] for report in reports)
    lines = [
        ".. Written by conformance/report.py from the reports of conformance/run.py: do not edit,",
        "   rerun the commands this page gives.",
        "",
        "Conformance",
        "===========",
        "",
        "trio_ws is tested against the `Autobahn TestSuite",
        "<https://github.com/crossbario/autobahn-testsuite>`__, the reference conformance suite",
        "for WebSocket implementations: 517 cases of framing, pings, reserved bits, opcodes,",
        "fragmentation, UTF-8, the closing handshake, limits and permessage-deflate. They are run",
        "by `kosoku <https://pypi.org/project/kosoku/>`__, which drives the suite's own case",
        "files and judges each case as Autobahn does. Both sides are tested:",
        "",
        "- **server mode**: kosoku's fuzzing client connects to :func:`trio_ws.serve`, running",
        "  a handler that echoes every message;",
        "- **client mode**: :func:`trio_ws.connect` runs every case against kosoku's fuzzing",
        "  server, echoing every message until the server closes.",
        "",
        "Both run with ``max_size=None``, ``max_queue=None`` and ``ping_interval=None`` (the",
        "suite sends messages of up to 16 MiB, bursts of 1000 messages, and expects no",
        "keepalive pings); compression is on, as by default.",
        "",
        "Each case gets a verdict on its *behaviour* (OK, NON-STRICT, INFORMATIONAL,",
        "UNIMPLEMENTED or FAILED) and one on its *closing behaviour*. A case passes when the",
        "first is OK, NON-STRICT or INFORMATIONAL and the second OK or INFORMATIONAL.",
        "``conformance/README.md`` in the repository says why each case that is not OK is",
        "what it is, and how to run the suite.",
        "",
        "The run",
        "-------",
        "",
        f":Commands: ``{' && '.join([*commands, PAGE_COMMAND])}``",
        ":Cases: " + "; ".join(selections).replace("*", r"\*"),
    ]
    for report in reports:
        run = report.run
        lines.append(
            f":{report.mode.capitalize()} mode: {run['cases']} cases, started {run['date']}, "
            f"{run['seconds']:.0f} s wall time"
        )
    if len(reports) > 1:
        lines.append(f":Wall time: {total:.0f} s in all")
    for (versions, machine), report in zip(environments, reports, strict=True):
        suffix = "" if len(set(environments)) == 1 else f" ({report.mode} mode)"
        lines.append(f":Versions{suffix}: {versions}")
        lines.append(f":Machine{suffix}: {machine}")
        if len(set(environments)) == 1:
            break
    for report in reports:
        title = TITLES[report.mode]
        lines += [
            "",
            title,
            "-" * len(title),
            "",
            *group_table(report),
            "",
            "*Close passed* counts the cases whose closing behaviour is OK or INFORMATIONAL.",
            "*Time* adds up the cases' durations as kosoku measured them"
            + (
                f"; it runs {report.run.get('parallelism', 2)} cases at once in this mode."
                if report.mode == "server"
                else "."
            ),
            "",
            "The cases that are not OK:",
            "",
            *not_ok(report),
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=HERE / "reports",
        help="run.py's --out directory (default: %(default)s)",
    )
    parser.add_argument("--mode", choices=["server", "client", "both"], default="both")
    parser.add_argument(
        "-o", "--output", type=Path, help="write the page to this file (default: stdout)"
    )
    args = parser.parse_args(argv)
    modes = MODES if args.mode == "both" else (args.mode,)
    try:
        reports = [load(args.reports, mode) for mode in modes]
    except ReportMissing as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    text = page(reports)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
