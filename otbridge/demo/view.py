"""The demo's live terminal view (rich), refreshed every second."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from otbridge.demo.watch import Watcher, age_s, consumer_lag
from otbridge.settings import Settings


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:5.1f}%"


def render(watcher: Watcher, settings: Settings, lag: dict[str, int | None]) -> Group:
    snap = watcher.snapshot()
    t = settings.topics

    oee = Table(title="OEE (latest window per machine)", expand=True)
    for col in ("asset", "window", "state time run/unpl/plan/unkn s", "A", "P", "Q", "OEE",
                "good/total"):
        oee.add_column(col)
    latest_per_asset: dict[str, dict[str, Any]] = {}
    for row in snap[t.oee].values():
        cur = latest_per_asset.get(row["asset"])
        if cur is None or row["window_start"] > cur["window_start"]:
            latest_per_asset[row["asset"]] = row
    for asset, w in sorted(latest_per_asset.items()):
        oee.add_row(
            asset, f"{w['window_start']:%H:%M}",
            f"{w['run_s']:.0f}/{w['unplanned_stop_s']:.0f}/{w['planned_stop_s']:.0f}/"
            f"{w['unknown_s']:.0f}",
            _pct(w["availability"]), _pct(w["performance"]), _pct(w["quality"]), _pct(w["oee"]),
            f"{w['good_count']}/{w['total_count']}",
        )

    alerts = Table(title="Active alerts", expand=True)
    for col in ("asset", "tag", "rule", "severity", "value", "age"):
        alerts.add_column(col)
    for a in sorted(snap[t.alerts].values(), key=lambda a: a["raised_ts"]):
        if a["status"] == "RAISED":
            value = "-" if a["value"] is None else f"{a['value']:.2f}"
            alerts.add_row(a["asset"], a["tag"], a["rule"], a["severity"], value,
                           f"{age_s(a['raised_ts']):.0f}s")

    agg = Table(title="Latest 1-minute aggregates (key tags)", expand=True)
    for col in ("asset", "tag", "window", "min", "avg", "max", "n", "bad"):
        agg.add_column(col)
    for a in sorted(snap[t.readings_1m].values(), key=lambda a: (a["asset"], a["tag"])):
        if a["tag"] not in ("temperature", "vibration", "power"):
            continue
        def fmt(v):
            return ("-" if v is None else f"{v:.2f}")
        agg.add_row(a["asset"], a["tag"], f"{a['window_start']:%H:%M}", fmt(a["min"]),
                    fmt(a["avg"]), fmt(a["max"]), str(a["count"]), str(a["count_other"]))

    lag_text = "   ".join(f"{g}: {'-' if n is None else n}" for g, n in lag.items())
    footer = Panel(
        f"consumer lag on {t.readings}: {lag_text}\n"
        f"Flink UI {settings.flink.rest_url}   registry {settings.registry.url}   Ctrl-C stops",
        title="otbridge demo",
    )
    return Group(oee, alerts, agg, footer)


def live_view(watcher: Watcher, demo: Any, settings: Settings, *, duration_s: float | None,
              stop: dict[str, bool]) -> None:
    started = time.monotonic()
    groups = [f"otbridge-{name}" for name in demo.job_ids]
    lag: dict[str, int | None] = {}
    last_lag = 0.0
    with Live(render(watcher, settings, lag), refresh_per_second=1, screen=False) as live:
        while not stop["now"] and (duration_s is None or time.monotonic() - started < duration_s):
            demo.check_alive()
            if time.monotonic() - last_lag > 5:
                lag, last_lag = consumer_lag(settings, groups), time.monotonic()
            live.update(render(watcher, settings, lag))
            time.sleep(1.0)
