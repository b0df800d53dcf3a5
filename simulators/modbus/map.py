"""The published Modbus register map (`map.yaml`): what the simulator serves, where.

Each entry is a tag of a plant machine in registers of one kind; how the value sits in them
(data type, word and byte order, `value = raw * scale + offset`) is otbridge.codec.modbus,
the codec the connector decodes with. Addresses are 0-based PDU addresses (what goes on
the wire).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from otbridge.codec import modbus
from otbridge.codec.modbus import BIT_KINDS, DataType, Order, RegisterKind
from otbridge.errors import ConfigError
from otbridge.files import format_errors, read_yaml
from simulators.core.model import CHARGE_POINT_TAGS, MACHINE_TAGS, Value
from simulators.core.plant import Plant, PlantError

MAP_FILE = Path(__file__).with_name("map.yaml")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegisterEntry(_Model):
    """One tag in the map: `count` registers (or one bit) of `kind` from `address`."""

    tag: str
    kind: RegisterKind
    address: int = Field(ge=0, le=65535)
    data_type: DataType
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> RegisterEntry:
        if (self.kind in BIT_KINDS) != (self.data_type == "bool"):
            bits = self.kind in BIT_KINDS
            valid = [t for t in modbus.DATA_TYPES if (t == "bool") == bits]
            raise ValueError(
                f"data_type: {self.kind} addresses hold {'one bit' if bits else 'a number'}; "
                f"valid: {', '.join(map(repr, valid))} (got {self.data_type!r})"
            )
        if self.scale == 0:
            raise ValueError("scale: must not be 0")
        if self.address + self.count - 1 > 65535:
            raise ValueError(f"address: {self.data_type} at {self.address} runs past 65535")
        return self

    @property
    def count(self) -> int:
        """Registers (or bits, for coil/discrete) the value occupies."""
        return modbus.register_count(self.data_type)

    @property
    def is_bit(self) -> bool:
        return self.kind in BIT_KINDS


class UnitEntry(_Model):
    """One Modbus unit (device id) of the map file: a machine of the plant file."""

    unit_id: int = Field(ge=1, le=247)
    machine: str
    asset: str
    registers: list[RegisterEntry] = []


class MapFile(_Model):
    units: list[UnitEntry] = Field(min_length=1)


@dataclass(frozen=True)
class UnitMap:
    unit_id: int
    machine: str
    asset: str
    entries: tuple[RegisterEntry, ...]
    # per kind: the mapped address ranges [start, end), merged and sorted
    _ranges: dict[str, tuple[list[int], list[int]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        ranges: dict[str, tuple[list[int], list[int]]] = {}
        for kind in modbus.KINDS:
            starts: list[int] = []
            ends: list[int] = []
            spans = sorted((e.address, e.address + e.count) for e in self.entries if e.kind == kind)
            for start, end in spans:
                if ends and start <= ends[-1]:
                    ends[-1] = max(ends[-1], end)
                else:
                    starts.append(start)
                    ends.append(end)
            ranges[kind] = (starts, ends)
        object.__setattr__(self, "_ranges", ranges)

    def entry(self, tag: str) -> RegisterEntry:
        for e in self.entries:
            if e.tag == tag:
                return e
        raise KeyError(f"unit {self.unit_id} ({self.machine}) has no tag {tag!r}")

    def covers(self, kind: str, address: int, count: int) -> bool:
        """Whether every address in [address, address + count) belongs to a mapped value."""
        if count <= 0:
            return True
        ranges = self._ranges.get(kind)
        if ranges is None:
            return False
        starts, ends = ranges
        i = bisect_right(starts, address) - 1  # the last range starting at or before address
        return i >= 0 and address + count <= ends[i]


@dataclass(frozen=True)
class ModbusMap:
    units: dict[int, UnitMap]


def encode(entry: RegisterEntry, value: Value, *, swap_words: bool = False) -> list[int]:
    """The registers for a value (a bit entry gives [0] or [1]). swap_words: the
    opposite word order to the map's (a device firmware bug, fault `swap_words`)."""
    if entry.is_bit:
        return [1 if value else 0]
    if isinstance(value, str):
        raise TypeError(f"{entry.tag}: text {value!r} cannot go in a register")
    word_order = entry.word_order
    if swap_words:
        word_order = "big" if word_order == "little" else "little"
    return modbus.encode(
        value,
        entry.data_type,
        byte_order=entry.byte_order,
        word_order=word_order,
        scale=entry.scale,
        offset=entry.offset,
    )


