"""otbridge: an open OT/IT bridge for industrial data (Modbus TCP / OPC UA -> Kafka -> Flink)."""

from pathlib import Path

__version__ = "0.1.0"

#: The checkout otbridge runs from (schemas/, jobs/, flink-conf/ live here).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
