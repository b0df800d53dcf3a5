"""Modbus TCP simulator: the plant's Modbus machines as unit ids on one port (`server.py`),
serving the register map `map.yaml`. What `otbridge sim modbus` needs is declared here; the
server (and pymodbus) is imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from simulators.core.common import add_common_arguments
from simulators.modbus.defaults import DEFAULT_PORT
from simulators.modbus.map import MAP_FILE

if TYPE_CHECKING:
    from otbridge.settings import Settings

NAME = "modbus"
HELP = "Modbus TCP simulator (serves until Ctrl-C / SIGTERM)"
EXTRA: tuple[str, str] | None = ("pymodbus", "modbus")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, default_port=DEFAULT_PORT)
    parser.add_argument(
        "--map", type=Path, default=MAP_FILE, help="register map file [simulators/modbus/map.yaml]"
    )


def run(args: argparse.Namespace, settings: Settings | None) -> int:
    from simulators.modbus.server import serve

    return serve(args, settings)
