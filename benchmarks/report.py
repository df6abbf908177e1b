"""The figures of a benchmark run and their reports: the Markdown table, the docs page.

run.py measures (``Measurement``: one workload, one library, one run, compression off or
permessage-deflate on); this module turns the measurements into figures (``METRICS``: rates,
latencies, memory per connection), medians with min-max over the runs, ratios to the reference
and the ceiling, and writes them out with the machine, the versions and the commit they were
measured with. There are two tables: compression off (``figures``), and permessage-deflate on
(``deflate_figures``: the libraries that have it, each with its default settings; raw-trio,
the ceiling, without compression as ever; trio-websocket, which has none, as n/a).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workloads import BULK_SIZE, COUNTED

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "websockets.trio"  # every figure is also given as a ratio to this one's
CEILING = "raw-trio"  # and to this one's
#: The libraries with permessage-deflate (RFC 7692), measured with it on in the second table.
DEFLATING = ("trio_ws", "websockets.trio", "websockets.asyncio")


@dataclass
class Measurement:
    """One workload, one library, one run: the client's result and the server's memory."""

    peer: str
    workload: str
    run: int
    count: int
    result: dict[str, float] = field(default_factory=dict[str, float])
    #: "before" (client warmed up), "holding" (idle: all open), "after" (client exited):
    #: each {"VmRSS": KiB, "VmHWM": KiB} of the server, empty where /proc is missing.
    memory: dict[str, dict[str, int]] = field(default_factory=dict[str, dict[str, int]])
    seconds: float = 0.0  # wall time, processes included
    error: str | None = None
    deflate: bool = False  # permessage-deflate on (the library's defaults), else compression off


# -- the figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One figure of one workload, computed from a measurement."""

    workload: str
    name: str
    key: str  # in the JSON report
    higher_is_better: bool
    compute: Callable[[Measurement], float | None]


def _rate(numerator: str, unit: float = 1.0) -> Callable[[Measurement], float | None]:
    return lambda m: m.result[numerator] / m.result["seconds"] / unit


def _growth(at: str, kind: str) -> Callable[[Measurement], float | None]:
    """The server's memory growth per connection, in KiB: ``kind`` at ``at`` - VmRSS before."""

    def compute(m: Measurement) -> float | None:
        before, later = m.memory.get("before", {}), m.memory.get(at, {})
        if "VmRSS" not in before or kind not in later:
            return None
        return (later[kind] - before["VmRSS"]) / m.result["connections"]

    return compute


METRICS = [
    Metric("rtt", "messages/s", "messages_per_s", True, _rate("messages")),
    Metric("rtt", "p50 latency, µs", "p50_us", False, lambda m: m.result["p50_us"]),
    Metric("rtt", "p99 latency, µs", "p99_us", False, lambda m: m.result["p99_us"]),
    Metric("pipe", "messages/s", "messages_per_s", True, _rate("messages")),
    Metric("bulk", "MB/s", "MB_per_s", True, _rate("bytes", 1e6)),
    Metric("handshake", "connections/s", "connections_per_s", True, _rate("connections")),
    Metric("fanin", "messages/s", "messages_per_s", True, _rate("messages")),
    Metric("fanin", "server KiB/connection", "server_KiB_per_connection", False,
           _growth("after", "VmHWM")),
    Metric("idle", "server KiB/connection", "server_KiB_per_connection", False,
           _growth("holding", "VmRSS")),
]  # fmt: skip

#: The issue's targets for trio_ws, as ratios to websockets.trio: (workload, key, bound, ≥?).
TARGETS = [
    ("rtt", "messages_per_s", 1.5, True),
    ("pipe", "messages_per_s", 2.0, True),
    ("handshake", "connections_per_s", 1.5, True),
    ("fanin", "messages_per_s", 1.5, True),
    ("bulk", "MB_per_s", 1.0, True),
    ("fanin", "server_KiB_per_connection", 0.5, False),
    ("idle", "server_KiB_per_connection", 0.5, False),
]


