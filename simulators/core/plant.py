"""The plant definition (`plant.yaml`): enterprise, site, areas, lines, machines, charge points.

`load_plant` validates the file with the models below (frozen, unknown keys refused); any
mistake is a `PlantError` (a `ConfigError`) on one line naming the file, the dotted field and
what would be valid, e.g. ``invalid plant file p.yaml: areas[0].lines[1].machines[0].protocol:
'tcp' is not a simulator protocol; valid: modbus, opcua``.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from otbridge.errors import ConfigError
from otbridge.files import Name, format_errors, read_yaml
from simulators.core.protocols import protocol_names

PLANT_FILE = Path(__file__).parent.parent / "plant.yaml"

ProtocolName = str  # a folder simulators/<name>/ (modbus, opcua, ...)


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


class PlantError(ConfigError):
    """The plant file, the register map, a scenario or a request names something invalid;
    the message names the file (or request), the field and what would be valid."""


def file_error(
    exc: ValidationError, source: str | Path, *, what: str, model: type[BaseModel] | None = None
) -> PlantError:
    """A PlantError from a validation error, on one line even when several fields are wrong
    (`; ` between them): the simulators print it as their last word."""
    head, *fields = format_errors(exc, Path(source), what=what, model=model).splitlines()
    return PlantError(" ".join([head, "; ".join(f.strip() for f in fields)]) if fields else head)


def field_error(loc: tuple[int | str, ...], message: str, value: Any) -> ValidationError:
    """A validation error at `loc` (relative to the model being validated), for rules that
    span several entries but belong to one field."""
    return ValidationError.from_exception_data(
        "plant",
        [InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)],
    )


class FileModel(BaseModel):
    """A part of a simulator file: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"[min, max]: min {value[0]} is above max {value[1]}")
    return value


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]  # [min, max]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
UnitId = Annotated[int, Field(ge=1, le=247)]


class MachineParams(FileModel):
    """Physical and behavioural parameters of a machine; plant.yaml `params:` overrides them."""

    mean_run_s: Positive = 180.0
    min_run_s: NonNegative = 20.0
    # relative weights of what follows a RUNNING period
    p_unplanned_stop: NonNegative = 0.35
    p_idle: NonNegative = 0.25
    p_blocked: NonNegative = 0.15
    p_setup: NonNegative = 0.15
    p_break: NonNegative = 0.10
    idle_s: Range = (10.0, 90.0)
    blocked_s: Range = (10.0, 60.0)
    setup_s: Range = (60.0, 300.0)
    break_s: Range = (120.0, 300.0)
    scrap_rate: Range = (0.01, 0.05)
    ambient_c: float = 22.0
    temperature_rise_c: float = 25.0  # above ambient at full load, steady state
    temperature_tau_s: Positive = 120.0
    temperature_noise_c: NonNegative = 0.15
    spindle_rpm: NonNegative = 1500.0
    spindle_tau_s: Positive = 2.0
    vibration_idle_mm_s: NonNegative = 0.2
    vibration_run_mm_s: NonNegative = 2.0
    vibration_noise_mm_s: NonNegative = 0.08
    idle_power_kw: NonNegative = 3.0
    rated_power_kw: NonNegative = 40.0
    power_noise_kw: NonNegative = 0.3


class FailureModeSpec(FileModel):
    code: int  # the key in plant.yaml `failure_modes:`
    name: Name
    weight: NonNegative = 1.0
    precursor_s: NonNegative = 0.0
    vibration_rise_mm_s: NonNegative = 0.0
    temperature_rise_c: NonNegative = 0.0
    repair_s: Range = (30.0, 120.0)


class StateCodeSpec(FileModel):
    code: int  # the key in plant.yaml `state_codes:`
    name: Name
    category: Literal["RUNNING", "UNPLANNED_STOP", "PLANNED_STOP"]
    description: str = ""


def _check_protocol(value: str) -> str:
    valid = protocol_names()
    if value not in valid:
        raise ValueError(f"{value!r} is not a simulator protocol; valid: {', '.join(valid)}")
    return value


class _Served(FileModel):
    """What every machine and charge point has: a name and the server that serves it."""

    name: Name
    protocol: Annotated[ProtocolName, AfterValidator(_check_protocol)]
    unit_id: UnitId | None = None  # Modbus device id

    @model_validator(mode="after")
    def _modbus_needs_a_unit(self) -> _Served:
        if self.protocol == "modbus" and self.unit_id is None:
            raise ValueError("unit_id: a Modbus machine needs its unit id, 1..247")
        return self


class Machine(_Served):
    """A machine as plant.yaml lists it under a line's `machines:`."""

    kind: str = "machine"
    ideal_cycle_time_s: Positive
    cycle_time_s: Positive | None = None  # default: the ideal one
    params: MachineParams = MachineParams()


class ChargePoint(_Served):
    """An EV charge point as plant.yaml lists it under a line's `charge_points:`."""

    max_power_kw: Positive = 22.0
    mean_gap_s: Positive = 240.0  # time between sessions
    energy_demand_kwh: Range = (2.0, 30.0)
    ambient_c: float = 2.0  # daily mean outdoor temperature
    ambient_swing_c: NonNegative = 6.0  # +- around the mean over a day
    p_fault: Annotated[float, Field(ge=0, le=1)] = 0.05


class _Placed(FileModel):
    """Where a machine stands: its ISA-95 asset path, area and line."""

    asset: str
    area: str
    line: str


class MachineSpec(Machine, _Placed):
    """A machine of the plant, with its place (what the models and servers use)."""

    cycle_time_s: Positive


class ChargePointSpec(ChargePoint, _Placed):
    """A charge point of the plant, with its place."""


