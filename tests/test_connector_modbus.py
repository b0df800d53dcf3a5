"""The Modbus connector against real pymodbus servers, real Kafka and the real registry."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kafkahelp as kh
import pytest
import yaml
from confluent_kafka import Consumer
from confluent_kafka.serialization import MessageField, SerializationContext
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from connectors.core.config import load_config
from connectors.modbus import connector as modbus
from connectors.modbus.config import ModbusConfig
from otbridge.codec.avro import ReadingEncoder
from otbridge.kafka import consumer_config
from otbridge.net import free_port, port_open
from otbridge.registry import deserializer, registry_client, serializer
from otbridge.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout

PRESS = "acme/berlin/body/line1/press01"
WELD = "acme/berlin/body/line2/weld01"


def fresh_buffer() -> str:
    """A store of its own for each connector run (a fresh instance id, seq from 0)."""
    return str(Path(tempfile.mkdtemp(prefix="otbridge-test-buffer-")) / "buffer.db")


def words(
    fmt: str, value: float, *, little_words: bool = False, swap_bytes: bool = False
) -> list[int]:
    """Registers of a value, computed with struct here (independent of the register codec)."""
    raw = struct.pack(">" + fmt, value)
    regs = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if little_words:
        regs.reverse()
    if swap_bytes:
        regs = [r[::-1] for r in regs]
    return [int.from_bytes(r, "big") for r in regs]


class ModbusServer:
    """A real pymodbus TCP server on its own event loop thread; stop() and start() it again."""

    def __init__(self, devices: Callable[[], list[SimDevice]], port: int) -> None:
        self.devices = devices
        self.port = port
        self.requests: Counter[tuple[int, int]] = Counter()  # (unit, function code) -> count
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: ModbusTcpServer | None = None

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=10)

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests[(pdu.dev_id, pdu.function_code)] += 1
        return pdu

    def start(self) -> None:
        async def start() -> None:
            self.server = ModbusTcpServer(
                self.devices(), address=("127.0.0.1", self.port), trace_pdu=self._trace
            )
            await self.server.serve_forever(background=True)

        self._run(start())

    def stop(self) -> None:
        if self.server is not None:
            self._run(self.server.shutdown())
            self.server = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


F32 = 123.456
F32_EXACT = struct.unpack(">f", struct.pack(">f", F32))[0]

# (tag, config, registers at the address, expected value)
PRESS_TAGS: list[tuple[str, dict[str, Any], float]] = [
    ("temperature", {"address": 0, "data_type": "int16", "scale": 0.1, "unit": "degC"}, -123.4),
    ("speed", {"address": 1, "data_type": "uint16"}, 65000.0),
    ("count_total", {"address": 2, "data_type": "int32"}, -100000.0),
    ("count_good", {"address": 4, "data_type": "int32", "word_order": "little"}, 123456789.0),
    ("energy", {"address": 6, "data_type": "uint32", "scale": 0.001, "offset": -10}, 3999990.0),
    ("f_abcd", {"address": 8, "data_type": "float32"}, F32_EXACT),
    ("f_cdab", {"address": 10, "data_type": "float32", "word_order": "little"}, F32_EXACT),
    ("f_badc", {"address": 12, "data_type": "float32", "byte_order": "little"}, F32_EXACT),
    (
        "f_dcba",
        {"address": 14, "data_type": "float32", "byte_order": "little", "word_order": "little"},
        F32_EXACT,
    ),
    ("pi", {"address": 16, "data_type": "float64"}, 3.141592653589793),
    ("flag3", {"address": 20, "data_type": "bool", "bit": 3}, 1.0),
]
PRESS_HOLDING = [
    -1234 & 0xFFFF,
    65000,
    *words("i", -100000),
    *words("i", 123456789, little_words=True),
    *words("I", 4_000_000_000),
    *words("f", F32),
    *words("f", F32, little_words=True),
    *words("f", F32, swap_bytes=True),
    *words("f", F32, little_words=True, swap_bytes=True),
    *words("d", 3.141592653589793),
    0b1000,
]
WELD_TAGS: list[tuple[str, dict[str, Any], float]] = [
    (
        "kelvin",
        {"register": "input", "address": 0, "data_type": "uint16", "offset": 273.15},
        315.15,
    ),
    (
        "current",
        {"register": "input", "address": 1, "data_type": "float32", "word_order": "little"},
        -0.5,
    ),
    ("running", {"register": "coil", "address": 0}, 1.0),
    ("alarm", {"register": "coil", "address": 1}, 0.0),
    ("door", {"register": "discrete", "address": 5}, 1.0),
]
WIDE = 130  # contiguous registers: more than one read may carry (125)


def scenario_devices() -> list[SimDevice]:
    press = SimDevice(
        1,
        simdata=(
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [
                SimData(0, values=PRESS_HOLDING, datatype=DataType.REGISTERS),
                SimData(1000, values=list(range(WIDE)), datatype=DataType.REGISTERS),
            ],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
        ),
    )
    weld = SimDevice(
        2,
        simdata=(
            [SimData(0, values=[True, False] + [False] * 14, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 5 + [True] + [False] * 10, datatype=DataType.BITS)],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
            [
                SimData(
                    0,
                    values=[42, *words("f", -0.5, little_words=True)],
                    datatype=DataType.REGISTERS,
                )
            ],
        ),
    )
    return [press, weld]


def scenario_config(port: int, topic: str, poll_s: float) -> dict[str, Any]:
    press_tags = [
        {"asset": PRESS, "tag": name, "register": "holding", **cfg} for name, cfg, _ in PRESS_TAGS
    ]
    press_tags += [
        {
            "asset": PRESS,
            "tag": f"r{i}",
            "register": "holding",
            "address": 1000 + i,
            "data_type": "uint16",
        }
        for i in range(WIDE)
    ]
    weld_tags = [{"asset": WELD, "tag": name, **cfg} for name, cfg, _ in WELD_TAGS]
    device = {"host": "127.0.0.1", "port": port, "poll_interval_s": poll_s, "timeout_s": 1.0}
    return {
        "connector_id": "test-modbus",
        "buffer": {"path": fresh_buffer()},
        "topic": topic,
        "devices": [
            {**device, "name": "press01", "unit_id": 1, "tags": press_tags},
            {**device, "name": "weld01", "unit_id": 2, "tags": weld_tags},
        ],
    }


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[], list[SimDevice]]], ModbusServer]]:
    servers: list[ModbusServer] = []

    def make(devices: Callable[[], list[SimDevice]]) -> ModbusServer:
        srv = ModbusServer(devices, free_port())
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()


def test_scenario_yields_exactly_the_expected_readings(
    live_stack: Settings, unique: str, server: Any
) -> None:
    srv = server(scenario_devices)
    topic = f"test.readings.{unique}"
    poll_s = 0.25
    config = ModbusConfig.model_validate(scenario_config(srv.port, topic, poll_s))
    cycles = 4
    per_cycle = len(PRESS_TAGS) + WIDE + len(WELD_TAGS)
    total = cycles * per_cycle
    started = datetime.now(UTC) - timedelta(milliseconds=1)
    rc = asyncio.run(modbus.run(config, live_stack, max_readings=total, duration_s=30))
    assert rc == 0
    finished = datetime.now(UTC) + timedelta(milliseconds=1)

    records = kh.consume(live_stack, topic, total, settle_s=1.5)
    assert len(records) == total  # and not one more
    readings = sorted((value for _, value, _ in records), key=lambda r: r["seq"])
    assert [r["seq"] for r in readings] == list(range(total))  # no gap, no duplicate
    assert {key for key, _, _ in records} == {PRESS.encode(), WELD.encode()}
    assert all(key == value["asset"].encode() for key, value, _ in records)
    (connector,) = {r["connector"] for r in readings}
    assert connector.startswith("test-modbus@")

    expected = {(PRESS, name): value for name, _, value in PRESS_TAGS}
    expected |= {(PRESS, f"r{i}"): float(i) for i in range(WIDE)}
    expected |= {(WELD, name): value for name, _, value in WELD_TAGS}
    units = {(PRESS, "temperature"): "degC"}
    for r in readings:
        key = (r["asset"], r["tag"])
        assert r["value"] == expected[key], key  # exact: types, scaling, word and byte orders
        assert r["quality"] == "GOOD"
        assert r["text"] is None
        assert r["unit"] == units.get(key)
        unit_id = 1 if r["asset"] == PRESS else 2
        assert r["source"] == f"modbus://127.0.0.1:{srv.port}/{unit_id}"
        assert started <= r["source_ts"] <= r["ingest_ts"] <= finished

    # each device: its tags in config order, once per poll; a poll's tags read within the poll
    # interval, and polls one interval apart
    for asset, names in (
        (PRESS, [n for n, _, _ in PRESS_TAGS] + [f"r{i}" for i in range(WIDE)]),
        (WELD, [n for n, _, _ in WELD_TAGS]),
    ):
        mine = [r for r in readings if r["asset"] == asset]
        polls = [mine[i : i + len(names)] for i in range(0, len(mine), len(names))]
        assert len(polls) >= cycles - 1
        starts = []
        for poll in polls:
            assert [r["tag"] for r in poll] == names[: len(poll)]
            stamps = [r["source_ts"] for r in poll]
            assert max(stamps) - min(stamps) < timedelta(seconds=poll_s)
            starts.append(min(stamps))
        for a, b in itertools.pairwise(starts):
            assert timedelta(seconds=poll_s * 0.5) < b - a < timedelta(seconds=poll_s * 1.6)

    # batching: press01 = 1 read of the 21 typed registers + 2 reads of the 130 (125 + 5);
    # weld01 = input 0..2, coils 0..1, discrete 5: three reads per poll
    press_polls = sum(1 for r in readings if r["asset"] == PRESS and r["tag"] == "temperature")
    weld_polls = sum(1 for r in readings if r["asset"] == WELD and r["tag"] == "kelvin")
    press_reads = srv.requests[(1, 3)]
    assert 3 * press_polls <= press_reads <= 3 * (press_polls + 1)
    assert set(srv.requests) == {(1, 3), (2, 4), (2, 1), (2, 2)}
    assert weld_polls <= srv.requests[(2, 4)] <= weld_polls + 1


def outage_devices() -> list[SimDevice]:
    return [
        SimDevice(
            1,
            simdata=[SimData(0, values=[215, *words("f", 1.5)], datatype=DataType.REGISTERS)],
        )
    ]


def test_outage_gives_bad_readings_then_good_again_without_a_gap(
    live_stack: Settings, unique: str, server: Any, tmp_path: Path
) -> None:
    """Stop the device mid-run: BAD every poll, never the last value; back: GOOD, no seq gap."""
    srv = server(outage_devices)
    topic = f"test.readings.{unique}"
    poll_s = 0.2
    doc = {
        "connector_id": "test-outage",
        "buffer": {"path": fresh_buffer()},
        "topic": topic,
        "stats_interval_s": 1,
        "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 0.4},
        "devices": [
            {
                "name": "press01",
                "port": srv.port,
                "poll_interval_s": poll_s,
                "timeout_s": 0.5,
                "tags": [
                    {
                        "asset": PRESS,
                        "tag": "temperature",
                        "register": "holding",
                        "address": 0,
                        "data_type": "int16",
                        "scale": 0.1,
                        "unit": "degC",
                    },
                    {
                        "asset": PRESS,
                        "tag": "vibration",
                        "register": "holding",
                        "address": 1,
                        "data_type": "float32",
                        "unit": "mm/s",
                    },
                ],
            }
        ],
    }
    path = tmp_path / "outage.yaml"
    path.write_text(yaml.safe_dump(doc))
    log_path = tmp_path / "connector.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otbridge.cli", "connect", "modbus", "--config", str(path)],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        watcher = Watcher(live_stack, topic)
        watcher.wait_for(lambda rs: count(rs, "GOOD") >= 6, "good readings")
        srv.stop()
        watcher.wait_for(lambda rs: trailing(rs, "BAD") >= 8, "BAD readings while down")
        srv.start()
        watcher.wait_for(
            lambda rs: trailing(rs, "GOOD") >= 6 and count(rs, "BAD") >= 8, "good readings again"
        )
        assert proc.poll() is None, "the connector exited during the outage"
        proc.send_signal(signal.SIGTERM)  # flushes what is queued, exits 0
        assert proc.wait(timeout=30) == 0
        readings = watcher.drain(quiet_s=2.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        watcher.close()
    log_text = log_path.read_text()
    assert "reconnected" in log_text, log_text
    assert "Traceback" not in log_text, log_text

    assert [r["seq"] for r in readings] == list(range(len(readings)))  # no gap, no duplicate
    for name, good_value in (("temperature", 21.5), ("vibration", 1.5)):
        mine = [r for r in readings if r["tag"] == name]
        qualities = [r["quality"] for r in mine]
        runs = [q for i, q in enumerate(qualities) if i == 0 or q != qualities[i - 1]]
        assert runs == ["GOOD", "BAD", "GOOD"], runs
        bad = [r for r in mine if r["quality"] == "BAD"]
        assert all(r["value"] is None for r in bad)  # never a repeated last value
        assert all(r["value"] == good_value for r in mine if r["quality"] == "GOOD")
        assert_every_interval([r["source_ts"] for r in bad], poll_s)


def assert_every_interval(stamps: list[datetime], interval_s: float) -> None:
    """One reading per interval: none missed, none doubled (a late tick is not made up)."""
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert len(gaps) >= 3, gaps
    assert all(0 < g < 3 * interval_s for g in gaps), gaps
    assert 0.8 * interval_s <= sum(gaps) / len(gaps) <= 1.25 * interval_s, gaps


def count(readings: list[dict[str, Any]], quality: str) -> int:
    return sum(1 for r in readings if r["quality"] == quality)


def trailing(readings: list[dict[str, Any]], quality: str) -> int:
    n = 0
    for r in reversed(readings):
        if r["quality"] != quality:
            break
        n += 1
    return n


class Watcher:
    """Follows a readings topic, so the test acts on what reached Kafka, not on sleeps."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.ctx = SerializationContext(topic, MessageField.VALUE)
        self.consumer = Consumer(consumer_config(settings, f"watch-{topic}-{os.getpid()}"))
        self.consumer.subscribe([topic])
        self.de = deserializer(registry_client(settings))
        self.readings: list[dict[str, Any]] = []

    def _poll(self) -> bool:
        msg = self.consumer.poll(0.2)
        if msg is None or msg.error():
            return False
        self.readings.append(self.de(msg.value(), self.ctx))
        self.readings.sort(key=lambda r: r["seq"])
        return True

    def wait_for(
        self, done: Callable[[list[dict[str, Any]]], bool], what: str, timeout_s: float = 30
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self.readings):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} in {timeout_s} s; {len(self.readings)} readings")
            self._poll()

    def drain(self, *, quiet_s: float) -> list[dict[str, Any]]:
        """Everything until nothing new arrived for `quiet_s`."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            if self._poll():
                quiet_since = time.monotonic()
        return self.readings

    def close(self) -> None:
        self.consumer.close()


def test_example_config_matches_simulator_map() -> None:
    """connectors/examples/modbus.yaml reads exactly what simulators/modbus/map.yaml serves."""
    published = yaml.safe_load((PROJECT_ROOT / "simulators" / "modbus" / "map.yaml").read_text())
    config = load_config(PROJECT_ROOT / "connectors" / "examples" / "modbus.yaml", ModbusConfig)
    ours = {
        (d.unit_id, t.asset, t.tag): (
            t.kind,
            t.address,
            t.data_type,
            t.word_order,
            t.byte_order,
            t.scale,
            t.offset,
            t.unit,
        )
        for d in config.devices
        for t in d.tags
    }
    theirs = {
        (u["unit_id"], u["asset"], r["tag"]): (
            r["kind"],
            r["address"],
            r["data_type"],
            r.get("word_order", "big"),
            r.get("byte_order", "big"),
            float(r.get("scale", 1)),
            float(r.get("offset", 0)),
            r.get("unit"),
        )
        for u in published["units"]
        for r in u["registers"]
    }
    assert ours == theirs
    assert {(d.host, d.port) for d in config.devices} == {("127.0.0.1", 5020)}


def test_wire_format_is_exactly_the_registry_serializers(live_stack: Settings, unique: str) -> None:
    """The connectors' lean encoder writes the bytes otbridge.registry's AvroSerializer writes."""
    topic = f"test.readings.{unique}"
    encode = ReadingEncoder(registry_client(live_stack), topic)
    reference = serializer(registry_client(live_stack), "Reading")
    ts = datetime(2026, 1, 5, 10, 0, 0, 123000, tzinfo=UTC)
    for value, text, quality in (
        (21.5, None, "GOOD"),
        (None, None, "BAD"),
        (None, "Job-42", "GOOD"),
    ):
        record = {
            "asset": PRESS, "tag": "t", "value": value, "text": text, "unit": "degC",
            "quality": quality, "source_ts": ts, "ingest_ts": ts + timedelta(milliseconds=5),
            "source": "modbus://127.0.0.1:5020/1", "seq": 2**40, "connector": "x@1",
        }  # fmt: skip
        wire = encode(record)
        assert wire == reference(record, SerializationContext(topic, MessageField.VALUE))
        assert wire[0] == 0  # magic byte, then the 4-byte schema id
    versions = registry_client(live_stack).get_versions(f"{topic}-value")
    assert versions == [1]  # one schema version, whichever wrote first


def start_simulator(kind: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`otbridge sim modbus|opcua` on `port`; returns once it accepts connections."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otbridge.cli", "sim", kind, "--port", str(port)],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()
        if port_open(port):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"simulator {kind} did not listen on {port}: {log_path.read_text()}")


def test_example_config_reads_every_tag_of_the_simulator(
    live_stack: Settings, unique: str, tmp_path: Path
) -> None:
    port = free_port()
    sim = start_simulator("modbus", port, tmp_path / "sim.log")
    try:
        doc = yaml.safe_load((PROJECT_ROOT / "connectors/examples/modbus.yaml").read_text())
        doc["topic"] = f"test.readings.{unique}"
        for device in doc["devices"]:
            device["port"] = port
        config = ModbusConfig.model_validate(doc)
        tags = {(t.asset, t.tag) for d in config.devices for t in d.tags}
        assert asyncio.run(modbus.run(config, live_stack, max_readings=2 * len(tags))) == 0
    finally:
        sim.terminate()
        sim.wait(10)
    readings = [v for _, v, _ in kh.consume(live_stack, doc["topic"], 2 * len(tags))]
    assert {(r["asset"], r["tag"]) for r in readings} == tags
    assert all(r["quality"] == "GOOD" and r["value"] is not None for r in readings)
    assert {r["value"] for r in readings if r["tag"] == "state"} <= {1, 2, 3, 4, 5, 6}
