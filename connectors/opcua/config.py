"""An OPC UA connector file: servers (one session and one subscription each) and the nodes
monitored on them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from connectors.core.config import ConnectorFile, DeviceBase, Model, TagBase

NODE_ID_RE = re.compile(r"^(ns=\d+;|nsu=[^;]+;)?(i=\d+|s=.+|g=[0-9A-Fa-f-]{36}|b=\S+)$")
BROWSE_PATH_RE = re.compile(r"^\d+:[^/]+(/\d+:[^/]+)*$")


class Deadband(Model):
    type: Literal["absolute", "percent"]
    value: float = Field(ge=0)

    @model_validator(mode="after")
    def _percent_range(self) -> Deadband:
        if self.type == "percent" and self.value > 100:
            raise ValueError(f"value: a percent deadband is 0-100 (got {self.value})")
        return self


class OpcUaTag(TagBase):
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


class OpcUaDevice(DeviceBase[OpcUaTag]):
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://[^/\s:]+(:\d+)?(/\S*)?$")]
    timeout_s: float = Field(4.0, gt=0)
    publishing_interval_s: float = Field(
        1.0, gt=0, description="subscription publishing interval; also the BAD cadence when down"
    )
    security: OpcUaSecurity | None = None
    username: str | None = None
    password: SecretStr | None = None

    @model_validator(mode="after")
    def _password_needs_user(self) -> OpcUaDevice:
        if self.password is not None and not self.username:
            raise ValueError("username: a password needs a username")
        return self

    @property
    def source(self) -> str:
        return self.endpoint

    @property
    def interval_s(self) -> float:
        return self.publishing_interval_s


class OpcUaConfig(ConnectorFile[OpcUaDevice]):
    pass
