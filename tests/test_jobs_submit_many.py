"""`otbridge.jobs.submit_many`: several jobs planned by one Flink client, each a Flink job of
its own (the demo submits its three this way); all or none."""

from __future__ import annotations

import pytest
from kafkahelp import at, consume, produce, reading

from otbridge import jobs
from otbridge.errors import ConfigError, OtbridgeError
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings


def test_two_jobs_from_one_client_each_run_as_their_own_job(live_stack: Settings,
                                                             unique: str) -> None:
    settings = live_stack
    roles = ("readings", "output", "readings_1m", "readings_1h", "dlq")
    topics = {role: f"test.many-{role}.{unique}" for role in roles}
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    press, tag = "acme/berlin/body/line1/press01", "temperature"
    produce(settings, topics["readings"], "Reading", [
        reading(press, tag, 10.0, at(10, 0, 1), seq=1),
        reading(press, tag, 30.0, at(10, 0, 20), seq=2),
        reading(press, tag, 50.0, at(10, 1, 1), seq=3)])  # two one-minute windows
    args = ["--bounded", f"--name-suffix=-{unique}",
            *(f"--topic={role}={topic}" for role, topic in topics.items())]
    runs: list[jobs.ClientRun] = []

    ids = jobs.submit_many(settings, {"smoke": args, "downsample": args},
                           on_client=runs.append)

    assert list(ids) == ["smoke", "downsample"] and len(set(ids.values())) == 2
    (run,) = runs  # one client for both
    assert run.ok and run.cpu_s > 0
    for job_id in ids.values():
        jobs.wait_for_state(settings, job_id, {"FINISHED"}, timeout_s=180)
    names = {j["jid"]: j["name"] for j in jobs.list_jobs(settings)}
    assert {name: names[job_id] for name, job_id in ids.items()} == {
        "smoke": f"otbridge-smoke-{unique}", "downsample": f"otbridge-downsample-{unique}"}
    # each job wrote its own output
    assert len(consume(settings, topics["output"], 2)) == 2
    windows = consume(settings, topics["readings_1m"], 2)
    assert sorted(v["count"] for _, v, _ in windows) == [1, 2]


def test_a_mistake_in_one_job_submits_none(live_stack: Settings, unique: str) -> None:
    good = ["--bounded", f"--name-suffix=-{unique}", f"--topic=readings=test.none.{unique}"]
    with pytest.raises(ConfigError, match=r"^job 'downsample': --topic expects ROLE=TOPIC"):
        jobs.submit_many(live_stack, {"smoke": good,
                                      "downsample": [*good, "--topic=nonsense"]})
    assert [j["name"] for j in jobs.list_jobs(live_stack) if unique in j["name"]] == []


def test_a_second_running_job_of_the_same_name_is_refused_unless_replaced(
        live_stack: Settings, unique: str) -> None:
    """Two jobs of one name would share a consumer group and a transactional id."""
    settings = live_stack
    topics = {role: f"test.twice-{role}.{unique}" for role in ("readings", "output")}
    ensure_topics(settings, [TopicSpec(t, partitions=1) for t in topics.values()])
    args = [f"--name-suffix=-{unique}", *(f"--topic={r}={t}" for r, t in topics.items())]
    first = jobs.submit(settings, "smoke", job_args=args)
    second = None
    try:
        jobs.wait_for_state(settings, first, {"RUNNING"}, timeout_s=120)
        with pytest.raises(OtbridgeError, match=rf"^job 'otbridge-smoke-{unique}' is already "
                                                rf"running \(id {first}\);.*--replace"):
            jobs.submit(settings, "smoke", job_args=args)
        second = jobs.submit(settings, "smoke", job_args=args, replace=True)
        assert second != first
        states = {j["jid"]: j["state"] for j in jobs.list_jobs(settings)}
        assert states[first] == "CANCELED"
        assert states[second] in {"INITIALIZING", "CREATED", "RUNNING"}
    finally:
        for job_id in (first, second):
            if job_id:
                jobs.cancel(settings, job_id)
