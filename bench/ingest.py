"""Ingest: how fast readings get into Kafka.

`producer`: Kafka's own producer benchmark (org.apache.kafka.tools.ProducerPerformance, the
class behind kafka-producer-perf-test, from the jars the stack already fetched) on a fresh
topic, at the size of a typical Avro-encoded Reading, with the connectors' producer settings
(acks=all, idempotent, linger, batch size, compression). Java, no Avro encoding, no devices:
the ceiling a connector can at best approach on this machine.

`connector`: one Modbus connector process polling a pymodbus server (bench/load_modbus)
and one OPC UA connector process subscribed to an asyncua server (bench/load_opcua),
each into a fresh topic. While a connector runs, the topic's record count (the partitions'
end offsets) and the process's CPU time (/proc/<pid>/stat) are sampled twice a second; the
sustained rate and the CPU per 10k readings are taken over the steady part of the run (from
one second after the first record to the last increase), so start-up (imports, connecting,
creating monitored items) and the final flush do not dilute them. With --quick the servers offer
a modest load (Modbus 4 x 125 registers every 50 ms, OPC UA 500 variables every 100 ms) and
the rates have no target: the quick run checks that both connectors run and report their
figures, the same on a machine busy with other work (a test suite) as on a quiet one.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from confluent_kafka import Consumer, KafkaException

import connectors
from bench import procs
from bench.common import Context, Params, Result, at_least, offline_reading_encoder, records_in
from otbridge.codec.avro import Series
from otbridge.errors import OtbridgeError
from otbridge.kafka import TopicSpec, consumer_config, ensure_topics, producer_config
from otbridge.settings import Settings

PERF_CLASS = "org.apache.kafka.tools.ProducerPerformance"
PRODUCER_RECORDS = {True: 1_000_000, False: 5_000_000}  # by ctx.quick (the JVM warms up)
CONNECTOR_DURATION_S = {True: 10.0, False: 30.0}
TARGETS = {"modbus": 50_000, "opcua": 20_000}  # readings/s, one process, 2 cores (full mode)
# --quick checks that both connectors run and report, not how fast: a steady, modest load
# (Modbus 4 x 125 registers every 50 ms, ~10k/s; OPC UA 500 variables every 100 ms, 5k/s),
# so that the stage behaves the same on a machine busy with other work (a test suite)
EXAMPLES = Path(connectors.__file__).parent / "examples"
# librdkafka's default batch.size (bytes per partition batch); Java's default is 16 KiB
LIBRDKAFKA_BATCH_SIZE = 1_000_000
COUNTER_RE = re.compile(r"(\w+)=(\d+)")
SAMPLE_EVERY_S = 0.5
WARMUP_S = 1.0
SUMMARY_RE = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mb>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th, (?P<p999>\d+) ms 99\.9th"
)


# --- the producer ceiling -----------------------------------------------------------------


def typical_reading_size() -> int:
    """Bytes of a typical Reading in the registry wire format (5-byte header + Avro body):
    the median over every tag of the example Modbus and OPC UA connector files, with a
    numeric value, a 13-digit start time in the connector id and a seven-digit seq."""
    from connectors.core.config import load_config
    from connectors.modbus.config import ModbusConfig, ModbusTag
    from connectors.opcua.config import OpcUaConfig, OpcUaTag

    encoder = offline_reading_encoder(0)  # the id does not change the size
    now = int(time.time() * 1000)
    modbus = load_config(EXAMPLES / "modbus.yaml", ModbusConfig)
    opcua = load_config(EXAMPLES / "opcua.yaml", OpcUaConfig)
    series: list[tuple[str, str, ModbusTag | OpcUaTag]] = [
        (modbus.connector_id, d.source, t) for d in modbus.devices for t in d.tags
    ]
    series += [(opcua.connector_id, d.endpoint, t) for d in opcua.devices for t in d.tags]
    sizes = [
        len(encoder.encode(Series.of(tag.asset, tag.tag, tag.unit, source), 21.5, None, "GOOD",
                           now, now, 1_234_567, f"{connector}@{now}"))
        for connector, source, tag in series
    ]
    return round(statistics.median(sizes))


def perf_producer_props(settings: Settings) -> dict[str, str]:
    """The connectors' producer settings (otbridge.kafka.producer_config) as Java client
    properties. librdkafka's batch.num.messages has no Java counterpart; its batch.size is
    librdkafka's default unless the config sets one."""
    rd = producer_config(settings)
    props = {
        **settings.kafka.java(),
        "acks": str(rd["acks"]),
        "enable.idempotence": str(rd["enable.idempotence"]).lower(),
        "linger.ms": str(rd["linger.ms"]),
        "batch.size": str(rd.get("batch.size", LIBRDKAFKA_BATCH_SIZE)),
        "compression.type": str(rd["compression.type"]),
    }
    return props


