"""The shared device loop (connectors.core.device) with a scripted device: no stack needed."""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

from connectors.core.config import ConnectorFile, DeviceBase, TagBase
from connectors.core.device import Device, DeviceContext, DeviceDown
from connectors.core.sink import Counters, ReadingSink
from otbridge.codec.avro import Quality

ASSET = "acme/berlin/body/line1/press01"


class FakeTag(TagBase):
    pass


class FakeDevice(DeviceBase[FakeTag]):
    @property
    def source(self) -> str:
        return "fake://press01"

    @property
    def interval_s(self) -> float:
        return 0.02


class FakeFile(ConnectorFile[FakeDevice]):
    pass


class Sink:
    """Records what a device emits; `on_emit` lets the test act on what happened so far."""

    def __init__(self) -> None:
        self.readings: list[tuple[str, float | None, Quality]] = []
        self.on_emit: Any = None

    def series(self, asset: str, tag: str, unit: str | None, source: str) -> str:
        return tag

    def emit_value(self, series: str, value: float | None, quality: Quality, ms: int) -> bool:
        self.readings.append((series, value, quality))
        if self.on_emit is not None:
            self.on_emit(self.readings)
        return True

    def poll(self) -> None:
        pass


class Scripted(Device):
    """Reachable or not as the test says; while up, a poll gives 21.5 and 1.0, and a poll
    after `drop` is set fails (the device is down)."""

    def __init__(self, spec: FakeDevice, context: DeviceContext) -> None:
        super().__init__(spec, context)
        self.reachable = False
        self.drop = False
        self.connects = 0
        self.closes = 0

    async def connect(self) -> None:
        self.connects += 1
        if not self.reachable:
            raise ConnectionError("refused")

    async def serve(self, stop: asyncio.Event) -> None:
        while not await self.ticker.wait(stop):
            if self.drop:
                self.drop = False
                self.emit_bad()  # this poll's reading, as a real poll that failed
                raise DeviceDown("read failed")
            for series, value in zip(self.series, (21.5, 1.0), strict=True):
                self.sink.emit_value(series, value, Quality.GOOD, 0)

    async def close(self) -> None:
        self.closes += 1


def runs(readings: list[tuple[str, float | None, Quality]], tag: str) -> list[Quality]:
    mine = [q for t, _, q in readings if t == tag]
    return [q for i, q in enumerate(mine) if i == 0 or q != mine[i - 1]]


def test_down_gives_bad_then_reconnect_gives_good_again() -> None:
    config = FakeFile.model_validate(
        {
            "connector_id": "test",
            "reconnect": {"initial_delay_s": 0.01, "max_delay_s": 0.02},
            "devices": [
                {
                    "name": "press01",
                    "tags": [{"asset": ASSET, "tag": "temperature"}, {"asset": ASSET, "tag": "on"}],
                }
            ],
        }
    )
    sink, counters = Sink(), Counters()
    context = DeviceContext(cast(ReadingSink, sink), counters, config.reconnect, random.Random(1))
    device = Scripted(config.devices[0], context)
    stop = asyncio.Event()

    phase = ["unreachable"]

    def script(readings: list[tuple[str, float | None, Quality]]) -> None:
        """unreachable at start -> up -> a poll fails, unreachable -> up again -> stop."""
        quality = readings[-1][2]
        count = sum(1 for _, _, q in readings if q is quality)
        if phase[0] == "unreachable" and quality is Quality.BAD and count >= 6:
            phase[0], device.reachable = "up", True
        elif phase[0] == "up" and quality is Quality.GOOD and count >= 6:
            phase[0], device.drop, device.reachable = "down", True, False
        elif phase[0] == "down" and quality is Quality.BAD and count >= 20:
            phase[0], device.reachable = "up again", True
        elif phase[0] == "up again" and quality is Quality.GOOD and count >= 12:
            stop.set()

    sink.on_emit = script
    asyncio.run(asyncio.wait_for(device.run(stop), 20))

    for tag in ("temperature", "on"):
        assert runs(sink.readings, tag) == [Quality.BAD, Quality.GOOD, Quality.BAD, Quality.GOOD]
    assert all(v is None for _, v, q in sink.readings if q is Quality.BAD)  # never a last value
    assert {v for _, v, q in sink.readings if q is Quality.GOOD} == {21.5, 1.0}
    assert counters.reconnects == 2  # from the start-up failure, and from the outage
    assert counters.errors == device.connects - 2 + 1  # each failed connect, and the loss
    assert device.closes == device.connects  # closed after every attempt and at the end
    assert not device.up
