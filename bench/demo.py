"""demo: `otbridge demo` itself, from the command to the first OEE figure on screen, and the
memory of every process it runs (the `memory` stage's figure, bench/memory.py).

A warm machine: the jars are fetched and built (the bench's own stack is up), nothing of the
demo runs. The demo runs headless (`--no-ui`, which prints the first OEE figure as it comes)
on a stack of its own, on free ports and in its own state folder (sharing the fetched jars),
and starts that stack itself, as `make demo` does on a machine where nothing runs; with
`--duration` it stops everything it started, the stack included. Nobody else's stack, jobs or
topics are touched.

While it runs, every process it started is sampled from /proc every half second: the stack's
(Kafka, registry, JobManager, TaskManager: their pid files), the simulators and connectors
(their pids as the demo prints them), the Flink client while it plans the jobs, and the demo's
own process (the watcher that follows the result topics). Each part's VmRSS is its process and
every descendant; a part's figure is its largest, the total the largest sum of one sample (the
Flink client's peak is part of it: the client runs while the stack starts).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Context, Params, Result, Spread, at_most
from otbridge import stack
from otbridge.net import free_ports
from otbridge.settings import Settings, StackSettings

TARGET_FIRST_OEE_S = 45.0
GIB = 1024**3
FULL_DURATION_S, QUICK_DURATION_S = 90, 75  # the demo's --duration after the jobs are submitted:
# long enough for a one-minute aggregate on a fresh stack (else the demo exits 1: "no records on")
SAMPLE_S = 0.5
PORTS = ("kafka_port", "kafka_controller_port", "registry_port", "flink_rest_port",
         "flink_rpc_port")
STACK_PARTS = ("kafka", "registry", "flink-jobmanager", "flink-taskmanager")
# the demo's own processes, named as `otbridge demo` names them
DEMO_PARTS = ("sim-modbus", "sim-opcua", "connect-modbus", "connect-opcua")
CLIENT, WATCHER = "flink-client", "demo-watcher"
FIRST_OEE = re.compile(r"first OEE figure ([\d.]+) s after the demo started")
CLIENT_RAN = re.compile(r"one Flink client planned and submitted (\d+) jobs: ([\d.]+) s, "
                        r"([\d.]+) CPU-s")
STARTED = re.compile(r"started ([a-z-]+) \(pid (\d+),")


@dataclass(frozen=True)
class Usage:
    """One part's memory: its process and every descendant."""

    rss: int  # bytes
    processes: int


@dataclass
class DemoRun:
    """One `otbridge demo` run, as measured from outside."""

    returncode: int = -1
    first_oee_s: float | None = None  # from the command to the first OEE line on screen
    client_s: float = 0.0  # the Flink client's wall time ...
    client_cpu_s: float = 0.0  # ... and CPU time (its JVM and Python included)
    jobs: int = 0
    peak_total: int = 0  # bytes: the largest RSS sum of one sample ...
    at_peak: dict[str, Usage] = field(default_factory=dict)  # ... per part in that sample
    largest: dict[str, Usage] = field(default_factory=dict)  # each part's own largest
    steady: dict[str, Usage] = field(default_factory=dict)  # the last sample before teardown
    demo_pids: list[int] = field(default_factory=list)  # the simulators' and connectors'
    pids: dict[int, str] = field(default_factory=dict)  # every named process: pid -> part
    log: Path | None = None
    load: float = 0.0  # 1-minute load average when it started
    seconds: float = 0.0


def own_stack(settings: Settings) -> Settings:
    """The demo's stack: free ports, its own state folder, the bench stack's fetched jars."""
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    s = settings.stack
    return Settings(stack=StackSettings(state_dir=s.state_dir / "bench-demo",
                                        lib_dir=s.lib_dir, **ports))


def stack_env(s: StackSettings) -> dict[str, str]:
    env = {f"OTBRIDGE_STACK__{key.upper()}": str(getattr(s, key)) for key in PORTS}
    env["OTBRIDGE_STACK__STATE_DIR"] = str(s.state_dir)
    env["OTBRIDGE_STACK__LIB_DIR"] = str(s.lib_dir)
    return env


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


def rss_bytes(pid: int) -> int:
    with suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def sample(demo_pid: int, named: dict[int, str]) -> dict[str, Usage]:
    """part -> RSS of every process the demo runs: the named ones (stack parts, simulators,
    connectors) with their descendants, any other child of the demo's (the Flink client) with
    its, and the demo's process itself. Each process is counted once."""
    kids = _children()
    seen: set[int] = set()
    parts: dict[str, Usage] = {}

    def add(name: str, pids: list[int]) -> None:
        fresh = [p for p in pids if p not in seen]
        seen.update(fresh)
        rss = sum(rss_bytes(p) for p in fresh)
        if rss:
            old = parts.get(name, Usage(0, 0))
            parts[name] = Usage(old.rss + rss, old.processes + len(fresh))

    for pid, name in named.items():
        add(name, process_tree(pid, kids))
    for child in kids.get(demo_pid, []):
        if child not in seen:
            add(CLIENT, process_tree(child, kids))
    add(WATCHER, [demo_pid])
    return parts


def stack_pids(s: StackSettings) -> dict[int, str]:
    out = {}
    for path in s.run_dir.glob("*.pid"):
        with suppress(OSError, ValueError, IndexError):
            out[int(path.read_text().split()[0])] = path.stem
    return out


