"""One bad sample never stops a job: every kind of poison in each of the three jobs at once,
on the real cluster. Each goes to the DLQ with its exact reason (an unknown state code is
counted as UNKNOWN time and reported in a metric), the good readings around it give exactly
their results, and after 60 s no job has restarted or recorded an exception."""

from __future__ import annotations

import struct
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kafkahelp as kh
import yaml
from kafkahelp import reading
from test_job_oee import CODES, asset

from jobs.oee.timeline import Master, replay
from otbridge import jobs
from otbridge.codec.avro import ReadingEncoder
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.registry import registry_client
from otbridge.settings import Settings

PRESS = "acme/berlin/body/line1/poison"
JOBS = {
    "oee": ("assets", "oee"),
    "downsample": ("readings_1m", "readings_1h"),
    "conditions": ("alerts", "clock"),
}
#: per job: every poison kind below but the unknown state code
REASONS = Counter({"not_avro": 1, "schema_mismatch": 1, "unknown_schema_id": 1, "nan_value": 1,
                   "inf_value": 1, "out_of_range": 1, "empty_value": 2,
                   "future_timestamp": 2})


def base() -> datetime:
    """The start of the minute 4 minutes ago: the test runs in the wall clock's time, as a
    plant does (a reading stamped with its ingest time must not be far from the others)."""
    now = datetime.now(UTC)
    return now.replace(second=0, microsecond=0) - timedelta(minutes=4)


def good_readings(start: datetime) -> list[dict]:
    """Three minutes of a running press, one reading of each tag per 10 s; a temperature
    spike at +30 s (one alert episode); an unknown state code (42) at +90 s."""
    out, seq = [], 0
    for k in range(18):
        t = start + timedelta(seconds=10 * k)
        state = 42.0 if k == 9 else 1.0
        temp = 90.0 if k == 3 else 40.0
        for tag, value in (("state", state), ("count_total", 2.0 * k), ("count_good", 2.0 * k),
                           ("temperature", temp)):
            out.append(reading(PRESS, tag, value, t, seq=seq, unit=None))
            seq += 1
    return out


def pusher(start: datetime) -> dict:
    """Moves the watermark past +4 min (a reading of another asset, up to 1 min ahead)."""
    return reading(f"{PRESS}-clock", "temperature", 1.0, start + timedelta(minutes=5), seq=999)


