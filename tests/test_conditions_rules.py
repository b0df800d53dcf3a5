"""The condition rules and their state machines alone (pure logic); test_job_conditions.py
runs the same cases through Flink."""

from __future__ import annotations

import random
import subprocess
import sys
from typing import Any

import pytest
import yaml

from jobs.conditions.detectors import KeyState, Monitor
from jobs.conditions.rules import RULES_FILE, load_rules, parse_rules, sql_filter
from otbridge.errors import ConfigError
from simulators.core.model import MachineModel
from simulators.core.plant import StateCode, load_plant

T = 1_767_607_200_000  # 2026-01-05 10:00:00 UTC in ms
Sample = tuple  # (seconds, value) or (seconds, value, quality)


def rule(kind: str, **params: Any) -> dict[str, Any]:
    return {"name": kind, "match": {"asset": "a/*", "tag": "x"}, "kind": kind, **params}


def run(rules: list[dict[str, Any]] | dict[str, Any], samples: list[Sample], *,
        until_s: float | None = None, watermarks: bool = False) -> list[tuple]:
    """(rule, status, seconds, value, threshold) of every transition. With watermarks=True,
    event time also advances to each sample's second minus 0.5 before the sample (the timer
    path); until_s advances it at the end."""
    rules = rules if isinstance(rules, list) else [rules]
    monitor = Monitor(parse_rules({"rules": rules}))
    ks, out = KeyState("a/b", "x"), []
    for s in samples:
        sec, value, quality = (*s, "GOOD") if len(s) == 2 else s
        if watermarks:
            out += monitor.on_time(ks, T + int((sec - 0.5) * 1000))
        out += monitor.on_reading(ks, T + int(sec * 1000), value, quality, "u")
    if until_s is not None:
        out += monitor.on_time(ks, T + int(until_s * 1000))
    return [(a.rule, a.status, (a.event_ts - T) / 1000, a.value, a.threshold) for a in out]


def series(start_s: float, values: list[float | None], step_s: float = 1.0) -> list[Sample]:
    return [(start_s + i * step_s, v) for i, v in enumerate(values)]


# -- the rules file ----------------------------------------------------------------------------


def test_shipped_rules_cover_the_simulated_plant() -> None:
    rules = {r.name: r for r in load_rules(RULES_FILE)}
    assert {r.kind for r in rules.values()} == {
        "high", "low", "rate", "flatline", "stale", "bad_quality", "anomaly"}
    plant = load_plant()
    for spec in plant.machines.values():
        for name in ("vibration-anomaly", "vibration-high", "no-data"):
            tag = "state" if name == "no-data" else "vibration"
            assert rules[name].match.matches(spec.asset, tag), (name, spec.asset)
        assert any(r.kind == "high" and r.match.matches(spec.asset, "temperature")
                   for r in rules.values()), spec.asset
    for spec in plant.charge_points.values():
        assert rules["no-data"].match.matches(spec.asset, "status")
        assert rules["frost"].match.matches(spec.asset, "ambient_temperature")


