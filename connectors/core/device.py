"""The device loop every connector shares, written once.

A `Device` connects, reads until its link is lost, and reconnects with exponential backoff
and jitter. While it is down every one of its tags gets a BAD reading (value null, never a
repeated last value) once per interval. A protocol supplies only `connect`, `serve` (poll,
or consume a subscription) and `close`; `run_devices` runs one loop per device of a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from connectors.core.config import ConnectorFile, DeviceBase, ReconnectPolicy
from connectors.core.runner import run_connector, wait_for_stop
from connectors.core.sink import Counters, ReadingSink
from otbridge.codec.avro import Quality, Series, now_ms
from otbridge.settings import Settings

T = TypeVar("T")
S = TypeVar("S", bound=DeviceBase[Any])


class DeviceDown(Exception):
    """Raised by `Device.serve` when the device stopped answering (the loop reconnects)."""


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What every device of a connector shares."""

    sink: ReadingSink
    counters: Counters
    reconnect: ReconnectPolicy
    rng: random.Random  # the jitter of reconnect delays


class Ticker:
    """A fixed-rate schedule, `interval_s` apart; a late tick fires at once and the schedule
    goes on from then: ticks missed entirely are not made up in a burst."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next: float | None = None

    def restart(self) -> None:
        """The next `wait` returns at once and starts a new schedule from then."""
        self._next = None

    async def wait(self, stop: asyncio.Event) -> bool:
        """Sleep until the next tick; True if `stop` was set first."""
        now = asyncio.get_running_loop().time()
        if self._next is None:
            self._next = now
        else:
            self._next += self.interval_s
            if self._next < now:  # late: this tick now, and the schedule goes on from here
                self._next = now
        return await sleep_until(stop, self._next)


class Device(ABC):
    """One device of a connector: the shared loop around a protocol's connect/serve/close."""

    def __init__(self, spec: DeviceBase[Any], context: DeviceContext) -> None:
        self.name = spec.name
        self.source = spec.source
        self.sink = context.sink
        self.counters = context.counters
        self.policy = context.reconnect
        self.rng = context.rng
        self.log = logging.getLogger(type(self).__module__)
        # one series per tag, in the file's order
        self.series: list[Series] = [
            self.sink.series(tag.asset, tag.tag, tag.unit, self.source) for tag in spec.tags
        ]
        self.ticker = Ticker(spec.interval_s)  # serve's polls, and the BAD readings when down
        self.up = False
        self._bad: asyncio.Task[None] | None = None

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection (and subscribe); raise if the device cannot be reached."""

    @abstractmethod
    async def serve(self, stop: asyncio.Event) -> None:
        """Emit readings until `stop` is set; raise (e.g. DeviceDown) or return when the
        link is lost. A poll may use `self.ticker` for its cadence."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection, whatever state it is in; never raises."""

    def describe(self) -> str:
        """What the start-up log line says about the device."""
        return f"{len(self.series)} tags, every {self.ticker.interval_s:.3g} s"

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self.log.info("%s: %s, %s", self.name, self.source, self.describe())
        attempt = 0  # failed connects (and losses) since the device was last up
        try:
            while not stop.is_set():
                try:
                    # connecting can take seconds (several round trips): stop cuts it short
                    if await unless_stopped(self._connected(), stop) is None:
                        break
                    await self._came_up(attempt)
                    attempt = 0
                    await self.serve(stop)
                    if not stop.is_set():
                        raise DeviceDown("connection lost")
                except Exception as exc:  # whatever the library raises: down, retry later
                    if stop.is_set():
                        break
                    self.counters.errors += 1
                    say = self.log.warning if attempt == 0 else self.log.debug
                    say("%s: %s: %s; down, reconnecting", self.name, self.source, _why(exc))
                    self.log.debug("%s: details", self.name, exc_info=True)
                finally:
                    self.up = False
                    await self.close()
                if stop.is_set():
                    break
                self._start_bad(stop)
                delay = self.policy.delay_s(attempt, self.rng.random())
                attempt += 1
                if await sleep_until(stop, loop.time() + delay):
                    break
        finally:
            await self._stop_bad()

    async def _connected(self) -> bool:
        await self.connect()
        return True

    async def _came_up(self, attempt: int) -> None:
        await self._stop_bad()
        if attempt:
            self.counters.reconnects += 1
            self.log.info(
                "%s: reconnected to %s after %d attempt(s)", self.name, self.source, attempt
            )
        self.up = True
        self.ticker.restart()

    def emit_bad(self) -> None:
        """A BAD reading (value null) for every tag of the device, now."""
        now, emit, bad = now_ms(), self.sink.emit_value, Quality.BAD
        for series in self.series:
            emit(series, None, bad, now)

    def _start_bad(self, stop: asyncio.Event) -> None:
        if self._bad is None:
            self._bad = asyncio.create_task(self._bad_while_down(stop), name=f"bad {self.name}")

    async def _stop_bad(self) -> None:
        if self._bad is not None:
            task, self._bad = self._bad, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _bad_while_down(self, stop: asyncio.Event) -> None:
        # on the ticker's schedule: a poll that found the device down was that tick's reading
        while not await self.ticker.wait(stop):
            self.emit_bad()
            self.sink.poll()


def _why(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


class DeviceConnector:
    """A connector: every device's loop, concurrently, on one event loop."""

    def __init__(self, devices: Sequence[Device]) -> None:
        self.devices = list(devices)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(device.run(stop) for device in self.devices))


async def run_devices(
    config: ConnectorFile[S],
    settings: Settings,
    device: Callable[[S, DeviceContext], Device],
    *,
    max_readings: int | None = None,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
    rng: random.Random | None = None,
) -> int:
    """Run one `device(spec, context)` per device of `config` until a signal, a limit, the
    duration or `stop`; then flush and return the exit code (see `run_connector`)."""

    def build(sink: ReadingSink, counters: Counters) -> DeviceConnector:
        context = DeviceContext(sink, counters, config.reconnect, rng or random.Random())
        return DeviceConnector([device(spec, context) for spec in config.devices])

    return await run_connector(
        config, settings, build, max_readings=max_readings, duration_s=duration_s, stop=stop
    )


async def unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """Await `work` unless `stop` is set first (then `work` is cancelled and None returned)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


async def sleep_until(stop: asyncio.Event, deadline: float) -> bool:
    """Sleep until loop time `deadline` or stop; True if stopped."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await wait_for_stop(stop, delay)
    return stop.is_set()
