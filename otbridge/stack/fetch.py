"""Fetch the stack's Java artifacts from Maven Central with `mvn`, once."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from otbridge import PROJECT_ROOT
from otbridge.errors import StackError

POM = Path(__file__).with_name("pom.xml")
UDF_PROJECT = PROJECT_ROOT / "jobs" / "udf"
UDF_JAR = "otbridge-flink-udf.jar"


def udf_jar(lib_dir: Path) -> Path:
    """The jobs' Java functions (jobs/udf), as built by `build_udf`."""
    return lib_dir / "udf" / UDF_JAR


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


def fetch(lib_dir: Path, *, quiet: bool = False) -> bool:
    """Lay out Kafka, Apicurio, the Flink connector jars and the jobs' Java functions under
    lib_dir.

    Idempotent: skipped when lib_dir was filled from the same pom. Returns True if it fetched.
    """
    built = build_udf(lib_dir, quiet=quiet)
    stamp = lib_dir / ".pom.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        return built
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("`mvn` is not on PATH: install Apache Maven (e.g. apt-get install maven)")
    if not quiet:
        print(f"fetching Kafka, Apicurio Registry and Flink connector jars with mvn -> {lib_dir}")
    for sub in ("kafka", "flink", "registry"):
        shutil.rmtree(lib_dir / sub, ignore_errors=True)
    lib_dir.mkdir(parents=True, exist_ok=True)
    cmd = [mvn, "-B", "-q", "-f", str(POM), f"-Dstack.dir={lib_dir}", "package"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise StackError(f"fetching the stack's Java artifacts failed ({' '.join(cmd)}):\n{tail}")
    stamp.write_text(digest)
    if not quiet:
        print("fetched.", file=sys.stderr)
    return True


def pom_property(name: str) -> str:
    """A version pinned in the pom's <properties> (the single place Java versions live)."""
    import xml.etree.ElementTree as ET

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find(f"m:properties/m:{name}", ns)
    if node is None or not node.text:
        raise StackError(f"{POM} has no <{name}> property")
    return node.text.strip()
