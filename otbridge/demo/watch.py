"""Follow the result topics in the background: latest record per key, and counts."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from otbridge.kafka import admin, consumer_config
from otbridge.registry import deserializer, registry_client
from otbridge.settings import Settings


class Watcher:
    """Reads iiot.oee, iiot.alerts and iiot.readings.1m from the moment it starts, and the
    machines' state readings from iiot.readings (`states`: asset -> latest state reading)."""

    def __init__(self, settings: Settings, state_tag: str = "state") -> None:
        t = settings.topics
        self.settings = settings
        self.topics = [t.oee, t.alerts, t.readings_1m]
        self.latest: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.topics}
        self._counts = dict.fromkeys(self.topics, 0)
        self.states: dict[str, dict[str, Any]] = {}
        self.state_tag = state_tag
        self._first: dict[str, float] = {}  # topic -> time.monotonic() of its first record
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def first_seen(self) -> dict[str, float]:
        """time.monotonic() at which each topic's first record arrived."""
        with self._lock:
            return dict(self._first)

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """topic -> key -> latest value, and "states" -> asset -> latest state reading."""
        with self._lock:
            snap = {topic: dict(rows) for topic, rows in self.latest.items()}
            snap["states"] = dict(self.states)
            return snap

    def _run(self) -> None:
        de = deserializer(registry_client(self.settings))
        group = f"otbridge-demo-{uuid.uuid4().hex[:8]}"
        conf = consumer_config(self.settings, group, **{"auto.offset.reset": "latest"})
        consumer = Consumer(conf)
        consumer.subscribe([*self.topics, self.settings.topics.readings])
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error() or msg.value() is None:
                    continue
                topic = msg.topic() or ""
                try:
                    value = de(msg.value(), SerializationContext(topic, MessageField.VALUE))
                except Exception:
                    continue
                key = (msg.key() or b"").decode(errors="replace")
                if topic == self.settings.topics.readings:
                    if isinstance(value, dict) and value.get("tag") == self.state_tag:
                        with self._lock:
                            self.states[key] = value
                    continue
                with self._lock:
                    self._counts[topic] += 1
                    self._first.setdefault(topic, time.monotonic())
                    self.latest[topic][key] = value if isinstance(value, dict) else {}
        finally:
            consumer.close()


class LagProbe:
    """Records of iiot.readings each job's consumer group has not read yet (None: unknown).

    One admin client and one consumer, made on first use and reused by every `lag()` call
    (the demo view asks every few seconds); `close()` when done."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin: Any = None
        self._probe: Consumer | None = None

    def lag(self, group_ids: list[str]) -> dict[str, int | None]:
        from confluent_kafka import ConsumerGroupTopicPartitions

        if self._admin is None:
            self._admin = admin(self.settings)
        if self._probe is None:
            self._probe = Consumer(
                {**self.settings.kafka.librdkafka(), "group.id": "otbridge-lag-probe"}
            )
        topic = self.settings.topics.readings
        md = self._admin.list_topics(topic, timeout=5).topics.get(topic)
        if md is None or md.error:
            return dict.fromkeys(group_ids)
        ends = {
            p: self._probe.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in md.partitions
        }
        lag: dict[str, int | None] = {}
        for group in group_ids:
            try:
                fut = self._admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(group)]
                )
                parts = fut[group].result(timeout=5).topic_partitions
                committed = {tp.partition: tp.offset for tp in parts if tp.topic == topic}
                lag[group] = (
                    sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
                    if committed else None
                )
            except Exception:
                lag[group] = None
        return lag

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self._admin = None


def age_s(ts: Any) -> float:
    return time.time() - ts.timestamp() if hasattr(ts, "timestamp") else float("nan")
