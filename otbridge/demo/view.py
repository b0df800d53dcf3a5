"""The demo's live terminal view (rich), refreshed every second."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from otbridge.demo.watch import LagProbe, Watcher, age_s
from otbridge.settings import Settings


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:5.1f}%"


# the simulated plant's state codes (simulators/plant.yaml)
STATE_NAMES = {1: "RUNNING", 2: "IDLE", 3: "DOWN", 4: "BLOCKED", 5: "SETUP", 6: "BREAK"}


def state_name(reading: dict[str, Any] | None) -> str:
    if reading is None:
        return "-"
    if reading.get("quality") != "GOOD":
        return f"? ({reading.get('quality')})"
    if reading.get("text"):
        return str(reading["text"])
    value = reading.get("value")
    return "-" if value is None else STATE_NAMES.get(int(value), f"code {value:g}")


def last_hour(windows: list[dict[str, Any]]) -> dict[str, float | None]:
    """OEE over many windows from their summed components (not an average of ratios)."""
    planned = sum(w["planned_s"] for w in windows)
    run = sum(w["run_s"] for w in windows)
    total = sum(w["total_count"] for w in windows)
    good = sum(w["good_count"] for w in windows)
    known = [w for w in windows if w["ideal_cycle_time_s"] is not None]
    ideal = sum(w["ideal_cycle_time_s"] * w["total_count"] for w in known)
    ideal_good = sum(w["ideal_cycle_time_s"] * w["good_count"] for w in known)
    a = run / planned if planned > 0 else None
    p = ideal / run if run > 0 and known else None
    q = good / total if total > 0 else None
    # OEE = good x ideal cycle time / planned (= A x P x Q): 0 when nothing was made
    oee = ideal_good / planned if planned > 0 and known else None
    return {"availability": a, "performance": p, "quality": q, "oee": oee}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def render(watcher: Watcher, settings: Settings, lag: dict[str, int | None]) -> Group:
    snap = watcher.snapshot()
    t = settings.topics

    oee = Table(title="Machines: state, OEE of the latest window and of the last hour",
                expand=True)
    for col in ("asset", "state", "window", "run/unpl/plan/unkn s", "A", "P", "Q", "OEE",
                "good/total", "last hour A", "P", "Q", "OEE"):
        oee.add_column(col)
    per_asset: dict[str, list[dict[str, Any]]] = {}
    for row in snap[t.oee].values():
        per_asset.setdefault(row["asset"], []).append(row)
    for asset, windows in sorted(per_asset.items()):
        w = max(windows, key=lambda r: r["window_start"])
        hour_ago = w["window_end"].timestamp() - 3600
        hour = last_hour([r for r in windows if r["window_start"].timestamp() >= hour_ago])
        oee.add_row(
            asset, state_name(snap["states"].get(asset)),
            f"{w['window_start']:%H:%M:%S}+{(w['window_end'] - w['window_start']).seconds}s",
            f"{w['run_s']:.0f}/{w['unplanned_stop_s']:.0f}/{w['planned_stop_s']:.0f}/"
            f"{w['unknown_s']:.0f}",
            _pct(w["availability"]), _pct(w["performance"]), _pct(w["quality"]), _pct(w["oee"]),
            f"{w['good_count']}/{w['total_count']}",
            _pct(hour["availability"]), _pct(hour["performance"]), _pct(hour["quality"]),
            _pct(hour["oee"]),
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
        agg.add_row(a["asset"], a["tag"], f"{a['window_start']:%H:%M}", _fmt(a["min"]),
                    _fmt(a["avg"]), _fmt(a["max"]), str(a["count"]), str(a["count_other"]))

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
    probe = LagProbe(settings)
    try:
        with Live(render(watcher, settings, lag), refresh_per_second=1, screen=False) as live:
            while not stop["now"] and (
                duration_s is None or time.monotonic() - started < duration_s
            ):
                demo.check_alive()
                if time.monotonic() - last_lag > 5:
                    lag, last_lag = probe.lag(groups), time.monotonic()
                live.update(render(watcher, settings, lag))
                time.sleep(1.0)
    finally:
        probe.close()
