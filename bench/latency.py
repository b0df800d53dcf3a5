"""5. latency: reading -> alert time at a steady load, p50/p95/p99.

The conditions job runs on topics of its own with the simulated plant's rules plus one bench
rule, `bench-trigger`: a `high` limit with no on-delay, hysteresis or off-delay on a tag only
the trigger assets have. A load generator (a process of its own, so its GIL never delays the
measuring consumer) writes a steady rate of readings with current source timestamps: a
plant-like mix (state, counters, temperature, vibration, power) over one key per reading per
second, so every key is sampled at 1 Hz as a polled machine would be; and, on a fixed schedule
after a warm-up, a trigger asset's value crosses the limit and, HOLD_S later, goes back: one
RAISED and one CLEARED alert, each stamped with the triggering reading's source timestamp (no
on-delay: the transition's event time is that reading's). A read_committed consumer on the
alerts topic notes when each one arrives; latency = arrival wall time - source timestamp. It
includes the generator's own producer linger (the connectors' setting), the job and the
consumer. Readings outside the trigger rule go through the plant's rules as in production.

Full mode measures FULL_RATE for FULL_SECONDS (5 minutes): its p99 has the issue's target
(TARGET_P99_MS) and so has the conditions operator's busy time (at most half a core). Then it
searches for the highest rate that keeps p99 within SEARCH_P99_MS (shorter runs of
SEARCH_SECONDS, each a fresh job on fresh topics, at most MAX_STEPS runs in all): up by
doubling while every rate holds, then halfway between the highest that held and the lowest that
did not; down from what the job showed if FULL_RATE does not hold. A rate holds when the job
keeps up (every alert came, latency did not grow during the run, no input piling up in Kafka)
and its p99 is within SEARCH_P99_MS; a rate the generator itself could not produce ends the
search upward. Every rate tried is reported with the evidence of what limits the job (Flink's
per-vertex busy and back-pressured time, back-pressure level, the source's unread records).
Quick mode runs QUICK_RATE once, without a target (the target is for FULL_RATE).
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench import procs
from bench.common import (
    Context,
    Params,
    Result,
    Target,
    at_most,
    delete_topics,
    offline_reading_encoder,
    reading_encoder,
    wire_decoder,
)
from otbridge import jobs
from otbridge.codec.avro import Series, millis
from otbridge.kafka import TopicSpec, consumer_config, ensure_topics, producer_config
from otbridge.settings import Settings

TARGET_P99_MS = 300  # at FULL_RATE
SEARCH_P99_MS = 500  # the highest rate that keeps p99 within this is searched for
TARGET_BUSY_MS_S = 500  # the conditions operator at FULL_RATE: at most half a core
FULL_RATE, QUICK_RATE = 10_000, 1_000  # readings/s
FULL_SECONDS, SEARCH_SECONDS, QUICK_SECONDS = 300, 60, 20  # measured, after the warm-up
# before the first trigger: a fresh job creates every key's state and warms up; at rates near
# what it can take it needs 15-20 s to work off that start
FULL_WARMUP_S, QUICK_WARMUP_S = 20, 5
EPISODE_EVERY_S = 0.5  # a trigger episode starts this often (RAISED, then CLEARED HOLD_S later)
HOLD_S = 1.0
TRIGGER_ASSETS = 10  # episodes rotate over them, so one asset's episodes never overlap
TRIGGER_TAG, TRIGGER_RULE, TRIGGER_LIMIT = "bench_trigger", "bench-trigger", 0.5
PARALLELISM = 1
MAX_STEPS = 5  # full mode: FULL_RATE, then at most four rates to find the highest that holds
RATE_STEP = 250.0  # readings/s: the coarsest resolution of that search ...
RATE_RESOLUTION = 0.1  # ... or this fraction of the highest rate that held, if more
LOAD_SHORTFALL = 0.98  # a run whose generator made less than this share of its rate
BEHIND_MS = 500  # falling behind: the last quarter's median latency above the first's by this
BACKLOG_S = 2.0  # ... or more than this many seconds of input waiting in Kafka late in the run
# per-job Flink configuration, tuned for latency where it is a setting
FLINK_CONF = {
    # records leave a network buffer after at most this long (Flink default 100 ms)
    "execution.buffer-timeout.interval": "10ms",
    "execution.checkpointing.interval": "10s",  # the cluster default, stated
    # the trigger rule has no on-delay, so no alert waits for a watermark: the default is kept
    "pipeline.auto-watermark-interval": "200ms",
}

MACHINES = [  # area, line, machine kind, temperature base (degC): the plant's machine types
    ("body", "line1", "press", 47.0),
    ("body", "line2", "weld", 57.0),
    ("paint", "line3", "robot", 47.0),
    ("paint", "line3", "oven", 160.0),
    ("assembly", "line4", "cnc", 40.0),
]
TAGS = ("state", "count_total", "count_good", "temperature", "vibration", "power")
UNITS = {"temperature": "degC", "vibration": "mm/s", "power": "kW", "count_total": "parts",
         "count_good": "parts"}


LOAD_SOURCE, LOAD_CONNECTOR = "bench://latency", "bench-latency"  # the load's Reading fields


def trigger_asset(i: int) -> str:
    return f"acme/berlin/bench/trigger/t{i:02d}"


def rules_yaml() -> dict[str, Any]:
    """The plant's rules (what production runs) plus the trigger rule."""
    from jobs.conditions.rules import RULES_FILE

    rules = yaml.safe_load(RULES_FILE.read_text())["rules"]
    rules.append({
        "name": TRIGGER_RULE, "description": "bench: fires on the crossing itself",
        "match": {"asset": "acme/berlin/bench/trigger/*", "tag": TRIGGER_TAG},
        "kind": "high", "severity": "info", "limit": TRIGGER_LIMIT,
    })
    return {"rules": rules}


