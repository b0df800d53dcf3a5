"""The two Reading decoders agree: the same bytes, good and poison, through the jobs' Java
`decode_reading` (jobs/udf DecodeReading, run in a local Flink TableEnvironment exactly as the
jobs register it) and through otbridge.codec.wire's ReadingDecoder give the same reasons, the
same details and the same decoded fields."""

from __future__ import annotations

import io
import json
import math
import re
import time
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema

from otbridge.codec.avro import ReadingEncoder, Series, now_ms
from otbridge.codec.wire import (
    EMPTY_VALUE,
    FUTURE_TIMESTAMP,
    INF_VALUE,
    NAN_VALUE,
    NOT_AVRO,
    OUT_OF_RANGE,
    SCHEMA_MISMATCH,
    UNKNOWN_SCHEMA_ID,
    Decoded,
    ReadingDecoder,
    RegistryLookup,
    check_reading,
)
from otbridge.registry import registry_client, schema_json
from otbridge.settings import Settings

MAX_FUTURE_S = 300
# DecodeReading's output row, after reason and detail
FIELDS = ("asset", "tag", "value", "text", "unit", "quality", "seq", "connector")
PRESS = "acme/berlin/body/line1/press01"
NOW = now_ms()


def reading_fields(**changes: Any) -> dict[str, Any]:
    return {
        "asset": PRESS, "tag": "temperature", "value": 41.5, "text": None, "unit": "degC",
        "quality": "GOOD", "source_ts": NOW, "ingest_ts": NOW + 5,
        "source": "modbus://127.0.0.1:5020/1", "seq": 7, "connector": "test@1", **changes,
    }  # fmt: skip


def shape(name: str, fields: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "io.otbridge", "fields": fields, **extra}


READING_FIELDS: list[dict[str, Any]] = schema_json("Reading")["fields"]
BY_NAME = {f["name"]: f for f in READING_FIELDS}

# writer schemas other than Reading.avsc, each registered under an id of its own
SHAPES: dict[str, Any] = {
    # fields in another order plus one the reader does not know: resolvable
    "reordered": shape(
        "Reading", [*reversed(READING_FIELDS), {"name": "site", "type": "string"}]
    ),
    # float for double and int for long (Avro promotions), no text/unit (reader defaults)
    "narrow": shape(
        "Reading",
        [
            {"name": "value", "type": ["null", "float"]} if f["name"] == "value"
            else {"name": "seq", "type": "int"} if f["name"] == "seq"
            else f
            for f in READING_FIELDS
            if f["name"] not in ("text", "unit")
        ],
    ),
    # long for double (not a union), bytes for string
    "promoted": shape(
        "Reading",
        [{"name": "value", "type": "long"} if f["name"] == "value"
         else {"name": "asset", "type": "bytes"} if f["name"] == "asset"
         else f
         for f in READING_FIELDS],
    ),
    # quality as an enum
    "quality_enum": shape(
        "Reading",
        [{"name": "quality", "type": {"type": "enum", "name": "Quality",
                                       "symbols": ["GOOD", "UNCERTAIN", "BAD"]}}
         if f["name"] == "quality" else f
         for f in READING_FIELDS],
    ),
    # the same fields under another record name
    "renamed": shape("Sample", READING_FIELDS, namespace="com.example"),
    # value as text: a null value resolves, a string one cannot
    "value_text": shape(
        "Reading",
        [{"name": "value", "type": ["null", "string"]} if f["name"] == "value" else f
         for f in READING_FIELDS],
    ),
    # no quality, which the reader requires
    "no_quality": shape("Reading", [f for f in READING_FIELDS if f["name"] != "quality"]),
    # not a record at all
    "plain_string": "string",
}


