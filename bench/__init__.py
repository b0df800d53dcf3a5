"""`otbridge bench [STAGE ...] [--quick]`:

Measured throughput and latency of every stage of
otbridge, side by side with the alternatives. Figures, not assertions: a target that is missed
is printed as missed. Needs the local stack up (`otbridge stack up`).
The stages, in the order they run:

    producer      Kafka's own kafka-producer-perf-test at the Reading's size (the ceiling)
    connector     one Modbus / one OPC UA connector process into Kafka, CPU per 10k readings
    jobs          each job on a preloaded backlog (10,000 keys, 3 partitions, out of order,
                  BAD and poison records), parallelism 1 and 2, readings/s and CPU
    alternatives  a plain Python consumer script and Quix Streams doing the downsample job
    latency       reading -> alert time at a steady load, p50/p95/p99
    scale         downsample throughput at 100, 10k and 100k distinct keys
    demo          `otbridge demo` on a stack of its own: the command -> the first OEE figure
    memory        RSS of that whole demo, every process (stack, Flink client, plant, watcher)
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict

from bench.common import Context, Result, table
from otbridge.settings import Settings

# stage -> (module, function); modules are imported when their stage runs
STAGES: dict[str, tuple[str, str]] = {  # `otbridge bench STAGE` (bench/cli.py)
    "producer": ("bench.ingest", "stage_producer"),
    "connector": ("bench.ingest", "stage_connector"),
    "jobs": ("bench.backlog", "stage_jobs"),
    "alternatives": ("bench.alternatives", "stage_alternatives"),
    "latency": ("bench.latency", "stage_latency"),
    "scale": ("bench.backlog", "stage_scale"),
    "demo": ("bench.demo", "stage_demo"),
    "memory": ("bench.memory", "stage_memory"),
}
QUICK_READINGS = 20_000
FULL_READINGS = 1_000_000
FULL_REPEAT = 3  # runs per job figure: the median and the spread are reported


def stage_function(name: str) -> Callable[[Context], list[Result]]:
    module, function = STAGES[name]
    fn: Callable[[Context], list[Result]] = getattr(importlib.import_module(module), function)
    return fn


def main(settings: Settings, *, stages: list[str], quick: bool, readings: int | None,
         out_json: str | None, out_md: str | None = None, repeat: int | None = None) -> int:
    ctx = Context(settings, quick, readings or (QUICK_READINGS if quick else FULL_READINGS),
                  repeat or (1 if quick else FULL_REPEAT))
    stages = stages or list(STAGES)
    print(f"bench: stages {', '.join(stages)}; {ctx.readings:,} backlog readings; "
          f"{os.cpu_count()} cores; Python {platform.python_version()}"
          f"; {ctx.repeat} run(s) per job figure{'; quick' if quick else ''}", flush=True)
    results: list[Result] = []
    failed: list[str] = []
    for name in stages:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            results.extend(stage_function(name)(ctx))
        except Exception as exc:  # a broken stage is reported; the others still run
            failed.append(name)
            print(f"bench: stage {name} failed: {type(exc).__name__}: {exc}", flush=True)
        print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    md = table(results)
    print(md)
    if out_md:
        with open(out_md, "w") as fh:
            fh.write(md + "\n")
    if out_json:
        with open(out_json, "w") as fh:
            json.dump({"results": [asdict(r) for r in results], "failed_stages": failed,
                       "quick": quick, "cores": os.cpu_count()}, fh, indent=2)
    if failed:
        print(f"bench: failed stages: {', '.join(failed)}")
        return 1
    return 0
