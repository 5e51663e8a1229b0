"""A real OIDC issuer for tests: an RSA key, its JWKS and discovery document served over loopback HTTP,
and tokens signed with it (no network, no mocks of the verifier's fetching)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class Issuer:
    url: str
    key: rsa.RSAPrivateKey
    kid: str = "test-key-1"
    requests: int = 0

    def token(self, *, scope: str | None = "skypacs/read", lifetime: int = 300, key: Any = None,
              kid: str | None = None, algorithm: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"iss": self.url, "sub": "user-1", "iat": now, "exp": now + lifetime}
        if scope is not None:
            payload["scope"] = scope
        payload.update(claims)
        signing_key = key if key is not None else self.key
        return jwt.encode(payload, signing_key, algorithm=algorithm, headers={"kid": kid or self.kid})


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    key = new_key()
    issuer = Issuer(url="", key=key)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": issuer.kid, "use": "sig", "alg": "RS256"})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.requests += 1
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks.json"}
            elif self.path == "/jwks.json":
                body = {"keys": [jwk]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
