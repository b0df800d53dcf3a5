"""Connector configuration files (YAML), validated on load.

Every model is frozen and forbids unknown keys. `load_config` turns any problem into a
ConfigError naming the file, the field as a dotted path (``devices[0].tags[2].data_type``),
the bad value and what would be valid.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from otbridge.errors import ConfigError
from otbridge.settings import (
    KafkaSettings,
    RegistrySettings,
    Settings,
    Topics,
    format_validation_error,
)

ASSET_PATH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*){4}$")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
TAG_RE = r"^[A-Za-z_][A-Za-z0-9_.]*$"
NODE_ID_RE = re.compile(r"^(ns=\d+;|nsu=[^;]+;)?(i=\d+|s=.+|g=[0-9A-Fa-f-]{36}|b=\S+)$")
BROWSE_PATH_RE = re.compile(r"^\d+:[^/]+(/\d+:[^/]+)*$")


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

RegisterKind = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool"
]
Order = Literal["big", "little"]


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


class ConnectorFile(Model):
    """What every connector file has besides its devices."""

    connector_id: Name
    topic: str | None = Field(None, description="readings topic; default: settings' iiot.readings")
    kafka: dict[str, Any] | None = Field(None, description="overrides of otbridge's kafka settings")
    registry: dict[str, Any] | None = Field(
        None, description="overrides of otbridge's schema registry settings"
    )
    stats_interval_s: float = Field(30.0, gt=0)
    reconnect: ReconnectPolicy = ReconnectPolicy()

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> ConnectorFile:
        # validated again, merged over the process settings, by `effective_settings`
        for section, model in (("kafka", KafkaSettings), ("registry", RegistrySettings)):
            given = getattr(self, section) or {}
            unknown = sorted(set(given) - set(model.model_fields))
            if unknown:
                raise ValueError(
                    f"{section}: unknown field(s) {', '.join(unknown)}; "
                    f"valid: {', '.join(model.model_fields)}"
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
                    raise ConfigError(
                        format_validation_error(exc, source=f"connector file, {section} section")
                    ) from None
        return settings.model_copy(update=update) if update else settings


# --- Modbus -------------------------------------------------------------------------------


class ModbusTag(Model):
    asset: AssetPath
    tag: TagName
    unit: str | None = None
    kind: RegisterKind = Field(alias="register")  # `register` would shadow ABC.register
    address: int = Field(ge=0, le=65535)
    data_type: DataType
    byte_order: Order = Field("big", description="byte order within each 16-bit register")
    word_order: Order = Field("big", description="big: most significant register first")
    bit: int | None = Field(None, ge=0, le=15, description="bool from one bit of a register")
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _bits_default_to_bool(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("register") in ("coil", "discrete"):
            data = {"data_type": "bool", **data}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTag:
        if self.kind in ("coil", "discrete") and self.data_type != "bool":
            raise ValueError(
                f"data_type: a {self.kind} holds one bit; valid: 'bool' (got {self.data_type!r})"
            )
        if self.data_type == "bool" and self.kind in ("holding", "input") and self.bit is None:
            raise ValueError(
                "bit: a bool read from a holding or input register needs the bit number (0-15)"
            )
        if self.bit is not None and (self.data_type != "bool" or self.kind in ("coil", "discrete")):
            raise ValueError("bit: only valid with data_type 'bool' on a holding or input register")
        if self.address + self.register_count - 1 > 65535:
            raise ValueError(f"address: {self.data_type} at {self.address} runs past 65535")
        return self

    @property
    def register_count(self) -> int:
        return REGISTER_COUNT[self.data_type]


REGISTER_COUNT: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
    "bool": 1,
}


class ModbusDevice(Model):
    name: Name
    host: str = "127.0.0.1"
    port: Port = 502
    unit_id: int = Field(1, ge=0, le=255)
    poll_interval_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(1.0, gt=0)
    retries: int = Field(
        0, ge=0, le=10, description="retries of a request before the device counts as down"
    )
    max_registers_per_read: int = Field(125, ge=1, le=125)
    max_bits_per_read: int = Field(2000, ge=1, le=2000)
    max_gap: int = Field(
        0, ge=0, le=124, description="unused registers a read may span to join tags"
    )
    tags: list[ModbusTag] = Field(min_length=1)

    @property
    def source(self) -> str:
        return f"modbus://{self.host}:{self.port}/{self.unit_id}"


class ModbusConfig(ConnectorFile):
    devices: list[ModbusDevice] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ModbusConfig:
        _check_unique("devices", [d.name for d in self.devices], "device name")
        _check_unique(
            "devices[*].tags",
            [f"{t.asset} {t.tag}" for d in self.devices for t in d.tags],
            "asset + tag",
        )
        return self


# --- OPC UA -------------------------------------------------------------------------------


class Deadband(Model):
    type: Literal["absolute", "percent"]
    value: float = Field(ge=0)

    @model_validator(mode="after")
    def _percent_range(self) -> Deadband:
        if self.type == "percent" and self.value > 100:
            raise ValueError(f"value: a percent deadband is 0-100 (got {self.value})")
        return self


class OpcUaTag(Model):
    asset: AssetPath
    tag: TagName
    unit: str | None = None
    node_id: str | None = Field(None, description="e.g. ns=2;s=Press01.Temperature")
    browse_path: str | None = Field(
        None, description="from the Objects folder, e.g. 2:Plant/2:Press01/2:Temperature"
    )
    sampling_interval_s: float | None = Field(
        None, ge=0, description="default: the device's publishing interval"
    )
    deadband: Deadband | None = None
    trigger: Literal["status_value", "status_value_timestamp"] | None = Field(
        None,
        description="what is a change; default: status_value_timestamp (every new source "
        "timestamp is a sample), status_value when a deadband is set",
    )
    queue_size: int = Field(10, ge=1, le=10000)

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaTag:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node_id or browse_path")
        if self.node_id is not None and not NODE_ID_RE.fullmatch(self.node_id):
            raise ValueError(
                f"node_id: {self.node_id!r} is not a NodeId; valid forms: i=85, ns=2;s=Name, "
                "ns=2;i=1001, ns=2;g=<guid>, nsu=<namespace uri>;s=Name"
            )
        if self.browse_path is not None and not BROWSE_PATH_RE.fullmatch(self.browse_path):
            raise ValueError(
                f"browse_path: {self.browse_path!r} is not idx:Name segments joined by '/' "
                "(from the Objects folder), e.g. 2:Plant/2:Press01/2:Temperature"
            )
        return self

    @property
    def effective_trigger(self) -> str:
        if self.trigger:
            return self.trigger
        return "status_value" if self.deadband else "status_value_timestamp"


class OpcUaSecurity(Model):
    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    mode: Literal["SignAndEncrypt", "Sign"] = "SignAndEncrypt"
    certificate: Path = Field(description="client certificate (DER or PEM)")
    private_key: Path
    private_key_password: SecretStr | None = None
    server_certificate: Path = Field(
        description="the server's certificate, pinned: without it nothing checks the server"
    )
    application_uri: str | None = Field(
        None, description="the client's application URI; must match the certificate's"
    )

    @model_validator(mode="after")
    def _files_exist(self) -> OpcUaSecurity:
        for name in ("certificate", "private_key", "server_certificate"):
            path: Path = getattr(self, name)
            if not path.is_file():
                raise ValueError(f"{name}: no such file {str(path)!r}")
        return self


class OpcUaDevice(Model):
    name: Name
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://[^/\s:]+(:\d+)?(/\S*)?$")]
    timeout_s: float = Field(4.0, gt=0)
    publishing_interval_s: float = Field(
        1.0, gt=0, description="subscription publishing interval; also the BAD cadence when down"
    )
    security: OpcUaSecurity | None = None
    username: str | None = None
    password: SecretStr | None = None
    tags: list[OpcUaTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _password_needs_user(self) -> OpcUaDevice:
        if self.password is not None and not self.username:
            raise ValueError("username: a password needs a username")
        return self


class OpcUaConfig(ConnectorFile):
    devices: list[OpcUaDevice] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> OpcUaConfig:
        _check_unique("devices", [d.name for d in self.devices], "device name")
        _check_unique(
            "devices[*].tags",
            [f"{t.asset} {t.tag}" for d in self.devices for t in d.tags],
            "asset + tag",
        )
        return self


# --- loading ------------------------------------------------------------------------------


def _check_unique(where: str, values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{where}: {what} {value!r} appears more than once")
        seen.add(value)


M = TypeVar("M", bound=BaseModel)


ENV_REF_RE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; a value that is exactly ``${NAME}`` is the environment variable NAME
    (so passwords need not be written into the file)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: big maps load fast
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
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
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, path)) from None


def dotted(loc: tuple[int | str, ...]) -> str:
    """('devices', 0, 'tags', 2, 'data_type') -> 'devices[0].tags[2].data_type'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_errors(exc: ValidationError, path: Path, *, what: str = "connector config") -> str:
    lines = [f"invalid {what} {path}:"]
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        field = dotted(tuple(loc))
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
        if sep and kind == "value_error" and re.fullmatch(r"[a-z_]+", head):
            field, msg = (f"{field}.{head}" if field != "(top level)" else head), rest
        got = "" if kind in ("missing", "value_error") else f"; got {err.get('input')!r}"
        lines.append(f"  {field}: {msg}{got}")
    return "\n".join(lines)
