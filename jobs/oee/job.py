"""oee: iiot.readings + iiot.assets -> iiot.oee (windowed OEE per asset, every component)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink.table import StatementSet, StreamTableEnvironment

from jobs.common.readings import register_readings
from jobs.oee.assets import AssetTable
from jobs.oee.timeline import Master, Timeline, result
from otbridge.errors import ConfigError
from otbridge.flinkjob import kafka_avro_sink, render_sql, run_job
from otbridge.registry import schema_json
from otbridge.settings import Settings

NAME = "oee"
#: readings of an asset with no master data (yet) are kept this many windows, then dropped
MASTERLESS_BACKLOG_WINDOWS = 10
SQL = Path(__file__).with_name("oee.sql")

OUTPUT = Types.ROW_NAMED(
    ["msg_key", "asset", "window_start", "window_end", "planned_s", "run_s", "unplanned_stop_s",
     "planned_stop_s", "unknown_s", "total_count", "good_count", "ideal_cycle_time_s",
     "availability", "performance", "quality", "oee"],
    [Types.STRING(), Types.STRING(), Types.LONG(), Types.LONG(),
     *[Types.DOUBLE()] * 5, Types.LONG(), Types.LONG(), *[Types.DOUBLE()] * 5],
)


class OeeFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by asset. Readings wait in `pending` until the watermark passes the end of their
    window; then they are applied in event-time order and the window is emitted. One timer
    per asset and window keeps timer traffic low. Master data comes from `AssetTable`."""

    def __init__(self, window_s: int, stale_after_s: int, assets: AssetTable) -> None:
        self.window_ms = window_s * 1000
        self.stale_after_ms = stale_after_s * 1000
        self.assets = assets

    def open(self, runtime_context: RuntimeContext) -> None:
        pickled = Types.PICKLED_BYTE_ARRAY()
        self.timeline = runtime_context.get_state(ValueStateDescriptor("timeline", pickled))
        self.pending = runtime_context.get_map_state(
            MapStateDescriptor("pending", Types.LONG(), pickled)
        )
        self.assets.open()

    def close(self) -> None:
        self.assets.close()

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> None:
        ts = ctx.timestamp()
        batch = self.pending.get(ts) or []
        batch.append((value[1], value[2], value[3], value[4]))  # tag, value, text, quality
        self.pending.put(ts, batch)
        ctx.timer_service().register_event_time_timer(ts - ts % self.window_ms + self.window_ms)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterable[Row]:
        yield from self._close_window(timestamp, ctx)

    def _close_window(self, end: int, ctx: Any) -> Iterable[Row]:
        key = ctx.get_current_key()
        master = self.assets.get(key)
        if master is None:
            self.assets.refresh()
            master = self.assets.get(key)
        if master is None:
            # no master data (yet): keep the readings a while, then let them go
            horizon = end - MASTERLESS_BACKLOG_WINDOWS * self.window_ms
            for ts in [t for t in self.pending.keys() if t < horizon]:
                self.pending.remove(ts)
            if not self.pending.is_empty():
                ctx.timer_service().register_event_time_timer(end + self.window_ms)
            return
        timeline: Timeline = self.timeline.value() or Timeline(
            window_ms=self.window_ms, stale_after_ms=self.stale_after_ms
        )
        for ts in sorted(t for t in self.pending.keys() if t < end):
            yield from (self._row(key, acc, master) for acc in timeline.close_until(ts))
            for tag, value, text, quality in self.pending.get(ts):
                timeline.apply(master, ts, tag, value, text, quality)
            self.pending.remove(ts)
        for acc in timeline.close_until(end):
            yield self._row(key, acc, master)
        if timeline.wants_next_window(end):
            # known time runs into the next window: close that one even if no reading comes
            ctx.timer_service().register_event_time_timer(end + self.window_ms)
        self.timeline.update(timeline)

    def _row(self, asset: str, acc: Any, master: Master) -> Row:
        r = result(acc, self.window_ms, master)
        start = datetime.fromtimestamp(r["window_start"] / 1000, UTC)
        return Row(f"{asset}|{start:%Y-%m-%dT%H:%M:%SZ}", asset, r["window_start"],
                   r["window_end"], r["planned_s"], r["run_s"], r["unplanned_stop_s"],
                   r["planned_stop_s"], r["unknown_s"], r["total_count"], r["good_count"],
                   r["ideal_cycle_time_s"], r["availability"], r["performance"], r["quality"],
                   r["oee"])


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
            "oee: --bounded is not supported: PyFlink 2.2 drops what a keyed function emits "
            "from timers fired by the final watermark of a bounded input. Run it unbounded; "
            "windows close as the readings' event time advances."
        )
    topics = topics or {}
    t = settings.topics
    stmt_set = t_env.create_statement_set()
    register_readings(
        t_env, stmt_set, settings, job_name=NAME, readings_topic=topics.get("readings"),
        dlq_topic=topics.get("dlq"), bounded=bounded, group_suffix=group_suffix,
        late_window_s=window_s,
        shared_stream=True,  # the state machines read it through to_data_stream()
    )
    *ddl, insert = render_sql(SQL, {
        "oee_sink": kafka_avro_sink(
            settings, topic=topics.get("oee", t.oee), schema="OeeWindow", key_field="msg_key",
            transactional_id_prefix=f"otbridge-{NAME}{group_suffix}",
        ),
    })
    for statement in ddl:
        t_env.execute_sql(statement)

    reg = settings.registry
    assets = AssetTable(
        settings.kafka.librdkafka(), topics.get("assets", t.assets), reg.url,
        f"{reg.basic_auth_username}:{reg.basic_auth_password.get_secret_value()}"
        if reg.basic_auth_username and reg.basic_auth_password else None,
        schema_json("Asset"),
    )
    windows = (
        t_env.to_data_stream(
            # event_ts (the rowtime) becomes each record's timestamp: ctx.timestamp()
            t_env.sql_query("SELECT asset, tag, `value`, `text`, quality, event_ts FROM readings")
        )
        .key_by(lambda r: r[0], key_type=Types.STRING())
        .process(OeeFunction(window_s, stale_after_s, assets), output_type=OUTPUT)
        .name("oee-per-asset")
    )
    t_env.create_temporary_view("oee_windows", t_env.from_data_stream(windows))
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