def schedule(warmup_s: float, seconds: float) -> list[tuple[float, int, float]]:
    """(seconds after the load starts, trigger asset, new value): episodes from the end of the
    warm-up, each a crossing up and HOLD_S later back down."""
    plan = []
    n = math.ceil((seconds - HOLD_S) / EPISODE_EVERY_S)  # the last clear before the end
    for e in range(n):
        t = warmup_s + e * EPISODE_EVERY_S
        plan += [(t, e % TRIGGER_ASSETS, 1.0), (t + HOLD_S, e % TRIGGER_ASSETS, 0.0)]
    return sorted(plan)


# -- the load generator (runs in a process of its own) ----------------------------------------


class _Plant:
    """Per key values that look like the plant's: noisy, slowly wandering, never flat."""

    def __init__(self, keys: int, seed: int) -> None:
        self.rng = random.Random(seed)
        machines = max(1, math.ceil((keys - TRIGGER_ASSETS) / len(TAGS)))
        self.keys: list[tuple[str, str, float]] = []  # asset, tag, base
        for m in range(machines):
            area, line, kind, temp = MACHINES[m % len(MACHINES)]
            asset = f"acme/berlin/{area}/{line}/{kind}{m // len(MACHINES):04d}"
            for tag in TAGS:
                base = {"temperature": temp, "vibration": 2.2, "power": 15.0}.get(tag, 0.0)
                self.keys.append((asset, tag, base))
        for i in range(TRIGGER_ASSETS):
            self.keys.append((trigger_asset(i), TRIGGER_TAG, 0.0))
        self.level = [0.0] * len(self.keys)  # wander (temperature) / counter / trigger level

    def value(self, k: int) -> float:
        _, tag, base = self.keys[k]
        r = self.rng.random()
        if tag == "state":
            return 1.0 if r > 0.002 else 2.0  # RUNNING, rarely a short stop
        if tag in ("count_total", "count_good"):
            self.level[k] += 1.0 if r > 0.05 or tag == "count_total" else 0.0
            return self.level[k]
        if tag == "temperature":
            self.level[k] = max(-3.0, min(3.0, self.level[k] + (r - 0.5) * 0.2))
            return round(base + self.level[k], 2)
        if tag == TRIGGER_TAG:
            return self.level[k]
        return base + (r - 0.5) * base * 0.08  # vibration, power: noise around the base


