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
The file is checked against the plant (machine names, tags and their types); a mistake is a
PlantError naming the file and the step's field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from otbridge.files import read_yaml
from simulators.core.faults import Fault
from simulators.core.model import CHARGE_POINT_TAGS, MACHINE_TAGS, Value
from simulators.core.plant import FileModel, Plant, StateCode, file_error

ALL = "*"


def check_value(tag: str, value: Any, types: dict[str, type]) -> Value:
    """`value` as the type of `tag` (ValueError naming the tag and what would be valid)."""
    if tag not in types:
        raise ValueError(f"unknown tag {tag!r}; valid: {', '.join(types)}")
    want = types[tag]
    if want is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{tag} must be true or false, got {value!r}")
        return value
    if want is str:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{tag} must be a number, got {value!r}")
    if want is int:
        if value != int(value):
            raise ValueError(f"{tag} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _plant(info: ValidationInfo) -> Plant:
    plant = (info.context or {}).get("plant")
    if not isinstance(plant, Plant):
        raise TypeError("a scenario is checked against a plant: parse_scenario(raw, plant)")
    return plant


class Step(FileModel):
    at_s: float = Field(0.0, ge=0)
    machine: str  # a machine name or asset path, or "*" (every machine); kept as the name
    set: dict[str, Value] = Field(default_factory=dict)
    unset: tuple[str, ...] = ()
    fault: Fault | None = None  # None: healthy, or (no `fault:` key) nothing said about faults
    clear_fault: bool = False  # the same as `fault: null`

    @field_validator("machine")
    @classmethod
    def _a_machine(cls, value: str, info: ValidationInfo) -> str:
        if value == ALL:
            return value
        plant = _plant(info)
        name = plant.lookup(value)
        if name is None:
            raise ValueError(plant.unknown(value))
        return name

    @field_validator("set", mode="before")
    @classmethod
    def _typed_values(cls, raw: Any, info: ValidationInfo) -> Any:
        if not raw:
            return {}
        machine = info.data.get("machine")
        if not isinstance(raw, dict) or machine is None:
            return raw  # not a mapping, or the machine is wrong already: reported as such
        if machine == ALL:
            raise ValueError("`set` needs one machine, not '*'")
        types = MACHINE_TAGS if machine in _plant(info).machines else CHARGE_POINT_TAGS
        values = {str(tag): check_value(str(tag), v, types) for tag, v in raw.items()}
        if "state" in values and int(values["state"]) not in {c.value for c in StateCode}:
            raise ValueError(
                f"state {values['state']} is not a state code "
                f"({', '.join(f'{c.value} {c.name}' for c in StateCode)})"
            )
        return values

    @field_validator("unset", mode="before")
    @classmethod
    def _none_is_empty(cls, raw: Any) -> Any:
        return () if raw is None else raw

    @field_validator("fault")
    @classmethod
    def _healthy_is_none(cls, fault: Fault | None) -> Fault | None:
        return fault if fault is not None and fault.active else None

    @property
    def sets_fault(self) -> bool:
        """The step says something about faults (`fault:`, even null, or `clear_fault`)."""
        return "fault" in self.model_fields_set or self.clear_fault


class Scenario(FileModel):
    base: Literal["static", "model"] = "static"
    steps: tuple[Step, ...]

    @field_validator("steps")
    @classmethod
    def _in_time_order(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        # stable: steps at the same time keep their file order
        return tuple(sorted(steps, key=lambda st: st.at_s))

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


def parse_scenario(raw: Any, plant: Plant, *, source: str = "scenario") -> Scenario:
    """A scenario from parsed YAML, checked against the plant (PlantError if it is wrong)."""
    try:
        return Scenario.model_validate(raw, context={"plant": plant})
    except ValidationError as exc:
        raise file_error(exc, source, what="scenario", model=Scenario) from None


def load_scenario(path: str | Path, plant: Plant) -> Scenario:
    return parse_scenario(read_yaml(Path(path)), plant, source=str(path))
