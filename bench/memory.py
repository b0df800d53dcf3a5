"""memory: the resident memory of the whole demo, every process of it: Kafka, the registry, the
JobManager and TaskManager, the Flink client that plans the jobs, the simulators, the
connectors and the demo's own process (the watcher).

Measured on the real `otbridge demo` runs of bench/demo.py (made once for both stages: the
`demo` stage's runs if it ran first), on a stack of their own, so that no one else's jobs sit
in the TaskManager. VmRSS of every process and its descendants is sampled every half second;
the figure is the largest sum of one sample (the Flink client runs while the stack starts, so
its peak is in it). VmRSS counts pages shared between processes once per process: an upper
bound.
"""

from __future__ import annotations

from bench.common import Context, Result, at_most
from bench.demo import (
    DEMO_PARTS,
    FULL_DURATION_S,
    GIB,
    QUICK_DURATION_S,
    SAMPLE_S,
    demo_runs,
    gib,
)

__all__ = ["DEMO_PARTS", "TARGET_GIB", "stage_memory"]
TARGET_GIB = 4.0


def stage_memory(ctx: Context) -> list[Result]:
    runs = demo_runs(ctx)
    worst = max(runs, key=lambda r: r.peak_total)
    value = round(worst.peak_total / GIB, 2)
    steady = sum(u.rss for u in worst.steady.values())
    target = at_most(TARGET_GIB, "GiB")
    note = (f"RSS GiB per part at the peak (process + descendants): {gib(worst.at_peak)}; "
            f"each part's own largest: {gib(worst.largest)}; before teardown "
            f"{steady / GIB:.2f} GiB: {gib(worst.steady)}")
    if not target.met_by(value):
        biggest = max(worst.at_peak.items(), key=lambda kv: kv[1].rss)
        note += f". Missed: the biggest part is {biggest[0]}"
    print(f"  peak RSS {value:.2f} GiB ({gib(worst.at_peak)})", flush=True)
    return [Result("memory", "whole demo RSS, peak (stack + Flink client + simulators + "
                   "connectors + watcher)", value, "GiB", seconds=worst.seconds, target=target,
                   runs=len(runs), note=note,
                   settings={"sample_s": SAMPLE_S,
                             "duration_s": QUICK_DURATION_S if ctx.quick else FULL_DURATION_S})]
