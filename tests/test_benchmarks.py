"""benchmarks/run.py runs end to end: a smoke run, with no assertion on any figure."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import trio

pytest.importorskip("websockets.trio")  # new in websockets 17.0
pytest.importorskip("trio_websocket")

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
SCENARIOS = ["latency", "throughput 1KiB", "throughput 64KiB", "connection setup", "memory"]


async def test_quick_benchmark_prints_a_trio_ws_figure_for_every_scenario(
    tmp_path: Path,
) -> None:
    """One quick round exits 0 and reports a positive trio_ws figure in every scenario's row."""
    report = tmp_path / "bench.json"
    result = await trio.run_process(
        [sys.executable, str(RUN), "--quick", "--rounds", "1", "--json", str(report)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    header = next(line for line in lines if line.startswith("scenario"))
    trio_ws_column = re.split(r"\s{2,}", header).index("trio_ws")
    for scenario in SCENARIOS:
        rows = [re.split(r"\s{2,}", line) for line in lines if line.startswith(scenario + "  ")]
        assert rows, f"no row for {scenario!r} in:\n{result.stdout.decode()}"
        for row in rows:
            assert float(row[trio_ws_column].replace(",", "")) > 0, row

    figures = json.loads(report.read_text(encoding="utf-8"))
    assert {row["scenario"] for row in figures["rows"]} == set(SCENARIOS)
    assert all(len(row["values"]["trio_ws"]) == 1 for row in figures["rows"])
