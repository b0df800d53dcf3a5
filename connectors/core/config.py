"""What every connector file shares: the connector id, Kafka/registry overrides, the
reconnect policy, devices with tags. A protocol's own models (its devices and tags) are in
`connectors/<protocol>/config.py`; loading and error messages are `otbridge.files`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from otbridge.errors import ConfigError
from otbridge.files import (
    AssetPath,
    Model,
    Name,
    TagName,
    dotted,
    format_errors,
    load_model,
)
from otbridge.settings import KafkaSettings, RegistrySettings, Settings, Topics


class ReconnectPolicy(Model):
    """Exponential backoff with jitter between reconnect attempts."""

    initial_delay_s: float = Field(0.5, gt=0)
    max_delay_s: float = Field(30.0, gt=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: float = Field(0.2, ge=0, le=1, description="+/- fraction of each delay")

    def delay_s(self, attempt: int, rand: float) -> float:
        """Delay before reconnect attempt `attempt` (0-based); `rand` is uniform in [0, 1)."""
        base = min(self.max_delay_s, self.initial_delay_s * self.multiplier**attempt)
        return float(base * (1 + self.jitter * (2 * rand - 1)))


class BufferPolicy(Model):
    """The connector's store and forward buffer (connectors/core/buffer.py): every reading
    Kafka has not acknowledged is in this file, through outages, restarts and SIGKILL."""

    path: Path | None = Field(
        None, description="the SQLite file; default <stack.state_dir>/buffer/<connector_id>.db")
    max_bytes: int = Field(1 << 30, gt=0, description="readings' bytes the file may hold")
    max_age_s: float | None = Field(
        7 * 86400.0, gt=0, description="readings older than this are dropped unsent; null: none")
    when_full: Literal["drop_oldest", "stop_accepting"] = "drop_oldest"
    replay_per_s: int = Field(
        100_000, gt=0, description="readings/s sent from the file while it has a backlog (the "
        "live readings are behind them: keep it above the connector's own rate)")
    replay: Literal["oldest_first", "live_first"] = Field(
        "oldest_first", description="after an outage: oldest_first sends the backlog before "
        "what is read now (each asset's readings in order); live_first sends what is read now "
        "at once and the backlog behind it (within replay_per_s)")
    max_in_flight: int = Field(100_000, gt=0, description="readings handed to the producer "
                                                         "and not yet acknowledged, at most")
    durability: Literal["normal", "full"] = Field(
        "normal", description="normal: survives the process being killed; full: a power cut too "
                              "(an fsync per transaction)")


class TagBase(Model):
    """What every tag has: whose value it is, under which name, in which unit."""

    asset: AssetPath
    tag: TagName
    unit: str | None = None


T = TypeVar("T", bound=TagBase)


class DeviceBase(Model, Generic[T]):
    """What every device has: a name (unique in its file) and its tags; a protocol adds
    its address and timing, and says what `source` its readings carry."""

    name: Name
    tags: list[T] = Field(min_length=1)

    @property
    def source(self) -> str:
        raise NotImplementedError

    @property
    def interval_s(self) -> float:
        """The device's cadence: one reading per tag per interval (BAD ones while it is down)."""
        raise NotImplementedError


D = TypeVar("D", bound=DeviceBase[Any])


class ConnectorFile(Model, Generic[D]):
    """What every connector file has: where readings go, how to reconnect, its devices."""

    connector_id: Name
    topic: str | None = Field(None, description="readings topic; default: settings' iiot.readings")
    kafka: dict[str, Any] | None = Field(None, description="overrides of otbridge's kafka settings")
    registry: dict[str, Any] | None = Field(
        None, description="overrides of otbridge's schema registry settings"
    )
    stats_interval_s: float = Field(30.0, gt=0)
    reconnect: ReconnectPolicy = ReconnectPolicy()
    buffer: BufferPolicy = BufferPolicy()
    devices: list[D] = Field(min_length=1)

    _path: Path | None = PrivateAttr(None)  # the file it was loaded from, for error messages

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> ConnectorFile[D]:
        # checked again, merged over the process settings, by `effective_settings`
        for section, model in (("kafka", KafkaSettings), ("registry", RegistrySettings)):
            given = getattr(self, section) or {}
            unknown = sorted(set(given) - set(model.model_fields))
            if unknown:
                raise ValueError(
                    f"{section}: unknown field(s) {', '.join(unknown)}; "
                    f"valid: {', '.join(model.model_fields)}"
                )
            try:  # each value's type now; rules across fields need the process settings
                model.model_validate({**model().model_dump(), **given})
            except ValidationError as exc:
                wrong = [e for e in exc.errors() if e["loc"] and e["loc"][0] in given]
                if wrong:
                    raise ValueError(
                        "; ".join(
                            f"{section}.{dotted(e['loc'])}: {e['msg']}; got {e['input']!r}"
                            for e in wrong
                        )
                    ) from None
        return self

    @model_validator(mode="after")
    def _unique(self) -> ConnectorFile[D]:
        check_unique("devices", [d.name for d in self.devices], "device name")
        check_unique(
            "devices[*].tags",
            [f"{t.asset} {t.tag}" for d in self.devices for t in d.tags],
            "asset + tag",
        )
        return self

    def readings_topic(self, settings: Settings) -> str:
        if self.topic:
            return self.topic
        return Topics(prefix=self.effective_settings(settings).kafka.topic_prefix).readings

    def effective_settings(self, settings: Settings) -> Settings:
        """The process settings with this file's kafka/registry overrides applied."""
        update: dict[str, Any] = {}
        for section, model in (("kafka", KafkaSettings), ("registry", RegistrySettings)):
            given = getattr(self, section)
            if given:
                merged = {**getattr(settings, section).model_dump(), **given}
                try:
                    update[section] = model.model_validate(merged)
                except ValidationError as exc:
                    where = self._path or Path("(connector file)")
                    raise ConfigError(format_errors(exc, where, at=(section,))) from None
        return settings.model_copy(update=update) if update else settings


def check_unique(where: str, values: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{where}: {what} {value!r} appears more than once")
        seen.add(value)


# --- loading ------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def load_config(path: Path | str, model: type[M]) -> M:
    """Read and validate a connector file; any problem is a ConfigError naming file and field."""
    config = load_model(path, model, what="connector config")
    if isinstance(config, ConnectorFile):
        config._path = Path(path)
    return config
