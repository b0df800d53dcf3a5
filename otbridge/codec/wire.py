"""Confluent wire-format Avro decoding that never raises: bad input becomes a reason.

Flink's `avro-confluent` format fails the job on a poison record and has no option to skip it,
so jobs read raw bytes and decode them with `decode_reading`, the Java table function of
jobs/udf (DecodeReading.java); whatever cannot be decoded or trusted is routed to the
dead-letter topic with a reason. `ReadingDecoder` is its Python twin: the same checks in the
same order, the same reasons, the same details (tests/test_codec_wire.py feeds both the same
bytes). `WireDecoder` alone decodes any record (no Reading checks).
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import fastavro

from otbridge.codec.avro import millis, now_ms
from otbridge.registry import schema_json
from otbridge.settings import RegistrySettings

#: machine-readable dead-letter reasons
NOT_AVRO = "not_avro"
UNKNOWN_SCHEMA_ID = "unknown_schema_id"
REGISTRY_UNAVAILABLE = "registry_unavailable"
SCHEMA_MISMATCH = "schema_mismatch"
NAN_VALUE = "nan_value"
INF_VALUE = "inf_value"
#: a value no long can hold (|value| >= 2^63): a counter glitch (e.g. an unsigned 64-bit
#: register read as all ones) that would overflow every count derived from it
OUT_OF_RANGE = "out_of_range"
LONG_LIMIT = 2.0**63
#: a GOOD reading with neither a value nor a text (BAD and UNCERTAIN ones may have none)
EMPTY_VALUE = "empty_value"
FUTURE_TIMESTAMP = "future_timestamp"
LATE = "late"


@dataclass(frozen=True)
class Decoded:
    record: dict[str, Any] | None
    reason: str | None = None
    detail: str = ""


class RegistryLookup:
    """GET /schemas/ids/{id} against a Confluent-compatible registry; an unknown id is
    remembered for negative_ttl_s (as the Java function does)."""

    def __init__(self, url: str, user_info: str | None = None, negative_ttl_s: float = 10.0):
        self.url = url.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if user_info:
            self.headers["Authorization"] = "Basic " + base64.b64encode(
                user_info.encode()
            ).decode()
        self.negative_ttl_s = negative_ttl_s
        self._missing: dict[int, float] = {}

    @classmethod
    def of(cls, registry: RegistrySettings) -> RegistryLookup:
        """The lookup for otbridge's registry settings (settings.registry)."""
        return cls(registry.url, registry.client_conf().get("basic.auth.user.info"))

    def __call__(self, schema_id: int) -> str | None:
        """The schema text, or None if the registry does not know the id."""
        until = self._missing.get(schema_id)
        if until is not None and until > time.monotonic():
            return None
        req = urllib.request.Request(f"{self.url}/schemas/ids/{schema_id}", headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                schema: str = json.load(resp)["schema"]
                return schema
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                self._missing[schema_id] = time.monotonic() + self.negative_ttl_s
                return None
            raise


class WireDecoder:
    """Decode `magic byte 0 | 4-byte schema id | Avro body` into the reader schema's shape,
    resolving the writer schema (the record's schema id, from the registry) against the reader
    schema as Java's Avro does. Never raises: what cannot be decoded is a Decoded with a
    reason (NOT_AVRO, UNKNOWN_SCHEMA_ID, REGISTRY_UNAVAILABLE, SCHEMA_MISMATCH)."""

    def __init__(
        self, reader_schema: dict[str, Any] | None, lookup: Callable[[int], str | None]
    ) -> None:
        """reader_schema None: each record in its writer's own shape."""
        self.reader_json = reader_schema
        self.reader = None if reader_schema is None else fastavro.parse_schema(reader_schema)
        self.lookup = lookup
        self._writers: dict[int, Any] = {}

    def decode(self, raw: bytes | None) -> Decoded:
        if raw is None or len(raw) < 5 or raw[0] != 0:
            return Decoded(None, NOT_AVRO, "no Confluent wire-format header (magic byte 0)")
        schema_id = int.from_bytes(raw[1:5], "big", signed=True)  # a Java int
        writer = self._writers.get(schema_id)
        if writer is None:
            try:
                text = self.lookup(schema_id)
            except Exception as exc:  # unreachable, an HTTP error, a body without a schema
                return Decoded(None, REGISTRY_UNAVAILABLE, f"schema id {schema_id}: {exc}")
            if text is None:
                return Decoded(None, UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not registered")
            try:
                writer = fastavro.parse_schema(self._as_reader_named(json.loads(text)))
            except Exception as exc:
                return Decoded(None, SCHEMA_MISMATCH, f"schema id {schema_id}: {exc}"[:500])
            self._writers[schema_id] = writer
        try:
            # Java's Avro decodes bad UTF-8 to U+FFFD rather than failing
            record = fastavro.schemaless_reader(
                io.BytesIO(raw[5:]), writer, self.reader, handle_unicode_errors="replace"
            )
        except Exception as exc:  # truncated body, unresolvable writer/reader pair, ...
            return Decoded(None, SCHEMA_MISMATCH, f"schema id {schema_id}: {exc!r}"[:500])
        if not isinstance(record, dict):
            return Decoded(None, SCHEMA_MISMATCH, f"schema id {schema_id}: not a record")
        return Decoded(record)

    def _as_reader_named(self, writer: Any) -> Any:
        """Java's Avro resolves a writer record against a reader record whatever their names;
        fastavro wants the names to match: give a top-level writer record the reader's name."""
        reader = self.reader_json
        if (
            reader is not None
            and isinstance(writer, dict)
            and writer.get("type") == "record"
            and reader.get("type") == "record"
        ):
            return {**writer, "name": reader["name"], "namespace": reader.get("namespace", "")}
        return writer


def check_reading(record: dict[str, Any], *, now_ms: int, max_future_ms: int) -> Decoded:
    """Values a job cannot use: NaN, infinite or beyond +/-2^63, a GOOD reading with no
    value, source timestamps more than
    max_future_ms ahead of now_ms. The checks of DecodeReading.java, in its order."""
    value = record.get("value")
    where = f"{record['asset']} {record['tag']}"
    if value is not None and math.isnan(value):
        return Decoded(None, NAN_VALUE, f"{where}: value is NaN")
    if value is not None and math.isinf(value):
        return Decoded(None, INF_VALUE, f"{where}: value is {'inf' if value > 0 else '-inf'}")
    if value is not None and abs(value) >= LONG_LIMIT:
        return Decoded(None, OUT_OF_RANGE,
                       f"{where}: value {value:.3e} is outside +/-2^63 (a counter glitch?)")
    text = record.get("text")
    if value is None and not text and record.get("quality") == "GOOD":
        return Decoded(None, EMPTY_VALUE, f"{where}: a GOOD reading with no value")
    ts = record["source_ts"]
    ts_ms = millis(ts) if hasattr(ts, "timestamp") else int(ts)
    if ts_ms > now_ms + max_future_ms:
        # Java's %.0f rounds half up
        ahead = (Decimal(ts_ms - now_ms) / 1000).quantize(Decimal(1), ROUND_HALF_UP)
        return Decoded(
            None, FUTURE_TIMESTAMP, f"{where}: source_ts {ts_ms} is {ahead} s in the future"
        )
    return Decoded(record)


class ReadingDecoder(WireDecoder):
    """`Reading` records (schemas/Reading.avsc) from the wire, checked: the Python twin of
    jobs/udf's DecodeReading (`decode_reading` in the jobs' SQL)."""

    def __init__(
        self,
        lookup: Callable[[int], str | None],
        *,
        max_future_ms: int = 300_000,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        super().__init__(schema_json("Reading"), lookup)
        self.max_future_ms = max_future_ms
        self.clock_ms = clock_ms

    def decode(self, raw: bytes | None) -> Decoded:
        decoded = super().decode(raw)
        if decoded.record is None:
            return decoded
        return check_reading(decoded.record, now_ms=self.clock_ms(),
                             max_future_ms=self.max_future_ms)