def connector_producer_settings(settings: Settings) -> Params:
    """What matters of the connectors' own producer, for the result rows."""
    rd = producer_config(settings)
    keys = ("acks", "enable.idempotence", "linger.ms", "batch.num.messages", "compression.type")
    out: Params = {k: rd[k] for k in keys if k in rd}
    out["batch.size"] = rd.get("batch.size", LIBRDKAFKA_BATCH_SIZE)
    return out


@dataclass
class PerfRun:
    topic: str
    records: int
    record_size: int
    rate: float  # records/s
    mb_s: float
    avg_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    seconds: float
    props: dict[str, str]
    landed: int  # records in the topic afterwards


def run_producer_perf(settings: Settings, *, records: int, record_size: int,
                      partitions: int = 3, timeout_s: float = 600) -> PerfRun:  # fmt: skip
    """ProducerPerformance with `java -cp` on a fresh topic of `partitions` partitions (as
    many as iiot.readings has by default)."""
    from otbridge.stack.components import Kafka, java

    kafka = Kafka(settings)
    if not (settings.stack.lib_dir / "kafka").is_dir():
        raise OtbridgeError(f"no Kafka jars in {settings.stack.lib_dir / 'kafka'}: "
                            "run `otbridge stack fetch` (or `stack up`) first")  # fmt: skip
    topic = f"bench.perf.{uuid.uuid4().hex[:10]}"
    ensure_topics(settings, [TopicSpec(topic, partitions=partitions)])
    props = perf_producer_props(settings)
    log4j = kafka.home / "log4j2-tools.properties"
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "producer.properties"  # a file: SASL secrets stay off the cmd line
        conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        conf.chmod(0o600)
        cmd = [java(), *([f"-Dlog4j2.configurationFile={log4j}"] if log4j.is_file() else []),
               "-cp", kafka.classpath(), PERF_CLASS, "--topic", topic,
               "--num-records", str(records), "--record-size", str(record_size),
               "--throughput", "-1", "--producer.config", str(conf)]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        seconds = time.perf_counter() - started
    matches = list(SUMMARY_RE.finditer(proc.stdout))
    if proc.returncode != 0 or not matches:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-10:]
        raise OtbridgeError(f"{PERF_CLASS} exited {proc.returncode}: " + " | ".join(tail))
    m = matches[-1]
    return PerfRun(
        topic=topic, records=int(m["records"]), record_size=record_size,
        rate=float(m["rate"]), mb_s=float(m["mb"]), avg_ms=float(m["avg"]),
        p50_ms=float(m["p50"]), p99_ms=float(m["p99"]), max_ms=float(m["max"]),
        seconds=seconds, props={k: v for k, v in props.items() if "sasl" not in k},
        landed=records_in(settings, topic),
    )  # fmt: skip


def producer_ceiling(ctx: Context) -> float:
    """The ceiling of this run (records/s), measured now if the producer stage did not run."""
    if ctx.shared.producer_run is None:
        ctx.shared.producer_run = run_producer_perf(
            ctx.settings, records=PRODUCER_RECORDS[True], record_size=typical_reading_size())
    return ctx.shared.producer_run.rate


def stage_producer(ctx: Context) -> list[Result]:
    """1. the producer ceiling: kafka-producer-perf-test at the Reading's size."""
    size = typical_reading_size()
    run = run_producer_perf(ctx.settings, records=PRODUCER_RECORDS[ctx.quick], record_size=size)
    ctx.shared.producer_run = run
    settings: Params = {"record_size": size, **run.props, "partitions": 3,
                                "payload": "random A-Z (ProducerPerformance)", "keys": "none"}
    note = (f"latency avg {run.avg_ms:.0f} ms, p50 {run.p50_ms:.0f} ms, p99 {run.p99_ms:.0f} ms, "
            f"max {run.max_ms:.0f} ms; {run.landed:,} records in {run.topic}")  # fmt: skip
    print(f"  {run.rate:,.0f} records/s, {run.mb_s:.1f} MB/s, p99 {run.p99_ms:.0f} ms", flush=True)
    figure = f"kafka-producer-perf-test, {size}-byte records"
    return [
        Result("producer", figure, round(run.rate), "records/s", records=run.records,
               seconds=run.records / run.rate, settings=settings, note=note),
        Result("producer", figure, round(run.mb_s, 2), "MB/s", records=run.records,
               seconds=run.records / run.rate, settings={"record_size": size}),
    ]  # fmt: skip


