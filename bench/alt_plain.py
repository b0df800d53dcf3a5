"""The downsample job as a plain Python script: the kind of script a plant starts with, written
carefully (the `alternatives` bench stage times it against otbridge's Flink job).

confluent-kafka Consumer from the beginning of the input -> fastavro schemaless decode (writer
schema by id from the registry, cached) -> dicts of open windows -> confluent-kafka Producer
(acks=all, idempotent) writing ReadingAggregate Avro in the registry wire format. The same
semantics as jobs/downsample/downsample.sql:

- event time is the Kafka record timestamp; watermark = max event time - out-of-orderness
  (5 s), the minimum over the partitions (none until every partition with data has had a
  record, as Flink's Kafka source holds its watermark back for a split without one);
- per asset + tag, tumbling 1-minute and 1-hour windows aligned to the epoch; a window is
  emitted when the watermark reaches its end - 1 ms (when Flink fires it);
- min/max/avg/first/last over GOOD samples with a value, count of GOOD samples, count_other of
  the rest; unit = last non-null unit; key `asset|tag`;
- what cannot be decoded or used (not Avro, unknown schema id, undecodable body, NaN/inf
  value, source time far in the future, late = its 1-minute window already emitted) goes to the
  dead-letter topic as a DeadLetter record, with the raw bytes.

Differences from Flink that do not change the output of in-order input: the watermark moves
with every record (Flink's moves every 200 ms, so Flink lets a little more through as on
time), and output is at-least-once (offsets are committed after the producer has flushed).

Standalone on purpose: it decodes and encodes with fastavro by its own means, not through
otbridge.codec, because it stands for the script a plant would write without otbridge (only
otbridge's settings, topic names and dead-letter reason names are borrowed, so that its output
can be compared with the job's). Making it use otbridge's codec would measure otbridge's codec
twice, not the alternative.

    python -m bench.alt_plain --input T --out-1m T --out-1h T --dlq T

Exits once it has consumed the input up to the end offsets it saw at start and flushed its
output, and prints one JSON line: records, seconds (first record polled -> output flushed and
offsets committed), counts of what it wrote, and its settings.
"""

from __future__ import annotations

import argparse
import heapq
import io
import json
import math
import sys
import time
import uuid
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema

from otbridge.codec.wire import (
    FUTURE_TIMESTAMP,
    INF_VALUE,
    LATE,
    NAN_VALUE,
    NOT_AVRO,
    SCHEMA_MISMATCH,
    UNKNOWN_SCHEMA_ID,
    RegistryLookup,
)
from otbridge.kafka import consumer_config, producer_config
from otbridge.registry import registry_client, schema_json
from otbridge.settings import Settings, load_settings

PRODUCER_NAME = "downsample-plain"
# acc layout: one list per open window
UNIT, MIN, MAX, SUM, FIRST, LAST, COUNT, OTHER, NVALUES = range(9)


