"""Latency of the processor's loop: it takes input as soon as it comes, and an open transaction's
deadline bounds the wait for more (Processor._consume), so a paced input is neither held for
poll_timeout_ms before it is consumed nor kept uncommitted past commit_interval_ms while the loop
waits; and a transaction holding a shortfall decision commits once nothing more is released."""

import gc
import time
from dataclasses import replace
from decimal import Decimal as D

import pytest

from adl_stream.engine import ShortfallDecision
from adl_stream.runtime.memory import YOUNG_THRESHOLD
from adl_stream.runtime.processor import DECISION_SHARE, Processor
from adl_stream.wire import Codec
from tests import scenarios as sc
from tests.conftest import Feed, metric, read_topic, wait_for

pytestmark = pytest.mark.integration
codec = Codec()


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


def test_a_shortfall_decision_commits_once_nothing_more_is_released_not_after_the_interval(settings,
                                                                                          start_processor):
    # Ten minutes of interval and a batch never filled: records without a decision wait for them;
    # the transaction that holds a decision commits as soon as the merges release nothing more.
    running = start_processor(replace(settings, batch_size=10_000, commit_interval_ms=600_000))
    p, feed = running.processor, Feed(settings)
    feed.send(*sc.SETUP)
    running.wait_handled(len(sc.SETUP))
    time.sleep(0.5)
    assert metric(p, "adl_transactions_total", result="committed") == 0  # no decision: the interval holds
    feed.send(sc.E1)
    decisions = read_topic(settings, settings.topics.adl_decisions, 1, timeout=10)
    assert [codec.decode(m.value(), ShortfallDecision).event_id for m in decisions] == ["E1"]
    assert metric(p, "adl_transactions_total", result="committed") == 1  # the setup with it, in one
    assert running.close() == 0


def test_a_decision_commits_a_fraction_of_the_interval_after_it_while_records_keep_coming(
        settings, start_processor, monkeypatch):
    # A backlog: the shortfall, then far more fills of later event time than one interval applies.
    # Without the bound, the decision waited in a transaction held open for the whole interval.
    commits = []
    commit = Processor._commit

    def recorded(self, *args, **kwargs):
        commits.append((self._uncommitted, bool(self._decided)))
        commit(self, *args, **kwargs)

    monkeypatch.setattr(Processor, "_commit", recorded)
    after = [sc.fill(f"g{i}", f"X{i % 700}", "BUY" if i % 2 else "SELL", "0.001", 90, 5_000 + i) for i in range(40_000)]
    Feed(settings).send(*sc.SETUP, sc.E1, *after)
    thresholds = gc.get_threshold()
    running = start_processor(replace(settings, batch_size=1_000_000, commit_interval_ms=50))
    running.wait_handled(len(sc.SETUP) + 1 + len(after))
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD != thresholds[0]  # while it runs (memory.py)
    assert running.close() == 0
    assert gc.get_threshold() == thresholds  # and back once it stopped
    with_decision = [records for records, decided in commits if decided]
    others = [records for records, decided in commits if not decided]
    assert len(with_decision) == 1 and others, commits
    # a fifth of the interval against whole intervals of records (the ratio holds on any machine)
    assert DECISION_SHARE == 5 and with_decision[0] < max(others) / 2, commits
