"""docs/contract.md, the contract in adl-stream's words, names every topic, record, field, policy
and dead-letter header the code has (it is kept in step with them)."""

import json
import re
from pathlib import Path

from adl_stream.engine import ALLOCATION_POLICIES
from adl_stream.runtime.config import TRIGGER_POLICIES, Topics

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = (ROOT / "docs" / "contract.md").read_text()
NAMED = set(re.findall(r"`([^`]+)`", CONTRACT))


def test_every_record_and_field_of_the_schemas_is_in_the_contract():
    for path in sorted((ROOT / "schemas").glob("*.avsc")):
        schema = json.loads(path.read_text())
        assert schema["name"] in CONTRACT, path.name
        missing = [f["name"] for f in schema["fields"] if f["name"] not in NAMED]
        assert not missing, f"{path.name}: {missing} not in docs/contract.md"


def test_every_topic_and_policy_of_the_settings_is_in_the_contract():
    assert set(Topics().__dict__.values()) <= NAMED
    assert {"<group_id>-changelog"} <= NAMED
    assert set(TRIGGER_POLICIES) <= NAMED and set(ALLOCATION_POLICIES) <= NAMED


def test_the_dead_letter_headers_are_those_the_processor_writes():
    source = (ROOT / "adl_stream" / "runtime" / "processor.py").read_text().split("def _dead_letter", 1)[1]
    headers = re.findall(r'\("([a-z.]+)", ', source.split("self.checkpoint.produce", 1)[0])
    assert headers == ["error", "error.reason", "source.topic", "source.partition", "source.offset"]
    assert set(headers) <= NAMED


def test_the_readme_links_the_contract_and_not_a_file_outside_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/contract.md)" in readme and "../shared" not in readme
