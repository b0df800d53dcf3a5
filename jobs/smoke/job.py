"""smoke: the minimal example job. iiot.readings -> iiot.smoke (1-minute aggregates per tag).

Everything a job needs and nothing more: the SQL in smoke.sql (source, sink, one INSERT), its
${placeholders} filled from settings here, `build(t_env, settings, ...)` for tests and
`main(argv)` for `otbridge jobs submit smoke`. Copy this folder to start a new job. It reads
the readings with Flink's own avro-confluent format; the real jobs use the shared decoded
view of jobs/common/readings.py instead (a bad record goes to the DLQ, not into a failure).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pyflink.table import StatementSet, TableEnvironment

from otbridge.flinkjob import kafka_avro_sink, kafka_avro_source, render_sql, run_job
from otbridge.settings import Settings

NAME = "smoke"
SQL = Path(__file__).with_name("smoke.sql")


def build(
    t_env: TableEnvironment,
    settings: Settings,
    *,
    topics: dict[str, str] | None = None,
    bounded: bool = False,
    group_suffix: str = "",
) -> StatementSet:
    topics = topics or {}
    *ddl, insert = render_sql(SQL, {
        "readings_source": kafka_avro_source(
            settings, topic=topics.get("readings", settings.topics.readings), schema="Reading",
            group_id=f"otbridge-{NAME}{group_suffix}", bounded=bounded,
        ),
        "aggregates_sink": kafka_avro_sink(
            settings, topic=topics.get("output", f"{settings.topics.prefix}iiot.smoke"),
            schema="ReadingAggregate", key_field="msg_key",
            transactional_id_prefix=f"otbridge-{NAME}{group_suffix}",
        ),
    })
    for statement in ddl:
        t_env.execute_sql(statement)
    stmt_set = t_env.create_statement_set()
    stmt_set.add_insert_sql(insert)
    return stmt_set


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(NAME, build, argv, __doc__ or NAME)


if __name__ == "__main__":
    raise SystemExit(main())
