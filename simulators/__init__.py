"""Plant simulators: one seeded behaviour model per machine, served by one server per protocol.

`core/` is the plant apart from any protocol: the plant file (`plant`), the behaviour model
(`model`), scenarios and faults, the `PlantRuntime` (with a `ManualClock`, the model without
any sockets), the control port, and the server lifecycle every protocol shares (`common`).
Each protocol is a folder (`modbus/`, `opcua/`) whose `__init__` declares its command-line
options and whose `server.py` is runnable (`python -m simulators.modbus.server`) and holds the
in-process server (`ModbusSimulator`, `OpcUaSimulator`). See simulators/README.md.
"""
