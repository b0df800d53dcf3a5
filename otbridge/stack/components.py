"""The three parts of the local stack: Kafka (KRaft), Apicurio Registry, Flink session cluster."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyflink

import jobs
import otbridge
from otbridge.errors import StackError
from otbridge.settings import Settings
from otbridge.stack.fetch import pom_property
from otbridge.stack.process import ManagedProcess, port_open


@dataclass(frozen=True)
class Health:
    healthy: bool
    detail: str


class Component(ABC):
    """One part of the stack: how to start it, where it listens, how to tell it is healthy."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = settings.stack

    @property
    @abstractmethod
    def processes(self) -> list[ManagedProcess]: ...

    @property
    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Ports this part binds on stack.host, by what they are for."""

    @property
    @abstractmethod
    def address(self) -> str: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def health(self) -> Health: ...

    def _process(self, name: str) -> ManagedProcess:
        return ManagedProcess(name=name, run_dir=self.stack.run_dir, log_dir=self.stack.log_dir)

    def pids(self) -> list[int]:
        return [pid for p in self.processes if (pid := p.pid()) is not None]

    def running(self) -> bool:
        return all(p.pid() is not None for p in self.processes)

    def missing(self) -> list[str]:
        """The names of its processes that are not running."""
        return [p.name for p in self.processes if p.pid() is None]

    def stop(self) -> bool:
        stopped = False
        for proc in reversed(self.processes):
            stopped |= proc.stop()
        return stopped

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {p.log_file} (last {lines} lines)\n{p.log_tail(lines)}" for p in self.processes
        )


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    exe = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not exe or not Path(exe).exists():
        raise StackError("`java` not found: install a JDK 17 (or set JAVA_HOME)")
    return exe


class Kafka(Component):
    name = "kafka"

    @property
    def home(self) -> Path:
        return self.stack.state_dir / "kafka"

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self._process("kafka")]

    @property
    def ports(self) -> dict[str, int]:
        return {"broker": self.stack.kafka_port, "controller": self.stack.kafka_controller_port}

    @property
    def address(self) -> str:
        return f"{self.stack.host}:{self.stack.kafka_port}"

    def classpath(self) -> str:
        return str(self.stack.lib_dir / "kafka" / "*")

    def tool(self, main_class: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of Kafka's command-line tools from the fetched jars."""
        log4j = self.home / "log4j2-tools.properties"
        return subprocess.run(
            [java(), f"-Dlog4j2.configurationFile={log4j}", "-cp", self.classpath(),
             main_class, *args],
            capture_output=True,
            text=True,
        )

    def _write_config(self) -> Path:
        s = self.stack
        data = self.home / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.host}:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "3",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # exactly-once Flink sinks keep transactions open for a checkpoint + a restart
            "transaction.max.timeout.ms": "900000",
            # a lab broker keeps what it is given (tests and benchmarks replay event times
            # from the past, which time-based retention would delete at once); topics that
            # need retention set it themselves (iiot.readings: 7 days)
            "log.retention.ms": "-1",
            "log.retention.bytes": str(20 * 1024**3),
            "auto.create.topics.enable": "false",
        }
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        for name, level in (("log4j2.properties", "INFO"), ("log4j2-tools.properties", "WARN")):
            (self.home / name).write_text(
                "status = warn\n"
                "appender.out.type = Console\n"
                "appender.out.name = OUT\n"
                "appender.out.target = SYSTEM_ERR\n"
                "appender.out.layout.type = PatternLayout\n"
                "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
                f"rootLogger.level = {level}\n"
                "rootLogger.appenderRef.out.ref = OUT\n"
                "logger.state.name = state.change.logger\n"
                "logger.state.level = WARN\n"
            )
        return path

    def start(self) -> None:
        config = self._write_config()
        if not (self.home / "data" / "meta.properties").is_file():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            # "=": a random id may start with "-", which would read as an option
            result = self.tool(
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                f"--config={config}",
            )
            if result.returncode != 0:
                raise StackError(
                    f"kafka: formatting storage in {self.home / 'data'} failed:\n"
                    f"{result.stdout}{result.stderr}"
                )
        env = dict(os.environ)
        env.pop("KAFKA_OPTS", None)
        heap = self.stack.kafka_heap
        self.processes[0].start(
            [
                java(), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                "-cp", self.classpath(), "kafka.Kafka", str(config),
            ],
            env=env,
            cwd=self.home,
        )

    def health(self) -> Health:
        if not port_open(self.stack.host, self.stack.kafka_port):
            return Health(False, f"nothing listens on {self.address}")
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.address, "socket.timeout.ms": 2000})
        try:
            md = admin.list_topics(timeout=3)
        except Exception as exc:  # KafkaException: broker not ready yet
            return Health(False, f"metadata request failed: {exc}")
        if not md.brokers:
            return Health(False, "broker reports no brokers yet")
        return Health(True, f"{len(md.brokers)} broker, {len(md.topics)} topics")


