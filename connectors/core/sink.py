"""Readings into Kafka: one Avro `Reading` per sample, keyed by asset path.

Idempotent producer with acks=all (otbridge.kafka.producer_config), a delivery callback per
record that counts and logs failures, and no flush per record: `poll(0)` serves callbacks.

The hot path of a connector is here. What stays the same between two readings of one tag
(its Kafka key, the Avro bytes of asset, tag, unit and source) is encoded once, in a
`Series`; a reading then costs a few byte concatenations and one `produce` (see
`ReadingEncoder`): a connector asks for each tag's `series` once, then `emit_value`s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from otbridge.codec.avro import Quality, ReadingEncoder, Series
from otbridge.errors import OtbridgeError
from otbridge.kafka import TopicSpec, default_topics, ensure_topics, producer_config
from otbridge.registry import registry_client
from otbridge.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Counters:
    readings: int = 0
    bad: int = 0
    errors: int = 0
    reconnects: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"readings={self.readings} ({self.readings / elapsed:.0f}/s) bad={self.bad} "
            f"errors={self.errors} reconnects={self.reconnects} delivered={self.delivered} "
            f"delivery_failures={self.delivery_failures}"
        )


class ReadingSink:
    """Numbers samples (`seq`, no gaps) and produces them as Readings.

    `connector` is the instance id written into every reading: (connector, seq) identifies
    a reading end to end. `limit` stops accepting samples after that many (for tests and
    benchmarks); `emit` then returns False and `on_limit` is called once.
    """

    def __init__(
        self,
        *,
        producer: Producer,
        encode: ReadingEncoder,
        topic: str,
        connector: str,
        counters: Counters,
        limit: int | None = None,
        on_limit: Callable[[], None] | None = None,
    ) -> None:
        self.producer = producer
        self.encode = encode
        self.topic = topic
        self.connector = connector
        self.counters = counters
        self.limit = limit
        self.on_limit = on_limit
        self.seq = 0
        self._series: dict[tuple[str, str, str | None, str], Series] = {}
        self._produce = producer.produce
        self._on_delivery = self._delivered
        self._encode_series = encode.encode

    @property
    def full(self) -> bool:
        return self.limit is not None and self.seq >= self.limit

    def series(self, asset: str, tag: str, unit: str | None, source: str) -> Series:
        """The series of one tag (made once, then cached), for `emit_value`."""
        key = (asset, tag, unit, source)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series.of(asset, tag, unit, source)
        return found

    def emit_value(
        self,
        series: Series,
        value: float | None,
        quality: Quality,
        source_ms: int,
        text: str | None = None,
    ) -> bool:
        """One reading of `series` taken at `source_ms` (ms since the epoch, UTC)."""
        seq = self.seq
        if self.limit is not None and seq >= self.limit:
            return False
        data = self._encode_series(
            series, value, text, quality.value, source_ms, time.time_ns() // 1_000_000, seq,
            self.connector,
        )  # fmt: skip
        # the record's Kafka timestamp is the source time: event time for consumers and jobs
        while True:
            try:
                self._produce(
                    self.topic, value=data, key=series.key, timestamp=source_ms,
                    on_delivery=self._on_delivery,
                )  # fmt: skip
                break
            except BufferError:  # local queue full: serve callbacks, never drop or skip a seq
                self.producer.poll(0.05)
        self.seq = seq + 1
        counters = self.counters
        counters.readings += 1
        if quality is Quality.BAD:
            counters.bad += 1
        if self.on_limit is not None and self.full:
            self.on_limit()
        return True

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Deliver what is queued; return how many records are still undelivered."""
        return int(self.producer.flush(timeout_s))

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.counters.delivered += 1
            return
        self.counters.delivery_failures += 1
        log.error("delivery to %s failed (key %r): %s", msg.topic(), msg.key(), err)


def readings_topic_spec(settings: Settings, topic: str) -> TopicSpec:
    """The configured spec when `topic` is otbridge's readings topic, else a default one."""
    for spec in default_topics(settings):
        if spec.name == topic:
            return spec
    return TopicSpec(topic)


def open_sink(
    settings: Settings,
    *,
    topic: str,
    connector: str,
    counters: Counters,
    limit: int | None = None,
    on_limit: Callable[[], None] | None = None,
) -> ReadingSink:
    """Create the topic if needed, a producer and the registry serializer for `Reading`.

    Fails fast, with an OtbridgeError naming the address, when Kafka or the registry is
    unreachable: the schema is registered here, before any device is read.
    """
    try:
        ensure_topics(settings, [readings_topic_spec(settings, topic)])
    except KafkaException as exc:
        raise OtbridgeError(
            f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}"
        ) from None
    try:
        encode = ReadingEncoder(registry_client(settings), topic)
    except Exception as exc:
        raise OtbridgeError(
            f"cannot register the Reading schema for {topic} at {settings.registry.url}: {exc}"
        ) from None
    producer = Producer(producer_config(settings, **{"client.id": connector}))
    return ReadingSink(
        producer=producer,
        encode=encode,
        topic=topic,
        connector=connector,
        counters=counters,
        limit=limit,
        on_limit=on_limit,
    )
