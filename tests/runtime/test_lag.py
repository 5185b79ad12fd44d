"""Consumer lag from librdkafka statistics: stable end minus this consumer's position."""

import json

from adl_stream.runtime.config import Settings
from adl_stream.runtime.processor import Processor
from tests import scenarios as sc


def partition(ls, app, lo=0, desired=True):
    return {"desired": desired, "ls_offset": ls, "app_offset": app, "lo_offset": lo, "consumer_lag": -1}


def test_lag_counts_from_the_position_or_the_low_watermark_and_skips_what_is_not_assigned():
    processor = Processor(Settings(bootstrap_servers="127.0.0.1:9", symbols=sc.SYMBOLS))
    processor._on_stats(json.dumps({"topics": {
        "fills": {"partitions": {"0": partition(120, 100), "1": partition(50, -1001, lo=20),
                                 "2": partition(-1001, -1001, lo=-1001), "-1": partition(5, 0, desired=False)}},
        "balances": {"partitions": {"0": partition(7, 7), "1": partition(9, 2, desired=False)}},
    }}))
    lag = {(s.labels["topic"], s.labels["partition"]): s.value
           for f in processor.metrics.registry.collect() for s in f.samples if s.name == "adl_consumer_lag"}
    assert lag == {("fills", "0"): 20, ("fills", "1"): 30, ("balances", "0"): 0}