def generate_main() -> int:
    """`python -m bench.latency`: the load generator, a process of its own (so its
    GIL never delays the measuring consumer). Arguments as JSON on stdin; the result, as JSON,
    into the file named by its `out` field."""
    args = json.load(sys.stdin)
    try:
        result = _generate(args["conf"], args["topic"], args["schema_id"], args["rate"],
                           args["seconds"], args["keys"], [tuple(p) for p in args["plan"]])
    except Exception as exc:  # the parent reports it
        result = {"error": f"{type(exc).__name__}: {exc}"}
    Path(args["out"]).write_text(json.dumps(result))
    return 0


def _generate(conf: dict[str, Any], topic: str, schema_id: int, rate: float, seconds: float,
              keys: int, plan: list[Any]) -> dict[str, Any]:
    # the connectors' encoder (its lean path: what never changes for a key is encoded once;
    # fastavro's generic writer would cost a tenth of a core at 10k/s, taken from the job)
    encoder = offline_reading_encoder(schema_id)
    plant = _Plant(keys, seed=7)
    trigger_key = {i: len(plant.keys) - TRIGGER_ASSETS + i for i in range(TRIGGER_ASSETS)}
    series = [Series.of(asset, tag, UNITS.get(tag), LOAD_SOURCE) for asset, tag, _ in plant.keys]
    producer = Producer(conf)
    seq = 0

    def send(k: int, value: float) -> int:
        nonlocal seq
        ts = int(time.time() * 1000)
        payload = encoder.encode(series[k], value, None, "GOOD", ts, ts, seq, LOAD_CONNECTOR)
        seq += 1
        while True:
            try:
                producer.produce(topic, key=series[k].key, value=payload, timestamp=ts)
                return ts
            except BufferError:
                producer.poll(0.01)

    triggers: list[tuple[str, str, int]] = []
    n_keys = len(plant.keys)
    sent = behind_max = 0.0
    k = ti = 0
    start = time.time()
    while True:
        elapsed = time.time() - start
        if elapsed >= seconds:
            break
        while ti < len(plan) and plan[ti][0] <= elapsed:
            _, idx, new = plan[ti]
            key = trigger_key[idx]
            plant.level[key] = new
            ts = send(key, new)
            triggers.append((plant.keys[key][0], "RAISED" if new > TRIGGER_LIMIT else "CLEARED",
                             ts))
            ti += 1
        due = int(elapsed * rate)
        todo = min(due - int(sent), 1000)
        if todo > 0:
            behind_max = max(behind_max, (due - sent) / rate)
            for _ in range(todo):
                send(k, plant.value(k))
                k = (k + 1) % n_keys
            sent += todo
            producer.poll(0)
        else:
            time.sleep(0.001)
    send_s = time.time() - start
    left = producer.flush(60)
    return {"sent": int(sent) + len(triggers), "send_s": send_s, "rate": sent / send_s,
            "behind_max_s": behind_max, "triggers": triggers, "unflushed": left}


# -- Flink REST: what the job is busy with ----------------------------------------------------


def _short(name: str) -> str:
    """A vertex of the conditions job by its role: the one that ends in the alerts sink (the
    state machines, chained to it), the Kafka source (decode and dead letters chained to it)."""
    if "alerts_sink" in name:
        return "conditions+alerts sink"
    if name.startswith("Source"):
        return "source+decode+dlq"
    return name.replace("\n", " ")[:40]


