"""The lifecycle every connector shares: signals, limits, periodic counters, final flush."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any, Protocol

from connectors.core.config import ConnectorFile
from connectors.core.sink import Counters, ReadingSink, open_sink
from otbridge.settings import Settings

log = logging.getLogger(__name__)


class Connector(Protocol):
    async def run(self, stop: asyncio.Event) -> None:
        """Read devices and emit samples until `stop` is set."""


async def wait_for_stop(stop: asyncio.Event, timeout_s: float | None) -> None:
    """Return when `stop` is set or after `timeout_s` (None: no limit)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout_s)


async def run_connector(
    config: ConnectorFile[Any],
    settings: Settings,
    build: Callable[[ReadingSink, Counters], Connector],
    *,
    max_readings: int | None = None,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
    drain_s: float = 30.0,
) -> int:
    """Run a connector until SIGTERM/SIGINT, `duration_s`, `max_readings` or `stop` is set.

    Neither Kafka nor the registry needs to be reachable: readings wait in the connector's
    store (its `buffer` section) until they are. At the end, what is stored is sent for up to
    `drain_s`; what is left stays in the store for the next run. Exit code 0 unless a reading
    was rejected by Kafka for good (it is logged) or the connector failed.
    """
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
    counters = Counters()
    effective = config.effective_settings(settings)
    topic = config.readings_topic(settings)
    sink = open_sink(
        effective,
        topic=topic,
        connector_id=config.connector_id,
        policy=config.buffer,
        counters=counters,
        limit=max_readings,
        on_limit=stop.set,
    )
    connector_name = sink.connector
    connector = build(sink, counters)
    signals = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            signals.append(sig)
        except (RuntimeError, ValueError):  # not the main thread: the embedder stops us
            pass
    log.info(
        "connector %s (host %s) producing to %s at %s",
        connector_name,
        socket.gethostname(),
        topic,
        effective.kafka.bootstrap_servers,
    )

    async def stats() -> None:
        while not stop.is_set():
            await wait_for_stop(stop, config.stats_interval_s)
            log.info("%s", sink.stats())

    log.info("connector %s: buffer %s (%d readings from an earlier run, next seq %d)",
             connector_name, sink.store.path, sink.store.rows, sink.seq)
    forward_stop = asyncio.Event()  # the forwarder runs on while the rest stops
    forwarder = asyncio.create_task(sink.run(forward_stop), name="forwarder")
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(connector.run(stop), name="connector"),
        asyncio.create_task(stats(), name="stats"),
    ]
    try:
        await asyncio.wait(
            [*tasks, forwarder, asyncio.create_task(wait_for_stop(stop, duration_s))],
            return_when=asyncio.FIRST_COMPLETED,
        )
        stop.set()
        await _shutdown(tasks, timeout_s=10.0)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        forward_stop.set()
        await asyncio.gather(forwarder, return_exceptions=True)
        left = await sink.drain(drain_s)
        sink.store.close()
        log.info("stopped: %s", counters.summary())
        if left:
            log.warning("%d readings are still in %s; they are sent when the connector runs "
                        "next", left, sink.store.path)
    main = tasks[0]
    if not main.cancelled() and main.exception() is not None:
        raise main.exception()  # type: ignore[misc]
    if forwarder.done() and not forwarder.cancelled() and forwarder.exception() is not None:
        raise forwarder.exception()  # type: ignore[misc]
    if counters.delivery_failures:
        log.error("%d readings failed delivery (see the errors above)", counters.delivery_failures)
        return 1
    return 0


async def _shutdown(tasks: list[asyncio.Task[None]], *, timeout_s: float) -> None:
    """Give tasks `timeout_s` to end on the stop event, then cancel what is left."""
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        log.warning("task %s did not stop in %.0f s; cancelled", task.get_name(), timeout_s)
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