def decode(entry: RegisterEntry, registers: list[int] | list[bool]) -> float | int | bool:
    """The value from the registers a client read (inverse of `encode`); unscaled integers
    stay integers."""
    if entry.is_bit:
        return bool(registers[0])
    if len(registers) != entry.count:
        raise ValueError(
            f"{entry.tag}: {entry.data_type} needs {entry.count} registers, got {len(registers)}"
        )
    words = [int(r) for r in registers]
    raw = modbus.unpack(words, entry.data_type, byte_order=entry.byte_order,
                        word_order=entry.word_order)
    if entry.scale == 1 and entry.offset == 0:
        return raw
    return modbus.scaled(raw, entry.scale, entry.offset)


def load_map(path: str | Path, plant: Plant) -> ModbusMap:
    """Load a register map and check it against the plant (units, assets, tags, overlaps).

    A file that is not a valid map is a ConfigError naming the file, the field and what
    would be valid; a map that disagrees with the plant file is a PlantError."""
    path = Path(path)
    data = read_yaml(path)
    try:
        parsed = MapFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, path, what="register map", model=MapFile)) from None
    units: dict[int, UnitMap] = {}
    for i, u in enumerate(parsed.units):
        unit_id = u.unit_id
        where = f"{path}: units[{i}]"
        machine = plant.resolve(u.machine)
        spec = plant.machines.get(machine) or plant.charge_points[machine]
        if spec.protocol != "modbus" or spec.unit_id != unit_id:
            raise PlantError(
                f"{where}.unit_id: {machine} is served as {spec.protocol} unit {spec.unit_id} "
                "in the plant file"
            )
        if u.asset != spec.asset:
            raise PlantError(
                f"{where}.asset: {u.asset!r} is {spec.asset!r} in the plant file"
            )
        if unit_id in units:
            raise PlantError(f"{where}.unit_id: unit {unit_id} listed twice")
        tags = MACHINE_TAGS if machine in plant.machines else CHARGE_POINT_TAGS
        used: dict[tuple[str, int], str] = {}
        seen_tags: set[str] = set()
        for j, e in enumerate(u.registers):
            at = f"{where}.registers[{j}]"
            if e.tag not in tags:
                raise PlantError(f"{at}.tag: unknown tag {e.tag!r}; valid: {', '.join(tags)}")
            if tags[e.tag] is str:
                raise PlantError(f"{at}.tag: text tag {e.tag!r} cannot go in a register")
            if e.tag in seen_tags:
                raise PlantError(f"{at}.tag: tag {e.tag!r} mapped twice")
            seen_tags.add(e.tag)
            for a in range(e.address, e.address + e.count):
                if (e.kind, a) in used:
                    raise PlantError(
                        f"{at}.address: {e.tag} overlaps {used[(e.kind, a)]} "
                        f"at {e.kind} address {a}"
                    )
                used[(e.kind, a)] = e.tag
        units[unit_id] = UnitMap(
            unit_id=unit_id, machine=machine, asset=spec.asset, entries=tuple(u.registers)
        )
    missing = set(plant.served_by("modbus")) - {u.machine for u in units.values()}
    if missing:
        raise PlantError(f"{path}: no registers for modbus machine(s) {', '.join(sorted(missing))}")
    return ModbusMap(units=units)
