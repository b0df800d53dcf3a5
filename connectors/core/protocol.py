"""How `otbridge connect <protocol>` finds the protocols: one folder each.

Each package `connectors/<name>/` declares a `PROTOCOL` in its `__init__.py`; its connector
module (which imports the protocol's library, an optional extra) is imported only when that
protocol is run.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, cast

from connectors.core.config import ConnectorFile
from otbridge.errors import MissingExtraError
from otbridge.settings import Settings


class RunConnector(Protocol):
    def __call__(
        self,
        config: Any,
        settings: Settings,
        *,
        max_readings: int | None = None,
        duration_s: float | None = None,
        stop: asyncio.Event | None = None,
    ) -> Coroutine[Any, Any, int]: ...


@dataclass(frozen=True, kw_only=True)
class ProtocolSpec:
    """What a protocol folder declares about itself."""

    name: str  # `otbridge connect <name>`
    help: str  # one line for `otbridge connect --help`
    config: type[ConnectorFile[Any]]  # the model of its connector files
    connector: str  # the module with `run(config, settings, *, max_readings, duration_s, stop)`
    extra: str | None = None  # the install extra with the protocol's library, if any
    libraries: tuple[str, ...] = ()  # their loggers, quiet unless --log-level DEBUG

    def run_function(self) -> RunConnector:
        """The connector's `run`; a MissingExtraError if the protocol's library is missing."""
        try:
            module = importlib.import_module(self.connector)
        except ModuleNotFoundError as exc:
            library = (exc.name or "").partition(".")[0]
            if self.extra is None or library in ("", "connectors", "otbridge"):
                raise  # not the protocol's library: a bug, not an install to fix
            raise MissingExtraError(library, self.extra) from exc
        return cast(RunConnector, module.run)


def protocols() -> list[ProtocolSpec]:
    """Every protocol folder under `connectors/`, by name."""
    import connectors

    found = []
    for info in pkgutil.iter_modules(connectors.__path__, "connectors."):
        if not info.ispkg:
            continue
        spec = getattr(importlib.import_module(info.name), "PROTOCOL", None)
        if isinstance(spec, ProtocolSpec):
            found.append(spec)
    return sorted(found, key=lambda spec: spec.name)
