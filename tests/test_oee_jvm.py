"""The oee job's Java process table function (jobs/udf io.otbridge.flink.oee.OeeWindows) against
its oracle, jobs/oee/timeline.py replay(): the same randomized streams, identical output records.

The function runs in a local Flink TableEnvironment (no cluster) over a file of readings with a
5 s out-of-orderness watermark; its master data comes from a real topic on the test stack, as in
production (including a tombstone and an undecodable record). Two configurations run in one
job: 60 s windows with stale-after 20 s, and 30 s windows with stale-after 75 s (known time
reaching over several windows)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import kafkahelp as kh

from jobs.oee.job import OUTPUT, msg_key, register_oee_windows
from jobs.oee.timeline import Master, replay
from otbridge.kafka import TopicSpec, ensure_topics
from otbridge.settings import Settings

T0 = 1_767_607_200_000  # 2026-01-05T10:00:00Z
CODES = {"1": "RUNNING", "2": "UNPLANNED_STOP", "3": "UNPLANNED_STOP", "5": "PLANNED_STOP",
         "6": "PLANNED_STOP", "2.5": "UNPLANNED_STOP", "RUN": "RUNNING", "SETUP": "PLANNED_STOP",
         "DOWN": "UNPLANNED_STOP"}
#: numeric codes, some unmapped (4, 7, 9.5); text codes, some unmapped ("BOGUS", "")
NUMERIC_CODES = [1, 1, 1, 2, 3, 5, 6, 2.5, 4, 7, 9.5]
TEXT_CODES = ["RUN", "RUN", "SETUP", "DOWN", "BOGUS", ""]
SEEDS = [7, 20261202]
CONFIGS = {"oee_a": (60_000, 20_000), "oee_b": (30_000, 75_000)}  # window, stale-after
Reading = tuple[int, str, float | None, str | None, str]


def master_record(path: str, rng: random.Random) -> dict[str, Any]:
    custom = rng.random() < 0.3
    return {
        "asset": path, "name": path.rsplit("/", 1)[1],
        "ideal_cycle_time_s": rng.choice([2.0, 0.7, 1.25, None]),
        # None and "" fall back to the default tag names
        "state_tag": "mode" if custom else rng.choice(["state", None]),
        "total_count_tag": "parts" if custom else rng.choice(["count_total", None, ""]),
        "good_count_tag": "ok_parts" if custom else "count_good",
        "state_codes": CODES, "updated_ts": T0,
    }


def master_of(rec: dict[str, Any]) -> Master:
    return Master(ideal_cycle_time_s=rec["ideal_cycle_time_s"],
                  state_tag=rec["state_tag"] or "state",
                  total_count_tag=rec["total_count_tag"] or "count_total",
                  good_count_tag=rec["good_count_tag"] or "count_good",
                  state_codes=dict(rec["state_codes"]))


def asset_stream(rec: dict[str, Any], rng: random.Random, duration_ms: int) -> list[Reading]:
    """One asset's readings in event-time order: state changes (some exactly on a 30 s
    boundary), counters with resets, heartbeats, BAD samples, long silent gaps, and stretches
    where the machine runs and makes nothing."""
    m = master_of(rec)
    out: list[Reading] = []
    total = good = float(rng.randint(0, 5000))
    t = rng.randint(0, 40_000)
    making = True
    while t < duration_ms:
        r = rng.random()
        if r < 0.03:
            t += rng.randint(90_000, 300_000)  # silence: UNKNOWN after stale-after
            continue
        if r < 0.10:
            t = t - t % 30_000 + 30_000  # a sample exactly on a window boundary
        if r < 0.25:
            if rng.random() < 0.6:
                code = rng.choice(NUMERIC_CODES)
                out.append((t, m.state_tag, float(code), None, "GOOD"))
            else:
                out.append((t, m.state_tag, None, rng.choice(TEXT_CODES), "GOOD"))
        elif r < 0.30:
            out.append((t, m.state_tag, float(rng.choice(NUMERIC_CODES)), None, "BAD"))
        elif r < 0.60:
            if rng.random() < 0.1:
                making = not making  # running and making nothing, or making again
            if rng.random() < 0.04:
                total = good = float(rng.randint(0, 3))  # a counter reset
            elif making:
                made = rng.randint(0, 6)
                total += made
                good += rng.randint(0, made)
            quality = "BAD" if rng.random() < 0.05 else "GOOD"
            value = None if quality == "BAD" and rng.random() < 0.5 else total
            out.append((t, m.total_count_tag, value, None, quality))
            out.append((t, m.good_count_tag, good, None, "GOOD"))
        else:
            quality = "GOOD" if rng.random() < 0.9 else "BAD"
            out.append((t, "temperature", round(rng.uniform(30, 60), 1), None, quality))
        t += rng.choice([0, 1, 250, 1000, 2500, 5000, 9000, 15_000])
    return [(T0 + ts, *rest) for ts, *rest in out]


def plant(seeds: list[int], n_assets: int, duration_ms: int
          ) -> tuple[list[tuple[str, Reading]], dict[str, dict[str, Any]], list[str]]:
    """(asset, reading) in delivery order (each reading up to 4.5 s late, so never behind the
    5 s watermark), the master records, and assets without usable master data (per seed, the
    last but one is deleted by a tombstone, the last one's record cannot be decoded)."""
    stamped, masters, masterless = [], {}, []
    for seed in seeds:
        rng = random.Random(seed)
        paths = [f"acme/berlin/body/line{seed}/m{i:02d}" for i in range(n_assets)]
        mine = {p: master_record(p, rng) for p in paths}
        mine[paths[0]]["ideal_cycle_time_s"] = None
        for p in paths:
            for r in asset_stream(mine[p], rng, duration_ms):
                stamped.append((r[0] + rng.randint(0, 4500), p, r))
        masterless += paths[-2:]
        masters |= {p: mine[p] for p in paths[:-2]}
    stamped.sort(key=lambda x: x[0])
    return [(p, r) for _, p, r in stamped], masters, masterless


def expected_rows(stream: list[tuple[str, Reading]], masters: dict[str, dict[str, Any]],
                  name: str) -> list[tuple[Any, ...]]:
    window_ms, stale_ms = CONFIGS[name]
    rows = []
    for path, rec in masters.items():
        mine = [r for p, r in stream if p == path]
        for w in replay(mine, master_of(rec), window_ms=window_ms, stale_after_ms=stale_ms,
                        until_ms=2**62):
            rows.append((name, path, msg_key(path, w["window_start"]),
                         *(w[c] for c in OUTPUT[1:])))
    return sorted(rows, key=repr)


def java_rows(settings: Settings, tmp_path: Path, assets_topic: str,
              stream: list[tuple[str, Reading]]) -> list[tuple[Any, ...]]:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from jobs.common.readings import register_decoder

    data = tmp_path / "readings.json"
    data.write_text("".join(
        json.dumps({"asset": p, "tag": tag, "value": value, "text": text, "quality": quality,
                    "ts": ts}) + "\n"
        for p, (ts, tag, value, text, quality) in stream))
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("parallelism.default", "1")
    t_env.get_config().set("pipeline.auto-watermark-interval", "1 ms")
    register_decoder(t_env, settings, 300)  # puts the jobs/udf jar in pipeline.jars
    for name, (window_ms, stale_ms) in CONFIGS.items():
        register_oee_windows(t_env, settings, assets_topic=assets_topic,
                             window_s=window_ms // 1000, stale_after_s=stale_ms // 1000, name=name)
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE readings (
          asset STRING, tag STRING, `value` DOUBLE, `text` STRING, quality STRING, ts BIGINT,
          event_ts AS TO_TIMESTAMP_LTZ(ts, 3),
          WATERMARK FOR event_ts AS event_ts - INTERVAL '5' SECOND
        ) WITH ('connector' = 'filesystem', 'path' = '{data}', 'format' = 'json')""")
    columns = ", ".join(f"`{c}`" for c in OUTPUT)
    query = " UNION ALL ".join(
        f"SELECT '{name}', asset, {columns} FROM {name}(input => TABLE readings PARTITION BY "
        f"asset, on_time => DESCRIPTOR(event_ts), uid => '{name}')" for name in CONFIGS)
    with t_env.execute_sql(query).collect() as results:
        return sorted((tuple(r) for r in results), key=repr)


def col(name: str) -> int:
    """Where an output column is in a compared row (configuration, asset, *OUTPUT)."""
    return OUTPUT.index(name) + 2


def test_java_oee_equals_timeline_replay(live_stack: Settings, unique: str, tmp_path: Path
                                         ) -> None:
    stream, masters, masterless = plant(SEEDS, 7, 20 * 60_000)
    deleted, never = masterless[0::2], masterless[1::2]
    topic = f"test.assets.{unique}"
    ensure_topics(live_stack, [TopicSpec(topic, 2, {"cleanup.policy": "compact"})])
    kh.produce(live_stack, topic, "Asset",
               [*masters.values(), *(master_record(p, random.Random(0)) for p in deleted)],
               timestamp_field=None)
    kh.produce_raw(live_stack, topic, [
        *((p.encode(), None, T0) for p in deleted),  # tombstones
        *((p.encode(), b"\x00\x00\x00\x00\x01junk", T0) for p in never),  # not an Asset
    ])
    expected = expected_rows(stream, masters, "oee_a") + expected_rows(stream, masters, "oee_b")
    got = java_rows(live_stack, tmp_path, topic, stream)
    assert len(expected) > 400 and {r[1] for r in expected} == set(masters)
    # the streams reach every case: nothing made while running, UNKNOWN, planned stops, nulls
    assert any(r[col("run_s")] > 0 and r[col("total_count")] == 0 for r in expected)
    assert any(r[col("unknown_s")] > 0 for r in expected)
    assert any(r[col("planned_stop_s")] > 0 for r in expected)
    assert any(r[col("availability")] is None for r in expected)
    assert any(r[col("ideal_cycle_time_s")] is None for r in expected)
    assert {r[1] for r in got} <= set(masters), "no windows for assets without master data"
    missing = [r for r in expected if r not in got]
    extra = [r for r in got if r not in expected]
    assert not missing and not extra, (
        f"{len(missing)} missing, {len(extra)} extra of {len(expected)}; "
        f"first missing {missing[:2]}, first extra {extra[:2]}")
