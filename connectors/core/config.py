"""What every connector file shares: the base models, YAML loading and error messages.

Every model is frozen and forbids unknown keys. `load_config` turns any problem into a
ConfigError naming the file, the field as a dotted path (``devices[0].tags[2].data_type``),
the bad value and what would be valid. A protocol's own models (its devices and tags) are
in `connectors/<protocol>/config.py`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from otbridge.errors import ConfigError
from otbridge.settings import KafkaSettings, RegistrySettings, Settings, Topics

ASSET_PATH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*){4}$")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
TAG_RE = r"^[A-Za-z_][A-Za-z0-9_.]*$"


def _check_asset_path(value: str) -> str:
    if not ASSET_PATH_RE.fullmatch(value):
        raise ValueError(
            "an asset path is ISA-95 enterprise/site/area/line/cell: exactly 5 segments of "
            "letters, digits, '_', '-' or '.', e.g. acme/berlin/body/line1/press01"
        )
    return value


AssetPath = Annotated[str, AfterValidator(_check_asset_path)]
TagName = Annotated[str, Field(pattern=TAG_RE, max_length=100)]
Name = Annotated[str, Field(pattern=NAME_RE, max_length=100)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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

ENV_REF_RE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; a value that is exactly ``${NAME}`` is the environment variable NAME
    (so passwords need not be written into the file)."""
    if not path.is_file():
        raise ConfigError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: big maps load fast
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    return _expand_env(data, path, ())


def _expand_env(data: Any, path: Path, loc: tuple[int | str, ...]) -> Any:
    if isinstance(data, dict):
        return {k: _expand_env(v, path, (*loc, str(k))) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_env(v, path, (*loc, i)) for i, v in enumerate(data)]
    if isinstance(data, str) and (match := ENV_REF_RE.match(data)):
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{path}: {dotted(loc)}: environment variable {name} is not set")
        return os.environ[name]
    return data


def load_config(path: Path | str, model: type[M]) -> M:
    """Read and validate a YAML file; any problem is a ConfigError naming file and field."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, path)) from None
    if isinstance(config, ConnectorFile):
        config._path = path
    return config


def dotted(loc: Sequence[int | str]) -> str:
    """('devices', 0, 'tags', 2, 'data_type') -> 'devices[0].tags[2].data_type'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


FIELD_HEAD_RE = re.compile(r"[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*")


def format_errors(
    exc: ValidationError,
    path: Path,
    *,
    what: str = "connector config",
    at: tuple[int | str, ...] = (),
) -> str:
    """One line: the file, then each error's dotted field (under `at`) and what is wrong or
    valid, `; ` between them: ``invalid connector config FILE: FIELD: MESSAGE; FIELD: ...``."""
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        field = dotted((*at, *loc))
        msg = err["msg"].removeprefix("Value error, ")
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "literal_error":
            msg = f"valid: {ctx.get('expected')}"
        # a model-level rule names its field first ("bit: ..."): report it under that field
        head, sep, rest = msg.partition(": ")
        if sep and kind == "value_error" and FIELD_HEAD_RE.fullmatch(head):
            field, msg = (f"{field}.{head}" if field != "(top level)" else head), rest
        got = "" if kind in ("missing", "value_error") else f"; got {err.get('input')!r}"
        named = msg.startswith(f"{field}.")  # "kafka.security_protocol is ...", under kafka
        problems.append(f"{msg}{got}" if named else f"{field}: {msg}{got}")
    return f"invalid {what} {path}: {'; '.join(problems)}"


def __getattr__(name: str) -> Any:
    # the protocols' models lived here; for importers not yet moved to connectors.<protocol>
    moved = {
        "ModbusConfig": "modbus", "ModbusDevice": "modbus", "ModbusTag": "modbus",
        "OpcUaConfig": "opcua", "OpcUaDevice": "opcua", "OpcUaTag": "opcua",
    }  # fmt: skip
    if name in moved:
        import importlib

        return getattr(importlib.import_module(f"connectors.{moved[name]}.config"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
