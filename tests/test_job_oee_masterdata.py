"""jobs/oee and master data that changes while the job runs: readings of an asset without master
data wait 10 windows, then are dropped and counted (`readingsWithoutMasterData`, never silently);
master data that arrives later, and an update of an asset's master data, are used from the next
window that closes, without a restart."""

from __future__ import annotations

import time
import uuid

import kafkahelp as kh
from kafkahelp import at, reading
from test_job_oee import CODES, LINE, asset

from jobs.oee.job import MASTERLESS_BACKLOG_WINDOWS
from jobs.oee.timeline import Master, replay
from otbridge import jobs
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings

KNOWN, NEWCOMER = f"{LINE}/known", f"{LINE}/newcomer"
STEP_S = 5


def run(path: str, first_min: int, last_min: int, seq: int) -> list[dict]:
    """One reading of state, count_total and count_good every 5 s from 10:first to 10:last
    (exclusive): the machine runs, with a stop of 15 s every 3 minutes."""
    records = []
    for k in range(first_min * 60 // STEP_S, last_min * 60 // STEP_S):
        t = at(10, 0, 0).fromtimestamp(at(10, 0, 0).timestamp() + STEP_S * k, at(10, 0).tzinfo)
        state = 3 if k % 36 in (5, 6, 7) else 1
        total = 2 * k
        good = total - k // 7
        for tag, value in (("state", state), ("count_total", total), ("count_good", good)):
            records.append(reading(path, tag, float(value), t, seq=seq + len(records), unit=None))
    return records


def windows(records: list[dict], path: str, ict: float, until_ms: int) -> dict[int, dict]:
    mine = [(r["source_ts"], r["tag"], r["value"], r["text"], r["quality"])
            for r in records if r["asset"] == path]
    master = Master(ideal_cycle_time_s=ict, state_codes=CODES)
    return {w["window_start"]: w for w in replay(mine, master, window_ms=60_000,
                                                 stale_after_ms=60_000, until_ms=until_ms)}


def fields(w: dict) -> tuple:
    return tuple(None if w[k] is None else round(w[k], 6) for k in (
        "run_s", "unplanned_stop_s", "planned_stop_s", "unknown_s", "total_count", "good_count",
        "ideal_cycle_time_s", "availability", "performance", "quality", "oee"))


def got(rows: list, path: str) -> dict[int, tuple]:
    out: dict[int, tuple] = {}
    for _, v, _ in rows:
        if v["asset"] == path:
            start = kh.ms(v["window_start"])
            assert start not in out, f"duplicate window {path} {v['window_start']}"
            out[start] = fields(v)
    return out


def wait_for_metric(settings: Settings, job_id: str, name: str, want: int,
                    timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    value = kh.operator_metric(settings, job_id, name)
    while value != want and time.monotonic() < deadline:
        time.sleep(1)
        value = kh.operator_metric(settings, job_id, name)
    return value


def test_master_data_arriving_and_changing_while_the_job_runs(live_stack: Settings) -> None:
    settings, unique = live_stack, uuid.uuid4().hex[:10]
    topics = {r: f"test.{r}.{unique}" for r in ("readings", "assets", "oee", "dlq")}
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    kh.produce(settings, topics["assets"], "Asset", [asset(KNOWN)], timestamp_field=None)
    # 10:00 .. 10:12 of both machines: the watermark reaches 10:11:50, windows up to 10:11 close
    first = run(KNOWN, 0, 12, 0) + run(NEWCOMER, 0, 12, 10_000)
    first.sort(key=lambda r: r["source_ts"])
    kh.produce(settings, topics["readings"], "Reading", first)
    job_id = jobs.submit(settings, "oee", job_args=[
        f"--name-suffix=-{unique}", *(f"--topic={r}={t}" for r, t in topics.items())])
    try:
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
        closed = kh.ms(at(10, 11))
        before = windows(first, KNOWN, 2.0, closed)
        rows = kh.consume(settings, topics["oee"], len(before), timeout_s=120, settle_s=5)
        assert got(rows, KNOWN) == {s: fields(w) for s, w in before.items()}
        assert got(rows, NEWCOMER) == {}
        # the newcomer's readings older than 10 windows before the last closed one are dropped
        horizon = closed - MASTERLESS_BACKLOG_WINDOWS * 60_000
        dropped = [r for r in first if r["asset"] == NEWCOMER and r["source_ts"] < horizon]
        assert len(dropped) == 36
        assert wait_for_metric(settings, job_id, "readingsWithoutMasterData", 36) == 36
        assert kh.operator_metric(settings, job_id, "masterDataAssets") == 1

        # master data for the newcomer, and the known machine's ideal cycle time changed
        updated = {**asset(KNOWN), "ideal_cycle_time_s": 2.4}
        kh.produce(settings, topics["assets"], "Asset", [asset(NEWCOMER), updated],
                   timestamp_field=None)
        # picked up by the running job within its fetch latency, no reading needed
        assert wait_for_metric(settings, job_id, "masterDataRecordsApplied", 3, 30) == 3
        assert kh.operator_metric(settings, job_id, "masterDataAssets") == 2

        second = run(KNOWN, 12, 20, 20_000) + run(NEWCOMER, 12, 20, 30_000)
        second.append(reading(KNOWN, "temperature", 40.0, at(10, 20, 30), seq=40_000,
                              unit=None))
        second.sort(key=lambda r: r["source_ts"])
        kh.produce(settings, topics["readings"], "Reading", second)
        until = kh.ms(at(10, 20))
        everything = first + second
        known = {**before, **{s: w for s, w in windows(everything, KNOWN, 2.4, until).items()
                              if s >= closed}}
        kept = [r for r in everything if r["source_ts"] >= horizon]
        newcomer = windows(kept, NEWCOMER, 2.0, until)
        assert min(newcomer) == horizon and len(newcomer) == 19
        rows = kh.consume(settings, topics["oee"], len(known) + len(newcomer), timeout_s=120,
                          settle_s=5)
        assert got(rows, KNOWN) == {s: fields(w) for s, w in known.items()}
        assert got(rows, NEWCOMER) == {s: fields(w) for s, w in newcomer.items()}
        assert {w["ideal_cycle_time_s"] for s, w in known.items() if s >= closed} == {2.4}
        assert kh.operator_metric(settings, job_id, "readingsWithoutMasterData") == 36
        assert kh.job_restarts(settings, job_id) == (0, [])
    finally:
        jobs.cancel(settings, job_id)