class Registry(Component):
    name = "registry"

    @property
    def home(self) -> Path:
        return self.stack.state_dir / "registry"

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self._process("registry")]

    @property
    def ports(self) -> dict[str, int]:
        return {"http": self.stack.registry_port}

    @property
    def address(self) -> str:
        return f"http://{self.stack.host}:{self.stack.registry_port}/apis/ccompat/v7"

    def start(self) -> None:
        s = self.stack
        version = pom_property("apicurio.version")
        jar = s.lib_dir / "registry" / f"apicurio-registry-app-{version}-runner.jar"
        if not jar.is_file():
            raise StackError(f"registry: {jar} is missing; run `otbridge stack fetch`")
        self.home.mkdir(parents=True, exist_ok=True)
        heap = s.registry_heap
        self.processes[0].start(
            [
                java(), f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                f"-Dquarkus.http.host={s.host}",
                f"-Dquarkus.http.port={s.registry_port}",
                # schemas live in a Kafka topic of the local broker: they survive restarts
                "-Dapicurio.storage.kind=kafkasql",
                f"-Dapicurio.kafkasql.bootstrap.servers={s.host}:{s.kafka_port}",
                "-Dapicurio.rest.deletion.artifact.enabled=true",
                "-Dapicurio.rest.deletion.artifact-version.enabled=true",
                "-Dquarkus.log.console.json=false",
                "-jar", str(jar),
            ],
            env=dict(os.environ),
            cwd=self.home,
        )

    def health(self) -> Health:
        try:
            resp = httpx.get(f"{self.address}/subjects", timeout=2.0)
        except httpx.HTTPError as exc:
            return Health(False, f"{self.address} not answering: {type(exc).__name__}")
        if resp.status_code != 200:
            return Health(False, f"GET /subjects answered {resp.status_code}")
        return Health(True, f"{len(resp.json())} subjects")


PYFLINK_HOME = Path(pyflink.__file__).resolve().parent
#: the cluster's config.yaml: the top-level flink-conf/ folder, package data of otbridge
FLINK_CONF = Path(otbridge.__file__).with_name("flink-conf") / "config.yaml"


def import_roots() -> list[str]:
    """The folders otbridge and the jobs are imported from (the checkout, or site-packages for
    a wheel), for a Python that does not read this environment's .pth files."""
    return list(dict.fromkeys(str(Path(str(m.__file__)).resolve().parents[1])
                              for m in (otbridge, jobs)))


