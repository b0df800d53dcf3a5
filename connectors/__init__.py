"""Source connectors: shop-floor devices -> Avro Readings in Kafka, one folder per protocol
(`connectors/<protocol>/`, found by `otbridge connect`), the shared parts in `core/`."""
