"""A Modbus connector file: devices (one unit id on one TCP connection each) and their tags.

The data types, register kinds and byte/word orders are otbridge.codec.modbus's, the table
the simulator encodes with.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from connectors.core.config import ConnectorFile, DeviceBase, TagBase
from otbridge.codec.modbus import BIT_KINDS, DataType, Order, RegisterKind, register_count
from otbridge.files import Port


class ModbusTag(TagBase):
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
        if isinstance(data, dict) and data.get("register") in BIT_KINDS:
            data = {"data_type": "bool", **data}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTag:
        bits = self.kind in BIT_KINDS
        if bits and self.data_type != "bool":
            raise ValueError(
                f"data_type: a {self.kind} holds one bit; valid: 'bool' (got {self.data_type!r})"
            )
        if self.data_type == "bool" and not bits and self.bit is None:
            raise ValueError(
                "bit: a bool read from a holding or input register needs the bit number (0-15)"
            )
        if self.bit is not None and (self.data_type != "bool" or bits):
            raise ValueError("bit: only valid with data_type 'bool' on a holding or input register")
        if self.address + self.register_count - 1 > 65535:
            raise ValueError(f"address: {self.data_type} at {self.address} runs past 65535")
        return self

    @property
    def register_count(self) -> int:
        return register_count(self.data_type)


class ModbusDevice(DeviceBase[ModbusTag]):
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

    @property
    def source(self) -> str:
        return f"modbus://{self.host}:{self.port}/{self.unit_id}"

    @property
    def interval_s(self) -> float:
        return self.poll_interval_s


class ModbusConfig(ConnectorFile[ModbusDevice]):
    pass
