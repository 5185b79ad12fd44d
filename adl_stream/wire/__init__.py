"""The wire format: Avro records from ``schemas/``, framed by Avro single-object encoding."""

from .codec import Codec
from .schemas import SCHEMA_DIR, Schema, load_schemas

__all__ = ["Codec", "SCHEMA_DIR", "Schema", "load_schemas"]
