"""The bench's alternatives to the downsample job (a plain Python script, Quix Streams) on the
real Kafka and registry: the exact aggregates jobs/downsample writes, poison to the DLQ."""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

import kafkahelp as kh
import pytest
from kafkahelp import at, reading

from bench.alternatives import compare, delete_topics, read_windows, run_alternative
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings

A = "acme/berlin/body/line1/press01"
B = "acme/berlin/body/line2/welder01"


def counters(minute: int) -> list[dict[str, Any]]:
    """A's count_total every 5 s of one minute, values 12*minute-index .. +11."""
    return [reading(A, "count_total", float(12 * (minute % 10) + i), at(10, minute, 5 * i),
                    seq=1000 + 12 * minute + i, unit=None) for i in range(12)]


def load_input(settings: Settings, topic: str) -> None:
    """A few dozen readings in arrival order (one partition); the comments give the watermark
    (max event time - 5 s) after each step."""
    produce = lambda recs: kh.produce(settings, topic, "Reading", recs)  # noqa: E731
    produce([
        reading(A, "temperature", 40.0, at(10, 0, 1), seq=1),
        reading(A, "temperature", 999.0, at(10, 0, 2), seq=2, quality="BAD"),
        reading(A, "vibration", 2.5, at(10, 0, 10), seq=3, unit="mm/s"),
        reading(A, "vibration", None, at(10, 0, 20), seq=4, unit="mm/s", quality="BAD"),
        reading(B, "power", 10.0, at(10, 0, 5), seq=5, unit="kW"),
        reading(B, "state", None, at(10, 0, 7), seq=6, text="RUNNING", unit=None),
        reading(B, "power", 12.5, at(10, 0, 15), seq=7, unit="kW"),
        reading(B, "power", 11.0, at(10, 0, 25), seq=8, unit=None),  # unit: last non-null
        reading(A, "temperature", 44.0, at(10, 0, 30), seq=9),
        reading(B, "power", 9.0, at(10, 0, 35), seq=10, unit="W"),
        reading(A, "temperature", -5.0, at(10, 0, 40), seq=11, quality="UNCERTAIN"),
        *counters(0),                                                  # up to 10:00:55
        reading(A, "temperature", 42.0, at(10, 0, 59.999), seq=12),    # wm 10:00:54.999
    ])
    kh.produce_raw(settings, topic, [
        (A.encode(), b"this is not avro", kh.ms(at(10, 0, 50))),
        (A.encode(), b"\x00" + struct.pack(">I", 987654) + b"\x02\x04", kh.ms(at(10, 0, 51))),
    ])
    produce([
        reading(A, "temperature", float("nan"), at(10, 0, 52), seq=13),
        reading(A, "temperature", 50.0, at(10, 1, 0), seq=14),
        reading(B, "power", 20.0, at(10, 1, 4), seq=15, unit="kW"),    # wm 10:00:59
        # behind the watermark, but its window (10:00) is still open: on time
        reading(A, "temperature", 41.0, at(10, 0, 57), seq=16),
        reading(A, "temperature", 52.0, at(10, 1, 10), seq=17),        # wm 10:01:05: 10:00 fires
        reading(A, "temperature", 43.0, at(10, 0, 45), seq=18),        # late: to the DLQ
        reading(A, "vibration", 3.0, at(10, 1, 2), seq=19, unit="mm/s"),
        reading(B, "power", 22.0, at(10, 1, 30), seq=20, unit="kW"),
        *counters(1),                                                  # wm 10:01:50
        reading(A, "temperature", 60.0, at(11, 0, 10), seq=21),        # wm 11:00:05: 10:01
    ])                                                                 # and the 10:00 hour fire


def agg(start: datetime, end: datetime, *, count: int, other: int = 0, unit: str | None,
        values: list[float]) -> dict[str, Any]:
    return {"window_start": start, "window_end": end, "unit": unit, "count": count,
            "count_other": other, "min": min(values, default=None),
            "max": max(values, default=None),
            "avg": sum(values) / len(values) if values else None,
            "first": values[0] if values else None, "last": values[-1] if values else None}


def m(minute: int, **kw: Any) -> dict[str, Any]:
    return agg(at(10, minute), at(10, minute + 1), **kw)


EXPECTED_1M = {
    (f"{A}|temperature", at(10, 0)): m(0, count=4, other=2, unit="degC",
                                       values=[40.0, 44.0, 42.0, 41.0]),
    (f"{A}|temperature", at(10, 1)): m(1, count=2, unit="degC", values=[50.0, 52.0]),
    (f"{A}|vibration", at(10, 0)): m(0, count=1, other=1, unit="mm/s", values=[2.5]),
    (f"{A}|vibration", at(10, 1)): m(1, count=1, unit="mm/s", values=[3.0]),
    (f"{A}|count_total", at(10, 0)): m(0, count=12, unit=None,
                                       values=[float(i) for i in range(12)]),
    (f"{A}|count_total", at(10, 1)): m(1, count=12, unit=None,
                                       values=[float(i) for i in range(12, 24)]),
    (f"{B}|power", at(10, 0)): m(0, count=4, unit="W", values=[10.0, 12.5, 11.0, 9.0]),
    (f"{B}|power", at(10, 1)): m(1, count=2, unit="kW", values=[20.0, 22.0]),
    (f"{B}|state", at(10, 0)): m(0, count=1, unit=None, values=[]),
}


