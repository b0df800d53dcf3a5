"""`otbridge sim modbus|opcua`: the plant simulators as subcommands of the main CLI."""

from __future__ import annotations

import argparse
from typing import Any

from simulators.core.common import add_modbus_arguments, add_opcua_arguments


def _modbus(args: argparse.Namespace, settings: Any) -> int:
    try:
        from simulators.modbus import server as modbus_server
    except ModuleNotFoundError as exc:
        if exc.name != "pymodbus":
            raise
        from otbridge.errors import MissingExtraError

        raise MissingExtraError("pymodbus", "modbus") from None
    return modbus_server.run(args)


def _opcua(args: argparse.Namespace, settings: Any) -> int:
    try:
        from simulators.opcua import server as opcua_server
    except ModuleNotFoundError as exc:
        if exc.name != "asyncua":
            raise
        from otbridge.errors import MissingExtraError

        raise MissingExtraError("asyncua", "opcua") from None
    if args.cert_dir is None and settings is not None:
        args.cert_dir = settings.stack.state_dir / "sim-pki"
    return opcua_server.run(args)


def register(sub: Any) -> None:
    """Add `sim` with `modbus` and `opcua` to the main CLI's subparsers."""
    sim = sub.add_parser("sim", help="plant simulators (Modbus TCP, OPC UA) for demos and tests")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="SERVER")
    modbus = sim_sub.add_parser(
        "modbus", help="Modbus TCP simulator (serves until Ctrl-C / SIGTERM)"
    )
    add_modbus_arguments(modbus)
    modbus.set_defaults(handler=_modbus)
    opcua = sim_sub.add_parser("opcua", help="OPC UA simulator (serves until Ctrl-C / SIGTERM)")
    add_opcua_arguments(opcua)
    opcua.set_defaults(handler=_opcua)
