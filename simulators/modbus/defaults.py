"""The Modbus simulator's defaults, shared by its CLI declaration and its server."""

DEFAULT_PORT = 5020