def run_demo(settings: Settings, *, duration_s: float, log: Path) -> DemoRun:
    """`otbridge demo --no-ui --duration duration_s` on a stack of its own, measured."""
    own = own_stack(settings)
    stack.down(own, out=io.StringIO())  # a leftover of a crashed run
    modbus_port, opcua_port = free_ports(2)
    run = DemoRun(log=log, load=os.getloadavg()[0])
    log.parent.mkdir(parents=True, exist_ok=True)
    named: dict[int, str] = {}
    tearing_down = threading.Event()
    cmd = [sys.executable, "-m", "otbridge.cli", "demo", "--no-ui", "--duration",
           str(duration_s), "--modbus-port", str(modbus_port), "--opcua-port", str(opcua_port)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **stack_env(own.stack)})

    def sampler() -> None:
        while proc.poll() is None:
            named.update(stack_pids(own.stack))
            parts = sample(proc.pid, named)
            total = sum(u.rss for u in parts.values())
            if total > run.peak_total:
                run.peak_total, run.at_peak = total, parts
            for name, usage in parts.items():
                if usage.rss > run.largest.get(name, Usage(0, 0)).rss:
                    run.largest[name] = usage
            if not tearing_down.is_set():
                run.steady = parts
            time.sleep(SAMPLE_S)

    thread = threading.Thread(target=sampler, name="bench-demo-sampler", daemon=True)
    thread.start()
    try:
        assert proc.stderr is not None
        with log.open("w") as out:
            for line in proc.stderr:
                out.write(f"[{time.monotonic() - started:6.1f}] {line}")
                if (m := FIRST_OEE.search(line)) and run.first_oee_s is None:
                    run.first_oee_s = time.monotonic() - started
                elif m := CLIENT_RAN.search(line):
                    run.jobs, run.client_s, run.client_cpu_s = (
                        int(m[1]), float(m[2]), float(m[3]))
                elif m := STARTED.search(line):
                    named[int(m[2])] = m[1]
                    run.demo_pids.append(int(m[2]))
                elif "demo: stopped" in line:
                    tearing_down.set()
        run.returncode = proc.wait()
    finally:
        if proc.poll() is None:  # the bench itself was interrupted: stop the demo as Ctrl-C
            os.killpg(proc.pid, 2)
            proc.wait(60)
        thread.join(5)
        stack.down(own, out=io.StringIO())  # nothing is left behind
    run.seconds = time.monotonic() - started
    run.pids = dict(named)
    return run


def demo_runs(ctx: Context) -> list[DemoRun]:
    """The runs this bench made (one per repeat), made on first use by `demo` or `memory`."""
    if not ctx.shared.demo_runs:
        duration = QUICK_DURATION_S if ctx.quick else FULL_DURATION_S
        log_dir = ctx.settings.stack.log_dir / "bench"
        for i in range(ctx.repeat):
            run = run_demo(ctx.settings, duration_s=duration, log=log_dir / f"demo-{i + 1}.log")
            oee = "none" if run.first_oee_s is None else f"{run.first_oee_s:.1f} s"
            print(f"  demo run {i + 1}/{ctx.repeat}: first OEE {oee}, Flink client "
                  f"{run.client_s:.1f} s / {run.client_cpu_s:.1f} CPU-s, peak RSS "
                  f"{run.peak_total / GIB:.2f} GiB (load {run.load:.1f}; log {run.log})",
                  flush=True)
            if run.returncode != 0:
                raise RuntimeError(f"otbridge demo exited with {run.returncode}; see {run.log}")
            ctx.shared.demo_runs.append(run)
    return ctx.shared.demo_runs


def gib(parts: dict[str, Usage]) -> str:
    return ", ".join(f"{name} {u.rss / GIB:.2f}" for name, u in parts.items())


def stage_demo(ctx: Context) -> list[Result]:
    runs = demo_runs(ctx)
    firsts = [r.first_oee_s for r in runs if r.first_oee_s is not None]
    if len(firsts) < len(runs):
        raise RuntimeError("a demo run showed no OEE figure; see "
                           + ", ".join(str(r.log) for r in runs if r.first_oee_s is None))
    first, cpu = Spread.of(firsts), Spread.of([r.client_cpu_s for r in runs])
    wall = Spread.of([r.client_s for r in runs])
    loads = ", ".join(f"{r.load:.1f}" for r in runs)
    settings: Params = {"duration_s": QUICK_DURATION_S if ctx.quick else FULL_DURATION_S,
                "jobs": runs[0].jobs}
    seconds = sum(r.seconds for r in runs)
    return [
        Result("demo", "otbridge demo: command -> first OEE on screen", round(first.median, 1),
               "s", seconds=seconds, target=at_most(TARGET_FIRST_OEE_S, "s"),
               spread=first.range, runs=first.runs, settings=settings,
               note=f"a stack of its own started by the demo (warm machine: jars fetched); "
                    f"1-minute load average at each start: {loads}"),
        Result("demo", f"Flink client CPU, {runs[0].jobs} jobs from one client",
               round(cpu.median, 1), "CPU-s", spread=cpu.range, runs=cpu.runs,
               settings=settings,
               note=f"the client's wall time {wall.median:.1f} s ({wall.low:.1f}-"
                    f"{wall.high:.1f}); its JVM and the Python it runs included"),
    ]
