"""TLS to the broker: the processor decides through a TLS connection verified against the
configured CA, and a broker certificate of another CA stops the start at once with exit code 2
naming ``ssl.ca.location``. The embedded Tansu does not serve TLS itself (README "Tansu"): a TLS
terminator on loopback (Python's ``ssl``, asyncio) stands in front of it, and the broker advertises
the terminator's address, so every connection of every client goes through TLS."""

import asyncio
import datetime
import ipaddress
import ssl
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adl_stream.embedded import EmbeddedBroker, free_port
from adl_stream.runtime.logs import LIBRDKAFKA_LOG
from adl_stream.engine import ShortfallDecision
from adl_stream.wire import Codec
from tests import scenarios as sc
from tests.conftest import Feed, fresh_settings, read_topic, write_config
from tests.integration.test_processor import run_scenario

CODEC = Codec()

pytestmark = pytest.mark.integration


def make_ca_and_broker_cert(directory, name: str):
    """(CA certificate path, broker certificate path, broker key path), for 127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, broker_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"adl-stream test CA {name}")])

    def certificate(subject, key, issuer_key, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    paths = [directory / f"{name}-ca.pem", directory / f"{name}-broker.pem", directory / f"{name}-broker.key"]
    paths[0].write_bytes(certificate(ca_name, ca_key, ca_key, True))
    paths[1].write_bytes(certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
                                     broker_key, ca_key, False))
    paths[2].write_bytes(broker_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


def serve_tls(cert, key, upstream_port: int | None = None) -> int:
    """A TLS endpoint on a free loopback port with the broker certificate ``cert``: it forwards
    each connection's plaintext to ``upstream_port`` (the broker), or, without one, only completes
    handshakes. Its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def forward(reader, writer):
        if upstream_port is None:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(forward, "127.0.0.1", 0, ssl=context))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return server.sockets[0].getsockname()[1]


@pytest.fixture
def tls_broker(tmp_path):
    """(broker behind a TLS terminator, its CA): the broker advertises the terminator."""
    ca, cert, key = make_ca_and_broker_cert(tmp_path, "broker")
    listener = free_port()
    port = serve_tls(cert, key, upstream_port=listener)
    client = {"security.protocol": "SSL", "ssl.ca.location": str(ca)}
    with EmbeddedBroker(tmp_path / "tansu.log", port=listener, advertised=f"127.0.0.1:{port}",
                        client_config=client) as broker:
        yield broker, client


def test_the_processor_decides_through_tls_verified_against_the_configured_ca(tls_broker, start_processor):
    broker, client = tls_broker
    settings = fresh_settings(broker, **client)
    running = start_processor(settings)
    run_scenario(Feed(settings), running)
    decisions = read_topic(settings, settings.topics.adl_decisions, len(sc.EXPECTED_DECISIONS))
    assert {d.event_id: sc.decision_summary(d) for d in (CODEC.decode(m.value(), ShortfallDecision)
                                                          for m in decisions)} == sc.EXPECTED_DECISIONS
    assert running.close() == 0
    # Only TLS reaches it: a plaintext client gets no metadata.
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": broker.bootstrap, "logger": LIBRDKAFKA_LOG}).list_topics(timeout=3)


def test_a_broker_certificate_of_another_ca_stops_the_start_with_exit_2_naming_the_ca(settings, tmp_path):
    _, cert, key = make_ca_and_broker_cert(tmp_path, "broker")
    other_ca, _, _ = make_ca_and_broker_cert(tmp_path, "other")
    port = serve_tls(cert, key)
    config = write_config(settings, tmp_path / "adl.toml", startup_timeout_s=60)
    text = open(config).read().replace(f"bootstrap_servers = {settings.bootstrap_servers!r}",
                                       f'bootstrap_servers = "127.0.0.1:{port}"')
    text += f'"security.protocol" = "SSL"\n"ssl.ca.location" = "{other_ca}"\n'
    open(config, "w").write(text)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "adl_stream.cli", "run", "--config", config, "--log-format", "json"],
                            capture_output=True, text=True, timeout=90)
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:] + result.stdout[-2000:]
    output = result.stdout + result.stderr
    assert 'kafka.\\"ssl.ca.location\\"' in output or 'kafka."ssl.ca.location"' in output, output[-2000:]
    assert str(other_ca) in output and "certificate verify failed" in output
    assert took < 30  # at once: not retried for startup_timeout_s (60 s)
