"""7. memory: the resident memory of the whole demo (stack + simulators + connectors).

The stack's processes come from its pid files (otbridge.stack); the demo's simulators and
connectors are started the way `otbridge demo` starts them (otbridge.demo.run.Demo: the same
CLI commands, scenario and connector examples), except that they listen on free ports and write
to a topic of their own, so a demo or test someone else runs at the same time is not disturbed.
Full mode also submits the demo's three jobs (on topics of their own), whose Python runs inside
the TaskManager. After a while of running, VmRSS of every process and all its descendants is
summed from /proc; then exactly what was started is stopped (by process group / job id).

VmRSS counts pages shared between processes (e.g. the Python interpreters' libraries) once per
process, so the sum is an upper bound; the note also gives the proportional (PSS) sum.
"""

from __future__ import annotations

import socket
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import yaml

from bench.common import Context, Result, at_most
from bench.latency import delete_topics
from otbridge import PROJECT_ROOT, jobs
from otbridge.demo.run import EXAMPLES, JOBS, SCENARIO, Demo
from otbridge.errors import OtbridgeError
from otbridge.kafka import TopicSpec, default_topics, ensure_topics
from otbridge.settings import Settings
from otbridge.stack.components import components
from otbridge.stack.process import port_open

TARGET_GIB = 6.0
FULL_RUN_S, QUICK_RUN_S = 20, 10
GIB = 1024**3
# the demo's own processes, as otbridge.demo.run names them
DEMO_PARTS = ("sim-modbus", "sim-opcua", "connect-modbus", "connect-opcua")
# the jobs' topic roles (their --topic ROLE=TOPIC), named as in settings.topics
ROLES = ("readings", "assets", "oee", "alerts", "readings_1m", "readings_1h", "dlq")


