"""Smoke job: readings -> 1-minute per-tag aggregates. Proves Kafka + registry + Flink work."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pyflink.table import EnvironmentSettings, StatementSet, TableEnvironment

from otbridge.flinkjob import (
    job_arg_parser,
    kafka_avro_sink,
    kafka_avro_source,
    render_sql,
    topic_overrides,
)
from otbridge.settings import Settings, load_settings

NAME = "smoke"
SQL = Path(__file__).with_name("smoke.sql")


def build(
    t_env: TableEnvironment,
    settings: Settings,
    *,
    readings_topic: str | None = None,
    output_topic: str | None = None,
    bounded: bool = False,
    group_suffix: str = "",
) -> StatementSet:
    readings = readings_topic or settings.topics.readings
    output = output_topic or f"{settings.topics.prefix}iiot.smoke"
    params = {
        "readings_source": kafka_avro_source(
            settings, topic=readings, schema="Reading",
            group_id=f"otbridge-{NAME}{group_suffix}", bounded=bounded,
        ),
        "aggregates_sink": kafka_avro_sink(
            settings, topic=output, schema="ReadingAggregate", key_field="msg_key",
            transactional_id_prefix=f"otbridge-{NAME}{group_suffix}",
        ),
    }
    statements = render_sql(SQL, params)
    for ddl in statements[:-1]:
        t_env.execute_sql(ddl)
    stmt_set = t_env.create_statement_set()
    stmt_set.add_insert_sql(statements[-1])
    return stmt_set


def main(argv: Sequence[str] | None = None) -> int:
    parser = job_arg_parser(__doc__ or NAME)
    args = parser.parse_args(argv)
    topics = topic_overrides(args.topic)
    settings = load_settings()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("table.local-time-zone", "UTC")
    t_env.get_config().set("pipeline.name", f"otbridge-{NAME}{args.name_suffix}")
    stmt_set = build(
        t_env, settings,
        readings_topic=topics.get("readings"), output_topic=topics.get("output"),
        bounded=args.bounded, group_suffix=args.name_suffix,
    )
    stmt_set.execute()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
