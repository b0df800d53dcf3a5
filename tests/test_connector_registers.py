"""Modbus decoding and read batching (connectors/modbus/registers.py, otbridge/codec/modbus.py):
no sockets, exact values."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from connectors.modbus.config import ModbusTag
from connectors.modbus.registers import ReadBlock, decode, decode_tag, encode, plan_reads

ASSET = "acme/berlin/body/line1/press01"


def tag(name: str, register: str, address: int, data_type: str = "uint16", **kw: Any) -> ModbusTag:
    fields = {"asset": ASSET, "tag": name, "register": register, "address": address}
    if register in ("holding", "input"):
        fields["data_type"] = data_type
    return ModbusTag.model_validate({**fields, **kw})


# float32 123.456 is 0x42F6E979: the four byte/word orders of it as registers on the wire
F32 = struct.unpack(">f", bytes.fromhex("42f6e979"))[0]


@pytest.mark.parametrize(
    ("registers", "byte_order", "word_order"),
    [
        ([0x42F6, 0xE979], "big", "big"),  # ABCD
        ([0xE979, 0x42F6], "big", "little"),  # CDAB
        ([0xF642, 0x79E9], "little", "big"),  # BADC
        ([0x79E9, 0xF642], "little", "little"),  # DCBA
    ],
)
def test_float32_in_every_byte_and_word_order(
    registers: list[int], byte_order: str, word_order: str
) -> None:
    value = decode(registers, data_type="float32", byte_order=byte_order, word_order=word_order)
    assert value == F32
    assert math.isclose(value, 123.456, rel_tol=1e-7)
    assert encode(F32, data_type="float32", byte_order=byte_order, word_order=word_order) == (
        registers
    )


@pytest.mark.parametrize(
    ("registers", "data_type", "word_order", "expected"),
    [
        ([0xFFFE], "int16", "big", -2),
        ([0x8000], "int16", "big", -32768),
        ([0xFFFE], "uint16", "big", 65534),
        ([0xFFFE, 0x7960], "int32", "big", -100000),
        ([0x7960, 0xFFFE], "int32", "little", -100000),
        ([0xEE6B, 0x2800], "uint32", "big", 4_000_000_000),
        ([0x2800, 0xEE6B], "uint32", "little", 4_000_000_000),
        ([0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], "int64", "big", -2),
        ([0x0000, 0x0000, 0x0000, 0x0001], "uint64", "little", 2**48),
        ([0x4009, 0x21FB, 0x5444, 0x2D18], "float64", "big", math.pi),
        ([0x2D18, 0x5444, 0x21FB, 0x4009], "float64", "little", math.pi),
    ],
)
def test_integers_and_doubles_exact(
    registers: list[int], data_type: str, word_order: str, expected: float
) -> None:
    assert decode(registers, data_type=data_type, word_order=word_order) == expected
    assert encode(expected, data_type=data_type, word_order=word_order) == registers


def test_scale_offset_and_signed_exact_in_decimal() -> None:
    t = tag("temperature", "holding", 6, "int16", scale=0.1, offset=-5.0)
    assert decode_tag([0xFB2E], t) == -128.4  # raw -1234
    assert decode_tag([0xFFD7], tag("t", "holding", 0, "int16", scale=0.1)) == -4.1  # raw -41
    energy = tag("e", "input", 0, "uint32", scale=0.001, offset=-10)
    assert decode_tag(encode(4_000_000_000, data_type="uint32"), energy) == 3_999_990.0
    assert decode_tag([0x0001, 0x86A1], energy) == 90.001  # raw 100001
    assert decode_tag([0x3FC0, 0x0000], tag("f", "holding", 0, "float32", scale=2)) == 3.0


def test_bool_from_coil_and_from_register_bit() -> None:
    assert decode_tag([True], tag("running", "coil", 0)) == 1.0
    assert decode_tag([False], tag("alarm", "discrete", 3)) == 0.0
    assert decode_tag([0b1000], tag("flag", "holding", 0, "bool", bit=3)) == 1.0
    assert decode_tag([0b1000], tag("flag", "holding", 0, "bool", bit=2)) == 0.0


def test_nan_and_infinity_are_not_values() -> None:
    t = tag("vibration", "holding", 0, "float32")
    assert decode_tag(encode(float("nan"), data_type="float32"), t) is None
    assert decode_tag(encode(float("inf"), data_type="float32"), t) is None


def test_contiguous_tags_become_one_read() -> None:
    tags = [
        tag("state", "holding", 0),
        tag("count", "holding", 1, "uint32"),
        tag("speed", "holding", 3, "float32", word_order="little"),
        tag("energy", "holding", 5, "float64"),
    ]
    assert plan_reads(tags) == [ReadBlock("holding", 0, 9, tuple(tags))]


def test_reads_respect_the_125_register_limit_without_splitting_a_value() -> None:
    tags = [tag(f"r{i}", "holding", i) for i in range(124)] + [tag("f", "holding", 124, "float32")]
    blocks = plan_reads(tags)
    assert [(b.address, b.count) for b in blocks] == [(0, 124), (124, 2)]
    many = [tag(f"r{i}", "input", i) for i in range(300)]
    assert [(b.address, b.count) for b in plan_reads(many)] == [(0, 125), (125, 125), (250, 50)]
    assert [(b.address, b.count) for b in plan_reads(many, max_registers=100)] == [
        (0, 100),
        (100, 100),
        (200, 100),
    ]


def test_gaps_join_reads_only_up_to_max_gap() -> None:
    tags = [tag("a", "holding", 0), tag("b", "holding", 4), tag("c", "holding", 20)]
    assert [(b.address, b.count) for b in plan_reads(tags)] == [(0, 1), (4, 1), (20, 1)]
    assert [(b.address, b.count) for b in plan_reads(tags, max_gap=3)] == [(0, 5), (20, 1)]
    assert [(b.address, b.count) for b in plan_reads(tags, max_gap=15)] == [(0, 21)]


def test_kinds_are_read_separately_and_bits_in_2000s() -> None:
    tags = [tag("h", "holding", 0), tag("i", "input", 0), tag("c", "coil", 0)]
    tags += [tag(f"d{i}", "discrete", i) for i in range(2100)]
    blocks = plan_reads(tags)
    assert [(b.kind, b.address, b.count) for b in blocks] == [
        ("holding", 0, 1),
        ("input", 0, 1),
        ("coil", 0, 1),
        ("discrete", 0, 2000),
        ("discrete", 2000, 100),
    ]


def test_overlapping_tags_share_a_read_and_decode_from_one_response() -> None:
    word = tag("word", "holding", 10)
    bit0 = tag("bit0", "holding", 10, "bool", bit=0)
    bit15 = tag("bit15", "holding", 10, "bool", bit=15)
    low = tag("low", "holding", 11, "int32", word_order="little")
    (block,) = plan_reads([low, bit15, word, bit0])
    assert (block.address, block.count) == (10, 3)
    decoded = {t.tag: v for t, v in block.decode([0x8001, 0x0002, 0x0001])}
    assert decoded == {"word": 0x8001, "bit0": 1.0, "bit15": 1.0, "low": 0x00010002}


def test_a_short_response_is_an_error_not_a_wrong_value() -> None:
    (block,) = plan_reads([tag("a", "holding", 0, "uint32")])
    with pytest.raises(ValueError, match="expected 2"):
        block.decode([1])
