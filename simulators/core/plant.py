"""The plant definition (`plant.yaml`): enterprise, site, areas, lines, machines, charge points."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

import yaml

PLANT_FILE = Path(__file__).parent.parent / "plant.yaml"

Protocol = Literal["modbus", "opcua"]


class StateCode(IntEnum):
    """Machine state codes, as written to the `state` register / OPC UA variable."""

    RUNNING = 1
    IDLE = 2  # starved
    UNPLANNED_STOP = 3  # down
    BLOCKED = 4
    SETUP = 5  # planned
    BREAK = 6  # planned


class EvStatus(IntEnum):
    """EV charge point status codes (OCPP 1.6 ChargePointStatus order)."""

    AVAILABLE = 0
    PREPARING = 1
    CHARGING = 2
    SUSPENDED_EVSE = 3
    SUSPENDED_EV = 4
    FINISHING = 5
    RESERVED = 6
    UNAVAILABLE = 7
    FAULTED = 8


class PlantError(ValueError):
    """The plant file, the register map or a scenario is invalid; the message names the value."""


@dataclass(frozen=True)
class MachineParams:
    """Physical and behavioural parameters of a machine; plant.yaml `params:` overrides them."""

    mean_run_s: float = 180.0
    min_run_s: float = 20.0
    # relative weights of what follows a RUNNING period
    p_unplanned_stop: float = 0.35
    p_idle: float = 0.25
    p_blocked: float = 0.15
    p_setup: float = 0.15
    p_break: float = 0.10
    idle_s: tuple[float, float] = (10.0, 90.0)
    blocked_s: tuple[float, float] = (10.0, 60.0)
    setup_s: tuple[float, float] = (60.0, 300.0)
    break_s: tuple[float, float] = (120.0, 300.0)
    scrap_rate: tuple[float, float] = (0.01, 0.05)
    ambient_c: float = 22.0
    temperature_rise_c: float = 25.0  # above ambient at full load, steady state
    temperature_tau_s: float = 120.0
    temperature_noise_c: float = 0.15
    spindle_rpm: float = 1500.0
    spindle_tau_s: float = 2.0
    vibration_idle_mm_s: float = 0.2
    vibration_run_mm_s: float = 2.0
    vibration_noise_mm_s: float = 0.08
    idle_power_kw: float = 3.0
    rated_power_kw: float = 40.0
    power_noise_kw: float = 0.3


@dataclass(frozen=True)
class FailureModeSpec:
    code: int
    name: str
    weight: float = 1.0
    precursor_s: float = 0.0
    vibration_rise_mm_s: float = 0.0
    temperature_rise_c: float = 0.0
    repair_s: tuple[float, float] = (30.0, 120.0)


@dataclass(frozen=True)
class StateCodeSpec:
    code: int
    name: str
    category: Literal["RUNNING", "UNPLANNED_STOP", "PLANNED_STOP"]
    description: str = ""


@dataclass(frozen=True)
class MachineSpec:
    name: str
    asset: str
    area: str
    line: str
    kind: str
    protocol: Protocol
    ideal_cycle_time_s: float
    cycle_time_s: float
    unit_id: int | None = None
    params: MachineParams = field(default_factory=MachineParams)


@dataclass(frozen=True)
class ChargePointSpec:
    name: str
    asset: str
    area: str
    line: str
    protocol: Protocol
    max_power_kw: float = 22.0
    unit_id: int | None = None
    mean_gap_s: float = 240.0  # time between sessions
    energy_demand_kwh: tuple[float, float] = (2.0, 30.0)
    ambient_c: float = 2.0  # daily mean outdoor temperature
    ambient_swing_c: float = 6.0  # +- around the mean over a day
    p_fault: float = 0.05


@dataclass(frozen=True)
class Plant:
    enterprise: str
    site: str
    state_tag: str
    total_count_tag: str
    good_count_tag: str
    state_codes: dict[int, StateCodeSpec]
    failure_modes: dict[int, FailureModeSpec]
    ev_status_codes: dict[int, str]
    machines: dict[str, MachineSpec]
    charge_points: dict[str, ChargePointSpec]

    def asset_of(self, name: str) -> str:
        if name in self.machines:
            return self.machines[name].asset
        if name in self.charge_points:
            return self.charge_points[name].asset
        raise PlantError(f"unknown machine {name!r}; valid: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [*self.machines, *self.charge_points]

    def resolve(self, name_or_asset: str) -> str:
        """A machine's short name from its name or its asset path."""
        for name in self.names():
            if name_or_asset in (name, self.asset_of(name)):
                return name
        raise PlantError(f"unknown machine {name_or_asset!r}; valid: {', '.join(self.names())}")

    def served_by(self, protocol: Protocol) -> list[str]:
        specs: list[MachineSpec | ChargePointSpec] = [
            *self.machines.values(),
            *self.charge_points.values(),
        ]
        return [spec.name for spec in specs if spec.protocol == protocol]