# --- one connector process ----------------------------------------------------------------


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class ConnectorRun:
    """One connector process's run into a fresh topic."""

    topic: str
    duration_s: float  # the connector's --duration
    readings: int  # records in the topic afterwards
    rate: float  # sustained readings/s over the steady window
    window_s: float
    cpu_s: float  # the connector's CPU seconds in the steady window
    total_cpu_s: float  # ... over the whole process (start-up and flush included)
    exit_code: int
    counters: dict[str, int] = field(default_factory=dict)  # the connector's, at its end
    log_tail: list[str] = field(default_factory=list)  # its warnings and errors
    settings: Params = field(default_factory=dict)
    offered: float | None = None  # what the simulator offered (changes/s), when it knows

    @property
    def cpu_per_10k(self) -> float:
        steady = self.rate * self.window_s
        return self.cpu_s / steady * 10_000 if steady else float("nan")

    @property
    def cores(self) -> float:
        """CPU of the connector process in the steady window, in cores (1.0: one core)."""
        return self.cpu_s / self.window_s if self.window_s else float("nan")

    @property
    def overall_rate(self) -> float:
        return self.readings / self.duration_s


def run_connector_process(
    settings: Settings, cmd: Sequence[str], topic: str, duration_s: float, *,
    timeout_s: float = 120,
) -> ConnectorRun:  # fmt: skip
    """Run `cmd` (a connector with `--duration duration_s`, producing to `topic`), sampling
    the topic's record count and the process's CPU time; see the module docstring."""
    ensure_topics(settings, [TopicSpec(topic)])  # 3 partitions, like iiot.readings
    consumer = Consumer(consumer_config(settings, f"bench-{uuid.uuid4().hex}"))
    samples: list[tuple[float, int, float]] = []  # (time, records, cpu s)
    usage = None
    exit_code: int | None = None
    log = tempfile.TemporaryFile(mode="w+")
    try:
        child = procs.start("the connector", cmd, stderr=log)
        deadline = time.monotonic() + duration_s + timeout_s
        try:
            while True:
                # wait4, not Popen.poll: it also gives the child's own resource usage
                pid, status, ru = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    exit_code, usage = os.waitstatus_to_exitcode(status), ru
                    child.proc.returncode = exit_code
                    break
                if time.monotonic() > deadline:
                    raise OtbridgeError(f"the connector did not stop within {timeout_s:.0f} s "
                                        "after its duration")  # fmt: skip
                cpu = _cpu_seconds(child.pid)
                # a sample Kafka is too busy to answer in time is skipped, not fatal
                with suppress(KafkaException):
                    count = records_in(settings, topic, consumer)
                    if cpu is not None:
                        samples.append((time.monotonic(), count, cpu))
                time.sleep(SAMPLE_EVERY_S)
        finally:
            child.stop(timeout_s=30)
        readings = records_in(settings, topic, consumer)
        log.seek(0)
        lines = log.read().splitlines()
    finally:
        consumer.close()
        log.close()
    counters: dict[str, int] = {}
    for line in lines:
        if "stopped: readings=" in line:  # connectors.core.runner's last line
            counters = {k: int(v) for k, v in COUNTER_RE.findall(line)}
    total_cpu = usage.ru_utime + usage.ru_stime if usage is not None else float("nan")
    rate, window, cpu_s = _steady(samples)
    problems = [line for line in lines if " WARNING " in line or " ERROR " in line]
    if exit_code:  # what it said last (a traceback ends there)
        problems += lines[-10:]
    return ConnectorRun(topic=topic, duration_s=duration_s, readings=readings, rate=rate,
                        window_s=window, cpu_s=cpu_s, total_cpu_s=total_cpu,
                        exit_code=int(exit_code or 0), counters=counters,
                        log_tail=problems[-10:])  # fmt: skip


def _steady(samples: list[tuple[float, int, float]]) -> tuple[float, float, float]:
    """(readings/s, window s, CPU s) from one second after the first record to the last
    sample at which the count still grew."""
    first = next((i for i, s in enumerate(samples) if s[1] > 0), None)
    if first is None:
        return 0.0, 0.0, 0.0
    start = next((i for i in range(first, len(samples))
                  if samples[i][0] >= samples[first][0] + WARMUP_S), first)  # fmt: skip
    end = max((i for i in range(start + 1, len(samples)) if samples[i][1] > samples[i - 1][1]),
              default=start)  # fmt: skip
    if end <= start:  # too few samples after the warm-up (a slow, busy machine): all of them
        start = first
        end = max((i for i in range(first + 1, len(samples))
                   if samples[i][1] > samples[i - 1][1]), default=first)  # fmt: skip
    if end <= start:
        return 0.0, 0.0, 0.0
    (t0, n0, c0), (t1, n1, c1) = samples[start], samples[end]
    return (n1 - n0) / (t1 - t0), t1 - t0, c1 - c0


