"""Logs: librdkafka's own lines become structlog events (JSON in production), decimals are written
exactly without trailing zeros."""

import io
import json
import time
from dataclasses import replace
from decimal import Decimal as D

import structlog
from confluent_kafka import Producer

from adl_stream.embedded import free_port
from adl_stream.runtime.config import Settings
from adl_stream.runtime.kafka import producer_config
from adl_stream.runtime.logs import configure_logging


def test_decimals_in_log_events_are_exact_without_trailing_zeros():
    out = io.StringIO()
    configure_logging("json", "info", out)
    structlog.get_logger("t").info("shortfall_decided", fund_covered=D("0E-18"), adl_quantity=D("1.500000000000000000"),
                                   funds={"USDT": D("600.000000000000000000")})
    line = json.loads(out.getvalue())
    assert (line["fund_covered"], line["adl_quantity"], line["funds"]) == ("0", "1.5", {"USDT": "600"})


def test_librdkafka_lines_go_through_structlog_as_json_and_nothing_raw_reaches_stderr(capfd):
    out = io.StringIO()
    configure_logging("json", "info", out)
    closed = f"127.0.0.1:{free_port()}"  # nothing listens: librdkafka logs connection failures
    producer = Producer(producer_config(replace(Settings(), bootstrap_servers=closed, processing_guarantee="at-least-once")))
    deadline = time.monotonic() + 10
    while "Connection refused" not in out.getvalue() and time.monotonic() < deadline:
        producer.poll(0.2)  # serves the log lines
    del producer
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    failures = [line for line in lines if line["event"] == "librdkafka" and "Connection refused" in line["message"]]
    assert failures and failures[0]["level"] == "error" and failures[0]["facility"] == "FAIL"
    assert failures[0]["client"].startswith("rdkafka#producer") and closed in failures[0]["thread"]
    assert "%3|" not in capfd.readouterr().err
