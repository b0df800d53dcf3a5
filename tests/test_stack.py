"""The foundation against the real stack: Kafka, Apicurio (ccompat) and a Flink session cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import kafkahelp as kh
import pytest

from otbridge import jobs
from otbridge.errors import StackError
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.registry import registry_client
from otbridge.settings import Settings
from otbridge.udf import UDF_JAR, built_udf_jar

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def reading(asset: str, tag: str, value: float | None, second: float, *, seq: int,
            quality: str = "GOOD") -> dict[str, object]:
    return kh.reading(asset, tag, value, T0 + timedelta(seconds=second), seq=seq, quality=quality)


def produce(settings: Settings, topic: str, schema: str, records: list[dict[str, object]]) -> None:
    kh.produce(settings, topic, schema, records)


def consume_all(settings: Settings, topic: str, expected: int):
    return kh.consume(settings, topic, expected)


def test_avro_round_trip_through_kafka_and_registry(live_stack: Settings, unique: str) -> None:
    settings = live_stack
    topic = f"test.readings.{unique}"
    ensure_topics(settings, [TopicSpec(topic, partitions=1)])
    sent = [reading("acme/berlin/body/line1/press01", "temperature", 41.5 + i, i, seq=i)
            for i in range(5)]
    sent.append(reading("acme/berlin/body/line1/press01", "temperature", None, 9, seq=5,
                        quality="BAD"))
    produce(settings, topic, "Reading", sent)

    got = consume_all(settings, topic, len(sent))
    assert [value for _, value, _ in got] == [
        {**r, "source_ts": datetime.fromtimestamp(r["source_ts"] / 1000, UTC),
         "ingest_ts": datetime.fromtimestamp(r["ingest_ts"] / 1000, UTC)}
        for r in sent
    ]
    assert {key for key, _, _ in got} == {b"acme/berlin/body/line1/press01"}
    # Confluent wire format: magic byte 0, then the 4-byte id the registry gave the schema
    raw = got[0][2]
    assert raw[0] == 0
    schema_id = int.from_bytes(raw[1:5], "big")
    registered = registry_client(settings).get_latest_version(f"{topic}-value")
    assert registered.schema_id == schema_id
    assert json.loads(registered.schema.schema_str)["name"] == "Reading"


def test_flink_sql_job_on_session_cluster_aggregates_avro(live_stack: Settings,
                                                          unique: str) -> None:
    settings = live_stack
    src, out = f"test.smoke-in.{unique}", f"test.smoke-out.{unique}"
    ensure_topics(settings, [TopicSpec(src, partitions=1), TopicSpec(out, partitions=1)])
    press, tag = "acme/berlin/body/line1/press01", "temperature"
    records = [
        reading(press, tag, 10.0, 1, seq=1),
        reading(press, tag, 30.0, 20, seq=2),
        reading(press, tag, None, 30, seq=3, quality="BAD"),
        reading(press, tag, 20.0, 59.5, seq=4),
        reading(press, tag, 50.0, 61, seq=5),   # next window
        reading("acme/berlin/body/line1/press02", tag, 7.0, 5, seq=6),
    ]
    produce(settings, src, "Reading", records)

    job_id = jobs.submit(
        settings, "smoke",
        job_args=["--bounded", f"--name-suffix=-{unique}",
                  "--topic", f"readings={src}", "--topic", f"output={out}"],
    )
    jobs.wait_for_state(settings, job_id, {"FINISHED"}, timeout_s=180)

    rows = {(key.decode(), value["window_start"].second, value["window_start"].minute):
            value for key, value, _ in consume_all(settings, out, 3)}
    w0 = rows[(f"{press}|{tag}", 0, 0)]
    assert (w0["min"], w0["max"], w0["avg"], w0["first"], w0["last"]) == (
        10.0, 30.0, 20.0, 10.0, 20.0)
    assert (w0["count"], w0["count_other"]) == (3, 1)
    assert w0["window_start"] == T0 and w0["window_end"].minute == 1
    w1 = rows[(f"{press}|{tag}", 0, 1)]
    assert (w1["min"], w1["max"], w1["count"], w1["count_other"]) == (50.0, 50.0, 1, 0)
    p2 = rows[(f"acme/berlin/body/line1/press02|{tag}", 0, 0)]
    assert (p2["avg"], p2["count"]) == (7.0, 1)
    assert len(rows) == 3


def test_status_json_reports_every_part(live_stack: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otbridge.cli", "stack", "status", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {name: part["healthy"] for name, part in report.items()} == {
        "kafka": True, "registry": True, "flink": True}
    assert report["kafka"]["address"] == live_stack.kafka.bootstrap_servers
    assert report["registry"]["address"] == live_stack.registry.url
    assert report["flink"]["address"] == live_stack.flink.rest_url


def test_a_job_without_the_built_udf_names_the_command_to_run(tmp_path) -> None:
    """Jobs never run mvn: the UDF jar is built by `otbridge stack fetch` (or `stack up`)."""
    with pytest.raises(StackError) as info:
        built_udf_jar(tmp_path / "lib")
    assert "`otbridge stack fetch`" in str(info.value)
    assert str(tmp_path / "lib" / "udf" / UDF_JAR) in str(info.value)
    assert not (tmp_path / "lib").exists()
