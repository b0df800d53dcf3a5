"""downsample: iiot.readings -> iiot.readings.1m and iiot.readings.1h (cold storage)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pyflink.table import StatementSet, TableEnvironment

from jobs.common.readings import register_readings
from otbridge.errors import ConfigError
from otbridge.flinkjob import kafka_avro_sink, render_sql, run_job
from otbridge.settings import Settings

NAME = "downsample"
SQL = Path(__file__).with_name("downsample.sql")


def register_first_last(t_env: TableEnvironment) -> None:
    """`first_non_null(x)` and `last_non_null(x)`: jobs/udf's mergeable twins of FIRST_VALUE and
    LAST_VALUE (their jar is on pipeline.jars once `register_readings` has run)."""
    from pyflink.java_gateway import get_gateway

    udf = get_gateway().jvm.io.otbridge.flink
    t_env._j_tenv.createTemporarySystemFunction("first_non_null", udf.FirstValue())
    t_env._j_tenv.createTemporarySystemFunction("last_non_null", udf.LastValue())


def build(
    t_env: TableEnvironment,
    settings: Settings,
    *,
    topics: dict[str, str] | None = None,
    bounded: bool = False,
    group_suffix: str = "",
    minute_window_s: int = 60,
    hour_window_s: int = 3600,
) -> StatementSet:
    if hour_window_s % minute_window_s:
        raise ConfigError(f"downsample: the hour window ({hour_window_s} s) must be a multiple "
                          f"of the minute window ({minute_window_s} s): it is made of minutes")
    topics = topics or {}
    t = settings.topics
    stmt_set = t_env.create_statement_set()
    register_readings(
        t_env, stmt_set, settings, job_name=NAME, readings_topic=topics.get("readings"),
        dlq_topic=topics.get("dlq"), bounded=bounded, group_suffix=group_suffix,
        late_window_s=minute_window_s,
    )

    register_first_last(t_env)

    def sink(topic: str) -> str:
        return kafka_avro_sink(
            settings, topic=topic, schema="ReadingAggregate", key_field="msg_key",
            transactional_id_prefix=f"otbridge-{NAME}{group_suffix}-{topic}",
        )

    params = {
        "sink_1m": sink(topics.get("readings_1m", t.readings_1m)),
        "sink_1h": sink(topics.get("readings_1h", t.readings_1h)),
        "minute_window_s": str(minute_window_s),
        "hour_window_s": str(hour_window_s),
    }
    *ddl, insert_1m, insert_1h = render_sql(SQL, params)
    for statement in ddl:
        t_env.execute_sql(statement)
    stmt_set.add_insert_sql(insert_1m)
    stmt_set.add_insert_sql(insert_1h)
    return stmt_set


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(NAME, build, argv, __doc__ or NAME)


if __name__ == "__main__":
    raise SystemExit(main())