@pytest.mark.parametrize(("raw", "message"), [
    ({"rules": [rule("high", hysteresis=1)]}, "rule 1 (high): limit: Field required"),
    ({"rules": [rule("high", limit=1, hysterisis=1)]},
     "rule 1 (high): hysterisis: Extra inputs are not permitted"),
    ({"rules": [rule("spike")]}, "rule 1 (spike): kind must be one of high, low, rate"),
    ({"rules": [{"name": "n", "match": {"asset": "*", "tag": "*"}}]},
     "rule 1 (n): kind is missing"),
    ({"rules": [rule("stale", timeout_s=0)]},
     "rule 1 (stale): timeout_s: Input should be greater than 0"),
    ({"rules": [rule("high", limit=1), rule("high", limit=2)]},
     "rules: Value error, rule name 'high' is used twice"),
    ({"rules": [rule("anomaly", threshold=3, clear_threshold=3)]},
     "clear_threshold (3.0) must be below threshold (3.0)"),
    ({"rules": [{**rule("high", limit=1), "match": {"asset": "a/[ab]", "tag": "x"}}]},
     "rule 1 (high): match.asset: Value error, 'a/[ab]' is not a glob"),
    ({"rules": [rule("high", limit=1, severity="fatal")]},
     "rule 1 (high): severity: Input should be 'info', 'warning' or 'critical'"),
    ({"rule": []}, "rule: Extra inputs are not permitted"),
])
def test_invalid_rules_name_the_rule_and_field(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_rules(raw, "test.yaml")
    assert message in str(exc.value)
    assert str(exc.value).startswith("test.yaml: invalid rules:")


def test_rules_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read the rules file"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rules(bad)


def test_globs_match_whole_paths_and_one_or_many() -> None:
    (r,) = parse_rules({"rules": [{**rule("stale", timeout_s=1), "match": {
        "asset": ["acme/*/press??", "x"], "tag": "state"}}]})
    assert r.match.matches("acme/berlin/body/line1/press01", "state")
    assert not r.match.matches("acme/berlin/body/line1/press1", "state")
    assert not r.match.matches("acme/berlin/body/line1/press01", "states")
    assert r.match.matches("x", "state")


def test_sql_filter_escapes_like_and_quotes() -> None:
    rules = parse_rules({"rules": [
        {**rule("stale", timeout_s=1), "match": {"asset": "it's_100%/*", "tag": ["t?", "v"]}},
        {**rule("flatline", duration_s=1), "match": {"asset": "it's_100%/*", "tag": ["t?", "v"]}},
    ]})
    assert sql_filter(rules) == (
        "((asset LIKE 'it''s!_100!%/%' ESCAPE '!') AND (tag LIKE 't_' ESCAPE '!' OR tag = 'v'))")
    assert sql_filter([]) == "FALSE"


# -- high / low: on-delay, hysteresis, off-delay -------------------------------------------------

HIGH = rule("high", limit=80, hysteresis=5, on_delay_s=10)


def test_high_on_delay_and_hysteresis_exact_times() -> None:
    samples = series(0, [70] * 5 + [85] * 5 + [79] + [82] * 20 + [77] * 10 + [74] + [70] * 9)
    assert run(HIGH, samples) == [
        ("high", "RAISED", 21.0, 82, 80),  # 82 from :11, held 10 s; 79 at :10 reset the delay
        ("high", "CLEARED", 41.0, 74, 75),  # 77 is inside the hysteresis band
    ]


def test_on_delay_deadline_is_exact_between_samples_and_from_a_timer() -> None:
    # samples every 4 s: above from :00, so the 10 s are up at :10, between two samples
    samples = series(0, [90, 90, 90, 90, 70], step_s=4)
    assert run(HIGH, samples) == [("high", "RAISED", 10.0, 90, 80),
                                  ("high", "CLEARED", 16.0, 70, 75)]
    assert run(HIGH, samples, watermarks=True) == run(HIGH, samples)
    # no later sample at all: only event time (the watermark) fires it
    assert run(HIGH, [(0, 90)], until_s=9.999) == []
    assert run(HIGH, [(0, 90)], until_s=10) == [("high", "RAISED", 10.0, 90, 80)]


def test_a_sample_exactly_at_the_deadline_can_still_cancel_it() -> None:
    assert run(HIGH, [(0, 90), (10, 80)], until_s=100) == []
    assert run(HIGH, [(0, 90), (10, 81)]) == [("high", "RAISED", 10.0, 81, 80)]


def test_flapping_around_the_limit_raises_once() -> None:
    samples = series(0, [82] * 12 + [78, 83, 76, 81] * 12 + [70] + [79, 81] * 15 + [70])
    assert run(HIGH, samples) == [("high", "RAISED", 10.0, 82, 80),
                                  ("high", "CLEARED", 60.0, 70, 75)]


def test_flapping_without_hysteresis_or_delay_is_what_the_rule_asks_for() -> None:
    bare = rule("high", limit=80)
    assert [s for _, s, *_ in run(bare, series(0, [81, 79, 81, 79]))] == [
        "RAISED", "CLEARED", "RAISED", "CLEARED"]
    # the value exactly on the limit neither raises nor clears
    assert run(bare, series(0, [80, 81, 80, 80])) == [("high", "RAISED", 1.0, 81, 80)]


def test_off_delay_holds_the_alert_until_the_value_stays_back() -> None:
    r = rule("high", limit=80, hysteresis=5, off_delay_s=5)
    samples = series(0, [90, 70, 70, 90, 70, 70, 70, 70, 70, 70, 70])
    assert run(r, samples) == [("high", "RAISED", 0.0, 90, 80),
                               ("high", "CLEARED", 9.0, 70, 75)]


def test_low_mirrors_high() -> None:
    r = rule("low", limit=10, hysteresis=2, on_delay_s=2)
    assert run(r, series(0, [15, 9, 9, 9, 11, 12, 13])) == [
        ("low", "RAISED", 3.0, 9, 10), ("low", "CLEARED", 6.0, 13, 12)]


def test_bad_and_missing_values_do_not_touch_a_limit() -> None:
    samples = [(0, 90), (3, None, "BAD"), (6, 50, "UNCERTAIN"), (8, 90)]
    assert run(HIGH, samples) == []
    assert run(HIGH, samples, until_s=10) == [("high", "RAISED", 10.0, 90, 80)]


# -- rate ------------------------------------------------------------------------------------------


def test_rate_of_change_between_good_samples() -> None:
    r = rule("rate", limit=2.0, hysteresis=0.5)
    samples = [(0, 10), (1, 11), (2, 14), (3, 20), (4, 21.6), (5, 22.0), (5.5, 22.1),
               (6, 0, "BAD"), (8, 22.1)]
    assert run(r, samples) == [
        ("rate", "RAISED", 2.0, 3.0, 2.0),  # 11 -> 14 in 1 s
        ("rate", "CLEARED", 5.0, pytest.approx(0.4), 1.5),  # 1.6/s is inside the band
    ]


def test_rate_direction() -> None:
    samples = series(0, [10, 20, 10])
    assert run(rule("rate", limit=5, direction="rising"), samples) == [
        ("rate", "RAISED", 1.0, 10.0, 5), ("rate", "CLEARED", 2.0, -10.0, 5)]
    assert run(rule("rate", limit=5, direction="falling"), samples) == [
        ("rate", "RAISED", 2.0, -10.0, 5)]


# -- flatline ----------------------------------------------------------------------------------


def test_flatline_while_readings_keep_coming() -> None:
    r = rule("flatline", duration_s=5, epsilon=0.05)
    samples = series(0, [1.0, 1.2, 1.21, 1.19, 1.24, 1.2, 1.22, 1.23, 1.5, 1.6])
    assert run(r, samples) == [
        ("flatline", "RAISED", 6.0, 1.2, 5),  # within 0.05 of 1.2 since :01
        ("flatline", "CLEARED", 8.0, 1.5, 5),
    ]


def test_flatline_ignores_bad_samples_and_needs_no_timer() -> None:
    r = rule("flatline", duration_s=5)
    samples = [(0, 3.0), (2, None, "BAD"), (4, 3.0)]
    assert run(r, samples, until_s=100) == []
    assert run(r, [*samples, (5, 3.0)]) == [("flatline", "RAISED", 5.0, 3.0, 5)]


# -- stale -------------------------------------------------------------------------------------


STALE = rule("stale", timeout_s=20)


def test_stale_fires_on_silence_and_clears_on_data() -> None:
    samples = [*series(0, [1] * 11), *series(60, [1] * 6)]
    expected = [("stale", "RAISED", 30.0, None, 20), ("stale", "CLEARED", 60.0, 1, 20),
                ("stale", "RAISED", 85.0, None, 20)]
    assert run(STALE, samples, until_s=200) == expected
    assert run(STALE, samples, until_s=200, watermarks=True) == expected
    assert run(STALE, samples, until_s=84.999) == expected[:2]


def test_stale_counts_any_quality_and_a_reading_at_the_deadline_is_in_time() -> None:
    assert run(STALE, [(0, None, "BAD"), (20, None, "BAD")], until_s=39.9) == []


def test_only_the_earliest_deadline_is_a_timer() -> None:
    monitor = Monitor(parse_rules({"rules": [STALE, HIGH | {"name": "high"}]}))
    ks = KeyState("a/b", "x")
    monitor.on_reading(ks, T, 90, "GOOD")
    assert monitor.deadline(ks) == T + 10_000  # the on-delay before the 20 s timeout
    monitor.on_reading(ks, T + 1000, 70, "GOOD")
    assert monitor.deadline(ks) == T + 21_000
    assert monitor.on_time(ks, T + 21_000)[0].status == "RAISED"
    assert monitor.deadline(ks) is None


# -- bad quality -------------------------------------------------------------------------------


def test_bad_quality_needs_its_on_delay() -> None:
    r = rule("bad_quality", on_delay_s=5)
    samples = [(s, None if (3 <= s < 7 or 10 <= s < 20) else 1,
                "BAD" if (3 <= s < 7 or 10 <= s < 20) else "GOOD") for s in range(25)]
    assert run(r, samples) == [("bad_quality", "RAISED", 15.0, None, None),
                               ("bad_quality", "CLEARED", 20.0, 1, None)]


def test_uncertain_counts_only_when_asked() -> None:
    samples = [(0, 1, "UNCERTAIN"), (1, 1, "GOOD")]
    assert run(rule("bad_quality"), samples) == []
    assert [s for _, s, *_ in run(rule("bad_quality", qualities=["BAD", "UNCERTAIN"]),
                                  samples)] == ["RAISED", "CLEARED"]


# -- anomaly -----------------------------------------------------------------------------------

ANOMALY = rule("anomaly", min_std=0.02, min_value=1.0)
VIB_HIGH = {**rule("high", limit=7.1, hysteresis=0.5, on_delay_s=5), "name": "hard"}


def noise(n: int, seed: int = 7, level: float = 2.2) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0, 0.08) for _ in range(n)]


