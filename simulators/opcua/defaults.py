"""The OPC UA simulator's defaults, shared by its CLI declaration and its server."""

from pathlib import Path

DEFAULT_PORT = 4840
DEFAULT_CERT_DIR = Path(".otbridge") / "sim-pki"
PASSWORD_ENV = "OTBRIDGE_SIM_OPCUA_PASSWORD"
NAMESPACE_URI = "urn:otbridge:plant"
