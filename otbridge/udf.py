"""The jobs' Java functions (jobs/udf): built with `mvn` by `otbridge stack fetch` / `stack up`.

A job never builds them: it finds the jar in the stack's lib folder or stops with an error that
names the command to run.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import jobs
from otbridge.errors import StackError

#: the Maven project (installed with the jobs package, so a wheel can build it too)
UDF_PROJECT = Path(jobs.__file__).resolve().parent / "udf"
UDF_JAR = "otbridge-flink-udf.jar"


def udf_jar(lib_dir: Path) -> Path:
    """Where `build_udf` puts the jar."""
    return lib_dir / "udf" / UDF_JAR


def built_udf_jar(lib_dir: Path) -> Path:
    """The built jar; a StackError naming `otbridge stack fetch` if there is none."""
    jar = udf_jar(lib_dir)
    if not jar.is_file():
        raise StackError(
            f"the jobs' Java functions are not built ({jar} is missing): run "
            "`otbridge stack fetch` (or `otbridge stack up`, which fetches what is missing)"
        )
    return jar


def build_udf(lib_dir: Path, *, quiet: bool = False) -> bool:
    """Build jobs/udf with `mvn package` into lib_dir/udf; skipped when the sources have not
    changed since the last build. Returns True if it built."""
    sources = [UDF_PROJECT / "pom.xml", *sorted((UDF_PROJECT / "src").rglob("*.java"))]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    jar = udf_jar(lib_dir)
    stamp = jar.with_suffix(".sha256")
    if jar.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("`mvn` is not on PATH: install Apache Maven (e.g. apt-get install maven)")
    if not quiet:
        print(f"building the jobs' Java functions (jobs/udf) with mvn -> {jar}", file=sys.stderr)
    build_dir = lib_dir / "udf" / "build"
    cmd = [mvn, "-B", "-q", "-f", str(UDF_PROJECT / "pom.xml"),
           f"-Dudf.build.dir={build_dir}", "package"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise StackError(f"building jobs/udf failed ({' '.join(cmd)}):\n{tail}")
    jar.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(build_dir / UDF_JAR, jar)
    stamp.write_text(digest)
    return True