def wire(schema_id: int, schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + out.getvalue()


def cases(settings: Settings, topic: str) -> list[tuple[str, bytes, str | None]]:
    """(name, bytes, the reason both decoders must give: None for a usable reading)."""
    client = registry_client(settings)
    encode = ReadingEncoder(client, topic)
    ids = {
        name: client.register_schema(
            f"{topic}.{name}-value", Schema(json.dumps(schema), "AVRO")
        )
        for name, schema in SHAPES.items()
    }
    series = Series.of(PRESS, "temperature", "degC", "modbus://127.0.0.1:5020/1")
    text_series = Series.of("acme/berlin/yard/ev/cp01", "status_name", None, "opc.tcp://h:4840")

    def lean(value: float | None, *, quality: str = "GOOD", source_ms: int = NOW,
             seq: int = 7) -> bytes:
        """The connectors' encoding (ReadingEncoder.encode)."""
        return encode.encode(series, value, None, quality, source_ms, NOW + 5, seq, "test@1")

    good = lean(41.5)
    # the tag's bytes in a record, to be replaced by bad ones
    tagged = encode.encode(Series.of(PRESS, "ab", None, "s"), 1.0, None, "GOOD", NOW, NOW, 1, "c")
    tag_at = tagged.index(b"\x04ab")

    def bad_tag(raw_tag: bytes) -> bytes:
        return tagged[:tag_at] + raw_tag + tagged[tag_at + 3 :]

    value_at = tag_at + 3  # the value union's branch index follows the tag
    far_future = NOW + 75 * 365 * 86_400_000
    return [
        # usable readings of several shapes
        ("numeric", good, None),
        ("negative, big seq", lean(-4.1, seq=2**62, quality="UNCERTAIN"), None),
        ("text, no value", encode.encode(text_series, None, "Charging", "GOOD", NOW, NOW, 1,
                                         "c@2"), None),
        ("BAD, no value", lean(None, quality="BAD"), None),
        ("unicode", encode(reading_fields(asset="acme/köln/halle/linie1/presse01", tag="t°",
                                          unit="°C", text="é")), None),
        ("old timestamp", lean(0.0, source_ms=0), None),
        ("just within max future", lean(1.0, source_ms=NOW + (MAX_FUTURE_S - 60) * 1000), None),
        ("trailing bytes", good + b"\x00\x01", None),
        ("reordered writer", wire(ids["reordered"], SHAPES["reordered"],
                                  reading_fields(site="berlin")), None),
        ("narrow writer", wire(ids["narrow"], SHAPES["narrow"],
                               reading_fields(value=1.25, seq=2**31 - 1)), None),
        ("renamed writer", wire(ids["renamed"], SHAPES["renamed"], reading_fields()), None),
        ("promoted writer", wire(ids["promoted"], SHAPES["promoted"],
                                 reading_fields(value=-3, asset=PRESS.encode())), None),
        ("text writer, null value, BAD", wire(ids["value_text"], SHAPES["value_text"],
                                              reading_fields(value=None, quality="BAD")), None),
        ("UNCERTAIN, no value", lean(None, quality="UNCERTAIN"), None),
        # poison
        ("empty", b"", NOT_AVRO),
        ("magic byte 1", b"\x01" + good[1:], NOT_AVRO),
        ("short header", b"\x00\x00\x00", NOT_AVRO),
        ("JSON", json.dumps(reading_fields()).encode(), NOT_AVRO),
        ("truncated body", good[: len(good) // 2], SCHEMA_MISMATCH),
        ("header only", good[:5], SCHEMA_MISMATCH),
        ("unknown schema id", b"\x00\x7f\xff\xff\xf0" + good[5:], UNKNOWN_SCHEMA_ID),
        ("schema id 0xffffffff", b"\x00\xff\xff\xff\xff" + good[5:], UNKNOWN_SCHEMA_ID),
        ("NaN", lean(math.nan), NAN_VALUE),
        ("+inf", lean(math.inf), INF_VALUE),
        ("-inf", lean(-math.inf), INF_VALUE),
        ("counter above 2^63", lean(1e19), OUT_OF_RANGE),
        ("-2^63", lean(-(2.0**63)), OUT_OF_RANGE),
        ("just below 2^63", lean(9.2e18), None),
        ("GOOD, no value", lean(None), EMPTY_VALUE),
        ("GOOD, empty text", encode.encode(text_series, None, "", "GOOD", NOW, NOW, 1, "c@2"),
         EMPTY_VALUE),
        ("text writer, null value", wire(ids["value_text"], SHAPES["value_text"],
                                         reading_fields(value=None)), EMPTY_VALUE),
        ("far-future timestamp", lean(2.0, source_ms=far_future), FUTURE_TIMESTAMP),
        ("text writer, text value", wire(ids["value_text"], SHAPES["value_text"],
                                         reading_fields(value="hot")), SCHEMA_MISMATCH),
        ("writer without quality", wire(ids["no_quality"], SHAPES["no_quality"],
                                        reading_fields()), SCHEMA_MISMATCH),
        ("quality as an enum", wire(ids["quality_enum"], SHAPES["quality_enum"],
                                    reading_fields()), SCHEMA_MISMATCH),
        ("writer not a record", wire(ids["plain_string"], "string", "hello"), SCHEMA_MISMATCH),
        ("negative string length", bad_tag(b"\x01ab"), SCHEMA_MISMATCH),
        ("union branch 3 of 2", tagged[:value_at] + b"\x06" + tagged[value_at + 1 :],
         SCHEMA_MISMATCH),
        ("not UTF-8", bad_tag(b"\x04\xff\xfe"), None),
    ]


def java_rows(settings: Settings, raws: list[bytes]) -> list[tuple[Any, ...]]:
    """decode_reading over raws, in one local (batch) Flink job: (reason, detail, *FIELDS)."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from jobs.common.readings import register_decoder

    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("parallelism.default", "1")
    register_decoder(t_env, settings, MAX_FUTURE_S)
    values = ", ".join(f"({i}, CAST(X'{raw.hex()}' AS BYTES))" for i, raw in enumerate(raws))
    columns = ["reason", "detail", *(f"`{f}`" for f in FIELDS)]
    query = (
        f"SELECT t.i, {', '.join(f'd.{c}' for c in columns)} "
        f"FROM (VALUES {values}) AS t(i, payload), "
        f"LATERAL TABLE(decode_reading(t.payload)) AS d({', '.join(columns)})"
    )
    with t_env.execute_sql(query).collect() as results:
        rows = sorted(tuple(r) for r in results)
    assert [r[0] for r in rows] == list(range(len(raws))), "one row per record"
    return [r[1:] for r in rows]


def python_row(decoded: Decoded) -> tuple[Any, ...]:
    if decoded.record is None:
        return (decoded.reason, decoded.detail, *(None for _ in FIELDS))
    return (None, None, *(decoded.record.get(f) for f in FIELDS))


AHEAD = re.compile(r" is (-?\d+) s in the future$")


@pytest.mark.stack
def test_java_and_python_decoders_give_the_same_reasons_details_and_fields(
    live_stack: Settings, unique: str
) -> None:
    topic = f"test.codec.{unique}"
    named = cases(live_stack, topic)
    lookup = RegistryLookup.of(live_stack.registry)
    python = ReadingDecoder(lookup, max_future_ms=MAX_FUTURE_S * 1000)
    java_started = time.time()
    java = java_rows(live_stack, [raw for _, raw, _ in named])
    took_s = time.time() - java_started
    for (name, raw, reason), j in zip(named, java, strict=True):
        p = python_row(python.decode(raw))
        assert p[0] == reason, (name, p)
        assert j[0] == reason, (name, j)
        if reason == SCHEMA_MISMATCH:  # the detail quotes each library's own exception
            assert j[1].startswith(p[1].split(":")[0] + ":"), (name, j, p)
            continue
        if reason == FUTURE_TIMESTAMP:  # "... is N s in the future": N depends on when
            (j_ahead,), (p_ahead,) = AHEAD.findall(j[1]), AHEAD.findall(p[1])
            assert abs(int(j_ahead) - int(p_ahead)) <= took_s + 2, (name, j, p)
            assert AHEAD.sub("", j[1]) == AHEAD.sub("", p[1]), (name, j, p)
            continue
        assert j == p, name


def test_check_reading_formats_like_java() -> None:
    record = {"asset": PRESS, "tag": "t", "value": 1.0, "source_ts": 10_000}
    # Java's %.0f rounds half up (Python's format rounds half to even)
    assert check_reading(record, now_ms=5_500, max_future_ms=0).detail == (
        f"{PRESS} t: source_ts 10000 is 5 s in the future"
    )
    later = check_reading(record, now_ms=7_500, max_future_ms=0)
    assert later.detail.endswith(" 3 s in the future")
    aware = {**record, "source_ts": datetime(1970, 1, 1, 0, 0, 10, tzinfo=UTC)}
    assert check_reading(aware, now_ms=0, max_future_ms=10_000).reason is None
    assert check_reading(aware, now_ms=0, max_future_ms=9_999).reason == FUTURE_TIMESTAMP
    assert check_reading({**record, "value": -math.inf}, now_ms=0, max_future_ms=0).detail == (
        f"{PRESS} t: value is -inf"
    )
