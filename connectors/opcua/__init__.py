"""OPC UA: subscribe to nodes of servers (`otbridge connect opcua`)."""

from connectors.core.protocol import ProtocolSpec
from connectors.opcua.config import OpcUaConfig

PROTOCOL = ProtocolSpec(
    name="opcua",
    help="subscribe to OPC UA servers",
    config=OpcUaConfig,
    connector="connectors.opcua.connector",
    libraries=("asyncua",),
    extra="opcua",
)
