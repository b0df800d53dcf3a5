"""OPC UA source connector: subscriptions (monitored items), not polling.

Each data change notification becomes one Reading: the server's source timestamp is the
reading's source_ts and its status code the quality (Good -> GOOD, Uncertain -> UNCERTAIN,
Bad -> BAD, value null). A lost connection makes the device BAD (all its tags, every
publishing interval) until a reconnect, with exponential backoff and jitter, has opened a
new session and re-created the subscription and its monitored items; the server then sends
every item's current value again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from connectors.core.config import OpcUaConfig, OpcUaDevice, OpcUaTag, ReconnectPolicy
from connectors.core.runner import run_connector, sleep_until, unless_stopped
from connectors.core.sink import Counters, ReadingSink, Sample
from otbridge.codec.avro import Quality, Series, millis, now_ms, utc_now
from otbridge.errors import MissingExtraError
from otbridge.settings import Settings

try:
    from asyncua import Client, ua
    from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise MissingExtraError("asyncua", "opcua") from exc

log = logging.getLogger(__name__)

TRIGGERS = {
    "status_value": ua.DataChangeTrigger.StatusValue,
    "status_value_timestamp": ua.DataChangeTrigger.StatusValueTimestamp,
}
DEADBAND_TYPES = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}


def quality_of(status: ua.StatusCode | None) -> Quality:
    """OPC UA severity (top two bits of the status code) -> reading quality."""
    if status is None or status.is_good():
        return Quality.GOOD
    if status.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD


def to_value(val: Any) -> tuple[float | None, str | None]:
    """An OPC UA variant value -> (numeric value, text value) of a Reading."""
    if val is None:
        return None, None
    if isinstance(val, bool):
        return (1.0 if val else 0.0), None
    if isinstance(val, int | float):
        number = float(val)
        return (number if math.isfinite(number) else None), None
    if isinstance(val, str):
        return None, val
    if isinstance(val, datetime):
        return None, val.astimezone(UTC).isoformat()
    if isinstance(val, Enum):
        return float(val.value) if isinstance(val.value, int) else None, val.name
    return None, str(val)


def as_utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class DeviceSession:
    """One OPC UA server: connect, subscribe, emit; on loss emit BAD and reconnect."""

    def __init__(
        self,
        device: OpcUaDevice,
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
        self.source = device.endpoint
        self.up = False
        self._tags: dict[int, OpcUaTag] = {}
        self._series: dict[int, Series] = {}  # by client handle, as _tags
        self._all_series = [
            sink.series(tag.asset, tag.tag, tag.unit, self.source) for tag in device.tags
        ]
        self._bad_task: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        was_down = False
        log.info(
            "%s: %s, %d monitored items, publishing every %.3g s",
            self.device.name,
            self.device.endpoint,
            len(self.device.tags),
            self.device.publishing_interval_s,
        )
        try:
            while not stop.is_set():
                lost = asyncio.Event()
                client = self._client(lost)
                try:
                    # connecting can take seconds (several round trips): stop cuts it short
                    if not await unless_stopped(self._connect(client), stop):
                        break
                    sub = await unless_stopped(self._subscribe(client), stop)
                    if sub is None:
                        break
                    if was_down:
                        self.counters.reconnects += 1
                        log.info("%s: reconnected, subscription restored", self.device.name)
                    self._set_up(True)
                    attempt, was_down = 0, False
                    await self._consume(sub, stop, lost)
                    if not stop.is_set():
                        self.counters.errors += 1
                        log.warning("%s: connection lost", self.device.name)
                except Exception as exc:  # whatever the library raises: down, retry later
                    self.counters.errors += 1
                    log.warning("%s: %s: %r", self.device.name, self.device.endpoint, exc)
                    log.debug("%s: details", self.device.name, exc_info=True)
                finally:
                    await self._close(client)
                if stop.is_set():
                    break
                was_down = True
                self._set_up(False, stop)
                delay = self.policy.delay_s(attempt, self.rng.random())
                attempt += 1
                if await sleep_until(stop, loop.time() + delay):
                    break
        finally:
            self._set_up(True)  # stops the BAD emitter

    def _client(self, lost: asyncio.Event) -> Client:
        client = Client(
            self.device.endpoint,
            timeout=self.device.timeout_s,
            watchdog_intervall=min(self.device.timeout_s, 1.0),
        )
        client.name = client.description = f"otbridge {self.sink.connector}"

        async def on_lost(exc: Exception) -> None:
            lost.set()

        client.connection_lost_callback = on_lost
        if self.device.username:
            client.set_user(self.device.username)
        if self.device.password is not None:
            client.set_password(self.device.password.get_secret_value())
        return client

    async def _connect(self, client: Client) -> bool:
        sec = self.device.security
        if sec is not None:
            if sec.application_uri:
                client.application_uri = sec.application_uri
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                certificate=str(sec.certificate),
                private_key=str(sec.private_key),
                private_key_password=(
                    sec.private_key_password.get_secret_value()
                    if sec.private_key_password
                    else None
                ),
                server_certificate=str(sec.server_certificate),
                mode=getattr(ua.MessageSecurityMode, sec.mode),
            )
        # connect = socket, hello, secure channel, session: several round trips
        await asyncio.wait_for(client.connect(), self.device.timeout_s * 3)
        return True

    async def _subscribe(self, client: Client) -> Subscription:
        period_ms = self.device.publishing_interval_s * 1000
        sub = await client.create_subscription(period_ms, None, queue_maxsize=100_000)
        requests: list[ua.MonitoredItemCreateRequest] = []
        tags: dict[int, OpcUaTag] = {}
        for handle, tag in enumerate(self.device.tags, start=1):
            try:
                node_id = await self._resolve(client, tag)
            except (ua.UaError, ValueError) as exc:
                self._tag_failed(tag, f"cannot resolve: {exc!r}")
                continue
            requests.append(self._request(handle, node_id, tag))
            tags[handle] = tag
        results = await sub.create_monitored_items(requests) if requests else []
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, ua.StatusCode):
                tag = tags.pop(request.RequestedParameters.ClientHandle)
                self._tag_failed(tag, f"monitored item refused: {result.name}")
        self._tags = tags
        self._series = {
            handle: self.sink.series(tag.asset, tag.tag, tag.unit, self.source)
            for handle, tag in tags.items()
        }
        return sub

    async def _resolve(self, client: Client, tag: OpcUaTag) -> ua.NodeId:
        if tag.browse_path is not None:
            node = await client.nodes.objects.get_child(tag.browse_path.split("/"))
            return node.nodeid
        text = tag.node_id or ""
        if text.startswith("nsu="):
            uri, _, rest = text[4:].partition(";")
            text = f"ns={await client.get_namespace_index(uri)};{rest}"
        return ua.NodeId.from_string(text)

    def _request(
        self, handle: int, node_id: ua.NodeId, tag: OpcUaTag
    ) -> ua.MonitoredItemCreateRequest:
        sampling_s = (
            tag.sampling_interval_s
            if tag.sampling_interval_s is not None
            else self.device.publishing_interval_s
        )
        flt = ua.DataChangeFilter()
        flt.Trigger = TRIGGERS[tag.effective_trigger]
        if tag.deadband is not None:
            flt.DeadbandType = DEADBAND_TYPES[tag.deadband.type]
            flt.DeadbandValue = tag.deadband.value
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        params.SamplingInterval = sampling_s * 1000
        params.QueueSize = tag.queue_size
        params.DiscardOldest = True
        params.Filter = flt
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value)
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    async def _consume(self, sub: Subscription, stop: asyncio.Event, lost: asyncio.Event) -> None:
        """Emit the subscription's events until stop, a lost connection or a bad status.

        A task drains the subscription's queue (`async for`: no timer per event, which cost
        more than the rest of a data change together); this loop watches stop and lost and
        serves the producer's callbacks meanwhile."""
        poll_s = min(self.device.publishing_interval_s, 0.2)
        pump = asyncio.create_task(self._pump(sub, lost), name=f"events {self.device.name}")
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
        try:
            while not stop.is_set() and not lost.is_set() and not pump.done():
                await asyncio.wait([pump, *waits], timeout=poll_s,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                self.sink.poll()
        finally:
            for task in (pump, *waits):
                task.cancel()
            await asyncio.gather(pump, *waits, return_exceptions=True)
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]

    async def _pump(self, sub: Subscription, lost: asyncio.Event) -> None:
        emitted = 0
        async for event in sub:
            if isinstance(event, DataChangeEvent):
                self._emit_change(event)
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if not status.is_good():
                    log.warning("%s: subscription status %s", self.device.name, status.name)
                    lost.set()
                    return
            emitted += 1
            if emitted % 1000 == 0:  # a big publish: serve callbacks, let the loop breathe
                self.sink.poll()
                await asyncio.sleep(0)
        lost.set()  # the subscription was closed

    def _emit_change(self, event: DataChangeEvent) -> None:
        handle = event.data.subscription_data.client_handle
        series = self._series.get(handle) if handle is not None else None
        if series is None:
            return
        dv = event.data.monitored_item.Value
        quality = quality_of(dv.StatusCode if dv is not None else None)
        value, text = to_value(event.value) if quality is not Quality.BAD else (None, None)
        if quality is not Quality.BAD and value is None and text is None:
            quality = Quality.BAD  # no value, or NaN / infinity
        ts = None
        if dv is not None:
            ts = dv.SourceTimestamp or dv.ServerTimestamp
        self.sink.emit_value(series, value, quality, now_ms() if ts is None else millis(ts), text)

    def _tag_failed(self, tag: OpcUaTag, why: str) -> None:
        self.counters.errors += 1
        log.error(
            "%s: %s %s (%s): %s",
            self.device.name,
            tag.asset,
            tag.tag,
            tag.node_id or tag.browse_path,
            why,
        )
        self.sink.emit(self._bad(tag, utc_now()))

    def _bad(self, tag: OpcUaTag, ts: datetime) -> Sample:
        return Sample(
            asset=tag.asset,
            tag=tag.tag,
            value=None,
            quality=Quality.BAD,
            source_ts=ts,
            source=self.source,
            unit=tag.unit,
        )

    def _set_up(self, up: bool, stop: asyncio.Event | None = None) -> None:
        self.up = up
        if up:
            if self._bad_task is not None:
                self._bad_task.cancel()
                self._bad_task = None
        elif self._bad_task is None and stop is not None:
            self._bad_task = asyncio.create_task(
                self._emit_bad(stop), name=f"bad {self.device.name}"
            )

    async def _emit_bad(self, stop: asyncio.Event) -> None:
        """BAD readings for every tag, every publishing interval, while the device is down."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while not self.up and not stop.is_set():
            now = now_ms()
            for series in self._all_series:
                self.sink.emit_value(series, None, Quality.BAD, now)
            self.sink.poll()
            interval = self.device.publishing_interval_s
            next_tick += interval
            if next_tick < loop.time():  # late: skip the missed ticks rather than burst
                next_tick += ((loop.time() - next_tick) // interval + 1) * interval
            if await sleep_until(stop, next_tick):
                return

    async def _close(self, client: Client) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), self.device.timeout_s)


class OpcUaConnector:
    def __init__(
        self,
        config: OpcUaConfig,
        sink: ReadingSink,
        counters: Counters,
        *,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.sessions = [
            DeviceSession(device, sink, counters, reconnect=config.reconnect, rng=rng)
            for device in config.devices
        ]

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(session.run(stop) for session in self.sessions))


async def run(
    config: OpcUaConfig,
    settings: Settings,
    *,
    max_readings: int | None = None,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the OPC UA connector of `config` until a signal, a limit, the duration or `stop`."""
    return await run_connector(
        config,
        settings,
        lambda sink, counters: OpcUaConnector(config, sink, counters),
        max_readings=max_readings,
        duration_s=duration_s,
        stop=stop,
    )
