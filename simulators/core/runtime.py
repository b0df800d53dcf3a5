"""The running plant: models (or a scenario), a clock, and the faults in force.

Both servers ask a `PlantRuntime` for a machine's `Sample` when a client reads; nothing here
does I/O, so tests can drive it with a `ManualClock`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from simulators.core.faults import HEALTHY, Fault
from simulators.core.model import (
    CHARGE_POINT_TAGS,
    MACHINE_TAGS,
    ChargePointModel,
    MachineModel,
    Model,
    Value,
)
from simulators.core.plant import EvStatus, Plant, PlantError, StateCode
from simulators.core.scenario import ALL, Scenario, check_value


class Clock(Protocol):
    def now(self) -> float:
        """Simulated seconds since the start."""
        ...

    def timestamp(self, t_s: float) -> datetime:
        """The UTC wall-clock time of simulated second t_s."""
        ...


class WallClock:
    """Simulated time from the monotonic clock, `speed` simulated seconds per real second."""

    def __init__(self, *, speed: float = 1.0) -> None:
        if speed <= 0:
            raise PlantError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._t0 = time.monotonic()
        self._utc0 = datetime.now(UTC)

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    def timestamp(self, t_s: float) -> datetime:
        return self._utc0 + timedelta(seconds=t_s / self.speed)


class ManualClock:
    """A clock that moves only when told (tests)."""

    def __init__(self, t_s: float = 0.0, *, start: datetime | None = None) -> None:
        self.t_s = t_s
        self.start = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> float:
        return self.t_s

    def advance(self, dt_s: float) -> None:
        self.t_s += dt_s

    def timestamp(self, t_s: float) -> datetime:
        return self.start + timedelta(seconds=t_s)


@dataclass(frozen=True)
class Sample:
    machine: str
    asset: str
    t_s: float
    timestamp: datetime  # UTC, timezone-aware
    values: dict[str, Value]
    fault: Fault


def _static_defaults(is_machine: bool) -> dict[str, Value]:
    types = MACHINE_TAGS if is_machine else CHARGE_POINT_TAGS
    out: dict[str, Value] = {tag: t() for tag, t in types.items()}  # 0, 0.0, False, ""
    if is_machine:
        out["state"] = int(StateCode.IDLE)
    return out


class PlantRuntime:
    """Models, scenario, pins and faults of a plant; `sample(machine)` is what a server serves."""

    def __init__(
        self,
        plant: Plant,
        *,
        seed: int = 0,
        scenario: Scenario | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.plant = plant
        self.seed = seed
        self.scenario = scenario
        self.clock: Clock = clock or WallClock()
        self.models: dict[str, Model] = {}
        for name, spec in plant.machines.items():
            self.models[name] = MachineModel(spec, plant.failure_modes, seed=seed)
        for name, cp in plant.charge_points.items():
            self.models[name] = ChargePointModel(cp, seed=seed)
        self._fault_overrides: dict[str, tuple[Fault, float]] = {}
        self._pins: dict[str, dict[str, Value]] = {}

    # -- control -------------------------------------------------------------------------

    def set_fault(self, machine: str, fault: Fault) -> None:
        """Force a fault (Fault() forces healthy) on a machine, or on every machine with '*'."""
        key = machine if machine == ALL else self.plant.resolve(machine)
        self._fault_overrides[key] = (fault, self.clock.now())

    def clear_fault(self, machine: str | None = None) -> None:
        """Drop run-time fault overrides (of one machine, or all); the scenario decides again."""
        if machine is None:
            self._fault_overrides.clear()
        else:
            key = machine if machine == ALL else self.plant.resolve(machine)
            self._fault_overrides.pop(key, None)

    def pin(self, machine: str, values: dict[str, Any]) -> None:
        """Hold tags of a machine at these values (on top of the model or the scenario)."""
        name = self.plant.resolve(machine)
        types = MACHINE_TAGS if name in self.plant.machines else CHARGE_POINT_TAGS
        try:
            checked = {t: check_value(t, v, types) for t, v in values.items()}
        except ValueError as exc:
            raise PlantError(f"pin {name}: {exc}") from None
        self._pins.setdefault(name, {}).update(checked)

    def unpin(self, machine: str) -> None:
        """Let go of every tag pinned on a machine."""
        self._pins.pop(self.plant.resolve(machine), None)

    # -- reading -------------------------------------------------------------------------

    def fault_at(self, machine: str, t_s: float) -> tuple[Fault, float]:
        """The fault in force and when it began: run-time override, else the scenario's."""
        for key in (machine, ALL):
            if key in self._fault_overrides:
                return self._fault_overrides[key]
        if self.scenario is not None:
            fault, since = self.scenario.fault(machine, t_s)
            if fault is not None:
                return fault, since
        return HEALTHY, 0.0

    def _values_at(self, machine: str, t_s: float) -> dict[str, Value]:
        is_machine = machine in self.plant.machines
        if self.scenario is not None and self.scenario.base == "static":
            values = _static_defaults(is_machine)
        else:
            values = self.models[machine].sample(t_s)
        pinned: dict[str, Value] = {}
        if self.scenario is not None:
            pinned.update(self.scenario.pinned(machine, t_s))
        pinned.update(self._pins.get(machine, {}))
        values.update(pinned)
        # flags follow the codes unless pinned themselves
        if is_machine:
            state = int(values["state"])
            derived: dict[str, Value] = {
                "running": state == StateCode.RUNNING,
                "alarm": state == StateCode.UNPLANNED_STOP,
                "failure_mode_name": self._failure_name(int(values["failure_mode"])),
            }
        else:
            status = int(values["status"])
            derived = {
                "connected": status
                in (
                    EvStatus.PREPARING,
                    EvStatus.CHARGING,
                    EvStatus.SUSPENDED_EVSE,
                    EvStatus.SUSPENDED_EV,
                    EvStatus.FINISHING,
                ),
                "charging": status == EvStatus.CHARGING,
                "faulted": status == EvStatus.FAULTED,
            }
        for tag, value in derived.items():
            if tag not in pinned:
                values[tag] = value
        return values

    def _failure_name(self, code: int) -> str:
        spec = self.plant.failure_modes.get(code)
        return spec.name if spec is not None else f"unknown_{code}"

    def sample_at(self, machine: str, t_s: float) -> Sample:
        name = self.plant.resolve(machine)
        fault, since = self.fault_at(name, t_s)
        values = self._values_at(name, t_s)
        if fault.stuck:
            frozen = self._values_at(name, min(since, t_s))
            for tag in values:
                if fault.is_stuck(tag):
                    values[tag] = frozen[tag]
        return Sample(
            machine=name,
            asset=self.plant.asset_of(name),
            t_s=t_s,
            timestamp=self.clock.timestamp(t_s),
            values=values,
            fault=fault,
        )

    def sample(self, machine: str) -> Sample:
        """The machine as a client sees it now."""
        return self.sample_at(machine, self.clock.now())

    def status(self) -> dict[str, Any]:
        """Every machine's values and faults now (JSON-ready; for the control port)."""
        t_s = self.clock.now()
        out: dict[str, Any] = {"t_s": t_s, "machines": {}}
        for name in self.plant.names():
            s = self.sample_at(name, t_s)
            out["machines"][name] = {
                "asset": s.asset,
                "timestamp": s.timestamp.isoformat(),
                "values": s.values,
                "fault": s.fault.to_dict(),
            }
        return out