def vertex_load(settings: Settings, job_id: str) -> list[dict[str, Any]]:
    """Per vertex: busy and back-pressured ms/s (max over subtasks), the back-pressure level
    and, for sources, the records in Kafka not yet read, as Flink's web UI shows them. (Only
    gauges and levels: the REST API fetches metrics every 10 s, too coarse to take rates from.)
    """
    base = f"{settings.flink.rest_url}/jobs/{job_id}"
    out: list[dict[str, Any]] = []
    with httpx.Client(timeout=10) as http:
        for v in http.get(base).json().get("vertices", []):
            row: dict[str, Any] = {"vertex": _short(v["name"])}
            url = f"{base}/vertices/{v['id']}/subtasks/metrics"
            # the Kafka source's backlog: records in the topic it has not fetched yet
            pending = [m["id"] for m in http.get(url).json()
                       if m["id"].endswith(".pendingRecords")]
            metrics = http.get(url, params={"get": ",".join(
                ["busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", *pending])}).json()
            for m in metrics:
                if m["id"].endswith(".pendingRecords"):
                    row["pending"] = row.get("pending", 0.0) + float(m.get("sum") or 0.0)
                elif m["id"] == "busyTimeMsPerSecond":
                    row["busy_ms_s"] = float(m.get("max") or 0.0)
                else:
                    row["backpressured_ms_s"] = float(m.get("max") or 0.0)
            with suppress(httpx.HTTPError, ValueError, KeyError):
                bp = http.get(f"{base}/vertices/{v['id']}/backpressure").json()
                row["backpressure"] = bp.get("backpressureLevel")
            out.append(row)
    return out


def describe_load(rows: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{r['vertex']}: busy {r.get('busy_ms_s', 0):.0f} ms/s, back-pressured "
        f"{r.get('backpressured_ms_s', 0):.0f} ms/s"
        + (f" ({r['backpressure']})" if r.get("backpressure") else "")
        + (f", {r['pending']:,.0f} records not yet read" if r.get("pending") is not None else "")
        for r in rows)


def vertex_states(settings: Settings, job_id: str) -> set[str]:
    return {v["status"] for v in jobs.job(settings, job_id).get("vertices", [])}


# -- one run: a job, a load, the alerts -------------------------------------------------------


