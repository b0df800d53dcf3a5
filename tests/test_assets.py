"""`otbridge assets load FILE`: validated master data, one Asset per asset path, compacted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kafkahelp as kh
import pytest
import yaml
from confluent_kafka.admin import ConfigResource

from jobs.oee.masterdata import load_assets_file, publish_assets
from otbridge.errors import ConfigError
from otbridge.kafka import admin
from otbridge.settings import Settings

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "connectors" / "examples" / "assets.yaml"


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "assets.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_defaults_apply_unless_an_asset_sets_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "defaults": {"state_tag": "state", "state_codes": {1: "RUNNING", 5: "PLANNED_STOP"}},
            "assets": [
                {"asset": "acme/berlin/body/line1/press01", "ideal_cycle_time_s": 2.0},
                {
                    "asset": "acme/berlin/body/line1/press02",
                    "state_tag": "mode",
                    "state_codes": {7: "UNPLANNED_STOP"},
                },
            ],
        },
    )
    press01, press02 = load_assets_file(path).records()
    assert press01["state_tag"] == "state"
    assert press01["state_codes"] == {"1": "RUNNING", "5": "PLANNED_STOP"}
    assert press01["ideal_cycle_time_s"] == 2.0
    assert press02["state_tag"] == "mode"
    assert press02["state_codes"] == {"7": "UNPLANNED_STOP"}
    assert press02["ideal_cycle_time_s"] is None


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"asset": "acme/press01"}, "assets[0].asset", "enterprise/site/area/line/cell"),
        ({"state_codes": {1: "DOWN"}}, "assets[0].state_codes[1]", "'RUNNING', 'UNPLANNED_STOP'"),
        ({"ideal_cycle_time_s": 0}, "assets[0].ideal_cycle_time_s", "greater than 0"),
        ({"cycle": 2}, "assets[0].cycle", "unknown field"),
    ],
)
def test_invalid_file_names_the_field(
    tmp_path: Path, entry: dict[str, Any], field: str, words: str
) -> None:
    path = write(tmp_path, {"assets": [{"asset": "acme/berlin/body/line1/press01", **entry}]})
    with pytest.raises(ConfigError) as info:
        load_assets_file(path)
    message = str(info.value)
    assert str(path) in message
    line = next((ln for ln in message.splitlines() if field + ":" in ln), None)
    assert line is not None, message
    assert words in line


def test_cli_names_the_file_and_field_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, {"assets": [{"asset": "acme/berlin/body/line1/press01", "cycle": 2}]})
    proc = subprocess.run(
        [sys.executable, "-m", "otbridge.cli", "assets", "load", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert str(path) in proc.stderr and "assets[0].cycle: unknown field" in proc.stderr


def test_example_matches_the_simulated_plant() -> None:
    plant = yaml.safe_load((ROOT / "simulators" / "plant.yaml").read_text())
    want = {
        f"{plant['enterprise']}/{plant['site']}/{area['name']}/{line['name']}/{m['name']}": m[
            "ideal_cycle_time_s"
        ]
        for area in plant["areas"]
        for line in area["lines"]
        for m in line.get("machines", [])
    }
    records = load_assets_file(EXAMPLE).records()
    assert {r["asset"]: r["ideal_cycle_time_s"] for r in records} == want
    codes = {str(code): spec["category"] for code, spec in plant["state_codes"].items()}
    for r in records:
        assert r["state_codes"] == codes
        assert (r["state_tag"], r["total_count_tag"], r["good_count_tag"]) == (
            plant["state_tag"],
            plant["total_count_tag"],
            plant["good_count_tag"],
        )


def test_load_writes_one_record_per_asset_to_a_compacted_topic(
    live_stack: Settings, unique: str
) -> None:
    topic = f"test.assets.{unique}"
    proc = subprocess.run(
        [sys.executable, "-m", "otbridge.cli", "assets", "load", str(EXAMPLE), "--topic", topic],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"loaded 5 assets from {EXAMPLE} into {topic}" in proc.stdout
    assert publish_assets(live_stack, load_assets_file(EXAMPLE), topic=topic) == 5  # again

    records = kh.consume(live_stack, topic, 10, settle_s=1.0)
    assert len(records) == 10
    for key, value, _ in records:
        assert key == value["asset"].encode()
    latest = {value["asset"]: value for _, value, _ in records}
    press = latest["acme/berlin/body/line1/press01"]
    assert press["ideal_cycle_time_s"] == 2.0
    assert press["name"] == "Press 01"
    assert press["state_tag"] == "state"
    assert (press["total_count_tag"], press["good_count_tag"]) == ("count_total", "count_good")
    assert press["state_codes"] == {
        "1": "RUNNING",
        "2": "UNPLANNED_STOP",
        "3": "UNPLANNED_STOP",
        "4": "UNPLANNED_STOP",
        "5": "PLANNED_STOP",
        "6": "PLANNED_STOP",
    }
    assert press["updated_ts"].tzinfo is not None

    client = admin(live_stack)  # keep the client alive until the answer came
    (future,) = client.describe_configs([ConfigResource("topic", topic)]).values()
    assert future.result()["cleanup.policy"].value == "compact"