def creep(seed: int = 7) -> list[float]:
    """300 s at 2.2 mm/s, then +6 mm/s (quadratic) over 240 s, as a wearing bearing."""
    rng = random.Random(seed + 1)
    return noise(300, seed) + [2.2 + 6.0 * (i / 240) ** 2 + rng.gauss(0, 0.08)
                               for i in range(241)]


def first(alerts: list[tuple], name: str, status: str = "RAISED") -> float:
    return next(a[2] for a in alerts if a[0] == name and a[1] == status)


@pytest.mark.parametrize("seed", range(5))
def test_anomaly_fires_on_a_creep_long_before_the_hard_limit(seed: int) -> None:
    alerts = run([ANOMALY, VIB_HIGH], series(0, creep(seed)))
    anomaly, hard = first(alerts, "anomaly"), first(alerts, "hard")
    assert 300 < anomaly < 380  # within 80 s of the creep's start (+0.4 mm/s by then)
    assert 510 < hard
    assert [a[:2] for a in alerts] == [("anomaly", "RAISED"), ("hard", "RAISED")]


@pytest.mark.parametrize("seed", range(5))
def test_anomaly_is_quiet_on_stationary_noise(seed: int) -> None:
    assert run(ANOMALY, series(0, noise(3600, seed))) == []


