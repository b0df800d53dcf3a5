"""Modbus TCP source connector: poll register maps, emit one Reading per tag per poll.

One asyncio client per device (a Modbus TCP connection cannot pipeline requests), all
devices polled concurrently on one event loop. Reads are batched by `registers.plan_reads`.
A device that times out or drops the connection gets BAD readings (value null) for all its
tags every poll interval while it is down, and is reconnected with exponential backoff and
jitter in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from connectors.core.config import ModbusConfig, ModbusDevice, ReconnectPolicy
from connectors.core.runner import run_connector, sleep_until
from connectors.core.sink import Counters, ReadingSink
from connectors.modbus.registers import BIT_KINDS, ReadBlock, plan_reads
from otbridge.codec.avro import Quality, Series, now_ms
from otbridge.errors import MissingExtraError
from otbridge.settings import Settings

try:
    from pymodbus.client import AsyncModbusTcpClient
    from pymodbus.exceptions import ModbusException
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise MissingExtraError("pymodbus", "modbus") from exc

log = logging.getLogger(__name__)

READ_ERRORS = (ModbusException, OSError, TimeoutError)


class DevicePoller:
    """Polls one device at a fixed rate; owns its client and its reconnect loop."""

    def __init__(
        self,
        device: ModbusDevice,
        sink: ReadingSink,
        counters: Counters,
        *,
        reconnect: ReconnectPolicy,
        rng: random.Random,
    ) -> None:
        self.device = device
        self.sink = sink
        self.counters = counters
        self.policy = reconnect
        self.rng = rng
        self.blocks = plan_reads(
            device.tags,
            max_registers=device.max_registers_per_read,
            max_bits=device.max_bits_per_read,
            max_gap=device.max_gap,
        )
        self.client = AsyncModbusTcpClient(
            device.host,
            port=device.port,
            name=device.name,
            timeout=device.timeout_s,
            retries=device.retries,
            reconnect_delay=0,  # we reconnect ourselves, with jitter, while emitting BAD
        )
        source = device.source
        # per tag (in config order): its series, and where its value lands in a poll's results
        self.series: list[Series] = [
            sink.series(tag.asset, tag.tag, tag.unit, source) for tag in device.tags
        ]
        position = {(tag.asset, tag.tag): i for i, tag in enumerate(device.tags)}
        self._positions: list[list[int]] = [
            [position[(tag.asset, tag.tag)] for tag in block.tags] for block in self.blocks
        ]
        self.up = False
        self._refused: set[int] = set()  # blocks the device answered with an exception
        self._reconnecting: asyncio.Task[None] | None = None
        # bounds one request even if the library's own timeout misbehaves
        self._request_timeout_s = device.timeout_s * (device.retries + 1) + 1.0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        plan = ", ".join(f"{b.kind} {b.address}+{b.count}" for b in self.blocks)
        log.info(
            "%s: %s, %d tags in %d reads per poll (%s), every %.3g s",
            self.device.name,
            self.device.source,
            len(self.device.tags),
            len(self.blocks),
            plan,
            self.device.poll_interval_s,
        )
        self.up = await self._connect()
        if not self.up:
            log.warning("%s: cannot connect to %s", self.device.name, self.device.source)
        interval = self.device.poll_interval_s
        next_tick = loop.time()
        try:
            while not stop.is_set():
                if self.up:
                    await self.poll_once()
                else:
                    self._emit_bad()
                    self._ensure_reconnecting(stop)
                self.sink.poll()
                next_tick += interval
                now = loop.time()
                if next_tick < now:  # overran: skip the missed ticks rather than burst
                    missed = int((now - next_tick) // interval) + 1
                    next_tick += missed * interval
                    log.debug("%s: poll overran by %d interval(s)", self.device.name, missed)
                if await sleep_until(stop, next_tick):
                    break
        finally:
            if self._reconnecting is not None:
                self._reconnecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reconnecting
            self.client.close()

    async def poll_once(self) -> None:
        """Read every block once and emit one sample per tag (BAD for what could not be read)."""
        n = len(self.series)
        values: list[float | None] = [None] * n
        stamps: list[int] = [0] * n  # source time (ms) of each tag's value
        for i, block in enumerate(self.blocks):
            positions = self._positions[i]
            try:
                response = await asyncio.wait_for(self._read(block), self._request_timeout_s)
            except READ_ERRORS as exc:
                self.counters.errors += 1
                log.warning(
                    "%s: %s read at %d failed, device down: %s",
                    self.device.name,
                    block.kind,
                    block.address,
                    exc,
                )
                self._mark_down()
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
                    log.warning(
                        "%s: %s read %d+%d answered with exception code %s; its tags are BAD",
                        self.device.name,
                        block.kind,
                        block.address,
                        block.count,
                        getattr(response, "exception_code", "?"),
                    )
                continue
            if i in self._refused:
                self._refused.discard(i)
                log.info(
                    "%s: %s read at %d answers again", self.device.name, block.kind, block.address
                )
            raw = response.bits if block.kind in BIT_KINDS else response.registers
            try:
                decoded = block.decode_values(raw)
            except ValueError as exc:  # a short answer: this read's tags are BAD
                self.counters.errors += 1
                log.warning("%s: %s", self.device.name, exc)
                continue
            for p, value in zip(positions, decoded, strict=True):
                values[p] = value
        emit, good, bad = self.sink.emit_value, Quality.GOOD, Quality.BAD
        for series, value, ts in zip(self.series, values, stamps, strict=True):
            emit(series, value, bad if value is None else good, ts)

    def _read(self, block: ReadBlock) -> Any:
        read = {
            "holding": self.client.read_holding_registers,
            "input": self.client.read_input_registers,
            "coil": self.client.read_coils,
            "discrete": self.client.read_discrete_inputs,
        }[block.kind]
        return read(block.address, count=block.count, device_id=self.device.unit_id)

    def _emit_bad(self) -> None:
        """A BAD reading (value null) for every tag of the device."""
        now = now_ms()
        for series in self.series:
            self.sink.emit_value(series, None, Quality.BAD, now)

    def _mark_down(self) -> None:
        self.up = False
        self.client.close()

    async def _connect(self) -> bool:
        try:
            ok = await asyncio.wait_for(self.client.connect(), self.device.timeout_s + 1.0)
        except READ_ERRORS:
            ok = False
        if not ok:
            self.client.close()
        return bool(ok)

    def _ensure_reconnecting(self, stop: asyncio.Event) -> None:
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(
                self._reconnect(stop), name=f"reconnect {self.device.name}"
            )

    async def _reconnect(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while not stop.is_set():
            delay = self.policy.delay_s(attempt, self.rng.random())
            if await sleep_until(stop, loop.time() + delay):
                return
            if await self._connect():
                self.counters.reconnects += 1
                log.info(
                    "%s: reconnected to %s after %d attempt(s)",
                    self.device.name,
                    self.device.source,
                    attempt + 1,
                )
                self.up = True
                return
            attempt += 1
            log.debug("%s: reconnect attempt %d failed", self.device.name, attempt)


class ModbusConnector:
    def __init__(
        self,
        config: ModbusConfig,
        sink: ReadingSink,
        counters: Counters,
        *,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.pollers = [
            DevicePoller(device, sink, counters, reconnect=config.reconnect, rng=rng)
            for device in config.devices
        ]

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(poller.run(stop) for poller in self.pollers))


async def run(
    config: ModbusConfig,
    settings: Settings,
    *,
    max_readings: int | None = None,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the Modbus connector of `config` until a signal, a limit, the duration or `stop`."""
    return await run_connector(
        config,
        settings,
        lambda sink, counters: ModbusConnector(config, sink, counters),
        max_readings=max_readings,
        duration_s=duration_s,
        stop=stop,
    )
