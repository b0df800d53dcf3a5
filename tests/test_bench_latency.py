"""`otbridge bench latency memory --quick` against the live stack: correct, not fast.

Speed is what the bench reports; these tests hold it to measuring the right thing: every
scheduled alert arrives exactly as planned, the percentiles are real numbers in order, every
part of the demo is counted, and nothing the stages started is left running.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest

from bench import QUICK_READINGS
from bench.common import Context, Target, offline_reading_encoder
from bench.demo import DEMO_PARTS, TARGET_FIRST_OEE_S, stage_demo
from bench.latency import (
    HOLD_S,
    MAX_STEPS,
    QUICK_SECONDS,
    QUICK_WARMUP_S,
    SEARCH_P99_MS,
    TRIGGER_RULE,
    Step,
    capacity,
    highest_rate,
    next_step,
    percentile,
    rules_yaml,
    schedule,
    stage_latency,
)
from bench.memory import TARGET_GIB, stage_memory
from jobs.conditions.rules import parse_rules
from otbridge import jobs
from otbridge.codec.avro import Series
from otbridge.codec.wire import WireDecoder
from otbridge.registry import schema_json, schema_text
from otbridge.settings import Settings


def test_load_generator_encoder_writes_readings_the_jobs_decode() -> None:
    """The load generator has no registry client: its encoder takes the id the parent
    registered, and what it writes decodes (as a job decodes it) to the reading it meant."""
    enc = offline_reading_encoder(42)
    decoder = WireDecoder(schema_json("Reading"),
                          lambda sid: schema_text("Reading") if sid == 42 else None)
    cases = [("acme/berlin/body/line1/press0001", "temperature", 47.25, "degC", 1_795_325_539_078,
              0), ("a", "state", -1.5, None, 0, 2**40), ("ä/x", "t", 1e300, "mm/s", -5, 127)]
    for asset, tag, value, unit, ts, seq in cases:
        raw = enc.encode(Series.of(asset, tag, unit, "bench://latency"), value, None, "GOOD",
                         ts, ts, seq, "bench-latency")
        assert raw[:5] == b"\x00\x00\x00\x00\x2a"
        rec = decoder.decode(raw).record
        assert rec is not None
        assert {k: v for k, v in rec.items() if not k.endswith("_ts")} == {
            "asset": asset, "tag": tag, "value": value, "text": None, "unit": unit,
            "quality": "GOOD", "source": "bench://latency", "seq": seq,
            "connector": "bench-latency"}
        assert round(rec["source_ts"].timestamp() * 1000) == ts


def test_schedule_raises_and_clears_each_episode_without_overlap() -> None:
    plan = schedule(5, 20)
    assert plan[0][0] == 5 and plan[-1][0] < 5 + 20
    assert Counter(v for _, _, v in plan) == {1.0: len(plan) // 2, 0.0: len(plan) // 2}
    last: dict[int, float] = {}
    for _, asset, value in plan:  # per asset: up, down, up, down ...
        assert last.get(asset, 0.0) != value
        last[asset] = value
    ups = [t for t, _, v in plan if v == 1.0]
    downs = [t for t, _, v in plan if v == 0.0]
    assert all(d - u == HOLD_S for u, d in zip(ups, downs, strict=True))


def test_bench_rules_are_the_plants_plus_a_trigger_without_delay() -> None:
    rules = {r.name: r for r in parse_rules(rules_yaml())}
    trigger = rules.pop(TRIGGER_RULE)
    assert trigger.kind == "high"
    assert trigger.on_delay_s == 0 and trigger.off_delay_s == 0 and trigger.hysteresis == 0
    assert "vibration-high" in rules and "no-data" in rules


def test_percentile_is_nearest_rank() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert math.isnan(percentile([], 50))


def _step(rate: float, sustained: bool, read: float | None = None, *, p99_ms: float = 50,
          made: float | None = None) -> Step:
    """A finished run; one that fell behind got through `read` readings/s, so its latency grew
    by rate / read - 1 per second; its generator made `made` readings/s (default: the rate)."""
    step = Step(rate=rate, seconds=60, warmup_s=10, expected=120, seen=120,
                achieved=rate if made is None else made)
    slope = rate / read - 1 if read else 0.0
    step.trigger_ts = [1_000_000 + 500 * i for i in range(120)]
    step.latencies_ms = [p99_ms + slope * (ts - 1_000_000) for ts in step.trigger_ts]
    step.late_minus_early_ms = step.latencies_ms[-1] - step.latencies_ms[0]
    assert step.sustained == sustained
    return step


def test_full_mode_searches_for_the_highest_rate_within_the_p99_bound() -> None:
    # every rate holds: double it, until a step does not hold or the steps run out
    assert next_step([_step(10_000, True)]) == 20_000
    steps = [_step(10_000, True), _step(20_000, True), _step(40_000, False, read=30_000)]
    assert next_step(steps) == 30_000  # then halfway between what held and what did not
    steps.append(_step(30_000, True, p99_ms=SEARCH_P99_MS + 1))  # kept up, but p99 too high
    assert next_step(steps) == 25_000
    steps.append(_step(25_000, True))
    assert len(steps) == MAX_STEPS and next_step(steps) is None
    assert highest_rate(steps).value == 25_000
    assert "lowest that did not hold: 30,000/s" in highest_rate(steps).note
    # the generator fell short: a higher rate would measure the generator, not the job
    assert next_step([_step(10_000, True), _step(20_000, True, made=15_000)]) is None
    # the full rate does not hold: down from what the job got through, then halfway up
    steps = [_step(10_000, False, read=2_169)]
    assert capacity(steps[0]) == pytest.approx(2_169)
    assert next_step(steps) == 1_750  # 85% of what the job got through while behind
    steps.append(_step(1_750, True))
    assert next_step(steps) == 5_750
    assert next_step([_step(10_000, False, 4_000), _step(3_250, True),
                      _step(3_750, False, 3_600)]) is None  # within the search's resolution
    assert next_step([_step(10_000, False, 9_000)]) == 7_000  # at most 70% of the last rate
    assert math.isnan(highest_rate([_step(10_000, False, 4_000)]).value)


def _left_running(settings: Settings, marker: str) -> list[str]:
    return [j["name"] for j in jobs.list_jobs(settings)
            if j["state"] not in jobs.TERMINAL and marker in j["name"]]


@pytest.mark.timeout(400)
def test_latency_quick_sees_every_alert_it_scheduled(live_stack: Settings) -> None:
    ctx = Context(live_stack, quick=True, readings=QUICK_READINGS)
    results = stage_latency(ctx)

    (step,) = ctx.shared.latency_steps
    # two alerts per episode, one episode every EPISODE_EVERY_S of the measured period
    assert step.expected == len(schedule(QUICK_WARMUP_S, QUICK_SECONDS)) > 20
    assert step.seen == step.expected and not step.missing_lower_bound_ms
    p50, p95, p99 = (step.pct(p) for p in (50, 95, 99))
    assert 0 < p50 <= p95 <= p99 < 60_000
    assert all(0 < ms for ms in step.latencies_ms)
    assert step.achieved > 0

    figures = {r.figure.split(" @ ")[0]: r for r in results}
    assert {"reading->alert p50", "reading->alert p95", "reading->alert p99",
            "load achieved", "alerts seen"} <= set(figures)
    seen = figures["alerts seen"]
    assert seen.value == step.expected and seen.target == Target("=", step.expected, "")
    assert seen.met is True
    load = figures["load achieved"]
    assert load.value == round(step.achieved) and load.target is not None
    assert load.met is (load.value >= load.target.value)
    p99_row = figures["reading->alert p99"]
    assert p99_row.value == pytest.approx(round(p99, 1))
    assert p99_row.target is None and p99_row.met is None  # the p99 target is the full rate's
    for key in ("parallelism", "execution.buffer-timeout.interval",
                "execution.checkpointing.interval", "load_producer_linger_ms"):
        assert key in p99_row.settings
    assert _left_running(live_stack, "-bench-lat-") == []


@pytest.mark.timeout(400)
def test_demo_and_memory_quick_time_the_real_demo_and_count_every_part(
        live_stack: Settings) -> None:
    """One headless `otbridge demo` on a stack of its own, for both stages: the first OEE
    figure is timed from the command, the Flink client planned all three jobs, every part is
    in the memory figure, and nothing it started is left running."""
    ctx = Context(live_stack, quick=True, readings=QUICK_READINGS)
    demo_rows = stage_demo(ctx)
    (result,) = stage_memory(ctx)

    (run,) = ctx.shared.demo_runs  # one demo run measured both
    assert run.returncode == 0 and run.first_oee_s is not None, run
    assert 0 < run.first_oee_s < run.seconds, run
    assert run.jobs == 3 and run.client_cpu_s > 0 and run.client_s > 0, run
    first = next(r for r in demo_rows if r.figure.startswith("otbridge demo: command"))
    assert first.value == pytest.approx(round(run.first_oee_s, 1))
    assert first.target == Target("<=", TARGET_FIRST_OEE_S, "s")
    assert first.met is (first.value <= TARGET_FIRST_OEE_S)

    parts = run.at_peak
    stack_parts = {"kafka", "registry", "flink-jobmanager", "flink-taskmanager"}
    assert stack_parts | set(DEMO_PARTS) | {"demo-watcher"} <= set(run.largest), run
    assert "flink-client" in run.largest, run  # sampled while it planned the jobs
    assert all(p.rss > 10 * 2**20 and p.processes >= 1 for p in run.largest.values())
    assert result.value == pytest.approx(sum(p.rss for p in parts.values()) / 2**30, abs=0.01)
    assert result.unit == "GiB" and result.target == Target("<=", TARGET_GIB, "GiB")
    assert result.met is (result.value <= TARGET_GIB)
    # the note's per-part figures at the peak are the measured ones, and add up to the total
    listed = dict(re.findall(r"([a-z-]+) (\d+\.\d\d)", result.note.split(";")[0]))
    assert set(listed) == set(parts)
    for name, usage in parts.items():
        assert float(listed[name]) == pytest.approx(usage.rss / 2**30, abs=0.005), name
    assert sum(map(float, listed.values())) == pytest.approx(result.value, abs=0.05)

    # the simulators and connectors it started are gone, and so is its stack
    assert len(run.demo_pids) == len(DEMO_PARTS)
    assert set(run.pids.values()) == stack_parts | set(DEMO_PARTS)
    for pid in run.pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"

