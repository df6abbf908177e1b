"""Draw a benchmark run's chart from its JSON: each library's rates as ratios to raw-trio's,
and the echo server's memory per connection.

``python benchmarks/chart.py bench.json docs/_static/performance.svg`` draws the chart of the
JSON that ``run.py --json`` wrote; ``run.py --docs`` draws the same chart, from the same data,
beside the docs page it writes. Needs matplotlib (the ``bench`` extra).

How this works: one column of panels per table in the JSON (``figures``: compression off;
``figures_deflate``: permessage-deflate on, when measured), two rows: the rates (the metrics of
``report.METRICS`` where higher is better) as ratios to raw-trio, the ceiling, with a dashed line
at 1; and the memory per connection in KiB (fanin's peak, idle). Grouped bars: the workloads on
the x axis, one bar per library, its value above it; n/a where a library has no figure (a
failed measurement, or no permessage-deflate).

The SVG is deterministic: the same JSON gives the same bytes (a fixed font drawn as paths, a
fixed ``svg.hashsalt`` for the SVG's ids, no date in its metadata), so that regenerating the
committed chart changes it only when the figures change.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from report import CEILING, METRICS, Metric

#: One table of the JSON, and its column's title.
TABLES = [("figures", "compression off"), ("figures_deflate", "permessage-deflate on")]
RATES = [m for m in METRICS if m.higher_is_better]
MEMORY = [m for m in METRICS if m.key == "server_KiB_per_connection"]
#: The Okabe-Ito palette (readable with any colour vision), one colour per library, fixed so
#: that a library keeps its colour whatever was run.
COLOURS = {
    "trio_ws": "#0072B2",
    "websockets.trio": "#E69F00",
    "trio-websocket": "#009E73",
    "websockets.asyncio": "#CC79A7",
    "raw-trio": "#555555",
}
OTHER_COLOURS = ["#56B4E9", "#D55E00", "#F0E442", "#000000"]
MEMORY_LABELS = {"fanin": "fanin\n(peak, busy)", "idle": "idle\n(open, once used)"}


def _libraries(tables: Sequence[Sequence[Mapping[str, Any]]]) -> list[str]:
    """The libraries in the order the tables give them."""
    names: list[str] = []
    for table in tables:
        for entry in table:
            if entry["library"] not in names:
                names.append(entry["library"])
    return names


def _colour(library: str, libraries: Sequence[str]) -> str:
    if library in COLOURS:
        return COLOURS[library]
    others = [name for name in libraries if name not in COLOURS]
    return OTHER_COLOURS[others.index(library) % len(OTHER_COLOURS)]


def _bars(
    ax: Axes,
    table: Sequence[Mapping[str, Any]],
    metrics: Sequence[Metric],
    libraries: Sequence[str],
    value: str,
    digits: int,
) -> float:
    """Grouped bars of ``value`` ("median" or a ratio's key), one group per metric present;
    returns the highest value drawn (0 if none)."""
    present = [
        m
        for m in metrics
        if any(e["workload"] == m.workload and e["metric"] == m.key for e in table)
    ]
    width = 0.84 / len(libraries)
    highest = 0.0
    for j, library in enumerate(libraries):
        for i, metric in enumerate(present):
            entry = next(
                (
                    e
                    for e in table
                    if e["library"] == library
                    and e["workload"] == metric.workload
                    and e["metric"] == metric.key
                ),
                None,
            )
            if entry is None:
                continue
            x = i + (j - (len(libraries) - 1) / 2) * width
            height = entry.get(value)
            if height is None:
                ax.text(x, 0, " n/a", ha="center", va="bottom", rotation=90, fontsize=6.5)
                continue
            ax.bar(x, height, width, color=_colour(library, libraries), linewidth=0)
            ax.text(
                x, height, f" {height:.{digits}f}", ha="center", va="bottom", rotation=90,
                fontsize=6.5,
            )  # fmt: skip
            highest = max(highest, float(height))
    ax.set_xticks(range(len(present)))
    if metrics is MEMORY:
        ax.set_xticklabels([MEMORY_LABELS.get(m.workload, m.workload) for m in present])
    else:
        ax.set_xticklabels([f"{m.workload}\n{m.name}" for m in present])
    ax.set_xlim(-0.5, len(present) - 0.5)
    ax.tick_params(axis="x", length=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", linewidth=0.4, color="#dddddd")
    ax.set_axisbelow(True)
    return highest


def render(data: Mapping[str, Any]) -> Figure:
    """The chart of a run's JSON (as run.py writes it), as a matplotlib Figure."""
    tables = [(data[key], title) for key, title in TABLES if data.get(key)]
    if not tables:
        raise ValueError("no figures in this JSON: nothing to draw")
    libraries = _libraries([table for table, _ in tables])

    def has(metrics: Sequence[Metric]) -> bool:
        keys = {(m.workload, m.key) for m in metrics}
        return any((e["workload"], e["metric"]) in keys for table, _ in tables for e in table)

    rows = [metrics for metrics in (RATES, MEMORY) if has(metrics)]
    figure = Figure(figsize=(5.6 * len(tables) + 0.6, 3.5 * len(rows) + 1.0), layout="constrained")
    axes = figure.subplots(len(rows), len(tables), squeeze=False, sharey="row")
    for r, metrics in enumerate(rows):
        highest = 0.0
        for c, (table, title) in enumerate(tables):
            ax = axes[r][c]
            if metrics is RATES:
                highest = max(
                    highest, _bars(ax, table, metrics, libraries, f"ratio_to_{CEILING}", 2)
                )
                ax.axhline(1.0, color="#333333", linewidth=0.8, linestyle=(0, (4, 3)))
                ax.set_title(f"{title}: rate / {CEILING}'s (higher is faster)")
            else:
                highest = max(highest, _bars(ax, table, metrics, libraries, "median", 1))
                ax.set_title(f"{title}: server KiB per connection (lower is better)")
        axes[r][0].set_ylim(0, max(highest, 1.0) * 1.2)
        axes[r][0].set_ylabel(f"ratio to {CEILING}" if metrics is RATES else "KiB per connection")
    handles = [Patch(color=_colour(library, libraries), label=library) for library in libraries]
    figure.legend(handles=handles, loc="outside upper center", ncols=len(libraries), frameon=False)
    env = data.get("environment", {})
    facts = [
        f"medians of {data.get('runs', '?')} run(s)",
        env.get("date", ""),
        f"trio_ws at {env['commit']}" if env.get("commit") else "",
        env.get("machine", ""),
    ]
    figure.supxlabel("; ".join(f for f in facts if f), fontsize=7, color="#555555")
    return figure


def draw(data: Mapping[str, Any], path: Path) -> None:
    """Write the chart of a run's JSON to ``path`` as SVG: the same data, the same bytes."""
    # What makes the SVG the same bytes for the same JSON (see the module's docstring).
    with matplotlib.rc_context(
        {
            "font.family": "DejaVu Sans",  # shipped with matplotlib: the same glyphs anywhere
            "svg.fonttype": "path",
            "svg.hashsalt": "trio_ws benchmarks",
            "font.size": 8.0,
        }
    ):
        figure = render(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="svg", metadata={"Date": None})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Draw a benchmark run's chart (SVG) from the JSON that run.py --json wrote."
    )
    parser.add_argument("json", type=Path, help="the run's JSON (run.py --json)")
    parser.add_argument("svg", type=Path, help="where to write the chart, e.g. docs/_static/...")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text(encoding="utf-8"))
    draw(data, args.svg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