def connector_cmd(kind: str, config_path: Path, duration_s: float) -> list[str]:
    """`otbridge connect KIND`, logging at INFO: its last line has the counters."""
    return procs.otbridge_cli("connect", kind, "--config", str(config_path),
                              "--duration", str(duration_s), "--log-level", "INFO")


def run_against_server(settings: Settings, kind: str, server: Sequence[str], port: int,
                       config: Callable[[str], dict[str, object]], duration_s: float,
                       workdir: Path) -> ConnectorRun:  # fmt: skip
    """One `kind` connector process against a load server (the command `server`, ready when it
    listens on `port`, stopped afterwards) into a fresh topic; `config(topic)` is the
    connector's configuration document (written into `workdir`)."""
    topic = f"bench.readings.{uuid.uuid4().hex[:10]}"
    with procs.serving(f"the {kind} load server", server, port):
        path = workdir / f"{kind}.yaml"
        # a store of its own (a fresh instance id, seq from 0), not the default one
        document = {"buffer": {"path": str(workdir / f"{kind}-{topic}.db")}, **config(topic)}
        path.write_text(yaml.safe_dump(document))
        return run_connector_process(settings, connector_cmd(kind, path, duration_s), topic,
                                     duration_s)


def report_exit(run: ConnectorRun) -> int:
    """For a load script's main: the connector's warnings and errors; its exit code."""
    for line in run.log_tail:
        print(f"connector: {line}", file=sys.stderr)
    if run.exit_code != 0:
        print(f"connector exited {run.exit_code}", file=sys.stderr)
    return run.exit_code


# --- the connector stage ------------------------------------------------------------------

LIMITS = {  # what py-spy showed in the connector's (one) Python thread at full load
    "modbus": "the connector's one Python thread is the limit (py-spy): producer.produce() "
    "about 20%, the Avro encoding about 20%, serving delivery callbacks about 5%, pymodbus "
    "requests and responses about 15% (it formats every response for a debug log), register "
    "decoding and the loop the rest; librdkafka's threads use the other core",
    "opcua": "the connector's one Python thread is the limit (py-spy): asyncua decoding the "
    "publish responses in pure Python (about 15 us a data change) and turning them into "
    "events is about half; the reading itself (Avro encoding, produce) about a fifth",
}


def connector_results(kind: str, run: ConnectorRun, ceiling: float, producer: Params, *,
                      with_target: bool = True) -> list[Result]:  # fmt: skip
    """The stage's rows for one connector run; the rate has a target only in full mode."""
    label = {"modbus": "Modbus", "opcua": "OPC UA"}[kind]
    unit = {"modbus": "readings/s", "opcua": "data changes/s"}[kind]
    rate = round(run.rate)
    target = at_least(TARGETS[kind], unit) if with_target else None
    missed = target is not None and not target.met_by(rate)
    settings: Params = {**run.settings, **producer, "duration_s": run.duration_s}
    per_core = 10_000 / run.cpu_per_10k if run.cpu_per_10k > 0 else float("nan")
    notes = [
        f"{run.readings:,} records in {run.topic}, {run.overall_rate:,.0f}/s over the whole "
        f"run; the connector used {run.cores:.2f} cores (at one full core: {per_core:,.0f}/s); "
        f"load average {os.getloadavg()[0]:.1f}"
    ]
    if run.offered is not None:
        notes.append(f"the simulator offered {run.offered:,.0f}/s")
    bad, errors = run.counters.get("bad", 0), run.counters.get("errors", 0)
    if bad or errors:
        notes.append(f"NOT CLEAN: {bad:,} BAD readings, {errors:,} errors (see the log)")
    if missed:
        why = []
        if run.offered is not None and run.offered < TARGETS[kind]:
            why.append(f"the simulator, on the same 2 cores, wrote only {run.offered:,.0f}/s "
                       "(asyncua's server costs more per change than its client)")  # fmt: skip
        if run.cores >= 0.8:
            why.append(f"CPU-bound: {LIMITS[kind]}")
        else:
            why.append("the connector did not get a full core: the machine's 2 cores are "
                       f"shared (Kafka, the simulator, other work); its CPU: {LIMITS[kind]}")
        notes.append("missed: " + "; ".join(why))
    seconds = run.window_s
    records = round(run.rate * run.window_s)
    return [
        Result("connector", f"{label}, one process", rate, unit, records=records,
               seconds=seconds, target=target, settings=settings,
               note="; ".join(notes)),
        Result("connector", f"{label}, CPU per 10k readings", round(run.cpu_per_10k, 3),
               "CPU s", records=records, seconds=seconds,
               note="the connector process, all threads (librdkafka's included)"),
        Result("connector", f"{label}, ratio to the producer ceiling", round(run.rate / ceiling, 3),
               "x", records=records, seconds=seconds,
               note=f"ceiling {ceiling:,.0f} records/s (kafka-producer-perf-test)"),
    ]  # fmt: skip


