"""The Modbus codec (otbridge/codec/modbus.py) over random values of every data type, and the
simulator's encode followed by the connector's decode over the published register map."""

from __future__ import annotations

import math
import random
import re
import struct
from pathlib import Path

import pytest

from connectors.core.config import load_config
from connectors.modbus.config import ModbusConfig
from connectors.modbus.registers import plan_reads
from otbridge.codec import modbus
from otbridge.codec.modbus import DATA_TYPES, ORDERS, TYPES, pack, unpack
from otbridge.errors import ConfigError
from simulators.core.plant import load_plant
from simulators.modbus import map as sim_map

NUMERIC = [t for t in DATA_TYPES if t != "bool"]
BYTE_WORD = [(b, w) for b in ORDERS for w in ORDERS]
EXAMPLE = Path(__file__).parent.parent / "connectors" / "examples" / "modbus.yaml"


def raws(data_type: str, rng: random.Random, n: int = 300, *, below: int | None = None) -> list:
    """Edge values and n random raw values of data_type (|raw| < below for integers)."""
    spec = TYPES[data_type]
    if spec.limits is not None:
        lo, hi = spec.limits
        if below is not None:
            lo, hi = max(lo, -below + 1), min(hi, below - 1)
        return [lo, hi, 0, 1, max(lo, -1), *(rng.randint(lo, hi) for _ in range(n))]
    size = 4 if data_type == "float32" else 8
    fmt = ">f" if size == 4 else ">d"
    out = [struct.unpack(fmt, struct.pack(fmt, v))[0]  # as the type holds them
           for v in (0.0, -0.0, 1.5, -4.1, math.inf, -math.inf)]
    while len(out) < n:
        (value,) = struct.unpack(fmt, rng.randbytes(size))
        if not math.isnan(value):
            out.append(value)
    if data_type == "float32":
        out.append(modbus.FLOAT32_MAX)
    return out


@pytest.mark.parametrize("data_type", NUMERIC)
def test_every_raw_value_round_trips_in_every_byte_and_word_order(data_type: str) -> None:
    rng = random.Random(f"raw {data_type}")
    count = modbus.register_count(data_type)
    for raw in raws(data_type, rng):
        words = {}
        for byte_order, word_order in BYTE_WORD:
            registers = pack(raw, data_type, byte_order=byte_order, word_order=word_order)
            assert len(registers) == count and all(0 <= r <= 0xFFFF for r in registers)
            back = unpack(registers, data_type, byte_order=byte_order, word_order=word_order)
            assert back == raw and math.copysign(1, back) == math.copysign(1, raw), raw
            words[byte_order, word_order] = registers
        # the same bytes, reordered: words reversed; bytes swapped inside each word
        assert words["big", "little"] == words["big", "big"][::-1]
        assert words["little", "big"] == [struct.unpack("<H", struct.pack(">H", w))[0]
                                          for w in words["big", "big"]]


SCALES = [(1.0, 0.0), (0.1, 0.0), (0.001, 0.0), (0.01, -40.0), (2.0, 0.0), (0.5, 10.0),
          (-0.1, 0.0), (0.3, 0.25)]


@pytest.mark.parametrize("data_type", NUMERIC)
@pytest.mark.parametrize(("scale", "offset"), SCALES)
def test_every_decoded_value_encodes_back_to_its_registers(
    data_type: str, scale: float, offset: float
) -> None:
    """decode then encode is the identity on registers, wherever a double tells raw values
    apart (integers below 2**50)."""
    rng = random.Random(f"scaled {data_type} {scale} {offset}")
    for raw in raws(data_type, rng, below=2**50):
        registers = pack(raw, data_type, word_order="little")
        value = modbus.decode(registers, data_type, word_order="little", scale=scale,
                              offset=offset)
        if not math.isfinite(value) and (scale, offset) != (1.0, 0.0):
            continue
        again = modbus.encode(value, data_type, word_order="little", scale=scale, offset=offset)
        if TYPES[data_type].limits is not None or (scale, offset) == (1.0, 0.0):
            assert again == registers, (raw, value)
        else:  # a scaled float: the nearest float to (value - offset) / scale
            value_again = modbus.decode(again, data_type, word_order="little", scale=scale,
                                        offset=offset)
            tolerance = 1e-6 if data_type == "float32" else 1e-12
            assert math.isclose(value_again, value, rel_tol=tolerance), (raw, value)


