"""otbridge: an open OT/IT bridge for industrial data (Modbus TCP / OPC UA -> Kafka -> Flink).

What otbridge reads at run time is package data (schemas, the Flink config, the jobs' SQL and
rules, the example files), so an installed wheel runs without the checkout.
"""

__version__ = "0.1.0"
