"""The processes a stage starts (load servers, simulators, connectors): started in a session of
their own, ready when their port accepts connections (asked, not slept for), and stopped by
process group, exactly what was started and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from otbridge.errors import OtbridgeError
from otbridge.net import port_open

Say = Callable[[str], None]  # where a stage reports progress
READY_TIMEOUT_S = 120.0  # a ceiling only: readiness is asked for, so a loaded machine just waits


@dataclass
class Child:
    """A process this benchmark started, with the log its output goes to."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            where = f"; see {self.log}" if self.log else ""
            raise OtbridgeError(f"{self.name} exited with code {self.proc.returncode}{where}")

    def wait_listening(self, port: int, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return once 127.0.0.1:`port` accepts connections; fail as soon as the process ends."""
        deadline = time.monotonic() + timeout_s
        while not port_open(port):
            self.check_alive()
            if time.monotonic() > deadline:
                raise OtbridgeError(f"{self.name} (pid {self.pid}) did not listen on {port} "
                                    f"within {timeout_s:.0f} s")
            time.sleep(0.1)

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """SIGTERM to its process group (it and whatever it started), SIGKILL after timeout_s."""
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout_s)


def python_module(module: str, *args: str) -> list[str]:
    """`python -m module args` with this interpreter (bench and otbridge are installed in it)."""
    return [sys.executable, "-m", module, *args]


def otbridge_cli(*args: str) -> list[str]:
    return python_module("otbridge.cli", *args)


def start(name: str, argv: Sequence[str], *, log: Path | None = None,
          stderr: IO[str] | None = None) -> Child:
    """Start `argv` in a session of its own; output to `log` (appended) if given."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    else:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)
    return Child(name, proc, log)


@contextmanager
def serving(name: str, argv: Sequence[str], port: int, *,
            timeout_s: float = READY_TIMEOUT_S) -> Iterator[Child]:
    """A load server: started, waited for until it listens on `port`, stopped afterwards."""
    child = start(name, argv)
    try:
        child.wait_listening(port, timeout_s=timeout_s)
        yield child
    finally:
        child.stop()
