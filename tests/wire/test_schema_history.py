"""The output schemas evolve safely: every released version (schemas/history/<Record>/v<n>.avsc)
is readable by readers of every other, both ways (full transitive compatibility, the README's
policy), by adl-stream's resolution check and by the Apache Avro reference checker; the current
schema is the newest released version."""

import copy
import json
from itertools import permutations

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from adl_stream.wire import SCHEMA_DIR
from adl_stream.wire.resolution import resolution_problems

HISTORY = SCHEMA_DIR / "history"
OUTPUTS = ("AdlOrder", "ShortfallDecision", "AdlIndicator")


def versions(name: str) -> list[dict]:
    paths = sorted((HISTORY / name).glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
    assert [p.stem for p in paths] == [f"v{n}" for n in range(1, len(paths) + 1)], paths
    return [json.loads(p.read_text()) for p in paths]


def incompatibilities(writer: dict, reader: dict) -> tuple[list[str], bool]:
    """(adl-stream's problems, whether the Apache reference checker agrees they are compatible)."""
    ours = resolution_problems(fastavro.parse_schema(copy.deepcopy(writer)), fastavro.parse_schema(copy.deepcopy(reader)))
    reference = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer)))
    return ours, reference.compatibility is SchemaCompatibilityType.compatible


def test_only_the_outputs_have_a_history_and_the_current_schema_is_the_newest_version():
    assert sorted(p.name for p in HISTORY.iterdir() if p.is_dir()) == sorted(OUTPUTS)
    for name in OUTPUTS:
        assert versions(name)[-1] == json.loads((SCHEMA_DIR / f"{name}.avsc").read_text()), (
            f"schemas/{name}.avsc changed: release it as schemas/history/{name}/v{len(versions(name)) + 1}.avsc")


@pytest.mark.parametrize("name", OUTPUTS)
def test_every_version_reads_every_other(name):
    for old, new in permutations(versions(name), 2):
        ours, reference = incompatibilities(new, old)
        assert ours == [] and reference, ours


def test_the_check_refuses_a_change_that_breaks_old_readers():
    v1 = versions("AdlOrder")[0]
    v2 = copy.deepcopy(v1)
    v2["fields"] = [f for f in v2["fields"] if f["name"] != "rank"]  # readers of v1 need it: no default
    ours, reference = incompatibilities(v2, v1)
    assert ours and ours[0].startswith("AdlOrder.rank:") and not reference
    v3 = copy.deepcopy(v1)
    v3["fields"].append({"name": "venue", "type": ["null", "string"], "default": None})  # the allowed change
    assert incompatibilities(v3, v1) == ([], True) and incompatibilities(v1, v3) == ([], True)
