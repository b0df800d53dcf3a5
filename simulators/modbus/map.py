"""The published Modbus register map (`modbus_map.yaml`) and the codec both ends share.

A register value is `raw * scale + offset`, where raw is the data_type read from the
registers: the value bytes are big-endian, split into 16-bit words; `word_order: little` puts
the least significant word first, `byte_order: little` swaps the two bytes inside each word
(ABCD = big/big, CDAB = little/big, BADC = big/little, DCBA = little/little).
Addresses are 0-based PDU addresses (what goes on the wire).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from simulators.core.model import CHARGE_POINT_TAGS, MACHINE_TAGS, Value
from simulators.core.plant import Plant, PlantError

MAP_FILE = Path(__file__).with_name("map.yaml")

Kind = Literal["holding", "input", "coil", "discrete"]
KINDS: tuple[str, ...] = ("holding", "input", "coil", "discrete")

#: data_type -> (struct format, number of 16-bit registers)
DATA_TYPES: dict[str, tuple[str, int]] = {
    "bool": ("?", 0),
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}
_INT_LIMITS = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class RegisterEntry:
    tag: str
    kind: Kind
    address: int
    data_type: str
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    description: str = ""

    @property
    def count(self) -> int:
        """Registers (or bits, for coil/discrete) the value occupies."""
        return DATA_TYPES[self.data_type][1] or 1

    @property
    def is_bit(self) -> bool:
        return self.kind in ("coil", "discrete")


@dataclass(frozen=True)
class UnitMap:
    unit_id: int
    machine: str
    asset: str
    entries: tuple[RegisterEntry, ...]

    def entry(self, tag: str) -> RegisterEntry:
        for e in self.entries:
            if e.tag == tag:
                return e
        raise KeyError(f"unit {self.unit_id} ({self.machine}) has no tag {tag!r}")

    def covers(self, kind: str, address: int, count: int) -> bool:
        """Whether every address in [address, address + count) belongs to a mapped value."""
        covered = {
            a for e in self.entries if e.kind == kind for a in range(e.address, e.address + e.count)
        }
        return all(a in covered for a in range(address, address + count))


@dataclass(frozen=True)
class ModbusMap:
    units: dict[int, UnitMap]

    def unit_of(self, machine: str) -> UnitMap:
        for unit in self.units.values():
            if unit.machine == machine:
                return unit
        raise KeyError(f"no unit serves {machine!r}")


def encode(entry: RegisterEntry, value: Value, *, swap_words: bool = False) -> list[int]:
    """The registers for a value (a bit entry gives [0] or [1]). swap_words: the
    opposite word order to the map's (a device firmware bug, fault `swap_words`)."""
    if entry.is_bit:
        return [1 if value else 0]
    fmt, _ = DATA_TYPES[entry.data_type]
    raw = (float(value) - entry.offset) / entry.scale
    if entry.data_type in _INT_LIMITS:
        lo, hi = _INT_LIMITS[entry.data_type]
        packed = struct.pack(f">{fmt}", min(hi, max(lo, round(raw))))  # saturate like a PLC
    else:
        if entry.data_type == "float32" and math.isfinite(raw):
            raw = min(_FLOAT32_MAX, max(-_FLOAT32_MAX, raw))
        packed = struct.pack(f">{fmt}", raw)
    words = [packed[i : i + 2] for i in range(0, len(packed), 2)]
    little_words = (entry.word_order == "little") != swap_words
    if little_words:
        words.reverse()
    if entry.byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def decode(entry: RegisterEntry, registers: list[int] | list[bool]) -> float | int | bool:
    """The value from the registers a client read (inverse of `encode`)."""
    if entry.is_bit:
        return bool(registers[0])
    fmt, count = DATA_TYPES[entry.data_type]
    if len(registers) != count:
        raise ValueError(
            f"{entry.tag}: {entry.data_type} needs {count} registers, got {len(registers)}"
        )
    words = [int(r).to_bytes(2, "big") for r in registers]
    if entry.byte_order == "little":
        words = [w[::-1] for w in words]
    if entry.word_order == "little":
        words.reverse()
    (raw,) = struct.unpack(f">{fmt}", b"".join(words))
    if entry.scale == 1 and entry.offset == 0:
        return raw  # type: ignore[no-any-return]
    return scaled(raw, entry.scale, entry.offset)


def scaled(raw: float, scale: float, offset: float = 0.0) -> float:
    """raw * scale + offset; a scale of 1/N divides by N, so 415 * 0.1 gives exactly 41.5
    and -41 * 0.1 gives -4.1 (not -4.1000000000000005)."""
    inverse = 1.0 / scale
    if abs(scale) < 1 and abs(inverse - round(inverse)) < 1e-9:
        return float(raw / round(inverse) + offset)
    return float(raw * scale + offset)


