"""Jobs on a backlog: preload a topic with a realistic mix of readings, submit a job with that
topic as its input, and time it by its own output.

The mix (`Mix`, `mix_records`): 10,000 asset/tag keys on 3 partitions (keyed by asset, so one
machine's readings stay in order), one reading per key per second of event time, a few percent
out of order by up to 3 s (inside the jobs' 5 s watermark bound, so none is late), a few
percent BAD (no value, as connectors write them), one poison record in about 2,000 (not Avro,
an unknown schema id, a NaN value, a truncated body: each has its DLQ reason), a poison record
first in every partition and, last in every partition, an end marker: one reading 70 s of
event time after the rest, whose watermark closes every 1-minute window of the backlog.

Timing, by the job's output rather than by its committed offsets (offsets are committed on
checkpoints, every CHECKPOINT_INTERVAL, which is a large part of a run at 250k readings/s): the
job's output topics keep the broker's append time (message.timestamp.type=LogAppendTime), so
the first dead letter (of the first record of a partition) tells when the job started to
process, and the last record of any output (the windows and timers the end marker's watermark
fires) when it had processed everything. rate = records / (last output - first output). The
harness waits for the committed offsets to reach the end (polled every POLL_S) and for two
more checkpoints, then reads those two timestamps; the last output becomes visible to a
read_committed consumer at most one checkpoint interval later. Why not 10 million readings
instead: the Python preload writes roughly 40-80k records/s on this 2-core machine, so 10
million would take minutes per backlog before any job runs, and the jobs' runs (3 jobs x 2
parallelisms x 3 repeats) would take an hour; timing by output resolves a 4 s run to the
broker's millisecond timestamps.

CPU: the TaskManager's (and Kafka's) utime + stime from /proc/<pid>/stat, sampled at each poll;
the figure is the difference between the polls that bracket the first and the last output.
"""

from __future__ import annotations

import math
import os
import random
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.common import (
    Backlog,
    Context,
    JobRun,
    Result,
    Spread,
    at_least,
    delete_topics,
    reading_encoder,
)
from otbridge import jobs
from otbridge.codec.avro import ReadingEncoder, Series
from otbridge.codec.wire import NAN_VALUE, NOT_AVRO, SCHEMA_MISMATCH, UNKNOWN_SCHEMA_ID
from otbridge.kafka import TopicSpec, consumer_config, ensure_topics, producer_config
from otbridge.settings import Settings

CHECKPOINT_INTERVAL = "2s"
TAGS = ["state", "count_total", "count_good", "temperature", "vibration", "power"]
UNITS = {"state": None, "count_total": "pcs", "count_good": "pcs", "temperature": "degC",
         "vibration": "mm/s", "power": "kW"}
LINGER_MS = 50
TARGETS = {"downsample": 250_000, "oee": 150_000, "conditions": 150_000}
OUTPUTS = {"oee": ["oee"], "downsample": ["readings_1m", "readings_1h"], "conditions": ["alerts"]}
POLL_S = 0.5  # the harness's polling: light next to the job it measures
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
POISON = (NOT_AVRO, UNKNOWN_SCHEMA_ID, NAN_VALUE, SCHEMA_MISMATCH)
UNKNOWN_ID = 0x7FFF_FFF0  # a schema id no registry here has handed out
END = "end"  # Record.kind of the end markers


# ------------------------------------------------------------------------------ the mix

@dataclass(frozen=True)
class Mix:
    """What a backlog holds. out_of_order_share of the readings arrive up to max_delay_s after
    the readings of their own second (on their partition); keep max_delay_s below the jobs'
    out-of-orderness (5 s) so that none of them is late."""

    keys: int = 10_000
    partitions: int = 3
    bad_share: float = 0.03
    out_of_order_share: float = 0.05
    max_delay_s: int = 3
    poison_every: int = 2_000
    end_jump_s: int = 70
    seed: int = 1

    def describe(self) -> str:
        return (f"{self.keys:,} keys on {self.partitions} partitions, {self.bad_share:.0%} BAD, "
                f"{self.out_of_order_share:.0%} out of order by <= {self.max_delay_s} s, "
                f"1 poison in about {self.poison_every:,}")