@dataclass
class Figure:
    """One metric of one library over the runs."""

    metric: Metric
    peer: str
    values: list[float]
    failures: int
    #: What the library ran with: "off", "deflate", or "unsupported" (a row of the deflate
    #: table for a library without permessage-deflate: no values, reported as n/a).
    compression: str = "off"

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def _figure(metric: Metric, peer: str, mine: Sequence[Measurement], compression: str) -> Figure:
    values = [v for m in mine if m.error is None and (v := metric.compute(m)) is not None]
    return Figure(metric, peer, values, sum(m.error is not None for m in mine), compression)


def figures(measurements: Sequence[Measurement], peers: Sequence[str]) -> list[Figure]:
    """The table with compression off: every library measured so, metric by metric."""
    result = []
    for metric in METRICS:
        for peer in peers:
            mine = [
                m
                for m in measurements
                if m.workload == metric.workload and m.peer == peer and not m.deflate
            ]
            if mine:
                result.append(_figure(metric, peer, mine, "off"))
    return result


def deflate_figures(measurements: Sequence[Measurement], peers: Sequence[str]) -> list[Figure]:
    """The table with permessage-deflate on; empty when nothing was measured with it.

    The libraries in ``DEFLATING`` from their measurements with it; the ceiling from its own,
    without compression (what a library on trio could at best reach stays the same); any other
    library as unsupported (n/a), for each metric that has a measurement with deflate.
    """
    result = []
    for metric in METRICS:
        deflated = [m for m in measurements if m.workload == metric.workload and m.deflate]
        if not deflated:
            continue
        for peer in peers:
            if peer in DEFLATING:
                mine = [m for m in deflated if m.peer == peer]
                if mine:
                    result.append(_figure(metric, peer, mine, "deflate"))
            elif peer == CEILING:
                mine = [
                    m
                    for m in measurements
                    if m.workload == metric.workload and m.peer == peer and not m.deflate
                ]
                if mine:
                    result.append(_figure(metric, peer, mine, "off"))
            else:
                result.append(Figure(metric, peer, [], 0, "unsupported"))
    return result


def ratio(figure: Figure, others: Sequence[Figure], peer: str) -> float | None:
    """This figure's median / ``peer``'s median for the same metric; None if either is missing."""
    other = next((f for f in others if f.metric is figure.metric and f.peer == peer), None)
    if other is None or figure.median is None or not other.median:
        return None
    return figure.median / other.median


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def table_rows(all_figures: Sequence[Figure]) -> list[list[str]]:
    """Workload, metric, library, median, min-max, ratio to the reference, to the ceiling."""
    rows = []
    previous: Metric | None = None
    for figure in all_figures:
        first = figure.metric is not previous
        previous = figure.metric
        if figure.values:
            median = _number(statistics.median(figure.values))
            spread = f"{_number(min(figure.values))}-{_number(max(figure.values))}"
        elif figure.compression == "unsupported":
            median, spread = "n/a", "no permessage-deflate"
        else:
            median, spread = "failed", ""
        if figure.failures:
            spread += f" ({figure.failures} failed)"
        rows.append(
            [
                figure.metric.workload if first else "",
                figure.metric.name if first else "",
                figure.peer,
                median,
                spread.strip(),
                _times(ratio(figure, all_figures, REFERENCE)),
                _times(ratio(figure, all_figures, CEILING)),
            ]
        )
    return rows


HEADER = ["workload", "metric", "library", "median", "min-max", f"vs {REFERENCE}", f"vs {CEILING}"]


def markdown_table(all_figures: Sequence[Figure]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---|---|--:|--:|--:|--:|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(all_figures)]
    return "\n".join(lines)


