"""TLS at start: a broker whose certificate the configured CA did not sign stops the start at once
with exit code 2, naming ``ssl.ca.location`` (a TLS endpoint on loopback stands in for the broker:
the embedded Tansu does not serve TLS, README "Tansu")."""

import datetime
import ipaddress
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import write_config

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


def serve_tls(cert, key) -> int:
    """A TLS endpoint on a free loopback port that completes handshakes (then closes): its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))

    def accept():
        while True:
            connection, _ = server.accept()
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1]


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
