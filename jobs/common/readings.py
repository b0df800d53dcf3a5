"""The shared input of every job: raw readings, decoded in Python, bad ones to the DLQ."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pyflink.table import DataTypes, StatementSet, TableEnvironment
from pyflink.table.udf import FunctionContext, TableFunction, udtf

from otbridge.flinkjob import kafka_avro_sink, kafka_raw_source, render_sql
from otbridge.registry import schema_json
from otbridge.settings import Settings
from otbridge.wire import RegistryLookup, WireDecoder, check_reading

SQL = Path(__file__).with_name("readings.sql")

DECODED_FIELDS = [
    ("reason", DataTypes.STRING()),
    ("detail", DataTypes.STRING()),
    ("asset", DataTypes.STRING()),
    ("tag", DataTypes.STRING()),
    ("value", DataTypes.DOUBLE()),
    ("text", DataTypes.STRING()),
    ("unit", DataTypes.STRING()),
    ("quality", DataTypes.STRING()),
    ("seq", DataTypes.BIGINT()),
    ("connector", DataTypes.STRING()),
]


class DecodeReading(TableFunction):  # type: ignore[misc]
    """raw bytes -> one row: the reading's fields, or a DLQ reason and detail."""

    def __init__(self, registry_url: str, user_info: str | None, max_future_s: float) -> None:
        self.registry_url = registry_url
        self.user_info = user_info
        self.max_future_ms = int(max_future_s * 1000)
        self.decoder: WireDecoder | None = None

    def open(self, function_context: FunctionContext) -> None:
        self.decoder = WireDecoder(
            schema_json("Reading"), RegistryLookup(self.registry_url, self.user_info)
        )

    def eval(self, raw: bytes | None, event_ts: datetime | None) -> Iterator[tuple[Any, ...]]:
        assert self.decoder is not None
        decoded = self.decoder.decode(raw)
        if decoded.record is not None:
            decoded = check_reading(
                decoded.record, now_ms=int(time.time() * 1000), max_future_ms=self.max_future_ms
            )
        rec = decoded.record
        if rec is None:
            yield (decoded.reason, decoded.detail, None, None, None, None, None, None, None, None)
            return
        yield (
            None, None, rec["asset"], rec["tag"], rec["value"], rec["text"], rec["unit"],
            rec["quality"], rec["seq"], rec["connector"],
        )


def late_condition(window_s: int | None, allowed_lateness_s: int) -> str:
    """SQL: true when r.event_ts can no longer be used. Flink closes a tumbling window once the
    watermark reaches its end minus 1 ms, i.e. once watermark + 1 ms lies in a later window;
    windows are aligned to the epoch, as TUMBLE aligns them."""
    watermark = f"CURRENT_WATERMARK(r.event_ts) - INTERVAL '{allowed_lateness_s}' SECOND"
    if not window_s:
        return f"r.event_ts < {watermark}"

    def index(ts: str) -> str:
        return f"FLOOR(TIMESTAMPDIFF(SECOND, TO_TIMESTAMP_LTZ(0, 3), {ts}) / {window_s}.0)"

    next_ms = watermark + " + INTERVAL '0.001' SECOND"
    return f"{index('r.event_ts')} < {index(next_ms)}"


def register_readings(
    t_env: TableEnvironment,
    stmt_set: StatementSet,
    settings: Settings,
    *,
    job_name: str,
    readings_topic: str | None = None,
    dlq_topic: str | None = None,
    bounded: bool = False,
    group_suffix: str = "",
    out_of_orderness_s: int = 5,
    allowed_lateness_s: int = 0,
    late_window_s: int | None = None,
    max_future_s: float = 300.0,
) -> None:
    """Create the `readings` view (usable readings, event time `event_ts`) and route the rest
    of iiot.readings to the dead-letter topic as part of stmt_set.

    A reading is late when the job can no longer use it: with `late_window_s`, when the
    tumbling window of that size it falls into has already been closed by the watermark
    (minus `allowed_lateness_s`); without, when it is older than the watermark."""
    reg = settings.registry
    user_info = (
        f"{reg.basic_auth_username}:{reg.basic_auth_password.get_secret_value()}"
        if reg.basic_auth_username and reg.basic_auth_password
        else None
    )
    decode = udtf(
        DecodeReading(reg.url, user_info, max_future_s),
        result_types=[t for _, t in DECODED_FIELDS],
    )
    t_env.create_temporary_function("decode_reading", decode)
    params = {
        "readings_source": kafka_raw_source(
            settings,
            topic=readings_topic or settings.topics.readings,
            group_id=f"otbridge-{job_name}{group_suffix}",
            bounded=bounded,
        ),
        "dlq_sink": kafka_avro_sink(
            settings,
            topic=dlq_topic or settings.topics.dlq,
            schema="DeadLetter",
            key_field="msg_key",
            transactional_id_prefix=None,  # dead letters: at-least-once is enough
        ),
        "out_of_orderness_s": str(out_of_orderness_s),
        "late_condition": late_condition(late_window_s, allowed_lateness_s),
        "job_name": job_name,
    }
    *ddl, insert = render_sql(SQL, params)
    for statement in ddl:
        t_env.execute_sql(statement)
    stmt_set.add_insert_sql(insert)
