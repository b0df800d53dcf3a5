"""7. memory: the resident memory of the whole demo (stack + simulators + connectors).

The stack's processes come from its pid files (otbridge.stack); the demo's simulators and
connectors are started with the CLI commands `otbridge demo` runs (`otbridge sim modbus|opcua
--scenario <the demo scenario>`, `otbridge connect modbus|opcua --config <the examples>`), except
that they listen on free ports and write to a topic of their own, so a demo or test someone
else runs at the same time is not disturbed. Full mode also submits the demo's three jobs (on
topics of their own), whose Python runs inside the TaskManager. After a while of running, VmRSS
of every process and all its descendants is summed from /proc; then exactly what was started is
stopped (by process group / job id).

VmRSS counts pages shared between processes (e.g. the Python interpreters' libraries) once per
process, so the sum is an upper bound; the note also gives the proportional (PSS) sum.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

import connectors
import simulators
from bench import procs
from bench.common import Context, Result, at_most, delete_topics, records_in
from otbridge import jobs
from otbridge.errors import OtbridgeError
from otbridge.kafka import TopicSpec, default_topics, ensure_topics
from otbridge.net import free_ports
from otbridge.settings import Settings
from otbridge.stack.components import components

TARGET_GIB = 6.0
FULL_RUN_S, QUICK_RUN_S = 20, 10
GIB = 1024**3
# the demo's own processes, named as `otbridge demo` names them (its logs: demo-<part>.log)
DEMO_PARTS = ("sim-modbus", "sim-opcua", "connect-modbus", "connect-opcua")
DEMO_JOBS = ("oee", "conditions", "downsample")  # the jobs `otbridge demo` submits
EXAMPLES = Path(connectors.__file__).parent / "examples"
SCENARIO = Path(simulators.__file__).parent / "scenarios" / "demo.yaml"
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


@dataclass(frozen=True)
class Usage:
    """One part's memory: its process and every descendant."""

    rss: int  # bytes
    pss: int  # bytes
    processes: int


@dataclass
class MemoryRun:
    """What the stage measured and started (the test checks that it is all gone)."""

    parts: dict[str, Usage] = field(default_factory=dict)
    readings: int = 0
    jobs_running: int = -1
    demo_pids: list[int] = field(default_factory=list)


def measure(parts: dict[str, int]) -> dict[str, Usage]:
    """part -> RSS and PSS of its process and every descendant, and how many processes."""
    kids = _children()
    out = {}
    for name, pid in parts.items():
        tree = process_tree(pid, kids)
        out[name] = Usage(rss=sum(rss_bytes(p) for p in tree),
                          pss=sum(pss_bytes(p) for p in tree), processes=len(tree))
    return out


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


def flink_memory(settings: Settings) -> str:
    """The Flink processes' configured sizes, as the running cluster reports them."""
    with suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
        conf = {e["key"]: e["value"] for e in httpx.get(
            f"{settings.flink.rest_url}/jobmanager/config", timeout=10).json()}
        return (f"JobManager process {conf['jobmanager.memory.process.size']}, TaskManager "
                f"process {conf['taskmanager.memory.process.size']} (Flink's configuration)")
    return "Flink process sizes: not reported by its REST API"


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


def submit_jobs(settings: Settings, suffix: str, topics: dict[str, str],
                job_ids: dict[str, str]) -> None:
    """The demo's jobs, side by side as the demo submits them, on our topics (their ids into
    `job_ids` as they come, so that whatever was submitted is cancelled)."""
    from jobs.oee.masterdata import load_assets_file, publish_assets

    publish_assets(settings, load_assets_file(EXAMPLES / "assets.yaml"), topic=topics["assets"])
    names = [n for n in DEMO_JOBS if n in jobs.available()]
    args = [f"--name-suffix={suffix}", *(f"--topic={r}={t}" for r, t in topics.items())]
    with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
        futures = {name: pool.submit(jobs.submit, settings, name, job_args=args,
                                     flink_conf={"execution.checkpointing.interval": "5s"})
                   for name in names}
        for name, future in futures.items():
            with suppress(Exception):  # a failed one is reported below; the rest still count
                job_ids[name] = future.result()
    for name in names:
        if name not in job_ids:
            raise OtbridgeError(f"memory: submitting the demo's {name} job failed")
    for job_id in job_ids.values():
        jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=180)


def running_jobs(settings: Settings) -> int:
    with suppress(Exception):
        return sum(1 for j in jobs.list_jobs(settings) if j["state"] == "RUNNING")
    return -1


