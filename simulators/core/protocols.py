"""The simulator protocols, found from the folders: each `simulators/<name>/` package but
`core` is one, and its `__init__.py` declares what `otbridge sim <name>` needs (see
`SimulatorPackage`). A new protocol is a new folder and nothing else."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from otbridge.settings import Settings

_ROOT = Path(__file__).parent.parent  # the simulators package
_NOT_PROTOCOLS = {"core"}


class SimulatorPackage(Protocol):
    """What `simulators/<name>/__init__.py` declares (it must stay light: the protocol
    library is imported only by `run`)."""

    NAME: str  # the subcommand: otbridge sim NAME
    HELP: str  # one line for `otbridge sim --help`
    EXTRA: tuple[str, str] | None  # (module the server needs, the pip extra that installs it)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, settings: Settings | None) -> int:
        """Serve until SIGINT/SIGTERM; the exit code."""
        ...


@cache
def protocol_names() -> tuple[str, ...]:
    """The protocol folders, sorted (no import needed)."""
    return tuple(
        sorted(
            m.name
            for m in pkgutil.iter_modules([str(_ROOT)])
            if m.ispkg and m.name not in _NOT_PROTOCOLS
        )
    )


def protocols() -> list[SimulatorPackage]:
    """Every protocol package, imported (its declarations only, not the server)."""
    return [
        cast(SimulatorPackage, importlib.import_module(f"simulators.{name}"))
        for name in protocol_names()
    ]


def protocol(name: str) -> SimulatorPackage:
    """One protocol package by its folder name (its declarations only, not the server)."""
    return cast(SimulatorPackage, importlib.import_module(f"simulators.{name}"))
