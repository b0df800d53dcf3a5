"""jobs/oee on the real Flink cluster: DESIGN.md's worked example and the edge cases, exactly."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import kafkahelp as kh
import pytest
from kafkahelp import at, reading

from otbridge import jobs
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings

CODES = {"1": "RUNNING", "2": "UNPLANNED_STOP", "3": "UNPLANNED_STOP", "4": "UNPLANNED_STOP",
         "5": "PLANNED_STOP", "6": "PLANNED_STOP"}
LINE = "acme/berlin/body/line1"
A, B, C, D, E = (f"{LINE}/{m}" for m in ("example", "reset", "setup", "gap", "boundary"))


def asset(path: str) -> dict:
    return {"asset": path, "name": path.rsplit("/", 1)[1], "ideal_cycle_time_s": 2.0,
            "state_tag": "state", "total_count_tag": "count_total",
            "good_count_tag": "count_good", "state_codes": CODES,
            "updated_ts": kh.ms(at(0, 0))}


class Plant:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def add(self, path: str, tag: str, value: float | None, ts: datetime,
            quality: str = "GOOD") -> None:
        self.records.append(reading(path, tag, value, ts, seq=len(self.records), quality=quality,
                                    unit=None))

    def heartbeat(self, path: str, start: datetime, end: datetime, every_s: int = 10) -> None:
        t = start
        while t <= end:
            self.add(path, "temperature", 40.0, t)
            t = t.fromtimestamp(t.timestamp() + every_s, t.tzinfo)


def plant_input() -> list[dict]:
    p = Plant()
    # A: the worked example. RUNNING since 09:59:30, UNPLANNED_STOP 10:00:40, RUNNING 10:00:50
    p.add(A, "state", 1, at(9, 59, 30))
    p.heartbeat(A, at(9, 59, 40), at(10, 0, 30))
    p.add(A, "count_total", 1000, at(10, 0, 0))
    p.add(A, "count_good", 500, at(10, 0, 0))
    p.add(A, "state", 3, at(10, 0, 40))
    p.add(A, "state", 1, at(10, 0, 50))
    p.add(A, "temperature", 41.0, at(10, 0, 48))  # out of order, within the 5 s bound
    # a counter glitch a PLC can produce (all ones of an unsigned 64-bit register): dead-
    # lettered as out_of_range, the counts and the job untouched (the worked example holds)
    p.add(A, "count_total", 1e19, at(10, 0, 30))
    p.add(A, "count_total", 1024, at(10, 0, 59.9))
    p.add(A, "count_good", 522, at(10, 0, 59.9))
    p.add(A, "temperature", 41.0, at(10, 0, 56))  # out of order, within the 5 s bound
    # B: a counter reset (1000 -> 3)
    p.add(B, "state", 1, at(10, 0, 0))
    p.heartbeat(B, at(10, 0, 10), at(10, 0, 50))
    for ts, total in ((1, 998), (20, 1000), (30, 3), (50, 5)):
        p.add(B, "count_total", total, at(10, 0, ts))
    p.add(B, "count_good", 500, at(10, 0, 1))
    p.add(B, "count_good", 505, at(10, 0, 50))
    # C: a planned stop (setup) for the first 15 s
    p.add(C, "state", 5, at(10, 0, 0))
    p.add(C, "state", 1, at(10, 0, 15))
    p.heartbeat(C, at(10, 0, 10), at(10, 0, 50))
    # D: no GOOD data from 10:00:00 until 10:00:40 (a BAD one at 10:00:10): 20 s UNKNOWN
    p.add(D, "state", 1, at(10, 0, 0))
    p.add(D, "temperature", None, at(10, 0, 10), quality="BAD")
    p.add(D, "state", 1, at(10, 0, 40))
    p.add(D, "temperature", 40.0, at(10, 0, 50))
    # E: a state change exactly on the window boundary
    p.add(E, "state", 1, at(9, 59, 30))
    p.heartbeat(E, at(9, 59, 40), at(9, 59, 50))
    p.add(E, "state", 3, at(10, 0, 0))
    p.heartbeat(E, at(10, 0, 10), at(10, 0, 50))
    # keep event order except the two deliberate swaps above
    return sorted(p.records, key=lambda r: r["source_ts"] if r["asset"] != A or
                  r["source_ts"] not in (kh.ms(at(10, 0, 48)), kh.ms(at(10, 0, 56)))
                  else r["source_ts"] + 3000)


@pytest.fixture(scope="module")
def oee_rows(live_stack: Settings) -> dict[tuple[str, str], dict]:
    import uuid

    settings, unique = live_stack, uuid.uuid4().hex[:10]
    topics = {r: f"test.{r}.{unique}" for r in ("readings", "assets", "oee", "dlq")}
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    kh.produce(settings, topics["assets"], "Asset", [asset(x) for x in (A, B, C, D, E)],
               timestamp_field=None)
    # a later reading of another asset moves event time past every window of interest
    clock = reading(f"{LINE}/clock", "temperature", 1.0, at(10, 5, 0), seq=9999)
    kh.produce(settings, topics["readings"], "Reading", [*plant_input(), clock])
    job_id = jobs.submit(settings, "oee", job_args=[
        f"--name-suffix=-{unique}", "--stale-after-s=20",
        *(f"--topic={r}={t}" for r, t in topics.items())])
    try:
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
        # A, E: 09:59 .. 10:01; B, C, D: 10:00 .. 10:01 (known time reaches past 10:01)
        rows = kh.consume(settings, topics["oee"], 13, timeout_s=120, settle_s=12)
        dead = kh.consume(settings, topics["dlq"], 1, timeout_s=120, settle_s=2)
        assert [(v["reason"], v["producer"]) for _, v, _ in dead] == [("out_of_range", "oee")]
        assert "count_total: value 1.000e+19 is outside +/-2^63" in dead[0][1]["detail"]
        assert kh.job_restarts(settings, job_id) == (0, [])
    finally:
        jobs.cancel(settings, job_id)
    out = {}
    for key, value, _ in rows:
        k = (value["asset"], value["window_start"].strftime("%H:%M"))
        assert k not in out, f"duplicate window {k}"
        assert key.decode() == f"{value['asset']}|2026-01-05T{k[1]}:00Z"
        out[k] = value
    return out


def test_worked_example(oee_rows) -> None:
    w = oee_rows[(A, "10:00")]
    assert (w["planned_s"], w["run_s"], w["unplanned_stop_s"], w["planned_stop_s"],
            w["unknown_s"]) == (60.0, 50.0, 10.0, 0.0, 0.0)
    assert (w["total_count"], w["good_count"], w["ideal_cycle_time_s"]) == (24, 22, 2.0)
    assert [round(w[k], 4) for k in ("availability", "performance", "quality", "oee")] == [
        0.8333, 0.96, 0.9167, 0.7333]
    assert w["window_end"] == at(10, 1)


def test_counter_reset(oee_rows) -> None:
    w = oee_rows[(B, "10:00")]
    assert (w["total_count"], w["good_count"]) == (2 + 3 + 2, 5)


def test_planned_stop(oee_rows) -> None:
    w = oee_rows[(C, "10:00")]
    assert (w["planned_stop_s"], w["planned_s"], w["run_s"], w["availability"]) == (
        15.0, 45.0, 45.0, 1.0)


def test_unknown_gap_is_not_downtime(oee_rows) -> None:
    w = oee_rows[(D, "10:00")]
    assert (w["run_s"], w["unknown_s"], w["unplanned_stop_s"], w["planned_s"]) == (
        40.0, 20.0, 0.0, 40.0)
    assert w["availability"] == 1.0


def test_state_change_on_window_boundary(oee_rows) -> None:
    before, after = oee_rows[(E, "09:59")], oee_rows[(E, "10:00")]
    assert (before["unknown_s"], before["run_s"], before["unplanned_stop_s"]) == (30.0, 30.0, 0)
    assert (after["run_s"], after["unplanned_stop_s"], after["availability"]) == (0.0, 60.0, 0.0)


def test_bounded_is_refused_in_one_line(live_stack: Settings) -> None:
    """The job's own error (raised in the Flink client) reaches the user as one line, exit 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "otbridge.cli", "jobs", "submit", "oee", "--bounded"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("otbridge: error: job 'oee': oee: --bounded is not supported")
    assert proc.stderr.count("\n") == 1, proc.stderr[-3000:]
