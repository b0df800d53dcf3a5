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
event time passes its deadline; if every reading stops, event time stops too and nothing
fires until data returns.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyflink.common import Row, Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.table import StatementSet, StreamTableEnvironment

from jobs.common.readings import register_readings
from jobs.conditions.detectors import Alert, KeyState, Monitor
from jobs.conditions.rules import RULES_FILE, Rule, load_rules, sql_filter
from otbridge.errors import ConfigError
from otbridge.flinkjob import kafka_avro_sink, render_sql, run_job
from otbridge.settings import Settings

NAME = "conditions"
SQL = Path(__file__).with_name("conditions.sql")

OUTPUT = Types.ROW_NAMED(
    ["msg_key", "asset", "tag", "rule", "kind", "severity", "status", "event_ts", "raised_ts",
     "value", "threshold", "message"],
    [*[Types.STRING()] * 7, Types.LONG(), Types.LONG(), Types.DOUBLE(), Types.DOUBLE(),
     Types.STRING()],
)


class ConditionFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by asset + tag; every matching rule's state machine in one pickled KeyState.

    Deadlines (on/off delays, stale timeouts) are event-time timers. Only the earliest one is
    registered, and only when it moves earlier; a timer that finds its deadline moved on
    registers the new one. So a tag read every second with a 30 s stale rule costs one timer
    per 30 s, not one per reading.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)

    def open(self, runtime_context: RuntimeContext) -> None:
        self.monitor = Monitor(self.rules)
        self.state = runtime_context.get_state(
            ValueStateDescriptor("key", Types.PICKLED_BYTE_ARRAY())
        )
        # the state of every key as last written: only this instance writes it, and a restore
        # (after a failure) starts a fresh instance, so reading it back is never needed
        self.cache: dict[str, KeyState] = {}

    def _load(self, key: str) -> KeyState | None:
        ks = self.cache.get(key)
        if ks is None:
            ks = self.state.value()
            if ks is not None:
                self.cache[key] = ks
        return ks

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterable[Row]:
        key = ctx.get_current_key()
        ks = self._load(key)
        if ks is None:
            ks = self.cache[key] = KeyState(value[0], value[1])
        alerts = self.monitor.on_reading(ks, ctx.timestamp(), value[2], value[3], value[4])
        self._arm(ks, ctx)
        self.state.update(ks)
        return [_row(a) for a in alerts]

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterable[Row]:
        ks = self._load(ctx.get_current_key())
        if ks is None:
            return []
        if ks.timer is not None and ks.timer <= timestamp:
            ks.timer = None
        alerts = self.monitor.on_time(ks, timestamp)
        self._arm(ks, ctx)
        self.state.update(ks)
        return [_row(a) for a in alerts]

    def _arm(self, ks: KeyState, ctx: KeyedProcessFunction.Context) -> None:
        due = self.monitor.deadline(ks)
        if due is not None and (ks.timer is None or due < ks.timer):
            ctx.timer_service().register_event_time_timer(due)
            ks.timer = due


def _row(a: Alert) -> Row:
    return Row(a.key, a.asset, a.tag, a.rule, a.kind, a.severity, a.status, a.event_ts,
               a.raised_ts, a.value, a.threshold, a.message)


def build(
    t_env: StreamTableEnvironment,
    settings: Settings,
    *,
    topics: dict[str, str] | None = None,
    bounded: bool = False,
    group_suffix: str = "",
    rules: str | None = None,
) -> StatementSet:
    if bounded:
        raise ConfigError(
            "conditions: --bounded is not supported: PyFlink 2.2 drops what a keyed function "
            "emits from timers fired by the final watermark of a bounded input (stale alerts, "
            "on-delays). Run it unbounded; deadlines fire as the readings' event time advances."
        )
    parsed = load_rules(rules or RULES_FILE)
    topics = topics or {}
    stmt_set = t_env.create_statement_set()
    register_readings(
        t_env, stmt_set, settings, job_name=NAME, readings_topic=topics.get("readings"),
        dlq_topic=topics.get("dlq"), bounded=bounded, group_suffix=group_suffix,
        shared_stream=True,  # the state machines read it through to_data_stream()
    )
    *ddl, insert = render_sql(SQL, {
        "rule_filter": sql_filter(parsed),
        "alerts_sink": kafka_avro_sink(
            settings, topic=topics.get("alerts", settings.topics.alerts), schema="AlertEvent",
            key_field="msg_key",
            transactional_id_prefix=None,  # at-least-once: lower latency, keys dedupe
        ),
    })
    for statement in ddl:
        t_env.execute_sql(statement)

    alerts = (
        t_env.to_data_stream(t_env.from_path("conditions_input"))
        .key_by(lambda r: f"{r[0]}|{r[1]}", key_type=Types.STRING())
        .process(ConditionFunction(parsed), output_type=OUTPUT)
        .name("conditions-per-tag")
    )
    t_env.create_temporary_view("alerts", t_env.from_data_stream(alerts))
    stmt_set.add_insert_sql(insert)
    return stmt_set


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rules", default=None, metavar="FILE",
        help=f"the rules YAML (default {RULES_FILE.relative_to(RULES_FILE.parents[2])})",
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
