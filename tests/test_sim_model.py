"""The simulators' behaviour model, plant file, register map codec, scenarios and faults
(no sockets here; the servers are tested in test_sim_modbus.py and test_sim_opcua.py)."""

from __future__ import annotations

import random
import statistics
import struct
from datetime import UTC

import pytest

from simulators.core.faults import Fault
from simulators.core.model import ChargePointModel, MachineModel
from simulators.core.plant import PLANT_FILE, EvStatus, PlantError, StateCode, load_plant
from simulators.core.runtime import ManualClock, PlantRuntime
from simulators.core.scenario import load_scenario, parse_scenario
from simulators.modbus.map import MAP_FILE, RegisterEntry, decode, encode, load_map


@pytest.fixture(scope="module")
def plant():
    return load_plant()


# -- plant file ---------------------------------------------------------------------------


def test_plant_file_has_the_isa95_assets_unit_ids_and_state_codes(plant):
    assert {n: m.asset for n, m in plant.machines.items()} == {
        "press01": "acme/berlin/body/line1/press01",
        "press02": "acme/berlin/body/line1/press02",
        "weld01": "acme/berlin/body/line2/weld01",
        "robot01": "acme/berlin/paint/line3/robot01",
        "oven01": "acme/berlin/paint/line3/oven01",
    }
    assert {n: c.asset for n, c in plant.charge_points.items()} == {
        "cp01": "acme/berlin/yard/ev/cp01",
        "cp02": "acme/berlin/yard/ev/cp02",
    }
    units = {n: s.unit_id for n, s in {**plant.machines, **plant.charge_points}.items()}
    assert {n: u for n, u in units.items() if u is not None} == {
        "press01": 1,
        "press02": 2,
        "weld01": 3,
        "cp01": 10,
        "cp02": 11,
    }
    assert plant.served_by("opcua") == ["robot01", "oven01"]
    assert {c: (s.name, s.category) for c, s in plant.state_codes.items()} == {
        1: ("RUNNING", "RUNNING"),
        2: ("IDLE", "UNPLANNED_STOP"),
        3: ("UNPLANNED_STOP", "UNPLANNED_STOP"),
        4: ("BLOCKED", "UNPLANNED_STOP"),
        5: ("SETUP", "PLANNED_STOP"),
        6: ("BREAK", "PLANNED_STOP"),
    }
    assert [int(c) for c in StateCode] == [1, 2, 3, 4, 5, 6]
    assert plant.ev_status_codes[int(EvStatus.CHARGING)] == "Charging"


# -- machine model ------------------------------------------------------------------------


def test_same_seed_same_values_in_any_order_and_another_seed_differs(plant):
    spec = plant.machines["press01"]
    times = [0.0, 0.5, 17.25, 333.3, 1200.0, 5000.0, 9999.9]
    forward = MachineModel(spec, plant.failure_modes, seed=42)
    backward = MachineModel(spec, plant.failure_modes, seed=42)
    a = [forward.sample(t) for t in times]
    b = [backward.sample(t) for t in reversed(times)][::-1]
    assert a == b
    other = MachineModel(spec, plant.failure_modes, seed=43)
    assert [other.sample(t) for t in times] != a
    assert forward.state_changes(10000) == MachineModel(
        spec, plant.failure_modes, seed=42
    ).state_changes(10000)


def test_phase_at_finds_the_same_phase_as_the_whole_history_in_any_order(plant):
    model = MachineModel(plant.machines["press01"], plant.failure_modes, seed=11)
    starts = [ph.start_s for ph in model.phases_until(6 * 3600)]
    rng = random.Random(5)
    times = [*starts[:200], *(rng.uniform(0, 6 * 3600) for _ in range(300))]
    times += [t + d for t in starts[:50] for d in (-1e-6, 1e-6)]
    for order in (sorted(times), sorted(times, reverse=True), times):  # forward, back, jumps
        for t in order:
            if t >= 0:
                assert model.phase_at(t) == model.phases_until(t)[-1], t
    cp = ChargePointModel(plant.charge_points["cp01"], seed=11)
    for t in sorted(rng.uniform(0, 6 * 3600) for _ in range(300)):
        ph = cp.phase_at(t)
        assert ph.start_s <= t < ph.end_s