def h(**kw: Any) -> dict[str, Any]:
    return agg(at(10, 0), at(11, 0), **kw)


EXPECTED_1H = {
    f"{A}|temperature": h(count=6, other=2, unit="degC",
                          values=[40.0, 44.0, 42.0, 41.0, 50.0, 52.0]),
    f"{A}|vibration": h(count=2, other=1, unit="mm/s", values=[2.5, 3.0]),
    f"{A}|count_total": h(count=24, unit=None, values=[float(i) for i in range(24)]),
    f"{B}|power": h(count=6, unit="kW", values=[10.0, 12.5, 11.0, 9.0, 20.0, 22.0]),
    f"{B}|state": h(count=1, unit=None, values=[]),
}
FIELDS = ("window_start", "window_end", "unit", "count", "count_other", "min", "max", "avg",
          "first", "last")


@pytest.mark.parametrize("name", ["plain", "quix"])
def test_alternative_writes_exact_downsample_output(live_stack: Settings, unique: str,
                                                    name: str) -> None:
    settings = live_stack
    topic = f"test.alt.readings.{unique}"
    outputs = {role: f"test.alt-{name}.{role}.{unique}"
               for role in ("readings_1m", "readings_1h", "dlq")}
    ensure_topics(settings, [TopicSpec(topic, partitions=1)])
    load_input(settings, topic)

    run = run_alternative(settings, name, topic, timeout_s=300, outputs=outputs)
    try:
        check_output(settings, topic, outputs, run.report)
    finally:
        delete_topics(settings, run)  # its outputs and Quix's changelog topics


def check_output(settings: Settings, topic: str, outputs: dict[str, str],
                 report: dict[str, Any]) -> None:
    assert report["ended_by"] == "end_offsets"
    assert (report["records"], report["out_1m"], report["out_1h"], report["dlq"]) == (
        47, 9, 5, 4)

    minute = kh.consume(settings, outputs["readings_1m"], 9, settle_s=2)
    got = {(k.decode(), v["window_start"]): {f: v[f] for f in FIELDS} for k, v, _ in minute}
    assert len(minute) == 9
    assert got == EXPECTED_1M
    for k, v, _ in minute:  # the key is asset|tag, the value carries both
        assert k.decode() == f"{v['asset']}|{v['tag']}"

    hour = kh.consume(settings, outputs["readings_1h"], 5, settle_s=1)
    assert len(hour) == 5
    assert {k.decode(): {f: v[f] for f in FIELDS} for k, v, _ in hour} == EXPECTED_1H

    dead = kh.consume(settings, outputs["dlq"], 4, settle_s=1)
    assert sorted(v["reason"] for _, v, _ in dead) == [
        "late", "nan_value", "not_avro", "unknown_schema_id"]
    not_avro = next(v for _, v, _ in dead if v["reason"] == "not_avro")
    assert (not_avro["value"], not_avro["key"]) == (b"this is not avro", A.encode())
    assert (not_avro["source_topic"], not_avro["source_partition"],
            not_avro["source_offset"]) == (topic, 0, 24)
    late = next(v for _, v, _ in dead if v["reason"] == "late")
    assert late["source_offset"] == 31

    # what the stage itself reads (the product's wire decoder, times in ms) is the expected
    # output, and its comparison against the expected windows finds every one the same
    windows = read_windows(settings, outputs["readings_1m"], idle_s=2)
    expected = as_windows(EXPECTED_1M)
    assert {key: {f: recs[0][f] for f in FIELDS} for key, recs in windows.items()} == {
        key: recs[0] for key, recs in expected.items()}
    assert all(len(recs) == 1 for recs in windows.values())
    c = compare(expected, windows)
    assert (c.matched, c.differ, c.missing, c.extra, c.duplicated, c.not_compared) == (
        9, 0, 0, 0, 0, 0)
    assert c.same


def as_windows(expected: dict[tuple[str, datetime], dict[str, Any]]
               ) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """EXPECTED_1M in read_windows' shape: by (key, window_start ms), times in ms."""
    return {(key, kh.ms(start)): [{**agg, "window_start": kh.ms(agg["window_start"]),
                                   "window_end": kh.ms(agg["window_end"])}]
            for (key, start), agg in expected.items()}


def test_compare_tells_uncommitted_windows_from_differences() -> None:
    def w(start: int, count: int, avg: float = 1.0) -> list[dict[str, Any]]:
        return [{"window_start": start, "window_end": start + 60_000, "unit": None,
                 "count": count, "count_other": 0, "min": 1.0, "max": 1.0, "first": 1.0,
                 "last": 1.0, "avg": avg}]

    ref = {("k", 0): w(0, 1), ("k2", 0): w(0, 1), ("k3", 0): w(0, 2)}
    alt = {("k", 0): w(0, 1, avg=1.0 + 1e-12),  # equal to 1e-9
           ("k2", 0): w(0, 1), ("k3", 0): w(0, 3),  # count differs
           ("k4", 0): w(0, 1),  # otbridge lacks a window it had committed the end of: extra
           ("k", 60_000): w(60_000, 1)}  # after otbridge's last committed window: not compared
    c = compare(ref, alt)
    assert (c.matched, c.differ, c.missing, c.extra, c.not_compared) == (2, 1, 0, 1, 1)
    assert not c.same
    c = compare({**ref, ("k5", 0): w(0, 1)}, {k: v for k, v in ref.items()})
    assert (c.matched, c.missing, c.same) == (3, 1, False)
