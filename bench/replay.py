"""Benchmark: how fast a connector's backlog drains after an outage.

    python -m bench.replay --readings 300000

Fills a fresh store (connectors/core/buffer.py) with `--readings` Modbus-like readings, as a
connector does while Kafka is away (chunks of 2,000), then runs the sink's forwarder (the same
code as `otbridge connect`, in this process) against Kafka until the store is empty, and
reports readings/s from its start to the last acknowledgement: once at the default
`replay_per_s` (the limit that keeps a replay from starving live data) and once unlimited
(what the forwarder itself can do). The local stack must be up; a fresh topic each run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from connectors.core.buffer import Store
from connectors.core.config import BufferPolicy
from connectors.core.sink import Counters, ReadingSink
from otbridge.codec.avro import Quality
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings, load_settings

CHUNK = 2000


@dataclass
class Replay:
    readings: int
    seconds: float
    replay_per_s: int

    @property
    def rate(self) -> float:
        return self.readings / self.seconds


async def _drain(sink: ReadingSink, timeout_s: float) -> float:
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    start = time.monotonic()
    try:
        while sink.store.rows and time.monotonic() - start < timeout_s:
            await asyncio.sleep(0.01)
        return time.monotonic() - start
    finally:
        stop.set()
        await task


def run_replay(settings: Settings, readings: int, replay_per_s: int,
               timeout_s: float = 300) -> Replay:  # fmt: skip
    topic = f"bench.replay.{uuid.uuid4().hex[:10]}"
    ensure_topics(settings, [TopicSpec(topic)])
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "replay.db", "bench-replay")
        policy = BufferPolicy(replay_per_s=replay_per_s)
        sink = ReadingSink(settings, store=store, policy=policy, topic=topic,
                           counters=Counters())
        series = [sink.series(f"acme/bench/area/line{d}/machine{d}", f"r{i}", "degC",
                              f"modbus://127.0.0.1:502/{d}") for d in range(4) for i in range(500)]
        base = time.time_ns() // 1_000_000 - 3_600_000
        for n in range(readings):  # as while Kafka is away: stored, not sent
            sink.emit_value(series[n % len(series)], float(n % 1000), Quality.GOOD,
                            base + n // len(series) * 10)
            if n % CHUNK == CHUNK - 1:
                sink.store_pending()
        sink.store_pending()
        # the forwarder from connect to empty: reconcile (nothing of this instance yet), send
        seconds = asyncio.run(_drain(sink, timeout_s))
        left = store.rows
        store.close()
    if left:
        raise RuntimeError(f"{left} readings still stored after {timeout_s} s")
    return Replay(readings, seconds, replay_per_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=300_000)
    args = parser.parse_args(argv)
    settings = load_settings()
    default = BufferPolicy().replay_per_s
    for limit in (default, 10**9):
        r = run_replay(settings, args.readings, limit)
        shown = f"replay_per_s {limit:,}" if limit == default else "unlimited"
        print(f"backlog of {r.readings:,} readings drained in {r.seconds:.2f} s: "
              f"{r.rate:,.0f} readings/s ({shown}; connect and reconcile included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
