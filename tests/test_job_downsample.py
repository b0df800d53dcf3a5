"""jobs/downsample on the real Flink cluster: exact aggregates, BAD excluded, poison to the DLQ."""

from __future__ import annotations

import io
import struct
import time

import kafkahelp as kh
from kafkahelp import at, reading

from otbridge import jobs, stack
from otbridge.codec.avro import ReadingEncoder
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.registry import registry_client
from otbridge.settings import Settings
from otbridge.stack import Registry

PRESS = "acme/berlin/body/line1/press01"


def topics_for(unique: str) -> dict[str, str]:
    return {role: f"test.{role}.{unique}" for role in ("readings", "readings_1m", "readings_1h",
                                                        "dlq")}


def submit(settings: Settings, unique: str, topics: dict[str, str], *, bounded: bool) -> str:
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    args = [f"--name-suffix=-{unique}", *(f"--topic={r}={t}" for r, t in topics.items())]
    return jobs.submit(settings, "downsample", job_args=["--bounded", *args] if bounded else args)


def test_exact_aggregates_with_bad_samples_excluded(live_stack: Settings, unique: str) -> None:
    settings, topics = live_stack, topics_for(unique)
    records = [
        reading(PRESS, "temperature", 40.0, at(10, 0, 1), seq=1),
        reading(PRESS, "temperature", 999.0, at(10, 0, 2), seq=2, quality="BAD"),
        reading(PRESS, "temperature", 44.0, at(10, 0, 30), seq=3),
        reading(PRESS, "temperature", -5.0, at(10, 0, 40), seq=4, quality="UNCERTAIN"),
        reading(PRESS, "temperature", 42.0, at(10, 0, 59.999), seq=5),
        reading(PRESS, "temperature", 50.0, at(10, 1, 0), seq=6),
        reading(PRESS, "vibration", 2.5, at(10, 0, 10), seq=7, unit="mm/s"),
        reading(PRESS, "vibration", None, at(10, 0, 20), seq=8, unit="mm/s", quality="BAD"),
        reading(PRESS, "temperature", 60.0, at(11, 5, 0), seq=9),
    ]
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    kh.produce(settings, topics["readings"], "Reading", records)
    job_id = submit(settings, unique, topics, bounded=True)
    jobs.wait_for_state(settings, job_id, {"FINISHED"}, timeout_s=180)

    minute = {(k.decode(), v["window_start"].strftime("%H:%M")): v
              for k, v, _ in kh.consume(settings, topics["readings_1m"], 4, settle_s=2)}
    assert sorted(minute) == [
        (f"{PRESS}|temperature", "10:00"), (f"{PRESS}|temperature", "10:01"),
        (f"{PRESS}|temperature", "11:05"), (f"{PRESS}|vibration", "10:00")]
    t0 = minute[(f"{PRESS}|temperature", "10:00")]
    assert {k: t0[k] for k in ("min", "max", "avg", "first", "last", "count", "count_other",
                               "unit")} == {
        "min": 40.0, "max": 44.0, "avg": 42.0, "first": 40.0, "last": 42.0, "count": 3,
        "count_other": 2, "unit": "degC"}
    assert (t0["window_start"], t0["window_end"]) == (at(10, 0), at(10, 1))
    v0 = minute[(f"{PRESS}|vibration", "10:00")]
    assert (v0["min"], v0["max"], v0["count"], v0["count_other"], v0["unit"]) == (
        2.5, 2.5, 1, 1, "mm/s")

    hour = {(k.decode(), v["window_start"].strftime("%H:%M")): v
            for k, v, _ in kh.consume(settings, topics["readings_1h"], 3, settle_s=2)}
    h10 = hour[(f"{PRESS}|temperature", "10:00")]
    assert (h10["min"], h10["max"], h10["avg"], h10["count"], h10["count_other"]) == (
        40.0, 50.0, 44.0, 4, 2)
    assert (h10["first"], h10["last"], h10["unit"]) == (40.0, 50.0, "degC")
    assert h10["window_end"] == at(11, 0)
    assert len(hour) == 3


