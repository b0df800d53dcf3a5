"""Every `otbridge` command the README shows is run by a test, so the README cannot rot.

The walkthrough below runs them in the order a reader would, against the live stack and real
simulators (on free ports, with the connectors' example files pointed at them, so that a demo
on the default ports can run beside the tests). The few that would disturb the shared stack
(`stack down`) run in tests/test_stack_lifecycle.py on an isolated second stack;
COVERED_ELSEWHERE names them, and a README command that is in neither place fails the
walkthrough.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import kafkahelp as kh
import pytest

from otbridge.cli import build_parser
from otbridge.demo.run import connector_configs
from otbridge.kafka import ensure_topics
from otbridge.net import free_port, wait_for_port
from otbridge.settings import Settings

ROOT = Path(__file__).parents[1]

COVERED_ELSEWHERE = {
    "stack down": "tests/test_stack_lifecycle.py (isolated stack, through the CLI)",
}
LONG_RUNNING = ("sim ", "connect ")  # started in the background, stopped with SIGTERM
TAIL_IDLE = ["--idle-timeout", "5"]  # tail follows forever; the test stops when it goes quiet


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split(" #", 1)[0].split(" | ", 1)[0].strip()  # no comments, no pipes
            if line.startswith((".venv/bin/otbridge ", "otbridge ")):
                commands.append(line.split("otbridge ", 1)[1])
    return commands


def cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otbridge.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def on_free_ports(args: list[str], ports: dict[str, int], tmp_path: Path) -> list[str]:
    """A README command with the simulators on `ports` (by protocol): `sim P` gets --port, a
    connector's example file is swapped for a copy pointed at the simulator."""
    if args[0] == "sim":
        return [*args, "--port", str(ports[args[1]])]
    if args[0] == "connect" and "--config" in args:
        at = args.index("--config") + 1
        assert Path(args[at]) == Path("connectors/examples") / f"{args[1]}.yaml", args
        configs = connector_configs(tmp_path, modbus_port=ports["modbus"],
                                    opcua_port=ports["opcua"])
        return [*args[:at], str(configs[args[1]]), *args[at + 1:]]
    return args


def test_every_readme_otbridge_command_parses() -> None:
    commands = readme_commands()
    assert len(commands) >= 5
    parser = build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command))  # exits (fails the test) if it does not parse


@pytest.mark.timeout(900)
def test_readme_walkthrough(live_stack: Settings, tmp_path: Path, unique: str) -> None:
    """Run the README's commands in order; background ones are stopped at the end."""
    background: list[tuple[str, subprocess.Popen[str]]] = []
    ran: list[str] = []
    ports = {"modbus": free_port(), "opcua": free_port()}
    try:
        for command in readme_commands():
            if command in COVERED_ELSEWHERE:
                continue
            args = on_free_ports(shlex.split(command), ports, tmp_path)
            if command.startswith(LONG_RUNNING):
                proc = subprocess.Popen([sys.executable, "-m", "otbridge.cli", *args], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
                background.append((command, proc))
                if args[0] == "sim":
                    wait_for_port(ports[args[1]], timeout_s=60, what=f"`otbridge {command}`")
                else:
                    # a connector cannot be asked; one that is alive 2 s on has its config
                    # and its devices (`topics` below waits for its readings)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(2)
                assert proc.poll() is None, f"`otbridge {command}` exited: {proc.stdout.read()}"
                ran.append(command)
                continue
            if args[0] == "tail":
                args += TAIL_IDLE
                if "--json" in args:  # from the beginning, with a record known to be there
                    args.append("--from-beginning")
                    seed_alert(live_stack, args[1], unique)
            if args[0] == "topics":
                wait_for_readings(live_stack)
            result = cli(args)
            assert result.returncode == 0, f"`otbridge {command}`:\n{result.stderr[-3000:]}"
            check_output(command, result.stdout, live_stack, unique)
            ran.append(command)
    finally:
        for command, proc in reversed(background):
            proc.send_signal(signal.SIGINT if command.startswith("sim ") else signal.SIGTERM)
        for _, proc in background:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        cli(["jobs", "cancel", "oee"])  # in case the walkthrough stopped between the two
    for command, proc in background:
        if command.startswith("connect "):
            assert proc.returncode == 0, f"`otbridge {command}` exited {proc.returncode}"
    missing = [c for c in readme_commands() if c not in ran and c not in COVERED_ELSEWHERE]
    assert missing == [], "README commands no test runs"


def wait_for_readings(settings: Settings, timeout_s: float = 60) -> None:
    """The connectors started above have written readings before `topics` counts them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = json.loads(cli(["topics", "--json"]).stdout)
        if any(r["topic"] == settings.topics.readings and r.get("records", 0) > 0
               for r in rows):
            return
        time.sleep(2)
    raise AssertionError("no readings arrived from the README's connectors")


def seed_alert(settings: Settings, topic: str, unique: str) -> None:
    """One AlertEvent keyed `<unique>|...` for the README's `tail --json` to print."""
    assert topic == settings.topics.alerts, f"seed a record for `tail {topic} --json` here"
    ensure_topics(settings)
    now = int(time.time() * 1000)
    kh.produce(settings, topic, "AlertEvent", [{
        "asset": f"{unique}/berlin/body/line1/press01", "tag": "temperature",
        "rule": "readme", "kind": "high", "severity": "warning", "status": "RAISED",
        "event_ts": now, "raised_ts": now, "value": 91.0, "threshold": 90.0,
        "message": "temperature above 90",
    }], key="asset", timestamp_field="event_ts")


def check_output(command: str, stdout: str, settings: Settings, unique: str) -> None:
    """What each command must have printed, beyond exiting 0."""
    if command == "jobs list":
        assert "otbridge-oee" in stdout and "RUNNING" in stdout, stdout
    elif command == "topics":
        assert settings.topics.readings in stdout, stdout
    elif command.startswith("tail") and "--json" in command:
        records = [json.loads(line) for line in stdout.splitlines()]
        assert {r["topic"] for r in records} == {shlex.split(command)[1]}, stdout[-2000:]
        seeded = [r for r in records if r["key"].startswith(f"{unique}/")]
        assert [r["value"]["rule"] for r in seeded] == ["readme"], stdout[-2000:]
    elif command == "stack status --json":
        assert all(part["healthy"] for part in json.loads(stdout).values())
    elif command.startswith("jobs submit"):
        assert re.search(r"[0-9a-f]{32}", stdout), stdout
