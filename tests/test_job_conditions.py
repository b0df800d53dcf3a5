"""jobs/conditions on the real Flink cluster: exact alert transitions, one job for every case."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import datetime, timedelta

import kafkahelp as kh
import pytest
import yaml
from kafkahelp import at, reading

from jobs.conditions.detectors import KeyState, Monitor
from jobs.conditions.rules import parse_rules
from otbridge import jobs
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings
from simulators.core.model import MachineModel
from simulators.core.plant import load_plant

PLANT = "acme/test/cond"
ONDELAY, FLAP, LATCH, STALE, SILENT, QUALITY, CREEP, SIM = (
    f"{PLANT}/{m}" for m in
    ("ondelay", "flap", "latch", "stale1", "stale2", "quality", "creep", "press")
)
T0 = at(10, 0)

RULES = {"rules": [
    {"name": "temp-high", "match": {"asset": f"{PLANT}/*", "tag": "temperature"},
     "kind": "high", "severity": "warning", "limit": 80, "hysteresis": 5, "on_delay_s": 10},
    {"name": "no-data", "match": {"asset": f"{PLANT}/stale*", "tag": "state"},
     "kind": "stale", "severity": "critical", "timeout_s": 20},
    {"name": "bad-quality", "match": {"asset": f"{PLANT}/*", "tag": "state"},
     "kind": "bad_quality", "on_delay_s": 5},
    {"name": "vib-anomaly", "match": {"asset": f"{PLANT}/*", "tag": "vibration"},
     "kind": "anomaly", "min_std": 0.02, "min_value": 1.0},
    {"name": "vib-high", "match": {"asset": f"{PLANT}/*", "tag": "vibration"},
     "kind": "high", "severity": "critical", "limit": 7.1, "hysteresis": 0.5, "on_delay_s": 5},
]}


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ms(seconds: float) -> int:
    return kh.ms(t(seconds))


class Input:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def add(self, asset: str, tag: str, sec: float, value: float | None,
            quality: str = "GOOD") -> None:
        self.records.append(reading(asset, tag, value, t(sec), seq=len(self.records),
                                    quality=quality, unit="degC" if tag == "temperature"
                                    else "mm/s" if tag == "vibration" else None))

    def series(self, asset: str, tag: str, start: int, values: list[float]) -> None:
        for i, v in enumerate(values):
            self.add(asset, tag, start + i, v)


def creep_vibration() -> list[float]:
    """300 s at 2.2 mm/s, then a bearing's creep: +6 mm/s (quadratic) over 240 s."""
    noise = random.Random(7)
    out = [2.2 + noise.gauss(0, 0.08) for _ in range(300)]
    out += [2.2 + 6.0 * (i / 240) ** 2 + noise.gauss(0, 0.08) for i in range(241)]
    return out


def simulated_press() -> tuple[list[float], float]:
    """press01's vibration (seed 0, 1 s samples) up to its first bearing failure, which
    stops the machine at the returned second."""
    plant = load_plant()
    model = MachineModel(plant.machines["press01"], plant.failure_modes, seed=0)
    fail_s = next(s for s, state, mode in model.state_changes(3600) if mode == 1)
    return [float(model.sample(i)["vibration"]) for i in range(int(fail_s) + 30)], fail_s


def plant_input() -> Input:
    p = Input()
    # on-delay + hysteresis: 5 s above 80 is not enough; 82 from :11 raises at :21;
    # 77 (inside the 75..80 band) keeps it; 74 at :41 clears it
    p.series(ONDELAY, "temperature", 0, [70] * 5 + [85] * 5 + [79] + [82] * 20 + [77] * 10
             + [74] + [70] * 9)
    # flapping: above 80 from :00 raises at :10; 78/83/76/81 around the limit (never below
    # 75) keep one episode; 70 at 1:00 clears; then 79/81 every second never holds 10 s
    p.series(FLAP, "temperature", 0, [82] * 12 + [78, 83, 76, 81] * 12 + [70]
             + [79, 81] * 15 + [70])
    # on-delay fired by the event-time timer: one reading, then only other assets' readings
    p.add(LATCH, "temperature", 0, 95)
    # stale: silent from :10 to 1:00 (raised at :30, cleared at 1:00), silent again after 1:05
    for s in [*range(0, 11), *range(60, 66)]:
        p.add(STALE, "state", s, 1)
    # stale and never back: raised at :25 by the watermark alone
    for s in range(0, 6):
        p.add(SILENT, "state", s, 1)
    # bad quality: BAD from :03 for 4 s (too short), BAD from :10 (raised at :15), GOOD at :20
    for s in range(0, 25):
        bad = 3 <= s < 7 or 10 <= s < 20
        p.add(QUALITY, "state", s, None if bad else 1, "BAD" if bad else "GOOD")
    p.series(CREEP, "vibration", 0, creep_vibration())
    p.series(SIM, "vibration", 0, simulated_press()[0])
    return p


def expected_by_monitor(records: list[dict], asset: str) -> list[tuple]:
    """What the pure state machines say about one asset's readings (in event time order)."""
    monitor, states, out = Monitor(parse_rules(RULES)), {}, []
    for r in sorted((r for r in records if r["asset"] == asset), key=lambda r: r["source_ts"]):
        ks = states.setdefault(r["tag"], KeyState(r["asset"], r["tag"]))
        out += monitor.on_reading(ks, r["source_ts"], r["value"], r["quality"], r["unit"])
    return [(a.rule, a.status, a.event_ts, a.raised_ts, a.value, a.threshold) for a in out]


