"""Benchmark: sustained readings/s of one Modbus connector process into Kafka.

    python -m connectors.bench_modbus --devices 4 --registers 500 --duration 20

Starts a pymodbus server (its own process) serving `--devices` unit ids with `--registers`
holding registers each, runs `otbridge connect modbus` (one process) polling them as fast as
it can (`--poll-interval-s`), then counts what reached Kafka. Uses a fresh topic
`bench.readings.<id>`; the local stack must be up.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import yaml
from confluent_kafka import Consumer, TopicPartition

from otbridge import PROJECT_ROOT
from otbridge.kafka import consumer_config
from otbridge.settings import load_settings

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the benchmark server did not listen on {port}")


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


def records_in(topic: str) -> int:
    settings = load_settings()
    consumer = Consumer(consumer_config(settings, f"bench-{uuid.uuid4().hex}"))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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

    port = free_port()
    topic = f"bench.readings.{uuid.uuid4().hex[:10]}"
    server = subprocess.Popen(
        [sys.executable, "-m", "connectors.bench_modbus", "--serve", str(port),
         "--devices", str(args.devices), "--registers", str(args.registers)],
        cwd=PROJECT_ROOT,
    )  # fmt: skip
    try:
        wait_for_port(port)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.yaml"
            doc = config(port, topic, args.devices, args.registers, args.poll_interval_s)
            path.write_text(yaml.safe_dump(doc))
            cmd = [sys.executable, "-m", "otbridge.cli", "connect", "modbus", "--config", str(path),
                   "--duration", str(args.duration), "--log-level", "WARNING"]  # fmt: skip
            started = time.monotonic()
            cpu_before = _children_cpu_s()
            connector = subprocess.run(cmd, cwd=PROJECT_ROOT, check=False)
            cpu_s = _children_cpu_s() - cpu_before  # the connector's own CPU time
            elapsed = time.monotonic() - started
        if connector.returncode != 0:
            print(f"connector exited {connector.returncode}", file=sys.stderr)
            return connector.returncode
    finally:
        server.terminate()
        server.wait(10)
    produced = records_in(topic)
    print(
        f"{produced} readings in Kafka from {args.devices} devices x {args.registers} registers "
        f"in {args.duration:.0f} s of polling ({elapsed:.1f} s with start-up and flush): "
        f"{produced / args.duration:.0f} readings/s; "
        f"{produced / cpu_s:.0f} readings per CPU second of the connector ({cpu_s:.1f} s CPU)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
