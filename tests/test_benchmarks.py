"""benchmarks/run.py runs end to end: a smoke run, with no assertion on any figure's value;
benchmarks/chart.py draws the same SVG from the same JSON."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
LIBRARIES = ["trio_ws", "websockets.trio", "trio-websocket", "websockets.asyncio", "raw-trio"]
DEFLATING = ["trio_ws", "websockets.trio", "websockets.asyncio"]  # DEFLATING in report.py
QUICK = {"rtt": 2_000, "idle": 500}  # QUICK_COUNTS in benchmarks/workloads.py
HAS_PROC = Path("/proc/self/status").exists()  # where run.py reads the server's memory


@pytest.mark.slow
async def test_quick_run_measures_every_library_and_writes_the_report(tmp_path: Path) -> None:
    """rtt and idle, quick, every library with compression off and those with permessage-deflate
    with it on: exit 0; every measurement did the work it was asked (a client fails unless its
    handshake agreed on the compression asked), the server's memory was read at each step, and
    the tables, the JSON, the page and its chart agree."""
    pytest.importorskip("websockets.trio", reason="needs websockets 17 or later (bench extra)")
    pytest.importorskip("trio_websocket", reason="needs trio-websocket (bench extra)")
    pytest.importorskip("matplotlib", reason="needs matplotlib (bench extra)")
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
    assert sorted((m["workload"], m["peer"], m["deflate"]) for m in measurements) == sorted(
        [(workload, library, False) for workload in QUICK for library in LIBRARIES]
        + [(workload, library, True) for workload in QUICK for library in DEFLATING]
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
    assert {f["compression"] for f in figures.values()} == {"off"}

    # The deflate table: the same rows; raw-trio (the ceiling) from its measurements without
    # compression, trio-websocket (no permessage-deflate) n/a.
    deflated = {(f["workload"], f["metric"], f["library"]): f for f in data["figures_deflate"]}
    assert set(deflated) == set(figures)
    for (workload, metric, library), figure in deflated.items():
        if library in DEFLATING:
            assert figure["compression"] == "deflate"
            assert len(figure["values"]) == 1 and figure["failures"] == 0
        elif library == "raw-trio":
            assert figure["compression"] == "off"
            assert figure["values"] == figures[workload, metric, library]["values"]
        else:
            assert figure["compression"] == "unsupported"
            assert figure["values"] == [] and figure["median"] is None
            assert figure["ratio_to_raw-trio"] is None

    stdout = result.stdout.decode()
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 * (1 + len(figures))  # twice: the header, then one row per figure
    assert "| n/a | no permessage-deflate | n/a | n/a |" in stdout
    text = page.read_text(encoding="utf-8")
    assert text.count("list-table::") == 2
    assert ".. figure:: _static/performance.svg" in text
    assert (tmp_path / "_static" / "performance.svg").read_bytes().startswith(b"<?xml")


FIXTURE: dict[str, Any] = {
    "command": "python benchmarks/run.py --workload rtt,idle",
    "environment": {"date": "2026-01-01 00:00 UTC", "commit": "0000000", "machine": "test"},
    "runs": 1,
    "counts": {"rtt": 2_000, "idle": 500},
    "figures": [
        {"workload": w, "metric": m, "library": lib, "median": v, "ratio_to_raw-trio": r}
        for w, m, lib, v, r in [
            ("rtt", "messages_per_s", "trio_ws", 6_000.0, 0.68),
            ("rtt", "messages_per_s", "trio-websocket", None, None),  # a failed measurement
            ("rtt", "messages_per_s", "raw-trio", 8_800.0, 1.0),
            ("rtt", "p50_us", "trio_ws", 159.0, 1.44),  # a latency: not in the chart
            ("idle", "server_KiB_per_connection", "trio_ws", 17.7, 3.17),
            ("idle", "server_KiB_per_connection", "trio-websocket", 19.5, 3.49),
            ("idle", "server_KiB_per_connection", "raw-trio", 5.58, 1.0),
        ]
    ],
    "figures_deflate": [
        {"workload": w, "metric": m, "library": lib, "median": v, "ratio_to_raw-trio": r}
        for w, m, lib, v, r in [
            ("rtt", "messages_per_s", "trio_ws", 5_000.0, 0.57),
            ("rtt", "messages_per_s", "trio-websocket", None, None),  # unsupported
            ("rtt", "messages_per_s", "raw-trio", 8_800.0, 1.0),
        ]
    ],
}


def test_chart_is_drawn_from_the_json_the_same_bytes_every_time(tmp_path: Path) -> None:
    """benchmarks/chart.py draws an SVG from a run's JSON; drawing it again gives the same bytes
    (no date, fixed ids), so the committed chart changes only with the figures."""
    pytest.importorskip("matplotlib", reason="needs matplotlib (bench extra)")
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(FIXTURE), encoding="utf-8")
    drawn = []
    for name in ("first.svg", "second.svg"):
        result = subprocess.run(
            [sys.executable, str(BENCHMARKS / "chart.py"), str(source), str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        drawn.append((tmp_path / name).read_bytes())
    assert drawn[0] == drawn[1]
    assert drawn[0].startswith(b"<?xml") and b"<svg" in drawn[0]
    assert b"<dc:date>" not in drawn[0]


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


async def test_a_connection_pair_starts_three_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """handshake_cost.py, on a few connections: the times and counts it reports are there, and
    a pair (client and server) starts three tasks, the server's handler and the two readers: the
    client's keepalive is timed by its reader, and connecting to an IP address starts no
    happy-eyeballs task."""
    pytest.importorskip("websockets.trio", reason="needs websockets 17 or later (bench extra)")
    pytest.importorskip("trio_websocket", reason="needs trio-websocket (bench extra)")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    handshake_cost = importlib.import_module("handshake_cost")
    result = await handshake_cost.measure("trio_ws", True, batches=3, batch=5, counted=20)
    assert result["us_per_pair"] > 0
    assert result["tasks"] == 3.0
    assert 0 < result["passes"] < 20
    assert 0 < result["cancel_scopes"] < 15
    assert result["calls"] > 0


def test_the_published_command_names_no_path_of_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command written into the README and the docs page shows an absolute path by its
    file name only: it says where the run wrote, on a machine the reader does not have."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    run = importlib.import_module("run")
    assert run._shown("/home/someone/out/bench.json") == "bench.json"
    assert run._shown("--json=/srv/bench.json") == "--json=bench.json"
    assert run._shown("docs/performance.rst") == "docs/performance.rst"
    assert run._shown("--only=trio_ws,raw-trio") == "--only=trio_ws,raw-trio"
