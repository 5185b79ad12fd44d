"""Can records written with one Avro schema be read with another? (Avro schema resolution.)

fastavro resolves a writer schema against a reader schema record by record, and finds a mismatch
only when a record uses it. adl-stream checks a writer schema once, before it reads anything with
it: at start for the schemas of ``writer_schemas``, at the first record of a schema id for the
registry. :func:`resolution_problems` lists what stops the resolution, each naming the field
(``Fill.quantity``), by the rules of the Avro specification ("Schema Resolution"):

- records match by unqualified name (or a reader alias); every reader field must be in the writer
  (by name or alias) or have a default; writer fields the reader lacks are skipped;
- enums match by name; every writer symbol must be a reader symbol, unless the reader has a default;
- ``int`` promotes to ``long``, ``float``, ``double``; ``long`` to ``float``, ``double``;
  ``float`` to ``double``; ``string`` and ``bytes`` to each other;
- a writer union resolves only if every branch does (checked statically: a branch that could not
  be read would dead-letter each record using it); a reader union takes the first branch the
  writer's type resolves to;
- arrays by items, maps by values, fixed by name and size.

Two rules are adl-stream's, for exactness: a reader ``decimal`` needs a writer ``decimal`` whose
scale is at most the reader's and whose integer digits (precision − scale) fit the reader's
(fastavro reads a decimal at the writer's scale, so the value is exact), and a reader
``timestamp-millis`` needs a writer ``timestamp-millis`` (a plain ``long`` would not say its unit).
"""

from __future__ import annotations

PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
PROMOTIONS = {
    "int": ("long", "float", "double"),
    "long": ("float", "double"),
    "float": ("double",),
    "string": ("bytes",),
    "bytes": ("string",),
}


def _named(schema, names: dict) -> None:
    """Collect the named types (records, enums, fixed) of ``schema`` by full name."""
    if isinstance(schema, list):
        for branch in schema:
            _named(branch, names)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed") and "name" in schema:
            names[schema["name"]] = schema
        for field in schema.get("fields", ()):
            _named(field["type"], names)
        for key in ("items", "values"):
            if key in schema:
                _named(schema[key], names)
        if isinstance(kind, (dict, list)):
            _named(kind, names)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Checker:
    def __init__(self, writer, reader) -> None:
        self.writer_names: dict = {}
        self.reader_names: dict = {}
        _named(writer, self.writer_names)
        _named(reader, self.reader_names)
        self.seen: set = set()

    def resolve(self, schema, names: dict):
        """``schema`` with a reference to a named type replaced by its definition; a primitive
        written as ``{"type": "long"}`` (and no logical type) as ``"long"``."""
        if isinstance(schema, str):
            return schema if schema in PRIMITIVES else names.get(schema, schema)
        if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
            return self.resolve(schema["type"], names)
        if isinstance(schema, dict) and schema.get("type") in PRIMITIVES and "logicalType" not in schema:
            return schema["type"]
        return schema

    @staticmethod
    def kind(schema) -> str:
        if isinstance(schema, list):
            return "union"
        if isinstance(schema, str):
            return schema
        return schema["type"] if schema["type"] != "error" else "record"

    @staticmethod
    def describe(schema) -> str:
        if isinstance(schema, list):
            return "union [" + ", ".join(_Checker.describe(b) for b in schema) + "]"
        if isinstance(schema, str):
            return schema
        logical = schema.get("logicalType")
        if logical == "decimal":
            return f"{schema['type']} decimal({schema.get('precision')}, {schema.get('scale', 0)})"
        if logical:
            return f"{schema['type']} {logical}"
        if schema["type"] in ("record", "error", "enum", "fixed"):
            return f"{schema['type']} {schema['name']}"
        return schema["type"]

    def matches(self, writer, reader) -> bool:
        return not self.check(writer, reader, "")

    def check(self, writer, reader, path: str) -> list[str]:
        w, r = self.resolve(writer, self.writer_names), self.resolve(reader, self.reader_names)
        wk, rk = self.kind(w), self.kind(r)
        if wk == "union":
            problems = []
            for branch in w:
                problems += self.check(branch, r, path)
            return problems
        if rk == "union":
            for branch in r:
                if self.matches(w, branch):
                    return []
            return [f"{path}: the writer's {self.describe(w)} matches no branch of the reader's {self.describe(r)}"]
        mismatch = [f"{path}: the writer's {self.describe(w)} cannot be read as the reader's {self.describe(r)}"]
        r_logical = r.get("logicalType") if isinstance(r, dict) else None
        w_logical = w.get("logicalType") if isinstance(w, dict) else None
        if r_logical == "decimal":
            if w_logical != "decimal" or wk != rk:
                return mismatch
            w_scale, r_scale = w.get("scale", 0), r.get("scale", 0)
            if w_scale > r_scale or w["precision"] - w_scale > r["precision"] - r_scale:
                return [f"{path}: the writer's {self.describe(w)} does not fit the reader's {self.describe(r)} "
                        "(a larger scale, or more integer digits)"]
            return []
        if r_logical in ("timestamp-millis",):
            return [] if (w_logical == r_logical and wk == rk) else mismatch
        if r_logical is not None and r_logical != w_logical:
            return mismatch
        if wk != rk and rk not in PROMOTIONS.get(wk, ()):
            return mismatch
        if rk in ("record", "enum", "fixed"):
            names = {_short(r["name"]), *(_short(a) for a in r.get("aliases", ()))}
            if _short(w["name"]) not in names:
                return [f"{path}: the writer's {self.describe(w)} is not the reader's {self.describe(r)} "
                        "(named types match by name or alias)"]
        if rk == "record":
            return self.record(w, r, path)
        if rk == "enum":
            unknown = [s for s in w["symbols"] if s not in r["symbols"]]
            if unknown and "default" not in r:
                return [f"{path}: the writer's symbols {unknown} are not in the reader's enum {r['name']} "
                        f"{r['symbols']}, which has no default"]
            return []
        if rk == "fixed":
            return [] if w["size"] == r["size"] else [f"{path}: fixed size {w['size']}, the reader's is {r['size']}"]
        if rk == "array":
            return self.check(w["items"], r["items"], f"{path}[]")
        if rk == "map":
            return self.check(w["values"], r["values"], f"{path}{{}}")
        return []

    def record(self, w: dict, r: dict, path: str) -> list[str]:
        key = (w["name"], r["name"])
        if key in self.seen:  # a recursive type: already being checked further up
            return []
        self.seen.add(key)
        prefix = path
        by_name = {f["name"]: f for f in w["fields"]}
        problems = []
        for field in r["fields"]:
            written = next((by_name[n] for n in (field["name"], *field.get("aliases", ())) if n in by_name), None)
            where = f"{prefix}.{field['name']}"
            if written is None:
                if "default" not in field:
                    problems.append(f"{where}: the reader's field is not in the writer's schema and has no default")
                continue
            problems += self.check(written["type"], field["type"], where)
        self.seen.discard(key)
        return problems


def resolution_problems(writer, reader) -> list[str]:
    """Why records of ``writer`` cannot be read as ``reader`` (parsed Avro schemas, e.g. from
    ``fastavro.parse_schema``), each starting with the field at fault; empty when they can."""
    top = _short(reader["name"]) if isinstance(reader, dict) and "name" in reader else "value"
    return _Checker(writer, reader).check(writer, reader, top)