def _entry(raw: dict[str, Any], where: str) -> RegisterEntry:
    known = {
        "tag",
        "kind",
        "address",
        "data_type",
        "word_order",
        "byte_order",
        "scale",
        "offset",
        "unit",
        "description",
    }
    unknown = set(raw) - known
    if unknown:
        raise PlantError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(sorted(known))}"
        )
    for key in ("tag", "kind", "address", "data_type"):
        if key not in raw:
            raise PlantError(f"{where}: missing {key}")
    if raw["kind"] not in KINDS:
        raise PlantError(f"{where}: kind {raw['kind']!r} is not one of {', '.join(KINDS)}")
    if raw["data_type"] not in DATA_TYPES:
        raise PlantError(
            f"{where}: data_type {raw['data_type']!r} is not one of {', '.join(DATA_TYPES)}"
        )
    is_bit_kind = raw["kind"] in ("coil", "discrete")
    if is_bit_kind != (raw["data_type"] == "bool"):
        raise PlantError(f"{where}: data_type bool goes with kind coil or discrete, and only there")
    for key in ("word_order", "byte_order"):
        if raw.get(key, "big") not in ("big", "little"):
            raise PlantError(f"{where}: {key} {raw[key]!r} is not one of big, little")
    address = raw["address"]
    if not isinstance(address, int) or not 0 <= address <= 65535:
        raise PlantError(f"{where}: address must be 0..65535, got {address!r}")
    scale = float(raw.get("scale", 1.0))
    if scale == 0:
        raise PlantError(f"{where}: scale must not be 0")
    return RegisterEntry(
        tag=str(raw["tag"]),
        kind=raw["kind"],
        address=address,
        data_type=str(raw["data_type"]),
        word_order=raw.get("word_order", "big"),
        byte_order=raw.get("byte_order", "big"),
        scale=scale,
        offset=float(raw.get("offset", 0.0)),
        unit=raw.get("unit"),
        description=str(raw.get("description", "")),
    )


def load_map(path: str | Path, plant: Plant) -> ModbusMap:
    """Load a register map and check it against the plant (units, assets, tags, overlaps)."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not isinstance(raw.get("units"), list):
        raise PlantError(f"{path}: expected a mapping with a list under `units`")
    units: dict[int, UnitMap] = {}
    for u in raw["units"]:
        unit_id, machine = u.get("unit_id"), str(u.get("machine"))
        where = f"{path}: unit {unit_id}"
        machine = plant.resolve(machine)
        spec = plant.machines.get(machine) or plant.charge_points[machine]
        if spec.protocol != "modbus" or spec.unit_id != unit_id:
            raise PlantError(
                f"{where}: {machine} is served as {spec.protocol} unit {spec.unit_id} "
                "in the plant file"
            )
        if u.get("asset") != spec.asset:
            raise PlantError(
                f"{where}: asset {u.get('asset')!r} is {spec.asset!r} in the plant file"
            )
        tags = MACHINE_TAGS if machine in plant.machines else CHARGE_POINT_TAGS
        entries = tuple(
            _entry(e, f"{where} registers[{i}]") for i, e in enumerate(u.get("registers", []))
        )
        used: dict[tuple[str, int], str] = {}
        seen_tags: set[str] = set()
        for e in entries:
            if e.tag not in tags:
                raise PlantError(f"{where}: unknown tag {e.tag!r}; valid: {', '.join(tags)}")
            if tags[e.tag] is str:
                raise PlantError(f"{where}: text tag {e.tag!r} cannot go in a register")
            if e.tag in seen_tags:
                raise PlantError(f"{where}: tag {e.tag!r} mapped twice")
            seen_tags.add(e.tag)
            for a in range(e.address, e.address + e.count):
                if (e.kind, a) in used:
                    raise PlantError(
                        f"{where}: {e.tag} overlaps {used[(e.kind, a)]} at {e.kind} address {a}"
                    )
                used[(e.kind, a)] = e.tag
        if unit_id in units:
            raise PlantError(f"{where}: unit listed twice")
        units[unit_id] = UnitMap(
            unit_id=unit_id, machine=machine, asset=spec.asset, entries=entries
        )
    missing = set(plant.served_by("modbus")) - {u.machine for u in units.values()}
    if missing:
        raise PlantError(f"{path}: no registers for modbus machine(s) {', '.join(sorted(missing))}")
    return ModbusMap(units=units)
