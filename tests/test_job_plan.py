"""The jobs' plans on the real Flink cluster: each job reads and decodes iiot.readings once."""

from __future__ import annotations

import httpx
import pytest

from otbridge import jobs
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings

ROLES = {
    "oee": ("readings", "assets", "oee", "dlq"),
    "conditions": ("readings", "alerts", "dlq"),
    "downsample": ("readings", "readings_1m", "readings_1h", "dlq"),
}


def plan_nodes(settings: Settings, job_id: str) -> list[dict]:
    resp = httpx.get(f"{settings.flink.rest_url}/jobs/{job_id}/plan", timeout=10)
    resp.raise_for_status()
    nodes: list[dict] = resp.json()["plan"]["nodes"]
    return nodes


@pytest.mark.parametrize("name", sorted(ROLES))
def test_one_source_per_job(live_stack: Settings, unique: str, name: str) -> None:
    """One Kafka source (and so one decode, one consumer of the group) per job: a job whose
    `to_data_stream()` is planned apart from its statement set reads the topic twice."""
    settings = live_stack
    topics = {role: f"test.{role}.{unique}" for role in ROLES[name]}
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    job_id = jobs.submit(settings, name, job_args=[
        f"--name-suffix=-{unique}", *(f"--topic={r}={t}" for r, t in topics.items())])
    try:
        nodes = plan_nodes(settings, job_id)
    finally:
        jobs.cancel(settings, job_id)
    sources = [n["description"] for n in nodes if not n.get("inputs")]
    assert len(sources) == 1, sources
    assert "readings_raw" in sources[0]
