"""Every `otbridge` command the README shows is run by a test, so the README cannot rot.

The walkthrough below runs them in the order a reader would, against the live stack and real
simulators. The few that would disturb the shared stack (`stack down`) run in
tests/test_stack_lifecycle.py on an isolated second stack; COVERED_ELSEWHERE names them, and
a README command that is in neither place fails the walkthrough.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otbridge.cli import build_parser
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


def wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def test_every_readme_otbridge_command_parses() -> None:
    commands = readme_commands()
    assert len(commands) >= 5
    parser = build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command))  # exits (fails the test) if it does not parse


@pytest.mark.timeout(900)
def test_readme_walkthrough(live_stack: Settings) -> None:
    """Run the README's commands in order; background ones are stopped at the end."""
    background: list[tuple[str, subprocess.Popen[str]]] = []
    ran: list[str] = []
    try:
        for command in readme_commands():
            if command in COVERED_ELSEWHERE:
                continue
            args = shlex.split(command)
            if command.startswith(LONG_RUNNING):
                proc = subprocess.Popen([sys.executable, "-m", "otbridge.cli", *args], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
                background.append((command, proc))
                if command == "sim modbus":
                    wait_port(5020)
                elif command == "sim opcua":
                    wait_port(4840)
                time.sleep(2)
                assert proc.poll() is None, f"`otbridge {command}` exited: {proc.stdout.read()}"
                ran.append(command)
                continue
            if args[0] == "tail":
                args += TAIL_IDLE
            if args[0] == "topics":
                wait_for_readings(live_stack)
            result = cli(args)
            assert result.returncode == 0, f"`otbridge {command}`:\n{result.stderr[-3000:]}"
            check_output(command, result.stdout, live_stack)
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


def check_output(command: str, stdout: str, settings: Settings) -> None:
    """What each command must have printed, beyond exiting 0."""
    if command == "jobs list":
        assert "otbridge-oee" in stdout and "RUNNING" in stdout, stdout
    elif command == "topics":
        assert settings.topics.readings in stdout, stdout
    elif command.startswith("tail") and "--json" in command:
        for line in stdout.splitlines():
            json.loads(line)
    elif command == "stack status --json":
        assert all(part["healthy"] for part in json.loads(stdout).values())
    elif command.startswith("jobs submit"):
        assert re.search(r"[0-9a-f]{32}", stdout), stdout
