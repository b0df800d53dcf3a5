"""The OPC UA connector against real asyncua servers, real Kafka and the real registry."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kafkahelp as kh
import yaml
from asyncua import Server, ua
from test_connector_modbus import (
    Watcher,
    assert_every_interval,
    count,
    start_simulator,
    trailing,
)

from connectors.opcua import connector as opcua
from connectors.opcua.config import OpcUaConfig
from otbridge.net import free_port
from otbridge.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout

ROBOT = "acme/berlin/paint/line3/robot01"
NAMESPACE = "urn:otbridge:test"


class Plant:
    """A real asyncua server on its own event loop thread (as a real server is another process):
    Objects/Plant/Robot01/{Temperature, State, Job, Running} on 127.0.0.1:port."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: Server | None = None
        self._prepared: Server | None = None
        self.idx = 0
        self.nodes: dict[str, Any] = {}

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _in_thread(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def start(self, port: int, *, temperature: float = 20.0, state: int = 1) -> None:
        await self.prepare(port, temperature=temperature, state=state)
        await self.listen()

    async def prepare(self, port: int, *, temperature: float = 20.0, state: int = 1) -> None:
        """Build the address space (the CPU-heavy part), not listening yet."""
        await self._in_thread(self._prepare(port, temperature, state))

    async def listen(self) -> None:
        assert self._prepared is not None
        server, self._prepared = self._prepared, None
        await self._in_thread(server.start())
        self.server = server

    async def _prepare(self, port: int, temperature: float, state: int) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE)
        plant = await server.nodes.objects.add_object(idx, "Plant")
        robot = await plant.add_object(idx, "Robot01")
        self.nodes = {
            "temperature": await robot.add_variable(
                ua.NodeId("robot01.temperature", idx), "Temperature", temperature
            ),
            "state": await robot.add_variable(
                ua.NodeId(1001, idx), "State", ua.Variant(state, ua.VariantType.Int32)
            ),
            "job": await robot.add_variable(idx, "Job", "none"),
            "running": await robot.add_variable(idx, "Running", True),
        }
        self._prepared, self.idx = server, idx

    async def relisten(self) -> None:
        """Stop serving and serve again, the same address space (values, timestamps) kept."""
        assert self.server is not None
        await self._in_thread(self.server.stop())
        await self._in_thread(self.server.start())

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await self._in_thread(server.stop())

    async def write(self, tag: str, variant: ua.Variant, ts: datetime, status: int = 0) -> None:
        assert self.server is not None
        value = ua.DataValue(
            Value=variant, StatusCode=ua.StatusCode(status), SourceTimestamp=ts, ServerTimestamp=ts
        )
        write = self.server.write_attribute_value(self.nodes[tag].nodeid, value)
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(write, self.loop))

    def close(self) -> None:
        if self.server is not None:
            self._run(self.server.stop())

        async def cancel_the_rest() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def start_plant(port: int, *, temperature: float = 20.0, state: int = 1) -> Plant:
    plant = Plant()
    await plant.start(port, temperature=temperature, state=state)
    return plant


def fresh_buffer() -> str:
    """A store of its own for each connector run (a fresh instance id, seq from 0)."""
    return str(Path(tempfile.mkdtemp(prefix="otbridge-test-buffer-")) / "buffer.db")


def config(port: int, topic: str, idx: int, *, publishing_s: float) -> OpcUaConfig:
    return OpcUaConfig.model_validate(
        {
            "connector_id": "test-opcua",
            "buffer": {"path": fresh_buffer()},
            "topic": topic,
            "stats_interval_s": 1,
            "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 0.4},
            "devices": [
                {
                    "name": "robot01",
                    "endpoint": f"opc.tcp://127.0.0.1:{port}/",
                    "timeout_s": 1.0,
                    "publishing_interval_s": publishing_s,
                    "tags": [
                        {
                            "asset": ROBOT,
                            "tag": "temperature",
                            "unit": "degC",
                            "node_id": f"ns={idx};s=robot01.temperature",
                        },
                        {"asset": ROBOT, "tag": "state", "node_id": f"nsu={NAMESPACE};i=1001"},
                        {
                            "asset": ROBOT,
                            "tag": "job",
                            "browse_path": f"{idx}:Plant/{idx}:Robot01/{idx}:Job",
                        },
                        {"asset": ROBOT, "tag": "running", "node_id": f"ns={idx};s=x"},
                    ],
                }
            ],
        }
    )


def with_running(cfg: OpcUaConfig, plant: Plant) -> OpcUaConfig:
    """Point the `running` tag at the node asyncua created (numeric id, known after start)."""
    doc = cfg.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["devices"][0]["tags"][3]["node_id"] = plant.nodes["running"].nodeid.to_string()
    return OpcUaConfig.model_validate(doc)


