"""TLS for the DIMSE gateway (PS3.15 B.1, the Basic TLS Secure Transport Connection Profile).

The gateway's certificate and private key make a server context; a CA bundle, when given, makes the
gateway require and verify a client certificate signed by it (mutual TLS), which is how PS3.15 B.1
peers authenticate each other. TLS 1.2 is the floor (PS3.15 B.9, BCP 195).
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_ssl_context(certificate: Path, private_key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """A server context from PEM files; ``ca`` set = client certificates required and checked against it.

    Errors surface at startup (FileNotFoundError, ssl.SSLError), not on the first association.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=certificate, keyfile=private_key)
    if ca is not None:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


__all__ = ["server_ssl_context"]