@dataclass
class Step:
    rate: float
    seconds: float
    warmup_s: float
    keys: int = 0
    achieved: float = 0.0
    behind_max_s: float = 0.0
    expected: int = 0
    seen: int = 0
    duplicates: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # in trigger order
    trigger_ts: list[int] = field(default_factory=list)  # their source timestamps
    missing_lower_bound_ms: list[float] = field(default_factory=list)
    in_job_ms: list[float] = field(default_factory=list)  # source ts -> sink's record time
    load: list[dict[str, Any]] = field(default_factory=list)
    late_minus_early_ms: float = 0.0

    @property
    def all_ms(self) -> list[float]:
        return sorted(self.latencies_ms + self.missing_lower_bound_ms)

    def pct(self, p: float) -> float:
        return percentile(self.all_ms, p)

    @property
    def backlog(self) -> float | None:
        """Readings in the topic the job's source had not read yet, late in the run."""
        for row in self.load:
            if row["vertex"].startswith("source"):
                return row.get("pending")
        return None

    @property
    def sustained(self) -> bool:
        """The job kept up: every alert came, the latency did not grow during the run, and
        late in the run less than BACKLOG_S of input waited in Kafka for the job's source.
        (Read rates from the REST API are too coarse to judge by: its metrics are fetched
        every 10 s.)"""
        backlog = self.backlog
        return (self.seen == self.expected and self.late_minus_early_ms < BEHIND_MS
                and (backlog is None or backlog <= BACKLOG_S * self.rate))


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values (nan if empty)."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def run_step(settings: Settings, rules_file: Path, rate: float, seconds: float,
             warmup_s: float, *, drain_s: float, say: Any = print) -> Step:
    tmp_dir = rules_file.parent
    step = Step(rate=rate, seconds=seconds, warmup_s=warmup_s)
    step.keys = max(int(rate), 60 + TRIGGER_ASSETS)  # one key per reading per second
    suffix = f"-bench-lat-{uuid.uuid4().hex[:6]}"
    topics = {"readings": f"bench.latency.readings{suffix}",
              "alerts": f"bench.latency.alerts{suffix}", "dlq": f"bench.latency.dlq{suffix}"}
    ensure_topics(settings, [TopicSpec(topics["readings"], partitions=3),
                             TopicSpec(topics["alerts"], partitions=3),
                             TopicSpec(topics["dlq"], partitions=1)])
    # registers Reading under the topic's subject; the generator encodes with that id
    schema_id = int.from_bytes(reading_encoder(settings, topics["readings"]).header[1:5], "big")
    job_id = None
    gen: Any = None
    consumer = None
    try:
        job_id = jobs.submit(
            settings, "conditions", parallelism=PARALLELISM,
            job_args=[f"--name-suffix={suffix}", f"--rules={rules_file}",
                      *(f"--topic={role}={topic}" for role, topic in topics.items())],
            flink_conf=FLINK_CONF,
        )
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=180)
        deadline = time.monotonic() + 120
        while vertex_states(settings, job_id) != {"RUNNING"}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"latency: job {job_id} tasks not all RUNNING")
            time.sleep(0.5)

        alerts = wire_decoder(settings, "AlertEvent")
        consumer = Consumer(consumer_config(settings, f"bench-latency{suffix}",
                                            **{"fetch.wait.max.ms": 100}))
        consumer.assign([TopicPartition(topics["alerts"], p, OFFSET_BEGINNING) for p in range(3)])

        plan = schedule(warmup_s, seconds)
        out_file = Path(tmp_dir) / f"load{suffix}.json"
        conf = producer_config(settings, **{"queue.buffering.max.messages": 500_000})
        gen = subprocess.Popen(procs.python_module("bench.latency"), stdin=subprocess.PIPE)
        assert gen.stdin is not None
        gen.stdin.write(json.dumps({
            "conf": conf, "topic": topics["readings"], "schema_id": schema_id, "rate": rate,
            "seconds": warmup_s + seconds, "keys": step.keys, "plan": plan,
            "out": str(out_file)}).encode())
        gen.stdin.close()
        say(f"  load {rate:,.0f}/s over {step.keys:,} keys for {warmup_s + seconds:.0f} s "
            f"(generator pid {gen.pid}), job {job_id}")

        samples: list[list[dict[str, Any]]] = []

        def sample() -> None:  # late in the run: a job falling behind is far behind by then
            with suppress(Exception):
                samples.append(vertex_load(settings, job_id))

        sampler = threading.Timer(warmup_s + seconds * 0.8, sample)
        sampler.daemon = True
        sampler.start()

        arrivals: dict[tuple[str, str, int], tuple[float, int]] = {}
        result: dict[str, Any] | None = None
        drain_until = math.inf
        wanted: set[tuple[str, str, int]] = set()
        hard_stop = time.monotonic() + warmup_s + seconds + 120 + drain_s
        while time.monotonic() < hard_stop:
            msg = consumer.poll(0.05)
            if msg is not None and not msg.error() and msg.value():
                arrived = time.time() * 1000
                alert = alerts.decode(msg.value()).record
                if alert is None:
                    raise RuntimeError(f"latency: an alert that does not decode at "
                                       f"{msg.topic()}/{msg.partition()}@{msg.offset()}")
                if alert["rule"] == TRIGGER_RULE:
                    key = (alert["asset"], alert["status"], millis(alert["event_ts"]))
                    if key in arrivals:
                        step.duplicates += 1
                    else:
                        arrivals[key] = (arrived, msg.timestamp()[1])
            if result is None and gen.poll() is not None:
                if not out_file.exists():
                    raise RuntimeError(f"latency: load generator exited with {gen.returncode}")
                result = json.loads(out_file.read_text())
                if "error" in result:
                    raise RuntimeError(f"latency: load generator failed: {result['error']}")
                wanted = {(a, s, ts) for a, s, ts in result["triggers"]}
                drain_until = time.monotonic() + drain_s
            if result is not None and (wanted <= set(arrivals) or
                                       time.monotonic() > drain_until):
                break
        if result is None:
            raise TimeoutError("latency: the load generator did not report back")
        sampler.cancel()
        step.load = samples[0] if samples else []
        end_ms = time.time() * 1000
        step.achieved = result["rate"]
        step.behind_max_s = result["behind_max_s"]
        step.expected = len(result["triggers"])
        for asset, status, ts in result["triggers"]:
            got = arrivals.get((asset, status, ts))
            if got is None:
                step.missing_lower_bound_ms.append(end_ms - ts)
                continue
            arrived, created = got
            step.trigger_ts.append(ts)
            step.latencies_ms.append(arrived - ts)
            step.in_job_ms.append(created - ts)
        step.seen = len(step.latencies_ms)
        q = max(1, len(step.latencies_ms) // 4)
        if step.latencies_ms:
            early = percentile(sorted(step.latencies_ms[:q]), 50)
            late_values = step.latencies_ms[-q:] + step.missing_lower_bound_ms
            late = percentile(sorted(late_values), 50)
            step.late_minus_early_ms = late - early
        return step
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()  # our own child, by its pid
            gen.wait(10)
        if consumer is not None:
            consumer.close()
        if job_id is not None:
            jobs.cancel(settings, job_id)
            with suppress(Exception):
                jobs.wait_for_state(settings, job_id, {"CANCELED"}, timeout_s=60)
        delete_topics(settings, list(topics.values()))


# -- the stage -------------------------------------------------------------------------------


def step_results(step: Step, *, with_target: bool, settings_row: Params,
                 note: str) -> list[Result]:
    rate = f"{step.rate:,.0f}/s"
    lower = " (lower bound)" if step.missing_lower_bound_ms else ""
    rows = []
    for p in (50, 95, 99):
        value = step.pct(p)
        target = at_most(TARGET_P99_MS, "ms") if p == 99 and with_target else None
        rows.append(Result("latency", f"reading->alert p{p} @ {rate}{lower}", round(value, 1),
                           "ms", records=step.expected, seconds=step.seconds, target=target,
                           settings=settings_row if p == 99 else {},
                           note=note if p == 99 else ""))
    rows.append(Result("latency", f"load achieved @ {rate}", round(step.achieved), "records/s",
                       records=int(step.achieved * (step.seconds + step.warmup_s)),
                       seconds=step.seconds + step.warmup_s,
                       target=Target(">=", round(step.rate * 0.98), "records/s")))
    rows.append(Result("latency", f"alerts seen @ {rate}", step.seen, f"of {step.expected}",
                       records=step.seen, seconds=step.seconds,
                       target=Target("=", step.expected, ""),
                       note=f"{step.duplicates} duplicates" if step.duplicates else ""))
    return rows


def describe(step: Step) -> str:
    in_job = percentile(sorted(step.in_job_ms), 50)
    text = (f"{step.rate:,.0f}/s over {step.keys:,} keys (1 Hz each): load achieved "
            f"{step.achieved:,.0f}/s (generator at most {step.behind_max_s * 1000:.0f} ms behind "
            f"schedule); alerts {step.seen}/{step.expected}"
            + (f" ({step.duplicates} duplicates)" if step.duplicates else "")
            + f"; median source ts -> alert written by the sink {in_job:.0f} ms; "
            f"last quarter's median latency - first quarter's {step.late_minus_early_ms:,.0f} ms"
            + ("" if step.sustained else " (falling behind)"))
    if step.load:
        text += f"; Flink at 80% of the run: {describe_load(step.load)}"
    return text


def growth(step: Step) -> float:
    """How fast the latency grew over the second half of the run (ms per ms of source time):
    the least-squares slope of latency against source timestamp."""
    half = len(step.trigger_ts) // 2
    xs, ys = step.trigger_ts[half:], step.latencies_ms[half:]
    if len(xs) < 4:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def capacity(step: Step) -> float:
    """Readings/s the job got through. Behind, its backlog grows at rate - capacity, so a
    reading's latency grows at rate / capacity - 1 per second of source time: capacity =
    rate / (1 + growth). Exact timestamps, unlike Flink's 10 s-stale REST counters."""
    return step.rate / (1 + max(0.0, growth(step)))


def behind(step: Step) -> str:
    """How a run that did not keep up fell behind."""
    if step.seen < step.expected:
        return (f"{step.expected - step.seen} of {step.expected} alerts had not come by the "
                "end of the wait after the load (their latency is counted up to then)")
    if growth(step) > 0.02:
        return (f"it got through about {capacity(step):,.0f}/s (latency growing "
                f"{growth(step) * 1000:,.0f} ms per s of load)")
    return (f"at its limit, it never worked off what piled up while it started (latency "
            f"stayed around {step.pct(50) / 1000:,.1f} s)")


def limits(step: Step) -> str:
    """What limits the job, from the Flink sample: the busiest vertex and who waits on it."""
    if not step.load:
        return "no Flink metrics sampled"
    busiest = max(step.load, key=lambda r: r["busy_ms_s"])
    waiting = [r for r in step.load if r["backpressured_ms_s"] >= 100]
    text = f"busiest vertex {busiest['vertex']} ({busiest['busy_ms_s']:.0f} ms/s busy)"
    if waiting:
        text += ", back-pressuring " + ", ".join(
            f"{r['vertex']} ({r['backpressured_ms_s']:.0f} ms/s)" for r in waiting)
    return text


def conditions_busy(step: Step) -> float | None:
    """The conditions operator's busy ms/s late in the run (max over subtasks)."""
    rows = [r for r in step.load if r["vertex"].startswith("conditions")]
    return max((r.get("busy_ms_s", 0.0) for r in rows), default=None)


def stage_latency(ctx: Context) -> list[Result]:
    quick = ctx.quick
    rate: float = QUICK_RATE if quick else FULL_RATE
    warmup = QUICK_WARMUP_S if quick else FULL_WARMUP_S
    settings_row: Params = {
        "parallelism": PARALLELISM, **FLINK_CONF,
        "alerts_sink": "at-least-once, linger.ms=5 (client default)",
        # the generator uses the connectors' producer settings: their batching delay is real
        "load_producer_linger_ms": producer_config(ctx.settings)["linger.ms"], "load_acks": "all",
        "partitions": "readings 3, alerts 3",
        "rules": f"plant rules.yaml + {TRIGGER_RULE} (high, no delay)",
    }
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="otbridge-bench-") as tmp:
        rules_file = Path(tmp) / "rules.yaml"
        rules_file.write_text(yaml.safe_dump(rules_yaml(), sort_keys=False))
        next_rate: float | None = rate
        while next_rate is not None:
            seconds = QUICK_SECONDS if quick else FULL_SECONDS if not steps else SEARCH_SECONDS
            step = run_step(ctx.settings, rules_file, next_rate, seconds, warmup,
                            drain_s=20 if quick else 60, say=lambda m: print(m, flush=True))
            steps.append(step)
            print(f"  {step.rate:,.0f}/s: p50 {step.pct(50):,.0f} ms, p95 {step.pct(95):,.0f} "
                  f"ms, p99 {step.pct(99):,.0f} ms; alerts {step.seen}/{step.expected}; load "
                  f"{step.achieved:,.0f}/s" + ("" if step.sustained else "; falling behind"),
                  flush=True)
            next_rate = None if quick else next_step(steps)
    ctx.shared.latency_steps = steps

    results: list[Result] = []
    for step in steps:
        note = describe(step)
        on_target = step.rate == FULL_RATE and step is steps[0]
        if not step.sustained:
            note += (f". The job does not keep up with {step.rate:,.0f} readings/s: "
                     f"{behind(step)}; {limits(step)}")
        elif on_target and step.pct(99) > TARGET_P99_MS:
            note += f". p99 above target: {limits(step)}"
        results += step_results(step, with_target=on_target, settings_row=settings_row,
                                note=note)
        if on_target and not quick:
            busy = conditions_busy(step)
            results.append(Result(
                "latency", f"conditions operator busy @ {step.rate:,.0f}/s",
                round(busy) if busy is not None else math.nan, "ms/s", records=step.expected,
                seconds=step.seconds, target=at_most(TARGET_BUSY_MS_S, "ms/s"),
                note=("max over subtasks at 80% of the run (1,000 ms/s is a full core)"
                      if busy is not None else "no Flink metrics sampled")))
    if not quick and len(steps) > 1:
        results.append(highest_rate(steps))
    return results


