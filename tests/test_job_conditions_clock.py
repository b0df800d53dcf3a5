"""A connector killed while its device keeps running: with no reading anywhere, event time
stops, and the conditions job's wall clock (iiot.clock ticks, read with the readings) raises
the stale alert within the documented delay; the restarted connector clears it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import kafkahelp as kh
import yaml
from test_connector_outage import EXAMPLES, ConnectorProcess, now_ms, simulator

from otbridge import jobs
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings

PRESS = "acme/berlin/body/line1/press01"
TIMEOUT_S = 30
#: jobs/conditions/job.py: RAISED at most this long after timeout_s (when timeout_s >= 15 s)
DELAY_S = 25


def connector_config(tmp: Path, settings: Settings, port: int, topic: str) -> Path:
    doc = yaml.safe_load((EXAMPLES / "modbus.yaml").read_text())
    device = next(d for d in doc["devices"] if d["name"] == "press01")
    device.update(port=port, poll_interval_s=1.0)
    doc.update(devices=[device], topic=topic, stats_interval_s=5, connector_id="clock-test",
               kafka={"bootstrap_servers": settings.kafka.bootstrap_servers},
               registry={"url": settings.registry.url},
               buffer={"path": str(tmp / "buffer.db")})
    path = tmp / "modbus.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_killed_connector_raises_stale_within_its_timeout_plus_the_delay(
        live_stack: Settings, tmp_path: Path) -> None:
    settings, unique = live_stack, uuid.uuid4().hex[:10]
    topics = {r: f"test.{r}.{unique}" for r in ("readings", "alerts", "dlq", "clock")}
    ensure_topics(settings, [TopicSpec(t, partitions=3 if r == "readings" else 1)
                             for r, t in topics.items()])
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [
        {"name": "no-data", "match": {"asset": PRESS, "tag": "state"}, "kind": "stale",
         "severity": "critical", "timeout_s": TIMEOUT_S}]}))
    job_id = jobs.submit(settings, "conditions", job_args=[
        f"--name-suffix=-{unique}", f"--rules={rules}",
        *(f"--topic={r}={t}" for r, t in topics.items())])
    with simulator("modbus", tmp_path) as port:
        conn = ConnectorProcess("modbus", connector_config(tmp_path, settings, port,
                                                           topics["readings"]),
                                tmp_path / "connector.log")
        try:
            jobs.wait_for_state(settings, job_id, {"RUNNING"}, timeout_s=120)
            conn.start()
            assert kh.consume(settings, topics["readings"], 30, timeout_s=60), \
                conn.log.read_text()[-3000:]
            time.sleep(5)
            conn.kill()
            killed = now_ms()
            readings = kh.consume(settings, topics["readings"], 10**6, timeout_s=10,
                                  settle_s=3)
            last = max(kh.ms(v["source_ts"]) for _, v, _ in readings
                       if v["asset"] == PRESS and v["tag"] == "state")
            assert last <= killed
            alerts = kh.consume(settings, topics["alerts"], 1,
                                timeout_s=TIMEOUT_S + DELAY_S + 30)
            arrived = now_ms()
            assert [(v["rule"], v["status"], kh.ms(v["event_ts"])) for _, v, _ in alerts] == [
                ("no-data", "RAISED", last + TIMEOUT_S * 1000)]
            # the RAISED record's Kafka timestamp is its event time: measure by arrival
            delay_s = (arrived - last) / 1000 - TIMEOUT_S
            print(f"stale RAISED {delay_s:.1f} s after the timeout (documented <= {DELAY_S} s)")
            assert delay_s <= DELAY_S, delay_s

            conn.start()  # the device kept running: its next reading clears the alert
            alerts = kh.consume(settings, topics["alerts"], 2, timeout_s=60)
            assert [v["status"] for _, v, _ in alerts] == ["RAISED", "CLEARED"]
            assert not kh.consume(settings, topics["dlq"], 1, timeout_s=3), "nothing late"
            conn.stop()
        finally:
            conn.ensure_gone()
            jobs.cancel(settings, job_id)
