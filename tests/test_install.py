"""`pip install .` (not editable) into a fresh virtualenv, then otbridge run from a directory
outside the checkout: the wheel carries everything it needs (schemas, Flink config, SQL, rules,
examples, the Java sources), and nothing locates files through the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import kafkahelp as kh
import pytest
import yaml

from otbridge import jobs
from otbridge.net import free_port, wait_for_port
from otbridge.settings import Settings, load_settings

pytestmark = pytest.mark.stack

ROOT = Path(__file__).parents[1]
# what a clean clone has: build output, caches and state are left behind
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", ".otbridge", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
    "target", "bench-results",
)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with `pip install .[modbus]` of a copy of the checkout."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES, symlinks=True)
    env = _env()
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, env=env)
    result = subprocess.run(
        [str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", ".[modbus]"],
        cwd=source, capture_output=True, text=True, timeout=1200, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # quiet unless something fails: no setuptools deprecation warnings, nothing at all
    assert result.stdout + result.stderr == ""
    shutil.rmtree(source)  # the installed package must not need it
    return base / "venv"


def _env() -> dict[str, str]:
    """This session's settings (the test stack's OTBRIDGE_* variables, and the state and lib
    folders of the stack in use), and no way back into the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    stack = load_settings().stack
    env["OTBRIDGE_STACK__STATE_DIR"] = str(stack.state_dir)
    env["OTBRIDGE_STACK__LIB_DIR"] = str(stack.lib_dir)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    return env


def run(venv: Path, cwd: Path, *args: str, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "otbridge"), *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_installed_package_runs_outside_the_checkout(
    live_stack: Settings, venv: Path, tmp_path: Path, unique: str
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import connectors, jobs, otbridge, simulators; "
         "print(' '.join(m.__file__ for m in (connectors, jobs, otbridge, simulators)))"],
        cwd=outside, env=_env(), capture_output=True, text=True, check=True,
    )
    for path in where.stdout.split():
        assert Path(path).is_relative_to(venv), path

    status = run(venv, outside, "stack", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["kafka"]["address"] == live_stack.kafka.bootstrap_servers

    port = free_port()
    sim = subprocess.Popen([str(venv / "bin" / "otbridge"), "sim", "modbus", "--port", str(port)],
                           cwd=outside, env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, timeout_s=60, what="the installed `otbridge sim modbus`")
        example = Path(where.stdout.split()[0]).with_name("examples") / "modbus.yaml"
        config = yaml.safe_load(example.read_text())
        topic = f"test.install.{unique}"
        config["topic"] = topic
        for device in config["devices"]:
            device["port"] = port
        (outside / "modbus.yaml").write_text(yaml.safe_dump(config))
        connect = run(venv, outside, "connect", "modbus", "--config", "modbus.yaml",
                      "--max-readings", "20", timeout=120)
        assert connect.returncode == 0, connect.stderr[-3000:]
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(30)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait(10)
    readings = kh.consume(live_stack, topic, 20)
    assert len(readings) >= 20
    assert {key.decode().split("/")[1] for key, _, _ in readings} == {"berlin"}

    submit = run(venv, outside, "jobs", "submit", "oee", f"--name-suffix=-{unique}",
                 "--topic", f"readings={topic}", "--topic", f"oee=test.install-oee.{unique}",
                 "--topic", f"dlq=test.install-dlq.{unique}")
    assert submit.returncode == 0, submit.stderr[-3000:]
    job_id = submit.stdout.split("job id ")[1].split()[0]
    try:
        assert jobs.wait_for_state(live_stack, job_id, {"RUNNING"}, timeout_s=180) == "RUNNING"
        assert jobs.job(live_stack, job_id)["name"] == f"otbridge-oee-{unique}"
    finally:
        cancel = run(venv, outside, "jobs", "cancel", job_id)
    assert cancel.returncode == 0, cancel.stderr
    assert not (outside / "jobs").exists() and sorted(p.name for p in outside.iterdir()) == [
        "modbus.yaml"]
