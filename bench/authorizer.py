#!/usr/bin/env python3
"""The AWS API's authorizer: what one OIDC token verification costs.

Not a test: run it by hand (``python bench/authorizer.py --help``); it needs the ``test`` extra
(PyJWT with cryptography). API Gateway calls the authorizer Lambda once per token per cache period
(300 s), so this cost is paid on a token's first request and on each cache miss, on top of the Lambda
invocation. The issuer is a real one served on loopback (``tests/oidc_issuer.py``: an RSA-2048 key, its
JWKS and discovery document over HTTP), so the cold figure includes fetching discovery + JWKS, as a
fresh Lambda container does (from a real issuer over the internet it costs more: a TLS handshake and the
round trips).

Prints, for ``--tokens`` distinct tokens (default 2,000): the cold first verification (discovery + JWKS
fetched), then warm verifications (keys cached) as p50/p95/p99 in microseconds and verifications/s, and
the same for building the IAM policy answer (``api_policy``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skypacs.dicomweb.oidc import OidcSettings, OidcVerifier, api_policy
from tests.oidc_issuer import running_issuer

ARN = "arn:aws:execute-api:eu-west-1:123456789012:api1/prod/GET/studies"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2000, help="distinct tokens to verify (default 2000)")
    args = parser.parse_args()
    with running_issuer() as issuer:
        tokens = [issuer.token(scope="skypacs/read skypacs/write", sub=f"user-{i}") for i in range(args.tokens)]
        verifier = OidcVerifier(OidcSettings(issuer=issuer.url))
        started = time.perf_counter()
        verifier.verify(tokens[0])
        cold_ms = (time.perf_counter() - started) * 1000
        verify_us, policy_us = [], []
        for token in tokens[1:]:
            started = time.perf_counter()
            principal = verifier.verify(token)
            middle = time.perf_counter()
            api_policy(principal, ARN)
            verify_us.append((middle - started) * 1e6)
            policy_us.append((time.perf_counter() - middle) * 1e6)
    print(f"OIDC verification, RS256 / RSA-2048, {args.tokens} tokens, loopback issuer")
    print(f"  cold (discovery + JWKS fetched): {cold_ms:.1f} ms")
    for name, values in (("verify (keys cached)", verify_us), ("IAM policy", policy_us)):
        print(f"  {name:22} p50 {percentile(values, 0.5):7.0f} us  p95 {percentile(values, 0.95):7.0f} us  "
              f"p99 {percentile(values, 0.99):7.0f} us  {1e6 / statistics.mean(values):8.0f}/s")


if __name__ == "__main__":
    main()
