"""`otbridge sim <protocol>`: the plant simulators as subcommands of the main CLI, one per
protocol folder (simulators/<protocol>/, see core.protocols)."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from otbridge.errors import MissingExtraError
from simulators.core.protocols import SimulatorPackage, protocols


def _run(package: SimulatorPackage, args: argparse.Namespace, settings: Any) -> int:
    try:
        return package.run(args, settings)
    except ModuleNotFoundError as exc:
        if package.EXTRA is None or exc.name != package.EXTRA[0]:
            raise
        raise MissingExtraError(*package.EXTRA) from None


def register(sub: Any) -> None:
    """Add `sim` with a subcommand per protocol to the main CLI's subparsers."""
    packages = protocols()
    sim = sub.add_parser(
        "sim",
        help=f"plant simulators ({', '.join(p.NAME for p in packages)}) for demos and tests",
    )
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="SERVER")
    for package in packages:
        parser = sim_sub.add_parser(package.NAME, help=package.HELP)
        package.add_arguments(parser)
        parser.set_defaults(handler=functools.partial(_run, package))
