"""Produce and consume Avro records in tests, the way otbridge's connectors and users do."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.serialization import MessageField, SerializationContext

from otbridge.kafka import consumer_config, producer_config
from otbridge.registry import deserializer, registry_client, serializer
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
    """Avro via the registry; the Kafka timestamp is the record's source time, as connectors do."""
    ser = serializer(registry_client(settings), schema)
    producer = Producer(producer_config(settings))
    for rec in records:
        kwargs = {"timestamp": rec[timestamp_field]} if timestamp_field else {}
        producer.produce(topic, key=str(rec[key]).encode(),
                         value=ser(rec, SerializationContext(topic, MessageField.VALUE)), **kwargs)
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
    de = deserializer(registry_client(settings))
    consumer = Consumer(consumer_config(settings, f"test-{topic}-{time.monotonic_ns()}"))
    consumer.subscribe([topic])
    out = []
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
            value = de(msg.value(), SerializationContext(topic, MessageField.VALUE))
            out.append((msg.key(), value, msg.value()))
    finally:
        consumer.close()
    return out


def at(hh: int, mm: int, ss: float = 0) -> datetime:
    """A fixed test day, UTC."""
    sec = int(ss)
    return datetime(2026, 1, 5, hh, mm, sec, int((ss - sec) * 1e6), tzinfo=UTC)
