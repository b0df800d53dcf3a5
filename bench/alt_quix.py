"""The downsample job in Quix Streams (the `alternatives` bench stage times it against
otbridge's Flink job).

Standalone on purpose: it stands for what a plant would write with Quix Streams instead of
otbridge, and it runs in its own virtualenv (quixstreams pins an older confluent-kafka than
otbridge), so it cannot use otbridge.codec and imports nothing from otbridge: every topic,
address and setting comes from the command line, the Avro schemas from --schema-dir (the bench
writes otbridge's there), and extra librdkafka connection settings (security) from the JSON in
$OTBRIDGE_ALT_KAFKA_CONFIG.

The same semantics as jobs/downsample/downsample.sql, built from Quix's documented pieces:

- input read as raw bytes; an `apply` decodes the Confluent wire format with fastavro (writer
  schema by id from the registry, cached) and routes what cannot be used to a dead-letter
  branch (DeadLetter Avro): not Avro, unknown schema id, undecodable body, NaN/inf value,
  source time far in the future, late (its 1-minute window already emitted, judged on the
  watermark = max event time - out-of-orderness, the minimum over the partitions and none
  until each partition with data has had a record, as Flink's source does);
- two branches of tumbling windows (1 minute, 1 hour) over the Kafka record timestamp,
  `reduce` to min/max/sum/first/last/count over GOOD samples and count_other, `final()` with
  the "partition" closing strategy and grace = out-of-orderness - 1 ms, so a window closes
  exactly when Flink's watermark fires it (window end - 1 ms);
- windows are grouped by the message key (the asset path) and hold one accumulator per
  asset|tag, so no repartition topic is needed; the output is one ReadingAggregate per
  asset|tag and window, keyed `asset|tag`, written with Quix's AvroSerializer through the
  schema registry (subject <topic>-value).

Where it can differ from Flink: Quix closes windows on the timestamps of the records that
reach the windows, so a dead letter carrying the partition's newest timestamp moves Flink's
watermark but closes no Quix window until the next good record; records with no key are
skipped by Quix's windows. Neither happens with otbridge's connectors' input (keyed by asset,
Kafka timestamps = source timestamps). Output is at-least-once by default, as Quix's is.

It stops (Application.stop()) once it has processed the input up to the end offsets it saw
at start; Quix then flushes the producer and commits. Prints one JSON line: records, seconds
(first record processed -> Application.run() returned), counts and settings.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Consumer, TopicPartition
from quixstreams import Application
from quixstreams.context import message_context
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models.serializers.avro import AvroSerializer
from quixstreams.models.serializers.schema_registry import (
    SchemaRegistryClientConfig,
    SchemaRegistrySerializationConfig,
)

PRODUCER_NAME = "downsample-quix"
UNIT, MIN, MAX, SUM, FIRST, LAST, COUNT, OTHER, NVALUES = range(9)


def plain_types(schema: Any) -> Any:
    """The schema without logical types: timestamps decode as int milliseconds."""
    if isinstance(schema, dict):
        return {k: plain_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [plain_types(s) for s in schema]
    return schema


class SchemaById:
    """Writer schemas by registry id (GET /schemas/ids/{id}), parsed and cached."""

    def __init__(self, url: str, user_info: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if user_info:
            import base64

            self.headers["Authorization"] = "Basic " + base64.b64encode(
                user_info.encode()).decode()
        self.cache: dict[int, Any] = {}

    def get(self, schema_id: int) -> Any:
        """The parsed schema, or None if the registry does not know the id."""
        if schema_id in self.cache:
            return self.cache[schema_id]
        req = urllib.request.Request(f"{self.url}/schemas/ids/{schema_id}",
                                     headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                text = json.load(resp)["schema"]
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            parsed = None
        else:
            parsed = fastavro.parse_schema(plain_types(json.loads(text)))
        self.cache[schema_id] = parsed
        return parsed


def new_acc() -> list[Any]:
    return [None, None, None, 0.0, None, None, 0, 0, 0]


def update(acc: list[Any], v: dict[str, Any]) -> None:
    if v["unit"] is not None:
        acc[UNIT] = v["unit"]
    if not v["good"]:
        acc[OTHER] += 1
        return
    acc[COUNT] += 1
    value = v["value"]
    if value is None:
        return
    if acc[NVALUES] == 0:
        acc[MIN] = acc[MAX] = acc[FIRST] = value
    else:
        if value < acc[MIN]:
            acc[MIN] = value
        if value > acc[MAX]:
            acc[MAX] = value
    acc[SUM] += value
    acc[LAST] = value
    acc[NVALUES] += 1


def initializer(v: dict[str, Any]) -> dict[str, list[Any]]:
    acc = new_acc()
    update(acc, v)
    return {v["key"]: acc}


def reducer(agg: dict[str, list[Any]], v: dict[str, Any]) -> dict[str, list[Any]]:
    acc = agg.get(v["key"])
    if acc is None:
        acc = agg[v["key"]] = new_acc()
    update(acc, v)
    return agg


def expand_window(window: dict[str, Any]) -> list[dict[str, Any]]:
    """One closed window of one message key -> one ReadingAggregate per asset|tag."""
    out = []
    start, end = window["start"], window["end"]
    for key, acc in window["value"].items():
        asset, _, tag = key.rpartition("|")
        n = acc[NVALUES]
        out.append({"asset": asset, "tag": tag, "window_start": start, "window_end": end,
                    "unit": acc[UNIT], "min": acc[MIN], "max": acc[MAX],
                    "avg": acc[SUM] / n if n else None, "first": acc[FIRST],
                    "last": acc[LAST], "count": acc[COUNT], "count_other": acc[OTHER]})
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True)
    p.add_argument("--out-1m", required=True)
    p.add_argument("--out-1h", required=True)
    p.add_argument("--dlq", required=True)
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--registry-url", required=True)
    p.add_argument("--schema-dir", required=True, type=Path,
                   help="folder with ReadingAggregate.avsc and DeadLetter.avsc")
    p.add_argument("--state-dir", required=True, type=Path, help="Quix state (RocksDB)")
    p.add_argument("--group", default=None, help="consumer group (default: a fresh one)")
    p.add_argument("--minute-ms", type=int, default=60_000)
    p.add_argument("--hour-ms", type=int, default=3_600_000)
    p.add_argument("--out-of-orderness-ms", type=int, default=5_000)
    p.add_argument("--max-future-s", type=float, default=300.0)
    p.add_argument("--linger-ms", type=int, default=20)
    p.add_argument("--batch-num-messages", type=int, default=10_000)
    p.add_argument("--compression", default="lz4")
    p.add_argument("--commit-interval-s", type=float, default=5.0)
    p.add_argument("--processing-guarantee", default="at-least-once",
                   choices=["at-least-once", "exactly-once"])
    p.add_argument("--idle-timeout-s", type=float, default=30.0,
                   help="stop after this long without a record (a fallback; normally the "
                        "job stops at the end offsets)")
    return p.parse_args(argv)


def end_offsets(conf: dict[str, Any], topic: str) -> dict[int, tuple[int, int]]:
    consumer = Consumer({**conf, "group.id": f"otbridge-alt-quix-probe-{uuid.uuid4().hex[:6]}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise SystemExit(f"alt_quix: input topic {topic!r}: {meta.error}")
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in sorted(meta.partitions)}
    finally:
        consumer.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    extra = json.loads(os.environ.get("OTBRIDGE_ALT_KAFKA_CONFIG") or "{}")
    conn = {**extra, "bootstrap.servers": args.bootstrap_servers}
    user_info = os.environ.get("OTBRIDGE_ALT_REGISTRY_USER_INFO") or None
    group = args.group or f"otbridge-alt-quix-{uuid.uuid4().hex[:8]}"
    offsets = end_offsets(conn, args.input)
    ends = {p: high for p, (low, high) in offsets.items() if high > low}
    pending = set(ends)

    producer_conf = {"linger.ms": args.linger_ms, "batch.num.messages": args.batch_num_messages,
                     "compression.type": args.compression, "acks": "all",
                     "enable.idempotence": True}
    app = Application(
        broker_address=ConnectionConfig.from_librdkafka_dict(conn),
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval_s,
        state_dir=args.state_dir,
        loglevel="WARNING",
        processing_guarantee=args.processing_guarantee,
        producer_extra_config=producer_conf,
        consumer_extra_config={"isolation.level": "read_committed"},
    )
    registry_conf = SchemaRegistryClientConfig(url=args.registry_url,
                                               basic_auth_user_info=user_info)
    serialization = SchemaRegistrySerializationConfig(auto_register_schemas=True)

    def avro_topic(name: str, schema_name: str) -> Any:
        schema = json.loads((args.schema_dir / f"{schema_name}.avsc").read_text())
        return app.topic(name, key_serializer="str", value_serializer=AvroSerializer(
            schema, schema_registry_client_config=registry_conf,
            schema_registry_serialization_config=serialization))

    input_topic = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    out_1m = avro_topic(args.out_1m, "ReadingAggregate")
    out_1h = avro_topic(args.out_1h, "ReadingAggregate")
    dlq = avro_topic(args.dlq, "DeadLetter")

    schemas = SchemaById(args.registry_url, user_info)
    minute_ms, ooo = args.minute_ms, args.out_of_orderness_ms
    max_future_ms = int(args.max_future_s * 1000)
    max_ts: dict[int, int] = {}
    state: dict[str, Any] = {"watermark": -(2**62), "started": None}
    counts = {"records": 0, "out_1m": 0, "out_1h": 0, "dlq": 0, "late_in_window": 0}
    reasons: dict[str, int] = {}
    reader: Any = fastavro.schemaless_reader

    def dead(raw: bytes | None, key: bytes | None, ctx: Any, reason: str, detail: str
             ) -> dict[str, Any]:
        reasons[reason] = reasons.get(reason, 0) + 1
        return {"source_topic": ctx.topic, "source_partition": ctx.partition,
                "source_offset": ctx.offset, "key": key, "value": raw, "reason": reason,
                "detail": detail[:500], "producer": PRODUCER_NAME,
                "dead_ts": int(time.time() * 1000)}

    def decode(raw: bytes | None, key: bytes | None, ts: int, headers: Any) -> dict[str, Any]:
        ctx = message_context()
        if state["started"] is None:
            state["started"] = time.perf_counter()
        counts["records"] += 1
        p = ctx.partition
        if p in pending and ctx.offset + 1 >= ends[p]:
            pending.discard(p)
            if not pending:
                app.stop()  # this message still runs through the whole pipeline
        # like Flink's source, every record moves the watermark, dead letters included; the
        # record itself is judged against the watermark before it
        watermark = state["watermark"]
        if ts > max_ts.get(p, -(2**62)):
            max_ts[p] = ts
            if len(max_ts) >= len(ends):  # every partition with data has had a record
                state["watermark"] = max(watermark, min(max_ts.values()) - ooo)
        if raw is None or len(raw) < 5 or raw[0] != 0:
            return dead(raw, key, ctx, "not_avro", "no Confluent wire-format header (magic "
                        "byte 0)")
        sid = int.from_bytes(raw[1:5], "big")
        parsed = schemas.get(sid)
        if parsed is None:
            return dead(raw, key, ctx, "unknown_schema_id", f"schema id {sid} is not "
                        "registered")
        try:
            rec = reader(io.BytesIO(raw[5:]), parsed)
            asset, tag, quality = rec["asset"], rec["tag"], rec["quality"]
            value, unit, source_ts = rec.get("value"), rec.get("unit"), rec["source_ts"]
        except Exception as exc:
            return dead(raw, key, ctx, "schema_mismatch", f"schema id {sid}: {exc!r}")
        if value is not None and not math.isfinite(value):
            return dead(raw, key, ctx, "nan_value" if math.isnan(value) else "inf_value",
                        f"{asset} {tag}: value is {value}")
        now_ms = int(time.time() * 1000)
        if source_ts > now_ms + max_future_ms:
            return dead(raw, key, ctx, "future_timestamp", f"{asset} {tag}: source_ts "
                        f"{source_ts} is {(source_ts - now_ms) / 1000:.0f} s in the future")
        if ts - ts % minute_ms + minute_ms <= watermark + 1:
            return dead(raw, key, ctx, "late", "event time older than the watermark minus "
                        "the allowed lateness")
        return {"key": f"{asset}|{tag}", "value": value, "unit": unit,
                "good": quality == "GOOD"}

    def on_late(*_args: Any) -> bool:
        counts["late_in_window"] += 1  # should not happen: late records went to the DLQ
        return False

    def counter(name: str) -> Any:
        def count(_value: Any) -> None:
            counts[name] += 1
        return count

    sdf = app.dataframe(input_topic)
    decoded = sdf.apply(decode, metadata=True)
    # branch 1: dead letters
    (decoded.filter(lambda v: "reason" in v)
        .update(counter("dlq"))
        .to_topic(dlq, key=lambda v: f"{v['source_topic']}/{v['source_partition']}/"
                                     f"{v['source_offset']}"))
    good = decoded.filter(lambda v: "reason" not in v)
    # branches 2 and 3: 1-minute and 1-hour windows
    for size_ms, out, name in ((args.minute_ms, out_1m, "out_1m"),
                               (args.hour_ms, out_1h, "out_1h")):
        (good.tumbling_window(size_ms, grace_ms=ooo - 1, name=f"downsample_{size_ms}",
                              on_late=on_late)
            .reduce(reducer=reducer, initializer=initializer)
            .final(closing_strategy="partition")
            .apply(expand_window, expand=True)
            .update(counter(name))
            .to_topic(out, key=lambda v: f"{v['asset']}|{v['tag']}"))

    if pending:
        app.run(timeout=args.idle_timeout_s, collect=False)
    ended = time.perf_counter()
    started = state["started"]
    return {**counts, "seconds": ended - started if started is not None else 0.0,
            "dlq_reasons": reasons, "ended_by": "idle" if pending else "end_offsets",
            "watermark": state["watermark"],
            "settings": {"quixstreams": version("quixstreams"),
                         "confluent_kafka": version("confluent-kafka"),
                         "linger_ms": args.linger_ms,
                         "batch_num_messages": args.batch_num_messages,
                         "compression": args.compression, "acks": "all", "idempotent": True,
                         "processing_guarantee": args.processing_guarantee,
                         "commit_interval_s": args.commit_interval_s,
                         "state": "RocksDB + changelog topics",
                         "closing_strategy": "partition", "grace_ms": ooo - 1,
                         "keying": "message key (asset), one accumulator per asset|tag",
                         "partitions": len(offsets), "group": group}}


def main(argv: list[str] | None = None) -> int:
    result = run(parse_args(argv))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
