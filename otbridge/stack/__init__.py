"""`otbridge stack up | down | status | logs`: the local stack as plain processes on 127.0.0.1."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from otbridge.errors import StackError
from otbridge.kafka import ensure_topics
from otbridge.settings import Settings
from otbridge.stack.components import Component, Flink, Kafka, Registry, components
from otbridge.stack.fetch import fetch
from otbridge.stack.process import port_in_use

__all__ = ["Flink", "Kafka", "Registry", "down", "status", "up"]


def up(settings: Settings, *, out: TextIO = sys.stderr) -> None:
    """Start what is not running, wait until each part is healthy, create otbridge's topics on
    the local broker (unless the settings name another Kafka). Idempotent."""
    stack = settings.stack
    fetch(stack.lib_dir)
    for part in components(settings):
        if part.running():
            if part.health().healthy:
                print(f"{part.name}: already running at {part.address}", file=out)
                continue
            print(f"{part.name}: running but not healthy yet", file=out)
        else:
            missing = part.missing()
            if part.pids():
                # half up (e.g. a TaskManager died): start only what is missing, so that a
                # JobManager keeps its jobs (they restart from their last checkpoint)
                print(f"{part.name}: partly running, starting {', '.join(missing)}", file=out)
            else:
                _check_ports_free(part)
                print(f"{part.name}: starting", file=out)
            part.start()
        _wait_healthy(part, timeout_s=stack.start_timeout_s, out=out)
    if settings.kafka.bootstrap_servers == Kafka(settings).address:
        # otbridge's topics, so that jobs have somewhere to write from the start
        created = ensure_topics(settings)
        if created:
            print(f"kafka: created topics {', '.join(created)}", file=out)


def down(settings: Settings, *, out: TextIO = sys.stderr) -> None:
    """Stop exactly the processes `up` started (by their recorded pids), in reverse order."""
    for part in reversed(components(settings)):
        if part.stop():
            print(f"{part.name}: stopped", file=out)
        else:
            print(f"{part.name}: not running", file=out)


def status(settings: Settings) -> dict[str, dict[str, Any]]:
    report: dict[str, dict[str, Any]] = {}
    for part in components(settings):
        pids = part.pids()
        health = part.health()
        report[part.name] = {
            "healthy": health.healthy,
            "address": part.address,
            "pids": pids,
            "managed": bool(pids),  # False: something else serves the address (or nothing)
            "detail": health.detail,
        }
    return report


def _check_ports_free(part: Component) -> None:
    host = part.stack.host
    for purpose, port in part.ports.items():
        if port_in_use(host, port):
            raise StackError(
                f"{part.name}: cannot start: {purpose} port {port} on {host} is already in use "
                f"by another process. Stop that process, or give {part.name} another port "
                f"(see `otbridge stack --help` for the OTBRIDGE_STACK__* settings)."
            )


def _wait_healthy(part: Component, *, timeout_s: float, out: TextIO) -> None:
    started = time.monotonic()
    last, next_note = "", 0.0
    while True:
        health = part.health()
        waited = time.monotonic() - started
        if health.healthy:
            print(f"{part.name}: healthy at {part.address} ({health.detail}) "
                  f"after {waited:.1f}s", file=out)
            return
        if not part.running():
            tail = part.log_tail()
            part.stop()
            raise StackError(f"{part.name}: process exited during start-up.\n{tail}")
        if waited > timeout_s:
            tail = part.log_tail()
            part.stop()
            raise StackError(
                f"{part.name}: not healthy after {timeout_s:.0f}s ({health.detail}).\n{tail}"
            )
        if health.detail != last or waited >= next_note:
            print(f"{part.name}: waiting ({waited:.0f}s): {health.detail}", file=out)
            last, next_note = health.detail, waited + 10
        time.sleep(1.0)
