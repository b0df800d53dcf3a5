"""Nothing lost at the edge, proven by killing the broker (issue: store and forward).

A Kafka broker and a registry of this module's own (free ports, a fresh state folder; the
shared test stack is never killed), the real simulators and `otbridge connect` processes:

- Modbus at >= 500 readings/s: the broker SIGKILLed five times mid-stream and restarted; then
  down for 6 minutes, the connector SIGKILLed and restarted once inside that outage.
- OPC UA, the same with a shorter outage.
- A tiny buffer with Kafka away: the readings missing downstream are exactly the dropped ones
  the connector reports.

Exact counts: every `(connector, seq)` from the first to the last is in the topic exactly once,
under one instance id across the restart, and every tag has a reading in every poll interval
in which a connector process was alive (one interval in a hundred may be missed, none by more
than a second, for a process starved of CPU by the suite that runs beside this one).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

import connectors
from otbridge.codec.wire import RegistryLookup, WireDecoder
from otbridge.kafka import consumer_config
from otbridge.net import free_ports, wait_for_port
from otbridge.settings import Settings, StackSettings
from otbridge.stack.components import Component, Kafka, Registry

pytestmark = pytest.mark.outage
EXAMPLES = Path(connectors.__file__).with_name("examples")
POLL_S = 0.1  # the example's 51 Modbus tags every 0.1 s: 510 readings/s
LONG_OUTAGE_S = int(os.environ.get("OTBRIDGE_TEST_OUTAGE_S", "360"))  # shorter only by hand


@dataclass
class Broker:
    """This module's Kafka and registry, killable."""

    settings: Settings
    kafka: Kafka
    registry: Registry

    def kill_kafka(self) -> None:
        for pid in self.kafka.pids():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while self.kafka.running() and time.monotonic() < deadline:
            time.sleep(0.1)

    def start_kafka(self) -> None:
        self.kafka.start()
        wait_healthy(self.kafka, 90)
        if not self.registry.health().healthy:  # it may not survive its storage going away
            self.registry.stop()
            self.registry.start()
            wait_healthy(self.registry, 90)


