"""The three jobs through failures while readings are produced (3 partitions): the
TaskManager SIGKILLed twice and brought back with `otbridge stack up`; then the whole of
Flink stopped and the jobs resumed from their retained checkpoints. Every field of every oee
and downsample record (exactly-once) equals that of an undisturbed run of the same jobs over
the same input, submitted afterwards; no duplicates, nothing missing. Alerts are
at-least-once (latency): a transition replayed after a failover is the same record again
(same key, status, raised_ts and every other field), so an episode never has two different
RAISED or CLEARED events, and the alerts deduplicated are exactly the undisturbed run's."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import kafkahelp as kh
import yaml
from confluent_kafka import Producer
from kafkahelp import at, reading
from test_job_oee import asset
from test_job_oee_recovery import MACHINES, expected, kill_taskmanager, plant

from jobs.conditions.detectors import KeyState, Monitor
from jobs.conditions.rules import parse_rules
from otbridge import jobs, stack
from otbridge.codec.avro import ReadingEncoder
from otbridge.kafka import TopicSpec, ensure_topics, producer_config
from otbridge.registry import registry_client
from otbridge.settings import Settings
from otbridge.stack import Flink

MINUTES = 20
OUTPUTS = {"oee": ("oee",), "downsample": ("readings_1m", "readings_1h"),
           "conditions": ("alerts",)}
#: a machine stopped (state 3, or planned 5): an episode per stop
RULES = {"rules": [{"name": "stopped", "match": {"asset": "acme/berlin/body/line1/*",
                                                  "tag": "state"},
                    "kind": "high", "severity": "warning", "limit": 2, "hysteresis": 0}]}
#: 4 tags of 8 machines: a 1-minute aggregate per minute, a 1-hour one for 10:00
COUNTS = {"readings_1m": 8 * 4 * MINUTES, "readings_1h": 8 * 4}


def checkpoints(settings: Settings, job_id: str) -> int:
    resp = httpx.get(f"{settings.flink.rest_url}/jobs/{job_id}/checkpoints", timeout=10)
    return int(resp.json()["counts"]["completed"])


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(1)


def running_with_a_new_checkpoint(settings: Settings, ids: dict[str, str]) -> None:
    """Each job RUNNING again and one more checkpoint completed since now."""
    before = {}
    for job_id in ids.values():
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=180)
        with_tasks = f"{job_id}: every task running"
        wait_for(with_tasks, lambda j=job_id: all(
            v["status"] == "RUNNING" for v in jobs.job(settings, j)["vertices"]))
        before[job_id] = checkpoints(settings, job_id)
    for job_id, n in before.items():
        wait_for(f"{job_id}: a checkpoint", lambda j=job_id, n=n: checkpoints(settings, j) > n)


def produce_paced(settings: Settings, topic: str, records: list[dict], seconds: float) -> None:
    """One event-time minute of the plant at a time, spread over `seconds` of wall time."""
    encode = ReadingEncoder(registry_client(settings), topic)
    producer = Producer(producer_config(settings))
    per_minute: dict[int, list[dict]] = {}
    for r in records:
        per_minute.setdefault(r["source_ts"] // 60_000, []).append(r)
    for batch in per_minute.values():
        for r in batch:
            producer.produce(topic, key=r["asset"].encode(), value=encode(r),
                             timestamp=r["source_ts"])
        producer.flush(30)
        time.sleep(seconds / len(per_minute))
    assert producer.flush(30) == 0


def push_every_partition(settings: Settings, topic: str, partitions: int) -> None:
    """A reading at 11:05 in each partition: the watermark (the least of the partitions')
    passes 11:00, so every 1-minute window, the 10:00 hour and the OEE windows close."""
    encode = ReadingEncoder(registry_client(settings), topic)
    producer = Producer(producer_config(settings))
    for p in range(partitions):
        r = reading("acme/berlin/body/line1/clock", "temperature", 1.0, at(11, 5), seq=10**6 + p)
        producer.produce(topic, key=b"clock", value=encode(r), timestamp=r["source_ts"],
                         partition=p)
    assert producer.flush(30) == 0


def outputs(settings: Settings, topics: dict[str, str], counts: dict[str, int]
            ) -> dict[str, list[tuple[Any, ...]]]:
    """Every record of each output topic as a tuple of all its fields (and its key)."""
    out = {}
    for role, n in counts.items():
        deadline, ask = time.monotonic() + 240, n
        while True:  # alerts may repeat: until n different ones are there
            rows = kh.consume(settings, topics[role], ask, timeout_s=240, settle_s=10)
            out[role] = sorted((key, *sorted(v.items())) for key, v, _ in rows)
            if len(set(out[role])) >= n or time.monotonic() > deadline:
                break
            ask = len(rows) + 1
    return out


def job_args(name: str, suffix: str, readings: dict[str, str], own: dict[str, dict[str, str]],
             rules: Path) -> list[str]:
    args = [f"--name-suffix=-{suffix}",
            *(f"--topic={r}={t}" for r, t in {**readings, **own[name]}.items())]
    if name == "conditions":  # a replay of the test day: event time only
        args += [f"--rules={rules}", "--no-wall-clock"]
    return args


def submit(settings: Settings, suffix: str, readings: dict[str, str],
           own: dict[str, dict[str, str]], rules: Path) -> dict[str, str]:
    return jobs.submit_many(settings, {name: job_args(name, suffix, readings, own, rules)
                                       for name in OUTPUTS})


def expected_alerts(records: list[dict]) -> int:
    monitor, states, n = Monitor(parse_rules(RULES)), {}, 0
    for r in records:
        ks = states.setdefault((r["asset"], r["tag"]), KeyState(r["asset"], r["tag"]))
        n += len(monitor.on_reading(ks, r["source_ts"], r["value"], r["quality"], r["unit"]))
    return n


def test_two_taskmanager_kills_then_a_full_restart_equal_an_undisturbed_run(
        live_stack: Settings, tmp_path: Path) -> None:
    settings, unique = live_stack, uuid.uuid4().hex[:10]
    shared = {"readings": f"test.readings.{unique}", "assets": f"test.assets.{unique}",
              "dlq": f"test.dlq.{unique}"}
    runs = {run: {name: {role: f"test.{role}.{run}.{unique}" for role in roles}
                  for name, roles in OUTPUTS.items()} for run in ("failed", "undisturbed")}
    ensure_topics(settings, [
        TopicSpec(shared["readings"], partitions=3, config={"retention.ms": "-1"}),
        *(TopicSpec(t, partitions=1, config={"retention.ms": "-1"})
          for t in (shared["assets"], shared["dlq"], *(
              t for run in runs.values() for o in run.values() for t in o.values())))])
    kh.produce(settings, shared["assets"], "Asset", [asset(p) for p in MACHINES],
               timestamp_field=None)
    records = plant(minutes=MINUTES)
    oee_count = len(expected(records, kh.ms(at(11, 0))))
    counts = {"oee": oee_count, **COUNTS, "alerts": expected_alerts(records)}
    assert counts["alerts"] > 100
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES))
    flink = Flink(settings)
    ids: dict[str, str] = {}
    try:
        ids = submit(settings, f"failed-{unique}", shared, runs["failed"], rules)
        running_with_a_new_checkpoint(settings, ids)
        producer = threading.Thread(target=produce_paced,
                                    args=(settings, shared["readings"], records, 60))
        producer.start()
        time.sleep(12)
        kill_taskmanager(settings, flink)  # readings keep coming
        running_with_a_new_checkpoint(settings, ids)
        kill_taskmanager(settings, flink)
        running_with_a_new_checkpoint(settings, ids)
        producer.join(180)
        assert not producer.is_alive()

        # the whole of Flink stopped (no HA: the JobManager forgets its jobs), started again,
        # each job resumed from its retained checkpoint
        flink.stop()
        stack.up(settings, out=io.StringIO())
        resumed = {}
        for name in OUTPUTS:
            done = subprocess.run(
                [sys.executable, "-m", "otbridge.cli", "jobs", "submit", name, "--resume",
                 *job_args(name, f"failed-{unique}", shared, runs["failed"], rules)],
                capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "resuming" in done.stdout, done.stdout
            resumed[name] = done.stdout.split("job id ")[1].split()[0]
        ids = resumed
        push_every_partition(settings, shared["readings"], 3)
        failed = outputs(settings, {r: t for o in runs["failed"].values() for r, t in o.items()},
                         counts)

        ids |= {f"{n}-undisturbed": i for n, i in submit(
            settings, f"undisturbed-{unique}", shared, runs["undisturbed"], rules).items()}
        undisturbed = outputs(settings, {r: t for o in runs["undisturbed"].values()
                                         for r, t in o.items()}, counts)
        # alerts: a repeat is the very record again; deduplicated, the undisturbed run's
        assert len(undisturbed["alerts"]) == len(set(undisturbed["alerts"])) == counts["alerts"]
        missing = sorted(set(undisturbed["alerts"]) - set(failed["alerts"]))
        extra = sorted(set(failed["alerts"]) - set(undisturbed["alerts"]))
        assert (missing, extra) == ([], []), (len(missing), len(extra), missing[:3], extra[:3])
        episodes = Counter((key, f["status"], f["raised_ts"]) for key, *fields in
                           set(failed["alerts"]) for f in [dict(fields)])
        assert max(episodes.values()) == 1
        print(f"alerts: {len(failed['alerts']) - len(set(failed['alerts']))} repeated after "
              f"the failovers, {counts['alerts']} transitions")
        for role in ("oee", "readings_1m", "readings_1h"):
            assert len(failed[role]) == len(set(failed[role])), f"{role}: duplicates"
            assert failed[role] == undisturbed[role], role
            assert len(failed[role]) == counts[role], role
        dead = kh.consume(settings, shared["dlq"], 1, timeout_s=3)
        assert dead == [], "nothing dead-lettered, nothing late"
    finally:
        for job_id in ids.values():
            try:
                jobs.cancel(settings, job_id)
            except Exception:  # a job the restart forgot
                pass
        if not flink.running():
            stack.up(settings, out=io.StringIO())
