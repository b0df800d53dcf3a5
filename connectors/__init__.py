"""Source connectors: Modbus TCP and OPC UA devices -> Avro Readings in Kafka."""