def wait_healthy(part: Component, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not part.health().healthy:
        assert time.monotonic() < deadline, f"{part.name} not healthy: {part.log_tail()}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def broker(settings: Settings) -> Iterator[Broker]:
    base = settings.stack
    state = base.state_dir / "outage-stack"
    shutil.rmtree(state, ignore_errors=True)
    ports = dict(zip(("kafka_port", "kafka_controller_port", "registry_port"),
                     free_ports(3), strict=True))
    own = Settings(stack=StackSettings(state_dir=state, lib_dir=base.lib_dir, **ports),
                   kafka={"bootstrap_servers": f"127.0.0.1:{ports['kafka_port']}"},
                   registry={"url": f"http://127.0.0.1:{ports['registry_port']}"
                                    "/apis/ccompat/v7"})
    b = Broker(own, Kafka(own), Registry(own))
    try:
        b.kafka.start()
        wait_healthy(b.kafka, 90)
        b.registry.start()
        wait_healthy(b.registry, 90)
        yield b
    finally:
        b.registry.stop()
        b.kafka.stop()


@dataclass
class ConnectorProcess:
    """`otbridge connect <kind>` runs, each alive window recorded (wall clock ms)."""

    kind: str
    config: Path
    log: Path
    windows: list[tuple[int, int]] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otbridge.cli", "connect", self.kind, "--config",
             str(self.config), "--log-level", "INFO"], stdout=out, stderr=out,
            stdin=subprocess.DEVNULL)
        out.close()
        self.windows.append((now_ms(), 0))

    def _ended(self) -> None:
        start, _ = self.windows[-1]
        self.windows[-1] = (start, now_ms())

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        self._ended()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        self._ended()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def ensure_gone(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stats(self) -> list[dict[str, int]]:
        """Every stats line it logged, as numbers."""
        out = []
        for line in self.log.read_text().splitlines():
            if "buffered=" in line:
                out.append({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)})
        return out

    def wait_drained(self, timeout_s: float) -> None:
        """Until a stats line after now says the buffer is empty."""
        seen = len(self.stats())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = self.stats()[seen:]
            if any(line["buffered"] == 0 for line in lines):
                return
            assert self.proc is not None and self.proc.poll() is None, \
                self.log.read_text()[-3000:]
            time.sleep(0.5)
        raise AssertionError(f"the buffer did not drain in {timeout_s} s: "
                             f"{self.stats()[-1:]}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def connector_file(tmp: Path, b: Broker, kind: str, topic: str, **changes: Any) -> Path:
    doc = yaml.safe_load((EXAMPLES / f"{kind}.yaml").read_text())
    doc.update(topic=topic, stats_interval_s=1, connector_id=f"outage-{kind}",
               kafka={"bootstrap_servers": b.settings.kafka.bootstrap_servers},
               registry={"url": b.settings.registry.url},
               reconnect={"initial_delay_s": 0.2, "max_delay_s": 1.0})
    doc["buffer"] = {"path": str(tmp / f"{kind}-buffer.db"), **changes.pop("buffer", {})}
    for device in doc["devices"]:
        device.update(changes)
    path = tmp / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def consume_all(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every record of `topic`, from its start to its end now, decoded as written, with where
    it is (`_partition`, `_offset`) and whether it says it was sent from the backlog
    (`_replayed`: the Kafka header otbridge-replayed)."""
    decoder = WireDecoder(None, RegistryLookup.of(settings.registry))
    consumer = Consumer(consumer_config(settings, f"test-outage-{time.monotonic_ns()}",
                                        **{"enable.partition.eof": True}))
    try:
        meta = consumer.list_topics(topic, timeout=10)
        ends = {}
        for p in meta.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[dict[str, Any]] = []
        todo = set(ends)
        deadline = time.monotonic() + 120
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error():
                    continue
                decoded = decoder.decode(msg.value())
                assert decoded.record is not None, decoded
                partition, offset = msg.partition() or 0, msg.offset() or 0
                out.append({**decoded.record, "_partition": partition, "_offset": offset,
                            "_replayed": ("otbridge-replayed", b"1") in (msg.headers() or [])})
                if offset + 1 >= ends[partition]:
                    todo.discard(partition)
        assert not todo, f"could not read {topic} to its end"
        return out
    finally:
        consumer.close()


def assert_exactly_once(readings: list[dict[str, Any]]) -> str:
    (instance,) = {r["connector"] for r in readings}  # one instance id across the restarts
    seqs = Counter(r["seq"] for r in readings)
    twice = [s for s, n in seqs.items() if n > 1]
    assert not twice, f"{len(twice)} seqs twice, e.g. {twice[:5]}"
    missing = sorted(set(range(max(seqs) + 1)) - set(seqs))
    assert not missing, f"{len(missing)} seqs missing, e.g. {missing[:5]}"
    return str(instance)


def assert_every_interval(readings: list[dict[str, Any]], windows: list[tuple[int, int]],
                          interval_s: float, *, startup_s: float, tags: int) -> None:
    """Each tag has a reading in every interval of every alive window (after its start-up:
    the process importing, connecting to the device)."""
    by_tag: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in readings:
        by_tag[(r["asset"], r["tag"])].append(int(r["source_ts"].timestamp() * 1000))
    assert len(by_tag) == tags
    step = int(interval_s * 1000)
    missed = polls = 0
    for tag, stamps in by_tag.items():
        stamps.sort()
        for start, end in windows:
            inside = [t for t in stamps if start <= t <= end]
            assert inside, (tag, start, end)
            assert inside[0] <= start + startup_s * 1000, (tag, "no reading after start-up")
            assert inside[-1] >= end - 2 * step - 300, (tag, "readings stop before the kill")
            gaps = [b - a for a, b in itertools.pairwise(inside)]
            missed += sum(g >= 2 * step for g in gaps)
            polls += len(gaps)
            worst = max(gaps, default=0)
            # a reading in every interval: a gap of two intervals is one without. Tolerated:
            # one interval in a hundred missed, and none longer than three seconds, for a
            # process starved of CPU (a 2-core CI machine runs the other suite, Flink jobs
            # included, beside this one; one CI run saw 1,012 ms); a blocked event loop, the
            # failure this guards against, stops polling for as long as Kafka is away (minutes)
            assert worst < 3000, (tag, f"no reading for {worst} ms")
    assert missed <= polls / 100, f"{missed} of {polls} intervals without a reading"


@contextmanager
def simulator(kind: str, tmp: Path, *args: str) -> Iterator[int]:
    """`otbridge sim <kind>` on a free port, until the block ends; yields the port."""
    port, = free_ports(1)
    with (tmp / f"sim-{kind}.log").open("wb") as log:
        sim = subprocess.Popen([sys.executable, "-m", "otbridge.cli", "sim", kind, "--port",
                                str(port), *args], stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
        try:
            wait_for_port(port, timeout_s=60, what=f"sim {kind}")
            yield port
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(20)


def outage_with_a_restart(broker: Broker, conn: ConnectorProcess, outage_s: float,
                          drain_s: float) -> tuple[int, int]:
    """Kafka (and so the registry) away for `outage_s`, the connector SIGKILLed and started
    again halfway; then Kafka back, the buffer drained, the connector stopped (exit 0).
    Returns when Kafka went and when it was back (wall clock ms)."""
    broker.kill_kafka()
    down = now_ms()
    time.sleep(outage_s / 2)
    conn.kill()
    time.sleep(1)
    conn.start()
    time.sleep(outage_s / 2)
    broker.start_kafka()
    up = now_ms()
    conn.wait_drained(drain_s)
    time.sleep(3)
    assert conn.stop() == 0, conn.log.read_text()[-3000:]
    return down, up


def source_ms(r: dict[str, Any]) -> int:
    return int(r["source_ts"].timestamp() * 1000)


def by_asset_in_topic_order(readings: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each asset's readings in the order of its partition (an asset is a key)."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(readings, key=lambda r: (r["_partition"], r["_offset"])):
        out[r["asset"]].append(r)
    return out


def assert_replayed_marked(readings: list[dict[str, Any]], down: int, up: int) -> None:
    """What was read while Kafka was away (and the connector restarted) was sent from the
    store and says so; what was sent as it was read does not."""
    during = [r for r in readings if down + 1000 <= source_ms(r) <= up - 1000]
    assert during and all(r["_replayed"] for r in during), \
        f"{sum(not r['_replayed'] for r in during)} of {len(during)} not marked"
    assert any(not r["_replayed"] for r in readings if source_ms(r) < down - 1000)


def test_modbus_through_broker_kills_and_a_six_minute_outage(
        broker: Broker, tmp_path: Path, unique: str) -> None:
    topic = f"test.outage.modbus.{unique}"
    with simulator("modbus", tmp_path) as sim_port:
        config = connector_file(tmp_path, broker, "modbus", topic, port=sim_port,
                                poll_interval_s=POLL_S)
        conn = ConnectorProcess("modbus", config, tmp_path / "connector.log")
        try:
            conn.start()
            time.sleep(10)
            for _ in range(5):  # short broker crashes mid-stream
                broker.kill_kafka()
                time.sleep(4)
                broker.start_kafka()
                time.sleep(4)
            # the long one: longer than librdkafka's message.timeout.ms (300 s by default),
            # the connector SIGKILLed and restarted inside it, Kafka and registry unreachable
            down, up = outage_with_a_restart(broker, conn, LONG_OUTAGE_S, drain_s=240)
        finally:
            conn.ensure_gone()

    readings = consume_all(broker.settings, topic)
    instance = assert_exactly_once(readings)
    assert_replayed_marked(readings, down, up)
    for asset, rows in by_asset_in_topic_order(readings).items():  # replay: oldest first
        stamps = [(source_ms(r), r["seq"]) for r in rows]
        assert stamps == sorted(stamps), f"{asset}: readings out of order in the topic"
    assert instance.startswith("outage-modbus@")
    alive_s = sum(end - start for start, end in conn.windows) / 1000
    assert len(readings) >= 500 * (alive_s - 10), (len(readings), alive_s)  # >= 500/s
    tags = sum(len(d["tags"]) for d in yaml.safe_load(config.read_text())["devices"])
    assert_every_interval(readings, conn.windows, POLL_S, startup_s=8, tags=tags)
    final = conn.stats()[-1]
    assert final["dropped"] == 0 and final["buffered"] == 0, final
    print(f"modbus: {len(readings)} readings over {alive_s:.0f} s alive, windows "
          f"{conn.windows}; final stats {final}")


def test_opcua_through_broker_kills_an_outage_and_a_restart_never_repeats_a_value(
        broker: Broker, tmp_path: Path, unique: str) -> None:
    """Subscriptions report changes: each (connector, seq) once, and no value twice. After
    the restart the server resends every current value with its old source timestamp (a new
    session's initial values); those are repeats, not readings."""
    topic = f"test.outage.opcua.{unique}"
    with simulator("opcua", tmp_path, "--speed", "10") as sim_port:
        config = connector_file(tmp_path, broker, "opcua", topic,
                                endpoint=f"opc.tcp://127.0.0.1:{sim_port}/",
                                publishing_interval_s=0.2)
        conn = ConnectorProcess("opcua", config, tmp_path / "connector.log")
        try:
            conn.start()
            time.sleep(10)
            for _ in range(2):
                broker.kill_kafka()
                time.sleep(4)
                broker.start_kafka()
                time.sleep(4)
            down, up = outage_with_a_restart(broker, conn, 40, drain_s=120)
        finally:
            conn.ensure_gone()

    readings = consume_all(broker.settings, topic)
    assert assert_exactly_once(readings).startswith("outage-opcua@")
    assert_replayed_marked(readings, down, up)
    values = Counter((r["asset"], r["tag"], r["source_ts"]) for r in readings
                     if r["quality"] != "BAD")
    repeated = [k for k, n in values.items() if n > 1]
    assert not repeated, f"{len(repeated)} values twice, e.g. {repeated[:3]}"
    restarted = conn.stats()[-1]
    assert restarted["dropped"] == 0 and restarted["buffered"] == 0, restarted
    # values that change kept coming in both processes' lifetimes, the outage included
    changing = [r for r in readings if r["tag"] == "run_seconds"]
    for start, end in conn.windows:
        stamps = [int(r["source_ts"].timestamp() * 1000) for r in changing]
        assert sum(start + 8000 <= t <= end for t in stamps) >= 10, (start, end)


def test_live_first_sends_what_is_read_now_before_the_backlog(
        broker: Broker, tmp_path: Path, unique: str) -> None:
    """`replay: live_first`: after an outage (with a restart inside it, so the backlog is on
    disk only), what the connector reads now reaches Kafka at once and the backlog follows
    within replay_per_s; still every (connector, seq) exactly once."""
    topic = f"test.outage.livefirst.{unique}"
    with simulator("modbus", tmp_path) as sim_port:
        config = connector_file(tmp_path, broker, "modbus", topic, port=sim_port,
                                poll_interval_s=POLL_S,
                                buffer={"replay": "live_first", "replay_per_s": 400})
        conn = ConnectorProcess("modbus", config, tmp_path / "connector.log")
        try:
            conn.start()
            time.sleep(8)
            down, up = outage_with_a_restart(broker, conn, 16, drain_s=120)
        finally:
            conn.ensure_gone()

    readings = consume_all(broker.settings, topic)
    assert_exactly_once(readings)
    assert_replayed_marked(readings, down, up)
    # live readings taken after Kafka was back, in the topic before the backlog's last one
    ahead = 0
    for rows in by_asset_in_topic_order(readings).values():
        last_replayed = max(i for i, r in enumerate(rows) if r["_replayed"])
        ahead += sum(1 for r in rows[:last_replayed]
                     if not r["_replayed"] and source_ms(r) > up)
    assert ahead >= 1000, f"only {ahead} live readings sent before the end of the backlog"


def test_a_full_buffer_drops_exactly_what_the_connector_reports(
        broker: Broker, tmp_path: Path, unique: str) -> None:
    topic = f"test.outage.full.{unique}"
    with simulator("modbus", tmp_path) as sim_port:
        config = connector_file(tmp_path, broker, "modbus", topic, port=sim_port,
                                poll_interval_s=POLL_S,
                                buffer={"max_bytes": 200_000, "when_full": "drop_oldest"})
        conn = ConnectorProcess("modbus", config, tmp_path / "connector.log")
        try:
            conn.start()
            time.sleep(8)
            broker.kill_kafka()
            time.sleep(10)  # ~5,000 readings for room of ~1,100
            broker.start_kafka()
            conn.wait_drained(120)
            time.sleep(2)
            assert conn.stop() == 0, conn.log.read_text()[-3000:]
        finally:
            conn.ensure_gone()

    readings = consume_all(broker.settings, topic)
    seqs = Counter(r["seq"] for r in readings)
    assert max(seqs.values()) == 1
    missing = max(seqs) + 1 - len(seqs)
    final = conn.stats()[-1]
    assert final["dropped"] == missing > 1000, (final, missing)
    assert f"dropped={missing} (full {missing}, age 0)" in conn.log.read_text()
    log = conn.log.read_text()
    assert log.count("is full") == 1, "one warning per episode"
    assert re.search(rf"has room again: {missing} readings were dropped", log), log[-2000:]
