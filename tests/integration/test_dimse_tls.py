"""DIMSE over TLS (PS3.15 B.1): a pynetdicom SCU stores through a gateway started with a certificate,
with and without required client certificates; certificates are made here, self-signed, with
``cryptography``."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from skypacs.cli import _gateway_options
from skypacs.config import (
    ENV_DIMSE_TLS_CA,
    ENV_DIMSE_TLS_CERTIFICATE,
    ENV_DIMSE_TLS_PRIVATE_KEY,
    load_settings,
)
from skypacs.dimse.server import Gateway, GatewayOptions
from skypacs.dimse.tls import server_ssl_context
from skypacs.embedded import EmbeddedArchive
from tests.conftest import dicom_file
from tests.dicom_files import new_uid, scu


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_certificate: Path
    server_key: Path
    client_certificate: Path
    client_key: Path
    stranger_certificate: Path
    stranger_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, stem: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
                 *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_path, _ = _write(folder, "ca", _certificate("Test CA", ca_key, "Test CA", ca_key, ca=True), ca_key)
    paths: list[Path] = []
    for stem, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        paths.extend(_write(folder, stem, _certificate(stem, key, "Test CA", ca_key, server=server), key))
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    paths.extend(_write(folder, "stranger", _certificate("stranger", stranger_key, "stranger", stranger_key),
                        stranger_key))
    return Pki(ca_path, *paths)


@pytest.fixture
def archive(tmp_path: Path) -> EmbeddedArchive:
    return EmbeddedArchive(load_settings(data_dir=tmp_path / "data", environ={}))


@pytest.fixture
def start(archive: EmbeddedArchive) -> Iterator[Callable[[GatewayOptions], Gateway]]:
    """Start a storing gateway with these options; stopped after the test."""
    started: list[Gateway] = []

    def start(options: GatewayOptions) -> Gateway:
        gateway = Gateway(options, archive.store_service)
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop(timeout=5)


def _client_context(pki: Pki, certificate: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if certificate is not None:
        context.load_cert_chain(certificate, key)
    return context


def _store_over_tls(port: int, context: ssl.SSLContext) -> int | None:
    """The C-STORE status, or None when the association (TLS handshake included) failed."""
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.SOPInstanceUID = new_uid()
    ae = scu("TLSSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="SKYPACS", tls_args=(context, "127.0.0.1"))
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_storing_over_tls(pki: Pki, start: Callable[[GatewayOptions], Gateway]) -> None:
    gateway = start(GatewayOptions(ae_title="SKYPACS", host="127.0.0.1", port=0,
                                   ssl_context=server_ssl_context(pki.server_certificate, pki.server_key)))
    assert _store_over_tls(gateway.port, _client_context(pki)) == 0
    ae = scu("PLAIN")
    ae.add_requested_context(Verification)
    plain = ae.associate("127.0.0.1", gateway.port, ae_title="SKYPACS")
    assert not plain.is_established, "a plain TCP association must not get through a TLS port"


def test_client_certificates_are_required_when_a_ca_is_set(
    pki: Pki, archive: EmbeddedArchive, start: Callable[[GatewayOptions], Gateway], tmp_path: Path
) -> None:
    settings = load_settings(data_dir=tmp_path / "cfg", environ={
        ENV_DIMSE_TLS_CERTIFICATE: str(pki.server_certificate), ENV_DIMSE_TLS_PRIVATE_KEY: str(pki.server_key),
        ENV_DIMSE_TLS_CA: str(pki.ca)}, overrides={"dimse_host": "127.0.0.1", "dimse_port": 0})
    gateway = start(_gateway_options(settings))
    assert _store_over_tls(gateway.port, _client_context(pki, pki.client_certificate, pki.client_key)) == 0
    assert _store_over_tls(gateway.port, _client_context(pki)) is None, "no client certificate"
    assert _store_over_tls(gateway.port, _client_context(pki, pki.stranger_certificate, pki.stranger_key)) is None
    assert archive.catalog.count_instances() + archive.queue.counts().pending == 1


def test_tls_settings_from_the_file_and_their_checks(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "skypacs.toml").write_text(
        f'[dimse]\ntls_certificate = "{pki.server_certificate}"\ntls_private_key = "{pki.server_key}"\n')
    settings = load_settings(data_dir=tmp_path, environ={})
    assert (settings.tls_certificate, settings.tls_private_key, settings.tls_ca) == (
        pki.server_certificate, pki.server_key, None)
    assert _gateway_options(settings).ssl_context.verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="both"):
        load_settings(data_dir=tmp_path / "x", environ={ENV_DIMSE_TLS_CERTIFICATE: str(pki.server_certificate)})
    with pytest.raises(ValueError, match="tls_ca"):
        load_settings(data_dir=tmp_path / "x", environ={ENV_DIMSE_TLS_CA: str(pki.ca)})
    assert _gateway_options(load_settings(data_dir=tmp_path / "x", environ={})).ssl_context is None
