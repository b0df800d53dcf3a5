"""A mistake in a simulator's plant or scenario file: `otbridge sim` says so on one line that
names the file and the field, and exits 2 (no traceback); in-process it is a ConfigError."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from otbridge.errors import ConfigError
from simulators.core.plant import PLANT_FILE, PlantError, load_plant
from simulators.core.scenario import load_scenario


def sim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otbridge.cli", "sim", *args, "--port", "0"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("otbridge: error: "), lines[0]
    assert proc.stdout == ""  # never got as far as listening
    return lines[0]


def broken_plant(tmp_path: Path) -> Path:
    raw = yaml.safe_load(PLANT_FILE.read_text())
    raw["areas"][0]["lines"][1]["machines"][0]["protocol"] = "profinet"  # weld01
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_broken_plant_file_is_one_line_naming_the_field_and_exit_2(tmp_path):
    path = broken_plant(tmp_path)
    line = one_line_error(sim("modbus", "--plant", str(path), cwd=tmp_path))
    assert str(path) in line
    assert "areas[0].lines[1].machines[0].protocol: 'profinet'" in line
    assert "valid: modbus, opcua" in line


def test_a_missing_scenario_file_is_one_line_naming_it_and_exit_2(tmp_path):
    missing = tmp_path / "no-such-scenario.yaml"
    line = one_line_error(sim("opcua", "--scenario", str(missing), cwd=tmp_path))
    assert line == f"otbridge: error: {missing}: no such file"


def test_a_scenario_time_that_is_no_number_is_one_line_naming_the_step_and_exit_2(tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_text(
        "steps:\n"
        "  - {at_s: 0, machine: press01, set: {state: 1}}\n"
        "  - {at_s: abc, machine: press01, set: {state: 3}}\n"
    )
    line = one_line_error(sim("modbus", "--scenario", str(path), cwd=tmp_path))
    assert str(path) in line
    assert "steps[1].at_s: Input should be a valid number" in line
    assert "got 'abc'" in line


def test_the_server_module_reports_the_same_line_without_the_cli(tmp_path):
    path = broken_plant(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "simulators.modbus.server", "--plant", str(path), "--port", "0"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"python -m simulators.modbus.server: error: invalid plant file {path}: "
        "areas[0].lines[1].machines[0].protocol: 'profinet' is not a simulator protocol; "
        "valid: modbus, opcua"
    ]


@pytest.mark.parametrize("protocol", ["modbus", "opcua"])
def test_a_port_in_use_is_one_line_and_exit_2(tmp_path, protocol):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "otbridge.cli", "sim", protocol, "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    line = one_line_error(proc)
    assert line == f"otbridge: error: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda r: r["areas"][0]["lines"][1]["machines"][0].update(unit_id=1),
         "areas[0].lines[1].machines[0].unit_id", "1 is already the unit id of press01"),
        (lambda r: r["areas"][0]["lines"][0]["machines"][0].pop("unit_id"),
         "areas[0].lines[0].machines[0].unit_id", "a Modbus machine needs its unit id"),
        (lambda r: r["areas"][1]["lines"][0]["machines"][0]["params"].update(idle_s=[90, 10]),
         "areas[1].lines[0].machines[0].params.idle_s", "min 90.0 is above max 10.0"),
        (lambda r: r["failure_modes"][3].update(weight="often"),
         "failure_modes[3].weight", "got 'often'"),
        (lambda r: r["state_codes"][2].update(category="STARVED"),
         "state_codes[2].category", "valid: 'RUNNING', 'UNPLANNED_STOP' or 'PLANNED_STOP'"),
        (lambda r: r["areas"][2]["lines"][0]["charge_points"][1].update(max_power=50),
         "areas[2].lines[0].charge_points[1].max_power", "unknown field"),
    ],
)  # fmt: skip
def test_plant_mistakes_name_the_field_and_what_would_be_valid(tmp_path, change, field, words):
    raw = yaml.safe_load(PLANT_FILE.read_text())
    change(raw)
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlantError) as err:
        load_plant(path)
    assert isinstance(err.value, ConfigError)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"invalid plant file {path}: {field}: "), message
    assert words in message


def test_scenario_mistakes_name_the_step_field(tmp_path):
    plant = load_plant()
    path = tmp_path / "s.yaml"
    path.write_text("base: model\nsteps:\n  - {at_s: 1, machine: press01, fault: {delay: 2}}\n")
    with pytest.raises(ConfigError, match=r"steps\[0\]\.fault: unknown fault field\(s\) delay"):
        load_scenario(path, plant)
    path.write_text("steps:\n  - {at_s: 1, machine: cp01, set: {temperature: 3}}\n")
    with pytest.raises(ConfigError, match=r"steps\[0\]\.set: unknown tag 'temperature'"):
        load_scenario(path, plant)
