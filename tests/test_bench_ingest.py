"""`otbridge bench producer connector --quick` against the live stack: the figures are sane and
the records really landed in their topics (correctness, not speed: --quick sets no target for
the connectors; the full mode's target is checked on a made-up run).

Also: the connectors' lean Avro encoder writes exactly fastavro's bytes (no stack needed)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import kafkahelp as kh
import pytest

from bench.common import Context, Target, records_in
from bench.ingest import (
    PRODUCER_RECORDS,
    TARGETS,
    ConnectorRun,
    connector_results,
    stage_connector,
    stage_producer,
    typical_reading_size,
)
from otbridge.codec.avro import ReadingEncoder, Series, _fields, millis, zigzag
from otbridge.settings import Settings


@pytest.fixture(scope="module")
def ctx(live_stack: Settings) -> Iterator[Context]:
    """One bench context for the module: the connector stage reuses the producer's ceiling."""
    yield Context(live_stack, quick=True, readings=0)


def test_producer_stage_measures_the_ceiling_at_the_readings_size(ctx: Context) -> None:
    results = stage_producer(ctx)
    rate, mb = results
    size = typical_reading_size()
    assert 100 < size < 300  # a Reading of the example plant, wire format
    assert rate.unit == "records/s" and rate.value > 0
    assert mb.unit == "MB/s" and mb.value > 0
    assert rate.records == PRODUCER_RECORDS[True]
    # the connectors' producer settings, recorded
    assert rate.settings["record_size"] == size
    assert rate.settings["acks"] == "all"
    assert rate.settings["enable.idempotence"] == "true"
    assert rate.settings["linger.ms"] == "20"
    assert rate.settings["compression.type"] == "lz4"
    assert "p99" in rate.note
    run = ctx.shared.producer_run
    assert run is not None
    assert run.landed == run.records == PRODUCER_RECORDS[True]  # every record is in the topic
    assert rate.value == round(run.rate)


def test_connector_stage_runs_both_connectors_and_their_readings_land(ctx: Context) -> None:
    results = stage_connector(ctx)
    assert len(results) == 8  # 3 per connector, the backlog replay at the limit and without
    replays = [r for r in results if r.figure.startswith("backlog replay")]
    assert [r.records for r in replays] == [200_000, 200_000]
    for r in results:
        assert r.stage == "connector"
        assert r.value > 0 and math.isfinite(r.value), r
    rates = [r for r in results if r.figure.endswith(", one process")]
    assert [r.unit for r in rates] == ["readings/s", "data changes/s"]
    for r in rates:
        assert r.target is None and r.met is None  # --quick: no speed threshold
        for key in ("linger.ms", "batch.size", "acks", "enable.idempotence", "duration_s"):
            assert key in r.settings, key

    runs: dict[str, ConnectorRun] = ctx.shared.connector_runs
    assert set(runs) == {"modbus", "opcua"}
    for kind, run in runs.items():
        assert run.exit_code == 0
        produced = run.counters["readings"]
        assert produced > 0
        # everything the connector produced was delivered and is in the topic, once
        assert run.counters["delivered"] == produced
        assert run.counters["delivery_failures"] == 0
        assert records_in(ctx.settings, run.topic) == run.readings == produced, kind

    # the records are Readings as the connectors write them, with the simulators' values
    modbus = kh.consume(ctx.settings, runs["modbus"].topic, 200)
    assert len(modbus) == 200
    for key, rec, raw in modbus:
        assert raw[0] == 0 and key == rec["asset"].encode()
        assert rec["connector"].startswith("bench@")
        assert rec["source"].startswith("modbus://127.0.0.1:")
        if rec["quality"] == "GOOD":  # the bench server holds address i = i, scaled by 0.1
            assert rec["value"] == int(rec["tag"][1:]) / 10
    opcua = kh.consume(ctx.settings, runs["opcua"].topic, 200)
    assert len(opcua) == 200
    for key, rec, _ in opcua:
        assert key == rec["asset"].encode()
        assert rec["source"].startswith("opc.tcp://127.0.0.1:")
        if rec["quality"] == "GOOD":  # variable i is written tick * 1000 + i % 1000
            assert rec["value"] % 1000 == int(rec["tag"][1:]) % 1000
            assert rec["unit"] == "degC"


