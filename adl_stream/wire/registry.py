"""Confluent Schema Registry framing (SPEC §2, with ``schema_registry_url``): ``00``, the schema id
(4 bytes, big-endian), then the Avro binary body, the same body as single-object encoding.

Outputs are written with the id of adl-stream's schema under the subject ``<topic>-value``
(TopicNameStrategy), found at start: registered then if ``auto_register_schemas`` is on, else
looked up, and the start refused if it is not registered or if readers of the subject's latest
version could not read it. The bytes are those of confluent-kafka's ``AvroSerializer`` (a test
holds them equal); the codec writes them itself to keep the decimals exact at the wire scale.

Inputs are read by schema id: the writer schema is fetched from the registry once per id
(``SchemaRegistryClient.get_schema``, itself cached), checked for resolution to adl-stream's
schema of the same name (:mod:`.resolution`) and cached, then fastavro decodes each body with
it. That is faster than confluent-kafka's ``AvroDeserializer`` on the hot path (``bench/wire.py``
measures both). A value in single-object encoding is still read (a producer not yet on the
registry). An unknown id is dead-lettered as ``unknown_schema``, a schema that cannot be resolved
as ``unresolvable_schema``; a registry that does not answer stops the processor
(:class:`RegistryUnavailable`), which then restarts from its last commit.

``mock://`` URLs give confluent-kafka's in-process mock registry; :func:`registry_client` keeps one
per URL in the process, so that producers and the processor of a test share it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from ..engine.errors import Rejected
from .codec import Codec, UnresolvableSchema
from .resolution import resolution_problems
from .schemas import Schema, parse

MAGIC = b"\x00"
HEADER_SIZE = 5

_mocks: dict[str, SchemaRegistryClient] = {}
_mocks_lock = threading.Lock()


def registry_client(conf: Mapping) -> SchemaRegistryClient:
    """A client for ``conf`` (``url`` and the client's properties); one per ``mock://`` URL."""
    url = conf["url"]
    if not url.startswith("mock://"):
        return SchemaRegistryClient(dict(conf))
    with _mocks_lock:
        if url not in _mocks:
            _mocks[url] = SchemaRegistryClient.new_client(dict(conf))
        return _mocks[url]


def subject(topic: str) -> str:
    """The subject of a topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


class RegistryUnavailable(RuntimeError):
    """The schema registry did not answer (or answered an error that is not about the schema)."""


class SchemaNotUsable(RuntimeError):
    """An output schema the registry does not hold, or holds an incompatible version of."""


class RegistryCodec(Codec):
    """Encodes with registered schema ids and decodes by schema id (and single-object encoding).

    ``subjects`` maps the records this codec writes (``AdlOrder``, ...) to their subjects.
    """

    def __init__(self, client: SchemaRegistryClient, subjects: Mapping[str, str], auto_register: bool,
                 schemas: dict[str, Schema] | None = None, writers=()) -> None:
        super().__init__(schemas, writers)
        self.client = client
        self._lock = threading.Lock()
        self._by_id: dict[bytes, tuple[Schema, dict | None] | tuple[str, str]] = {}
        self._headers = {name: MAGIC + self.schema_id(name, subject_, auto_register).to_bytes(4, "big")
                         for name, subject_ in subjects.items()}

    # -- outputs -------------------------------------------------------------------------------------

    def schema_id(self, name: str, subject_: str, auto_register: bool) -> int:
        """The id of adl-stream's schema ``name`` under ``subject_`` (registered if ``auto_register``)."""
        schema = self.schemas[name]
        registered = RegistrySchema(schema.text, "AVRO")
        try:
            if auto_register:
                return self.client.register_schema(subject_, registered)
            found = self.client.lookup_schema(subject_, registered)
            latest = self.client.get_latest_version(subject_)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SchemaNotUsable(
                    f"{name} (schemas/{name}.avsc) is not registered under subject {subject_!r} and "
                    f"auto_register_schemas is off: register it there (the subject's compatibility rule "
                    f"checks it), or set auto_register_schemas = true ({exc})") from None
            if exc.http_status_code == 409:
                raise SchemaNotUsable(f"the registry refuses {name} (schemas/{name}.avsc) under subject "
                                      f"{subject_!r}: {exc}") from None
            raise RegistryUnavailable(f"schema registry error for subject {subject_!r}: {exc}") from None
        except Exception as exc:  # httpx raises many types when the registry is unreachable
            raise RegistryUnavailable(f"schema registry did not answer for subject {subject_!r}: "
                                      f"{type(exc).__name__}: {exc}") from None
        if latest.schema_id != found.schema_id:
            problems = resolution_problems(schema.parsed, parse(latest.schema.schema_str).parsed)
            if problems:
                raise SchemaNotUsable(
                    f"readers of the latest version ({latest.version}, id {latest.schema_id}) of subject "
                    f"{subject_!r} cannot read {name} as adl-stream writes it: {'; '.join(problems)}")
        return found.schema_id

    def header(self, schema) -> bytes:
        """The Confluent framing of the schema id registered for ``schema``'s subject."""
        header = self._headers.get(schema.short_name)
        if header is None:
            raise KeyError(f"no subject given for {schema.short_name} records")
        return header

    # -- inputs --------------------------------------------------------------------------------------

    def decode(self, payload: bytes | None, expected: type):
        if not payload or payload[:1] != MAGIC:
            return super().decode(payload, expected)
        if len(payload) < HEADER_SIZE:
            raise Rejected("undecodable", f"Confluent framing cut short: {len(payload)} bytes")
        known = self._by_id.get(payload[1:HEADER_SIZE])
        if known is None:
            known = self._fetch(payload[1:HEADER_SIZE])
        if isinstance(known[0], str):
            raise Rejected(*known)
        return self.read(payload, HEADER_SIZE, known[0], known[1], expected)

    def _column_readers(self, expected: type):
        """Single-object encoding's, and the Confluent framing of each schema id met so far that is
        adl-stream's own schema of ``expected`` (an id not met yet is read alone, which fetches it)."""
        readers = super()._column_readers(expected)
        columns = self._columns.get(expected)
        if columns is not None:
            fingerprint, reader = columns
            readers += [(MAGIC + raw_id, HEADER_SIZE, reader) for raw_id, known in list(self._by_id.items())
                        if known[1] is None and not isinstance(known[0], str) and known[0].fingerprint == fingerprint]
        return readers

    def _fetch(self, raw_id: bytes):
        schema_id = int.from_bytes(raw_id, "big")
        try:
            found = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise Rejected("unknown_schema", f"schema id {schema_id} is not in the registry") from None
            raise RegistryUnavailable(f"schema registry error fetching schema id {schema_id}: {exc}") from None
        except Exception as exc:
            raise RegistryUnavailable(f"schema registry did not answer for schema id {schema_id}: "
                                      f"{type(exc).__name__}: {exc}") from None
        origin = f"schema id {schema_id}"
        if (found.schema_type or "AVRO") != "AVRO":
            known = ("wrong_schema", f"{origin} is a {found.schema_type} schema, not Avro")
        elif found.references:
            known = ("unresolvable_schema", f"{origin} has references, which adl-stream does not follow")
        else:
            try:
                writer = parse(found.schema_str)
                known = (writer, self.reader_for(writer, origin))
            except UnresolvableSchema as exc:
                known = ("unresolvable_schema", str(exc))
            except Exception as exc:
                known = ("unresolvable_schema", f"{origin}: not an Avro record schema: {type(exc).__name__}: {exc}")
        with self._lock:
            self._by_id[raw_id] = known
        return known