def test_counters_and_meters_are_monotonic_and_count_only_while_running(plant):
    spec = plant.machines["press01"]
    model = MachineModel(spec, plant.failure_modes, seed=7)
    prev = model.sample(0.0)
    states = set()
    for i in range(1, 4 * 3600):
        cur = model.sample(float(i))
        states.add(cur["state"])
        for tag in ("count_total", "count_good", "run_seconds", "energy_total"):
            assert cur[tag] >= prev[tag], (i, tag)
        assert cur["count_good"] <= cur["count_total"]
        if prev["state"] != StateCode.RUNNING and cur["state"] != StateCode.RUNNING:
            assert cur["count_total"] == prev["count_total"], i  # a stop in between, no parts
        prev = cur
    assert states == {1, 2, 3, 4, 5, 6}  # every state shows up in four hours
    # parts = running time / cycle time
    assert abs(prev["count_total"] - prev["run_seconds"] / spec.cycle_time_s) <= 1
    assert 0.9 < prev["count_good"] / prev["count_total"] < 1.0


def _failures(model: MachineModel, mode: int, until_s: float) -> list[float]:
    return [
        t
        for t, state, fm in model.state_changes(until_s)
        if state == StateCode.UNPLANNED_STOP and fm == mode and t > 600
    ]


def _mean(model: MachineModel, tag: str, start: float, end: float) -> float:
    n = int((end - start) * 2)
    return statistics.fmean(float(model.sample(start + i / 2)[tag]) for i in range(n))


def test_vibration_creeps_up_before_a_bearing_failure_and_not_before_a_jam(plant):
    model = MachineModel(plant.machines["press01"], plant.failure_modes, seed=1)
    precursor = plant.failure_modes[1].precursor_s
    bearing = _failures(model, 1, 48 * 3600)
    jams = _failures(model, 3, 48 * 3600)
    assert bearing and jams
    for t_fail in bearing[:3]:
        before = model.phase_at(t_fail - 1)
        assert before.state == StateCode.RUNNING
        baseline = _mean(model, "vibration", t_fail - 1.2 * precursor, t_fail - precursor)
        windows = [
            _mean(
                model, "vibration", t_fail - precursor + k * 60, t_fail - precursor + (k + 1) * 60
            )
            for k in range(4)
        ]
        assert windows == sorted(windows)  # it keeps climbing ...
        last = _mean(model, "vibration", t_fail - 20, t_fail - 0.5)
        assert last > baseline + 4.0  # ... well above normal by the failure
        assert model.sample(t_fail + 30)["vibration"] < 1.0  # stopped: quiet
    for t_fail in jams[:3]:
        baseline = _mean(model, "vibration", t_fail - 60, t_fail - 40)
        assert _mean(model, "vibration", t_fail - 20, t_fail - 0.5) < baseline + 0.5


def test_temperature_lags_load_and_climbs_before_an_overheat(plant):
    spec = plant.machines["press01"]
    model = MachineModel(spec, plant.failure_modes, seed=1)
    p = spec.params
    # a RUNNING period after a long stop: temperature rises gradually, not in a step
    for t, state, _ in model.state_changes(24 * 3600):
        prev = model.phase_at(t - 1) if t > 0 else None
        long_stop = prev is not None and prev.end_s - prev.start_s > 200
        if state == StateCode.RUNNING and long_stop and model.phase_at(t).end_s - t > 150:
            start = t
            break
    temps = [model.sample(start + dt)["temperature"] for dt in (1, 30, 60, 120)]
    assert temps == sorted(temps)
    assert temps[-1] - temps[0] > 3.0
    assert temps[-1] < p.ambient_c + p.temperature_rise_c
    overheats = _failures(model, 4, 72 * 3600)
    assert overheats
    t_fail = overheats[0]
    assert model.sample(t_fail - 1)["temperature"] > p.ambient_c + p.temperature_rise_c + 10


def test_charge_point_sessions_integrate_power_into_energy(plant):
    cp = ChargePointModel(plant.charge_points["cp02"], seed=5)
    prev = cp.sample(0.0)
    assert prev["ambient_temperature"] < 0  # frosty night at t = 0: a negative int16 on the wire
    seen = set()
    integral = 0.0
    for i in range(1, 8 * 3600):
        cur = cp.sample(float(i))
        seen.add(cur["status"])
        assert cur["energy_total"] >= prev["energy_total"]
        integral += (prev["power"] + cur["power"]) / 2 / 3600
        assert cur["charging"] == (cur["status"] == EvStatus.CHARGING)
        assert cur["power"] <= 50.0
        prev = cur
    assert {EvStatus.AVAILABLE, EvStatus.PREPARING, EvStatus.CHARGING} <= seen
    assert prev["energy_total"] == pytest.approx(integral, rel=0.01)


