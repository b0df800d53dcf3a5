"""What both simulator servers share: command-line options, building the runtime, serving
until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from simulators.core.plant import PLANT_FILE, PlantError, load_plant
from simulators.core.runtime import PlantRuntime, WallClock
from simulators.core.scenario import load_scenario

LOOPBACK = "127.0.0.1"
MODBUS_PORT = 5020
OPCUA_PORT = 4840
MAP_FILE = Path(__file__).parent.parent / "modbus" / "map.yaml"
DEFAULT_CERT_DIR = Path(".otbridge") / "sim-pki"
PASSWORD_ENV = "OTBRIDGE_SIM_OPCUA_PASSWORD"
NAMESPACE_URI = "urn:otbridge:plant"


def add_common_arguments(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    parser.add_argument("--host", default=LOOPBACK, help="address to bind [%(default)s]")
    parser.add_argument(
        "--port",
        type=int,
        default=default_port,
        help="port to bind, 0 for any free one [%(default)s]",
    )
    parser.add_argument(
        "--plant",
        type=Path,
        default=PLANT_FILE,
        help="plant definition file [simulators/plant.yaml]",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed repeats a run [%(default)s]"
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        default=None,
        help="YAML timeline of exact values and faults to play",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second (demos: 10 makes stops come ten times as often)",
    )
    parser.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="HTTP fault/pin control on this 127.0.0.1 port (0: any free one); off by default",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def add_modbus_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the Modbus simulator (no pymodbus import, so the main CLI stays light)."""
    add_common_arguments(parser, default_port=MODBUS_PORT)
    parser.add_argument(
        "--map", type=Path, default=MAP_FILE, help="register map file [simulators/modbus/map.yaml]"
    )


def add_opcua_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the OPC UA simulator (no asyncua import)."""
    add_common_arguments(parser, default_port=OPCUA_PORT)
    parser.add_argument(
        "--secure",
        action="store_true",
        help="offer only Basic256Sha256 SignAndEncrypt (self-signed certificate in --cert-dir)",
    )
    parser.add_argument("--user", default=None, help="require this user name (no anonymous login)")
    parser.add_argument(
        "--password",
        default=os.environ.get(PASSWORD_ENV),
        help=f"the user's password [${PASSWORD_ENV}]",
    )
    parser.add_argument(
        "--cert-dir",
        type=Path,
        default=None,
        help=f"where the server certificate and key are kept [{DEFAULT_CERT_DIR}]",
    )
    parser.add_argument(
        "--namespace-uri", default=NAMESPACE_URI, help="namespace of the plant nodes [%(default)s]"
    )
    parser.add_argument(
        "--update-interval-s", type=float, default=0.5, help="value refresh period [%(default)s]"
    )


def build_runtime(args: argparse.Namespace) -> PlantRuntime:
    plant = load_plant(args.plant)
    scenario = load_scenario(args.scenario, plant) if args.scenario else None
    return PlantRuntime(plant, seed=args.seed, scenario=scenario, clock=WallClock(speed=args.speed))


def serve_until_signal(
    start: Callable[[], Awaitable[object]],
    stop: Callable[[], Awaitable[object]],
    *,
    log_level: str = "INFO",
) -> int:
    """Run start(), wait for SIGINT or SIGTERM, run stop(); 0 on a clean stop, 2 on bad input."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLevelName(log_level)))

    async def _main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await start()
            await stopping.wait()
        finally:
            with contextlib.suppress(Exception):
                await stop()

    try:
        asyncio.run(_main())
    except PlantError as exc:
        logging.getLogger("simulators").error("%s", exc)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def serve_simulator(sim: Any, runtime: PlantRuntime, args: argparse.Namespace,
                    banner: Callable[[], str]) -> int:
    """Serve `sim` (and the fault/pin control port when asked) until SIGINT/SIGTERM."""
    from simulators.core.control import ControlServer

    control = (
        ControlServer(runtime, port=args.control_port) if args.control_port is not None else None
    )

    async def start() -> None:
        await sim.start()
        print(banner(), flush=True)
        if control is not None:
            await control.start()
            print(f"control on {control.url}", flush=True)

    async def stop() -> None:
        if control is not None:
            await control.stop()
        await sim.stop()

    return serve_until_signal(start, stop, log_level=args.log_level)