@pytest.fixture(scope="module")
def alerts(live_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    settings, unique = live_stack, uuid.uuid4().hex[:10]
    rules_file = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(RULES))
    topics = {r: f"test.{r}.{unique}" for r in ("readings", "alerts", "dlq")}
    # the test day is long past: keep the broker's time-based retention off the input
    ensure_topics(settings, [TopicSpec(x, partitions=1, config={"retention.ms": "-1"})
                             for x in topics.values()])
    records = plant_input().records
    # a much later reading of an unwatched asset moves event time past every deadline
    clock = reading(f"{PLANT}-clock/x", "tick", 1.0, t(3600), seq=99_999)
    kh.produce(settings, topics["readings"], "Reading",
               [*sorted(records, key=lambda r: r["source_ts"]), clock])
    expected = {
        ONDELAY: 2, FLAP: 2, LATCH: 1, STALE: 3, SILENT: 1, QUALITY: 2,
        **{a: len(expected_by_monitor(records, a)) for a in (CREEP, SIM)},
    }
    job_id = jobs.submit(settings, "conditions", job_args=[
        f"--name-suffix=-{unique}", f"--rules={rules_file}",
        *(f"--topic={r}={x}" for r, x in topics.items())])
    try:
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
        rows = kh.consume(settings, topics["alerts"], sum(expected.values()), timeout_s=120,
                          settle_s=10)
    finally:
        jobs.cancel(settings, job_id)
    out: dict[str, list] = {}
    for key, value, _ in rows:
        assert key.decode() == f"{value['asset']}|{value['tag']}|{value['rule']}"
        out.setdefault(value["asset"], []).append(value)
    return {"by_asset": out, "records": records, "expected_counts": expected}


def transitions(alerts: dict, asset: str) -> list[tuple]:
    return [(a["rule"], a["status"], a["event_ts"], a["raised_ts"], a["value"], a["threshold"])
            for a in alerts["by_asset"].get(asset, [])]


def test_nothing_missing_nothing_extra(alerts) -> None:
    got = Counter({a: len(v) for a, v in alerts["by_asset"].items()})
    assert got == Counter(alerts["expected_counts"])


def test_on_delay_and_hysteresis_exact_times(alerts) -> None:
    assert transitions(alerts, ONDELAY) == [
        ("temp-high", "RAISED", t(21), t(21), 82.0, 80.0),
        ("temp-high", "CLEARED", t(41), t(21), 74.0, 75.0),
    ]
    raised = alerts["by_asset"][ONDELAY][0]
    assert (raised["kind"], raised["severity"], raised["tag"]) == ("high", "warning", "temperature")
    assert raised["message"] == "82 degC > 80 for 10 s"


def test_flapping_value_raises_once(alerts) -> None:
    assert transitions(alerts, FLAP) == [
        ("temp-high", "RAISED", t(10), t(10), 82.0, 80.0),
        ("temp-high", "CLEARED", t(60), t(10), 70.0, 75.0),
    ]


def test_on_delay_fires_from_the_watermark_without_another_sample(alerts) -> None:
    assert transitions(alerts, LATCH) == [("temp-high", "RAISED", t(10), t(10), 95.0, 80.0)]


def test_stale_fires_on_silence_and_clears_on_data(alerts) -> None:
    assert transitions(alerts, STALE) == [
        ("no-data", "RAISED", t(30), t(30), None, 20.0),
        ("no-data", "CLEARED", t(60), t(30), 1.0, 20.0),
        ("no-data", "RAISED", t(85), t(85), None, 20.0),
    ]
    assert transitions(alerts, SILENT) == [("no-data", "RAISED", t(25), t(25), None, 20.0)]


def test_bad_quality_needs_its_on_delay(alerts) -> None:
    assert transitions(alerts, QUALITY) == [
        ("bad-quality", "RAISED", t(15), t(15), None, None),
        ("bad-quality", "CLEARED", t(20), t(15), 1.0, None),
    ]


def _first(rows: list[tuple], rule: str) -> datetime:
    return next(r[2] for r in rows if r[0] == rule and r[1] == "RAISED")


def test_anomaly_fires_on_vibration_creep_long_before_the_hard_limit(alerts) -> None:
    got = transitions(alerts, CREEP)
    expected = [(rule, status, datetime.fromtimestamp(ts / 1000, T0.tzinfo),
                 datetime.fromtimestamp(rts / 1000, T0.tzinfo), v, th)
                for rule, status, ts, rts, v, th in expected_by_monitor(alerts["records"], CREEP)]
    assert got == expected
    anomaly, hard = _first(got, "vib-anomaly"), _first(got, "vib-high")
    assert t(300) < anomaly < hard - timedelta(seconds=120)


def test_anomaly_fires_before_the_simulated_bearing_failure(alerts) -> None:
    got = transitions(alerts, SIM)
    _, fail_s = simulated_press()
    anomaly = _first(got, "vib-anomaly")
    hard = _first(got, "vib-high")
    # bearing wear: the creep starts 240 s before the machine stops
    assert t(fail_s - 240) < anomaly < t(fail_s - 120) < hard < t(fail_s)
    assert [(r[0], r[1], kh.ms(r[2])) for r in got] == [
        (r[0], r[1], r[2]) for r in expected_by_monitor(alerts["records"], SIM)]