def plain_types(schema: Any) -> Any:
    """The schema without logical types: timestamps decode as int milliseconds (no datetime)."""
    if isinstance(schema, dict):
        return {k: plain_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [plain_types(s) for s in schema]
    return schema


class Windows:
    """Tumbling windows of one size: open accumulators by (asset, tag, start), and a heap of
    window ends to fire in order as the watermark passes them."""

    def __init__(self, size_ms: int) -> None:
        self.size = size_ms
        self.open: dict[tuple[str, str, int], list[Any]] = {}
        self.by_end: dict[int, list[tuple[str, str, int]]] = {}
        self.ends: list[int] = []

    def add(self, asset: str, tag: str, ts: int, value: float | None, unit: str | None,
            good: bool) -> None:
        start = ts - ts % self.size
        key = (asset, tag, start)
        acc = self.open.get(key)
        if acc is None:
            acc = [None, None, None, 0.0, None, None, 0, 0, 0]
            self.open[key] = acc
            end = start + self.size
            keys = self.by_end.get(end)
            if keys is None:
                self.by_end[end] = [key]
                heapq.heappush(self.ends, end)
            else:
                keys.append(key)
        if unit is not None:
            acc[UNIT] = unit
        if not good:
            acc[OTHER] += 1
            return
        acc[COUNT] += 1
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

    def fire(self, watermark: int) -> list[dict[str, Any]]:
        """The windows whose end - 1 ms the watermark has reached, as ReadingAggregate dicts."""
        out = []
        while self.ends and self.ends[0] <= watermark + 1:
            end = heapq.heappop(self.ends)
            for key in self.by_end.pop(end):
                out.append(aggregate(key, end, self.open.pop(key)))
        return out


def aggregate(key: tuple[str, str, int], end: int, acc: list[Any]) -> dict[str, Any]:
    asset, tag, start = key
    n = acc[NVALUES]
    return {"asset": asset, "tag": tag, "window_start": start, "window_end": end,
            "unit": acc[UNIT], "min": acc[MIN], "max": acc[MAX],
            "avg": acc[SUM] / n if n else None, "first": acc[FIRST], "last": acc[LAST],
            "count": acc[COUNT], "count_other": acc[OTHER]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.alt_plain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="readings topic (Reading Avro)")
    p.add_argument("--out-1m", required=True, help="1-minute aggregates topic")
    p.add_argument("--out-1h", required=True, help="1-hour aggregates topic")
    p.add_argument("--dlq", required=True, help="dead-letter topic")
    p.add_argument("--group", default=None, help="consumer group (default: a fresh one)")
    p.add_argument("--minute-ms", type=int, default=60_000)
    p.add_argument("--hour-ms", type=int, default=3_600_000)
    p.add_argument("--out-of-orderness-ms", type=int, default=5_000)
    p.add_argument("--max-future-s", type=float, default=300.0)
    p.add_argument("--linger-ms", type=int, default=None,
                   help="producer linger.ms (default: otbridge's producer_config)")
    p.add_argument("--batch-num-messages", type=int, default=None)
    p.add_argument("--consume-batch", type=int, default=1000,
                   help="messages per Consumer.consume() call")
    p.add_argument("--idle-timeout-s", type=float, default=30.0,
                   help="give up waiting for the end offsets after this long without a record")
    return p.parse_args(argv)


def run(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    group = args.group or f"otbridge-alt-plain-{uuid.uuid4().hex[:8]}"
    overrides: dict[str, Any] = {}
    if args.linger_ms is not None:
        overrides["linger.ms"] = args.linger_ms
    if args.batch_num_messages is not None:
        overrides["batch.num.messages"] = args.batch_num_messages
    pconf = producer_config(settings, **overrides)
    producer = Producer(pconf)
    consumer = Consumer(consumer_config(settings, group))

    registry = registry_client(settings)
    out_schema = schema_json("ReadingAggregate")
    dead_schema = schema_json("DeadLetter")

    def header(topic: str, schema: dict[str, Any]) -> bytes:
        sid = registry.register_schema(f"{topic}-value", Schema(json.dumps(schema), "AVRO"))
        return b"\x00" + sid.to_bytes(4, "big")

    out_headers = {args.out_1m: header(args.out_1m, out_schema),
                   args.out_1h: header(args.out_1h, out_schema)}
    dead_header = header(args.dlq, dead_schema)
    out_parsed = fastavro.parse_schema(plain_types(out_schema))
    dead_parsed = fastavro.parse_schema(plain_types(dead_schema))
    reg = settings.registry
    user_info = (f"{reg.basic_auth_username}:{reg.basic_auth_password.get_secret_value()}"
                 if reg.basic_auth_username and reg.basic_auth_password else None)
    lookup = RegistryLookup(reg.url, user_info)
    writers: dict[int, Any] = {}

    topic = args.input
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    if meta.error is not None:
        raise SystemExit(f"alt_plain: input topic {topic!r}: {meta.error}")
    partitions = sorted(meta.partitions)
    ends: dict[int, int] = {}
    pending: set[int] = set()
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        ends[p] = high
        if high > low:
            pending.add(p)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    nonempty = frozenset(pending)

    minute, hour = Windows(args.minute_ms), Windows(args.hour_ms)
    minute_ms = args.minute_ms
    ooo = args.out_of_orderness_ms
    max_future_ms = int(args.max_future_s * 1000)
    max_ts: dict[int, int] = {}  # per partition
    watermark = -(2**62)
    counts = {"records": 0, "out_1m": 0, "out_1h": 0, "dlq": 0}
    reasons: dict[str, int] = {}
    buf = io.BytesIO()
    writer = fastavro.schemaless_writer
    reader: Any = fastavro.schemaless_reader  # returns the record as a dict
    good_quality = "GOOD"

    def produce(out_topic: str, key: bytes, value: bytes, ts: int) -> None:
        while True:
            try:
                producer.produce(out_topic, key=key, value=value, timestamp=ts)
                return
            except BufferError:
                producer.poll(0.05)

    def encode(parsed: Any, hdr: bytes, rec: dict[str, Any]) -> bytes:
        buf.seek(0)
        buf.truncate()
        writer(buf, parsed, rec)
        return hdr + buf.getvalue()

    def emit(out_topic: str, aggs: list[dict[str, Any]]) -> None:
        hdr = out_headers[out_topic]
        for agg in aggs:
            produce(out_topic, f"{agg['asset']}|{agg['tag']}".encode(),
                    encode(out_parsed, hdr, agg), agg["window_end"] - 1)
        counts["out_1m" if out_topic == args.out_1m else "out_1h"] += len(aggs)

    def dead(msg: Any, reason: str, detail: str) -> None:
        p, off = msg.partition(), msg.offset()
        rec = {"source_topic": topic, "source_partition": p, "source_offset": off,
               "key": msg.key(), "value": msg.value(), "reason": reason, "detail": detail[:500],
               "producer": PRODUCER_NAME, "dead_ts": int(time.time() * 1000)}
        produce(args.dlq, f"{topic}/{p}/{off}".encode(), encode(dead_parsed, dead_header, rec),
                int(time.time() * 1000))
        counts["dlq"] += 1
        reasons[reason] = reasons.get(reason, 0) + 1

    def handle(msg: Any, ts: int, watermark: int, now_ms: int) -> None:
        """One input record into the windows, or to the dead-letter topic."""
        counts["records"] += 1
        raw = msg.value()
        if raw is None or len(raw) < 5 or raw[0] != 0:
            return dead(msg, NOT_AVRO, "no Confluent wire-format header (magic byte 0)")
        sid = int.from_bytes(raw[1:5], "big")
        parsed = writers.get(sid)
        if parsed is None:
            try:
                text = lookup(sid)
            except (OSError, ValueError) as exc:
                raise SystemExit(f"alt_plain: registry unavailable: {exc}") from exc
            if text is None:
                return dead(msg, UNKNOWN_SCHEMA_ID, f"schema id {sid} is not registered")
            parsed = writers[sid] = fastavro.parse_schema(plain_types(json.loads(text)))
        try:
            rec = reader(io.BytesIO(raw[5:]), parsed)
            asset, tag, quality = rec["asset"], rec["tag"], rec["quality"]
            value, unit, source_ts = rec.get("value"), rec.get("unit"), rec["source_ts"]
        except Exception as exc:
            return dead(msg, SCHEMA_MISMATCH, f"schema id {sid}: {exc!r}")
        if value is not None and not math.isfinite(value):
            return dead(msg, NAN_VALUE if math.isnan(value) else INF_VALUE,
                        f"{asset} {tag}: value is {value}")
        if source_ts > now_ms + max_future_ms:
            return dead(msg, FUTURE_TIMESTAMP, f"{asset} {tag}: source_ts {source_ts} is "
                        f"{(source_ts - now_ms) / 1000:.0f} s in the future")
        # late: its 1-minute window has been emitted already (readings.sql's late_condition)
        if ts - ts % minute_ms + minute_ms <= watermark + 1:
            return dead(msg, LATE, "event time older than the watermark minus the allowed "
                        "lateness")
        good = quality == good_quality
        minute.add(asset, tag, ts, value, unit, good)
        hour.add(asset, tag, ts, value, unit, good)
        return None

    started: float | None = None
    ended_by = "end_offsets"
    last_record = time.monotonic()
    while pending:
        msgs = consumer.consume(args.consume_batch, timeout=1.0)
        if not msgs:
            if time.monotonic() - last_record > args.idle_timeout_s:
                # e.g. transaction markers after the last record of a transactional input
                ended_by = "idle"
                break
            continue
        if started is None:
            started = time.perf_counter()
        last_record = time.monotonic()
        now_ms = int(time.time() * 1000)
        for msg in msgs:
            if msg.error() is not None:
                raise SystemExit(f"alt_plain: consumer error: {msg.error()}")
            ts = msg.timestamp()[1]
            handle(msg, ts, watermark, now_ms)
            # like Flink's source, every record moves the watermark, dead letters included
            part: int = msg.partition()  # type: ignore[assignment]
            if ts > max_ts.get(part, -(2**62)):
                max_ts[part] = ts
                # as Flink's source: the minimum over every partition with data to read, so
                # none until each has had a record (a partition read first is not ahead)
                wm = min(max_ts.values()) - ooo if len(max_ts) >= len(nonempty) else watermark
                if wm > watermark:
                    watermark = wm
                    if minute.ends and minute.ends[0] <= watermark + 1:
                        emit(args.out_1m, minute.fire(watermark))
                    if hour.ends and hour.ends[0] <= watermark + 1:
                        emit(args.out_1h, hour.fire(watermark))
        producer.poll(0)
        for p in list(pending):
            if consumer.position([TopicPartition(topic, p)])[0].offset >= ends[p]:
                pending.discard(p)

    remaining = producer.flush(120)
    if remaining:
        raise SystemExit(f"alt_plain: {remaining} records not delivered")
    if counts["records"]:
        consumer.commit(asynchronous=False)
    seconds = time.perf_counter() - started if started is not None else 0.0
    consumer.close()
    return {**counts, "seconds": seconds, "dlq_reasons": reasons,
            "open_windows": len(minute.open) + len(hour.open), "watermark": watermark,
            "ended_by": ended_by,
            "settings": {"linger_ms": pconf["linger.ms"],
                         "batch_num_messages": pconf["batch.num.messages"],
                         "compression": pconf["compression.type"], "acks": pconf["acks"],
                         "idempotent": pconf["enable.idempotence"],
                         "consume_batch": args.consume_batch,
                         "isolation": "read_committed", "partitions": len(partitions),
                         "group": group}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(load_settings(), args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
