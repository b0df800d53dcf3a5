"""Modbus TCP source connector: poll register maps, emit one Reading per tag per poll.

One asyncio client per device (a Modbus TCP connection cannot pipeline requests), all
devices polled concurrently on one event loop. Reads are batched by `registers.plan_reads`.
A read that times out or a dropped connection makes the device down: the shared device loop
(connectors.core.device) then emits BAD readings for all its tags every poll interval and
reconnects with backoff and jitter. An exception answer makes only that read's tags BAD.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from connectors.core.device import Device, DeviceContext, DeviceDown, run_devices
from connectors.modbus.config import ModbusConfig, ModbusDevice
from connectors.modbus.registers import ReadBlock, plan_reads
from otbridge.codec.avro import Quality, now_ms
from otbridge.codec.modbus import BIT_KINDS
from otbridge.settings import Settings

READ_ERRORS = (ModbusException, OSError, TimeoutError)


class DevicePoller(Device):
    """Polls one device at a fixed rate through one client."""

    def __init__(self, spec: ModbusDevice, context: DeviceContext) -> None:
        super().__init__(spec, context)
        self.spec = spec
        self.blocks = plan_reads(
            spec.tags,
            max_registers=spec.max_registers_per_read,
            max_bits=spec.max_bits_per_read,
            max_gap=spec.max_gap,
        )
        self.client = AsyncModbusTcpClient(
            spec.host,
            port=spec.port,
            name=spec.name,
            timeout=spec.timeout_s,
            retries=spec.retries,
            reconnect_delay=0,  # the device loop reconnects, with jitter, while emitting BAD
        )
        # per block, where each of its tags' values lands in a poll's results (config order)
        position = {(tag.asset, tag.tag): i for i, tag in enumerate(spec.tags)}
        self._positions: list[list[int]] = [
            [position[(tag.asset, tag.tag)] for tag in block.tags] for block in self.blocks
        ]
        self._refused: set[int] = set()  # blocks the device answered with an exception
        # bounds one request even if the library's own timeout misbehaves
        self._request_timeout_s = spec.timeout_s * (spec.retries + 1) + 1.0

    def describe(self) -> str:
        plan = ", ".join(f"{b.kind} {b.address}+{b.count}" for b in self.blocks)
        return (
            f"{len(self.spec.tags)} tags in {len(self.blocks)} reads per poll ({plan}), "
            f"every {self.spec.poll_interval_s:.3g} s"
        )

    async def connect(self) -> None:
        ok = await asyncio.wait_for(self.client.connect(), self.spec.timeout_s + 1.0)
        if not ok:
            raise ConnectionError("cannot connect")

    async def serve(self, stop: asyncio.Event) -> None:
        while not await self.ticker.wait(stop):
            down = await self.poll_once()
            self.sink.poll()
            if down is not None:
                raise DeviceDown(down)

    async def close(self) -> None:
        self.client.close()

    async def poll_once(self) -> str | None:
        """Read every block once and emit one sample per tag (BAD for what could not be read).

        Returns why the device is down when a read failed (its tags and the later ones are
        BAD in this poll), else None."""
        n = len(self.series)
        values: list[float | None] = [None] * n
        stamps: list[int] = [0] * n  # source time (ms) of each tag's value
        down: str | None = None
        for i, block in enumerate(self.blocks):
            positions = self._positions[i]
            try:
                response = await asyncio.wait_for(self._read(block), self._request_timeout_s)
            except READ_ERRORS as exc:
                why = str(exc) or type(exc).__name__
                down = f"{block.kind} read at {block.address} failed: {why}"
                now = now_ms()
                for later in self._positions[i:]:
                    for p in later:
                        stamps[p] = now
                break
            now = now_ms()
            for p in positions:
                stamps[p] = now
            if response.isError():
                self.counters.errors += 1
                if i not in self._refused:  # log a refused read once, not every poll
                    self._refused.add(i)
                    self.log.warning(
                        "%s: %s read %d+%d answered with exception code %s; its tags are BAD",
                        self.name,
                        block.kind,
                        block.address,
                        block.count,
                        getattr(response, "exception_code", "?"),
                    )
                continue
            if i in self._refused:
                self._refused.discard(i)
                self.log.info(
                    "%s: %s read at %d answers again", self.name, block.kind, block.address
                )
            raw = response.bits if block.kind in BIT_KINDS else response.registers
            try:
                decoded = block.decode_values(raw)
            except ValueError as exc:  # a short answer: this read's tags are BAD
                self.counters.errors += 1
                self.log.warning("%s: %s", self.name, exc)
                continue
            for p, value in zip(positions, decoded, strict=True):
                values[p] = value
        emit, good, bad = self.sink.emit_value, Quality.GOOD, Quality.BAD
        for series, value, ts in zip(self.series, values, stamps, strict=True):
            emit(series, value, bad if value is None else good, ts)
        return down

    def _read(self, block: ReadBlock) -> Any:
        read = {
            "holding": self.client.read_holding_registers,
            "input": self.client.read_input_registers,
            "coil": self.client.read_coils,
            "discrete": self.client.read_discrete_inputs,
        }[block.kind]
        return read(block.address, count=block.count, device_id=self.spec.unit_id)


async def run(
    config: ModbusConfig,
    settings: Settings,
    *,
    max_readings: int | None = None,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the Modbus connector of `config` until a signal, a limit, the duration or `stop`."""
    return await run_devices(
        config, settings, DevicePoller, max_readings=max_readings, duration_s=duration_s,
        stop=stop,
    )  # fmt: skip