def test_anomaly_warm_up_gating_and_clearing() -> None:
    r = {**ANOMALY, "warmup_samples": 50}
    # a step during warm-up is learned, not raised
    assert run(r, series(0, noise(20) + noise(200, 8, level=3.0))) == []
    # a stopped machine (below min_value) is neither scored nor learned: the alert stays
    # raised through the stop and clears once running normally again, when the fast average
    # (smoothing 0.2) has come back within 2 of its noise
    samples = series(0, noise(200) + [4.0] * 10 + [0.2] * 100 + noise(30, 9))
    alerts = run(r, samples)
    assert [(a[1], a[2]) for a in alerts] == [("RAISED", 204.0), ("CLEARED", 318.0)]
    # samples are winsorized at the threshold: a glitch or two are not an anomaly, a run of them is
    assert run(r, series(0, [*noise(200), 9.0, 9.0, *noise(50, 9)])) == []
    assert [a[1] for a in run(r, series(0, [*noise(200), *[9.0] * 5, *noise(50, 9)]))] == [
        "RAISED", "CLEARED"]


def test_anomaly_direction_low() -> None:
    r = {**ANOMALY, "direction": "low", "min_value": None}
    alerts = run(r, series(0, noise(200) + [1.5] * 5 + noise(50, 9)))
    assert [(a[1], a[2]) for a in alerts] == [("RAISED", 203.0), ("CLEARED", 209.0)]


