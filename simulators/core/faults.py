"""Faults a simulated device can show, switchable at run time or by a scenario."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from simulators.core.plant import PlantError

#: OPC UA status codes a `bad_status` fault may name.
BAD_STATUS_CODES = (
    "BadSensorFailure",
    "BadCommunicationError",
    "BadDeviceFailure",
    "BadOutOfService",
    "BadNoCommunication",
    "BadWaitingForInitialData",
)


@dataclass(frozen=True)
class Fault:
    """What is wrong with one machine's device (all fields off: healthy).

    Modbus: no_response (the unit never answers), delay_s (answers late), drop_connection
    (closes the TCP connection on a request to the unit), exception_code (answers with this
    Modbus exception, e.g. 4 device failure, 11 gateway target no response), swap_words
    (multi-register values in the opposite word order to the register map).
    OPC UA: bad_status (the machine's variables carry this status code, value null),
    drop_connection (every client connection to the server is closed while it lasts).
    Both: stuck (values frozen at the moment the fault began; True for every tag or a list
    of tags). `tags` limits bad_status to those tags (default: all of the machine's).
    """

    no_response: bool = False
    delay_s: float = 0.0
    drop_connection: bool = False
    exception_code: int | None = None
    swap_words: bool = False
    stuck: bool | tuple[str, ...] = False
    bad_status: str | None = None
    tags: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Fault:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise PlantError(f"a fault must be a mapping, got {raw!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise PlantError(
                f"unknown fault field(s) {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(sorted(known))}"
            )
        stuck = raw.get("stuck", False)
        if isinstance(stuck, list):
            stuck = tuple(str(t) for t in stuck)
        elif not isinstance(stuck, bool):
            raise PlantError(f"fault.stuck must be true/false or a list of tags, got {stuck!r}")
        bad = raw.get("bad_status")
        if bad is not None and bad not in BAD_STATUS_CODES:
            raise PlantError(
                f"fault.bad_status {bad!r} is not one of {', '.join(BAD_STATUS_CODES)}"
            )
        exc = raw.get("exception_code")
        if exc is not None and (not isinstance(exc, int) or not 1 <= exc <= 255):
            raise PlantError(f"fault.exception_code must be 1..255, got {exc!r}")
        delay = float(raw.get("delay_s", 0.0))
        if delay < 0:
            raise PlantError(f"fault.delay_s must be >= 0, got {delay}")
        tags = raw.get("tags")
        return cls(
            no_response=bool(raw.get("no_response", False)),
            delay_s=delay,
            drop_connection=bool(raw.get("drop_connection", False)),
            exception_code=exc,
            swap_words=bool(raw.get("swap_words", False)),
            stuck=stuck,
            bad_status=bad,
            tags=tuple(str(t) for t in tags) if tags is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that are set (JSON-ready)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            default = getattr(Fault, key, None)
            if value != default:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def active(self) -> bool:
        return self != Fault()

    def is_stuck(self, tag: str) -> bool:
        return self.stuck is True or (isinstance(self.stuck, tuple) and tag in self.stuck)

    def is_bad(self, tag: str) -> bool:
        return self.bad_status is not None and (self.tags is None or tag in self.tags)


HEALTHY = Fault()