def poison(settings: Settings, topic: str, start: datetime
           ) -> tuple[list[tuple[bytes, bytes, int]], tuple[bytes, bytes, int]]:
    """(key, value, Kafka timestamp) of each kind, at `start` unless the kind is a
    time, the future ones stamped as a connector stamps them; and apart, the one 2 h ahead,
    which a connector sends with its ingest time (now), after the readings before now."""
    encode = ReadingEncoder(registry_client(settings), topic)
    now = time.time_ns() // 1_000_000
    ts = kh.ms(start)

    def rec(value: float | None, *, source_ms: int = ts, text: str | None = None,
            tag: str = "temperature") -> bytes:
        r = reading(PRESS, tag, value, start, seq=0, text=text)
        encoded = encode({**r, "source_ts": source_ms})
        assert encoded is not None
        return encoded

    good = rec(41.0)
    key = PRESS.encode()
    return [
        # a device clock 10 minutes ahead: the broker takes it, the Kafka timestamp with it;
        # first, so a watermark it moved would make every good reading late
        (key, rec(5.0, source_ms=now + 600_000), now + 600_000),
        (key, b"this is not avro", ts),
        (key, good[: len(good) // 2], ts),  # truncated
        (key, b"\x00" + struct.pack(">I", 987654) + good[5:], ts),  # unknown schema id
        (key, rec(float("nan")), ts),
        (key, rec(float("inf")), ts),
        (key, rec(1e19, tag="count_total"), ts),  # a counter glitch above 2^63
        (key, rec(None), ts),  # GOOD, no value
        (key, rec(None, text=""), ts),  # GOOD, empty text
    ], (key, rec(5.0, source_ms=now + 7_200_000), now)


def test_every_poison_kind_in_every_job(live_stack: Settings, tmp_path: Path) -> None:
    settings, unique = live_stack, uuid.uuid4().hex[:10]
    shared = {"readings": f"test.readings.{unique}", "dlq": f"test.dlq.{unique}"}
    own = {name: {role: f"test.{role}.{name}.{unique}" for role in roles}
           for name, roles in JOBS.items()}
    ensure_topics(settings, [TopicSpec(t, partitions=1, config={"retention.ms": "-1"})
                             for t in [*shared.values(),
                                       *(t for o in own.values() for t in o.values())]])
    kh.produce(settings, own["oee"]["assets"], "Asset", [asset(PRESS)], timestamp_field=None)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [
        {"name": "temp-high", "match": {"asset": PRESS, "tag": "temperature"}, "kind": "high",
         "severity": "warning", "limit": 80, "hysteresis": 5}]}))
    start = base()
    first, two_hours = poison(settings, shared["readings"], start)
    kh.produce_raw(settings, shared["readings"], first)
    records = good_readings(start)
    kh.produce(settings, shared["readings"], "Reading", records)
    kh.produce_raw(settings, shared["readings"], [two_hours])
    kh.produce(settings, shared["readings"], "Reading", [pusher(start)])

    args = {name: [f"--name-suffix=-{unique}",
                   *(f"--topic={r}={t}" for r, t in {**shared, **own[name]}.items())]
            for name in JOBS}
    args["conditions"].append(f"--rules={rules}")
    ids = jobs.submit_many(settings, args)
    started = time.monotonic()
    try:
        for job_id in ids.values():
            jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)

        dead = kh.consume(settings, shared["dlq"], 3 * sum(REASONS.values()), timeout_s=120,
                          settle_s=5)
        for name in JOBS:
            got = Counter(v["reason"] for _, v, _ in dead if v["producer"] == name)
            assert got == REASONS, (name, got)
        assert {v["producer"] for _, v, _ in dead} == set(JOBS)

        master = Master(ideal_cycle_time_s=2.0, state_codes=CODES)
        mine = [(r["source_ts"], r["tag"], r["value"], r["text"], r["quality"])
                for r in records if r["asset"] == PRESS]
        want = [(w["window_start"], w["run_s"], w["unknown_s"], w["total_count"])
                for w in replay(mine, master, window_ms=60_000, stale_after_ms=60_000,
                                until_ms=kh.ms(start + timedelta(minutes=4)))]
        # +90 s, the unknown code; the last window ends in UNKNOWN (stale after 60 s)
        assert [w[2] for w in want] == [0.0, 10.0, 0.0, 10.0]
        oee = kh.consume(settings, own["oee"]["oee"], len(want), timeout_s=120, settle_s=3)
        got = [(kh.ms(v["window_start"]), v["run_s"], v["unknown_s"], v["total_count"])
               for _, v, _ in oee if v["asset"] == PRESS]
        assert got == want, f"{got} != {want}"

        minute = kh.consume(settings, own["downsample"]["readings_1m"], 12, timeout_s=120,
                            settle_s=3)
        temps = sorted((v["window_start"], v["count"], v["max"]) for k, v, _ in minute
                       if k == f"{PRESS}|temperature".encode())
        assert temps == [(start + timedelta(minutes=m), 6, 90.0 if m == 0 else 40.0)
                         for m in range(3)]

        alerts = kh.consume(settings, own["conditions"]["alerts"], 2, timeout_s=120,
                            settle_s=3)
        assert [(v["status"], v["event_ts"]) for _, v, _ in alerts] == [
            ("RAISED", start + timedelta(seconds=30)), ("CLEARED", start + timedelta(seconds=40))]

        assert kh.operator_metric(settings, ids["oee"], "unknownStateCodes") == 1
        time.sleep(max(0.0, 60 - (time.monotonic() - started)))
        for name, job_id in ids.items():
            restarts, exceptions = kh.job_restarts(settings, job_id)
            assert (restarts, exceptions) == (0, []), name
            assert jobs.job(settings, job_id)["state"] == "RUNNING", name
    finally:
        for job_id in ids.values():
            jobs.cancel(settings, job_id)