def ms(ts: datetime) -> datetime:
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def test_subscription_gives_source_timestamps_and_status_as_quality(
    live_stack: Settings, unique: str
) -> None:
    topic = f"test.readings.{unique}"
    base = ms(datetime.now(UTC) - timedelta(hours=1))  # clearly the server's, not ours
    written = [
        ("temperature", ua.Variant(21.5, ua.VariantType.Double), 0, 21.5, None, "GOOD"),
        (
            "temperature",
            ua.Variant(22.5, ua.VariantType.Double),
            ua.StatusCodes.BadSensorFailure,
            None,
            None,
            "BAD",
        ),
        (
            "temperature",
            ua.Variant(23.5, ua.VariantType.Double),
            ua.StatusCodes.UncertainLastUsableValue,
            23.5,
            None,
            "UNCERTAIN",
        ),
        ("state", ua.Variant(3, ua.VariantType.Int32), 0, 3.0, None, "GOOD"),
        ("job", ua.Variant("Job-42", ua.VariantType.String), 0, None, "Job-42", "GOOD"),
        ("running", ua.Variant(False, ua.VariantType.Boolean), 0, 0.0, None, "GOOD"),
        ("temperature", ua.Variant(24.0, ua.VariantType.Double), 0, 24.0, None, "GOOD"),
    ]
    initial = 4
    total = initial + len(written)

    async def scenario() -> int:
        port = free_port()
        plant = await start_plant(port)
        try:
            cfg = with_running(config(port, topic, plant.idx, publishing_s=0.1), plant)
            run = asyncio.create_task(opcua.run(cfg, live_stack, max_readings=total, duration_s=30))
            # act once the subscription's initial values reached Kafka
            first = await asyncio.to_thread(kh.consume, live_stack, topic, initial, timeout_s=20)
            assert len(first) == initial
            for i, (tag, variant, status, *_rest) in enumerate(written):
                await plant.write(tag, variant, base + timedelta(seconds=i), status)
                # past a publishing interval (0.1 s), so a loaded machine still reports each
                # write in a notification of its own
                await asyncio.sleep(0.3)
            return await asyncio.wait_for(run, 30)
        finally:
            await plant.stop()
            plant.close()

    started = datetime.now(UTC) - timedelta(milliseconds=1)
    assert asyncio.run(scenario()) == 0
    records = kh.consume(live_stack, topic, total, settle_s=1.5)
    assert len(records) == total
    readings = sorted((v for _, v, _ in records), key=lambda r: r["seq"])
    assert [r["seq"] for r in readings] == list(range(total))
    assert all(key == ROBOT.encode() for key, _, _ in records)

    first = {r["tag"]: r for r in readings[:initial]}
    assert {t: (r["value"], r["text"], r["quality"]) for t, r in first.items()} == {
        "temperature": (20.0, None, "GOOD"),
        "state": (1.0, None, "GOOD"),
        "job": (None, "none", "GOOD"),
        "running": (1.0, None, "GOOD"),
    }
    assert all(r["source_ts"] >= started for r in first.values())

    changes = readings[initial:]
    got = [(r["tag"], r["value"], r["text"], r["quality"], r["source_ts"]) for r in changes]
    want = [
        (tag, value, text, quality, base + timedelta(seconds=i))
        for i, (tag, _, _, value, text, quality) in enumerate(written)
    ]
    assert got == want
    assert all(r["unit"] == ("degC" if r["tag"] == "temperature" else None) for r in readings)
    assert {r["source"] for r in readings} == {cfg_endpoint(readings)}


def cfg_endpoint(readings: list[dict[str, Any]]) -> str:
    (source,) = {r["source"] for r in readings}
    assert source.startswith("opc.tcp://127.0.0.1:")
    return str(source)


def test_lost_server_gives_bad_readings_and_reconnect_restores_the_subscription(
    live_stack: Settings, unique: str
) -> None:
    topic = f"test.readings.{unique}"
    publishing_s = 0.2

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        port = free_port()
        plant = await start_plant(port, temperature=20.0)
        watcher = Watcher(live_stack, topic)
        stop = asyncio.Event()
        cfg = with_running(config(port, topic, plant.idx, publishing_s=publishing_s), plant)
        run = asyncio.create_task(opcua.run(cfg, live_stack, stop=stop, duration_s=60))
        try:
            await asyncio.to_thread(watcher.wait_for, lambda rs: count(rs, "GOOD") >= 4, "GOOD")
            restarted = Plant()  # built now, so no server start-up work runs during the outage
            await restarted.prepare(port, temperature=30.0, state=5)
            await plant.stop()
            plant.close()
            plant = restarted
            await asyncio.to_thread(
                watcher.wait_for, lambda rs: trailing(rs, "BAD") >= 4 * 4, "BAD while down"
            )
            await plant.listen()
            await asyncio.to_thread(
                watcher.wait_for,
                lambda rs: any(r["value"] == 30.0 for r in rs),
                "the restored subscription's initial values",
            )
            await plant.write("temperature", ua.Variant(31.0), datetime.now(UTC))
            await asyncio.to_thread(
                watcher.wait_for, lambda rs: any(r["value"] == 31.0 for r in rs), "a new change"
            )
            assert not run.done(), "the connector stopped during the outage"
            stop.set()
            rc = await asyncio.wait_for(run, 30)
            return rc, await asyncio.to_thread(watcher.drain, quiet_s=1.5)
        finally:
            stop.set()
            await plant.stop()
            plant.close()
            watcher.close()

    rc, readings = asyncio.run(scenario())
    assert rc == 0
    assert [r["seq"] for r in readings] == list(range(len(readings)))  # no gap
    for tag in ("temperature", "state", "job", "running"):
        mine = [r for r in readings if r["tag"] == tag]
        qualities = [r["quality"] for r in mine]
        runs = [q for i, q in enumerate(qualities) if i == 0 or q != qualities[i - 1]]
        assert runs == ["GOOD", "BAD", "GOOD"], (tag, runs)
        bad = [r for r in mine if r["quality"] == "BAD"]
        assert len(bad) >= 4
        assert all(r["value"] is None and r["text"] is None for r in bad)
        assert_every_interval([r["source_ts"] for r in bad], publishing_s)
    after = [r for r in readings if r["quality"] == "GOOD" and r["seq"] > bad[-1]["seq"]]
    assert [r["value"] for r in after if r["tag"] == "temperature"] == [30.0, 31.0]
    assert [r["value"] for r in after if r["tag"] == "state"] == [5.0]


