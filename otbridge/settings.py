"""Settings: every address, port and credential is configuration, never code.

Sources, highest priority first: environment variables (``OTBRIDGE_`` prefix, ``__`` between
nesting levels, e.g. ``OTBRIDGE_STACK__KAFKA_PORT=19092``), then a YAML file named by
``OTBRIDGE_CONFIG`` (or ``otbridge.yaml`` in the working directory), then the defaults below,
which match the local stack in DESIGN.md.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from otbridge.errors import ConfigError

LOOPBACK = "127.0.0.1"
#: the state folder when none is configured: `.otbridge` in the working directory
DEFAULT_STATE_DIR = Path(".otbridge")


class StackSettings(BaseModel):
    """The local stack that `otbridge stack up` starts (not used against existing clusters).

    Relative paths are relative to the working directory the settings were loaded in; they
    are made absolute then, since the stack's processes run in folders of their own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: Path = DEFAULT_STATE_DIR
    #: the fetched jars (Kafka, Apicurio, Flink connectors, the jobs' UDF); default
    #: <state_dir>/lib. A second stack (e.g. the tests') may share the first one's.
    lib_dir: Path = DEFAULT_STATE_DIR / "lib"
    host: str = LOOPBACK
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    registry_port: int = Field(8080, ge=1, le=65535)
    flink_rest_port: int = Field(8081, ge=1, le=65535)
    flink_rpc_port: int = Field(6123, ge=1, le=65535)
    kafka_heap: str = "1g"
    registry_heap: str = "512m"
    flink_taskmanager_slots: int = Field(8, ge=1)
    start_timeout_s: float = Field(180.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _absolute_paths(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        state = Path(data.get("state_dir") or DEFAULT_STATE_DIR).absolute()
        lib = Path(data.get("lib_dir") or state / "lib").absolute()
        return {**data, "state_dir": state, "lib_dir": lib}

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"


class KafkaSettings(BaseModel):
    """Kafka client settings; `librdkafka()` turns them into librdkafka's dotted keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = ""  # empty: the local stack's broker
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    topic_prefix: str = ""

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "kafka.security_protocol is "
                f"{self.security_protocol}: set kafka.sasl_mechanism "
                "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512), kafka.sasl_username and "
                "kafka.sasl_password"
            )
        return self

    def librdkafka(self) -> dict[str, str]:
        conf = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf

    def java(self) -> dict[str, str]:
        """The same settings as Java client properties (for Flink's Kafka connector)."""
        conf = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism and self.sasl_username and self.sasl_password:
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if self.sasl_mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.jaas.config"] = (
                f'{module} required username="{self.sasl_username}" '
                f'password="{self.sasl_password.get_secret_value()}";'
            )
        return conf


class RegistrySettings(BaseModel):
    """A Confluent-compatible schema registry (Apicurio's ccompat API locally)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = ""  # empty: the local stack's registry
    basic_auth_username: str | None = None
    basic_auth_password: SecretStr | None = None

    def client_conf(self) -> dict[str, str]:
        conf = {"url": self.url}
        if self.basic_auth_username and self.basic_auth_password:
            conf["basic.auth.user.info"] = (
                f"{self.basic_auth_username}:{self.basic_auth_password.get_secret_value()}"
            )
        return conf


class FlinkSettings(BaseModel):
    """The Flink cluster jobs are submitted to (the local session cluster by default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rest_url: str = ""  # empty: the local stack's JobManager


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OTBRIDGE_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    stack: StackSettings = Field(default_factory=StackSettings)  # paths: the cwd of loading
    kafka: KafkaSettings = KafkaSettings()
    registry: RegistrySettings = RegistrySettings()
    flink: FlinkSettings = FlinkSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, config_file()))

    @model_validator(mode="after")
    def _default_to_local_stack(self) -> Settings:
        s = self.stack
        # frozen models: fill the empty addresses with the local stack's
        if not self.kafka.bootstrap_servers:
            object.__setattr__(
                self,
                "kafka",
                self.kafka.model_copy(update={"bootstrap_servers": f"{s.host}:{s.kafka_port}"}),
            )
        if not self.registry.url:
            object.__setattr__(
                self,
                "registry",
                self.registry.model_copy(
                    update={"url": f"http://{s.host}:{s.registry_port}/apis/ccompat/v7"}
                ),
            )
        if not self.flink.rest_url:
            object.__setattr__(
                self,
                "flink",
                self.flink.model_copy(update={"rest_url": f"http://{s.host}:{s.flink_rest_port}"}),
            )
        return self

    @cached_property
    def topics(self) -> Topics:
        return Topics(prefix=self.kafka.topic_prefix)


class Topics:
    """otbridge's topic names, with the per-site or per-tenant prefix applied."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.readings = f"{prefix}iiot.readings"
        self.assets = f"{prefix}iiot.assets"
        self.oee = f"{prefix}iiot.oee"
        self.alerts = f"{prefix}iiot.alerts"
        self.readings_1m = f"{prefix}iiot.readings.1m"
        self.readings_1h = f"{prefix}iiot.readings.1h"
        self.dlq = f"{prefix}iiot.dlq"
        #: wall-clock ticks the conditions job writes and reads, so a silent plant's deadlines
        #: (stale timeouts) still come due (jobs/conditions)
        self.clock = f"{prefix}iiot.clock"

    def all(self) -> list[str]:
        return [
            self.readings,
            self.assets,
            self.oee,
            self.alerts,
            self.readings_1m,
            self.readings_1h,
            self.dlq,
            self.clock,
        ]


def config_file() -> Path:
    return Path(os.environ.get("OTBRIDGE_CONFIG", "otbridge.yaml"))


def load_settings(**overrides: Any) -> Settings:
    """Load settings, turning validation errors into a ConfigError that names each field."""
    path = config_file()
    if "OTBRIDGE_CONFIG" in os.environ and not path.is_file():
        raise ConfigError(f"OTBRIDGE_CONFIG names {path}, which is not a file")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=str(path))) from None


def format_validation_error(exc: ValidationError, *, source: str) -> str:
    lines = [f"invalid configuration ({source} or OTBRIDGE_* environment variables):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        ctx = err.get("ctx") or {}
        if "expected" in ctx and str(ctx["expected"]) not in msg:
            msg += f" (valid: {ctx['expected']})"
        lines.append(f"  {field}: {msg}; got {err.get('input')!r}")
    return "\n".join(lines)