def stage_connector(ctx: Context) -> list[Result]:
    """2. one Modbus and one OPC UA connector process into Kafka (--quick: a modest load,
    without a target)."""
    from bench import load_modbus as bench_modbus
    from bench import load_opcua as bench_opcua

    ceiling = producer_ceiling(ctx)
    duration = CONNECTOR_DURATION_S[ctx.quick]
    producer = connector_producer_settings(ctx.settings)
    results: list[Result] = []
    runs = ctx.shared.connector_runs
    for kind in ("modbus", "opcua"):
        if kind == "modbus" and ctx.quick:
            run = bench_modbus.run_bench(ctx.settings, duration_s=duration, registers=125,
                                         poll_interval_s=0.05)
        elif kind == "modbus":
            run = bench_modbus.run_bench(ctx.settings, duration_s=duration)
        elif ctx.quick:
            run = bench_opcua.run_bench(ctx.settings, duration_s=duration, variables=500,
                                        interval_s=0.1, publishing_interval_s=0.1)
        else:
            run = bench_opcua.run_bench(ctx.settings, duration_s=duration)
        runs[kind] = run
        for line in run.log_tail:
            print(f"    {kind} connector: {line}", flush=True)
        if run.exit_code != 0:
            raise OtbridgeError(f"{kind} connector exited {run.exit_code}: "
                                + " | ".join(run.log_tail[-3:]))
        rows = connector_results(kind, run, ceiling, producer, with_target=not ctx.quick)
        print(f"  {rows[0].figure}: {run.rate:,.0f} {rows[0].unit}, "
              f"{run.cpu_per_10k:.2f} CPU s per 10k", flush=True)  # fmt: skip
        results.extend(rows)
        if kind == "modbus" and not ctx.quick:
            results.append(store_cost(ctx, run, duration))
    results.extend(replay_results(ctx))
    return results


def replay_results(ctx: Context) -> list[Result]:
    """A backlog stored while Kafka was away, drained (bench.replay): at the default
    replay_per_s and unlimited."""
    from bench import replay
    from connectors.core.config import BufferPolicy

    readings = 200_000 if ctx.quick else 1_000_000
    default = BufferPolicy().replay_per_s
    out = []
    for limit in (default, 10**9):
        r = replay.run_replay(ctx.settings, readings, limit)
        shown = f"replay_per_s {limit:,}" if limit == default else "replay_per_s unlimited"
        print(f"  backlog drained ({shown}): {r.rate:,.0f} readings/s", flush=True)
        out.append(Result(
            "connector", f"backlog replay after an outage, {shown}", round(r.rate),
            "readings/s", records=readings, seconds=r.seconds,
            settings={"replay_per_s": limit if limit == default else "unlimited"},
            note="from the forwarder's connect (reconcile included) to the last "
                 "acknowledgement; the limit is a token bucket of one second's worth"))
    return out


def store_cost(ctx: Context, run: ConnectorRun, duration_s: float) -> Result:
    """Today's Modbus rate over that of the connector before store and forward (the same
    load, right after it; bench.baseline)."""
    from bench import baseline

    figure = "Modbus, through the store on disk / before store and forward"
    target = at_least(baseline.COST_TARGET, "x")
    try:
        before = baseline.modbus_at(baseline.BEFORE_STORE, ctx.settings, duration_s)
    except (OtbridgeError, OSError, subprocess.SubprocessError) as exc:
        return Result("connector", figure, 0.0, "x", target=target, met=False,
                      note=f"not run: {exc}")
    print(f"  Modbus at {baseline.BEFORE_STORE} (no store): {before:,.0f} readings/s",
          flush=True)
    return Result("connector", figure, round(run.rate / before, 3), "x", target=target,
                  seconds=run.window_s,
                  note=f"{run.rate:,.0f} readings/s today, {before:,.0f} at "
                       f"{baseline.BEFORE_STORE} (the connector sending straight to the "
                       f"producer), same load and machine; target: a cost of at most 20 %")