def _tuple2(value: Any, where: str) -> tuple[float, float]:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise PlantError(f"{where}: expected [min, max], got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if lo > hi:
        raise PlantError(f"{where}: min {lo} is above max {hi}")
    return lo, hi


def _params(raw: dict[str, Any] | None, where: str) -> MachineParams:
    base = MachineParams()
    if not raw:
        return base
    known = {f.name: f for f in fields(MachineParams)}
    updates: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise PlantError(
                f"{where}.params: unknown parameter {key!r}; valid: {', '.join(known)}"
            )
        current = getattr(base, key)
        updates[key] = (
            _tuple2(value, f"{where}.params.{key}") if isinstance(current, tuple) else float(value)
        )
    return replace(base, **updates)


def _protocol(value: Any, where: str) -> Protocol:
    if value not in ("modbus", "opcua"):
        raise PlantError(f"{where}.protocol: {value!r} is not one of modbus, opcua")
    return value  # type: ignore[no-any-return]


def load_plant(path: str | Path = PLANT_FILE) -> Plant:
    """Load and validate a plant file."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise PlantError(f"{path}: expected a mapping at the top level")
    enterprise, site = str(raw["enterprise"]), str(raw["site"])
    state_codes = {
        int(code): StateCodeSpec(
            code=int(code),
            name=str(spec["name"]),
            category=spec["category"],
            description=str(spec.get("description", "")),
        )
        for code, spec in raw["state_codes"].items()
    }
    for spec in state_codes.values():
        if spec.category not in ("RUNNING", "UNPLANNED_STOP", "PLANNED_STOP"):
            raise PlantError(
                f"state code {spec.code}: category {spec.category!r} is not one of "
                "RUNNING, UNPLANNED_STOP, PLANNED_STOP"
            )
    expected = {c.value: c.name for c in StateCode}
    got = {c: s.name for c, s in state_codes.items()}
    if got != expected:
        raise PlantError(f"{path}: state_codes must be {expected} (the simulator's), got {got}")
    failure_modes = {
        int(code): FailureModeSpec(
            code=int(code),
            name=str(spec["name"]),
            weight=float(spec.get("weight", 1.0)),
            precursor_s=float(spec.get("precursor_s", 0.0)),
            vibration_rise_mm_s=float(spec.get("vibration_rise_mm_s", 0.0)),
            temperature_rise_c=float(spec.get("temperature_rise_c", 0.0)),
            repair_s=_tuple2(spec.get("repair_s", [30, 120]), f"failure_modes.{code}.repair_s"),
        )
        for code, spec in raw["failure_modes"].items()
    }
    if 0 not in failure_modes or len(failure_modes) < 2:
        raise PlantError(f"{path}: failure_modes needs code 0 (none) and at least one failure")
    machines: dict[str, MachineSpec] = {}
    charge_points: dict[str, ChargePointSpec] = {}
    unit_ids: dict[int, str] = {}
    for area in raw["areas"]:
        for line in area["lines"]:
            prefix = f"{enterprise}/{site}/{area['name']}/{line['name']}"
            for m in line.get("machines", []):
                where = f"{prefix}/{m['name']}"
                spec_m = MachineSpec(
                    name=str(m["name"]),
                    asset=where,
                    area=str(area["name"]),
                    line=str(line["name"]),
                    kind=str(m.get("kind", "machine")),
                    protocol=_protocol(m["protocol"], where),
                    ideal_cycle_time_s=float(m["ideal_cycle_time_s"]),
                    cycle_time_s=float(m.get("cycle_time_s", m["ideal_cycle_time_s"])),
                    unit_id=m.get("unit_id"),
                    params=_params(m.get("params"), where),
                )
                if spec_m.cycle_time_s <= 0 or spec_m.ideal_cycle_time_s <= 0:
                    raise PlantError(f"{where}: cycle times must be positive")
                if spec_m.name in machines:
                    raise PlantError(f"{path}: machine name {spec_m.name!r} is used twice")
                machines[spec_m.name] = spec_m
            for cp in line.get("charge_points", []):
                where = f"{prefix}/{cp['name']}"
                spec_cp = ChargePointSpec(
                    name=str(cp["name"]),
                    asset=where,
                    area=str(area["name"]),
                    line=str(line["name"]),
                    protocol=_protocol(cp["protocol"], where),
                    max_power_kw=float(cp.get("max_power_kw", 22.0)),
                    unit_id=cp.get("unit_id"),
                )
                if spec_cp.name in machines or spec_cp.name in charge_points:
                    raise PlantError(f"{path}: machine name {spec_cp.name!r} is used twice")
                charge_points[spec_cp.name] = spec_cp
    all_specs: list[MachineSpec | ChargePointSpec] = [*machines.values(), *charge_points.values()]
    for spec_any in all_specs:
        name = spec_any.name
        if spec_any.protocol == "modbus":
            if not isinstance(spec_any.unit_id, int) or not 1 <= spec_any.unit_id <= 247:
                raise PlantError(
                    f"{spec_any.asset}: unit_id must be 1..247, got {spec_any.unit_id!r}"
                )
            if spec_any.unit_id in unit_ids:
                raise PlantError(
                    f"{spec_any.asset}: unit_id {spec_any.unit_id} already used by "
                    f"{unit_ids[spec_any.unit_id]}"
                )
            unit_ids[spec_any.unit_id] = name
    return Plant(
        enterprise=enterprise,
        site=site,
        state_tag=str(raw.get("state_tag", "state")),
        total_count_tag=str(raw.get("total_count_tag", "count_total")),
        good_count_tag=str(raw.get("good_count_tag", "count_good")),
        state_codes=state_codes,
        failure_modes=failure_modes,
        ev_status_codes={int(k): str(v) for k, v in raw.get("ev_status_codes", {}).items()},
        machines=machines,
        charge_points=charge_points,
    )
