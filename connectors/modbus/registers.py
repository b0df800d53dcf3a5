"""Modbus register decoding and read batching: pure functions, no sockets.

Byte order is the order of the two bytes inside each 16-bit register (Modbus itself is
big-endian); word order is the order of the registers of a multi-register value ("big":
most significant register first, the Modbus convention; "little": least significant first,
often called word-swapped or CDAB).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, cached_property
from typing import Literal

from connectors.core.config import ModbusTag

STRUCT_FORMAT = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}
BIT_KINDS = ("coil", "discrete")


def registers_to_bytes(registers: Sequence[int], *, byte_order: str, word_order: str) -> bytes:
    """Raw register values -> the value's bytes, most significant first."""
    words = list(registers) if word_order == "big" else list(reversed(registers))
    order: Literal["big", "little"] = "big" if byte_order == "big" else "little"
    return b"".join(int(w).to_bytes(2, order) for w in words)


def decode(
    registers: Sequence[int],
    *,
    data_type: str,
    byte_order: str = "big",
    word_order: str = "big",
    bit: int | None = None,
) -> int | float | bool:
    """Decode the raw value of one tag from its registers (or one coil/discrete bit)."""
    if data_type == "bool":
        (word,) = registers
        return bool((int(word) >> bit) & 1) if bit is not None else bool(word)
    raw = registers_to_bytes(registers, byte_order=byte_order, word_order=word_order)
    value: int | float = struct.unpack(STRUCT_FORMAT[data_type], raw)[0]
    return value


def encode(
    value: float | bool, *, data_type: str, byte_order: str = "big", word_order: str = "big"
) -> list[int]:
    """The inverse of `decode` (for simulators and tests): a raw value -> its registers."""
    if data_type == "bool":
        return [int(bool(value))]
    fmt = STRUCT_FORMAT[data_type]
    raw = struct.pack(fmt, value if fmt[-1] in "fd" else int(value))
    order: Literal["big", "little"] = "big" if byte_order == "big" else "little"
    words = [int.from_bytes(raw[i : i + 2], order) for i in range(0, len(raw), 2)]
    return words if word_order == "big" else list(reversed(words))


def scaled(raw: int | float | bool, tag: ModbusTag) -> float:
    """Engineering value = raw * scale + offset (bools are 0.0 / 1.0 and not scaled).

    Computed in decimal and rounded once, so -41 * 0.1 is -4.1 (the double nearest to it),
    not -4.1000000000000005 as binary floating point would give.
    """
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if tag.offset == 0:
        if tag.scale == 1:
            return float(raw)
        # one IEEE operation is correctly rounded: the same double as the decimal result
        divisor = _power_of_ten_divisor(tag.scale)
        if divisor is not None:
            return float(raw) / divisor
    if isinstance(raw, float) and not math.isfinite(raw):
        return raw
    return float(Decimal(raw) * Decimal(repr(tag.scale)) + Decimal(repr(tag.offset)))


@cache
def _power_of_ten_divisor(scale: float) -> float | None:
    """10**n when scale is (as written) 10**-n, else None."""
    for n in range(1, 16):
        if repr(scale) == repr(float(f"1e-{n}")):
            return float(10**n)
    return None


def decode_tag(values: Sequence[int] | Sequence[bool], tag: ModbusTag) -> float | None:
    """A tag's engineering value from its own registers/bits; None when not a finite number."""
    if tag.kind in BIT_KINDS:
        return 1.0 if values[0] else 0.0
    raw = decode(
        [int(v) for v in values],
        data_type=tag.data_type,
        byte_order=tag.byte_order,
        word_order=tag.word_order,
        bit=tag.bit,
    )
    value = scaled(raw, tag)
    return value if math.isfinite(value) else None


Values = Sequence[int] | Sequence[bool]


