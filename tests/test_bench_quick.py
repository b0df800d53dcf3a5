"""`otbridge bench --quick` end to end, so the harness cannot rot: every stage runs and reports
its figures. Correctness only; the figures are not judged here (that is what the table's
target column is for), and --quick sets no speed threshold that a busy machine could miss in a
way that fails a stage. Also: a result's `met` follows its typed target (no stack)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import STAGES
from bench.common import Result, Target, at_least, at_most, table
from otbridge.settings import Settings

ROOT = Path(__file__).parents[1]
# per stage, figures it must report (the start of the figure's name)
FIGURES = {
    "producer": ["kafka-producer-perf-test"],
    "connector": ["Modbus, one process", "Modbus, CPU per 10k", "OPC UA, one process",
                  "OPC UA, CPU per 10k", "backlog replay after an outage, replay_per_s 100,000",
                  "backlog replay after an outage, replay_per_s unlimited"],
    "jobs": ["preload", "downsample p=1", "oee p=1", "conditions p=1"],
    "alternatives": ["plain Python script", "otbridge / plain", "Quix Streams",
                     "otbridge / quix"],
    "latency": ["reading->alert p50", "reading->alert p99", "load achieved", "alerts seen"],
    "scale": ["downsample p=1, 100 keys", "downsample p=1, 10,000 keys"],
    "demo": ["otbridge demo: command -> first OEE", "Flink client CPU"],
    "memory": ["whole demo RSS"],
}


def test_result_met_follows_its_target() -> None:
    assert Result("s", "f", 10, "x/s", target=at_least(10, "x/s")).met is True
    assert Result("s", "f", 9.9, "x/s", target=at_least(10, "x/s")).met is False
    assert Result("s", "f", 10, "ms", target=at_most(9, "ms")).met is False
    assert Result("s", "f", 3, "", target=Target("=", 3, "")).met is True
    assert Result("s", "f", 3, "").met is None
    # a stage may make `met` stricter (e.g. the output differs), never looser
    assert Result("s", "f", 10, "x", target=at_least(3, "x"), met=False).met is False
    assert Result("s", "f", 1, "x", target=at_least(3, "x"), met=True).met is False
    with pytest.raises(ValueError):
        Result("s", "f", 1, "x", met=True)
    assert str(at_least(50_000, "readings/s")) == ">= 50,000 readings/s"
    assert str(Target(">=", 3.0, "x")) == ">= 3x"
    rows = table([Result("s", "f", 1, "x", target=at_least(3, "x")), Result("s", "g", 2, "ms")])
    assert rows.splitlines()[2:] == ["| s | f | 1 x | >= 3x | **no** | 0 | 0.0 |  |",
                                     "| s | g | 2 ms | - | - | 0 | 0.0 |  |"]


@pytest.mark.timeout(900)
def test_quick_bench_runs_every_stage(live_stack: Settings, tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "otbridge.cli", "bench", "--quick", "--json", str(out_json),
         "--markdown", str(out_md)],
        capture_output=True, text=True, cwd=ROOT, timeout=880)
    took = time.monotonic() - started
    print(result.stdout[-6000:])
    print(f"bench --quick took {took:.0f} s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert report["failed_stages"] == [] and report["quick"] is True
    assert set(FIGURES) == set(STAGES)
    for stage, wanted in FIGURES.items():
        figures = [r["figure"] for r in report["results"] if r["stage"] == stage]
        for start in wanted:
            assert any(f.startswith(start) for f in figures), (stage, start, figures)
    for r in report["results"]:
        assert r["value"] >= 0 and r["unit"], r  # a number (NaN fails), in a unit
        if r["target"] is None:
            assert r["met"] is None, r
        else:
            assert r["target"]["op"] in (">=", "<=", "=") and r["met"] in (True, False), r
    connector_rates = [r for r in report["results"] if r["figure"].endswith(", one process")]
    assert len(connector_rates) == 2 and all(r["target"] is None for r in connector_rates)
    table_md = out_md.read_text()
    assert table_md.startswith("| stage | figure | value | target | met |")
    assert table_md.count("\n") == len(report["results"]) + 2
