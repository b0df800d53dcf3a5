"""What every simulator server shares, written once: the common command-line options,
building the runtime, and the server lifecycle (start, print where it listens, serve the
control port too when asked, stop on SIGINT/SIGTERM)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from otbridge.errors import OtbridgeError
from simulators.core.plant import PLANT_FILE, load_plant
from simulators.core.protocols import protocol
from simulators.core.runtime import PlantRuntime, WallClock
from simulators.core.scenario import load_scenario

if TYPE_CHECKING:
    from otbridge.settings import Settings

LOOPBACK = "127.0.0.1"

Serve = Callable[[argparse.Namespace, "Settings | None"], int]


class ListenError(OtbridgeError):
    """A simulator cannot listen on its address (in use, or not an address of this host)."""


def add_common_arguments(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    """The options every simulator has (each protocol adds its own after these)."""
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


def build_runtime(args: argparse.Namespace) -> PlantRuntime:
    """The plant, scenario and clock the common options name."""
    plant = load_plant(args.plant)
    scenario = load_scenario(args.scenario, plant) if args.scenario else None
    return PlantRuntime(plant, seed=args.seed, scenario=scenario, clock=WallClock(speed=args.speed))


class Simulator(ABC):
    """A protocol server of a PlantRuntime: start/stop, or `async with`."""

    runtime: PlantRuntime

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @property
    @abstractmethod
    def listening(self) -> str:
        """What it prints once it listens (tests wait for this line), e.g.
        `modbus simulator listening on 127.0.0.1:5020`."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _check_can_listen(host: str, port: int) -> None:
    """OSError if a server could not bind host:port now (port 0: any free one, always fine)."""
    if not port:
        return
    for family, kind, proto, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(address)


def serve_simulator(sim: Simulator, args: argparse.Namespace) -> int:
    """Serve `sim` (and the fault/pin control port when asked) until SIGINT or SIGTERM; 0."""
    from simulators.core.control import ControlServer

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("asyncua").setLevel(
        max(logging.WARNING, logging.getLevelName(args.log_level))
    )
    control = (
        ControlServer(sim.runtime, port=args.control_port)
        if args.control_port is not None
        else None
    )

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        try:
            try:
                _check_can_listen(args.host, args.port)  # before the libraries log a traceback
                await sim.start()
            except OSError as exc:
                raise ListenError(
                    f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
                ) from None
            print(sim.listening, flush=True)
            if control is not None:
                await control.start()
                print(f"control on {control.url}", flush=True)
            await stopping.wait()
        finally:
            with contextlib.suppress(Exception):
                if control is not None:
                    await control.stop()
            with contextlib.suppress(Exception):
                await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def main(name: str, serve: Serve, argv: Sequence[str] | None = None) -> int:
    """`python -m simulators.<name>.server`: the options protocol `name` declares, then
    `serve`; a mistake in a file or an option is one line on stderr and exit 2."""
    package = protocol(name)
    parser = argparse.ArgumentParser(
        prog=f"python -m simulators.{package.NAME}.server", description=package.HELP
    )
    package.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve(args, None)
    except OtbridgeError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
