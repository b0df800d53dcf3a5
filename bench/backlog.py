"""Jobs on a backlog: preload a topic with N readings (a mix of assets and tags like the
simulated plant's), submit a job with that topic as its input, and time it from RUNNING until
its consumer group has committed the end of the topic. Offsets are committed on checkpoints
(every CHECKPOINT_INTERVAL here), so the figure is conservative by up to one interval.
"""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import Backlog, Context, JobRun, Result, at_least, reading_encoder
from otbridge import jobs
from otbridge.codec.avro import Series
from otbridge.kafka import TopicSpec, ensure_topics, producer_config
from otbridge.settings import Settings

CHECKPOINT_INTERVAL = "2s"
TAGS = ["state", "count_total", "count_good", "temperature", "vibration", "power"]
LINGER_MS = 50
TARGETS = {"downsample": 250_000, "oee": 150_000, "conditions": 100_000}
OUTPUTS = {"oee": ["oee"], "downsample": ["readings_1m", "readings_1h"], "conditions": ["alerts"]}


def preload(settings: Settings, topic: str, n: int, *, keys: int = 300, seed: int = 1) -> float:
    """Write n Reading records over `keys` distinct asset/tag pairs to a fresh one-partition
    topic (Avro, registry wire format), one sample per key per second of event time ending
    now; returns records/s. Encoded by the connectors' encoder (otbridge.codec.avro)."""
    ensure_topics(settings, [TopicSpec(topic, partitions=1)])
    encoder = reading_encoder(settings, topic)
    rng = random.Random(seed)
    assets = max(1, keys // len(TAGS))
    paths = [f"acme/berlin/body/line{a % 4}/m{a:06d}" for a in range(assets)]
    series = {(path, tag): Series.of(path, tag, None, "bench") for path in paths for tag in TAGS}
    per_second = assets * len(TAGS)
    producer = Producer(producer_config(settings, **{"linger.ms": LINGER_MS,
                                                     "queue.buffering.max.messages": 500000}))
    # event time ends now: readings far in the past would fall to the topic's retention
    span_s = n // per_second + 1
    t0 = (int(time.time()) - span_s - 60) * 1000
    counters = dict.fromkeys(paths, 0)
    started = time.perf_counter()
    for i in range(n):
        path = paths[i % assets]
        tag = TAGS[(i // assets) % len(TAGS)]
        ts = t0 + (i // per_second) * 1000
        if tag == "state":
            value = 1.0 if rng.random() > 0.1 else 3.0
        elif tag.startswith("count"):
            counters[path] += 1
            value = float(counters[path])
        else:
            value = 40.0 + rng.random() * 5
        s = series[path, tag]
        payload = encoder.encode(s, value, None, "GOOD", ts, ts, i, "bench")
        while True:
            try:
                producer.produce(topic, key=s.key, value=payload, timestamp=ts)
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


@dataclass
class Timing:
    """total_s: from RUNNING to the end of the topic committed; startup_s: from RUNNING to the
    first committed offset (operators opening, Python workers starting); rate: records/s
    between the first commit and the last, i.e. once the job is processing."""

    total_s: float
    startup_s: float
    rate: float


def time_job(settings: Settings, name: str, topic: str, n: int, *, parallelism: int,
             timeout_s: float = 1800) -> tuple[Timing, dict[str, str]]:
    """How long the job takes to consume the n readings of topic; and its output topics."""
    suffix = f"-bench-{uuid.uuid4().hex[:6]}"
    outputs = {role: f"bench.{role}{suffix}" for role in [*OUTPUTS[name], "dlq"]}
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in outputs.values()])
    extra = ["--stale-after-s=60"] if name == "oee" else []
    job_id = jobs.submit(
        settings, name, parallelism=parallelism,
        job_args=[f"--name-suffix={suffix}", f"--topic=readings={topic}",
                  *(f"--topic={r}={t}" for r, t in outputs.items()), *extra],
        flink_conf={"execution.checkpointing.interval": CHECKPOINT_INTERVAL},
    )
    group = f"otbridge-{name}{suffix}"
    try:
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
        started = time.perf_counter()
        deadline = started + timeout_s
        first: tuple[float, int] | None = None  # (time, offset) of the first commit
        while (offset := committed(settings, group, topic)) < n:
            if first is None and offset > 0:
                first = (time.perf_counter(), offset)
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{name}: backlog not consumed in {timeout_s:.0f}s")
            if jobs.job(settings, job_id)["state"] != "RUNNING":
                raise RuntimeError(f"{name}: job left RUNNING")
            time.sleep(0.25)
        ended = time.perf_counter()
        if first is None or n - first[1] < n // 10:
            first = (started, 0)  # too quick to tell the start-up from the run
        return Timing(ended - started, first[0] - started, (n - first[1]) / (ended - first[0])), \
            outputs
    finally:
        jobs.cancel(settings, job_id)


def job_result(stage: str, name: str, n: int, timing: Timing, parallelism: int, keys: int,
               *, with_target: bool) -> Result:
    target = at_least(TARGETS[name], "records/s") if with_target else None
    return Result(stage, f"{name} p={parallelism}, {keys:,} keys", round(timing.rate),
                  "records/s", records=n, seconds=timing.total_s, target=target,
                  settings={"parallelism": parallelism,
                            "checkpoint_interval": CHECKPOINT_INTERVAL,
                            "python_mode": "thread", "decode": "Java UDTF"},
                  note=f"start-up {timing.startup_s:.1f} s, "
                       f"{n / timing.total_s:,.0f} records/s including it")


def backlog_topic(ctx: Context) -> Backlog:
    """The shared backlog (ctx.readings readings over 300 keys), preloaded once per run."""
    if ctx.shared.backlog is None:
        topic = f"bench.readings.{uuid.uuid4().hex[:6]}"
        rate = preload(ctx.settings, topic, ctx.readings)
        ctx.shared.backlog = Backlog(topic, ctx.readings, rate)
    return ctx.shared.backlog


def stage_jobs(ctx: Context) -> list[Result]:
    """3. each job on the shared backlog, at parallelism 1 and 2."""
    backlog = backlog_topic(ctx)
    topic, n = backlog.topic, backlog.readings
    results = [Result("jobs", "preload (Python producer, Avro)", round(backlog.preload_rate),
                      "records/s", records=n, seconds=n / backlog.preload_rate,
                      settings={"linger_ms": LINGER_MS, "acks": "all", "idempotent": True})]
    runs = [(name, p) for p in ((1,) if ctx.quick else (1, 2))
            for name in ("downsample", "oee", "conditions")]
    # --quick submits the three jobs side by side (submission is most of a small run); the
    # full run times one job at a time so that each has the machine to itself
    with ThreadPoolExecutor(max_workers=len(runs) if ctx.quick else 1) as pool:
        timings = list(pool.map(
            lambda run: time_job(ctx.settings, run[0], topic, n, parallelism=run[1]), runs))
    for (name, p), (timing, outputs) in zip(runs, timings, strict=True):
        results.append(job_result("jobs", name, n, timing, p, 300, with_target=p == 1))
        if ctx.quick:
            results[-1].note += "; --quick: the three jobs ran at the same time"
        if name == "downsample" and p == 1:
            ctx.shared.downsample = JobRun(timing, outputs)
        print(f"  {results[-1].figure}: {results[-1].value:,.0f} records/s", flush=True)
    return results


def stage_scale(ctx: Context) -> list[Result]:
    """6. downsample throughput at 100, 10k and 100k distinct asset/tag keys."""
    n = ctx.readings
    key_counts = (100, 10_000) if ctx.quick else (100, 10_000, 100_000)
    topics = {}
    for keys in key_counts:
        topics[keys] = f"bench.readings.k{keys}.{uuid.uuid4().hex[:6]}"
        preload(ctx.settings, topics[keys], n, keys=keys)
    with ThreadPoolExecutor(max_workers=len(key_counts) if ctx.quick else 1) as pool:
        timings = list(pool.map(
            lambda keys: time_job(ctx.settings, "downsample", topics[keys], n, parallelism=1),
            key_counts))
    results = []
    for keys, (timing, _) in zip(key_counts, timings, strict=True):
        results.append(job_result("scale", "downsample", n, timing, 1, keys, with_target=False))
        if ctx.quick:
            results[-1].note += "; --quick: the runs shared the machine"
        print(f"  {results[-1].figure}: {results[-1].value:,.0f} records/s", flush=True)
    return results