# -- register map and codec -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "word_order", "byte_order", "value", "registers"),
    [
        ("float32", "big", "big", 2.25, [0x4010, 0x0000]),  # ABCD
        ("float32", "little", "big", 1480.5, [0x1000, 0x44B9]),  # CDAB
        ("float32", "big", "little", 3.5, [0x6040, 0x0000]),  # BADC
        ("float32", "little", "little", 12.5, [0x0000, 0x4841]),  # DCBA
        ("uint32", "big", "big", 70000, [0x0001, 0x1170]),
        ("uint32", "little", "big", 123456, [0xE240, 0x0001]),
        ("int32", "big", "big", -2, [0xFFFF, 0xFFFE]),
        ("int16", "big", "big", -125, [0xFF83]),
        ("uint16", "big", "little", 0x0102, [0x0201]),
        ("float64", "big", "big", 1.0, [0x3FF0, 0, 0, 0]),
        ("float64", "little", "big", 1.0, [0, 0, 0, 0x3FF0]),
    ],
)
def test_codec_puts_exact_words_on_the_wire(data_type, word_order, byte_order, value, registers):
    entry = RegisterEntry(
        tag="x",
        kind="holding",
        address=0,
        data_type=data_type,
        word_order=word_order,
        byte_order=byte_order,
    )
    assert encode(entry, value) == registers
    assert decode(entry, registers) == value
    if len(registers) > 1:
        swapped = encode(entry, value, swap_words=True)
        assert swapped != registers and sorted(swapped) == sorted(registers)


def test_codec_scales_saturates_and_decodes_exact_decimals():
    temp = RegisterEntry(tag="t", kind="holding", address=0, data_type="int16", scale=0.1)
    assert encode(temp, -4.1) == [struct.unpack(">H", struct.pack(">h", -41))[0]]
    assert decode(temp, encode(temp, -4.1)) == -4.1
    assert decode(temp, encode(temp, 41.5)) == 41.5
    assert decode(temp, encode(temp, 5000.0)) == 3276.7  # saturates like a PLC, no wrap
    wh = RegisterEntry(tag="e", kind="input", address=0, data_type="uint32", scale=0.001)
    assert encode(wh, 12.345) == [0, 12345]
    assert decode(wh, [0, 12345]) == 12.345
    offset = RegisterEntry(tag="o", kind="input", address=0, data_type="uint16", offset=-40)
    assert encode(offset, 21) == [61] and decode(offset, [61]) == 21


def test_published_map_matches_the_plant_and_covers_every_encoding(plant):
    mmap = load_map(MAP_FILE, plant)
    assert sorted(mmap.units) == [1, 2, 3, 10, 11]
    entries = [e for u in mmap.units.values() for e in u.entries]
    floats = {(e.word_order, e.byte_order) for e in entries if e.data_type == "float32"}
    assert {("big", "big"), ("little", "big"), ("big", "little"), ("little", "little")} <= floats
    kinds = {(e.data_type, e.scale != 1) for e in entries}
    assert {("int16", True), ("uint32", False), ("int32", False), ("float64", False)} <= kinds
    assert {e.tag for e in entries if e.data_type == "uint32"} >= {"count_total", "count_good"}
    assert {e.kind for e in entries} == {"holding", "input", "coil", "discrete"}
    assert mmap.units[1].entry("temperature").scale == 0.1
    assert mmap.units[10].entry("ambient_temperature").data_type == "int16"


def test_map_that_disagrees_with_the_plant_is_refused(plant, tmp_path):
    bad = tmp_path / "map.yaml"
    bad.write_text(MAP_FILE.read_text().replace("unit_id: 3\n", "unit_id: 4\n"))
    with pytest.raises(PlantError, match="weld01 is served as modbus unit 3"):
        load_map(bad, plant)
    overlap = tmp_path / "overlap.yaml"
    overlap.write_text(
        MAP_FILE.read_text().replace(
            "{tag: vibration, kind: holding, address: 7,",
            "{tag: vibration, kind: holding, address: 6,",
        )
    )
    with pytest.raises(PlantError, match="overlaps temperature"):
        load_map(overlap, plant)


# -- scenario, pins and faults ----------------------------------------------------------------


