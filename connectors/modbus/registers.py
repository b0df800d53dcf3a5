"""Modbus reads of a connector: tags batched into read requests, and each tag's engineering
value from a response. Pure functions, no sockets; the data types, byte/word orders and the
scale rule are otbridge.codec.modbus's (the simulator encodes with the same)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from otbridge.codec import modbus
from otbridge.codec.modbus import BIT_KINDS, pack, power_of_ten_divisor, unpack

__all__ = [
    "BIT_KINDS",
    "ReadBlock",
    "Tag",
    "decode",
    "decode_tag",
    "encode",
    "plan_reads",
    "tag_decoder",
]

#: a raw value from its registers (a tag's data_type, byte_order, word_order, bit)
decode = unpack
#: the registers of a raw value, the inverse of `decode` (for tests and tools)
encode = pack


class Tag(Protocol):
    """What reading a tag needs (the connectors' ModbusTag config has it)."""

    @property
    def asset(self) -> str: ...
    @property
    def tag(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def address(self) -> int: ...
    @property
    def data_type(self) -> str: ...
    @property
    def byte_order(self) -> str: ...
    @property
    def word_order(self) -> str: ...
    @property
    def bit(self) -> int | None: ...
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...
    @property
    def register_count(self) -> int: ...


def decode_tag(values: Sequence[int] | Sequence[bool], tag: Tag) -> float | None:
    """A tag's engineering value from its own registers/bits; None when not a finite number."""
    if tag.kind in BIT_KINDS:
        return 1.0 if values[0] else 0.0
    value = modbus.decode(
        [int(v) for v in values],
        tag.data_type,
        byte_order=tag.byte_order,
        word_order=tag.word_order,
        bit=tag.bit,
        scale=tag.scale,
        offset=tag.offset,
    )
    return value if math.isfinite(value) else None


Values = Sequence[int] | Sequence[bool]


def tag_decoder(tag: Tag, start: int) -> Callable[[Values], float | None]:
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
        divisor = 1.0 if tag.scale == 1 else power_of_ten_divisor(tag.scale)
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
    tags: tuple[Tag, ...]

    def decode(
        self, values: Sequence[int] | Sequence[bool]
    ) -> list[tuple[Tag, float | None]]:
        return list(zip(self.tags, self.decode_values(values), strict=True))

    def decode_values(self, values: Values) -> list[float | None]:
        """The engineering values of `tags`, in order (what `decode` pairs with them)."""
        if len(values) < self.count:
            raise ValueError(
                f"{self.kind} read at {self.address} returned {len(values)} values, "
                f"expected {self.count}"
            )
        return [decode_one(values) for decode_one in self._decoders]

    @cached_property
    def _decoders(self) -> list[Callable[[Values], float | None]]:
        return [tag_decoder(tag, tag.address - self.address) for tag in self.tags]


def plan_reads(
    tags: Iterable[Tag],
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
    by_kind: dict[str, list[Tag]] = {}
    for tag in tags:
        by_kind.setdefault(tag.kind, []).append(tag)
    blocks: list[ReadBlock] = []
    for kind in ("holding", "input", "coil", "discrete"):
        ordered = sorted(by_kind.get(kind, []), key=lambda t: (t.address, t.register_count))
        limit = max_bits if kind in BIT_KINDS else max_registers
        current: list[Tag] = []
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