def tag_decoder(tag: ModbusTag, start: int) -> Callable[[Values], float | None]:
    """`decode_tag` for the tag whose registers start at `start` in a read's values, as a
    function of those values. The common cases (bits, 16-bit integers scaled by 1 or by a
    power of ten, no offset) skip the generic bytes-and-struct path with the same result:
    a 16-bit integer is its register, and `scaled` divides it by the same power of ten."""
    if tag.kind in BIT_KINDS:
        return lambda values: 1.0 if values[start] else 0.0
    if (
        tag.data_type in ("uint16", "int16")
        and tag.byte_order == "big"
        and tag.bit is None
        and tag.offset == 0
    ):
        divisor = 1.0 if tag.scale == 1 else _power_of_ten_divisor(tag.scale)
        if divisor is not None:
            if tag.data_type == "uint16":
                return lambda values: _uint16(int(values[start])) / divisor
            return lambda values: _int16(int(values[start])) / divisor
    count = tag.register_count
    return lambda values: decode_tag(values[start : start + count], tag)


def _uint16(word: int) -> int:
    if not 0 <= word <= 0xFFFF:  # what the generic path refuses too
        raise OverflowError(f"register value {word} is not 16 bits")
    return word


def _int16(word: int) -> int:
    word = _uint16(word)
    return word - 0x10000 if word & 0x8000 else word


@dataclass(frozen=True)
class ReadBlock:
    """One read request: `count` registers (or bits) of one kind from `address`."""

    kind: str
    address: int
    count: int
    tags: tuple[ModbusTag, ...]

    def slice_for(
        self, tag: ModbusTag, values: Sequence[int] | Sequence[bool]
    ) -> Sequence[int] | Sequence[bool]:
        start = tag.address - self.address
        return values[start : start + tag.register_count]

    def decode(
        self, values: Sequence[int] | Sequence[bool]
    ) -> list[tuple[ModbusTag, float | None]]:
        return list(zip(self.tags, self.decode_values(values), strict=True))

    def decode_values(self, values: Values) -> list[float | None]:
        """The engineering values of `tags`, in order (what `decode` pairs with them)."""
        if len(values) < self.count:
            raise ValueError(
                f"{self.kind} read at {self.address} returned {len(values)} values, "
                f"expected {self.count}"
            )
        return [decode(values) for decode in self._decoders]

    @cached_property
    def _decoders(self) -> list[Callable[[Values], float | None]]:
        return [tag_decoder(tag, tag.address - self.address) for tag in self.tags]


def plan_reads(
    tags: Iterable[ModbusTag],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 0,
) -> list[ReadBlock]:
    """Batch tags into as few reads as the limits allow.

    Per register kind, tags sorted by address are joined into one block while the block
    stays within `max_registers` (`max_bits` for coils/discrete inputs) and the hole between
    the block and the next tag is at most `max_gap` unused registers. Greedy in address
    order, which is optimal for covering sorted intervals with bounded windows. Tags may
    overlap (e.g. several bits of one register).
    """
    by_kind: dict[str, list[ModbusTag]] = {}
    for tag in tags:
        by_kind.setdefault(tag.kind, []).append(tag)
    blocks: list[ReadBlock] = []
    for kind in ("holding", "input", "coil", "discrete"):
        ordered = sorted(by_kind.get(kind, []), key=lambda t: (t.address, t.register_count))
        limit = max_bits if kind in BIT_KINDS else max_registers
        current: list[ModbusTag] = []
        start = end = 0  # end is exclusive
        for tag in ordered:
            tag_end = tag.address + tag.register_count
            if tag.register_count > limit:
                raise ValueError(
                    f"{tag.asset} {tag.tag}: needs {tag.register_count} > {limit} registers"
                )
            if current and tag.address - end <= max_gap and max(end, tag_end) - start <= limit:
                current.append(tag)
                end = max(end, tag_end)
                continue
            if current:
                blocks.append(ReadBlock(kind, start, end - start, tuple(current)))
            current, start, end = [tag], tag.address, tag_end
        if current:
            blocks.append(ReadBlock(kind, start, end - start, tuple(current)))
    return blocks
