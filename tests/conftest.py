"""Fixtures: the real local stack (started once per session if not already up), unique topics."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from otbridge import stack
from otbridge.settings import Settings, load_settings


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
