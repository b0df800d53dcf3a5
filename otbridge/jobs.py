"""Submit PyFlink jobs to a Flink cluster and manage them through its REST API."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

import jobs as jobs_package
from otbridge import errors
from otbridge.errors import ConfigError, OtbridgeError
from otbridge.settings import Settings, config_file
from otbridge.stack.components import Flink

#: the installed jobs package (one folder per job); shipped to the cluster with `-pyfs`
JOBS_DIR = Path(jobs_package.__file__).resolve().parent
#: an OtbridgeError a job raised while the Flink client built it, as the client prints it
JOB_ERROR = re.compile(r"^otbridge\.errors\.(?P<kind>\w+): (?P<message>.+)$", re.M)
TERMINAL = {"FINISHED", "FAILED", "CANCELED"}


def available() -> list[str]:
    return sorted(p.parent.name for p in JOBS_DIR.glob("*/job.py"))


def job_path(name: str) -> Path:
    path = JOBS_DIR / name / "job.py"
    if not path.is_file():
        raise ConfigError(f"no job named {name!r}; valid: {', '.join(available())}")
    return path


def submit(
    settings: Settings,
    name: str,
    *,
    jobmanager: str | None = None,
    parallelism: int | None = None,
    job_args: Sequence[str] = (),
    flink_conf: dict[str, str] | None = None,
) -> str:
    """Submit jobs/<name>/job.py, detached; returns the Flink job id.

    flink_conf: configuration for this job only (e.g. execution.checkpointing.interval).

    Against the local stack the connector jars are already on the cluster's classpath; against
    any other cluster they are shipped with the job (pipeline.jars).
    """
    job_path(name)  # validates the name
    job_args = client_args(name, job_args)
    rest = urlparse(settings.flink.rest_url)
    target = jobmanager or f"{rest.hostname}:{rest.port or 8081}"
    flink = Flink(settings)
    local = target == f"{settings.stack.host}:{settings.stack.flink_rest_port}"
    cmd = [
        "bash", flink.script("flink"), "run", "--detached",
        "--jobmanager", target,
        "-pyclientexec", sys.executable,
        "-pyexec", sys.executable,
        "-pyfs", str(JOBS_DIR),
        "-pym", f"jobs.{name}.job",
    ]
    if parallelism:
        cmd[3:3] = ["--parallelism", str(parallelism)]
    for key, value in (flink_conf or {}).items():
        cmd[3:3] = ["-D", f"{key}={value}"]
    if not local:
        jars = sorted((settings.stack.lib_dir / "flink").glob("*.jar"))
        cmd[3:3] = ["-D", "pipeline.jars=" + ";".join(f"file://{j}" for j in jars)]
    flink.prepare_client()
    # the client runs in the stack's Flink folder: `python -m` puts its working directory
    # first on sys.path, where a folder named jobs/ must not shadow the installed package
    result = subprocess.run(
        [*cmd, *job_args], capture_output=True, text=True,
        env={**flink.env(), **client_settings_env(settings)}, cwd=flink.home,
    )
    output = result.stdout + result.stderr
    match = re.search(r"JobID ([0-9a-f]{32})", output)
    if result.returncode != 0 or not match:
        mistake = JOB_ERROR.search(output)
        if mistake:
            # the same kind of error (and exit code), e.g. StackError for a missing UDF jar
            found = getattr(errors, mistake["kind"], None)
            kind: type[OtbridgeError] = OtbridgeError
            if isinstance(found, type) and issubclass(found, OtbridgeError) and (
                    found.__init__ is OtbridgeError.__init__):
                kind = found
            raise kind(f"job {name!r}: {mistake['message']}")
        tail = "\n".join(output.splitlines()[-40:])
        raise OtbridgeError(f"submitting job {name!r} to {target} failed:\n{tail}")
    return match.group(1)


def client_settings_env(settings: Settings) -> dict[str, str]:
    """These settings for the job's client, which loads them again in another directory: the
    state and lib folders as absolute paths, the settings file by its absolute path."""
    env = {
        "OTBRIDGE_STACK__STATE_DIR": str(settings.stack.state_dir),
        "OTBRIDGE_STACK__LIB_DIR": str(settings.stack.lib_dir),
    }
    if config_file().is_file():
        env["OTBRIDGE_CONFIG"] = str(config_file().absolute())
    return env


def client_args(name: str, job_args: Sequence[str]) -> list[str]:
    """The job's arguments as its Flink client needs them: a job module may check them here,
    in this process, first (`client_args(args)`: a mistake is reported at once, in one line,
    and file names are made absolute, since the client runs in another directory)."""
    module = importlib.import_module(f"jobs.{name}.job")
    check = getattr(module, "client_args", None)
    return list(check(job_args)) if check else list(job_args)


def rest_url(settings: Settings, jobmanager: str | None = None) -> str:
    return f"http://{jobmanager}" if jobmanager else settings.flink.rest_url


_rest = rest_url


def list_jobs(settings: Settings, jobmanager: str | None = None) -> list[dict[str, Any]]:
    resp = httpx.get(f"{_rest(settings, jobmanager)}/jobs/overview", timeout=10)
    resp.raise_for_status()
    jobs: list[dict[str, Any]] = resp.json()["jobs"]
    return sorted(jobs, key=lambda j: j["start-time"])


def job(settings: Settings, job_id: str, jobmanager: str | None = None) -> dict[str, Any]:
    resp = httpx.get(f"{_rest(settings, jobmanager)}/jobs/{job_id}", timeout=10)
    resp.raise_for_status()
    detail: dict[str, Any] = resp.json()
    return detail


def cancel(settings: Settings, name_or_id: str, jobmanager: str | None = None) -> list[str]:
    """Cancel running jobs whose id is name_or_id or whose name is otbridge-<name_or_id>."""
    wanted = {name_or_id, f"otbridge-{name_or_id}"}
    ids = [
        j["jid"]
        for j in list_jobs(settings, jobmanager)
        if j["state"] not in TERMINAL and (j["jid"] in wanted or j["name"] in wanted)
    ]
    for jid in ids:
        resp = httpx.patch(
            f"{_rest(settings, jobmanager)}/jobs/{jid}", params={"mode": "cancel"}, timeout=10
        )
        resp.raise_for_status()
    return ids


def wait_for_state(
    settings: Settings, job_id: str, states: set[str], *, timeout_s: float = 120
) -> str:
    """Wait until the job is in one of `states`; fail early if it ends in another."""
    deadline = time.monotonic() + timeout_s
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        state = job(settings, job_id)["state"]
        if state in states:
            return state
        if state in TERMINAL:
            break
        time.sleep(0.5)
    exc = _root_exception(settings, job_id)
    raise OtbridgeError(f"job {job_id} is {state}, expected {sorted(states)}{exc}")


def _root_exception(settings: Settings, job_id: str) -> str:
    try:
        resp = httpx.get(f"{settings.flink.rest_url}/jobs/{job_id}/exceptions", timeout=10)
        root = resp.json().get("exceptionHistory", {}).get("entries", [])
        return f"\n{root[0]['stacktrace'][:3000]}" if root else ""
    except (httpx.HTTPError, ValueError, KeyError):
        return ""
