"""conditions: iiot.readings -> iiot.alerts (condition monitoring, rules from a YAML file).

Rules (jobs/conditions/rules.yaml by default, `--rules FILE` for another) are checked by
`otbridge jobs submit` before it starts the Flink client, read again when the job is built, on
the client, and travel with the job; the cluster needs no access to the file. Changing the
rules means resubmitting the job.

Everything runs in event time (the readings' source timestamps), so replays give the same
alerts. Deadlines (on/off delays, stale timeouts) fire when a later reading of the same tag
arrives or when the watermark passes them, whichever is first, with the same result. The
watermark moves with the readings of every asset (a partition that goes quiet is skipped
after the 30 s idle timeout), so a silent tag is reported stale once the rest of the plant's
event time passes its deadline.

When every reading stops (a whole connector, or the plant's only one, is down), the wall
clock takes over: the job writes a tick a second to the clock topic (iiot.clock) and reads it
with the readings; once every readings partition has been idle for 30 s, the ticks move the
watermark to the wall clock minus 15 s (ticks stamped 10 s behind, the 5 s out-of-orderness).
A stale alert is then RAISED `timeout_s` + at most 25 s after the last reading (15 s, a tick
a second, the alerts sink's delivery; measured 15.7 s), and never before 30 s of total
silence. A reading that arrives more than 15 s after its source time following such a
silence (a backlog a connector replays after an outage) is late: it goes to the DLQ as
`late`, is not evaluated for alerts, and stays in iiot.readings. `--no-wall-clock` keeps event time
strictly with the readings (replays of history, where the wall clock means nothing).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from string import Template

from pyflink.table import StatementSet, StreamTableEnvironment, TableEnvironment

from jobs.common.readings import register_readings
from jobs.conditions.rules import RULES_FILE, Rule, load_rules, rules_json, sql_filter
from otbridge.flinkjob import kafka_avro_sink, kafka_raw_sink, render_sql, run_job
from otbridge.settings import Settings
from otbridge.udf import built_udf_jar

NAME = "conditions"
SQL = Path(__file__).with_name("conditions.sql")
FUNCTION = "check_conditions"
#: the ticks are stamped this far behind the wall clock: after a total silence, a reading that
#: reaches the job up to this + the 5 s out-of-orderness after its source time is on time
CLOCK_LAG_S = 10
#: one wall-clock tick a second (jobs/conditions/conditions.sql `${clock}`)
CLOCK_SQL = """
CREATE TEMPORARY TABLE clock_source (n INT) WITH (
  'connector' = 'datagen', 'rows-per-second' = '1', 'fields.n.min' = '0', 'fields.n.max' = '0'
);
CREATE TEMPORARY TABLE clock_ticks (
  tick BYTES,
  tick_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'
) WITH (
  ${clock_sink}
);
INSERT INTO clock_ticks
SELECT CAST('tick' AS BYTES), CURRENT_TIMESTAMP - INTERVAL '${lag_s}' SECOND FROM clock_source;
"""


def register_conditions(t_env: TableEnvironment, settings: Settings, rules: Sequence[Rule]
                        ) -> None:
    """`check_conditions`: the state machines of detectors.py as a Java process table function
    (jobs/udf io.otbridge.flink.conditions.ConditionsFunction), built with the rules as JSON.
    Rules are validated here, in Python, only; their jar travels with the job in pipeline.jars
    (register_readings adds it too: it is the same jar)."""
    from pyflink.common import Configuration
    from pyflink.java_gateway import get_gateway

    jar = built_udf_jar(settings.stack.lib_dir).as_uri()
    config = t_env.get_config()
    jars = Configuration.parse_list_value(config.get("pipeline.jars", "") or "")
    if jar not in jars:
        config.set("pipeline.jars", ";".join([*jars, jar]))
    function = get_gateway().jvm.io.otbridge.flink.conditions.ConditionsFunction(
        rules_json(rules)
    )
    t_env._j_tenv.createTemporarySystemFunction(FUNCTION, function)


def build(
    t_env: StreamTableEnvironment,
    settings: Settings,
    *,
    topics: dict[str, str] | None = None,
    bounded: bool = False,
    group_suffix: str = "",
    rules: str | None = None,
    wall_clock: bool = True,
) -> StatementSet:
    parsed = load_rules(rules or RULES_FILE)
    topics = topics or {}
    clock_topic = topics.get("clock", settings.topics.clock) if wall_clock and not bounded \
        else None
    stmt_set = t_env.create_statement_set()
    register_readings(
        t_env, stmt_set, settings, job_name=NAME, readings_topic=topics.get("readings"),
        dlq_topic=topics.get("dlq"), bounded=bounded, group_suffix=group_suffix,
        clock_topic=clock_topic,
    )
    register_conditions(t_env, settings, parsed)
    clock = ""
    if clock_topic:
        clock = Template(CLOCK_SQL).substitute(
            clock_sink=kafka_raw_sink(settings, topic=clock_topic), lag_s=CLOCK_LAG_S)
    statements = render_sql(SQL, {
        "rule_filter": sql_filter(parsed),
        "alerts_sink": kafka_avro_sink(
            settings, topic=topics.get("alerts", settings.topics.alerts), schema="AlertEvent",
            key_field="msg_key",
            transactional_id_prefix=None,  # at-least-once: lower latency, keys dedupe
        ),
        "clock": clock,
    })
    for statement in statements:
        if statement.lstrip().upper().startswith("INSERT"):
            stmt_set.add_insert_sql(statement)
        else:
            t_env.execute_sql(statement)
    return stmt_set


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rules", default=None, metavar="FILE",
        help=f"the rules YAML (default {RULES_FILE.relative_to(RULES_FILE.parents[2])})",
    )
    parser.add_argument(
        "--wall-clock", action=argparse.BooleanOptionalAction, default=True,
        help="let the wall clock move event time when every reading has stopped, so stale "
        "alerts are raised (default on; off for replays of history)",
    )


def client_args(args: Sequence[str]) -> list[str]:
    """Run by `otbridge jobs submit` before the Flink client: check the rules file now and
    name it by its absolute path (the client runs in another directory)."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--rules" and i + 1 < len(out):
            out[i + 1] = _checked(out[i + 1])
        elif arg.startswith("--rules="):
            out[i] = "--rules=" + _checked(arg.removeprefix("--rules="))
    return out


def _checked(path: str) -> str:
    absolute = Path(path).absolute()
    load_rules(absolute if absolute.is_file() else path)  # a ConfigError names the file
    return str(absolute)


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(NAME, build, argv, __doc__ or NAME, add_args)


if __name__ == "__main__":
    raise SystemExit(main())