# --- the full mode's target (no stack) ----------------------------------------------------


@pytest.mark.parametrize(("kind", "rate"), [("modbus", 49_999.4), ("modbus", 50_000.0),
                                             ("opcua", 19_000.0), ("opcua", 31_000.0)])
def test_full_mode_connector_rate_is_met_exactly_when_it_reaches_the_target(
        kind: str, rate: float) -> None:
    run = ConnectorRun(topic="t", duration_s=30, readings=int(rate * 30), rate=rate,
                       window_s=20, cpu_s=10, total_cpu_s=12, exit_code=0, offered=None)
    row, cpu, ratio = connector_results(kind, run, 200_000.0, {"acks": "all"})
    assert row.target == Target(">=", TARGETS[kind], row.unit)
    assert row.met is (rate >= TARGETS[kind] - 0.5)  # the row's value is the rounded rate
    assert ("missed:" in row.note) is not row.met
    assert cpu.value == round(10 / (rate * 20) * 10_000, 3) and cpu.target is None
    assert ratio.value == round(rate / 200_000, 3)
    (quick, *_) = connector_results(kind, run, 200_000.0, {}, with_target=False)
    assert quick.target is None and quick.met is None and "missed:" not in quick.note


# --- the lean encoder (no stack) ----------------------------------------------------------


class _Registry:
    def register_schema(self, subject: str, schema: object) -> int:
        return 4242


def test_lean_encoder_writes_fastavros_bytes() -> None:
    encoder = ReadingEncoder(_Registry(), "t")  # type: ignore[arg-type]
    assert encoder.lean
    rng = random.Random(7)
    for i in range(5000):
        series = Series.of(
            rng.choice(["acme/berlin/body/line1/press01", "ä/ö/ü/x/y"]),
            f"t{i % 7}",
            rng.choice([None, "degC", "µm"]),
            rng.choice(["modbus://127.0.0.1:5020/1", "opc.tcp://h:4840/"]),
        )
        value = rng.choice([None, rng.uniform(-1e9, 1e9), 0.0, -0.0, math.inf, 1e308, 3])
        text = rng.choice([None, "", "Job-42", "é" * rng.randint(0, 100)])
        quality = rng.choice(["GOOD", "BAD", "UNCERTAIN"])
        source_ms = rng.choice([rng.randint(-(2**62), 2**62), 0, -1, 1_767_607_200_123, 63, -65])
        ingest_ms = rng.choice([source_ms, source_ms + 5, rng.randint(0, 2**45)])
        seq = rng.choice([0, 1, rng.randint(0, 2**62), 2**63 - 1])
        connector = rng.choice(["x@1", "bench@1767607200123", ""])
        args = (series, value, text, quality, source_ms, ingest_ms, seq, connector)
        assert encoder.encode(*args) == encoder(_fields(*args)), args


def test_zigzag_and_millis_match_avro() -> None:
    import io

    import fastavro

    for n in [*range(-300, 300), *(s * 2**k + d for k in range(7, 63) for d in (-1, 0, 1)
                                   for s in (1, -1))]:  # fmt: skip
        out = io.BytesIO()
        fastavro.schemaless_writer(out, "long", n)
        assert zigzag(n) == out.getvalue(), n
    schema = {"type": "long", "logicalType": "timestamp-millis"}
    base = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)
    for us in (0, 1, 999, 1000, 123_456, 999_999):
        ts = base + timedelta(microseconds=us)
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, ts)
        assert zigzag(millis(ts)) == out.getvalue()
        assert millis(ts.replace(tzinfo=None)) == millis(ts)  # naive counts as UTC
