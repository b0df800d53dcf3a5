"""jobs/oee (and downsample beside it) survive a TaskManager crash: after kill -9 and `stack
up`, the read_committed output equals an undisturbed run's (no duplicates, no gaps, a late
reading never re-opens a window); and a whole Flink restart, the job resumed from its retained
checkpoint (`otbridge jobs submit oee --resume`)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import httpx
import kafkahelp as kh
from kafkahelp import at, reading
from test_job_oee import CODES, asset

from jobs.oee.timeline import Master, replay
from otbridge import jobs, stack
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings
from otbridge.stack import Flink

MACHINES = [f"acme/berlin/body/line1/rec{i:02d}" for i in range(8)]


def plant(minutes: int) -> list[dict]:
    """A repeatable shift: every machine runs, stops and counts, one reading per 5 s."""
    records = []
    seq = 0
    for m, path in enumerate(MACHINES):
        total = good = 0
        for k in range(minutes * 12):
            ts = at(10, 0, 0).timestamp() + 5 * k
            t = at(10, 0, 0).fromtimestamp(ts, at(10, 0).tzinfo)
            state = 3 if (k + m) % 17 in (0, 1) else (5 if (k + 2 * m) % 29 == 0 else 1)
            if state == 1:
                total += 2
                good += 2 if (k + m) % 7 else 1
            for tag, value in (("state", state), ("count_total", total), ("count_good", good),
                               ("temperature", 40.0 + m)):
                records.append(reading(path, tag, float(value), t, seq=seq, unit=None))
                seq += 1
    return sorted(records, key=lambda r: r["source_ts"])


def expected(records: list[dict], until_ms: int) -> set[tuple]:
    master = Master(ideal_cycle_time_s=2.0, state_codes=CODES)
    out = set()
    for path in MACHINES:
        mine = [(r["source_ts"], r["tag"], r["value"], r["text"], r["quality"])
                for r in records if r["asset"] == path]
        for w in replay(mine, master, window_ms=60_000, stale_after_ms=60_000, until_ms=until_ms):
            out.add((path, w["window_start"], round(w["run_s"], 3), round(w["unknown_s"], 3),
                     round(w["planned_stop_s"], 3), w["total_count"], w["good_count"]))
    return out


def aggregates(records: list[dict]) -> tuple[dict[tuple, tuple], dict[tuple, tuple]]:
    """What downsample writes for `records` (every one GOOD, in produce order): (asset|tag,
    window start ms) -> (count, min, max, avg, first, last), per minute and per hour."""
    out: tuple[dict, dict] = ({}, {})
    for windows, size in zip(out, (60_000, 3_600_000), strict=True):
        groups: dict[tuple, list[float]] = {}
        for r in records:
            start = r["source_ts"] - r["source_ts"] % size
            groups.setdefault((f"{r['asset']}|{r['tag']}", start), []).append(r["value"])
        for key, v in groups.items():
            windows[key] = (len(v), min(v), max(v), sum(v) / len(v), v[0], v[-1])
    return out


def got_aggregates(rows: list) -> dict[tuple, tuple]:
    out = {}
    for k, v, _ in rows:
        key = (k.decode(), kh.ms(v["window_start"]))
        assert key not in out, f"duplicate window {key}"
        out[key] = (v["count"], v["min"], v["max"], v["avg"], v["first"], v["last"])
    return out


def completed_checkpoints(settings: Settings, job_id: str) -> int:
    resp = httpx.get(f"{settings.flink.rest_url}/jobs/{job_id}/checkpoints", timeout=10)
    return int(resp.json()["counts"]["completed"])


def kill_taskmanager(settings: Settings, flink: Flink) -> None:
    """SIGKILL the TaskManager, then `stack up`, as the README says: it starts what is not
    running (the TaskManager only: the JobManager is kept, with its jobs)."""
    taskmanager, jobmanager = flink.processes[1], flink.processes[0].pid()
    pid = taskmanager.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    while taskmanager.pid() is not None:
        time.sleep(0.2)
    out = io.StringIO()
    stack.up(settings, out=out)
    assert "flink: partly running, starting flink-taskmanager" in out.getvalue()
    assert flink.processes[0].pid() == jobmanager


def test_taskmanager_killed_and_restarted_output_equals_undisturbed(live_stack: Settings
                                                                    ) -> None:
    settings, unique = live_stack, uuid.uuid4().hex[:10]
    roles = ("readings", "assets", "oee", "dlq", "readings_1m", "readings_1h")
    topics = {r: f"test.{r}.{unique}" for r in roles}
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    kh.produce(settings, topics["assets"], "Asset", [asset(p) for p in MACHINES],
               timestamp_field=None)
    records = plant(minutes=20)
    half = len(records) // 2
    kh.produce(settings, topics["readings"], "Reading", records[:half])

    common = [f"--name-suffix=-{unique}", f"--topic=readings={topics['readings']}",
              f"--topic=dlq={topics['dlq']}"]
    ids = jobs.submit_many(settings, {
        "oee": [*common, f"--topic=assets={topics['assets']}", f"--topic=oee={topics['oee']}"],
        "downsample": [*common, *(f"--topic={r}={topics[r]}" for r in ("readings_1m",
                                                                     "readings_1h"))]})
    flink = Flink(settings)
    try:
        for job_id in ids.values():
            jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
        # the second checkpoint (10 s after the first) holds the offsets after the first half,
        # so nothing is replayed after the restore and the late reading is the first record
        deadline = time.monotonic() + 120
        while (min(completed_checkpoints(settings, j) for j in ids.values()) < 2
               and time.monotonic() < deadline):
            time.sleep(1)
        assert min(completed_checkpoints(settings, j) for j in ids.values()) >= 2
        time.sleep(3)  # mid-way between checkpoints: some output is in an open transaction

        kill_taskmanager(settings, flink)
        # the first record after the restore, before any watermark: its OEE window (10:02) and
        # its minute (10:02) were emitted before the kill and must not open again, and the
        # hour, still open, must not take it either (it is made of the minutes)
        late = reading(MACHINES[0], "count_total", 10_000.0, at(10, 2, 30), seq=10**6 + 1)
        kh.produce(settings, topics["readings"], "Reading", [late])
        kh.produce(settings, topics["readings"], "Reading", records[half:])
        clock = reading("acme/berlin/body/line1/clock", "temperature", 1.0, at(11, 0, 10),
                        seq=10**6)
        kh.produce(settings, topics["readings"], "Reading", [clock])

        until = kh.ms(at(10, 55, 0))
        want = expected(records, until)
        rows = kh.consume(settings, topics["oee"], len(want), timeout_s=240, settle_s=15)
        got = [(v["asset"], kh.ms(v["window_start"]), round(v["run_s"], 3),
                round(v["unknown_s"], 3), round(v["planned_stop_s"], 3), v["total_count"],
                v["good_count"]) for _, v, _ in rows]
        assert len(got) == len(set(got)), "duplicates after recovery"
        assert set(got) == want
        assert kh.operator_metric(settings, ids["oee"], "lateReadingsDropped") == 1

        minutes, hours = aggregates(records)
        assert len(minutes) == 8 * 4 * 20 and len(hours) == 8 * 4
        assert got_aggregates(kh.consume(settings, topics["readings_1m"], len(minutes),
                                         timeout_s=120, settle_s=5)) == minutes
        assert got_aggregates(kh.consume(settings, topics["readings_1h"], len(hours),
                                         timeout_s=120, settle_s=5)) == hours
        # dropped by the minute window operator, whose watermark the checkpoint restored
        assert kh.operator_metric(settings, ids["downsample"], "numLateRecordsDropped") == 1
        assert kh.consume(settings, topics["dlq"], 0, timeout_s=10, settle_s=8) == []
        for job_id in ids.values():
            assert jobs.job(settings, job_id)["state"] == "RUNNING"
    finally:
        for job_id in ids.values():
            jobs.cancel(settings, job_id)
        if flink.processes[1].pid() is None:
            flink.start()


def test_flink_restarted_and_the_job_resumed_from_its_checkpoint_equals_undisturbed(
        live_stack: Settings) -> None:
    """The JobManager and TaskManager stopped (their jobs with them), started again, the job
    submitted with --resume: it continues from its last retained checkpoint, and the output
    equals an undisturbed run's."""
    settings, unique = live_stack, uuid.uuid4().hex[:10]
    topics = {r: f"test.{r}.{unique}" for r in ("readings", "assets", "oee", "dlq")}
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    kh.produce(settings, topics["assets"], "Asset", [asset(p) for p in MACHINES],
               timestamp_field=None)
    records = plant(minutes=20)
    half = len(records) // 2
    kh.produce(settings, topics["readings"], "Reading", records[:half])
    job_args = [f"--name-suffix=-{unique}", *(f"--topic={r}={t}" for r, t in topics.items())]
    job_id = jobs.submit(settings, "oee", job_args=job_args)
    flink = Flink(settings)
    resumed = None
    try:
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
        deadline = time.monotonic() + 120
        while completed_checkpoints(settings, job_id) < 1 and time.monotonic() < deadline:
            time.sleep(1)
        assert completed_checkpoints(settings, job_id) >= 1
        time.sleep(3)
        flink.stop()  # the whole cluster: no HA, the JobManager forgets its jobs
        stack.up(settings, out=io.StringIO())
        assert not [j for j in jobs.list_jobs(settings) if j["jid"] == job_id]
        done = subprocess.run(
            [sys.executable, "-m", "otbridge.cli", "jobs", "submit", "oee", "--resume",
             *job_args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"resuming oee from file://{flink.home / 'checkpoints' / job_id}/chk-" in \
            done.stdout, done.stdout
        found = re.search(r"job id ([0-9a-f]{32})", done.stdout)
        assert found, done.stdout
        resumed = found[1]
        kh.produce(settings, topics["readings"], "Reading", records[half:])
        clock = reading("acme/berlin/body/line1/clock", "temperature", 1.0, at(11, 0, 0),
                        seq=10**6)
        kh.produce(settings, topics["readings"], "Reading", [clock])

        want = expected(records, kh.ms(at(10, 55, 0)))
        rows = kh.consume(settings, topics["oee"], len(want), timeout_s=240, settle_s=15)
        got = [(v["asset"], kh.ms(v["window_start"]), round(v["run_s"], 3),
                round(v["unknown_s"], 3), round(v["planned_stop_s"], 3), v["total_count"],
                v["good_count"]) for _, v, _ in rows]
        assert len(got) == len(set(got)), "duplicates after the resume"
        assert set(got) == want
    finally:
        for jid in (job_id, resumed):
            if jid:
                with contextlib.suppress(httpx.HTTPError):
                    jobs.cancel(settings, jid)
        if not flink.running():
            stack.up(settings, out=io.StringIO())


def test_resume_without_a_retained_checkpoint_says_so(live_stack: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "otbridge.cli", "jobs", "submit", "oee", "--resume",
         f"--name-suffix=-never-{uuid.uuid4().hex[:6]}"], capture_output=True, text=True,
        timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--resume: no retained checkpoint of job 'otbridge-oee-never-" in done.stderr
