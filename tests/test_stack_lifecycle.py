"""`otbridge stack` as a user runs it: a second, isolated stack on free ports and its own state.

Uses the real CLI in subprocesses, so it exercises fetch, start, health, down and persistence.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from otbridge.cli import STACK_HELP
from otbridge.net import free_ports
from otbridge.registry import schema_text
from otbridge.settings import StackSettings

PORT_KEYS = ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "REGISTRY_PORT", "FLINK_REST_PORT",
             "FLINK_RPC_PORT")


@pytest.fixture
def isolated_env(tmp_path: Path, settings) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    for key, port in zip(PORT_KEYS, free_ports(len(PORT_KEYS)), strict=True):
        env[f"OTBRIDGE_STACK__{key}"] = str(port)
    env["OTBRIDGE_STACK__STATE_DIR"] = str(tmp_path / "state")
    env["OTBRIDGE_STACK__LIB_DIR"] = str(settings.stack.lib_dir)  # the jars already fetched
    yield env
    run(env, "stack", "down")  # whatever the test did, leave no process behind


def run(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otbridge.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_down_then_up_keeps_topics_records_and_schemas(live_stack, isolated_env) -> None:
    env = isolated_env
    up = run(env, "stack", "up")
    assert up.returncode == 0, up.stderr + up.stdout
    status = json.loads(run(env, "stack", "status", "--json").stdout)
    kafka_port = env["OTBRIDGE_STACK__KAFKA_PORT"]
    assert status["kafka"] == {**status["kafka"], "healthy": True,
                               "address": f"127.0.0.1:{kafka_port}"}
    assert status["flink"]["healthy"] and status["registry"]["healthy"]

    bootstrap = f"127.0.0.1:{kafka_port}"
    registry_url = f"http://127.0.0.1:{env['OTBRIDGE_STACK__REGISTRY_PORT']}/apis/ccompat/v7"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("persist.me", 1, 1)])["persist.me"].result()
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(10):
        producer.produce("persist.me", key=b"k", value=f"record-{i}".encode())
    assert producer.flush(30) == 0
    schema_id = SchemaRegistryClient({"url": registry_url}).register_schema(
        "persist.me-value", Schema(schema_text("Reading"), "AVRO"))

    down = run(env, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert "kafka: stopped" in down.stderr and "flink: stopped" in down.stderr
    assert run(env, "stack", "status", "--json").returncode == 1
    assert run(env, "stack", "up").returncode == 0

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "persist",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["persist.me"])
    values = []
    for _ in range(60):
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            values.append(msg.value().decode())
        if len(values) == 10:
            break
    consumer.close()
    assert values == [f"record-{i}" for i in range(10)]
    client = SchemaRegistryClient({"url": registry_url})
    assert client.get_schema(schema_id).schema_str == schema_text("Reading")
    assert client.get_latest_version("persist.me-value").schema_id == schema_id


def test_up_is_idempotent_and_down_stops_only_our_processes(live_stack, isolated_env) -> None:
    env = isolated_env
    assert run(env, "stack", "up").returncode == 0
    pids = json.loads(run(env, "stack", "status", "--json").stdout)
    again = run(env, "stack", "up")
    assert again.returncode == 0
    assert again.stderr.count("already running") == 3
    assert json.loads(run(env, "stack", "status", "--json").stdout) == pids
    # the shared stack of the other tests is untouched by our down
    assert run(env, "stack", "down").returncode == 0
    for part in pids.values():
        for pid in part["pids"]:
            stat = Path(f"/proc/{pid}/stat")
            assert not stat.exists() or stat.read_text().split()[2] == "Z"
    assert all(p["healthy"] for p in json.loads(
        run(dict(os.environ), "stack", "status", "--json").stdout).values())


def test_port_taken_fails_naming_port_and_component(isolated_env) -> None:
    env = isolated_env
    port = int(env["OTBRIDGE_STACK__KAFKA_PORT"])
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        result = run(env, "stack", "up", timeout=300)
    finally:
        blocker.close()
    assert result.returncode != 0
    expected = f"kafka: cannot start: broker port {port} on 127.0.0.1 is already in use"
    assert expected in result.stderr


def test_invalid_setting_names_field_and_valid_choices(tmp_path: Path) -> None:
    env = dict(os.environ, OTBRIDGE_KAFKA__SECURITY_PROTOCOL="SASL_SSLL")
    result = run(env, "stack", "status")
    assert result.returncode == 2
    assert "kafka.security_protocol" in result.stderr
    assert "'SASL_SSL'" in result.stderr and "SASL_SSLL" in result.stderr

    config = tmp_path / "otbridge.yaml"
    config.write_text("stack:\n  kafka_port: 99999\n")
    env = {k: v for k, v in os.environ.items() if k != "OTBRIDGE_STACK__KAFKA_PORT"}
    result = run(dict(env, OTBRIDGE_CONFIG=str(config)), "stack", "status")
    assert result.returncode == 2
    assert "stack.kafka_port" in result.stderr and "65535" in result.stderr


def test_pinned_flink_matches_connector_build() -> None:
    from otbridge.stack.fetch import pom_property

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    flink = pom_property("flink.version")
    assert f'"apache-flink=={flink}"' in pyproject
    # the Kafka connector's version names the Flink minor it was built for
    minor = ".".join(flink.split(".")[:2])
    assert pom_property("flink.kafka.connector.version").endswith(f"-{minor}")


def test_stack_help_shows_the_real_defaults() -> None:
    """`otbridge stack --help` lists each port setting with the default StackSettings has."""
    documented = dict(re.findall(r"OTBRIDGE_STACK__(\w+)\s.*\[(\d+)\]", STACK_HELP))
    assert set(documented) == set(PORT_KEYS)
    fields = StackSettings.model_fields
    assert {key: int(port) for key, port in documented.items()} == {
        key: fields[key.lower()].default for key in PORT_KEYS}
    assert fields["kafka_port"].default == 9092  # what the README and outside tools assume