class Flink(Component):
    name = "flink"

    @property
    def home(self) -> Path:
        return self.stack.state_dir / "flink"

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self._process("flink-jobmanager"), self._process("flink-taskmanager")]

    @property
    def ports(self) -> dict[str, int]:
        return {"rest": self.stack.flink_rest_port, "rpc": self.stack.flink_rpc_port}

    @property
    def address(self) -> str:
        return f"http://{self.stack.host}:{self.stack.flink_rest_port}"

    def dynamic_properties(self) -> list[str]:
        s = self.stack
        props = {
            "jobmanager.rpc.address": s.host,
            "jobmanager.rpc.port": s.flink_rpc_port,
            "rest.address": s.host,
            "rest.bind-address": s.host,
            "rest.port": s.flink_rest_port,
            "taskmanager.host": s.host,
            "taskmanager.numberOfTaskSlots": s.flink_taskmanager_slots,
            "io.tmp.dirs": self.home / "tmp",
            "web.tmpdir": self.home / "web",
            "web.upload.dir": self.home / "web",
            "execution.checkpointing.dir": f"file://{self.home / 'checkpoints'}",
            "execution.checkpointing.savepoint-dir": f"file://{self.home / 'savepoints'}",
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
        }
        args: list[str] = []
        for key, value in props.items():
            args += ["-D", f"{key}={value}"]
        return args

    def env(self) -> dict[str, str]:
        """Environment for Flink's scripts (cluster processes and the `flink` client alike)."""
        env = dict(os.environ)
        env["FLINK_CONF_DIR"] = str(self.home / "conf")
        env["FLINK_LIB_DIR"] = str(self.home / "lib")
        env["FLINK_LOG_DIR"] = str(self.stack.log_dir)
        env["FLINK_HOME"] = str(PYFLINK_HOME)
        # thread mode runs Python inside the TaskManager JVM: it must find pyflink, pemja and the
        # project's own packages (DESIGN.md: "No module named 'pemja'" otherwise); an editable
        # install's .pth files are not read there, so the packages' own folders come first
        site = sysconfig.get_paths()["purelib"]
        env["PYTHONPATH"] = os.pathsep.join(
            dict.fromkeys(p for p in (*import_roots(), site, env.get("PYTHONPATH", "")) if p)
        )
        return env

    def prepare(self) -> None:
        """Lay out conf/ (our config.yaml) and lib/ (PyFlink's jars + the connector jars)."""
        conf, lib = self.home / "conf", self.home / "lib"
        for d in (conf, lib):
            shutil.rmtree(d, ignore_errors=True)
        for d in (conf, lib, self.home / "tmp", self.home / "web"):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copy(FLINK_CONF, conf / "config.yaml")
        for f in (PYFLINK_HOME / "conf").glob("log4j*.properties"):
            shutil.copy(f, conf / f.name)
        connectors = sorted((self.stack.lib_dir / "flink").glob("*.jar"))
        if len(connectors) < 2:
            raise StackError(
                f"flink: connector jars missing in {self.stack.lib_dir / 'flink'}; "
                "run `otbridge stack fetch`"
            )
        # flink-python on the cluster classpath (not per job): pemja's native library can be
        # loaded once per JVM only, so a second Python job in the same TaskManager would fail
        python_jar = sorted((PYFLINK_HOME / "opt").glob("flink-python-*.jar"))
        for jar in [*sorted((PYFLINK_HOME / "lib").glob("*.jar")), *python_jar, *connectors]:
            (lib / jar.name).symlink_to(jar)

    def prepare_client(self) -> None:
        """The `flink` client plans jobs with the same conf/ and lib/ as the cluster."""
        if not (self.home / "lib").is_dir() or not (self.home / "conf").is_dir():
            self.prepare()

    def script(self, name: str) -> str:
        return str(PYFLINK_HOME / "bin" / name)

    def start(self) -> None:
        """Start what is not running: both, or the one that died (the other one keeps its
        folders, its jobs and its connections)."""
        jm, tm = self.processes
        if jm.pid() is None and tm.pid() is None:
            self.prepare()
        else:
            self.prepare_client()
        env = self.env()
        if jm.pid() is None:
            jm.start(
                ["bash", self.script("jobmanager.sh"), "start-foreground",
                 *self.dynamic_properties()],
                env=env,
                cwd=self.home,
            )
        if tm.pid() is None:
            tm.start(
                ["bash", self.script("taskmanager.sh"), "start-foreground",
                 *self.dynamic_properties()],
                env=env,
                cwd=self.home,
            )

    def health(self) -> Health:
        try:
            resp = httpx.get(f"{self.address}/overview", timeout=2.0)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            return Health(False, f"{self.address} not answering: {type(exc).__name__}")
        overview = resp.json()
        if overview.get("taskmanagers", 0) < 1:
            return Health(False, "no TaskManager registered yet")
        return Health(
            True,
            f"{overview['taskmanagers']} TaskManager, {overview['slots-available']}/"
            f"{overview['slots-total']} slots free, {overview['jobs-running']} jobs running",
        )


def components(settings: Settings) -> list[Component]:
    """In start order (the registry stores its schemas in Kafka)."""
    return [Kafka(settings), Registry(settings), Flink(settings)]
