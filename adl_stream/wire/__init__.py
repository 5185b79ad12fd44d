"""The wire format: Avro records from ``schemas/``, framed by Avro single-object encoding or, with
a schema registry, by Confluent's framing (:mod:`.registry`); other writer schemas read by Avro
schema resolution (:mod:`.resolution`)."""

from .codec import Codec, UnresolvableSchema
from .schemas import SCHEMA_DIR, Schema, load_schemas, load_writer_schemas

__all__ = ["SCHEMA_DIR", "Codec", "Schema", "UnresolvableSchema", "load_schemas", "load_writer_schemas"]
