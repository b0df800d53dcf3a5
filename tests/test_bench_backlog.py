"""The bench's backlog mix and its median/spread figures, without a stack: what the generator
writes is decoded by the product's own ReadingDecoder (otbridge.codec.wire)."""

from __future__ import annotations

import pytest

from bench.backlog import END, POISON, UNKNOWN_ID, Mix, Sample, cpu_between, mix_records
from bench.common import Result, Spread, offline_reading_encoder, table
from otbridge.codec.wire import ReadingDecoder
from otbridge.registry import schema_text

SCHEMA_ID = 7
T0 = 1_700_000_000_000
OUT_OF_ORDERNESS_MS = 5_000  # the jobs' watermark bound


def lookup(schema_id: int) -> str | None:
    return schema_text("Reading") if schema_id == SCHEMA_ID else None


@pytest.fixture(scope="module")
def records() -> list:
    mix = Mix()
    return list(mix_records(60_000, offline_reading_encoder(SCHEMA_ID), mix=mix, t0_ms=T0))


def test_mix_keys_partitions_and_bad_share(records: list) -> None:
    decoder = ReadingDecoder(lookup, clock_ms=lambda: T0)
    assert len(records) == 60_000
    keys: dict[tuple[str, str], set[int]] = {}
    bad = good = 0
    for rec in records:
        decoded = decoder.decode(rec.value)
        if rec.kind in POISON:
            continue
        assert decoded.record is not None, (rec.kind, decoded)
        r = decoded.record
        keys.setdefault((r["asset"], r["tag"]), set()).add(rec.partition)
        assert rec.key == r["asset"].encode()
        assert r["quality"] == ("BAD" if rec.kind == "BAD" else "GOOD")
        assert (r["value"] is None) == (rec.kind == "BAD")
        bad += rec.kind == "BAD"
        good += rec.kind != "BAD"
    assert len(keys) == 10_000
    by_asset: dict[str, set[int]] = {}
    for (asset, _), parts in keys.items():
        by_asset.setdefault(asset, set()).update(parts)
    assert all(len(parts) == 1 for parts in by_asset.values())  # keyed by asset
    assert {p for parts in keys.values() for p in parts} == {0, 1, 2}
    assert 0.02 < bad / (bad + good) < 0.04


def test_mix_out_of_order_but_never_late(records: list) -> None:
    """Some readings arrive after later readings of their own key, but none behind the
    watermark (max event time - 5 s on each partition, the minimum over the partitions)."""
    decoder = ReadingDecoder(lookup, clock_ms=lambda: T0)
    max_ts: dict[int, int] = {}
    key_ts: dict[tuple[str, str], int] = {}
    behind = 0
    body = [r for r in records if r.kind != END]
    for rec in body:
        seen = max_ts.get(rec.partition)
        if seen is not None:
            assert seen - rec.ts < OUT_OF_ORDERNESS_MS - 1000, rec
        if len(max_ts) == 3:
            assert rec.ts > min(max_ts.values()) - OUT_OF_ORDERNESS_MS
        max_ts[rec.partition] = max(seen or rec.ts, rec.ts)
        r = decoder.decode(rec.value).record
        if r is not None:
            key = (r["asset"], r["tag"])
            behind += rec.ts < key_ts.get(key, rec.ts)
            key_ts[key] = max(key_ts.get(key, rec.ts), rec.ts)
    assert behind > len(body) * 0.03  # within a key: the order first/last are taken in
    # the end markers: last in every partition, far enough ahead to close every minute
    ends = records[-3:]
    assert [r.kind for r in ends] == [END] * 3 and {r.partition for r in ends} == {0, 1, 2}
    assert all(r.ts >= max(b.ts for b in body) + 60_000 + OUT_OF_ORDERNESS_MS for r in ends)


def test_mix_poison_decodes_to_its_dlq_reason(records: list) -> None:
    decoder = ReadingDecoder(lookup, clock_ms=lambda: T0)
    poison = [r for r in records if r.kind in POISON]
    assert {r.kind for r in poison} == set(POISON)
    assert 3 + 10 < len(poison) < 3 + 60  # about 1 in 2,000 of 60,000, the 3 first ones
    for rec in poison:
        decoded = decoder.decode(rec.value)
        assert decoded.record is None and decoded.reason == rec.kind, (rec, decoded)
    unknown = next(r for r in poison if r.kind == "unknown_schema_id")
    assert int.from_bytes(unknown.value[1:5], "big") == UNKNOWN_ID
    # the first record of every partition is a dead letter: it times the job's start
    firsts = {}
    for rec in records:
        firsts.setdefault(rec.partition, rec)
    assert all(r.kind == "not_avro" for r in firsts.values()) and len(firsts) == 3


def test_median_and_spread() -> None:
    s = Spread.of([30.0, 10.0, 12.0])  # the median, not the mean (17.3)
    assert (s.median, s.low, s.high, s.runs) == (12.0, 10.0, 30.0, 3)
    assert Spread.of([4.0, 1.0]).median == 2.5
    assert Spread.of([5.0]).range == (5.0, 5.0)
    with pytest.raises(ValueError):
        Spread.of([])
    rows = table([Result("jobs", "f", s.median, "records/s", spread=s.range, runs=3),
                  Result("jobs", "g", 5, "records/s", spread=(5, 5), runs=1)])
    assert rows.splitlines()[2:] == [
        "| jobs | f | 12 records/s (10-30, median of 3) | - | - | 0 | 0.0 |  |",
        "| jobs | g | 5 records/s | - | - | 0 | 0.0 |  |"]


def test_cpu_between_takes_the_bracketing_polls() -> None:
    samples = [Sample(10.0, 1.0, 0.5), Sample(10.5, 1.4, 0.6), Sample(11.0, 2.0, 0.7),
               Sample(11.5, 2.9, 0.9), Sample(12.0, 3.0, 1.0)]
    tm, kafka, window = cpu_between(samples, 10.7, 11.2)
    assert (round(tm or 0, 6), round(kafka or 0, 6), window) == (1.5, 0.3, 1.0)
    assert cpu_between([Sample(1.0, None, 2.0), Sample(2.0, None, 3.0)], 1.0, 2.0)[:2] == (
        None, 1.0)
