"""Plant simulators: one seeded behaviour model per machine, served over Modbus TCP and OPC UA.

`modbus_server.main` and `opcua_server.main` are runnable servers; `ModbusSimulator` and
`OpcUaSimulator` start them in-process; `PlantRuntime` (with a `ManualClock`) is the model
without any sockets. See simulators/README.md.
"""
