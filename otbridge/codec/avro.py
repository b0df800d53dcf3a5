"""The `Reading` record (schemas/Reading.avsc) in the Confluent wire format, as every writer
of readings encodes it: connectors, simulators' tools, the benchmark and the tests.

Avro's binary encoding of a record is its fields' encodings one after the other, so the
fields that stay the same between two readings of one tag are encoded once, in a `Series`;
a reading then costs a few byte concatenations (`ReadingEncoder.encode`).
"""

from __future__ import annotations

import io
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from otbridge.registry import schema_json, schema_text

log = logging.getLogger(__name__)


class Quality(StrEnum):
    GOOD = "GOOD"
    UNCERTAIN = "UNCERTAIN"
    BAD = "BAD"


def utc_now() -> datetime:
    return datetime.now(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def millis(ts: datetime) -> int:
    """Milliseconds since the epoch, rounded down: what Avro's timestamp-millis holds for an
    aware datetime (fastavro writes the same); a naive datetime counts as UTC."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - EPOCH) // ONE_MS


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def zigzag(n: int) -> bytes:
    """An Avro `long` (or `int`): zig-zag, then a little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0x10000000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_string(text: str) -> bytes:
    raw = text.encode()
    return zigzag(len(raw)) + raw


def avro_optional_string(text: str | None) -> bytes:
    """A `["null", "string"]` union."""
    return b"\x00" if text is None else b"\x02" + avro_string(text)


_pack_double = struct.Struct("<d").pack
# Reading's fields in schema order, with their Avro types: the layout the lean path writes
READING_LAYOUT: tuple[tuple[str, object], ...] = (
    ("asset", "string"),
    ("tag", "string"),
    ("value", ["null", "double"]),
    ("text", ["null", "string"]),
    ("unit", ["null", "string"]),
    ("quality", "string"),
    ("source_ts", {"type": "long", "logicalType": "timestamp-millis"}),
    ("ingest_ts", {"type": "long", "logicalType": "timestamp-millis"}),
    ("source", "string"),
    ("seq", "long"),
    ("connector", "string"),
)


@dataclass(frozen=True, slots=True)
class Series:
    """One tag of one asset as a connector emits it, encoded once: its Kafka key and the
    Avro bytes of the fields that do not change between its readings."""

    asset: str
    tag: str
    unit: str | None
    source: str
    key: bytes
    head: bytes  # asset, tag
    unit_bytes: bytes  # unit (a union)
    source_bytes: bytes  # source

    @classmethod
    def of(cls, asset: str, tag: str, unit: str | None, source: str) -> Series:
        return cls(
            asset,
            tag,
            unit,
            source,
            asset.encode(),
            avro_string(asset) + avro_string(tag),
            avro_optional_string(unit),
            avro_string(source),
        )


class ReadingEncoder:
    """`Reading` records -> Confluent wire format: magic byte 0, the schema id (4 bytes, big
    endian), the Avro binary body.

    Registers schemas/Reading.avsc under `<topic>-value` (TopicNameStrategy, as otbridge's
    registry serializer does) once, then encodes without the registry serializer: byte for
    byte what AvroSerializer writes, without its per-record subject lookup and rule handling.

    `__call__(record)` encodes a record dict with fastavro. `encode(series, ...)` is the
    connectors' hot path: Avro's binary encoding of a record is its fields' encodings one
    after the other, so it joins the series' pre-encoded bytes with the few fields that
    change (value, text, quality, the two timestamps, seq), for about an eighth of the CPU
    of fastavro with a dict and datetimes. That lean path is taken only while Reading.avsc
    has the layout it was written for (`READING_LAYOUT`) and probe records encode to the
    same bytes both ways; otherwise `encode` builds the dict for fastavro.
    """

    def __init__(self, client: SchemaRegistryClient, topic: str, *, lean: bool = True) -> None:
        # stripped, as AvroSerializer registers it: the same content, the same schema id
        schema = Schema(schema_text("Reading").strip(), "AVRO")
        schema_id = client.register_schema(f"{topic}-value", schema)
        self.header = b"\x00" + int(schema_id).to_bytes(4, "big")
        parsed = schema_json("Reading")
        self.schema = fastavro.parse_schema(parsed)
        self._quality = {q: avro_string(q) for q in ("GOOD", "UNCERTAIN", "BAD")}
        self._ts_cache: tuple[int, bytes] = (-1, b"")
        self._connector: tuple[str, bytes] = ("", avro_string(""))
        self.lean = lean and self._lean_matches(parsed)
        if lean and not self.lean:
            log.warning("schemas/Reading.avsc changed its layout: encoding with fastavro")
        self.encode: Callable[[Series, float | None, str | None, str, int, int, int, str],
                              bytes] = self.encode_lean if self.lean else self.encode_dict

    @classmethod
    def for_schema_id(cls, schema_id: int, *, lean: bool = True) -> ReadingEncoder:
        """An encoder for a schema id registered already (no registry is asked); 0 when only
        the body matters (the connectors store bodies and add the header when they send)."""
        return cls(cast(SchemaRegistryClient, _KnownSchemaId(schema_id)), "", lean=lean)

    def __call__(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        fastavro.schemaless_writer(out, self.schema, record)
        return out.getvalue()

    def encode_dict(
        self,
        series: Series,
        value: float | None,
        text: str | None,
        quality: str,
        source_ms: int,
        ingest_ms: int,
        seq: int,
        connector: str,
    ) -> bytes:
        """`encode` with fastavro."""
        return self(
            reading_record(series, value, text, quality, source_ms, ingest_ms, seq, connector)
        )

    def encode_lean(
        self,
        series: Series,
        value: float | None,
        text: str | None,
        quality: str,
        source_ms: int,
        ingest_ms: int,
        seq: int,
        connector: str,
    ) -> bytes:
        """One reading of `series`, `connector` the connector instance id (see the class)."""
        if connector != self._connector[0]:
            self._connector = (connector, avro_string(connector))
        last_ms, last = self._ts_cache
        if source_ms == last_ms:
            src = last
        else:
            src = zigzag(source_ms)
            self._ts_cache = (source_ms, src)
        ingest = src if ingest_ms == source_ms else zigzag(ingest_ms)
        return b"".join(
            (
                self.header,
                series.head,
                b"\x00" if value is None else b"\x02" + _pack_double(value),
                b"\x00" if text is None else b"\x02" + avro_string(text),
                series.unit_bytes,
                self._quality.get(quality) or avro_string(quality),
                src,
                ingest,
                series.source_bytes,
                zigzag(seq),
                self._connector[1],
            )
        )

    def _lean_matches(self, schema: dict[str, Any]) -> bool:
        fields = tuple((f["name"], f["type"]) for f in schema.get("fields", []))
        if fields != READING_LAYOUT:
            return False
        probe = Series.of("acme/site/area/line/cell", "probe", "degC", "modbus://h:502/1")
        for value, text, quality in ((-1.5, None, "GOOD"), (None, "é", "BAD")):
            args = (probe, value, text, quality, 1_767_607_200_123, -5, 2**40, "x@1")
            if self.encode_lean(*args) != self.encode_dict(*args):
                return False
        return True


class _KnownSchemaId:
    """Stands in for a registry client whose answer is known."""

    def __init__(self, schema_id: int) -> None:
        self.schema_id = schema_id

    def register_schema(self, subject: str, schema: Schema) -> int:
        return self.schema_id


def reading_record(
    series: Series,
    value: float | None,
    text: str | None,
    quality: str,
    source_ms: int,
    ingest_ms: int,
    seq: int,
    connector: str,
) -> dict[str, Any]:
    """The record dict of `ReadingEncoder.encode`'s arguments (what its fastavro path writes)."""
    return {
        "asset": series.asset,
        "tag": series.tag,
        "value": value,
        "text": text,
        "unit": series.unit,
        "quality": quality,
        "source_ts": source_ms,
        "ingest_ts": ingest_ms,
        "source": series.source,
        "seq": seq,
        "connector": connector,
    }




_fields = reading_record  # the name connectors.core.sink and tests/test_bench_ingest.py import
