"""OPC UA source connector: subscriptions (monitored items), not polling.

Each data change notification becomes one Reading: the server's source timestamp is the
reading's source_ts and its status code the quality (Good -> GOOD, Uncertain -> UNCERTAIN,
Bad -> BAD, value null). A lost connection makes the device BAD (all its tags, every
publishing interval: the shared device loop of connectors.core.device) until a reconnect,
with exponential backoff and jitter, has opened a new session and re-created the
subscription and its monitored items; the server then sends every item's current value again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from connectors.core.device import Device, DeviceContext, run_devices
from connectors.opcua.config import OpcUaConfig, OpcUaDevice, OpcUaTag
from otbridge.codec.avro import Quality, Series, millis, now_ms
from otbridge.settings import Settings

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


class DeviceSession(Device):
    """One OPC UA server: a session and one subscription with a monitored item per tag."""

    def __init__(self, spec: OpcUaDevice, context: DeviceContext) -> None:
        super().__init__(spec, context)
        self.spec = spec
        self.client: Client | None = None
        self._sub: Subscription | None = None
        self._lost = asyncio.Event()
        self._series: dict[int, Series] = {}  # of the monitored tags, by client handle

    def describe(self) -> str:
        return (
            f"{len(self.spec.tags)} monitored items, publishing every "
            f"{self.spec.publishing_interval_s:.3g} s"
        )

    async def connect(self) -> None:
        self._lost = asyncio.Event()
        client = self.client = self._client(self._lost)
        await self._connect(client)
        self._sub = await self._subscribe(client)

    async def serve(self, stop: asyncio.Event) -> None:
        assert self._sub is not None
        await self._consume(self._sub, stop, self._lost)

    async def close(self) -> None:
        client, self.client, self._sub = self.client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), self.spec.timeout_s)

    def _client(self, lost: asyncio.Event) -> Client:
        client = Client(
            self.spec.endpoint,
            timeout=self.spec.timeout_s,
            watchdog_intervall=min(self.spec.timeout_s, 1.0),
        )
        client.name = client.description = f"otbridge {self.sink.connector}"

        async def on_lost(exc: Exception) -> None:
            lost.set()

        client.connection_lost_callback = on_lost
        if self.spec.username:
            client.set_user(self.spec.username)
        if self.spec.password is not None:
            client.set_password(self.spec.password.get_secret_value())
        return client

    async def _connect(self, client: Client) -> None:
        sec = self.spec.security
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
        await asyncio.wait_for(client.connect(), self.spec.timeout_s * 3)

    async def _subscribe(self, client: Client) -> Subscription:
        period_ms = self.spec.publishing_interval_s * 1000
        sub = await client.create_subscription(period_ms, None, queue_maxsize=100_000)
        requests: list[ua.MonitoredItemCreateRequest] = []
        tags: dict[int, OpcUaTag] = {}
        for handle, tag in enumerate(self.spec.tags, start=1):
            try:
                node_id = await self._resolve(client, tag)
            except (ua.UaError, ValueError) as exc:
                self._tag_failed(handle, tag, f"cannot resolve: {exc!r}")
                continue
            requests.append(self._request(handle, node_id, tag))
            tags[handle] = tag
        results = await sub.create_monitored_items(requests) if requests else []
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, ua.StatusCode):
                handle = request.RequestedParameters.ClientHandle
                self._tag_failed(handle, tags.pop(handle), f"monitored item refused: {result.name}")
        self._series = {handle: self.series[handle - 1] for handle in tags}
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
            else self.spec.publishing_interval_s
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
        poll_s = min(self.spec.publishing_interval_s, 0.2)
        pump = asyncio.create_task(self._pump(sub, lost), name=f"events {self.spec.name}")
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
                    self.log.warning("%s: subscription status %s", self.spec.name, status.name)
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
        if ts is None:
            self.sink.emit_value(series, value, quality, now_ms(), text)
            return
        source_ms = millis(ts)
        if self.sink.is_repeat(series, source_ms):
            # a value already emitted, resent after a reconnect (or a restart): not a new one
            self.counters.repeats += 1
            return
        self.sink.emit_value(series, value, quality, source_ms, text)

    def _tag_failed(self, handle: int, tag: OpcUaTag, why: str) -> None:
        """A tag that cannot be monitored: one BAD reading, and an error in the log."""
        self.counters.errors += 1
        self.log.error(
            "%s: %s %s (%s): %s",
            self.spec.name,
            tag.asset,
            tag.tag,
            tag.node_id or tag.browse_path,
            why,
        )
        self.sink.emit_value(self.series[handle - 1], None, Quality.BAD, now_ms())


async def run(
    config: OpcUaConfig,
    settings: Settings,
    *,
    max_readings: int | None = None,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the OPC UA connector of `config` until a signal, a limit, the duration or `stop`."""
    return await run_devices(
        config, settings, DeviceSession, max_readings=max_readings, duration_s=duration_s,
        stop=stop,
    )  # fmt: skip
