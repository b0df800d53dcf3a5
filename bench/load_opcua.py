"""Benchmark: sustained data changes/s of one OPC UA connector process into Kafka.

    python -m bench.load_opcua --variables 2000 --interval-s 0.05 --duration 20

Starts an asyncua server (its own process) with `--variables` Double variables under
Objects/Bench, every one of them written with a new value and source timestamp every
`--interval-s` (so the server offers variables / interval changes per second), runs
`otbridge connect opcua` (one process) subscribed to all of them (`--publishing-interval-s`,
sampling interval `--sampling-interval-s`), then counts what reached Kafka. Uses a fresh
topic `bench.readings.<id>`; the local stack must be up. `run_bench` is the same as a
function (`otbridge bench connector` calls it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.ingest import ConnectorRun, report_exit, run_against_server
from bench.procs import python_module
from otbridge.net import free_port
from otbridge.settings import Settings, load_settings

NAMESPACE = "urn:otbridge:bench"
ASSET = "acme/bench/area/line1/cell{group}"
PER_ASSET = 100  # variables per asset


async def serve(port: int, variables: int, interval_s: float, report: Path | None) -> None:
    """Write every variable every `interval_s` until SIGTERM; then write the achieved rate
    (changes/s, from the first write to the last) to `report`."""
    from datetime import UTC, datetime

    from asyncua import Server, ua
    from asyncua.server.monitored_item_service import MonitoredItemValues

    logging.getLogger("asyncua").setLevel(logging.ERROR)

    def keep(self: MonitoredItemValues, value: ua.DataValue) -> None:
        self.old_dvalue, self.current_dvalue = self.current_dvalue, value

    # asyncua deep-copies every written value once per monitored item ("to prevent
    # referencing the inner value"), two thirds of this server's CPU; the values written
    # here are fresh objects never touched again, so keeping a reference is the same. Only
    # this benchmark server does it: the aim is a server that outruns the one connector.
    MonitoredItemValues.set_current_datavalue = keep  # type: ignore[method-assign,assignment]
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NAMESPACE)
    if idx != 2:  # the connector's config addresses the variables as ns=2
        raise RuntimeError(f"namespace {NAMESPACE} got index {idx}, expected 2")
    folder = await server.nodes.objects.add_object(idx, "Bench")
    nodes = []
    for i in range(variables):
        node = await folder.add_variable(ua.NodeId(f"v{i}", idx), f"v{i}", 0.0)  # type: ignore[arg-type]
        nodes.append(node.nodeid)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    double, good = ua.VariantType.Double, ua.StatusCode(ua.StatusCodes.Good)  # type: ignore[arg-type]
    writes, first, last = 0, 0.0, 0.0
    async with server:
        tick = 0
        next_tick = loop.time()
        while not stopped.is_set():
            tick += 1
            now = datetime.now(UTC)
            for i, nodeid in enumerate(nodes):
                value = ua.DataValue(
                    Value=ua.Variant(float(tick * 1000 + i % 1000), double),
                    StatusCode=good,
                    SourceTimestamp=now,  # type: ignore[arg-type]
                    ServerTimestamp=now,  # type: ignore[arg-type]
                )
                await server.write_attribute_value(nodeid, value)
                if i % 100 == 99:  # let publishing and the connection keep up
                    await asyncio.sleep(0)
            writes += variables
            last = time.monotonic()
            first = first or last
            next_tick = max(next_tick + interval_s, loop.time())  # overran: no burst
            try:
                await asyncio.wait_for(stopped.wait(), next_tick - loop.time())
            except TimeoutError:
                pass
    if report is not None:
        rate = (writes - variables) / (last - first) if last > first else 0.0
        report.write_text(f"{rate}\n")


def config(
    port: int, topic: str, variables: int, publishing_s: float, sampling_s: float,
    queue_size: int = 1,
) -> dict[str, object]:  # fmt: skip
    return {
        "connector_id": "bench",
        "topic": topic,
        "stats_interval_s": 5,
        "devices": [
            {
                "name": "bench",
                "endpoint": f"opc.tcp://127.0.0.1:{port}/",
                "publishing_interval_s": publishing_s,
                "timeout_s": 10.0,
                "tags": [
                    {
                        "asset": ASSET.format(group=i // PER_ASSET),
                        "tag": f"v{i}",
                        "node_id": f"ns=2;s=v{i}",
                        "sampling_interval_s": sampling_s,
                        "queue_size": queue_size,
                        "unit": "degC",
                    }
                    for i in range(variables)
                ],
            }
        ],
    }


def run_bench(
    settings: Settings,
    *,
    variables: int = 2000,
    interval_s: float = 0.05,
    publishing_interval_s: float = 0.05,
    sampling_interval_s: float = 0.01,
    queue_size: int = 1,
    duration_s: float = 20.0,
) -> ConnectorRun:
    """Serve `variables` changing every `interval_s`, run one connector process subscribed to
    them for `duration_s` into a fresh topic; the figures (sustained changes/s, CPU) are
    measured by bench.ingest.run_connector_process; `offered` is the server's
    achieved write rate.

    `queue_size` 1 (OPC UA's default; the connector's is 10): a server whose connector falls
    behind sends each variable's latest value, so a publish response holds at most one
    change per variable. With 10, a connector that falls behind gets ten times bigger
    responses, which asyncua decodes in one go on the event loop; the connector's
    connection watchdog (a read every second, one second to answer) then times out and it
    reconnects, and the figure measures that collapse, not the connector."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "offered"
        server = python_module("bench.load_opcua", "--serve", str(port), "--variables",
                               str(variables), "--interval-s", str(interval_s),
                               "--report", str(report))
        run = run_against_server(
            settings, "opcua", server, port,
            lambda topic: config(port, topic, variables, publishing_interval_s,
                                 sampling_interval_s, queue_size),
            duration_s, Path(tmp))
        offered = report.read_text().strip() if report.is_file() else ""
    run.offered = float(offered) if offered else None
    run.settings = {
        "variables": variables,
        "write_interval_s": interval_s,
        "publishing_interval_s": publishing_interval_s,
        "sampling_interval_s": sampling_interval_s,
        "queue_size": queue_size,
        "trigger": "status_value_timestamp",
    }
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variables", type=int, default=2000)
    parser.add_argument("--interval-s", type=float, default=0.05, help="write every variable")
    parser.add_argument("--publishing-interval-s", type=float, default=0.05)
    parser.add_argument("--sampling-interval-s", type=float, default=0.01)
    parser.add_argument("--queue-size", type=int, default=1, help="per monitored item")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve, args.variables, args.interval_s, args.report))
        return 0
    run = run_bench(
        load_settings(),
        variables=args.variables,
        interval_s=args.interval_s,
        publishing_interval_s=args.publishing_interval_s,
        sampling_interval_s=args.sampling_interval_s,
        queue_size=args.queue_size,
        duration_s=args.duration,
    )
    if report_exit(run):
        return run.exit_code
    offered = f"{run.offered:.0f}/s" if run.offered is not None else "unknown"
    print(
        f"{run.readings} data changes in Kafka from {args.variables} variables in "
        f"{args.duration:.0f} s ({run.overall_rate:.0f}/s overall); sustained "
        f"{run.rate:.0f} changes/s over {run.window_s:.1f} s (the server offered {offered}); "
        f"{run.cpu_per_10k:.2f} CPU s per 10k readings (connector at {run.cores:.2f} cores; "
        f"{run.total_cpu_s:.1f} s CPU in all); counters {run.counters}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
