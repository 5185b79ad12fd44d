"""The processor takes input as soon as it comes, and an open transaction's deadline bounds the wait
for more (Processor._consume): a paced input is neither held for poll_timeout_ms before it is
consumed nor kept uncommitted past commit_interval_ms while the loop waits for input."""

import time
from dataclasses import replace
from decimal import Decimal as D

import pytest

from tests import scenarios as sc
from tests.conftest import Feed, metric, wait_for

pytestmark = pytest.mark.integration


def test_a_record_sent_to_a_waiting_processor_is_committed_long_before_the_poll_timeout(settings, start_processor):
    # A 3 s poll timeout: librdkafka's consume(batch_size, 3 s) waited all of it for a batch that
    # never fills, then the loop waited as long again with the transaction open.
    running = start_processor(replace(settings, poll_timeout_ms=3_000, commit_interval_ms=100))
    p = running.processor
    wait_for(lambda: metric(p, "adl_ready") == 1, 60, "the processor ready")
    time.sleep(0.5)  # in its consume call, waiting
    for n in range(1, 4):  # one record at a time, each committed before the next is sent
        sent = time.monotonic()
        Feed(settings).send(sc.FundFlow(f"d{n}", "USDT", "DEPOSIT", D(1), 1_000 + n))
        # the fund's balance gauge is set after the commit that holds the deposit
        wait_for(lambda n=n: metric(p, "adl_insurance_fund_balance", fund_id="USDT") >= n, 10, f"deposit {n} committed")
        assert time.monotonic() - sent < 2.0, f"record {n} took {time.monotonic() - sent:.2f} s to commit"
    assert running.close() == 0
