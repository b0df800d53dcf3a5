"""`otbridge bench`: registered into the product's CLI when the harness is installed beside it."""

from __future__ import annotations

import argparse
from typing import Any

from otbridge.errors import OtbridgeError
from otbridge.settings import Settings


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    import bench

    stages = list(bench.STAGES)
    unknown = [s for s in args.stages if s not in stages]
    if unknown:
        raise OtbridgeError(f"bench: unknown stage {', '.join(unknown)}; valid stages: "
                            f"{', '.join(stages)}")
    if args.repeat is not None and args.repeat < 1:
        raise OtbridgeError(f"bench: --repeat must be at least 1, not {args.repeat}")
    return bench.main(settings, stages=args.stages, quick=args.quick, readings=args.readings,
                      out_json=args.json, out_md=args.markdown, repeat=args.repeat)


def register(sub: Any) -> None:
    """Add `bench` to the main CLI's subparsers."""
    import bench

    stages = list(bench.STAGES)
    bench_p = sub.add_parser(
        "bench", help="measure throughput and latency of every stage",
        description=(bench.__doc__ or "").split("\n\n", 1)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_p.add_argument("stages", nargs="*", metavar="STAGE",
                         help=f"one or more of: {', '.join(stages)} (default: all)")
    bench_p.add_argument("--quick", action="store_true",
                         help="a small version of every stage (minutes, not an hour)")
    bench_p.add_argument("--readings", type=int, metavar="N",
                         help="backlog size (default 1,000,000; 20,000 with --quick)")
    bench_p.add_argument("--repeat", type=int, metavar="N",
                         help="runs per job and alternative figure; the table shows their "
                              "median and min-max (default 3; 1 with --quick)")
    bench_p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench_p.add_argument("--markdown", metavar="FILE", help="also write the markdown table")
    bench_p.set_defaults(handler=cmd_bench)
