"""`otbridge demo` headless, `otbridge tail --json`, `otbridge topics`: what a newcomer runs
first (the README's commands are tests/test_readme.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import kafkahelp as kh
import pytest
from kafkahelp import at, reading

from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.net import free_ports
from otbridge.settings import Settings

ROOT = Path(__file__).parents[1]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otbridge.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_tail_json_matches_produced_records(live_stack: Settings, unique: str) -> None:
    topic = f"test.tail.{unique}"
    ensure_topics(live_stack, [TopicSpec(topic, partitions=1)])
    sent = [reading("acme/berlin/body/line1/press01", "temperature", 40.0 + i, at(10, 0, i),
                    seq=i) for i in range(3)]
    kh.produce(live_stack, topic, "Reading", sent)
    result = cli("tail", topic, "--from-beginning", "--max", "3", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["key"], r["offset"], r["value"]["value"], r["value"]["seq"]) for r in lines] == [
        ("acme/berlin/body/line1/press01", i, 40.0 + i, i) for i in range(3)]
    assert lines[0]["value"]["source_ts"] == "2026-01-05T10:00:00Z"

    only = cli("tail", topic, "--from-beginning", "--json", "--key", "nope",
               "--idle-timeout", "3")
    assert only.returncode == 0 and only.stdout == ""


def test_topics_lists_counts_and_schemas(live_stack: Settings) -> None:
    ensure_topics(live_stack)
    result = cli("topics", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["topic"]: r for r in json.loads(result.stdout)}
    assert set(rows) == set(live_stack.topics.all())
    assert rows[live_stack.topics.assets]["exists"]


@pytest.mark.timeout(900)
def test_demo_headless_fills_every_result_topic_and_leaves_nothing(live_stack: Settings) -> None:
    # 120 s of plant plus set-up (three job submissions) and teardown
    # simulators on free ports: a demo on the default ones may be running beside the tests
    modbus_port, opcua_port = free_ports(2)
    result = cli("demo", "--duration", "120", "--no-ui", "--modbus-port", str(modbus_port),
                 "--opcua-port", str(opcua_port), timeout=800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "records received" in result.stderr
    # OEE values and an alert on screen within 90 s of the jobs running. From the stack being
    # up it is longer on 2 cores: planning the three jobs (a client JVM each) comes first, and
    # its time is printed, not asserted
    line = result.stderr.split("first record after the stack was up:")[1].splitlines()[0]
    after_jobs = dict(re.findall(r"(iiot\.[a-z0-9.]+) (\d+) s", line.split("submitted")[1]))
    assert int(after_jobs[live_stack.topics.oee]) <= 90, line
    assert int(after_jobs[live_stack.topics.alerts]) <= 90, line
    print(line)
    pids = [int(p) for p in re.findall(r"\(pid (\d+),", result.stderr)]
    assert len(pids) == 4  # two simulators, two connectors
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"
    running = [j for j in json.loads(cli("jobs", "list", "--json").stdout)
               if j["state"] == "RUNNING" and j["name"] in
               ("otbridge-oee", "otbridge-conditions", "otbridge-downsample")]
    assert running == []


def test_view_shows_state_current_window_and_last_hour() -> None:
    from datetime import timedelta

    from rich.console import Console

    from otbridge.demo.view import last_hour, render

    def window(start_min: int, run_s: float, total: int, good: int) -> dict[str, object]:
        start = at(10, start_min)
        return {"asset": "acme/a/b/l1/press01", "window_start": start,
                "window_end": start + timedelta(minutes=1), "planned_s": 60.0, "run_s": run_s,
                "unplanned_stop_s": 60.0 - run_s, "planned_stop_s": 0.0, "unknown_s": 0.0,
                "total_count": total, "good_count": good, "ideal_cycle_time_s": 2.0,
                "availability": run_s / 60, "performance": 2.0 * total / run_s,
                "quality": good / total, "oee": None}

    windows = [window(0, 50.0, 24, 22), window(1, 60.0, 30, 30)]
    # summed components, not an average of the two windows' ratios
    hour = last_hour(windows)
    assert round(hour["availability"], 4) == round(110 / 120, 4)
    assert round(hour["performance"], 4) == round(2.0 * 54 / 110, 4)
    assert round(hour["quality"], 4) == round(52 / 54, 4)
    assert round(hour["oee"], 4) == round(2.0 * 52 / 120, 4)

    class Snap:
        def snapshot(self) -> dict[str, dict[str, dict[str, object]]]:
            return {"iiot.oee": {f"k{i}": w for i, w in enumerate(windows)}, "iiot.alerts": {},
                    "iiot.readings.1m": {},
                    "states": {"acme/a/b/l1/press01": {"quality": "GOOD", "value": 3.0,
                                                       "text": None}}}

    console = Console(width=250, record=True)
    console.print(render(Snap(), Settings(), {}))  # type: ignore[arg-type]
    text = console.export_text()
    row = next(line for line in text.splitlines() if "press01" in line)
    assert "DOWN" in row and "10:01:00+60s" in row and "100.0%" in row
    assert f"{100 * 110 / 120:5.1f}%" in row  # last-hour availability
