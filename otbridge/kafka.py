"""Kafka client configuration and topic management, from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from otbridge.errors import OtbridgeError
from otbridge.settings import Settings


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all, batched: nothing is lost or duplicated by a retry."""
    conf: dict[str, Any] = {
        **settings.kafka.librdkafka(),
        "enable.idempotence": True,  # off by default in librdkafka
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        "batch.num.messages": 10000,
    }
    conf.update(overrides)
    return conf


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """read_committed: a consumer never sees records of aborted Flink transactions."""
    conf: dict[str, Any] = {
        **settings.kafka.librdkafka(),
        "group.id": group_id,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    conf.update(overrides)
    return conf


def admin(settings: Settings, **overrides: Any) -> AdminClient:
    conf: dict[str, Any] = {**settings.kafka.librdkafka(), **overrides}
    return AdminClient(conf)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3
    config: dict[str, str] = field(default_factory=dict)


def default_topics(settings: Settings) -> list[TopicSpec]:
    t = settings.topics
    week = str(7 * 24 * 3600 * 1000)
    return [
        TopicSpec(t.readings, config={"retention.ms": week}),
        TopicSpec(t.assets, partitions=1, config={"cleanup.policy": "compact"}),
        # the active alerts: latest transition per asset + tag + rule
        TopicSpec(t.alerts, config={"cleanup.policy": "compact,delete", "retention.ms": week}),
        TopicSpec(t.oee),
        TopicSpec(t.readings_1m),
        TopicSpec(t.readings_1h),
        TopicSpec(t.dlq, partitions=1),
        TopicSpec(t.clock, partitions=1, config={"retention.ms": str(3600 * 1000)}),
    ]


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None,
                  **client_config: Any) -> list[str]:
    """Create the topics that do not exist yet; return the names created. `client_config`:
    more settings of the admin client (e.g. a `logger` for librdkafka's own lines)."""
    client = admin(settings, **client_config)
    specs = default_topics(settings) if specs is None else specs
    existing = set(client.list_topics(timeout=10).topics)
    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=s.config)
        for s in specs
        if s.name not in existing
    ]
    if not new:
        return []
    for name, future in client.create_topics(new, operation_timeout=30).items():
        try:
            future.result()
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise OtbridgeError(f"creating topic {name!r} failed: {exc}") from exc
    return [t.topic for t in new]
