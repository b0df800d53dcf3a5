"""Confluent wire-format Avro decoding that never raises: bad input becomes a reason.

Flink's `avro-confluent` format fails the job on a poison record and has no option to skip it,
so jobs read raw bytes and decode here; whatever cannot be decoded or trusted is routed to the
dead-letter topic with the `reason` this module gives.
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
from typing import Any

import fastavro

#: machine-readable dead-letter reasons
NOT_AVRO = "not_avro"
UNKNOWN_SCHEMA_ID = "unknown_schema_id"
REGISTRY_UNAVAILABLE = "registry_unavailable"
SCHEMA_MISMATCH = "schema_mismatch"
NAN_VALUE = "nan_value"
INF_VALUE = "inf_value"
FUTURE_TIMESTAMP = "future_timestamp"
LATE = "late"


@dataclass(frozen=True)
class Decoded:
    record: dict[str, Any] | None
    reason: str | None = None
    detail: str = ""


class RegistryLookup:
    """GET /schemas/ids/{id} against a Confluent-compatible registry, cached."""

    def __init__(self, url: str, user_info: str | None = None, negative_ttl_s: float = 10.0):
        self.url = url.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if user_info:
            self.headers["Authorization"] = "Basic " + base64.b64encode(
                user_info.encode()
            ).decode()
        self.negative_ttl_s = negative_ttl_s
        self._missing: dict[int, float] = {}

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
    """Decode `magic byte 0 | 4-byte schema id | Avro body` into the reader schema's shape."""

    def __init__(self, reader_schema: dict[str, Any], lookup: Callable[[int], str | None]):
        self.reader = fastavro.parse_schema(reader_schema)
        self.lookup = lookup
        self._writers: dict[int, Any] = {}

    def decode(self, raw: bytes | None) -> Decoded:
        if raw is None or len(raw) < 5 or raw[0] != 0:
            return Decoded(None, NOT_AVRO, "no Confluent wire-format header (magic byte 0)")
        schema_id = int.from_bytes(raw[1:5], "big")
        writer = self._writers.get(schema_id)
        if writer is None:
            try:
                text = self.lookup(schema_id)
            except (OSError, ValueError) as exc:
                return Decoded(None, REGISTRY_UNAVAILABLE, f"schema id {schema_id}: {exc}")
            if text is None:
                return Decoded(None, UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not registered")
            try:
                writer = fastavro.parse_schema(json.loads(text))
            except Exception as exc:
                return Decoded(None, SCHEMA_MISMATCH, f"schema id {schema_id}: {exc}")
            self._writers[schema_id] = writer
        try:
            record = fastavro.schemaless_reader(io.BytesIO(raw[5:]), writer, self.reader)
        except Exception as exc:  # truncated body, unresolvable writer/reader pair, ...
            return Decoded(None, SCHEMA_MISMATCH, f"schema id {schema_id}: {exc!r}"[:500])
        return Decoded(record)  # type: ignore[arg-type]


def check_reading(record: dict[str, Any], *, now_ms: int, max_future_ms: int) -> Decoded:
    """Values a job cannot use: NaN or infinite values, source timestamps far in the future."""
    value = record.get("value")
    if value is not None and math.isnan(value):
        return Decoded(None, NAN_VALUE, f"{record['asset']} {record['tag']}: value is NaN")
    if value is not None and math.isinf(value):
        return Decoded(None, INF_VALUE, f"{record['asset']} {record['tag']}: value is {value}")
    ts = record["source_ts"]
    ts_ms = int(ts.timestamp() * 1000) if hasattr(ts, "timestamp") else int(ts)
    if ts_ms > now_ms + max_future_ms:
        return Decoded(
            None,
            FUTURE_TIMESTAMP,
            f"{record['asset']} {record['tag']}: source_ts {ts_ms} is "
            f"{(ts_ms - now_ms) / 1000:.0f} s in the future",
        )
    return Decoded(record)
