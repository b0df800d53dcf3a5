"""The two implementations of the alert state machines agree: the same randomized readings
through the conditions job's Java process table function (jobs/udf
io.otbridge.flink.conditions, in a local Flink TableEnvironment, registered exactly as the job
registers it) and through detectors.py's Monitor (the oracle) give the same alert records, every
field and message included.

The Python side is driven as the streaming job runs: readings in arrival order, per asset +
tag; deadlines fired by later readings (the job also fires them from the watermark, which
does not change the result, since no reading arrives behind the watermark here); at the end,
the final watermark of the bounded input fires every deadline left, each at its own time.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, ClassVar

from jobs.conditions.detectors import Alert, KeyState, Monitor
from jobs.conditions.rules import Rule, parse_rules
from otbridge.settings import Settings

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, in ms
WATERMARK_S = 5  # the source's bounded out-of-orderness
JITTER_MS = 4_000  # arrival order: by ts + up to this, so nothing arrives behind the watermark
DURATION_S = 720
ASSETS = [*(f"a{i}" for i in range(8)), "a10", "b1", "b2", "c1"]  # acme/s<seed>/<asset>
TAGS = ("temperature", "pressure", "state", "counter", "vibration")
SEEDS = (1, 2, 3)

RULES = parse_rules({"rules": [
    # limits: hysteresis, on- and off-delays, both directions, several per tag
    {"name": "temp-high", "match": {"asset": "acme/*", "tag": "temperature"},
     "kind": "high", "severity": "warning", "limit": 80, "hysteresis": 5, "on_delay_s": 10,
     "off_delay_s": 5},
    {"name": "temp-very-high", "match": {"asset": ["acme/*/a*", "acme/s?/b?"],
                                         "tag": "temp*"},
     "kind": "high", "severity": "critical", "limit": 90},
    {"name": "temp-low", "match": {"asset": "acme/*", "tag": "temperature"},
     "kind": "low", "severity": "info", "limit": 20, "hysteresis": 2, "on_delay_s": 3.25},
    {"name": "pressure-low", "match": {"asset": "acme/*", "tag": ["pressure", "press"]},
     "kind": "low", "limit": 1.0, "off_delay_s": 2},
    {"name": "single-char", "match": {"asset": "acme/s?/a?", "tag": "pressur?"},
     "kind": "high", "limit": 1.7, "hysteresis": 0.05, "on_delay_s": 0.5, "off_delay_s": 0.75},
    # rate: every direction, with and without delays
    {"name": "temp-jump", "match": {"asset": "acme/*", "tag": "temperature"},
     "kind": "rate", "limit": 3.0, "hysteresis": 1.0},
    {"name": "counter-burst", "match": {"asset": "acme/*", "tag": "counter"},
     "kind": "rate", "limit": 50, "hysteresis": 10, "direction": "rising", "on_delay_s": 2,
     "off_delay_s": 3},
    {"name": "counter-reset", "match": {"asset": "acme/*", "tag": "counter"},
     "kind": "rate", "limit": 100, "direction": "falling"},
    # flatline: exact and within epsilon
    {"name": "temp-flat", "match": {"asset": "acme/*", "tag": "temperature"},
     "kind": "flatline", "duration_s": 30},
    {"name": "pressure-flat", "match": {"asset": "acme/*", "tag": "pressure"},
     "kind": "flatline", "duration_s": 20.5, "epsilon": 0.05},
    # stale
    {"name": "no-state", "match": {"asset": "acme/*", "tag": "state"},
     "kind": "stale", "severity": "critical", "timeout_s": 20},
    {"name": "no-counter", "match": {"asset": "acme/*", "tag": "counter"},
     "kind": "stale", "timeout_s": 7.5},
    # bad quality: BAD only with an on-delay, BAD or UNCERTAIN with an off-delay
    {"name": "state-bad", "match": {"asset": "acme/*", "tag": "state"},
     "kind": "bad_quality", "on_delay_s": 5},
    {"name": "any-bad", "match": {"asset": "acme/*", "tag": ["temperature", "pressure"]},
     "kind": "bad_quality", "qualities": ["BAD", "UNCERTAIN"], "off_delay_s": 2},
    # anomaly: every direction, min/max value, parameters away from their defaults
    {"name": "vib-anomaly", "match": {"asset": "acme/*", "tag": "vibration"},
     "kind": "anomaly", "warmup_samples": 30, "min_std": 0.02, "min_value": 1.0,
     "max_value": 9.0},
    {"name": "vib-anomaly-both", "match": {"asset": "acme/*", "tag": "vibration"},
     "kind": "anomaly", "direction": "both", "alpha": 0.02, "smoothing": 0.5,
     "warmup_samples": 20, "threshold": 3.0, "learn_threshold": 2.5, "clear_threshold": 1.0,
     "consecutive": 2, "min_std": 0.01},
    {"name": "pressure-anomaly-low", "match": {"asset": "acme/*", "tag": "pressure"},
     "kind": "anomaly", "direction": "low", "smoothing": 1.0, "warmup_samples": 25,
     "consecutive": 1, "threshold": 3.5, "min_std": 0.05},
    {"name": "unmatched", "match": {"asset": "acme/nowhere/*", "tag": "temperature"},
     "kind": "high", "limit": 0},
]})

Row = tuple[str, str, float | None, str, str | None, int]  # asset, tag, value, quality, unit, ts


class Series:
    """One asset + tag: a random walk through episodes that trip the rules."""

    def __init__(self, rng: random.Random, asset: str, tag: str) -> None:
        self.rng, self.asset, self.tag = rng, asset, tag
        self.regular = rng.random() < 0.5  # exactly 1 s apart: samples land on deadlines
        self.mode, self.left = "normal", rng.randint(10, 60)
        self.value = {"temperature": 70.0, "pressure": 1.5, "state": 1.0, "counter": 0.0,
                      "vibration": 2.2}[tag]
        self.unit = {"temperature": "degC", "pressure": "bar", "state": None, "counter": "",
                     "vibration": "mm/s"}[tag]

    MODES: ClassVar[dict[str, tuple[str, ...]]] = {
        "temperature": ("normal", "hot", "flap", "flat", "cold", "jump", "bad", "limit"),
        "pressure": ("normal", "low", "flat", "drop", "bad", "high"),
        "state": ("normal", "bad", "flat"),
        "counter": ("normal", "burst", "reset", "flat"),
        "vibration": ("normal", "creep", "stop", "spike", "wild", "sink"),
    }

    def next_value(self) -> float:
        rng, mode, v = self.rng, self.mode, self.value
        if self.tag == "temperature":
            return {
                "normal": lambda: 70 + rng.gauss(0, 1.5),
                "hot": lambda: 82 + rng.uniform(-8, 10),
                "flap": lambda: rng.choice((79.0, 81.0, 76.0, 83.0, 74.9, 91.0)),
                "flat": lambda: v,
                "cold": lambda: 19 + rng.uniform(-3, 4),
                "jump": lambda: v + rng.choice((-1, 1)) * rng.uniform(0, 12),
                "bad": lambda: v,
                "limit": lambda: rng.choice((80.0, 75.0, 20.0, 22.0, 90.0, 1e-5, -0.0)),
            }[mode]()
        if self.tag == "pressure":
            return {
                "normal": lambda: 1.5 + rng.gauss(0, 0.1),
                "low": lambda: 0.9 + rng.uniform(-0.3, 0.2),
                "flat": lambda: v + rng.uniform(-0.04, 0.04),
                "drop": lambda: v - rng.uniform(0, 0.08),
                "bad": lambda: v,
                "high": lambda: 1.7 + rng.uniform(-0.1, 0.1),
            }[mode]()
        if self.tag == "state":
            return v if mode == "flat" else float(rng.choice((1, 2, 3)))
        if self.tag == "counter":
            return {
                "normal": lambda: v + rng.uniform(5, 15),
                "burst": lambda: v + rng.uniform(30, 250),
                "reset": lambda: 0.0 if rng.random() < 0.3 else v + 10,
                "flat": lambda: v,
            }[mode]()
        return {
            "normal": lambda: 2.2 + rng.gauss(0, 0.08),
            "creep": lambda: v + rng.uniform(0, 0.15) + rng.gauss(0, 0.05),
            "stop": lambda: 0.3 + rng.uniform(0, 0.2),
            "spike": lambda: 2.2 + rng.choice((0.0, 6.0, 12.0)),
            "wild": lambda: rng.uniform(0.5, 11.0),
            "sink": lambda: max(1.05, v - rng.uniform(0, 0.1)),
        }[mode]()

    def rows(self) -> list[Row]:
        rng, out = self.rng, []
        ts = T0 + rng.randrange(0, 5_000)
        while ts < T0 + DURATION_S * 1000:
            self.left -= 1
            if self.left <= 0:
                self.mode = rng.choice(self.MODES[self.tag])
                self.left = rng.randint(5, 70)
                if self.mode == "normal" and self.tag == "vibration":
                    self.value = 2.2
            self.value = self.next_value()
            value: float | None = self.value
            quality = "GOOD"
            roll = rng.random()
            if self.mode == "bad" or roll < 0.03:
                quality = "BAD"
                value = None if rng.random() < 0.7 else value
            elif roll < 0.06:
                quality = "UNCERTAIN"
            elif roll < 0.07:
                value = None
            unit = self.unit
            if rng.random() < 0.05:
                unit = rng.choice((None, "", "degF"))
            out.append((self.asset, self.tag, value, quality, unit, ts))
            ts += 1000 if self.regular else rng.randint(150, 2_500)
            if rng.random() < 0.015:
                ts += rng.randint(5_000, 45_000)  # a gap: stale
        return out


def arrival_order(seeds: tuple[int, ...]) -> list[Row]:
    """Every series of every seed (assets acme/s<seed>/...), merged in arrival order: by ts
    plus a random delay below JITTER_MS, so readings of one key arrive out of order, but none
    behind the watermark (max ts - 5 s)."""
    rows = []
    for seed in seeds:
        rng = random.Random(seed)
        rows += [r for asset in ASSETS for tag in TAGS
                 for r in Series(rng, f"acme/s{seed}/{asset}", tag).rows()]
    rng = random.Random(sum(seeds))
    keyed = sorted((r[5] + rng.randrange(JITTER_MS), i, r) for i, r in enumerate(rows))
    ordered = [r for _, _, r in keyed]
    top = ordered[0][5]
    for r in ordered:
        assert r[5] > top - WATERMARK_S * 1000, "a reading behind the watermark"
        top = max(top, r[5])
    return ordered


def python_alerts(rules: list[Rule], rows: list[Row]) -> list[Alert]:
    monitor, out = Monitor(rules), []
    states: dict[tuple[str, str], KeyState] = {}
    for asset, tag, value, quality, unit, ts in rows:
        ks = states.setdefault((asset, tag), KeyState(asset, tag))
        out += monitor.on_reading(ks, ts, value, quality, unit)
    # the final watermark fires every deadline left, each at its own time
    for ks in states.values():
        while (due := monitor.deadline(ks)) is not None:
            out += monitor.on_time(ks, due)
    return out


def java_alerts(settings: Settings, rules: list[Rule], rows: list[Row], tmp: Path
                ) -> list[tuple[Any, ...]]:
    """check_conditions over rows (one bounded file read in order, watermark 5 s behind)."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from jobs.conditions.job import FUNCTION, register_conditions

    data = tmp / "readings.json"
    data.write_text("".join(
        json.dumps(dict(zip(("asset", "tag", "value", "quality", "unit", "ts"), r, strict=True)))
        + "\n" for r in rows))
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("parallelism.default", "1")
    register_conditions(t_env, settings, rules)
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE readings (
          asset STRING, tag STRING, `value` DOUBLE, quality STRING, unit STRING, ts BIGINT,
          event_ts AS TO_TIMESTAMP_LTZ(ts, 3),
          WATERMARK FOR event_ts AS event_ts - INTERVAL '{WATERMARK_S}' SECOND
        ) WITH ('connector' = 'filesystem', 'path' = '{data.as_uri()}', 'format' = 'json')""")
    query = f"""
        SELECT CONCAT(asset, '|', tag, '|', rule), asset, tag, rule, kind, severity, status,
               event_ms, raised_ms, `value`, threshold, message
        FROM TABLE({FUNCTION}(input => TABLE readings PARTITION BY (asset, tag),
                              on_time => DESCRIPTOR(event_ts)))"""
    frame = t_env.sql_query(query).to_pandas()  # much faster than collect() row by row
    return [(*row[:7], int(row[7]), int(row[8]), _float(row[9]), _float(row[10]), row[11])
            for row in frame.itertuples(index=False)]


def _float(x: Any) -> float | None:
    return None if math.isnan(x) else float(x)  # pandas has NaN for null


def record(a: Alert) -> tuple[Any, ...]:
    return (a.key, a.asset, a.tag, a.rule, a.kind, a.severity, a.status, a.event_ts,
            a.raised_ts, a.value, a.threshold, a.message)


def test_java_and_python_state_machines_give_the_same_alerts(settings: Settings,
                                                           tmp_path: Path) -> None:
    rows = arrival_order(SEEDS)  # one Flink job for every seed (its start-up is the cost)
    expected = sorted((record(a) for a in python_alerts(RULES, rows)), key=repr)
    got = sorted(java_alerts(settings, RULES, rows, tmp_path), key=repr)
    for seed in SEEDS:
        prefix = f"acme/s{seed}/"
        want = [r for r in expected if r[1].startswith(prefix)]
        # every seed trips every rule both ways (a rule never exercised proves nothing)
        seen = {(r[3], r[6]) for r in want}
        for rule in RULES:
            if rule.name != "unmatched":
                assert {(rule.name, "RAISED"), (rule.name, "CLEARED")} <= seen, (seed, rule.name)
        have = [r for r in got if r[1].startswith(prefix)]
        missing = [r for r in want if r not in have]
        extra = [r for r in have if r not in want]
        assert not missing and not extra, (
            f"seed {seed}: {len(missing)} missing, {len(extra)} extra; first missing "
            f"{missing[:3]}, first extra {extra[:3]}")
    assert got == expected


SPECIAL = (0.0, -0.0, 1e-05, 1e-4, 0.0001234565, 1e+06, 999999.5, 123456.5, 1234567.0, 0.5,
           2.5, 0.125, 0.375, 1.005, -1.005, 2.675, -0.004, 0.005, 0.015, 1e16, 1.5e-300,
           5e-324, 1.7976931348623157e308, 12345.678, 100.0, 80.0, math.nan, math.inf,
           -math.inf, -7.5, 3.0, 7.1, 0.1 + 0.2)


def test_message_numbers_format_like_python(settings: Settings) -> None:
    """PyFormat (Java) against Python's own :g and :.2f on specials and random doubles."""
    from pyflink.java_gateway import get_gateway
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from jobs.conditions.job import register_conditions

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    register_conditions(t_env, settings, RULES)  # puts the jar on the gateway's class path

    rng = random.Random(0)
    xs = [*SPECIAL]
    xs += [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 9) for _ in range(3000)]
    xs += [round(rng.uniform(-100, 100), rng.randint(0, 4)) for _ in range(1000)]
    xs += [rng.randint(-10**7, 10**7) / 8 for _ in range(500)]  # exact ties at .125 steps
    fmt = get_gateway().jvm.io.otbridge.flink.conditions.PyFormat
    for x in xs:
        assert (fmt.g(float(x)), fmt.f2(float(x))) == (f"{x:g}", f"{x:.2f}"), repr(x)
