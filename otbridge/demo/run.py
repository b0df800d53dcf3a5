"""Start the stack, simulators, connectors, master data and jobs; watch; tear down cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import connectors
import simulators
from otbridge import jobs, stack
from otbridge.demo.watch import Watcher
from otbridge.errors import OtbridgeError
from otbridge.kafka import ensure_topics
from otbridge.net import wait_for_port
from otbridge.settings import Settings

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


@contextmanager
def running_demo(settings: Settings, say: Callable[[str], None], *, keep_stack: bool,
                 modbus_port: int = EXAMPLE_PORTS["modbus"],
                 opcua_port: int = EXAMPLE_PORTS["opcua"]) -> Iterator[Demo]:
    was_down = not any(part["pids"] for part in stack.status(settings).values())
    stack.up(settings)
    demo = Demo(settings, settings.stack.log_dir, say)
    demo.stack_ready_at = time.monotonic()
    try:
        created = ensure_topics(settings)
        if created:
            say(f"created topics: {', '.join(created)}")
        names = [n for n in JOBS if n in jobs.available()]
        for name in names:
            jobs.cancel(settings, name)  # a leftover from an earlier run
        # submitted side by side and while the plant starts: each submission plans the job in
        # a client JVM of its own, the slowest step of the demo's start.
        # Checkpoints every 5 s: exactly-once results become visible sooner.
        pool = ThreadPoolExecutor(max_workers=len(names) or 1)
        futures = {
            name: pool.submit(jobs.submit, settings, name, job_args=DEMO_JOB_ARGS.get(name, []),
                              flink_conf={"execution.checkpointing.interval": "5s"})
            for name in names
        }
        try:
            demo.spawn("sim-modbus", "sim", "modbus", "--port", str(modbus_port),
                       "--scenario", str(SCENARIO))
            demo.spawn("sim-opcua", "sim", "opcua", "--port", str(opcua_port),
                       "--scenario", str(SCENARIO))
            load = subprocess.run(
                [sys.executable, "-m", "otbridge.cli", "assets", "load",
                 str(EXAMPLES / "assets.yaml")],
                capture_output=True, text=True,
            )
            if load.returncode != 0:
                raise OtbridgeError(f"demo: loading asset master data failed:\n{load.stderr}")
            say("loaded asset master data into " + settings.topics.assets)
            for what, port in (("sim-modbus", modbus_port), ("sim-opcua", opcua_port)):
                wait_for_port(port, timeout_s=60, what=f"demo: {what}")
            configs = connector_configs(settings.stack.state_dir / "demo",
                                        modbus_port=modbus_port, opcua_port=opcua_port)
            for name, config in configs.items():
                demo.spawn(f"connect-{name}", "connect", name, "--config", str(config))
            for name, future in futures.items():
                demo.job_ids[name] = future.result()
                say(f"submitted job {name} ({demo.job_ids[name]})")
            demo.jobs_submitted_at = time.monotonic()
        finally:
            pool.shutdown(wait=True)
            for name, future in futures.items():  # submitted, but setup failed: cancel it too
                if name not in demo.job_ids and future.done() and not future.exception():
                    demo.job_ids[name] = future.result()
        yield demo
    finally:
        demo.stop()
        if was_down and not keep_stack:
            stack.down(settings)


def run(settings: Settings, *, duration_s: float | None, ui: bool, keep_stack: bool,
        modbus_port: int = EXAMPLE_PORTS["modbus"], opcua_port: int = EXAMPLE_PORTS["opcua"]
        ) -> int:
    def say(msg: str) -> None:
        print(f"demo: {msg}", file=sys.stderr)

    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    watcher = Watcher(settings)
    ready_at: float | None = None
    submitted_at: float | None = None
    try:
        with running_demo(settings, say, keep_stack=keep_stack, modbus_port=modbus_port,
                          opcua_port=opcua_port) as demo:
            ready_at, submitted_at = demo.stack_ready_at, demo.jobs_submitted_at
            say(f"Flink web UI: {settings.flink.rest_url}   registry: {settings.registry.url}")
            watcher.start()
            started = time.monotonic()
            try:
                if ui:
                    from otbridge.demo.view import live_view

                    live_view(watcher, demo, settings, duration_s=duration_s, stop=stop)
                else:
                    while not stop["now"] and (
                        duration_s is None or time.monotonic() - started < duration_s
                    ):
                        demo.check_alive()
                        time.sleep(1.0)
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
