"""Modbus values in registers: the one data-type table and the one encode/decode/scale rule,
shared by the connector (which decodes) and the simulator (which encodes).

A value of `data_type` is its big-endian bytes split into 16-bit registers. `word_order`
is the order of those registers ("big": most significant first, the Modbus convention;
"little": least significant first, often called word-swapped or CDAB); `byte_order` is the
order of the two bytes inside each register ("little" swaps them). So a float32 is ABCD
(big/big), CDAB (word little), BADC (byte little) or DCBA (both little). A bool is one coil
or discrete input, or one bit (0-15) of a holding or input register.

The engineering value is `raw * scale + offset`, computed in decimal on scale and offset as
written (0.1, not the binary double nearest to it) and rounded once to a double: -41 with
scale 0.1 is -4.1, not -4.1000000000000005. Encoding is the inverse: the integer nearest to
`(value - offset) / scale` (ties to even), saturated at the type's limits as a PLC would;
so every value a decode can give encodes back to the same registers.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from functools import cache
from typing import Literal, get_args

DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool"
]
DATA_TYPES: tuple[DataType, ...] = get_args(DataType)
RegisterKind = Literal["holding", "input", "coil", "discrete"]
KINDS: tuple[RegisterKind, ...] = get_args(RegisterKind)
BIT_KINDS: tuple[RegisterKind, ...] = ("coil", "discrete")
Order = Literal["big", "little"]
ORDERS: tuple[Order, ...] = get_args(Order)

FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """One Modbus data type: how many 16-bit registers it takes and how its bytes read."""

    name: DataType
    registers: int  # a bool takes one coil/discrete bit, or one bit of one register
    format: str  # struct format of its big-endian bytes ("" for bool)
    limits: tuple[int, int] | None = None  # an integer type's range


def _int(name: DataType, registers: int, fmt: str, signed: bool) -> TypeSpec:
    bits = 16 * registers
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return TypeSpec(name, registers, fmt, (lo, hi))


TYPES: dict[str, TypeSpec] = {
    spec.name: spec
    for spec in (
        _int("int16", 1, ">h", True),
        _int("uint16", 1, ">H", False),
        _int("int32", 2, ">i", True),
        _int("uint32", 2, ">I", False),
        _int("int64", 4, ">q", True),
        _int("uint64", 4, ">Q", False),
        TypeSpec("float32", 2, ">f"),
        TypeSpec("float64", 4, ">d"),
        TypeSpec("bool", 1, ""),
    )
}
assert tuple(TYPES) == DATA_TYPES


def register_count(data_type: str) -> int:
    """Registers (or bits, for a coil/discrete input) a value of data_type occupies."""
    return TYPES[data_type].registers


# -- raw values <-> registers ------------------------------------------------------------------


def registers_to_bytes(registers: Sequence[int], *, byte_order: str, word_order: str) -> bytes:
    """Raw register values -> the value's bytes, most significant first."""
    words = list(registers) if word_order == "big" else list(reversed(registers))
    order: Order = "big" if byte_order == "big" else "little"
    return b"".join(int(w).to_bytes(2, order) for w in words)


def bytes_to_registers(raw: bytes, *, byte_order: str, word_order: str) -> list[int]:
    """The inverse of `registers_to_bytes`."""
    order: Order = "big" if byte_order == "big" else "little"
    words = [int.from_bytes(raw[i : i + 2], order) for i in range(0, len(raw), 2)]
    return words if word_order == "big" else words[::-1]


def unpack(
    registers: Sequence[int],
    data_type: str,
    *,
    byte_order: str = "big",
    word_order: str = "big",
    bit: int | None = None,
) -> int | float | bool:
    """The raw value of data_type in registers (for a bool: one register, or one bit of it)."""
    if data_type == "bool":
        (word,) = registers
        return bool((int(word) >> bit) & 1) if bit is not None else bool(word)
    spec = TYPES[data_type]
    if len(registers) != spec.registers:
        raise ValueError(f"{data_type} takes {spec.registers} registers, got {len(registers)}")
    raw = registers_to_bytes(registers, byte_order=byte_order, word_order=word_order)
    value: int | float = struct.unpack(spec.format, raw)[0]
    return value


