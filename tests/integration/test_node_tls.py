"""Mutual TLS between the gateway and an `inhouse node`: a private CA signs the node's
server certificate and the gateway's client certificate; callers without one are refused
during the handshake, before the node token is even read."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.server import InhouseProcess

MODEL = "smollm2-135m-instruct"
TOKEN = "node-token-for-tls-tests-0123456789"


@dataclass(frozen=True)
class Pki:
    ca: Path
    node_cert: Path
    node_key: Path
    gateway_cert: Path
    gateway_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    common_name: str,
    usage: x509.ObjectIdentifier,
    directory: Path,
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = directory / f"{common_name}.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, _write_key(key, directory / f"{common_name}.key")


def make_pki(directory: Path) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("inhouse test CA")
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    node = _issue(ca_key, ca_name, "node", ExtendedKeyUsageOID.SERVER_AUTH, directory)
    gateway = _issue(ca_key, ca_name, "gateway", ExtendedKeyUsageOID.CLIENT_AUTH, directory)
    return Pki(ca_path, *node, *gateway)


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InhouseProcess, Pki]]:
    directory = tmp_path_factory.mktemp("node-tls")
    pki = make_pki(directory)
    node = InhouseProcess(directory / "node-data", INHOUSE_NODE_TOKEN=TOKEN)
    node.base_url = node.base_url.replace("http://", "https://")
    tls = ("--tls-cert", str(pki.node_cert), "--tls-key", str(pki.node_key))
    probe = ssl.create_default_context(cafile=str(pki.ca))
    probe.load_cert_chain(str(pki.gateway_cert), str(pki.gateway_key))
    node.start(180.0, "node", "--model", MODEL, *tls, "--tls-client-ca", str(pki.ca), tls=probe)
    try:
        yield node, pki
    finally:
        node.stop()


def test_the_node_refuses_a_caller_without_a_client_certificate(
    tls_node: tuple[InhouseProcess, Pki],
) -> None:
    node, pki = tls_node
    without = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{node.base_url}/v1/node/status", verify=without, timeout=10)
    plain = node.base_url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/v1/node/status", timeout=10)

    with_cert = ssl.create_default_context(cafile=str(pki.ca))
    with_cert.load_cert_chain(str(pki.gateway_cert), str(pki.gateway_key))
    status = httpx.get(
        f"{node.base_url}/v1/node/status",
        headers={"Authorization": f"Bearer {TOKEN}"},
        verify=with_cert,
        timeout=10,
    )
    assert status.status_code == 200


def test_the_gateway_reaches_the_node_over_mutual_tls(
    tls_node: tuple[InhouseProcess, Pki], tmp_path: Path
) -> None:
    node, pki = tls_node
    gateway = InhouseProcess(
        tmp_path / "gateway-data",
        builtin_model=False,
        INHOUSE_UPSTREAM_NODE_TLS=TOKEN,
        INHOUSE_GATEWAY__UPSTREAM_CA_FILE=str(pki.ca),
        INHOUSE_GATEWAY__UPSTREAM_CLIENT_CERT_FILE=str(pki.gateway_cert),
        INHOUSE_GATEWAY__UPSTREAM_CLIENT_KEY_FILE=str(pki.gateway_key),
    )
    gateway.cli(
        "models", "add", "edge", "--url", f"{node.base_url}/v1",
        "--upstream-model", MODEL, "--api-key-env", "INHOUSE_UPSTREAM_NODE_TLS",
    )  # fmt: skip
    gateway.start()
    try:
        key = gateway.new_key("clinic")
        client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0)
        answer = client.chat.completions.create(
            model="edge",
            messages=[{"role": "user", "content": "Which city is the capital of France?"}],
            temperature=0,
            max_tokens=16,
        )
        assert "Paris" in (answer.choices[0].message.content or "")
    finally:
        gateway.stop()
