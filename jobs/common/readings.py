"""The shared input of every job: raw readings, decoded once on the JVM, bad ones to the DLQ."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pyflink.table import StatementSet, StreamTableEnvironment, Table, TableEnvironment

from otbridge.flinkjob import kafka_avro_sink, kafka_raw_source, render_sql, sql_quote
from otbridge.registry import schema_json
from otbridge.settings import Settings
from otbridge.udf import built_udf_jar

SQL = Path(__file__).with_name("readings.sql")
VIEW = re.compile(r"\s*CREATE TEMPORARY VIEW (?P<name>\w+) AS\s+(?P<query>.*)", re.S | re.I)


def register_decoder(t_env: TableEnvironment, settings: Settings, max_future_s: float) -> None:
    """`decode_reading(raw)`: the Java table function of jobs/udf (the JVM twin of
    otbridge.codec.wire's WireDecoder + check_reading, same reasons). Its jar travels with the
    job in pipeline.jars, so a remote cluster needs nothing installed for it."""
    from pyflink.common import Configuration
    from pyflink.java_gateway import get_gateway

    jar = built_udf_jar(settings.stack.lib_dir)  # built by `otbridge stack fetch`, not here
    config = t_env.get_config()
    jars = Configuration.parse_list_value(config.get("pipeline.jars", "") or "")
    config.set("pipeline.jars", ";".join([*jars, jar.as_uri()]))
    reg = settings.registry
    user_info = (
        f"{reg.basic_auth_username}:{reg.basic_auth_password.get_secret_value()}"
        if reg.basic_auth_username and reg.basic_auth_password
        else None
    )
    function = get_gateway().jvm.io.otbridge.flink.DecodeReading(
        reg.url, user_info, json.dumps(schema_json("Reading")), int(max_future_s * 1000)
    )
    t_env._j_tenv.createTemporarySystemFunction("decode_reading", function)


def late_condition(window_s: int | None, allowed_lateness_s: int) -> str:
    """SQL: true when r.event_ts can no longer be used. Flink closes a tumbling window once the
    watermark reaches its end minus 1 ms, i.e. once watermark + 1 ms lies in a later window;
    windows are aligned to the epoch, as TUMBLE aligns them. Window indexes are integers (INT /
    INT truncates, which is the floor for times after the epoch): no DECIMAL per reading."""
    watermark = f"CURRENT_WATERMARK(r.event_ts) - INTERVAL '{allowed_lateness_s}' SECOND"
    if not window_s:
        # a process table function drops a row at or behind its watermark
        return f"r.event_ts <= {watermark}"

    def index(ts: str) -> str:
        return f"TIMESTAMPDIFF(SECOND, TO_TIMESTAMP_LTZ(0, 3), {ts}) / {int(window_s)}"

    next_ms = watermark + " + INTERVAL '0.001' SECOND"
    return f"{index('r.event_ts')} < {index(next_ms)}"


def one_source(t_env: StreamTableEnvironment, table: Table) -> Table:
    """`table` planned now, once, as a DataStream, and read back as a table with the same
    columns, event time and watermarks. Every plan made from the returned table (each
    `to_data_stream()`, the statement set) shares that one DataStream, so its source and
    decode run once. The table's time attribute must be `event_ts`."""
    from pyflink.table import DataTypes, Schema
    from pyflink.table.expressions import col

    stream = t_env.to_data_stream(table)  # translated here: the record timestamp is event_ts
    back = t_env.from_data_stream(stream, Schema.new_builder()
                                  .column_by_metadata("rowtime", DataTypes.TIMESTAMP_LTZ(3))
                                  .watermark("rowtime", "SOURCE_WATERMARK()")
                                  .build())
    names = [n for n in table.get_resolved_schema().get_column_names() if n != "event_ts"]
    return back.select(col("rowtime").alias("event_ts"), *(col(n) for n in names))


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
    shared_stream: bool = False,
    clock_topic: str | None = None,
) -> None:
    """Create the `readings` view (usable readings, event time `event_ts`) and route the rest
    of iiot.readings to the dead-letter topic as part of stmt_set.

    A reading is late when the job can no longer use it: with `late_window_s`, when the
    tumbling window of that size it falls into has already been closed by the watermark
    (minus `allowed_lateness_s`); without, when it is at or behind the watermark (the jobs'
    process table functions drop such a row).

    `shared_stream`: for a job that also converts `readings` with `to_data_stream()`. That
    conversion is planned on its own, apart from the statement set, and would read and decode
    the topic a second time; with this the decoded records are one DataStream that both
    plans read (see `one_source`).

    `clock_topic`: read together with the readings, in the same Kafka source, and never
    decoded: its records (wall-clock ticks, see jobs/conditions) only move the source's
    watermark once every readings partition is idle. A reading that then arrives behind the
    watermark is late like any other (to the DLQ as `late`)."""
    register_decoder(t_env, settings, max_future_s)
    topic = readings_topic or settings.topics.readings
    params = {
        "readings_source": kafka_raw_source(
            settings,
            topic=f"{topic};{clock_topic}" if clock_topic else topic,
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
        "max_future_s": str(int(max_future_s)),
        "late_condition": late_condition(late_window_s, allowed_lateness_s),
        "job_name": job_name,
        "source_filter": f"r.src_topic <> {sql_quote(clock_topic)}" if clock_topic else "TRUE",
    }
    *ddl, insert = render_sql(SQL, params)
    for statement in ddl:
        view = VIEW.match(statement)
        if view:
            # a view made from one Table is one node of the plan, shared by every INSERT that
            # reads it; a SQL view is expanded (and, through LATERAL TABLE, decoded) per INSERT
            table = t_env.sql_query(view["query"])
            if shared_stream and view["name"] == "readings_decoded":
                assert isinstance(t_env, StreamTableEnvironment)
                table = one_source(t_env, table)
            t_env.create_temporary_view(view["name"], table)
        else:
            t_env.execute_sql(statement)
    stmt_set.add_insert_sql(insert)