def pack(
    raw: float | bool,
    data_type: str,
    *,
    byte_order: str = "big",
    word_order: str = "big",
    bit: int | None = None,
) -> list[int]:
    """The registers of a raw value, the inverse of `unpack`. An integer type takes an
    integral value within its limits (anything else is a ValueError); float32 rounds to the
    nearest float32 (OverflowError beyond its range); a bool is [0] or [1] (the bit set)."""
    if data_type == "bool":
        return [int(bool(raw)) << (bit or 0)]
    spec = TYPES[data_type]
    if spec.limits is not None:
        if raw != int(raw) or not spec.limits[0] <= raw <= spec.limits[1]:
            raise ValueError(f"{raw!r} is not a {data_type}")
        raw = int(raw)
    packed = struct.pack(spec.format, raw)
    return bytes_to_registers(packed, byte_order=byte_order, word_order=word_order)


# -- the scale rule ----------------------------------------------------------------------------

_EXACT = Context(prec=60)  # wide enough that no rounding happens before the last one


def scaled(raw: int | float | bool, scale: float = 1.0, offset: float = 0.0) -> float:
    """The engineering value `raw * scale + offset` (bools are 0.0 / 1.0 and not scaled),
    in decimal on scale and offset as written, rounded once to a double."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if offset == 0:
        if scale == 1:
            return float(raw)
        # one IEEE operation is correctly rounded: the same double as the decimal result
        divisor = power_of_ten_divisor(scale)
        if divisor is not None:
            return float(raw) / divisor
    if isinstance(raw, float) and not math.isfinite(raw):
        return raw * scale + offset
    return float(Decimal(raw) * Decimal(repr(scale)) + Decimal(repr(offset)))


@cache
def power_of_ten_divisor(scale: float) -> float | None:
    """10**n when scale is (as written) 10**-n, else None."""
    for n in range(1, 16):
        if repr(scale) == repr(float(f"1e-{n}")):
            return float(10**n)
    return None


def unscaled(value: float, data_type: str, scale: float = 1.0, offset: float = 0.0) -> int | float:
    """The raw value that `scaled` turns into (the nearest to) `value`: for an integer type
    the nearest integer to (value - offset) / scale, ties to even, saturated at the type's
    limits; for float32, saturated at its largest finite value. NaN in an integer type is a
    ValueError."""
    spec = TYPES[data_type]
    exact = scale == 1 and offset == 0
    if spec.limits is None:
        raw = float(value)
        if not exact and math.isfinite(raw):
            raw = float(_EXACT.divide(_EXACT.subtract(Decimal(raw), Decimal(repr(offset))),
                                      Decimal(repr(scale))))
        elif not exact:
            raw = (raw - offset) / scale
        if spec.name == "float32" and math.isfinite(raw):
            raw = min(FLOAT32_MAX, max(-FLOAT32_MAX, raw))
        return raw
    lo, hi = spec.limits
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            raise ValueError(f"NaN has no {data_type} value")
        return hi if (value > 0) == (scale > 0) else lo
    if exact:
        nearest = round(value)  # exact on a double, ties to even
    else:
        quotient = _EXACT.divide(_EXACT.subtract(Decimal(value), Decimal(repr(offset))),
                                 Decimal(repr(scale)))
        nearest = int(quotient.to_integral_value())  # ties to even
    return min(hi, max(lo, nearest))  # saturates like a PLC, no wrap


# -- engineering values <-> registers ------------------------------------------------------------


def encode(
    value: float | bool,
    data_type: str,
    *,
    byte_order: str = "big",
    word_order: str = "big",
    bit: int | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> list[int]:
    """The registers that decode to (the nearest value to) an engineering value."""
    if data_type == "bool":
        return pack(bool(value), "bool", bit=bit)
    raw = unscaled(value, data_type, scale, offset)
    return pack(raw, data_type, byte_order=byte_order, word_order=word_order)


def decode(
    registers: Sequence[int],
    data_type: str,
    *,
    byte_order: str = "big",
    word_order: str = "big",
    bit: int | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> float:
    """The engineering value in registers: `scaled(unpack(...))`."""
    raw = unpack(registers, data_type, byte_order=byte_order, word_order=word_order, bit=bit)
    return scaled(raw, scale, offset)
