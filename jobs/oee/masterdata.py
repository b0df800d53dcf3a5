"""Asset master data (stands in for MES/ERP) into the compacted `iiot.assets` topic.

`otbridge assets load FILE` validates an assets YAML file and writes one `Asset` record
per asset, keyed by its ISA-95 path, so the latest record per asset is what a compacted
topic keeps. `defaults` apply to every asset that does not set the field itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import Producer
from confluent_kafka.serialization import MessageField, SerializationContext
from pydantic import Field, model_validator

from otbridge.codec.avro import utc_now
from otbridge.errors import OtbridgeError
from otbridge.files import AssetPath, Model, TagName, load_model
from otbridge.kafka import TopicSpec, default_topics, ensure_topics, producer_config
from otbridge.registry import registry_client, serializer
from otbridge.settings import Settings

log = logging.getLogger(__name__)

Category = Literal["RUNNING", "UNPLANNED_STOP", "PLANNED_STOP"]


class AssetFields(Model):
    name: str | None = None
    ideal_cycle_time_s: float | None = Field(None, gt=0)
    state_tag: TagName | None = None
    total_count_tag: TagName | None = None
    good_count_tag: TagName | None = None
    state_codes: dict[int, Category] | None = Field(
        None, description="machine state code -> RUNNING, UNPLANNED_STOP or PLANNED_STOP"
    )


class AssetEntry(AssetFields):
    asset: AssetPath


class AssetsFile(Model):
    defaults: AssetFields = AssetFields()
    assets: list[AssetEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> AssetsFile:
        seen: set[str] = set()
        for entry in self.assets:
            if entry.asset in seen:
                raise ValueError(f"assets: asset {entry.asset!r} appears more than once")
            seen.add(entry.asset)
        return self

    def records(self) -> list[dict[str, Any]]:
        """The Asset records (schemas/Asset.avsc), defaults applied."""
        now = utc_now()
        out = []
        for entry in self.assets:
            given = entry.model_dump(exclude_unset=True)
            merged = {**self.defaults.model_dump(exclude_unset=True), **given}
            codes = merged.get("state_codes") or {}
            out.append(
                {
                    "asset": entry.asset,
                    "name": merged.get("name"),
                    "ideal_cycle_time_s": merged.get("ideal_cycle_time_s"),
                    "state_tag": merged.get("state_tag"),
                    "total_count_tag": merged.get("total_count_tag"),
                    "good_count_tag": merged.get("good_count_tag"),
                    "state_codes": {str(code): cat for code, cat in sorted(codes.items())},
                    "updated_ts": now,
                }
            )
        return out


def load_assets_file(path: Path | str) -> AssetsFile:
    """The assets file; a ConfigError names the file, the field and what would be valid."""
    return load_model(path, AssetsFile, what="assets file")


def assets_topic_spec(settings: Settings, topic: str) -> TopicSpec:
    for spec in default_topics(settings):
        if spec.name == settings.topics.assets:
            return TopicSpec(topic, spec.partitions, dict(spec.config))
    return TopicSpec(topic, 1, {"cleanup.policy": "compact"})  # pragma: no cover


def publish_assets(settings: Settings, assets: AssetsFile, *, topic: str | None = None) -> int:
    """Write every asset record, keyed by asset path; return how many were delivered."""
    topic = topic or settings.topics.assets
    ensure_topics(settings, [assets_topic_spec(settings, topic)])
    serialize = serializer(registry_client(settings), "Asset")
    producer = Producer(
        producer_config(settings, **{"client.id": "otbridge-assets", "linger.ms": 5})
    )
    ctx = SerializationContext(topic, MessageField.VALUE)
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(f"{msg.key()!r}: {err}")

    records = assets.records()
    for record in records:
        producer.produce(
            topic,
            key=record["asset"].encode(),
            value=serialize(record, ctx),
            on_delivery=delivered,
        )
        producer.poll(0)
    left = producer.flush(30)
    if left or failures:
        raise OtbridgeError(
            f"{len(failures) + left} of {len(records)} asset records not delivered to {topic}: "
            + "; ".join(failures[:5])
        )
    return len(records)