def holds(step: Step) -> bool:
    """The job kept up with the rate and its p99 stayed within SEARCH_P99_MS."""
    return step.sustained and step.pct(99) <= SEARCH_P99_MS


def load_limited(step: Step) -> bool:
    """The generator could not make the rate: a higher one says nothing about the job."""
    return step.achieved < LOAD_SHORTFALL * step.rate


def highest_rate(steps: list[Step]) -> Result:
    """The search's answer: the highest rate tried that kept p99 within SEARCH_P99_MS."""
    best = max((st for st in steps if holds(st)), key=lambda st: st.rate, default=None)
    failed = min((st.rate for st in steps if not holds(st) and not load_limited(st)),
                 default=None)
    tried = ", ".join(f"{st.rate:,.0f}" + ("" if holds(st) else " (no)") for st in steps)
    if best is None:
        note = f"no rate tried kept p99 <= {SEARCH_P99_MS} ms (rates {tried})"
    else:
        note = (f"p99 {best.pct(99):,.0f} ms over {best.keys:,} keys for {best.seconds:.0f} s; "
                f"rates tried {tried}")
        if failed is not None:
            note += f"; the lowest that did not hold: {failed:,.0f}/s ({limits_at(steps, failed)})"
        elif any(load_limited(st) for st in steps):
            note += "; the load generator could not go higher (it is the limit, not the job)"
        else:
            note += "; every rate tried held (the search ran out of steps)"
    return Result("latency", f"highest rate with reading->alert p99 <= {SEARCH_P99_MS} ms",
                  round(best.rate) if best else math.nan, "readings/s",
                  records=best.expected if best else 0, seconds=best.seconds if best else 0,
                  note=note)


