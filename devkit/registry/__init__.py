"""The embedded, Confluent-compatible schema registry (Avro), stored in the compacted ``_schemas`` topic.

Production points ``schema_registry.url`` at Confluent, Karapace or Apicurio's ccompat API instead; this one
exists so that a laptop or CI needs nothing but Kafka. See server.py for the REST subset it serves.
"""

from devkit.registry.server import EmbeddedRegistry, RegistryThread, build_app
from devkit.registry.store import KafkaSchemaStore, RegistryError

__all__ = ["EmbeddedRegistry", "KafkaSchemaStore", "RegistryError", "RegistryThread", "build_app"]