def rst_table(all_figures: Sequence[Figure]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [HEADER, *table_rows(all_figures)]:
        lines.append(f"   * - {row[0] or ' '}".rstrip())
        lines += [f"     - {cell}".rstrip() for cell in row[1:]]
    return "\n".join(lines)


def targets(all_figures: Sequence[Figure]) -> list[str]:
    """The issue's targets for trio_ws: one line each, with the ratio measured."""
    lines = []
    for workload, key, bound, at_least in TARGETS:
        figure = next(
            (
                f
                for f in all_figures
                if f.peer == "trio_ws" and f.metric.workload == workload and f.metric.key == key
            ),
            None,
        )
        if figure is None:
            continue
        measured = ratio(figure, all_figures, REFERENCE)
        if measured is None:
            verdict = "not measured"
        else:
            met = measured >= bound if at_least else measured <= bound
            verdict = f"{measured:.2f}x ({'met' if met else 'not met'})"
        sign = "≥" if at_least else "≤"
        lines.append(f"{workload} {figure.metric.name}: {sign} {bound}x — {verdict}")
    return lines


# -- the report -------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    """Read-only git queries about the checkout; "" when git or the repository is missing."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def environment(pinning: str) -> dict[str, Any]:
    """The machine, the versions and the commit a table was measured with."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    changed = _git("diff", "HEAD", "--name-only", "--", "trio_ws") or _git(
        "ls-files", "--others", "--exclude-standard", "--", "trio_ws"
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": {
            package: _version(package)
            for package in ("trio-ws", "trio", "wsproto", "websockets", "trio-websocket")
        },
        "commit": commit + (" with uncommitted changes in trio_ws/" if changed else ""),
        "pinning": pinning,
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def context_lines(env: dict[str, Any], runs: int, counts: dict[str, int]) -> list[str]:
    versions = env["versions"]
    return [
        f"{env['date']}; trio_ws {versions['trio-ws']} at {env['commit']}",
        f"{env['machine']}; {env['python']}",
        f"trio {versions['trio']}, wsproto {versions['wsproto']}, "
        f"websockets {versions['websockets']}, trio-websocket {versions['trio-websocket']}",
        f"{runs} run(s), medians and min-max over the runs; pinning: {env['pinning']}",
        f"{env['seconds']} s in all; load average (1 min) {env['load_average'][0]} before, "
        f"{env['load_average_after'][0]} after",
        "counts: " + ", ".join(f"{w} {counts[w]:,} {COUNTED[w]}" for w in counts),
    ]


EXPLANATION = (
    f"vs {REFERENCE}, vs {CEILING}: this library's median divided by that one's. "
    "For rates above 1 is faster; for latency and memory below 1 is better. "
    f"bulk MB/s: payload bytes echoed per second, one way (10⁶ bytes; {BULK_SIZE:,}-byte "
    "messages); memory: the echo server's growth per connection, from /proc "
    "(fanin: VmHWM after - VmRSS before; idle: VmRSS with all open - VmRSS before)."
)

PLAIN_TITLE = "Compression off"
DEFLATE_TITLE = "permessage-deflate on"
DEFLATE_EXPLANATION = (
    "The same workloads with permessage-deflate (RFC 7692) on, client and server, each "
    f"library with its default settings: {', '.join(DEFLATING)}. "
    f"{CEILING} has no compression here either: the ceiling stays what a library on trio "
    "could at best reach, and its figures are the ones of the table above. trio-websocket has "
    "no permessage-deflate: n/a. rtt's, fanin's and idle's text messages compress, pipe's "
    "64 bytes a little, bulk's random bytes not at all (it measures what trying costs). "
    f"Ratios to {REFERENCE} compare it with deflate on too."
)


def markdown_report(
    plain: Sequence[Figure],
    deflated: Sequence[Figure],
    env: dict[str, Any],
    runs: int,
    counts: dict[str, int],
) -> str:
    """The context, then the table with compression off (with the targets) and the one with
    permessage-deflate on, each when measured; titled when there are both."""
    both = bool(plain) and bool(deflated)
    parts = ["\n".join(f"- {line}" for line in context_lines(env, runs, counts))]
    if plain:
        if both:
            parts.append(f"### {PLAIN_TITLE}")
        parts += [markdown_table(plain), EXPLANATION]
        goals = targets(plain)
        if goals:
            parts.append(
                f"Targets for trio_ws (vs {REFERENCE}):\n" + "\n".join(f"- {g}" for g in goals)
            )
    if deflated:
        if both:
            parts.append(f"### {DEFLATE_TITLE}")
        parts += [DEFLATE_EXPLANATION, markdown_table(deflated)]
        if not plain:
            parts.append(EXPLANATION)
    return "\n\n".join(parts)


def rst_page(
    plain: Sequence[Figure],
    deflated: Sequence[Figure],
    env: dict[str, Any],
    runs: int,
    counts: dict[str, int],
    command: str,
    chart: str | None = None,
) -> str:
    """The docs page: the context, the chart (``chart``: its path from the page, when drawn),
    the table with compression off and its targets, the table with permessage-deflate on."""
    lines = [
        ".. Written by benchmarks/run.py --docs: do not edit, rerun the command this page gives.",
        "",
        "Performance",
        "===========",
        "",
        "trio_ws is measured beside the other WebSocket libraries for trio, ``websockets.trio``",
        "and ``trio-websocket``, and two references: ``websockets.asyncio`` (the same",
        "library on asyncio) and ``raw-trio``, a TCP echo on trio with a 4-byte length",
        "prefix for a frame: what any WebSocket library on trio could at best reach. Each",
        "library talks to itself, its server and its client in two processes pinned to two",
        "cores, on 127.0.0.1; each runs with its defaults, keepalive pings included, except",
        "compression and the largest message (2 MiB). Compression is off in the first table;",
        "the second has the libraries with permessage-deflate run with it on, with their",
        "default settings. ``benchmarks/README.md`` in the repository defines every workload",
        "and figure.",
        "",
        "Workloads: **rtt**, sequential echoes of a 32-byte text message on one connection;",
        "**pipe**, 64-byte binary messages sent by one task while another receives the",
        "echoes, up to 256 in flight; **bulk**, sequential echoes of a 1 MiB binary message;",
        "**handshake**, connect and close, one connection after the other; **fanin**,",
        "concurrent connections each doing 20 echoes; **idle**, connections held open.",
        "",
        "The run",
        "-------",
        "",
        ".. code-block:: sh",
        "",
        f"   {command}",
        "",
        *(f"- {line}" for line in context_lines(env, runs, counts)),
        "",
        "Results",
        "-------",
        "",
    ]
    if chart:
        columns = [
            title
            for title, table in (("compression off", plain), ("permessage-deflate on", deflated))
            if table
        ]
        lines += [
            f".. figure:: {chart}",
            "   :width: 100%",
            "   :alt: Grouped bar charts: for each workload, each library's rate as a ratio to",
            f"         {CEILING}'s (1 is the ceiling), and the echo server's memory per",
            f"         connection in KiB; {' and '.join(columns)}.",
            "",
            "   Each workload's rate as a ratio to raw-trio's (the dashed line at 1 is the",
            "   ceiling; higher is faster), and the server's memory per connection (lower is",
            "   better): the medians of the tables below.",
            "",
        ]
    if plain:
        if deflated:
            lines += [PLAIN_TITLE, "~" * len(PLAIN_TITLE), ""]
        lines += [rst_table(plain), "", EXPLANATION, ""]
        goals = targets(plain)
        if goals:
            lines += [f"Targets for trio_ws (vs {REFERENCE}):", "", *(f"- {g}" for g in goals), ""]
    if deflated:
        if plain:
            lines += [DEFLATE_TITLE, "~" * len(DEFLATE_TITLE), ""]
        lines += [DEFLATE_EXPLANATION, "", rst_table(deflated), ""]
        if not plain:
            lines += [EXPLANATION, ""]
    return "\n".join(lines)


README_BEGIN = "<!-- results: written by benchmarks/run.py --readme, do not edit -->"
README_END = "<!-- end of results -->"


def update_readme(path: Path, report: str, command: str) -> None:
    """Replace what lies between the two markers of ``path`` with this run's report."""
    text = path.read_text(encoding="utf-8")
    head, found, rest = text.partition(README_BEGIN)
    _, found_end, tail = rest.partition(README_END)
    if not found or not found_end:
        raise SystemExit(f"{path}: no {README_BEGIN!r} ... {README_END!r} section")
    section = f"\n\n```sh\n{command}\n```\n\n{report}\n\n"
    path.write_text(head + README_BEGIN + section + README_END + tail, encoding="utf-8")
