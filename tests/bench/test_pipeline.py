"""The end-to-end benchmark's machinery (bench/pipeline.py) on a small crash, on the real broker:
the engines alone do the same work as the processor over the same records. No assertion on how fast."""

import uuid
from dataclasses import replace

import pytest

from adl_stream.engine import LiquidationShortfall
from bench import pipeline

pytestmark = pytest.mark.integration


def test_the_engines_alone_decide_the_crash_the_processor_decides(broker):
    records = pipeline.crash_records(400)  # the severe crash's leverages: ADL within a few hundred traders
    settings = replace(pipeline.settings_for(broker, f"alone{uuid.uuid4().hex[:6]}."), log_level="error",
                       indicator_interval_ms=5_000)
    count = pipeline.prefill(settings, records)
    through_kafka = pipeline.adl_stream(settings, count)
    alone = pipeline.engine_alone(settings, records)
    assert alone["records"] == count == len(records) == through_kafka["records"]
    assert through_kafka["adl_shortfalls"] > 0 and alone["orders"] == through_kafka["orders"] > 0
    assert through_kafka["shortfalls"] == sum(isinstance(r, LiquidationShortfall) for r in records)
    assert alone["indicators"] > 0 and alone["seconds"] > 0 and alone["take_s"] > 0
