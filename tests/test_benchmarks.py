"""benchmarks/run.py runs end to end: a smoke run, with no assertion on any figure's value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

pytest.importorskip("websockets.trio")  # new in websockets 17.0
pytest.importorskip("trio_websocket")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
LIBRARIES = ["trio_ws", "websockets.trio", "trio-websocket", "websockets.asyncio", "raw-trio"]
QUICK = {"rtt": 2_000, "idle": 500}  # QUICK_COUNTS in benchmarks/workloads.py
HAS_PROC = Path("/proc/self/status").exists()  # where run.py reads the server's memory


@pytest.mark.slow
async def test_quick_run_measures_every_library_and_writes_the_report(tmp_path: Path) -> None:
    """rtt and idle, quick, every library: exit 0; every measurement did the work it was asked,
    the server's memory was read at each step, and the table, the JSON and the page agree."""
    report, page = tmp_path / "bench.json", tmp_path / "performance.rst"
    command = [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--workload", "rtt,idle"]
    with trio.fail_after(120):
        result = await trio.run_process(
            [*command, "--json", str(report), "--docs", str(page)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()

    data: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    measurements = data["measurements"]
    assert sorted((m["workload"], m["peer"]) for m in measurements) == sorted(
        (workload, library) for workload in QUICK for library in LIBRARIES
    )
    for m in measurements:
        assert m["error"] is None, m
        assert m["count"] == QUICK[m["workload"]]
        if m["workload"] == "rtt":
            assert m["result"]["messages"] == QUICK["rtt"]
            assert 0 < m["result"]["p50_us"] <= m["result"]["p99_us"]
        else:
            assert m["result"]["connections"] == QUICK["idle"]
        if HAS_PROC:
            steps = {"before", "after"} | ({"holding"} if m["workload"] == "idle" else set())
            assert set(m["memory"]) == steps
            assert all(set(m["memory"][s]) == {"VmRSS", "VmHWM"} for s in steps)

    figures = {(f["workload"], f["metric"], f["library"]): f for f in data["figures"]}
    metrics = {("rtt", "messages_per_s"), ("rtt", "p50_us"), ("rtt", "p99_us")}
    metrics.add(("idle", "server_KiB_per_connection"))
    assert set(figures) == {(w, m, lib) for w, m in metrics for lib in LIBRARIES}
    for figure in figures.values():
        assert len(figure["values"]) == 1 and figure["failures"] == 0
        assert figure["median"] is not None
    for library in ("websockets.trio", "raw-trio"):
        assert figures["rtt", "messages_per_s", library]["ratio_to_" + library] == 1.0

    stdout = result.stdout.decode()
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(figures)  # the header, then one row per figure
    assert "list-table::" in page.read_text(encoding="utf-8")


def test_unknown_library_is_refused() -> None:
    """--only names libraries run.py knows; anything else is a usage error, before any run."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown library nope" in result.stderr
