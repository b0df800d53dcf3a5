"""`otbridge bench --quick` end to end, so the harness cannot rot: every stage runs and prints
its figures. Correctness only; the figures are not judged here (that is what the table's
target column is for)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import STAGES
from otbridge.settings import Settings

ROOT = Path(__file__).parents[1]


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
    stages = {r["stage"] for r in report["results"]}
    assert stages == set(list(STAGES))
    for r in report["results"]:
        assert r["value"] >= 0 and r["unit"], r
        if r["target"] is not None:
            assert r["met"] in (True, False), r
    table = out_md.read_text()
    assert table.startswith("| stage | figure | value | target | met |")
    assert table.count("\n") == len(report["results"]) + 2