def test_scenario_holds_exact_values_and_derives_flags(plant):
    scenario = parse_scenario(
        {
            "steps": [
                {"at_s": 0, "machine": "press01", "set": {"state": 1, "temperature": 41.5}},
                {"at_s": 10, "machine": "press01", "set": {"state": 3, "failure_mode": 1}},
                {"at_s": 20, "machine": "acme/berlin/body/line1/press01", "set": {"state": 1}},
                {"at_s": 20, "machine": "press01", "set": {"failure_mode": 0}},
            ]
        },
        plant,
    )
    clock = ManualClock()
    rt = PlantRuntime(plant, scenario=scenario, clock=clock)
    s = rt.sample("press01")
    assert s.values["state"] == 1 and s.values["running"] is True
    assert s.values["temperature"] == 41.5 and s.values["count_total"] == 0
    assert s.timestamp.tzinfo is UTC
    clock.t_s = 15
    s = rt.sample("press01")
    assert (s.values["state"], s.values["alarm"], s.values["failure_mode_name"]) == (
        3,
        True,
        "bearing_wear",
    )
    clock.t_s = 25
    assert rt.sample("press01").values["alarm"] is False
    assert rt.sample("press02").values["state"] == StateCode.IDLE  # never scripted


def test_scenario_mistakes_name_the_bad_value(plant):
    with pytest.raises(PlantError, match=r"unknown tag 'temp'.*temperature"):
        parse_scenario({"steps": [{"machine": "press01", "set": {"temp": 1}}]}, plant)
    with pytest.raises(PlantError, match="state 9 is not a state code"):
        parse_scenario({"steps": [{"machine": "press01", "set": {"state": 9}}]}, plant)
    with pytest.raises(PlantError, match="unknown machine 'press09'"):
        parse_scenario({"steps": [{"machine": "press09", "set": {"state": 1}}]}, plant)
    with pytest.raises(PlantError, match="bad_status 'BadThing' is not one of"):
        parse_scenario(
            {"steps": [{"machine": "robot01", "fault": {"bad_status": "BadThing"}}]}, plant
        )


def test_stuck_fault_freezes_values_where_the_fault_began(plant):
    clock = ManualClock(100.0)
    rt = PlantRuntime(plant, seed=3, clock=clock)
    rt.set_fault("press01", Fault(stuck=("temperature", "count_total")))
    frozen = rt.sample("press01").values
    clock.advance(600)
    later = rt.sample("press01").values
    model_now = rt.models["press01"].sample(700.0)
    assert later["temperature"] == frozen["temperature"] != model_now["temperature"]
    assert later["count_total"] == frozen["count_total"] != model_now["count_total"]
    assert later["count_good"] == model_now["count_good"]  # not in the stuck list
    rt.clear_fault("press01")
    assert rt.sample("press01").values["temperature"] == model_now["temperature"]


def test_runtime_override_beats_scenario_fault_and_star_reaches_every_machine(plant):
    scenario = parse_scenario(
        {"steps": [{"at_s": 5, "machine": "*", "fault": {"delay_s": 0.5}}]}, plant
    )
    clock = ManualClock()
    rt = PlantRuntime(plant, scenario=scenario, clock=clock)
    assert not rt.sample("weld01").fault.active
    clock.t_s = 6
    assert rt.sample("weld01").fault == Fault(delay_s=0.5)
    assert rt.sample("cp02").fault == Fault(delay_s=0.5)
    rt.set_fault("weld01", Fault())  # forced healthy
    assert not rt.sample("weld01").fault.active
    rt.clear_fault("weld01")
    assert rt.sample("weld01").fault.delay_s == 0.5


def test_pins_overlay_the_model(plant):
    clock = ManualClock(50.0)
    rt = PlantRuntime(plant, seed=1, clock=clock)
    rt.pin("press02", {"temperature": 99.5, "state": 3})
    v = rt.sample("press02").values
    assert (v["temperature"], v["state"], v["alarm"], v["running"]) == (99.5, 3, True, False)
    with pytest.raises(PlantError, match="must be a number"):
        rt.pin("press02", {"temperature": "hot"})
    rt.unpin("press02")
    assert rt.sample("press02").values == rt.models["press02"].sample(50.0)


def test_shipped_fault_drill_scenario_plays_over_the_model(plant):
    path = PLANT_FILE.parent / "scenarios" / "fault_drill.yaml"
    clock = ManualClock()
    rt = PlantRuntime(plant, seed=9, scenario=load_scenario(path, plant), clock=clock)
    clock.t_s = 100.0
    assert rt.sample("weld01").fault == Fault(no_response=True)
    assert rt.sample("press01").values == rt.models["press01"].sample(100.0)
    clock.t_s = 470.0
    assert rt.sample("oven01").values["temperature"] == 260.0
    clock.t_s = 490.0
    assert rt.sample("oven01").values == rt.models["oven01"].sample(490.0)
    clock.t_s = 515.0
    assert all(rt.sample(name).fault.drop_connection for name in plant.names())
