"""4. The alternatives: the downsample job done the way a plant would otherwise do it, on the
same backlog and checked for the same output, each as a ratio to otbridge's job in this run.

    plain  bench/alt_plain.py: confluent-kafka + fastavro + dict windows + producer
    quix   bench/alt_quix.py: Quix Streams (tumbling_window + reduce + final()), run
           from its own virtualenv under the state folder (quixstreams pins an older
           confluent-kafka than otbridge), created here on first use

Each runs as a subprocess on the shared backlog (backlog.backlog_topic: 10,000 keys on 3
partitions, out of order within the watermark bound, BAD and poison records, end markers) with
fresh output topics, --repeat times; its time is the one it reports itself: from the first
record it got to its output flushed and its offsets committed (start-up, registry look-ups and
the consumer group join are left out; the subprocess's wall time is in the settings).
otbridge's figure is the jobs stage's downsample p=1 median from the same run (first dead
letter -> last output, by the broker's append times; see bench/backlog.py); if the jobs stage
did not run, this stage times the job itself. The ratio is of the medians.

Same output: every 1-minute window (and 1-hour window) the alternative wrote is compared with
otbridge's, by key (asset|tag) and window start: count and count_other exactly, min, max, first,
last and unit exactly, avg to 1e-9. otbridge writes with Kafka transactions committed on
checkpoints; it is cancelled two checkpoints after its input offsets reached the end, so every
window the end markers' watermark fires is committed; windows ending after the last window end
otbridge committed (the 1-hour ones, mostly) are counted as "not compared", not as a
difference. The dead letters must be as many as otbridge's. First and last are by arrival
order within a key, as Flink's FIRST_VALUE / LAST_VALUE are. A window otbridge has and the
alternative lacks, one the alternative has at or before otbridge's last window end and
otbridge lacks, a window written twice, or any field that differs, is a difference.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench import common, procs
from bench.backlog import Mix, backlog_topic, job_results, run_all
from bench.common import Context, JobRun, Result, Spread, Target, records_in, wire_decoder
from otbridge.codec.avro import millis
from otbridge.kafka import TopicSpec, admin, consumer_config, ensure_topics, producer_config
from otbridge.registry import schema_text
from otbridge.settings import Settings

#: the Quix Streams virtualenv's pins (quixstreams 3.28.1 requires confluent-kafka < 2.13)
QUIX_REQUIREMENTS = ("quixstreams==3.28.1", "confluent-kafka==2.12.2", "fastavro==1.13.1")
RATIO_TARGET = Target(">=", 3.0, "x")  # otbridge's rate over the alternative's
KEYS = Mix().keys  # the shared backlog's asset/tag pairs
ALT_SCRIPTS = {"plain": "plain Python script (confluent-kafka + fastavro + dicts)",
               "quix": "Quix Streams 3.28.1"}
FLOAT_FIELDS = ("min", "max", "first", "last")

WindowKey = tuple[str, int]  # (asset|tag, window_start ms)


# ---------------------------------------------------------------------------- the Quix venv

def quix_python(settings: Settings) -> Path:
    """The Quix Streams virtualenv's python, created and filled with QUIX_REQUIREMENTS (pip,
    from the configured index) the first time; a marker file makes later calls free."""
    venv = settings.stack.state_dir / "bench" / "quix-venv"
    python = venv / "bin" / "python"
    marker = venv / ".otbridge-requirements"
    wanted = "\n".join(QUIX_REQUIREMENTS) + "\n"
    if python.exists() and marker.is_file() and marker.read_text() == wanted:
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        subprocess.run(procs.python_module("venv", str(venv)), check=True, timeout=300)
    print(f"  installing {', '.join(QUIX_REQUIREMENTS)} into {venv.name}/", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *QUIX_REQUIREMENTS], check=True, timeout=1200)
    marker.write_text(wanted)
    return python


# ------------------------------------------------------------------------ running a script

@dataclass
class AltRun:
    name: str
    report: dict[str, Any]  # the JSON line the script printed
    wall_seconds: float
    outputs: dict[str, str]  # role -> topic
    group: str


def common_args(settings: Settings, topic: str, outputs: dict[str, str], group: str
                ) -> list[str]:
    pconf = producer_config(settings)
    return ["--input", topic, "--out-1m", outputs["readings_1m"],
            "--out-1h", outputs["readings_1h"], "--dlq", outputs["dlq"], "--group", group,
            "--linger-ms", str(pconf["linger.ms"]),
            "--batch-num-messages", str(pconf["batch.num.messages"])]


def plain_command(settings: Settings, args: list[str], workdir: Path) -> list[str]:
    return procs.python_module("bench.alt_plain", *args)


#: the schemas alt_quix.py writes with (it cannot import otbridge: they go in its --schema-dir)
QUIX_SCHEMAS = ("ReadingAggregate", "DeadLetter")


def quix_command(settings: Settings, args: list[str], workdir: Path) -> list[str]:
    pconf = producer_config(settings)
    schema_dir = workdir / "schemas"
    schema_dir.mkdir(parents=True, exist_ok=True)
    for name in QUIX_SCHEMAS:
        (schema_dir / f"{name}.avsc").write_text(schema_text(name))
    return [str(quix_python(settings)), "-P", str(Path(__file__).with_name("alt_quix.py")),
            *args, "--bootstrap-servers", settings.kafka.bootstrap_servers,
            "--registry-url", settings.registry.url, "--schema-dir", str(schema_dir),
            "--state-dir", str(workdir), "--compression", str(pconf["compression.type"])]


COMMANDS: dict[str, Callable[[Settings, list[str], Path], list[str]]] = {
    "plain": plain_command, "quix": quix_command}


def alt_env(settings: Settings) -> dict[str, str]:
    """Connection settings for alt_quix.py, which cannot read otbridge's settings itself;
    in the environment rather than on the command line, so secrets stay out of `ps`."""
    extra = {k: v for k, v in settings.kafka.librdkafka().items() if k != "bootstrap.servers"}
    env = {**os.environ, "OTBRIDGE_ALT_KAFKA_CONFIG": json.dumps(extra)}
    reg = settings.registry
    if reg.basic_auth_username and reg.basic_auth_password:
        env["OTBRIDGE_ALT_REGISTRY_USER_INFO"] = (
            f"{reg.basic_auth_username}:{reg.basic_auth_password.get_secret_value()}")
    return env


def run_alternative(settings: Settings, name: str, topic: str, *, timeout_s: float,
                    outputs: dict[str, str] | None = None) -> AltRun:
    """Run one alternative on `topic` to fresh (or the given) output topics."""
    suffix = uuid.uuid4().hex[:6]
    outputs = outputs or {role: f"bench.alt-{name}.{role}-{suffix}"
                          for role in ("readings_1m", "readings_1h", "dlq")}
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in outputs.values()])
    group = f"otbridge-alt-{name}-{suffix}"
    workdir = settings.stack.state_dir / "bench" / f"{name}-{suffix}"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        cmd = COMMANDS[name](settings, common_args(settings, topic, outputs, group), workdir)
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              env=alt_env(settings))
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{name} exited {proc.returncode}: {' | '.join(tail)}")
    return AltRun(name, json.loads(lines[-1]), wall, outputs, group)


def delete_topics(settings: Settings, run: AltRun) -> None:
    """The alternative's output topics and Quix's changelog topics (named after its group)."""
    changelogs = {t for t in admin(settings).list_topics(timeout=10).topics if run.group in t}
    common.delete_topics(settings, set(run.outputs.values()) | changelogs)


# ------------------------------------------------------------------------- same output

def read_windows(settings: Settings, topic: str, *, idle_s: float = 5.0, timeout_s: float = 300
                 ) -> dict[WindowKey, list[dict[str, Any]]]:
    """Every committed ReadingAggregate in topic (read_committed, from the beginning), by
    (key, window_start ms), its window_start and window_end in ms; a list, so duplicates
    show. Decoded by the product's wire decoder (otbridge.codec.wire)."""
    decoder = wire_decoder(settings, "ReadingAggregate")
    consumer = Consumer(consumer_config(settings, f"otbridge-bench-verify-{uuid.uuid4().hex}"))
    out: dict[WindowKey, list[dict[str, Any]]] = {}
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending = {p for p in parts if ends[p] > 0}
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        # an open (never committed) transaction of a cancelled job stops a read_committed
        # consumer short of the high watermark: then the reading ends after idle_s
        while pending and time.monotonic() < deadline and time.monotonic() - last < idle_s:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                last = time.monotonic()
                mkey = msg.key()
                decoded = decoder.decode(msg.value())
                rec = decoded.record
                if rec is None:
                    raise RuntimeError(f"{topic}: offset {msg.offset()}: {decoded.reason}: "
                                       f"{decoded.detail}")
                rec["window_start"] = millis(rec["window_start"])
                rec["window_end"] = millis(rec["window_end"])
                key = mkey.decode() if mkey is not None else ""
                out.setdefault((key, rec["window_start"]), []).append(rec)
            for p in list(pending):
                if consumer.position([TopicPartition(topic, p)])[0].offset >= ends[p]:
                    pending.discard(p)
    finally:
        consumer.close()
    return out


