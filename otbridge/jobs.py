"""Submit PyFlink jobs to a Flink cluster and manage them through its REST API."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

import jobs as jobs_package
from otbridge import errors
from otbridge.errors import ConfigError, OtbridgeError
from otbridge.flinkjob import FAILED, SUBMITTED
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
    replace: bool = False,
) -> str:
    """Submit jobs/<name>/job.py, detached; returns the Flink job id.

    flink_conf: configuration for this job only (e.g. execution.checkpointing.interval).
    A job of the same Flink name (otbridge-<name><--name-suffix>) still running is refused:
    two would share a consumer group and a transactional id (each fencing the other's
    transactions); `replace` cancels it first.

    Against the local stack the connector jars are already on the cluster's classpath; against
    any other cluster they are shipped with the job (pipeline.jars).
    """
    job_path(name)  # validates the name
    what = f"job {name!r}"
    flink_name = flink_job_name(name, job_args)
    running = [j["jid"] for j in list_jobs(settings, jobmanager)
               if j["name"] == flink_name and j["state"] not in TERMINAL]
    if running and not replace:
        raise OtbridgeError(
            f"job {flink_name!r} is already running (id {', '.join(running)}); a second one "
            "would share its consumer group and transactional id. Cancel it (`otbridge jobs "
            f"cancel {running[0]}`), submit with --replace, or give this one --name-suffix")
    for jid in running:  # --replace: the old one gone first (its checkpoint is retained)
        cancel(settings, jid, jobmanager)
        deadline = time.monotonic() + 60
        while job(settings, jid, jobmanager)["state"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise OtbridgeError(f"job {jid} did not stop within 60 s of being cancelled")
            time.sleep(0.5)
    run = _flink_run(settings, f"jobs.{name}.job", client_args(name, job_args),
                     jobmanager=jobmanager, parallelism=parallelism, flink_conf=flink_conf)
    match = re.search(r"JobID ([0-9a-f]{32})", run.output)
    if not run.ok or not match:
        raise _client_error(run.output, what, run.target)
    remember(settings, {match.group(1): _job_name(settings, match.group(1), jobmanager)})
    return match.group(1)


# --- retained checkpoints: a job resumed after its cluster was restarted -----------------

def _submitted_file(settings: Settings) -> Path:
    return Flink(settings).home / "submitted.json"


def _job_name(settings: Settings, job_id: str, jobmanager: str | None) -> str:
    try:
        return str(job(settings, job_id, jobmanager)["name"])
    except (httpx.HTTPError, KeyError):
        return ""


def remember(settings: Settings, names: Mapping[str, str]) -> None:
    """Record job id -> Flink job name (e.g. otbridge-oee) of jobs submitted from here: after
    the JobManager is gone, its retained checkpoints are found by the job's name."""
    path = _submitted_file(settings)
    known: dict[str, str] = {}
    with suppress(OSError, ValueError):
        known = dict(json.loads(path.read_text()))
    known.update({jid: name for jid, name in names.items() if name})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=1))
    tmp.replace(path)


def latest_checkpoint(settings: Settings, job_name: str) -> Path | None:
    """The newest completed checkpoint (a chk-N folder with its _metadata) that the local
    cluster retained of any job named `job_name` that was submitted from here."""
    with suppress(OSError, ValueError):
        known = dict(json.loads(_submitted_file(settings).read_text()))
        base = Flink(settings).home / "checkpoints"
        found = [meta.parent for jid, name in known.items() if name == job_name
                 for meta in (base / jid).glob("chk-*/_metadata")]
        if found:
            return max(found, key=lambda chk: chk.stat().st_mtime)
    return None


def flink_job_name(name: str, job_args: Sequence[str]) -> str:
    """The Flink job name `flinkjob.main` gives job `name` with these arguments."""
    suffix = ""
    for i, arg in enumerate(job_args):
        if arg.startswith("--name-suffix="):
            suffix = arg.split("=", 1)[1]
        elif arg == "--name-suffix" and i + 1 < len(job_args):
            suffix = job_args[i + 1]
    return f"otbridge-{name}{suffix}"


def resume_conf(settings: Settings, name: str, job_args: Sequence[str]) -> dict[str, str]:
    """The Flink setting that starts job `name` from its latest retained checkpoint."""
    job_name = flink_job_name(name, job_args)
    chk = latest_checkpoint(settings, job_name)
    if chk is None:
        raise ConfigError(
            f"--resume: no retained checkpoint of job {job_name!r} in "
            f"{Flink(settings).home / 'checkpoints'} (only jobs submitted to the local stack "
            "from here are found); submit without --resume to start it afresh")
    return {"execution.state-recovery.path": f"file://{chk}"}