def limits_at(steps: list[Step], rate: float) -> str:
    step = next(st for st in steps if st.rate == rate)
    if not step.sustained:
        return f"fell behind: {behind(step)}; {limits(step)}"
    return f"p99 {step.pct(99):,.0f} ms; {limits(step)}"


def next_step(steps: list[Step]) -> float | None:
    """Full mode: the next rate to try after `steps`, or None when done. While every rate
    holds: double it (unless the generator fell short). Once one does not: halfway between the
    highest that held and the lowest that did not, down to RATE_RESOLUTION of the former (and
    at least RATE_STEP). If none held yet: 85% of what the job got through while behind, at
    most 70% of the last rate."""
    if len(steps) >= MAX_STEPS:
        return None
    ok = [st.rate for st in steps if holds(st)]
    bad = [st.rate for st in steps if not holds(st) and not load_limited(st)]
    if not bad:
        if any(load_limited(st) for st in steps) or not ok:
            return None
        return max(ok) * 2
    hi = min(bad)
    if not ok:
        last = steps[-1]
        guess = min(capacity(last) * 0.85, last.rate * 0.7)
        return max(RATE_STEP, math.floor(guess / RATE_STEP) * RATE_STEP)
    lo = max(ok)
    resolution = max(RATE_STEP, lo * RATE_RESOLUTION)
    if hi - lo <= 2 * resolution:
        return None
    return math.floor((lo + hi) / 2 / RATE_STEP) * RATE_STEP


if __name__ == "__main__":
    raise SystemExit(generate_main())
