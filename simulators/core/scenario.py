"""Scripted scenarios: a timeline of exact values and faults instead of random behaviour.

```yaml
base: static          # static (default): only the scripted values; model: the seeded model,
                      # with scripted values pinned on top
steps:
  - {at_s: 0, machine: press01, set: {state: 1, temperature: 41.5, count_total: 100}}
  - {at_s: 5, machine: press01, fault: {no_response: true}}
  - {at_s: 9, machine: press01, fault: null}          # healthy again
  - {at_s: 9, machine: "*", fault: {drop_connection: true}}   # every machine
  - {at_s: 12, machine: press02, unset: [temperature]}      # base: model only: unpin
```

A step applies from its `at_s` (seconds of simulated time since the server started) until a
later step for the same machine changes the same thing. With `base: static`, a tag never set
is 0 (False for flags, "none" for text) and `state` starts at 2 (IDLE); `running`, `alarm`
and `failure_mode_name` follow `state` and `failure_mode` unless set themselves.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from simulators.core.faults import Fault
from simulators.core.model import CHARGE_POINT_TAGS, MACHINE_TAGS, Value
from simulators.core.plant import Plant, PlantError, StateCode

ALL = "*"


@dataclass(frozen=True)
class Step:
    at_s: float
    machine: str  # a machine name or "*"
    set: dict[str, Value] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    fault: Fault | None = None  # None: the step says nothing about faults
    sets_fault: bool = False  # the step has a `fault:` key (null means healthy)


@dataclass(frozen=True)
class Scenario:
    base: Literal["static", "model"]
    steps: tuple[Step, ...]

    def pinned(self, machine: str, t_s: float) -> dict[str, Value]:
        """The scripted values for a machine in force at t_s."""
        values: dict[str, Value] = {}
        for step in self.steps:
            if step.at_s > t_s:
                break
            if step.machine in (machine, ALL):
                values.update(step.set)
                for tag in step.unset:
                    values.pop(tag, None)
        return values

    def fault(self, machine: str, t_s: float) -> tuple[Fault | None, float]:
        """The scripted fault in force at t_s and when it began (None: none scripted)."""
        current: Fault | None = None
        since = 0.0
        for step in self.steps:
            if step.at_s > t_s:
                break
            if step.sets_fault and step.machine in (machine, ALL):
                current = step.fault
                since = step.at_s
        return current, since

    def change_times(self) -> list[float]:
        return sorted({s.at_s for s in self.steps})

    def next_change_after(self, t_s: float) -> float | None:
        times = self.change_times()
        i = bisect.bisect_right(times, t_s)
        return times[i] if i < len(times) else None


def check_value(tag: str, value: Any, types: dict[str, type], where: str) -> Value:
    if tag not in types:
        raise PlantError(f"{where}: unknown tag {tag!r}; valid: {', '.join(types)}")
    want = types[tag]
    if want is bool:
        if not isinstance(value, bool):
            raise PlantError(f"{where}: {tag} must be true or false, got {value!r}")
        return value
    if want is str:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlantError(f"{where}: {tag} must be a number, got {value!r}")
    if want is int:
        if value != int(value):
            raise PlantError(f"{where}: {tag} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def parse_scenario(raw: Any, plant: Plant, *, source: str = "scenario") -> Scenario:
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list):
        raise PlantError(f"{source}: expected a mapping with a list under `steps`")
    base = raw.get("base", "static")
    if base not in ("static", "model"):
        raise PlantError(f"{source}: base {base!r} is not one of static, model")
    steps: list[Step] = []
    for i, s in enumerate(raw["steps"]):
        where = f"{source}: steps[{i}]"
        if not isinstance(s, dict):
            raise PlantError(f"{where}: expected a mapping, got {s!r}")
        unknown = set(s) - {"at_s", "machine", "set", "unset", "fault", "clear_fault"}
        if unknown:
            raise PlantError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                "valid: at_s, machine, set, unset, fault, clear_fault"
            )
        at_s = float(s.get("at_s", 0.0))
        if at_s < 0:
            raise PlantError(f"{where}: at_s must be >= 0, got {at_s}")
        machine = str(s.get("machine", ""))
        if machine != ALL:
            machine = plant.resolve(machine)
        values: dict[str, Value] = {}
        if s.get("set"):
            if machine == ALL:
                raise PlantError(f"{where}: `set` needs one machine, not '*'")
            types = MACHINE_TAGS if machine in plant.machines else CHARGE_POINT_TAGS
            values = {
                str(tag): check_value(str(tag), v, types, where) for tag, v in s["set"].items()
            }
            if "state" in values and int(values["state"]) not in {c.value for c in StateCode}:
                raise PlantError(
                    f"{where}: state {values['state']} is not a state code "
                    f"({', '.join(f'{c.value} {c.name}' for c in StateCode)})"
                )
        sets_fault = "fault" in s or bool(s.get("clear_fault"))
        fault = Fault.from_dict(s.get("fault")) if "fault" in s else None
        steps.append(
            Step(
                at_s=at_s,
                machine=machine,
                set=values,
                unset=tuple(str(t) for t in s.get("unset", []) or []),
                fault=fault if fault is None or fault.active else None,
                sets_fault=sets_fault,
            )
        )
    # stable: steps at the same time keep their file order
    steps.sort(key=lambda st: st.at_s)
    return Scenario(base=base, steps=tuple(steps))


def load_scenario(path: str | Path, plant: Plant) -> Scenario:
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return parse_scenario(raw, plant, source=str(path))
