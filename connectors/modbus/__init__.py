"""Modbus TCP: poll register maps of devices (`otbridge connect modbus`)."""

from connectors.core.protocol import ProtocolSpec
from connectors.modbus.config import ModbusConfig

PROTOCOL = ProtocolSpec(
    name="modbus",
    help="poll Modbus TCP devices",
    config=ModbusConfig,
    connector="connectors.modbus.connector",
    libraries=("pymodbus",),
    extra="modbus",
)