def start_plant(log_dir: Path, topic: str, tmp: Path, say: procs.Say) -> dict[str, procs.Child]:
    """The demo's simulators (ready when they listen) and connectors, on free ports."""
    modbus_port, opcua_port = free_ports(2)
    modbus_conf, opcua_conf = connector_configs(tmp, topic, modbus_port, opcua_port)
    commands = {
        "sim-modbus": ("sim", "modbus", "--port", str(modbus_port), "--scenario", str(SCENARIO)),
        "sim-opcua": ("sim", "opcua", "--port", str(opcua_port), "--scenario", str(SCENARIO)),
        "connect-modbus": ("connect", "modbus", "--config", str(modbus_conf)),
        "connect-opcua": ("connect", "opcua", "--config", str(opcua_conf)),
    }
    started: dict[str, procs.Child] = {}
    for name in DEMO_PARTS:
        if name.startswith("connect-"):  # the simulators first, listening
            started["sim-modbus"].wait_listening(modbus_port)
            started["sim-opcua"].wait_listening(opcua_port)
        child = started[name] = procs.start(name, procs.otbridge_cli(*commands[name]),
                                            log=log_dir / f"demo-{name}.log")
        say(f"started {name} (pid {child.pid}, log {child.log})")
    return started


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
    run = MemoryRun()
    plant: dict[str, procs.Child] = {}
    job_ids: dict[str, str] = {}
    started = time.monotonic()

    def say(msg: str) -> None:
        print(f"  memory: {msg}", flush=True)

    def check_alive() -> None:
        for child in plant.values():
            child.check_alive()

    try:
        ensure_topics(settings, [TopicSpec(topics[role], spec.partitions, spec.config)
                                 for role, spec in specs.items()])
        with tempfile.TemporaryDirectory(prefix="otbridge-bench-") as tmp:
            plant.update(start_plant(log_dir, topics["readings"], Path(tmp), say))
            run.demo_pids = [child.pid for child in plant.values()]
            plant_started = time.monotonic()
            if with_jobs:
                submit_jobs(settings, suffix, topics, job_ids)
            end = time.monotonic() + run_s
            while time.monotonic() < end:
                check_alive()
                time.sleep(1.0)
            run.parts = measure({**parts, **{name: c.pid for name, c in plant.items()}})
            check_alive()
            run.readings = records_in(settings, topics["readings"])
            run.jobs_running = running_jobs(settings)
            plant_s = time.monotonic() - plant_started
    finally:
        for name in reversed(list(plant)):  # connectors before simulators
            plant[name].stop()
            say(f"stopped {name}")
        for name, job_id in job_ids.items():
            with suppress(Exception):
                jobs.cancel(settings, job_id)
                say(f"cancelled job {name} ({job_id})")
        delete_topics(settings, topics.values())
    ctx.shared.memory = run
    seconds = time.monotonic() - started
    used = run.parts
    total = sum(p.rss for p in used.values())
    pss = sum(p.pss for p in used.values())
    breakdown = ", ".join(f"{name} {p.rss / GIB:.2f}" for name, p in used.items())
    s = settings.stack
    ours = "the demo's three, submitted here" if with_jobs else "none submitted here (quick)"
    target = at_most(TARGET_GIB, "GiB")
    value = round(total / GIB, 2)
    note = (f"RSS GiB per part (process + descendants): {breakdown}; PSS sum "
            f"{pss / GIB:.2f} GiB; measured {run_s} s after everything ran; {run.readings:,} "
            f"readings written by the connectors in {plant_s:.0f} s; Flink jobs running at "
            f"the time: {run.jobs_running} ({ours}; the TaskManager also holds anyone else's); "
            f"configured ceilings: Kafka heap {s.kafka_heap}, registry heap {s.registry_heap}, "
            f"{flink_memory(settings)}")
    if not target.met_by(value):
        biggest = max(used.items(), key=lambda kv: kv[1].rss)
        note += f". Missed: the biggest part is {biggest[0]}"
    print(f"  total RSS {total / GIB:.2f} GiB ({breakdown})", flush=True)
    return [Result("memory", "whole demo RSS (stack + simulators + connectors"
                   + (" + jobs)" if with_jobs else ")"), value, "GiB",
                   records=run.readings, seconds=seconds, target=target,
                   settings={"jobs": ",".join(DEMO_JOBS) if with_jobs else "none (quick)",
                             "run_s": run_s, "taskmanager_slots": s.flink_taskmanager_slots},
                   note=note)]
