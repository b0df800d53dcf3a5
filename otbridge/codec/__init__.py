"""The one codec layer: `avro` writes Reading records in the Confluent wire format, `wire`
decodes that format (the Python twin of the jobs' Java decode_reading), `modbus` puts values
in Modbus registers and reads them back."""
