"""Faults a simulated device can show, switchable at run time or by a scenario."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, StrictBool, StrictInt, ValidationError, field_validator, model_validator

from simulators.core.plant import FileModel, file_error

#: OPC UA status codes a `bad_status` fault may name.
BadStatus = Literal[
    "BadSensorFailure",
    "BadCommunicationError",
    "BadDeviceFailure",
    "BadOutOfService",
    "BadNoCommunication",
    "BadWaitingForInitialData",
]
BAD_STATUS_CODES: tuple[str, ...] = get_args(BadStatus)


class Fault(FileModel):
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

    no_response: StrictBool = False
    delay_s: float = Field(0.0, ge=0)
    drop_connection: StrictBool = False
    exception_code: StrictInt | None = Field(None, ge=1, le=255)
    swap_words: StrictBool = False
    stuck: StrictBool | tuple[str, ...] = False
    bad_status: BadStatus | None = None
    tags: tuple[str, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            unknown = set(raw) - set(cls.model_fields)
            if unknown:
                raise ValueError(
                    f"unknown fault field(s) {', '.join(sorted(map(str, unknown)))}; "
                    f"valid: {', '.join(sorted(cls.model_fields))}"
                )
        return raw

    @field_validator("bad_status", mode="before")
    @classmethod
    def _a_bad_status(cls, value: Any) -> Any:
        if value is not None and value not in BAD_STATUS_CODES:
            raise ValueError(f"bad_status {value!r} is not one of {', '.join(BAD_STATUS_CODES)}")
        return value

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, *, source: str = "request") -> Fault:
        """A fault from JSON/YAML (None: healthy); PlantError naming the field if invalid."""
        if raw is None:
            return HEALTHY
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise file_error(exc, source, what="fault in", model=cls) from None

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that are set (JSON-ready)."""
        return self.model_dump(mode="json", exclude_defaults=True)

    @property
    def active(self) -> bool:
        return self != HEALTHY

    def is_stuck(self, tag: str) -> bool:
        return self.stuck is True or (isinstance(self.stuck, tuple) and tag in self.stuck)

    def is_bad(self, tag: str) -> bool:
        return self.bad_status is not None and (self.tags is None or tag in self.tags)


HEALTHY = Fault()