def test_values_resent_after_a_reconnect_are_not_new_readings(
    live_stack: Settings, unique: str
) -> None:
    """After a reconnect the server sends every current value again, with its old source
    timestamp: repeats, not readings (they were double-counted, or late in the jobs). A value
    that changes is a reading as ever."""
    topic = f"test.readings.{unique}"

    async def scenario() -> list[dict[str, Any]]:
        port = free_port()
        plant = await start_plant(port, temperature=20.0)
        watcher = Watcher(live_stack, topic)
        stop = asyncio.Event()
        cfg = with_running(config(port, topic, plant.idx, publishing_s=0.2), plant)
        run = asyncio.create_task(opcua.run(cfg, live_stack, stop=stop, duration_s=60))
        try:
            await asyncio.to_thread(watcher.wait_for, lambda rs: count(rs, "GOOD") >= 4, "GOOD")
            await plant.write("temperature", ua.Variant(25.0), datetime.now(UTC))
            await asyncio.to_thread(
                watcher.wait_for, lambda rs: any(r["value"] == 25.0 for r in rs), "25.0")
            server = plant.server
            assert server is not None
            await plant._in_thread(server.stop())  # the link goes; values and times stay
            await asyncio.to_thread(
                watcher.wait_for, lambda rs: trailing(rs, "BAD") >= 4, "BAD while down")
            await plant._in_thread(server.start())
            await asyncio.sleep(3)  # reconnected: the initial values come (and are held back)
            await plant.write("temperature", ua.Variant(26.0), datetime.now(UTC))
            await asyncio.to_thread(
                watcher.wait_for, lambda rs: any(r["value"] == 26.0 for r in rs), "26.0")
            stop.set()
            assert await asyncio.wait_for(run, 30) == 0
            return await asyncio.to_thread(watcher.drain, quiet_s=1.5)
        finally:
            stop.set()
            await plant.stop()
            plant.close()
            watcher.close()

    readings = asyncio.run(scenario())
    assert [r["seq"] for r in readings] == list(range(len(readings)))
    last_bad = max(r["seq"] for r in readings if r["quality"] == "BAD")
    after = [(r["tag"], r["value"]) for r in readings if r["seq"] > last_bad]
    assert after == [("temperature", 26.0)], after  # the resent 25.0, state, job: not again
    good = Counter((r["tag"], r["source_ts"]) for r in readings if r["quality"] != "BAD")
    assert max(good.values()) == 1


def test_example_config_subscribes_to_every_tag_of_the_simulator(
    live_stack: Settings, unique: str, tmp_path: Path
) -> None:
    port = free_port()
    sim = start_simulator("opcua", port, tmp_path / "sim.log")
    try:
        doc = yaml.safe_load((PROJECT_ROOT / "connectors/examples/opcua.yaml").read_text())
        doc["topic"] = f"test.readings.{unique}"
        doc["devices"][0]["endpoint"] = f"opc.tcp://127.0.0.1:{port}/"
        config = OpcUaConfig.model_validate(doc)
        tags = {(t.asset, t.tag) for d in config.devices for t in d.tags}
        assert asyncio.run(opcua.run(config, live_stack, max_readings=2 * len(tags))) == 0
    finally:
        sim.terminate()
        sim.wait(10)
    readings = [v for _, v, _ in kh.consume(live_stack, doc["topic"], 2 * len(tags))]
    assert {(r["asset"], r["tag"]) for r in readings} == tags
    assert all(r["quality"] == "GOOD" for r in readings)
    assert all((r["value"] is None) != (r["text"] is None) for r in readings)