def same_window(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if (a["count"], a["count_other"], a["unit"], a["window_end"]) != (
            b["count"], b["count_other"], b["unit"], b["window_end"]):
        return False
    if any(a[f] != b[f] for f in FLOAT_FIELDS):
        return False
    if a["avg"] is None or b["avg"] is None:
        return a["avg"] is None and b["avg"] is None
    return math.isclose(a["avg"], b["avg"], rel_tol=1e-9, abs_tol=1e-9)


@dataclass
class Comparison:
    matched: int = 0
    differ: int = 0
    missing: int = 0  # otbridge has it, the alternative does not
    extra: int = 0  # the alternative has it, otbridge does not, within otbridge's committed span
    duplicated: int = 0
    not_compared: int = 0  # after otbridge's last committed window end

    @property
    def same(self) -> bool:
        return self.matched > 0 and not (self.differ or self.missing or self.extra
                                         or self.duplicated)

    def text(self) -> str:
        return (f"{self.matched:,} equal, {self.differ} differ, {self.missing} missing, "
                f"{self.extra} extra, {self.duplicated} duplicated, {self.not_compared:,} "
                f"later than otbridge's last committed window not compared")


def compare(ref: dict[WindowKey, list[dict[str, Any]]],
            alt: dict[WindowKey, list[dict[str, Any]]]) -> Comparison:
    c = Comparison()
    last_end = max((recs[0]["window_end"] for recs in ref.values()), default=-1)
    c.duplicated = sum(1 for recs in (*ref.values(), *alt.values()) if len(recs) > 1)
    for key, recs in alt.items():
        theirs = ref.get(key)
        if theirs is None:
            if recs[0]["window_end"] > last_end:
                c.not_compared += 1
            else:
                c.extra += 1
        elif same_window(recs[0], theirs[0]):
            c.matched += 1
        else:
            c.differ += 1
    c.missing = sum(1 for key in ref if key not in alt)
    return c


# --------------------------------------------------------------------------------- stage

@dataclass
class Checked:
    """One run of an alternative, its output compared with otbridge's."""

    rate: float  # records/s, as the script timed itself
    records: int
    seconds: float
    same: bool
    note: str
    settings: dict[str, Any]


def check_run(settings: Settings, run: AltRun, n: int, ref_1m: dict[WindowKey, list[Any]],
              ref_1h: dict[WindowKey, list[Any]], ref_dlq: int) -> Checked:
    try:
        report = run.report
        alt_1m = read_windows(settings, run.outputs["readings_1m"])
        alt_1h = read_windows(settings, run.outputs["readings_1h"])
        c1m, c1h = compare(ref_1m, alt_1m), compare(ref_1h, alt_1h)
    finally:
        delete_topics(settings, run)
    records, seconds = int(report["records"]), float(report["seconds"])
    rate = records / seconds if seconds > 0 else 0.0
    complete = records == n and report.get("ended_by") == "end_offsets"
    dlq_same = report["dlq"] == ref_dlq
    same = c1m.same and complete and dlq_same and not (
        c1h.differ or c1h.missing or c1h.extra or c1h.duplicated)
    verdict = ("same output" if same else
               "output NOT verified (otbridge committed no 1m window)" if not ref_1m else
               "NOT the same output")
    note = (f"{verdict}: 1m windows {c1m.text()}; 1h windows {c1h.matched} equal, "
            f"{c1h.differ + c1h.missing + c1h.extra + c1h.duplicated} different, "
            f"{c1h.not_compared} not compared; dead letters {report['dlq']} "
            f"(otbridge {ref_dlq}) {report.get('dlq_reasons', {})}")
    if not complete:
        note += f"; consumed {records:,} of {n:,} ({report.get('ended_by')})"
    alt_settings = {k: v for k, v in report.get("settings", {}).items() if k != "group"}
    alt_settings |= {"timed": "first record -> output flushed + offsets committed",
                     "wall_s": round(run.wall_seconds, 1),
                     "out_1m": report["out_1m"], "out_1h": report["out_1h"]}
    return Checked(rate, records, seconds, same, note, alt_settings)


def stage_alternatives(ctx: Context) -> list[Result]:
    backlog = backlog_topic(ctx)
    topic, n = backlog.topic, backlog.readings
    settings = ctx.settings
    results: list[Result] = []
    if ctx.shared.downsample is None:
        done = run_all(ctx, n, [("downsample", 1, topic)])[("downsample", 1, topic)]
        ctx.shared.downsample = JobRun(done[0][0], done[0][1],
                                       Spread.of([t.rate for t, _ in done]))
        rows = job_results("alternatives", "downsample", n, [t for t, _ in done], 1, KEYS,
                           with_target=False)
        rows[0].figure = f"otbridge {rows[0].figure} (the ratios' reference)"
        for row in rows:
            print(f"  {row.figure}: {row.value:,} {row.unit}", flush=True)
        results += rows
        common.delete_topics(settings, {t for _, outs in done[1:] for t in outs.values()})
    # both sides timed once processing runs: otbridge from its first output to its last, the
    # alternatives from their first record to their output flushed
    reference = ctx.shared.downsample
    ref_rate = reference.rates.median if reference.rates else reference.timing.rate
    ref_outputs = reference.outputs
    ref_1m = read_windows(settings, ref_outputs["readings_1m"])
    ref_1h = read_windows(settings, ref_outputs["readings_1h"])
    ref_dlq = records_in(settings, ref_outputs["dlq"])
    timeout_s = 600 if ctx.quick else 7200

    for name, label in ALT_SCRIPTS.items():
        checked: list[Checked] = []
        try:
            for _ in range(ctx.repeat):
                run = run_alternative(settings, name, topic, timeout_s=timeout_s)
                checked.append(check_run(settings, run, n, ref_1m, ref_1h, ref_dlq))
        except Exception as exc:
            print(f"  {name}: failed: {exc}", flush=True)
            results.append(Result("alternatives", f"{label}: downsample", 0, "records/s",
                                  records=n, note=f"failed: {type(exc).__name__}: {exc}"[:300]))
            results.append(Result("alternatives", f"otbridge / {name}", 0, "x",
                                  target=RATIO_TARGET, met=False, note="not run"))
            continue
        same = all(c.same for c in checked)
        shown = next((c for c in checked if not c.same), checked[0])
        rates = Spread.of([c.rate for c in checked])
        results.append(Result("alternatives", f"{label}: downsample", round(rates.median),
                              "records/s", records=shown.records, seconds=shown.seconds,
                              settings=shown.settings, note=shown.note,
                              spread=(round(rates.low), round(rates.high)), runs=rates.runs))
        ratio = ref_rate / rates.median if rates.median > 0 else 0.0
        results.append(Result(
            "alternatives", f"otbridge / {name}", round(ratio, 2), "x", records=n,
            seconds=reference.timing.total_s, target=RATIO_TARGET, met=same,
            settings={"otbridge_records_per_s": round(ref_rate),
                      f"{name}_records_per_s": round(rates.median),
                      "otbridge_timed": "first dead letter -> last output, appended (p=1)"},
            note="medians of both" + ("" if same else
                                      "; output differs or unverified: not met whatever the "
                                      "ratio")))
        verdict = "same output" if same else "NOT the same output"
        print(f"  {label}: {rates.median:,.0f} records/s; otbridge/{name} = {ratio:.2f}x; "
              f"{verdict}", flush=True)
    return results