def test_anomaly_fires_before_the_simulated_bearing_failures() -> None:
    """Every bearing failure of the simulated presses in two hours (seed 0) is announced by
    the anomaly rule at least two minutes before the machine stops, and long before the hard
    limit; no anomaly is raised outside a failure's precursor."""
    plant = load_plant()
    found = 0
    for name in ("press01", "press02"):
        model = MachineModel(plant.machines[name], plant.failure_modes, seed=0)
        alerts = run([ANOMALY, VIB_HIGH], [(s, model.sample(s)["vibration"])
                                           for s in range(7200)])
        precursors = [(ph.creep_start_s, ph.creep_end_s)
                      for ph in model.phases_until(7200) if ph.creep_mm_s > 0
                      and ph.state == StateCode.RUNNING and ph.creep_end_s < 7200]
        raised = [a[2] for a in alerts if a[0] == "anomaly" and a[1] == "RAISED"]
        assert all(any(s <= t <= e for s, e in precursors) for t in raised), (name, raised)
        for start, end in precursors:
            anomaly = [t for t in raised if start <= t <= end]
            hard = [a[2] for a in alerts if a[0] == "hard" and a[1] == "RAISED"
                    and start <= a[2] <= end]
            assert anomaly, (name, start, end)
            if end - start == 240:  # bearing wear: +6 mm/s, crosses the hard limit
                found += 1
                assert anomaly[0] < end - 120 and hard and anomaly[0] < hard[0] - 100
    assert found >= 2


# -- per asset + tag ---------------------------------------------------------------------------


def test_an_older_sample_than_the_last_is_skipped() -> None:
    assert run(rule("high", limit=80), [(5, 70), (3, 90), (6, 70)]) == []


def test_one_monitor_runs_every_matching_rule_on_a_tag() -> None:
    rules = [HIGH | {"name": "h"}, STALE | {"name": "s"},
             {**rule("low", limit=0), "match": {"asset": "other/*", "tag": "x"}}]
    monitor = Monitor(parse_rules({"rules": rules}))
    assert [d.rule.name for d in monitor.detectors("a/b", "x")] == ["h", "s"]
    assert monitor.detectors("a/b", "y") == []
    ks = KeyState("a/b", "x")
    alerts = monitor.on_reading(ks, T, 90, "GOOD", "degC") + monitor.on_time(ks, T + 60_000)
    assert [(a.key, a.status, a.event_ts - T, a.raised_ts - T) for a in alerts] == [
        ("a/b|x|h", "RAISED", 10_000, 10_000), ("a/b|x|s", "RAISED", 20_000, 20_000)]
    assert alerts[0].message == "90 degC > 80 for 10 s"


def test_state_survives_a_restart_with_changed_rules() -> None:
    ks = KeyState("a/b", "x")
    Monitor(parse_rules({"rules": [rule("high", limit=80), STALE]})).on_reading(
        ks, T, 90, "GOOD")
    assert set(ks.rules) == {("high", "high"), ("stale", "stale")}
    # "high" is now a low rule, "stale" is gone: fresh state, no alert from the old episode
    monitor = Monitor(parse_rules({"rules": [{**rule("low", limit=0), "name": "high"}]}))
    assert monitor.on_reading(ks, T + 1000, 50, "GOOD") == []
    assert set(ks.rules) == {("high", "low")}
    assert [a.status for a in monitor.on_reading(ks, T + 2000, -1, "GOOD")] == ["RAISED"]


def test_submit_checks_the_rules_file_first_and_names_it_in_one_line(tmp_path) -> None:
    """`otbridge jobs submit conditions --rules FILE` stops before the Flink client starts."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"rules": [rule("high", hysteresis=1)]}))
    proc = subprocess.run(
        [sys.executable, "-m", "otbridge.cli", "jobs", "submit", "conditions", "--rules",
         broken.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        f"otbridge: error: {broken}: invalid rules: rule 1 (high): limit: Field required\n"
    )