def test_poison_goes_to_dlq_while_job_keeps_running(live_stack: Settings, unique: str) -> None:
    settings, topics = live_stack, topics_for(unique)
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    job_id = submit(settings, unique, topics, bounded=False)
    try:
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
        kh.produce(settings, topics["readings"], "Reading", [
            reading(PRESS, "temperature", 40.0, at(10, 0, 1), seq=1),
        ])
        unknown_id = b"\x00" + struct.pack(">I", 987654) + b"\x02\x04"
        kh.produce_raw(settings, topics["readings"], [
            (PRESS.encode(), b"this is not avro", kh.ms(at(10, 0, 2))),
            (PRESS.encode(), unknown_id, kh.ms(at(10, 0, 3))),
        ])
        kh.produce(settings, topics["readings"], "Reading", [
            reading(PRESS, "temperature", float("nan"), at(10, 0, 4), seq=2),
            reading(PRESS, "temperature", float("inf"), at(10, 0, 5), seq=3),
            reading(PRESS, "temperature", 1e19, at(10, 0, 5), seq=30),
            reading(PRESS, "temperature", 44.0, at(10, 0, 6), seq=4),
            # moves the watermark past 10:01 so the first window closes
            reading(PRESS, "temperature", 50.0, at(10, 1, 10), seq=5),
        ])
        out = kh.consume(settings, topics["readings_1m"], 1, timeout_s=90)
        assert [(v["count"], v["min"], v["max"]) for _, v, _ in out] == [(2, 40.0, 44.0)]

        # late: its window (10:00) closed when the watermark passed 10:01
        kh.produce(settings, topics["readings"], "Reading", [
            reading(PRESS, "temperature", 41.0, at(10, 0, 30), seq=6)])
        dead = kh.consume(settings, topics["dlq"], 6, timeout_s=60)
        reasons = sorted(v["reason"] for _, v, _ in dead)
        assert reasons == ["inf_value", "late", "nan_value", "not_avro", "out_of_range",
                           "unknown_schema_id"]
        not_avro = next(v for _, v, _ in dead if v["reason"] == "not_avro")
        assert not_avro["value"] == b"this is not avro"
        assert not_avro["key"] == PRESS.encode()
        assert (not_avro["source_topic"], not_avro["source_partition"],
                not_avro["source_offset"]) == (topics["readings"], 0, 1)
        assert {v["producer"] for _, v, _ in dead} == {"downsample"}

        # behind the watermark (10:01:05) but in a window still open (10:01): on time
        kh.produce(settings, topics["readings"], "Reading", [
            reading(PRESS, "temperature", 47.0, at(10, 1, 2), seq=7),
            reading(PRESS, "temperature", 52.0, at(10, 2, 10), seq=8)])
        out = kh.consume(settings, topics["readings_1m"], 2, timeout_s=90)
        assert [(v["window_start"], v["count"], v["min"], v["max"]) for _, v, _ in out] == [
            (at(10, 0), 2, 40.0, 44.0), (at(10, 1), 2, 47.0, 50.0)]
        assert len(kh.consume(settings, topics["dlq"], 6, settle_s=3)) == 6
        assert jobs.job(settings, job_id)["state"] == "RUNNING"
    finally:
        jobs.cancel(settings, job_id)


def test_a_registry_outage_delays_readings_and_dead_letters_none(live_stack: Settings,
                                                                 unique: str) -> None:
    """Readings whose schema id the job has not resolved yet arrive while the registry is
    down: the job waits for it (no `registry_unavailable` in the DLQ, no restart) and the
    aggregates come once it is back."""
    settings, topics = live_stack, topics_for(unique)
    job_id = submit(settings, unique, topics, bounded=False)
    registry = Registry(settings)
    try:
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
        encode = ReadingEncoder(registry_client(settings), topics["readings"])
        records = [reading(PRESS, "temperature", v, at(10, 0, s), seq=s)
                   for s, v in ((1, 40.0), (20, 44.0), (40, 42.0))]
        records.append(reading(PRESS, "temperature", 50.0, at(10, 1, 10), seq=70))
        raw = [(PRESS.encode(), encode(r), r["source_ts"]) for r in records]
        registry.stop()
        kh.produce_raw(settings, topics["readings"], raw)
        time.sleep(15)  # the job has them and cannot resolve their schema id
        assert jobs.job(settings, job_id)["state"] == "RUNNING"
        stack.up(settings, out=io.StringIO())
        out = kh.consume(settings, topics["readings_1m"], 1, timeout_s=120)
        assert [(v["count"], v["min"], v["max"]) for _, v, _ in out] == [(3, 40.0, 44.0)]
        assert kh.consume(settings, topics["dlq"], 0, settle_s=5) == []
        assert kh.job_restarts(settings, job_id) == (0, [])
    finally:
        if not registry.running():
            stack.up(settings, out=io.StringIO())
        jobs.cancel(settings, job_id)
