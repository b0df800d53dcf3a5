"""Asset master data for the OEE job: the compacted iiot.assets topic, read like a lookup table.

Every parallel instance reads the whole topic when it opens (before its first reading) and
picks up later updates whenever it closes a window. Master data thus never takes part in
event time: it cannot hold back or push forward the readings' watermark.
"""

from __future__ import annotations

from typing import Any

from jobs.oee.timeline import Master
from otbridge.codec.wire import RegistryLookup, WireDecoder


class AssetTable:
    def __init__(self, kafka_conf: dict[str, Any], topic: str, registry_url: str,
                 user_info: str | None, asset_schema: dict[str, Any]) -> None:
        self.kafka_conf = kafka_conf
        self.topic = topic
        self.registry_url = registry_url
        self.user_info = user_info
        self.asset_schema = asset_schema
        self.masters: dict[str, Master] = {}
        self._consumer: Any = None
        self._decoder: WireDecoder | None = None

    def open(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._decoder = WireDecoder(self.asset_schema,
                                    RegistryLookup(self.registry_url, self.user_info))
        self._consumer = Consumer({**self.kafka_conf, "group.id": "otbridge-oee-assets",
                                   "enable.auto.commit": False,
                                   "isolation.level": "read_committed"})
        md = self._consumer.list_topics(self.topic, timeout=30).topics[self.topic]
        parts = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in md.partitions]
        self._consumer.assign(parts)
        ends = {p.partition: self._consumer.get_watermark_offsets(p, timeout=30)[1]
                for p in parts}
        position = dict.fromkeys(ends, 0)
        while any(position[p] < ends[p] for p in ends):  # the whole table before the first use
            msg = self._consumer.poll(1.0)
            if msg is not None and not msg.error():
                self._apply(msg)
                position[msg.partition()] = msg.offset() + 1

    def refresh(self) -> None:
        """Apply updates that arrived since the last call (never blocks)."""
        while True:
            msg = self._consumer.poll(0)
            if msg is None:
                return
            if not msg.error():
                self._apply(msg)

    def get(self, asset: str) -> Master | None:
        return self.masters.get(asset)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()

    def _apply(self, msg: Any) -> None:
        assert self._decoder is not None
        if msg.value() is None:  # a tombstone: the asset was removed
            self.masters.pop((msg.key() or b"").decode(), None)
            return
        rec = self._decoder.decode(msg.value()).record
        if rec is None:
            return  # undecodable master data is skipped (the readings side has the DLQ)
        self.masters[rec["asset"]] = Master(
            ideal_cycle_time_s=rec["ideal_cycle_time_s"],
            state_tag=rec["state_tag"] or "state",
            total_count_tag=rec["total_count_tag"] or "count_total",
            good_count_tag=rec["good_count_tag"] or "count_good",
            state_codes=dict(rec["state_codes"] or {}),
        )