class Line(FileModel):
    name: Name
    machines: tuple[Machine, ...] = ()
    charge_points: tuple[ChargePoint, ...] = ()


class Area(FileModel):
    name: Name
    lines: tuple[Line, ...]


def _with_code_keys(raw: Any) -> Any:
    """`{3: {name: jam}}` -> `{3: {code: 3, name: jam}}` (the key is the code)."""
    if not isinstance(raw, dict):
        return raw
    return {k: {"code": k, **v} if isinstance(v, dict) else v for k, v in raw.items()}


class Plant(FileModel):
    """The whole plant file; `machines` and `charge_points` are keyed by short name."""

    enterprise: Name
    site: Name
    # the tags that carry the machine state and the two production counters (OEE master data)
    state_tag: str = "state"
    total_count_tag: str = "count_total"
    good_count_tag: str = "count_good"
    state_codes: dict[int, StateCodeSpec]
    failure_modes: dict[int, FailureModeSpec]
    ev_status_codes: dict[int, str] = Field(default_factory=dict)
    areas: tuple[Area, ...]

    @field_validator("state_codes", "failure_modes", mode="before")
    @classmethod
    def _codes_from_keys(cls, raw: Any) -> Any:
        return _with_code_keys(raw)

    @field_validator("state_codes")
    @classmethod
    def _the_simulators_states(cls, codes: dict[int, StateCodeSpec]) -> dict[int, StateCodeSpec]:
        expected = {c.value: c.name for c in StateCode}
        got = {c: s.name for c, s in codes.items()}
        if got != expected:
            raise ValueError(f"must be {expected} (the simulator's), got {got}")
        return codes

    @field_validator("failure_modes")
    @classmethod
    def _none_and_a_failure(
        cls, modes: dict[int, FailureModeSpec]
    ) -> dict[int, FailureModeSpec]:
        if 0 not in modes or len(modes) < 2:
            raise ValueError("needs code 0 (none) and at least one failure")
        return modes

    @model_validator(mode="after")
    def _unique(self) -> Plant:
        names: dict[str, str] = {}
        units: dict[int, str] = {}
        for loc, entry in self._entries():
            if entry.name in names:
                raise field_error(
                    (*loc, "name"), f"{entry.name!r} is already the name of a machine", entry.name
                )
            names[entry.name] = entry.name
            if entry.protocol == "modbus" and entry.unit_id is not None:
                if entry.unit_id in units:
                    raise field_error(
                        (*loc, "unit_id"),
                        f"{entry.unit_id} is already the unit id of {units[entry.unit_id]}",
                        entry.unit_id,
                    )
                units[entry.unit_id] = entry.name
        return self

    def _entries(self) -> Iterator[tuple[tuple[int | str, ...], Machine | ChargePoint]]:
        for a, area in enumerate(self.areas):
            for li, line in enumerate(area.lines):
                for m, machine in enumerate(line.machines):
                    yield ("areas", a, "lines", li, "machines", m), machine
                for c, cp in enumerate(line.charge_points):
                    yield ("areas", a, "lines", li, "charge_points", c), cp

    def _place(self, area: Area, line: Line, name: str) -> dict[str, str]:
        asset = f"{self.enterprise}/{self.site}/{area.name}/{line.name}/{name}"
        return {"asset": asset, "area": area.name, "line": line.name}

    @cached_property
    def machines(self) -> dict[str, MachineSpec]:
        return {
            m.name: MachineSpec(
                **{
                    **dict(m),
                    **self._place(area, line, m.name),
                    "cycle_time_s": m.cycle_time_s or m.ideal_cycle_time_s,
                }
            )
            for area in self.areas
            for line in area.lines
            for m in line.machines
        }

    @cached_property
    def charge_points(self) -> dict[str, ChargePointSpec]:
        return {
            cp.name: ChargePointSpec(**{**dict(cp), **self._place(area, line, cp.name)})
            for area in self.areas
            for line in area.lines
            for cp in line.charge_points
        }

    @cached_property
    def _by_name_or_asset(self) -> dict[str, str]:
        specs: list[MachineSpec | ChargePointSpec] = [
            *self.machines.values(),
            *self.charge_points.values(),
        ]
        return {key: s.name for s in specs for key in (s.asset, s.name)}

    def names(self) -> list[str]:
        return [*self.machines, *self.charge_points]

    def unknown(self, name: str) -> str:
        """The message for a name that is not a machine of this plant."""
        return f"unknown machine {name!r}; valid: {', '.join(self.names())}"

    def lookup(self, name_or_asset: str) -> str | None:
        """A machine's short name from its name or its asset path; None if there is none."""
        return self._by_name_or_asset.get(name_or_asset)

    def resolve(self, name_or_asset: str) -> str:
        """A machine's short name from its name or its asset path (PlantError if unknown)."""
        name = self._by_name_or_asset.get(name_or_asset)
        if name is None:
            raise PlantError(self.unknown(name_or_asset))
        return name

    def asset_of(self, name: str) -> str:
        spec = self.machines.get(name) or self.charge_points.get(name)
        if spec is None:
            raise PlantError(self.unknown(name))
        return spec.asset

    def served_by(self, protocol: ProtocolName) -> list[str]:
        specs: list[MachineSpec | ChargePointSpec] = [
            *self.machines.values(),
            *self.charge_points.values(),
        ]
        return [spec.name for spec in specs if spec.protocol == protocol]


def load_plant(path: str | Path = PLANT_FILE) -> Plant:
    """Load and validate a plant file (PlantError naming file and field if it is wrong)."""
    raw = read_yaml(Path(path))
    try:
        return Plant.model_validate(raw)
    except ValidationError as exc:
        raise file_error(exc, path, what="plant file", model=Plant) from None
