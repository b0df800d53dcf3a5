"""What store and forward costs: the Modbus connector of today against the one of the last
commit before it (`BEFORE_STORE`), the same load, one bench run.

    python -m bench.baseline --duration 20

The earlier connector runs from a git worktree of that commit (its own `bench.load_modbus`,
this interpreter and its packages), against the same Kafka and registry; today's right after
it. The ratio is today's sustained readings/s over the earlier one's; issue #11's target is a
cost of at most 20 % (a ratio of at least 0.80). Needs the checkout's git history.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from otbridge.errors import OtbridgeError
from otbridge.settings import Settings, load_settings

#: the last commit whose connector sent straight to the producer (no store on disk)
BEFORE_STORE = "ed7138d"
COST_TARGET = 0.80  # today / before, at least
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Baseline:
    before: float  # sustained readings/s at BEFORE_STORE
    today: float
    today_cores: float

    @property
    def ratio(self) -> float:
        return self.today / self.before


def modbus_at(commit: str, settings: Settings, duration_s: float) -> float:
    """Sustained readings/s of `commit`'s Modbus connector bench (its default load)."""
    if not (ROOT / ".git").exists():
        raise OtbridgeError(f"{ROOT} is not a git checkout: the connector at {commit} is not "
                            "at hand")
    with tempfile.TemporaryDirectory(prefix="otbridge-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                        commit], check=True, capture_output=True, timeout=120)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree),
                   "OTBRIDGE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                   "OTBRIDGE_REGISTRY__URL": settings.registry.url}
            env.pop("OTBRIDGE_CONFIG", None)
            done = subprocess.run(
                [sys.executable, "-m", "bench.load_modbus", "--duration", str(duration_s)],
                cwd=tree, env=env, capture_output=True, text=True,
                timeout=duration_s + 240)  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], capture_output=True, timeout=60)
    found = re.search(r"sustained (\d+) readings/s", done.stdout)
    if done.returncode != 0 or found is None:
        raise OtbridgeError(f"the connector bench at {commit} failed (exit {done.returncode}):"
                            f" {(done.stderr or done.stdout)[-500:]}")
    return float(found.group(1))


def run_baseline(settings: Settings, duration_s: float = 20.0) -> Baseline:
    from bench import load_modbus

    before = modbus_at(BEFORE_STORE, settings, duration_s)
    run = load_modbus.run_bench(settings, duration_s=duration_s)
    if run.exit_code != 0:
        raise OtbridgeError(f"the connector exited {run.exit_code}: {run.log_tail[-3:]}")
    return Baseline(before, run.rate, run.cores)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args(argv)
    b = run_baseline(load_settings(), args.duration)
    print(f"Modbus connector, 4 devices x 500 registers: {b.before:,.0f} readings/s at "
          f"{BEFORE_STORE} (no store), {b.today:,.0f} readings/s today through the store on "
          f"disk ({b.today_cores:.2f} cores); ratio {b.ratio:.3f} (target >= {COST_TARGET}: "
          f"{'met' if b.ratio >= COST_TARGET else 'MISSED'}; cost {1 - b.ratio:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
