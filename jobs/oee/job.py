"""oee: iiot.readings + iiot.assets -> iiot.oee (windowed OEE per asset, every component).

The per-reading work runs on the JVM: `oee_windows` (jobs/udf, io.otbridge.flink.oee) is a
process table function partitioned by asset that buffers readings until the watermark closes
their window, applies them to the asset's timeline and emits the window, with master data read
from iiot.assets. Python wires it; timeline.py is its oracle (tests/test_oee_jvm.py).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pyflink.table import StatementSet, StreamTableEnvironment, TableEnvironment

from jobs.common.readings import register_readings
from otbridge.errors import ConfigError
from otbridge.flinkjob import kafka_avro_sink, render_sql, run_job
from otbridge.registry import schema_json
from otbridge.settings import Settings

NAME = "oee"
#: readings of an asset with no master data (yet) are kept this many windows, then dropped
MASTERLESS_BACKLOG_WINDOWS = 10
SQL = Path(__file__).with_name("oee.sql")
#: the output columns of oee_windows after its partition key (asset), as the sink has them
OUTPUT = ["msg_key", "window_start", "window_end", "planned_s", "run_s", "unplanned_stop_s",
          "planned_stop_s", "unknown_s", "total_count", "good_count", "ideal_cycle_time_s",
          "availability", "performance", "quality", "oee"]


def msg_key(asset: str, window_start_ms: int) -> str:
    """The iiot.oee record key: asset path and window start (UTC)."""
    start = datetime.fromtimestamp(window_start_ms / 1000, UTC)
    return f"{asset}|{start:%Y-%m-%dT%H:%M:%SZ}"


def register_oee_windows(
    t_env: TableEnvironment,
    settings: Settings,
    *,
    assets_topic: str,
    window_s: int,
    stale_after_s: int,
    name: str = "oee_windows",
) -> None:
    """`oee_windows(input => TABLE t PARTITION BY asset, on_time => DESCRIPTOR(ts))`, the Java
    process table function, its master data read from `assets_topic`. The jobs/udf jar must be
    in pipeline.jars already (`register_readings` / `register_decoder` put it there)."""
    from pyflink.java_gateway import get_gateway

    reg = settings.registry
    user_info = (
        f"{reg.basic_auth_username}:{reg.basic_auth_password.get_secret_value()}"
        if reg.basic_auth_username and reg.basic_auth_password
        else None
    )
    function = get_gateway().jvm.io.otbridge.flink.oee.OeeWindows(
        window_s * 1000, stale_after_s * 1000, MASTERLESS_BACKLOG_WINDOWS,
        json.dumps(settings.kafka.java()), assets_topic, reg.url, user_info,
        json.dumps(schema_json("Asset")),
    )
    t_env._j_tenv.createTemporarySystemFunction(name, function)


def build(
    t_env: StreamTableEnvironment,
    settings: Settings,
    *,
    topics: dict[str, str] | None = None,
    bounded: bool = False,
    group_suffix: str = "",
    window_s: int = 60,
    stale_after_s: int = 60,
) -> StatementSet:
    if bounded:
        raise ConfigError(
            "oee: --bounded is not supported: windows close as the readings' event time "
            "advances, so run it unbounded."
        )
    topics = topics or {}
    t = settings.topics
    stmt_set = t_env.create_statement_set()
    register_readings(
        t_env, stmt_set, settings, job_name=NAME, readings_topic=topics.get("readings"),
        dlq_topic=topics.get("dlq"), bounded=bounded, group_suffix=group_suffix,
        # a process table function drops rows at or behind the watermark: count them as late
        late_window_s=None,
    )
    register_oee_windows(t_env, settings, assets_topic=topics.get("assets", t.assets),
                         window_s=window_s, stale_after_s=stale_after_s)
    *ddl, insert = render_sql(SQL, {
        "oee_sink": kafka_avro_sink(
            settings, topic=topics.get("oee", t.oee), schema="OeeWindow", key_field="msg_key",
            transactional_id_prefix=f"otbridge-{NAME}{group_suffix}",
        ),
    })
    for statement in ddl:
        t_env.execute_sql(statement)
    stmt_set.add_insert_sql(insert)
    return stmt_set


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window-s", type=int, default=60, help="OEE window length")
    parser.add_argument(
        "--stale-after-s", type=int, default=60,
        help="time after an asset's last GOOD reading from which its state counts as UNKNOWN",
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(NAME, build, argv, __doc__ or NAME, add_args)


if __name__ == "__main__":
    raise SystemExit(main())