@dataclass(frozen=True)
class Record:
    """One backlog record: kind is GOOD or BAD (a reading), END (an end marker, GOOD) or the
    DLQ reason a job must give it (a poison record)."""

    partition: int
    key: bytes
    value: bytes
    ts: int  # ms: the Kafka record timestamp (= the reading's source time)
    kind: str


def partition_of(asset: str, partitions: int) -> int:
    """The partition of an asset's readings (stable across runs and processes)."""
    return zlib.crc32(asset.encode()) % partitions


def mix_assets(mix: Mix) -> list[str]:
    """The asset paths of `mix` (TAGS of each make its keys)."""
    return [f"acme/berlin/body/line{a % 4}/m{a:06d}" for a in range(-(-mix.keys // len(TAGS)))]


def publish_master_data(settings: Settings, topic: str, mix: Mix) -> None:
    """Asset master data for every asset of `mix` (state 1 RUNNING, 3 UNPLANNED_STOP, as the
    backlog's state tag says), so the oee job computes windows instead of waiting for it."""
    from jobs.oee.masterdata import AssetsFile, publish_assets

    assets = AssetsFile.model_validate({
        "defaults": {"ideal_cycle_time_s": 1.0, "state_tag": "state",
                     "total_count_tag": "count_total", "good_count_tag": "count_good",
                     "state_codes": {1: "RUNNING", 3: "UNPLANNED_STOP"}},
        "assets": [{"asset": a} for a in mix_assets(mix)],
    })
    publish_assets(settings, assets, topic=topic)


def mix_records(n: int, encoder: ReadingEncoder, *, mix: Mix, t0_ms: int) -> Iterator[Record]:
    """n records of `mix`, event time from t0_ms, in the order they are to be written."""
    if n < 2 * mix.partitions:
        raise ValueError(f"a backlog needs at least {2 * mix.partitions} records, not {n}")
    rng = random.Random(mix.seed)
    assets = mix_assets(mix)
    series = [Series.of(assets[i // len(TAGS)], TAGS[i % len(TAGS)],
                        UNITS[TAGS[i % len(TAGS)]], "bench") for i in range(mix.keys)]
    part = [partition_of(s.asset, mix.partitions) for s in series]
    first_of: dict[int, int] = {}
    for i, p in enumerate(part):
        first_of.setdefault(p, i)
    if len(first_of) < mix.partitions:
        raise ValueError(f"{mix.keys} keys leave a partition of {mix.partitions} empty")
    offset_ms = [(i * 7919) % 1000 for i in range(mix.keys)]  # each device its own phase
    counters: dict[tuple[str, str], int] = {}
    seq = 0

    def value_of(s: Series) -> float:
        if s.tag == "state":
            return 1.0 if rng.random() > 0.1 else 3.0
        if s.tag.startswith("count"):
            counters[s.asset, s.tag] = counters.get((s.asset, s.tag), 0) + 1
            return float(counters[s.asset, s.tag])
        return 40.0 + rng.random() * 5

    def reading(i: int, ts: int, kind: str) -> Record:
        nonlocal seq
        seq += 1
        s = series[i]
        if kind == "BAD":
            payload = encoder.encode(s, None, None, "BAD", ts, ts, seq, "bench")
        elif kind == NAN_VALUE:
            payload = encoder.encode(s, math.nan, None, "GOOD", ts, ts, seq, "bench")
        else:
            payload = encoder.encode(s, value_of(s), None, "GOOD", ts, ts, seq, "bench")
        if kind == NOT_AVRO:
            payload = b"not avro: " + payload[5:]
        elif kind == UNKNOWN_SCHEMA_ID:
            payload = b"\x00" + UNKNOWN_ID.to_bytes(4, "big") + payload[5:]
        elif kind == SCHEMA_MISMATCH:
            payload = payload[:5 + len(s.head) // 2]  # the body cut inside the asset name
        return Record(part[i], s.key, payload, ts, kind)

    count = 0
    for p in range(mix.partitions):  # first in every partition: the first dead letter
        yield reading(first_of[p], t0_ms, NOT_AVRO)
        count += 1
    budget = n - mix.partitions  # the end markers come last
    delayed: dict[int, list[Record]] = {}
    last_ts, second, poisoned = t0_ms, 0, 0
    while count < budget:
        for i in range(mix.keys):
            if count >= budget:
                break
            count += 1
            ts = t0_ms + second * 1000 + offset_ms[i]
            last_ts = max(last_ts, ts)
            if rng.random() * mix.poison_every < 1:  # any key, now and then
                kind = POISON[poisoned % len(POISON)]
                poisoned += 1
            else:
                kind = "BAD" if rng.random() < mix.bad_share else "GOOD"
            rec = reading(i, ts, kind)
            if rng.random() < mix.out_of_order_share:
                delayed.setdefault(second + rng.randint(1, mix.max_delay_s), []).append(rec)
            else:
                yield rec
        # after this second's readings: behind the same key's later readings
        yield from delayed.pop(second, [])
        second += 1
    for s in sorted(delayed):
        yield from delayed[s]
    end_ts = last_ts + mix.end_jump_s * 1000
    for p in range(mix.partitions):
        yield reading(first_of[p], end_ts, END)


@dataclass
class Preloaded:
    rate: float  # records/s
    kinds: dict[str, int] = field(default_factory=dict)  # Record.kind -> records
    span_s: float = 0.0  # event time covered, the end markers left out


def preload(settings: Settings, topic: str, n: int, *, mix: Mix | None = None) -> Preloaded:
    """Write n records of `mix` (default: Mix()) to a fresh topic with mix.partitions
    partitions, encoded by the connectors' encoder (otbridge.codec.avro); event time ends about
    a minute before now (readings far in the past would fall to the topic's retention)."""
    mix = mix or Mix()
    ensure_topics(settings, [TopicSpec(topic, partitions=mix.partitions)])
    encoder = reading_encoder(settings, topic)
    producer = Producer(producer_config(settings, **{"linger.ms": LINGER_MS,
                                                     "queue.buffering.max.messages": 500000}))
    span_s = n // mix.keys + 1
    t0 = (int(time.time()) - span_s - mix.end_jump_s - 60) * 1000
    kinds: dict[str, int] = {}
    started = time.perf_counter()
    for i, rec in enumerate(mix_records(n, encoder, mix=mix, t0_ms=t0)):
        kinds[rec.kind] = kinds.get(rec.kind, 0) + 1
        while True:
            try:
                producer.produce(topic, key=rec.key, value=rec.value, partition=rec.partition,
                                 timestamp=rec.ts)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"preload of {topic}: {left} records not delivered")
    return Preloaded(n / (time.perf_counter() - started), kinds, float(span_s))


# ----------------------------------------------------------------------------- timing

def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), from /proc; None if unknown or gone."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stack_pid(settings: Settings, process: str) -> int | None:
    """The pid of one of the local stack's processes (e.g. flink-taskmanager), None if this
    stack did not start it (a remote cluster)."""
    from otbridge.stack.components import components

    for component in components(settings):
        for proc in component.processes:
            if proc.name == process:
                return proc.pid()
    return None


@dataclass(frozen=True)
class Sample:
    t: float  # time.time()
    tm_cpu: float | None
    kafka_cpu: float | None


def cpu_between(samples: list[Sample], start: float, end: float
                ) -> tuple[float | None, float | None, float]:
    """TaskManager and Kafka CPU seconds between the last sample at or before `start` and the
    first at or after `end` (the nearest ones if none is), and the seconds between them."""
    if not samples:
        return None, None, 0.0
    a = max((s for s in samples if s.t <= start), key=lambda s: s.t, default=samples[0])
    b = min((s for s in samples if s.t >= end), key=lambda s: s.t, default=samples[-1])

    def diff(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else y - x

    return diff(a.tm_cpu, b.tm_cpu), diff(a.kafka_cpu, b.kafka_cpu), b.t - a.t


@dataclass
class Timing:
    """total_s: from RUNNING to the job's last output; startup_s: from RUNNING to its first
    (operators opening, Python workers starting); rate: records/s between the first output and
    the last; cpu_s / kafka_cpu_s: the TaskManager's / Kafka's CPU seconds over that span (None
    if their pid is unknown), measured over cpu_window_s (the polls that bracket it)."""

    total_s: float
    startup_s: float
    rate: float
    cpu_s: float | None = None
    kafka_cpu_s: float | None = None
    cpu_window_s: float = 0.0


def append_times(settings: Settings, topic: str, *, first: bool) -> int | None:
    """The broker append time (ms) of the first record of `topic` (first=True) or of its last
    data record (over every partition); None if it has none. Read uncommitted: the append time
    is what counts, not when the transaction commits."""
    consumer = Consumer(consumer_config(settings, f"bench-tail-{uuid.uuid4().hex[:8]}",
                                        **{"isolation.level": "read_uncommitted"}))
    try:
        found: list[int] = []
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                       cached=False)  # fmt: skip
            if high <= low:
                continue
            start = OFFSET_BEGINNING if first else max(low, high - 64)  # past commit markers
            consumer.assign([TopicPartition(topic, p, start)])
            deadline = time.monotonic() + 10
            stamps: list[int] = []
            while time.monotonic() < deadline:
                msgs = consumer.consume(1 if first else 100, timeout=POLL_S)
                stamps += [m.timestamp()[1] for m in msgs if m.error() is None]
                if first and stamps:
                    break
                if not first and consumer.position([TopicPartition(topic, p)])[0].offset >= high:
                    break
            if stamps:
                found.append(min(stamps) if first else max(stamps))
        if not found:
            return None
        return min(found) if first else max(found)
    finally:
        consumer.close()


def completed_checkpoints(settings: Settings, job_id: str) -> int:
    resp = httpx.get(f"{jobs.rest_url(settings)}/jobs/{job_id}/checkpoints", timeout=10)
    resp.raise_for_status()
    return int(resp.json()["counts"]["completed"])


def time_job(settings: Settings, name: str, topic: str, n: int, *, parallelism: int,
             timeout_s: float = 1800) -> tuple[Timing, dict[str, str]]:
    """How long the job takes for the n records of topic (see the module's docstring); and
    its output topics (role -> topic)."""
    suffix = f"-bench-{uuid.uuid4().hex[:6]}"
    outputs = {role: f"bench.{role}{suffix}" for role in [*OUTPUTS[name], "dlq"]}
    ensure_topics(settings, [TopicSpec(t, partitions=1, config=APPEND_TIME)
                             for t in outputs.values()])
    tm_pid, kafka_pid = stack_pid(settings, "flink-taskmanager"), stack_pid(settings, "kafka")
    extra: list[str] = []
    master: dict[str, str] = {}
    if name == "oee":  # with master data for every backlog asset, or it emits no window
        master["assets"] = f"bench.assets{suffix}"
        publish_master_data(settings, master["assets"], Mix())
        extra = ["--stale-after-s=60", f"--topic=assets={master['assets']}"]
    group = f"otbridge-{name}{suffix}"
    # reads the job's committed offsets only: never subscribes, never commits
    watcher = Consumer(consumer_config(settings, group))
    meta = watcher.list_topics(topic, timeout=10).topics[topic]
    ends = {p: watcher.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in sorted(meta.partitions)}
    job_id = jobs.submit(
        settings, name, parallelism=parallelism,
        job_args=[f"--name-suffix={suffix}", f"--topic=readings={topic}",
                  *(f"--topic={r}={t}" for r, t in outputs.items()), *extra],
        flink_conf={"execution.checkpointing.interval": CHECKPOINT_INTERVAL},
    )
    samples: list[Sample] = []

    def sample() -> None:
        samples.append(Sample(time.time(), cpu_seconds(tm_pid), cpu_seconds(kafka_pid)))

    try:
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
        running = time.time()
        deadline = time.monotonic() + timeout_s
        polls = 0
        while True:
            sample()
            parts = watcher.committed([TopicPartition(topic, p) for p in ends], timeout=10)
            if all(tp.offset >= ends[tp.partition] for tp in parts):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: backlog not consumed in {timeout_s:.0f}s")
            polls += 1
            if polls % 4 == 0 and jobs.job(settings, job_id)["state"] != "RUNNING":
                raise RuntimeError(f"{name}: job left RUNNING")
            time.sleep(POLL_S)
        # what the end marker's watermark fires may come after the barrier of the checkpoint
        # that committed the last offset: two more checkpoints and it has been written
        done = completed_checkpoints(settings, job_id)
        while completed_checkpoints(settings, job_id) < done + 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: no checkpoint after the end of the backlog")
            sample()
            time.sleep(POLL_S)
        sample()
    finally:
        watcher.close()
        jobs.cancel(settings, job_id)
    first_ms = append_times(settings, outputs["dlq"], first=True)
    lasts = [append_times(settings, t, first=False) for t in outputs.values()]
    last_ms = max((t for t in lasts if t is not None), default=None)
    if first_ms is None or last_ms is None or last_ms <= first_ms:
        raise RuntimeError(f"{name}: no output to time it by (first dead letter {first_ms}, "
                           f"last output {last_ms})")
    first, last = first_ms / 1000, last_ms / 1000
    cpu, kafka_cpu, window = cpu_between(samples, first, last)
    return Timing(last - running, first - running, n / (last - first), cpu, kafka_cpu,
                  window), {**outputs, **master}


def per_million(cpu_s: float | None, n: int) -> float | None:
    return None if cpu_s is None else cpu_s / n * 1e6


def job_results(stage: str, name: str, n: int, timings: list[Timing], parallelism: int,
                keys: int, *, with_target: bool) -> list[Result]:
    """The rate row (median and spread of the runs) and, where the TaskManager's pid is known,
    the CPU-seconds per million readings row."""
    rates = Spread.of([t.rate for t in timings])
    totals = Spread.of([t.total_s for t in timings])
    startups = Spread.of([t.startup_s for t in timings])
    target = at_least(TARGETS[name], "records/s") if with_target else None
    figure = f"{name} p={parallelism}, {keys:,} keys"
    rows = [Result(stage, figure, round(rates.median), "records/s", records=n,
                   seconds=totals.median, target=target, spread=rates.range,
                   runs=rates.runs,
                   settings={"parallelism": parallelism,
                             "checkpoint_interval": CHECKPOINT_INTERVAL,
                             "python_mode": "thread", "decode": "Java UDTF",
                             "timed": "first dead letter -> last output (append times)"},
                   note=f"start-up {startups.median:.1f} s, "
                        f"{n / totals.median:,.0f} records/s including it")]
    cpus = [c for t in timings if (c := per_million(t.cpu_s, n)) is not None]
    if cpus:
        cpu = Spread.of(cpus)
        kafka = [c for t in timings if (c := per_million(t.kafka_cpu_s, n)) is not None]
        windows = Spread.of([t.cpu_window_s for t in timings])
        rows.append(Result(stage, f"{figure}: TaskManager CPU per million readings",
                           round(cpu.median, 2), "CPU-s", records=n, seconds=windows.median,
                           spread=(round(cpu.low, 2), round(cpu.high, 2)), runs=cpu.runs,
                           settings={"kafka_cpu_s_per_million":
                                     round(Spread.of(kafka).median, 2) if kafka else None},
                           note="utime+stime of the TaskManager process between the polls "
                                "that bracket the first and the last output"))
    return rows


def backlog_topic(ctx: Context) -> Backlog:
    """The shared backlog (ctx.readings records of Mix()), preloaded once per run."""
    if ctx.shared.backlog is None:
        topic = f"bench.readings.{uuid.uuid4().hex[:6]}"
        mix = Mix()
        loaded = preload(ctx.settings, topic, ctx.readings, mix=mix)
        poison = sum(v for k, v in loaded.kinds.items() if k in POISON)
        ctx.shared.backlog = Backlog(
            topic, ctx.readings, loaded.rate,
            f"{mix.describe()}: {loaded.kinds.get('BAD', 0):,} BAD, {poison:,} poison, "
            f"{loaded.span_s:.0f} s of event time + end markers")
    return ctx.shared.backlog


Run = tuple[str, int, str]  # job name, parallelism, input topic


#: the note on every timed job figure (not --quick)
WARM_UP = "after one untimed run of each job on the same backlog (a TaskManager that has run " \
    "the job's code before, as one that runs it for months)"


def warm_up(ctx: Context, n: int, runs: list[Run]) -> None:
    """One untimed run of each job (parallelism 1) before the timed ones: the first run on a
    fresh TaskManager also pays for the JIT compiling Flink's, Kafka's and Avro's code paths."""
    seen: set[str] = set()
    for name, _, topic in runs:
        if name not in seen:
            seen.add(name)
            _, outputs = time_job(ctx.settings, name, topic, n, parallelism=1)
            delete_topics(ctx.settings, set(outputs.values()))
            print(f"  {name}: warm-up run done", flush=True)


def run_all(ctx: Context, n: int, runs: list[Run]
            ) -> dict[Run, list[tuple[Timing, dict[str, str]]]]:
    """Each run ctx.repeat times. --quick submits the runs side by side (submission is most of
    a small run); otherwise one job at a time, so that each has the machine to itself."""
    out: dict[Run, list[tuple[Timing, dict[str, str]]]] = {r: [] for r in runs}
    if not ctx.quick:
        warm_up(ctx, n, runs)
    for _ in range(ctx.repeat):
        with ThreadPoolExecutor(max_workers=len(runs) if ctx.quick else 1) as pool:
            timed = list(pool.map(
                lambda run: time_job(ctx.settings, run[0], run[2], n, parallelism=run[1]),
                runs))
        for run, result in zip(runs, timed, strict=True):
            out[run].append(result)
    return out


def stage_jobs(ctx: Context) -> list[Result]:
    """3. each job on the shared backlog, at parallelism 1 and 2."""
    backlog = backlog_topic(ctx)
    topic, n = backlog.topic, backlog.readings
    results = [Result("jobs", "preload (Python producer, Avro)", round(backlog.preload_rate),
                      "records/s", records=n, seconds=n / backlog.preload_rate,
                      settings={"linger_ms": LINGER_MS, "acks": "all", "idempotent": True},
                      note=backlog.mix)]
    runs = [(name, p, topic) for p in ((1,) if ctx.quick else (1, 2))
            for name in ("downsample", "oee", "conditions")]
    timed = run_all(ctx, n, runs)
    keep: set[str] = set()
    for (name, p, _), done in timed.items():
        rows = job_results("jobs", name, n, [t for t, _ in done], p, Mix().keys,
                           with_target=p == 1)
        for row in rows:
            row.note += ("; --quick: the three jobs ran at the same time (CPU not per job)"
                         if ctx.quick else f"; {WARM_UP}")
        if name == "downsample" and p == 1:
            ctx.shared.downsample = JobRun(done[0][0], done[0][1],
                                           Spread.of([t.rate for t, _ in done]))
            keep |= set(done[0][1].values())
        results += rows
        for row in rows:
            print(f"  {row.figure}: {row.value:,} {row.unit}"
                  + (f" ({row.spread[0]:,}-{row.spread[1]:,})" if row.runs > 1 and row.spread
                     else ""), flush=True)
    delete_topics(ctx.settings, {t for done in timed.values() for _, outs in done
                                 for t in outs.values()} - keep)
    return results


def stage_scale(ctx: Context) -> list[Result]:
    """6. downsample throughput at 100, 10k and 100k distinct asset/tag keys."""
    n = ctx.readings
    key_counts = (100, 10_000) if ctx.quick else (100, 10_000, 100_000)
    topics = {}
    for keys in key_counts:
        topics[keys] = f"bench.readings.k{keys}.{uuid.uuid4().hex[:6]}"
        preload(ctx.settings, topics[keys], n, mix=Mix(keys=keys))
    timed = run_all(ctx, n, [("downsample", 1, topics[keys]) for keys in key_counts])
    results = []
    for keys, done in zip(key_counts, timed.values(), strict=True):
        rows = job_results("scale", "downsample", n, [t for t, _ in done], 1, keys,
                           with_target=False)
        if ctx.quick:
            for row in rows:
                row.note += "; --quick: the runs shared the machine"
        results += rows
        print(f"  {rows[0].figure}: {rows[0].value:,.0f} records/s", flush=True)
    delete_topics(ctx.settings, {t for done in timed.values() for _, outs in done
                                 for t in outs.values()} | set(topics.values()))
    return results