def demo_topic_specs(settings: Settings) -> list[TopicSpec]:
    """otbridge.kafka.default_topics in ROLES order."""
    by_name = {spec.name: spec for spec in default_topics(settings)}
    return [by_name[getattr(settings.topics, role)] for role in ROLES]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            ppid = int(text[text.rindex(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(stat.parent.name))
    return kids


def process_tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _kib(path: str, field: str) -> int:
    """A `Field:  123 kB` line of a /proc file, in KiB (0 if the process is gone)."""
    with suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_bytes(pid: int) -> int:
    return _kib(f"/proc/{pid}/status", "VmRSS") * 1024


def pss_bytes(pid: int) -> int:
    return _kib(f"/proc/{pid}/smaps_rollup", "Pss") * 1024


def measure(parts: dict[str, int]) -> dict[str, dict[str, Any]]:
    """part -> RSS and PSS (bytes) of its process and every descendant, and how many."""
    kids = _children()
    out = {}
    for name, pid in parts.items():
        tree = process_tree(pid, kids)
        out[name] = {"rss": sum(rss_bytes(p) for p in tree),
                     "pss": sum(pss_bytes(p) for p in tree), "processes": len(tree)}
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def connector_configs(directory: Path, topic: str, modbus_port: int, opcua_port: int
                      ) -> tuple[Path, Path]:
    """The demo's connector examples, pointed at our simulators' ports and our topic."""
    modbus = yaml.safe_load((EXAMPLES / "modbus.yaml").read_text())
    modbus["topic"] = topic
    for device in modbus["devices"]:
        device["port"] = modbus_port
    opcua = yaml.safe_load((EXAMPLES / "opcua.yaml").read_text())
    opcua["topic"] = topic
    for device in opcua["devices"]:
        device["endpoint"] = f"opc.tcp://127.0.0.1:{opcua_port}/"
    paths = directory / "modbus.yaml", directory / "opcua.yaml"
    for path, conf in zip(paths, (modbus, opcua), strict=True):
        path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return paths


def flink_memory() -> str:
    """The Flink processes' configured sizes, from flink-conf/config.yaml."""
    with suppress(OSError, KeyError, TypeError, yaml.YAMLError):
        conf = yaml.safe_load((PROJECT_ROOT / "flink-conf" / "config.yaml").read_text())
        jm = conf["jobmanager"]["memory"]["process"]["size"]
        tm = conf["taskmanager"]["memory"]["process"]["size"]
        return f"JobManager process {jm}, TaskManager process {tm} (flink-conf/config.yaml)"
    return "Flink process sizes: see flink-conf/config.yaml"


def stack_parts(settings: Settings) -> dict[str, int]:
    parts = {}
    for component in components(settings):
        for proc in component.processes:
            pid = proc.pid()
            if pid is None:
                raise OtbridgeError(f"memory: {proc.name} is not running; start the stack "
                                    "(`otbridge stack up`)")
            parts[proc.name] = pid
    return parts


def topic_count(settings: Settings, topic: str) -> int:
    """Records in topic (sum of the partitions' end offsets)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka.librdkafka(), "group.id": f"bench-memory-{topic}"})
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in md.partitions)
    finally:
        consumer.close()


def submit_jobs(settings: Settings, demo: Demo, suffix: str, topics: dict[str, str]) -> None:
    """The demo's jobs, side by side as the demo submits them, on our topics."""
    from jobs.oee.masterdata import load_assets_file, publish_assets

    publish_assets(settings, load_assets_file(EXAMPLES / "assets.yaml"), topic=topics["assets"])
    names = [n for n in JOBS if n in jobs.available()]
    args = [f"--name-suffix={suffix}", *(f"--topic={r}={t}" for r, t in topics.items())]
    with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
        futures = {name: pool.submit(jobs.submit, settings, name, job_args=args,
                                     flink_conf={"execution.checkpointing.interval": "5s"})
                   for name in names}
        for name, future in futures.items():
            with suppress(Exception):  # a failed one is reported below; the rest still count
                demo.job_ids[name] = future.result()
    for name in names:
        if name not in demo.job_ids:
            raise OtbridgeError(f"memory: submitting the demo's {name} job failed")
    for job_id in demo.job_ids.values():
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=180)


def running_jobs(settings: Settings) -> int:
    with suppress(Exception):
        return sum(1 for j in jobs.list_jobs(settings) if j["state"] == "RUNNING")
    return -1


def stage_memory(ctx: Context) -> list[Result]:
    settings = ctx.settings
    run_s = QUICK_RUN_S if ctx.quick else FULL_RUN_S
    with_jobs = not ctx.quick
    parts = stack_parts(settings)
    suffix = f"-bench-mem-{uuid.uuid4().hex[:6]}"
    # the demo's topics (same partitions and configuration), under names of our own
    specs = dict(zip(ROLES, demo_topic_specs(settings), strict=True))
    topics = {role: f"bench.memory.{role}{suffix}" for role in ROLES}
    log_dir = settings.stack.log_dir / "bench"
    demo = Demo(settings, log_dir, lambda msg: print(f"  memory: {msg}", flush=True))
    started = time.monotonic()
    try:
        ensure_topics(settings, [TopicSpec(topics[role], spec.partitions, spec.config)
                                 for role, spec in specs.items()])
        modbus_port, opcua_port = free_port(), free_port()
        with tempfile.TemporaryDirectory(prefix="otbridge-bench-") as tmp:
            modbus_conf, opcua_conf = connector_configs(Path(tmp), topics["readings"],
                                                        modbus_port, opcua_port)
            demo.spawn("sim-modbus", "sim", "modbus", "--port", str(modbus_port),
                       "--scenario", str(SCENARIO))
            demo.spawn("sim-opcua", "sim", "opcua", "--port", str(opcua_port),
                       "--scenario", str(SCENARIO))
            deadline = time.monotonic() + 60
            while not (port_open("127.0.0.1", modbus_port) and port_open("127.0.0.1", opcua_port)):
                demo.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError("memory: the simulators did not open their ports")
                time.sleep(0.3)
            demo.spawn("connect-modbus", "connect", "modbus", "--config", str(modbus_conf))
            demo.spawn("connect-opcua", "connect", "opcua", "--config", str(opcua_conf))
            plant_started = time.monotonic()
            if with_jobs:
                submit_jobs(settings, demo, suffix, topics)
            end = time.monotonic() + run_s
            while time.monotonic() < end:
                demo.check_alive()
                time.sleep(1.0)
            pids = {**parts, **{name: proc.pid for name, proc in demo.procs.items()}}
            used = measure(pids)
            demo.check_alive()
            readings = topic_count(settings, topics["readings"])
            n_jobs = running_jobs(settings)
            plant_s = time.monotonic() - plant_started
    finally:
        demo.stop()
        delete_topics(settings, list(topics.values()))
    seconds = time.monotonic() - started
    total = sum(p["rss"] for p in used.values())
    pss = sum(p["pss"] for p in used.values())
    ctx.shared["memory"] = {"parts": used, "readings": readings, "jobs_running": n_jobs,
                            "demo_pids": [proc.pid for proc in demo.procs.values()]}
    target, met = at_most(total / GIB, TARGET_GIB, "GiB")
    breakdown = ", ".join(f"{name} {p['rss'] / GIB:.2f}" for name, p in used.items())
    s = settings.stack
    ours = "the demo's three, submitted here" if with_jobs else "none submitted here (quick)"
    note = (f"RSS GiB per part (process + descendants): {breakdown}; PSS sum "
            f"{pss / GIB:.2f} GiB; measured {run_s} s after everything ran; {readings:,} "
            f"readings written by the connectors in {plant_s:.0f} s; Flink jobs running at "
            f"the time: {n_jobs} ({ours}; the TaskManager also holds anyone else's); "
            f"configured ceilings: Kafka heap {s.kafka_heap}, registry heap {s.registry_heap}, "
            f"{flink_memory()}")
    if not met:
        biggest = max(used.items(), key=lambda kv: kv[1]["rss"])
        note += f". Missed: the biggest part is {biggest[0]}"
    print(f"  total RSS {total / GIB:.2f} GiB ({breakdown})", flush=True)
    return [Result("memory", "whole demo RSS (stack + simulators + connectors"
                   + (" + jobs)" if with_jobs else ")"), round(total / GIB, 2), "GiB",
                   records=readings, seconds=seconds, target=target, met=met,
                   settings={"jobs": ",".join(JOBS) if with_jobs else "none (quick)",
                             "run_s": run_s, "taskmanager_slots": s.flink_taskmanager_slots},
                   note=note)]
