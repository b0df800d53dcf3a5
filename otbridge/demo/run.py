"""Start the stack, simulators, connectors, master data and jobs; watch; tear down cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import connectors
import simulators
from jobs.oee.masterdata import load_assets_file, publish_assets
from otbridge import jobs, stack
from otbridge.demo.watch import Watcher
from otbridge.errors import OtbridgeError
from otbridge.kafka import ensure_topics
from otbridge.net import wait_for_port
from otbridge.settings import Settings
from otbridge.stack.components import Flink, Kafka
from otbridge.stack.fetch import fetch
from otbridge.stack.process import port_in_use

# package data of the installed simulators and connectors
SCENARIO = Path(simulators.__file__).with_name("scenarios") / "demo.yaml"
EXAMPLES = Path(connectors.__file__).with_name("examples")
#: the ports the example connector files name (the simulators' defaults)
EXAMPLE_PORTS = {"modbus": 5020, "opcua": 4840}
JOBS = ("oee", "conditions", "downsample")
# OEE per 20 s window in the demo (the job's default is 1 minute), so the first figures are on
# screen well within 90 s of the stack being up: a window closes, plus 5 s of watermark delay
# and a 5 s checkpoint for the exactly-once sink
DEMO_JOB_ARGS = {"oee": ["--window-s=20"]}


@dataclass
class Demo:
    settings: Settings
    log_dir: Path
    say: Callable[[str], None]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    job_ids: dict[str, str] = field(default_factory=dict)
    stack_ready_at: float = 0.0  # time.monotonic() when the stack was up
    jobs_submitted_at: float = 0.0  # ... and when the last job was submitted

    def spawn(self, name: str, *args: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"demo-{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "otbridge.cli", *args], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.say(f"started {name} (pid {self.procs[name].pid}, log {log.name})")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise OtbridgeError(
                    f"demo: {name} exited with code {proc.returncode}; see "
                    f"{self.log_dir / f'demo-{name}.log'}"
                )

    def stop(self) -> None:
        for name in reversed(list(self.procs)):  # connectors before simulators
            proc = self.procs[name]
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            self.say(f"stopped {name}")
        for name, job_id in self.job_ids.items():
            with suppress(Exception):
                jobs.cancel(self.settings, job_id)
                self.say(f"cancelled job {name} ({job_id})")


def connector_configs(directory: Path, *, modbus_port: int, opcua_port: int,
                      topic: str | None = None) -> dict[str, Path]:
    """The example connector files (protocol -> path), pointed at simulators on these ports
    (and at `topic`): the examples themselves where nothing differs, else copies in
    `directory`."""
    ports = {"modbus": modbus_port, "opcua": opcua_port}
    if ports == EXAMPLE_PORTS and topic is None:
        return {name: EXAMPLES / f"{name}.yaml" for name in ports}
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, port in ports.items():
        config = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
        for device in config["devices"]:
            if name == "modbus":
                device["port"] = port
            else:
                device["endpoint"] = f"opc.tcp://127.0.0.1:{port}/"
        if topic is not None:
            config["topic"] = topic
        paths[name] = directory / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(config, sort_keys=False))
    return paths


def prestart_flink(settings: Settings, say: Callable[[str], None]) -> bool:
    """Start Flink's processes without waiting for them (it needs neither Kafka nor the
    registry, so it comes up beside them); `stack.up` then waits until it is healthy. True if
    they were started here; nothing is done if any of it runs or its ports are taken (then
    `stack.up` restarts it, or says which port is in use)."""
    flink = Flink(settings)
    if flink.pids() or any(port_in_use(settings.stack.host, port)
                           for port in flink.ports.values()):
        return False
    say("flink: starting (beside Kafka and the registry)")
    flink.start()
    return True


def wait_until(healthy: Callable[[], bool], up: Future[None]) -> None:
    """Until `healthy()`, or until `up` (stack.up, which has timeouts) ends: its error if it
    failed."""
    while not healthy():
        if up.done():
            up.result()
            return
        time.sleep(0.2)


@contextmanager
def running_demo(settings: Settings, say: Callable[[str], None], *, keep_stack: bool,
                 modbus_port: int = EXAMPLE_PORTS["modbus"],
                 opcua_port: int = EXAMPLE_PORTS["opcua"],
                 on_stack_up: Callable[[], None] | None = None) -> Iterator[Demo]:
    """The plant on the stack, the quickest way 2 cores allow: Flink starts beside Kafka and
    the registry; the demo's jobs are planned (one Flink client for all three) from the moment
    Kafka has its topics, while the registry, Flink, the simulators, the master data and the
    connectors start. `on_stack_up` is called once the stack is healthy (e.g. to start
    following the result topics before the first result)."""
    was_down = not any(part["pids"] for part in stack.status(settings).values())
    flink_was_up = Flink(settings).health().healthy
    fetch(settings.stack.lib_dir)
    demo = Demo(settings, settings.stack.log_dir, say)
    pool = ThreadPoolExecutor(max_workers=3)
    submission: Future[dict[str, str]] | None = None
    try:
        prestart_flink(settings, say)
        up = pool.submit(stack.up, settings)
        wait_until(lambda: Kafka(settings).health().healthy, up)
        created = ensure_topics(settings)  # the jobs' topics before they start
        if created:
            say(f"created topics: {', '.join(created)}")
        names = [n for n in JOBS if n in jobs.available()]
        if flink_was_up:
            for name in names:
                jobs.cancel(settings, name)  # a leftover from an earlier run
        # all three from one client JVM (planning is the slowest step of the demo's start),
        # while the rest starts. Checkpoints every 5 s: exactly-once results show sooner.
        def client_ran(run: jobs.ClientRun) -> None:
            say(f"one Flink client planned and submitted {len(names)} jobs: "
                f"{run.wall_s:.1f} s, {run.cpu_s:.1f} CPU-s")

        submission = pool.submit(
            jobs.submit_many, settings, {name: DEMO_JOB_ARGS.get(name, []) for name in names},
            flink_conf={"execution.checkpointing.interval": "5s"}, on_client=client_ran)
        up.result()
        demo.stack_ready_at = time.monotonic()
        if on_stack_up:
            on_stack_up()
        demo.spawn("sim-modbus", "sim", "modbus", "--port", str(modbus_port),
                   "--scenario", str(SCENARIO))
        demo.spawn("sim-opcua", "sim", "opcua", "--port", str(opcua_port),
                   "--scenario", str(SCENARIO))
        count = publish_assets(settings, load_assets_file(EXAMPLES / "assets.yaml"))
        say(f"loaded master data of {count} assets into {settings.topics.assets}")
        for what, port in (("sim-modbus", modbus_port), ("sim-opcua", opcua_port)):
            wait_for_port(port, timeout_s=60, what=f"demo: {what}")
        configs = connector_configs(settings.stack.state_dir / "demo",
                                    modbus_port=modbus_port, opcua_port=opcua_port)
        for name, config in configs.items():
            demo.spawn(f"connect-{name}", "connect", name, "--config", str(config))
        demo.job_ids.update(submission.result())
        for name, job_id in demo.job_ids.items():
            say(f"submitted job {name} ({job_id})")
        demo.jobs_submitted_at = time.monotonic()
        yield demo
    finally:
        try:
            pool.shutdown(wait=True)
            if submission is not None and not demo.job_ids and submission.done() and (
                    not submission.exception()):  # submitted, but setup failed: cancel it too
                demo.job_ids.update(submission.result())
        finally:
            demo.stop()
            if was_down and not keep_stack:
                stack.down(settings)


def first_oee_line(watcher: Watcher, begun: float) -> str | None:
    """The first OEE figure the watcher has seen, and how long after `begun` it came."""
    at = watcher.first_seen().get(watcher.settings.topics.oee)
    if at is None:
        return None
    window = next(iter(watcher.snapshot()[watcher.settings.topics.oee].values()), {})
    oee = window.get("oee")
    figure = "-" if oee is None else f"{100 * oee:.1f}%"
    return (f"first OEE figure {at - begun:.1f} s after the demo started: "
            f"{window.get('asset', '?')} OEE {figure}")


def run(settings: Settings, *, duration_s: float | None, ui: bool, keep_stack: bool,
        modbus_port: int = EXAMPLE_PORTS["modbus"], opcua_port: int = EXAMPLE_PORTS["opcua"]
        ) -> int:
    def say(msg: str) -> None:
        print(f"demo: {msg}", file=sys.stderr)

    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    begun = time.monotonic()
    watcher = Watcher(settings)
    ready_at: float | None = None
    submitted_at: float | None = None
    try:
        with running_demo(settings, say, keep_stack=keep_stack, modbus_port=modbus_port,
                          opcua_port=opcua_port, on_stack_up=watcher.start) as demo:
            ready_at, submitted_at = demo.stack_ready_at, demo.jobs_submitted_at
            say(f"Flink web UI: {settings.flink.rest_url}   registry: {settings.registry.url}")
            started = time.monotonic()
            try:
                if ui:
                    from otbridge.demo.view import live_view

                    live_view(watcher, demo, settings, duration_s=duration_s, stop=stop)
                else:
                    first_oee = False
                    while not stop["now"] and (
                        duration_s is None or time.monotonic() - started < duration_s
                    ):
                        demo.check_alive()
                        if not first_oee and (line := first_oee_line(watcher, begun)):
                            say(line)
                            first_oee = True
                        time.sleep(0.5)
            except KeyboardInterrupt:
                say("Ctrl-C: stopping")
            finally:
                watcher.stop()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    counts = watcher.counts()
    say("records received: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    if ready_at is not None and submitted_at is not None:
        first = sorted(watcher.first_seen().items())
        say("first record after the stack was up: "
            + ", ".join(f"{t} {at - ready_at:.0f} s" for t, at in first)
            + f"; after the jobs were submitted ({submitted_at - ready_at:.0f} s): "
            + ", ".join(f"{t} {at - submitted_at:.0f} s" for t, at in first))
    empty = [t for t, n in counts.items() if n == 0]
    if empty:
        say(f"no records on: {', '.join(empty)}")
        return 1
    return 0
