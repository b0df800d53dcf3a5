"""`otbridge tail` and `otbridge topics`: read the result topics without writing code."""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import datetime
from typing import Any, TextIO

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from otbridge.errors import OtbridgeError
from otbridge.kafka import admin, consumer_config
from otbridge.registry import deserializer, registry_client
from otbridge.settings import Settings


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def tail(settings: Settings, topic: str, *, from_beginning: bool, max_records: int | None,
         as_json: bool, key: str | None, idle_timeout_s: float | None = None,
         out: TextIO = sys.stdout) -> int:
    """Print records of topic decoded via the registry; returns how many were printed."""
    if topic not in admin(settings).list_topics(timeout=10).topics:
        raise OtbridgeError(f"no topic {topic!r}; `otbridge topics` lists otbridge's topics")
    de = deserializer(registry_client(settings))
    consumer = Consumer(consumer_config(
        settings, f"otbridge-tail-{uuid.uuid4().hex[:8]}",
        **{"auto.offset.reset": "earliest" if from_beginning else "latest"},
    ))
    consumer.subscribe([topic])
    printed = 0
    last = time.monotonic()
    try:
        while max_records is None or printed < max_records:
            msg = consumer.poll(0.5)
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    break
                continue
            if msg.error():
                continue
            last = time.monotonic()
            raw_key = msg.key()
            k = raw_key.decode(errors="replace") if raw_key is not None else None
            if key is not None and k != key:
                continue
            try:
                value = de(msg.value(), SerializationContext(topic, MessageField.VALUE))
            except Exception as exc:  # not Avro, unknown schema: show it, do not stop
                value = {"undecodable": repr(exc)[:200]}
            record = {"topic": topic, "partition": msg.partition(), "offset": msg.offset(),
                      "key": k, "value": _jsonable(value)}
            if as_json:
                print(json.dumps(record), file=out, flush=True)
            else:
                fields = " ".join(f"{f}={v}" for f, v in record["value"].items())
                print(f"{msg.partition()}:{msg.offset()} {k} {fields}", file=out, flush=True)
            printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return printed


def topics(settings: Settings) -> list[dict[str, Any]]:
    """otbridge's topics with record counts (end - start offsets) and registered schemas."""
    client = admin(settings)
    md = client.list_topics(timeout=10)
    reg = registry_client(settings)
    subjects = set(reg.get_subjects())
    probe = Consumer({**settings.kafka.librdkafka(), "group.id": "otbridge-topics-probe"})
    rows = []
    try:
        for name in settings.topics.all():
            t = md.topics.get(name)
            if t is None:
                rows.append({"topic": name, "exists": False})
                continue
            count = 0
            for p in t.partitions:
                lo, hi = probe.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                count += hi - lo
            schema = None
            if f"{name}-value" in subjects:
                latest = reg.get_latest_version(f"{name}-value")
                schema = {"subject": f"{name}-value", "version": latest.version,
                          "id": latest.schema_id,
                          "name": json.loads(latest.schema.schema_str or "{}").get("name")}
            rows.append({"topic": name, "exists": True, "partitions": len(t.partitions),
                         "records": count, "schema": schema})
    finally:
        probe.close()
    return rows
