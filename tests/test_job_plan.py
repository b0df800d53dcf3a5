"""The jobs' plans on the real Flink cluster: each job reads and decodes iiot.readings once."""

from __future__ import annotations

import httpx
import pytest

from otbridge import jobs
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings

ROLES = {
    "oee": ("readings", "assets", "oee", "dlq"),
    "conditions": ("readings", "alerts", "dlq", "clock"),
    "downsample": ("readings", "readings_1m", "readings_1h", "dlq"),
}


def plan_nodes(settings: Settings, job_id: str) -> list[dict]:
    resp = httpx.get(f"{settings.flink.rest_url}/jobs/{job_id}/plan", timeout=10)
    resp.raise_for_status()
    nodes: list[dict] = resp.json()["plan"]["nodes"]
    return nodes


def submitted_plan(settings: Settings, unique: str, name: str) -> list[dict]:
    """The plan of job `name` submitted on topics of its own (cancelled again at once)."""
    topics = {role: f"test.{role}.{unique}" for role in ROLES[name]}
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    job_id = jobs.submit(settings, name, job_args=[
        f"--name-suffix=-{unique}", *(f"--topic={r}={t}" for r, t in topics.items())])
    try:
        return plan_nodes(settings, job_id)
    finally:
        jobs.cancel(settings, job_id)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_one_source_per_job(live_stack: Settings, unique: str, name: str) -> None:
    """One Kafka source (and so one decode, one consumer of the group) per job: a job whose
    `to_data_stream()` is planned apart from its statement set reads the topic twice."""
    nodes = submitted_plan(live_stack, unique, name)
    sources = [n["description"] for n in nodes if not n.get("inputs")]
    readings = [s for s in sources if "readings_raw" in s]
    assert len(readings) == 1, sources
    # besides: only the conditions job's wall-clock ticks (a datagen source, no Kafka read)
    others = [s for s in sources if s not in readings]
    assert [("clock_source" in s) for s in others] == ([True] if name == "conditions" else []), \
        sources


def test_downsample_window_aggregates_run_in_two_phases(live_stack: Settings, unique: str
                                                       ) -> None:
    """Both window aggregates are split: a local phase before the keyed exchange and a global one
    behind it, so partial results cross it, not every reading (FIRST_VALUE / LAST_VALUE cannot
    merge and rule that out). The readings are aggregated once, into minutes (local phase in the
    source's chain); the hour is made of the minutes (local phase chained to the minutes)."""
    nodes = submitted_plan(live_stack, unique, "downsample")
    source = next(n for n in nodes if not n.get("inputs"))
    assert source["description"].count("LocalWindowAggregate") == 1, source["description"]
    minute = [n for n in nodes if [i["id"] for i in n.get("inputs", [])] == [source["id"]]]
    assert len(minute) == 1 and len(nodes) == 3, [n["description"] for n in nodes]
    d = minute[0]["description"]
    assert d.count("GlobalWindowAggregate") == 1 and "size=[1 min]" in d, d
    assert d.count("LocalWindowAggregate") == 1, d
    hour = next(n for n in nodes if n not in (source, minute[0]))
    assert [i["id"] for i in hour["inputs"]] == [minute[0]["id"]]
    d = hour["description"]
    assert "GlobalWindowAggregate" in d and "size=[1 h]" in d and "Local" not in d, d
