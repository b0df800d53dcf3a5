"""Produce and consume Avro records in tests, the way otbridge's connectors and users do:
Readings through otbridge.codec (the connectors' encoder), other records through the
registry serializer; everything consumed is decoded by otbridge.codec.wire."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.serialization import MessageField, SerializationContext

from otbridge.codec.avro import ReadingEncoder
from otbridge.codec.wire import RegistryLookup, WireDecoder
from otbridge.kafka import consumer_config, producer_config
from otbridge.registry import registry_client, serializer
from otbridge.settings import Settings


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def reading(asset: str, tag: str, value: float | None, ts: datetime, *, seq: int,
            quality: str = "GOOD", text: str | None = None, unit: str | None = "degC"
            ) -> dict[str, Any]:
    return {
        "asset": asset, "tag": tag, "value": value, "text": text, "unit": unit,
        "quality": quality, "source_ts": ms(ts), "ingest_ts": ms(ts) + 5,
        "source": "modbus://127.0.0.1:5020/1", "seq": seq, "connector": "test",
    }


def produce(settings: Settings, topic: str, schema: str, records: list[dict[str, Any]],
            *, key: str = "asset", timestamp_field: str | None = "source_ts") -> None:
    """Avro in the registry's wire format (schema subject <topic>-value); the Kafka timestamp is
    the record's source time, as connectors do."""
    client = registry_client(settings)
    encode: Callable[[dict[str, Any]], bytes | None]
    if schema == "Reading":
        encode = ReadingEncoder(client, topic)
    else:
        ser, context = serializer(client, schema), SerializationContext(topic, MessageField.VALUE)
        encode = lambda rec: ser(rec, context)  # noqa: E731

    producer = Producer(producer_config(settings))
    for rec in records:
        kwargs = {"timestamp": rec[timestamp_field]} if timestamp_field else {}
        producer.produce(topic, key=str(rec[key]).encode(), value=encode(rec), **kwargs)
    assert producer.flush(30) == 0


def produce_raw(settings: Settings, topic: str, items: list[tuple[bytes, bytes, int]]) -> None:
    producer = Producer(producer_config(settings))
    for key, value, ts in items:
        producer.produce(topic, key=key, value=value, timestamp=ts)
    assert producer.flush(30) == 0


def consume(settings: Settings, topic: str, expected: int, *, timeout_s: float = 60,
            settle_s: float = 0.0) -> list[tuple[bytes | None, dict[str, Any], bytes]]:
    """Read `expected` records (read_committed) from the start of topic; then wait settle_s for
    any extra record (to catch duplicates)."""
    decoder = WireDecoder(None, RegistryLookup.of(settings.registry))  # as written
    consumer = Consumer(consumer_config(settings, f"test-{topic}-{time.monotonic_ns()}"))
    consumer.subscribe([topic])
    out: list[tuple[bytes | None, dict[str, Any], bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if len(out) >= expected:
                if settle_s <= 0:
                    break
                deadline = min(deadline, time.monotonic() + settle_s)
                settle_s = 0
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            decoded = decoder.decode(msg.value())
            assert decoded.record is not None, f"{topic}: {decoded.reason}: {decoded.detail}"
            out.append((msg.key(), decoded.record, msg.value() or b""))
    finally:
        consumer.close()
    return out


def at(hh: int, mm: int, ss: float = 0) -> datetime:
    """A fixed test day, UTC."""
    sec = int(ss)
    return datetime(2026, 1, 5, hh, mm, sec, int((ss - sec) * 1e6), tzinfo=UTC)


def job_restarts(settings: Settings, job_id: str, timeout_s: float = 60) -> tuple[int, list]:
    """The job's numRestarts metric (the JobManager fetches metrics every few seconds: polled
    until it has it) and its exception history."""
    import httpx

    base = f"{settings.flink.rest_url}/jobs/{job_id}"
    deadline = time.monotonic() + timeout_s
    while True:
        found = httpx.get(f"{base}/metrics", params={"get": "numRestarts"}, timeout=10).json()
        if found or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert found, f"no numRestarts metric for job {job_id} within {timeout_s} s"
    history = httpx.get(f"{base}/exceptions", timeout=10).json()
    return int(found[0]["value"]), history.get("exceptionHistory", {}).get("entries", [])


def operator_metric(settings: Settings, job_id: str, name: str, timeout_s: float = 60) -> int:
    """A user metric of the job's operators (e.g. OeeWindows' lateReadingsDropped), summed over
    every vertex and subtask that has it; polled until the JobManager reports it."""
    import httpx

    base = f"{settings.flink.rest_url}/jobs/{job_id}"
    deadline = time.monotonic() + timeout_s
    while True:
        total, seen = 0, False
        for vertex in httpx.get(base, timeout=10).json()["vertices"]:
            url = f"{base}/vertices/{vertex['id']}/subtasks/metrics"
            ids = [m["id"] for m in httpx.get(url, timeout=10).json()
                   if m["id"].endswith("." + name)]
            if ids:
                values = httpx.get(url, params={"get": ",".join(ids), "agg": "sum"},
                                   timeout=10).json()
                total += sum(int(float(v["sum"])) for v in values)
                seen = True
        if seen or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert seen, f"no operator metric {name} in job {job_id} within {timeout_s} s"
    return total
