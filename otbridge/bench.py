"""`otbridge bench`: measured throughput of the jobs on a backlog (figures, not assertions).

Each run preloads a fresh topic with N readings (a mix of assets and tags like the simulated
plant's), submits the job with that topic as its input, and times it from RUNNING until its
consumer group has committed the end of the topic (offsets are committed on checkpoints,
every 2 s here, so the figure is conservative).
"""

from __future__ import annotations

import io
import json
import os
import platform
import random
import struct
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition

from otbridge import jobs
from otbridge.kafka import TopicSpec, ensure_topics, producer_config
from otbridge.registry import registry_client, schema_json
from otbridge.settings import Settings

CHECKPOINT_INTERVAL = "2s"


@dataclass
class Result:
    stage: str
    records: int
    seconds: float
    records_per_s: float
    settings: dict[str, Any]


def preload(settings: Settings, topic: str, n: int, *, assets: int = 50, seed: int = 1) -> float:
    """Write n Reading records to topic (Avro, registry wire format); returns records/s."""
    from confluent_kafka.schema_registry import Schema

    ensure_topics(settings, [TopicSpec(topic, partitions=1)])
    schema = schema_json("Reading")
    schema_id = registry_client(settings).register_schema(
        f"{topic}-value", Schema(json.dumps(schema), "AVRO"))
    parsed = fastavro.parse_schema(schema)
    header = b"\x00" + struct.pack(">I", schema_id)
    rng = random.Random(seed)
    tags = ["state", "count_total", "count_good", "temperature", "vibration", "power"]
    paths = [f"acme/berlin/body/line{a % 4}/m{a:04d}" for a in range(assets)]
    producer = Producer(producer_config(settings, **{"linger.ms": 50,
                                                     "queue.buffering.max.messages": 500000}))
    # event time ends now: readings far in the past would fall to the topic's retention
    span_s = n // (assets * len(tags)) + 1
    t0 = (int(time.time()) - span_s - 60) * 1000
    counters = dict.fromkeys(paths, 0)
    started = time.perf_counter()
    buf = io.BytesIO()
    for i in range(n):
        path = paths[i % assets]
        tag = tags[(i // assets) % len(tags)]
        ts = t0 + (i // (assets * len(tags))) * 1000  # one sample per tag per second
        if tag == "state":
            value = 1.0 if rng.random() > 0.1 else 3.0
        elif tag.startswith("count"):
            counters[path] += 1
            value = float(counters[path])
        else:
            value = 40.0 + rng.random() * 5
        rec = {"asset": path, "tag": tag, "value": value, "text": None, "unit": None,
               "quality": "GOOD", "source_ts": ts, "ingest_ts": ts, "source": "bench",
               "seq": i, "connector": "bench"}
        buf.seek(0)
        buf.truncate()
        fastavro.schemaless_writer(buf, parsed, rec)
        while True:
            try:
                producer.produce(topic, key=path.encode(), value=header + buf.getvalue(),
                                 timestamp=ts)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(120)
    return n / (time.perf_counter() - started)


def committed(settings: Settings, group: str, topic: str) -> int:
    consumer = Consumer({**settings.kafka.librdkafka(), "group.id": group})
    try:
        parts = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return max(parts[0].offset, 0)
    finally:
        consumer.close()


def run_job(settings: Settings, name: str, topic: str, n: int, *, parallelism: int,
            extra_args: list[str], timeout_s: float = 1800) -> Result:
    suffix = f"-bench-{uuid.uuid4().hex[:6]}"
    outputs = {"oee": ["oee"], "downsample": ["readings_1m", "readings_1h"],
               "conditions": ["alerts"]}[name]
    sinks = [f"--topic={role}=bench.{role}{suffix}" for role in [*outputs, "dlq"]]
    ensure_topics(settings, [TopicSpec(f"bench.{role}{suffix}", partitions=1)
                             for role in [*outputs, "dlq"]])
    job_id = jobs.submit(
        settings, name, parallelism=parallelism,
        job_args=[f"--name-suffix={suffix}", f"--topic=readings={topic}", *sinks, *extra_args],
        flink_conf={"execution.checkpointing.interval": CHECKPOINT_INTERVAL},
    )
    group = f"otbridge-{name}{suffix}"
    try:
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
        started = time.perf_counter()
        deadline = started + timeout_s
        while committed(settings, group, topic) < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{name}: backlog not consumed in {timeout_s:.0f}s")
            if jobs.job(settings, job_id)["state"] != "RUNNING":
                raise RuntimeError(f"{name}: job left RUNNING")
            time.sleep(0.5)
        seconds = time.perf_counter() - started
    finally:
        jobs.cancel(settings, job_id)
    return Result(f"job {name} p={parallelism}", n, round(seconds, 1), round(n / seconds),
                  {"parallelism": parallelism, "checkpoint_interval": CHECKPOINT_INTERVAL,
                   "python_mode": "thread"})


def bench_jobs(settings: Settings, *, n: int, names: list[str], parallelisms: list[int],
               assets: int) -> list[Result]:
    topic = f"bench.readings.{uuid.uuid4().hex[:6]}"
    rate = preload(settings, topic, n, assets=assets)
    results = [Result("preload (Python producer, Avro)", n, round(n / rate, 1), round(rate),
                      {"linger_ms": 50, "acks": "all", "idempotent": True})]
    for name in names:
        extra = ["--stale-after-s=60"] if name == "oee" else []
        for p in parallelisms:
            results.append(run_job(settings, name, topic, n, parallelism=p, extra_args=extra))
            print(f"  {results[-1].stage}: {results[-1].records_per_s} records/s", flush=True)
    return results


def table(results: list[Result]) -> str:
    lines = ["| stage | records | seconds | records/s | settings |", "|---|---|---|---|---|"]
    for r in results:
        s = ", ".join(f"{k}={v}" for k, v in r.settings.items())
        lines.append(f"| {r.stage} | {r.records:,} | {r.seconds} | {r.records_per_s:,} | {s} |")
    return "\n".join(lines)


def main(settings: Settings, *, quick: bool, jobs_: list[str], n: int | None,
         parallelisms: list[int], out_json: str | None) -> int:
    n = n or (20_000 if quick else 1_000_000)
    print(f"bench: {n:,} readings, jobs {', '.join(jobs_)}, parallelism {parallelisms}, "
          f"{os.cpu_count()} cores, {platform.python_version()}", flush=True)
    results = bench_jobs(settings, n=n, names=jobs_, parallelisms=parallelisms, assets=50)
    print(table(results))
    if out_json:
        with open(out_json, "w") as fh:
            json.dump([asdict(r) for r in results], fh, indent=2)
    return 0
