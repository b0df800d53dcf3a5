"""Avro schemas (schemas/*.avsc, the one source of truth) and the Confluent-compatible registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

from otbridge.errors import ConfigError
from otbridge.settings import Settings

#: the top-level schemas/ folder, installed as package data of otbridge (see pyproject.toml)
SCHEMA_DIR = Path(__file__).with_name("schemas")


@cache
def schema_text(name: str) -> str:
    """The Avro schema `schemas/<name>.avsc` as text (e.g. name='Reading')."""
    path = SCHEMA_DIR / f"{name}.avsc"
    if not path.is_file():
        valid = ", ".join(sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc")))
        raise ConfigError(f"no schema named {name!r}; valid: {valid}")
    return path.read_text()


def schema_json(name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(schema_text(name))
    return parsed


def registry_client(settings: Settings) -> SchemaRegistryClient:
    return SchemaRegistryClient(settings.registry.client_conf())


def serializer(
    client: SchemaRegistryClient,
    schema_name: str,
    to_dict: Callable[[Any, Any], dict[str, Any]] | None = None,
) -> AvroSerializer:
    """Confluent wire format (magic byte, 4-byte schema id, Avro body), subject <topic>-value."""
    return AvroSerializer(
        client, schema_text(schema_name), to_dict, conf={"auto.register.schemas": True}
    )


def deserializer(client: SchemaRegistryClient) -> AvroDeserializer:
    """Decodes with the writer schema named by the record's schema id."""
    return AvroDeserializer(client)
