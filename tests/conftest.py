"""Fixtures: the real local stack (started once per session if not already up), unique topics.

The tests run against a stack of their own, on free ports and with its own state folder
(`<state_dir>/test-stack`, sharing the fetched jars of `<state_dir>/lib`), so a demo on the
default ports can run beside them. Its settings reach every test and every `otbridge`
subprocess a test starts through `OTBRIDGE_STACK__*` variables, set here when pytest loads this
file, before any test loads settings. The ports are kept in the test stack's state folder, so
a test stack left running (OTBRIDGE_TEST_KEEP_STACK=1) is found again by the next session.

OTBRIDGE_TEST_STACK=default uses the default settings instead (a stack already running on
9092 / 8080 / 8081, or started there).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest

from otbridge import stack
from otbridge.net import free_ports
from otbridge.settings import Settings, StackSettings, load_settings
from otbridge.stack.components import components

PORTS = ("kafka_port", "kafka_controller_port", "registry_port", "flink_rest_port",
         "flink_rpc_port")


def own_stack_env(base: StackSettings) -> dict[str, str]:
    """OTBRIDGE_STACK__* for the tests' own stack beside the one `base` describes."""
    state = base.state_dir / "test-stack"
    ports_file = state / "ports.json"
    ports: dict[str, int] | None = None
    if ports_file.is_file():
        kept = json.loads(ports_file.read_text())
        kept_settings = Settings(stack=StackSettings(state_dir=state, lib_dir=base.lib_dir,
                                                     **kept))
        if any(part.pids() for part in components(kept_settings)):
            ports = kept  # still running from an earlier session: use it again
    if ports is None:
        ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
        state.mkdir(parents=True, exist_ok=True)
        ports_file.write_text(json.dumps(ports))
    env = {f"OTBRIDGE_STACK__{key.upper()}": str(port) for key, port in ports.items()}
    env["OTBRIDGE_STACK__STATE_DIR"] = str(state)
    env["OTBRIDGE_STACK__LIB_DIR"] = str(base.lib_dir)
    return env

if os.environ.get("OTBRIDGE_TEST_STACK") != "default":
    os.environ.update(own_stack_env(load_settings().stack))


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def live_stack(settings: Settings) -> Iterator[Settings]:
    """Kafka + registry + Flink, really started. Readiness comes from each service's health.

    If any part of it was already running it is left running; a stack this session started
    from nothing is stopped at the end unless OTBRIDGE_TEST_KEEP_STACK=1.
    """
    was_down = not any(part["pids"] for part in stack.status(settings).values())
    stack.up(settings)
    yield settings
    if was_down and os.environ.get("OTBRIDGE_TEST_KEEP_STACK") != "1":
        stack.down(settings)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, subject and group names, so tests never collide."""
    return uuid.uuid4().hex[:10]
