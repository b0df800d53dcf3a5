"""Fetch the stack's Java artifacts from Maven Central with `mvn`, once (and build the jobs'
Java functions, otbridge.udf)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from otbridge.errors import StackError
from otbridge.udf import build_udf

POM = Path(__file__).with_name("pom.xml")


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
