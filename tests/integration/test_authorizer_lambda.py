"""The authorizer Lambda as API Gateway calls it (TOKEN authorizer events), against a loopback issuer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from functions.authorizer import handler as authorizer
from tests.oidc_issuer import Issuer, running_issuer

ARN = "arn:aws:execute-api:eu-west-1:123456789012:api1/prod/POST/studies"
CONTEXT = SimpleNamespace(function_name="authorizer", memory_limit_in_mb=256, aws_request_id="r1",
                          invoked_function_arn="arn:aws:lambda:eu-west-1:123456789012:function:authorizer")


@pytest.fixture
def issuer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Issuer]:
    with running_issuer() as running:
        monkeypatch.setenv("SKYPACS_OIDC_ISSUER", running.url)
        monkeypatch.setenv("SKYPACS_OIDC_AUDIENCE", "ohif")
        authorizer.set_verifier(None)
        yield running
        authorizer.set_verifier(None)


def _event(token: str) -> dict[str, str]:
    return {"type": "TOKEN", "authorizationToken": token, "methodArn": ARN}


def test_write_token_may_post(issuer: Issuer) -> None:
    policy = authorizer.handler(_event("Bearer " + issuer.token(scope="skypacs/write", client_id="ohif")),
                                CONTEXT)  # type: ignore[arg-type]
    resources = policy["policyDocument"]["Statement"][0]["Resource"]
    assert "arn:aws:execute-api:eu-west-1:123456789012:api1/prod/POST/*" in resources
    assert policy["context"] == {"access": "write", "scopes": "skypacs/write"}


def test_read_token_gets_a_policy_without_post(issuer: Issuer) -> None:
    # API Gateway then answers 403 to the STOW-RS POST, and serves GETs with the same cached policy.
    policy = authorizer.handler(_event("Bearer " + issuer.token(aud="ohif")), CONTEXT)  # type: ignore[arg-type]
    resources = policy["policyDocument"]["Statement"][0]["Resource"]
    assert not any("/POST/" in r or "/DELETE/" in r for r in resources)
    assert any("/GET/" in r for r in resources)


@pytest.mark.parametrize("token", ["", "Bearer", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt"])
def test_missing_or_bad_token_is_401(issuer: Issuer, token: str) -> None:
    with pytest.raises(Exception, match="^Unauthorized$"):
        authorizer.handler(_event(token), CONTEXT)  # type: ignore[arg-type]


def test_logs_never_carry_the_token(issuer: Issuer, caplog: pytest.LogCaptureFixture) -> None:
    token = issuer.token(scope="skypacs/read", aud="ohif", sub="patient-facing-user@example.org")
    authorizer.handler(_event("Bearer " + token), CONTEXT)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="Unauthorized"):
        authorizer.handler(_event("Bearer " + token + "x"), CONTEXT)  # type: ignore[arg-type]
    records = [r for r in caplog.records if r.name == "skypacs-authorizer"]
    assert [getattr(r, "outcome", None) for r in records] == ["allowed", "unauthenticated"]
    logged = json.dumps([{k: str(v) for k, v in vars(r).items()} for r in records])
    assert token[:40] not in logged and "patient-facing-user" not in logged