def submit_many(
    settings: Settings,
    job_args: Mapping[str, Sequence[str]],
    *,
    jobmanager: str | None = None,
    parallelism: int | None = None,
    flink_conf: dict[str, str] | None = None,
    on_client: Callable[[ClientRun], None] | None = None,
) -> dict[str, str]:
    """Submit several jobs (name -> its arguments) from one Flink client, detached, each a
    Flink job of its own; returns name -> job id, in the order given.

    One client JVM plans them all, so its start-up and warm-up are paid once (on 2 cores that
    is most of the time `submit` takes per job). All are built before any is submitted: a
    mistake in one submits none. flink_conf and parallelism apply to every one of them.
    on_client: told how the client ran (e.g. its CPU time), whether it succeeded or not.
    """
    for name in job_args:
        job_path(name)  # validates every name first
    specs = [(name, client_args(name, args)) for name, args in job_args.items()]
    if not specs:
        return {}
    what = "jobs " + ", ".join(repr(name) for name, _ in specs)
    run = _flink_run(settings, "otbridge.flinkjob", [json.dumps(specs)],
                     jobmanager=jobmanager, parallelism=parallelism, flink_conf=flink_conf)
    if on_client:
        on_client(run)
    ok, output = run.ok, run.output
    ids = submitted(output)
    missing = [name for name, _ in specs if name not in ids]
    if not ok or missing:
        for job_id in ids.values():  # all or none: what was submitted before is cancelled
            with suppress(httpx.HTTPError):
                cancel(settings, job_id, jobmanager)
        failed = re.search(rf"^{FAILED} (\S+)$", output, re.M)
        if failed:
            what = f"job {failed[1]!r}"
        if ok:
            raise OtbridgeError(f"submitting {what}: no job id for {', '.join(missing)} in "
                                "the client's output:\n" + _tail(output))
        raise _client_error(output, what, run.target)
    result = {name: ids[name] for name, _ in specs}
    remember(settings, {jid: _job_name(settings, jid, jobmanager) for jid in result.values()})
    return result


def submitted(output: str) -> dict[str, str]:
    """name -> job id, from the lines `flinkjob.run_jobs` prints."""
    pattern = rf"^{SUBMITTED} (\S+) ([0-9a-f]{{32}})$"
    return {m[1]: m[2] for m in re.finditer(pattern, output, re.M)}


def _tail(output: str, lines: int = 40) -> str:
    return "\n".join(output.splitlines()[-lines:])


@dataclass(frozen=True)
class ClientRun:
    """One `flink run`: whether it succeeded, its output (stdout and stderr), the JobManager
    it was given, its wall time and the CPU time of the client and all it started."""

    ok: bool
    output: str
    target: str
    wall_s: float
    cpu_s: float


def _flink_run(settings: Settings, module: str, program_args: Sequence[str], *,
               jobmanager: str | None, parallelism: int | None,
               flink_conf: dict[str, str] | None) -> ClientRun:
    """`flink run --detached -pym module program_args` against the cluster."""
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
        "-pym", module,
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
    started = time.monotonic()
    proc = subprocess.Popen(
        [*cmd, *program_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL, env={**flink.env(), **client_settings_env(settings)},
        cwd=flink.home,
    )
    assert proc.stdout is not None
    with proc.stdout:
        output = proc.stdout.read()
    # wait4: the client's CPU time, its JVM's and the Python's it ran included
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ClientRun(proc.returncode == 0, output, target, time.monotonic() - started,
                     usage.ru_utime + usage.ru_stime)


def _client_error(output: str, what: str, target: str) -> OtbridgeError:
    """A failed client's error: a job's own OtbridgeError as the same kind, anything else with
    the tail of the client's output."""
    mistake = JOB_ERROR.search(output)
    if mistake:
        # the same kind of error (and exit code), e.g. StackError for a missing UDF jar
        found = getattr(errors, mistake["kind"], None)
        kind: type[OtbridgeError] = OtbridgeError
        if isinstance(found, type) and issubclass(found, OtbridgeError) and (
                found.__init__ is OtbridgeError.__init__):
            kind = found
        return kind(f"{what}: {mistake['message']}")
    return OtbridgeError(f"submitting {what} to {target} failed:\n{_tail(output)}")


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
