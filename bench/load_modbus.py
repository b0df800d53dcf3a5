"""Benchmark: sustained readings/s of one Modbus connector process into Kafka.

    python -m bench.load_modbus --devices 4 --registers 500 --duration 20

Starts a pymodbus server (its own process) serving `--devices` unit ids with `--registers`
holding registers each, runs `otbridge connect modbus` (one process) polling them as fast as
it can (`--poll-interval-s`), then counts what reached Kafka. Uses a fresh topic
`bench.readings.<id>`; the local stack must be up. `run_bench` is the same as a function
(`otbridge bench connector` calls it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.ingest import ConnectorRun, report_exit, run_against_server
from bench.procs import python_module
from otbridge.net import free_port
from otbridge.settings import Settings, load_settings

ASSET = "acme/bench/area/line{device}/machine{device}"


async def serve(port: int, devices: int, registers: int) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    sims = [
        SimDevice(
            unit,
            simdata=[SimData(0, values=list(range(registers)), datatype=DataType.REGISTERS)],
        )
        for unit in range(1, devices + 1)
    ]
    await ModbusTcpServer(sims, address=("127.0.0.1", port)).serve_forever()


def config(port: int, topic: str, devices: int, registers: int, poll_s: float) -> dict[str, object]:
    return {
        "connector_id": "bench",
        "topic": topic,
        "stats_interval_s": 5,
        "devices": [
            {
                "name": f"dev{d}",
                "port": port,
                "unit_id": d,
                "poll_interval_s": poll_s,
                "timeout_s": 2.0,
                "tags": [
                    {
                        "asset": ASSET.format(device=d),
                        "tag": f"r{i}",
                        "register": "holding",
                        "address": i,
                        "data_type": "uint16",
                        "scale": 0.1,  # the decimal scaling path, as real maps have
                    }
                    for i in range(registers)
                ],
            }
            for d in range(1, devices + 1)
        ],
    }


def run_bench(
    settings: Settings,
    *,
    devices: int = 4,
    registers: int = 500,
    duration_s: float = 20.0,
    poll_interval_s: float = 0.01,
) -> ConnectorRun:
    """Serve `devices` x `registers`, run one connector process on them for `duration_s` into a
    fresh topic; the figures (sustained readings/s, CPU) are measured by
    bench.ingest.run_connector_process."""
    port = free_port()
    server = python_module("bench.load_modbus", "--serve", str(port), "--devices", str(devices),
                           "--registers", str(registers))
    with tempfile.TemporaryDirectory() as tmp:
        run = run_against_server(
            settings, "modbus", server, port,
            lambda topic: config(port, topic, devices, registers, poll_interval_s),
            duration_s, Path(tmp))
    run.settings = {
        "devices": devices,
        "registers_per_device": registers,
        "data_type": "uint16, scale 0.1",
        "poll_interval_s": poll_interval_s,
        "max_registers_per_read": 125,
    }
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--registers", type=int, default=500, help="tags per device")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--poll-interval-s", type=float, default=0.01)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve, args.devices, args.registers))
        return 0
    run = run_bench(
        load_settings(),
        devices=args.devices,
        registers=args.registers,
        duration_s=args.duration,
        poll_interval_s=args.poll_interval_s,
    )
    if report_exit(run):
        return run.exit_code
    print(
        f"{run.readings} readings in Kafka from {args.devices} devices x {args.registers} "
        f"registers in {args.duration:.0f} s of polling ({run.overall_rate:.0f}/s overall); "
        f"sustained {run.rate:.0f} readings/s over {run.window_s:.1f} s; "
        f"{run.cpu_per_10k:.2f} CPU s per 10k readings (connector at {run.cores:.2f} cores; "
        f"{run.total_cpu_s:.1f} s CPU in all); counters {run.counters}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