@pytest.mark.parametrize("data_type", [t for t in NUMERIC if TYPES[t].limits])
def test_integers_round_to_the_nearest_and_saturate_like_a_plc(data_type: str) -> None:
    lo, hi = TYPES[data_type].limits  # type: ignore[misc]
    rng = random.Random(f"nearest {data_type}")
    for _ in range(300):
        value = rng.uniform(-1000.0, 1000.0)
        raw = modbus.unscaled(value, data_type, 0.1, 0.0)
        assert abs(raw * 0.1 - value) <= 0.05 + 1e-9 or raw in (lo, hi), (value, raw)
    assert modbus.unscaled(0.25, data_type, 0.1) == 2  # 2.5 exactly: ties to even
    assert modbus.unscaled(0.35, data_type, 0.1) == 3  # 0.35 is 0.34999...: below the tie
    assert modbus.unscaled(1e30, data_type) == hi and modbus.unscaled(-1e30, data_type) == lo
    assert modbus.unscaled(math.inf, data_type) == hi
    assert modbus.unscaled(math.inf, data_type, -1.0) == lo
    with pytest.raises(ValueError, match="NaN"):
        modbus.unscaled(math.nan, data_type)
    with pytest.raises(ValueError, match=f"is not a {data_type}"):
        pack(hi + 1, data_type)


def test_float32_saturates_and_bools_are_bits() -> None:
    assert unpack(modbus.encode(1e39, "float32"), "float32") == modbus.FLOAT32_MAX
    assert unpack(modbus.encode(-1e39, "float32"), "float32") == -modbus.FLOAT32_MAX
    assert math.isinf(unpack(modbus.encode(math.inf, "float32"), "float32"))
    assert modbus.encode(True, "bool") == [1] and modbus.encode(True, "bool", bit=3) == [8]
    assert modbus.decode([8], "bool", bit=3) == 1.0 and modbus.decode([8], "bool", bit=2) == 0.0


def test_simulator_encode_then_connector_decode_is_exact_for_the_published_map() -> None:
    """For every tag of the published map: what the simulator puts in the registers for a
    value, the connector (connectors/examples/modbus.yaml, its real read path) reads back as
    exactly that value when the value is one the registers can hold, else the nearest."""
    mmap = sim_map.load_map(sim_map.MAP_FILE, load_plant())
    config = load_config(EXAMPLE, ModbusConfig)
    tags = {(d.unit_id, t.tag): t for d in config.devices for t in d.tags}
    rng = random.Random("published map")
    checked = 0
    for unit_id, unit in mmap.units.items():
        for entry in unit.entries:
            tag = tags[unit_id, entry.tag]
            (block,) = plan_reads([tag])

            def read(value: float | bool, *, block=block, entry=entry) -> float | None:
                registers = sim_map.encode(entry, value)
                values = [bool(r) for r in registers] if entry.is_bit else registers
                ((_, decoded),) = block.decode(values)
                return decoded

            if entry.is_bit:
                assert (read(True), read(False)) == (1.0, 0.0)
                continue
            spec = TYPES[entry.data_type]
            for raw in raws(entry.data_type, rng, n=200, below=2**50):
                if not math.isfinite(raw):
                    continue
                value = modbus.scaled(raw, entry.scale, entry.offset)
                assert read(value) == value, (unit.machine, entry.tag, raw)
                checked += 1
            for _ in range(200):  # model values in between: the nearest value there is
                value = rng.uniform(-1e4, 1e4)
                got = read(value)
                assert got is not None
                if spec.limits is not None:
                    lo, hi = spec.limits
                    nearest = min(hi, max(lo, round((value - entry.offset) / entry.scale)))
                    assert got == modbus.scaled(nearest, entry.scale, entry.offset)
                elif entry.data_type == "float32":
                    assert got == struct.unpack(">f", struct.pack(">f", value))[0]
                else:
                    assert got == value
    assert checked > 1000


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("address: 6, data_type: int16", "address: 6, data_type: int61",
         r"units\[0\]\.registers\[4\]\.data_type: valid: 'int16', 'uint16', .* or 'bool'; "
         r"got 'int61'"),
        ("{tag: running, kind: coil, address: 0, data_type: bool",
         "{tag: running, kind: coil, address: 0, data_type: uint16",
         r"units\[0\]\.registers\[10\]\.data_type: coil addresses hold one bit; valid: 'bool'"),
        ("kind: holding, address: 0,", "kind: holdings, address: 0,",
         r"units\[0\]\.registers\[0\]\.kind: valid: 'holding', 'input', 'coil' or 'discrete'"),
        ("word_order: little, byte_order: big, scale: 1, offset: 0, unit: rpm",
         "word_order: middle, byte_order: big, scale: 1, offset: 0, unit: rpm",
         r"units\[0\]\.registers\[6\]\.word_order: valid: 'big' or 'little'; got 'middle'"),
    ],
)
def test_a_broken_map_names_the_file_the_field_and_what_is_valid(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    broken = tmp_path / "map.yaml"
    text = sim_map.MAP_FILE.read_text()
    assert old in text
    broken.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=f"(?s){re.escape(str(broken))}.*{message}"):
        sim_map.load_map(broken, load_plant())
