"""The OIDC verifier behind the AWS API's authorizer, against a real issuer served on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest

from skypacs.dicomweb.oidc import (
    OidcSettings,
    OidcVerifier,
    Principal,
    allowed_methods,
    api_policy,
    scopes_of,
)
from skypacs.errors import Unauthenticated
from tests.oidc_issuer import Issuer, new_key, running_issuer

METHOD_ARN = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/prod/GET/studies"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
def verifier(issuer: Issuer) -> OidcVerifier:
    return OidcVerifier(OidcSettings(issuer=issuer.url))


def test_read_scope_reads_only(issuer: Issuer, verifier: OidcVerifier) -> None:
    principal = verifier.verify("Bearer " + issuer.token(scope="openid skypacs/read"))
    assert principal == Principal("user-1", "read", frozenset({"openid", "skypacs/read"}))
    assert principal.may("GET") and principal.may("HEAD")
    assert not principal.may("POST") and not principal.may("DELETE")


def test_write_scope_allows_everything(issuer: Issuer, verifier: OidcVerifier) -> None:
    principal = verifier.verify(issuer.token(scope="skypacs/write"))
    assert principal.access == "write"
    assert all(principal.may(m) for m in ("GET", "POST", "DELETE", "PUT"))


def test_valid_token_without_scopes_is_known_but_allowed_nothing(issuer: Issuer,
                                                                 verifier: OidcVerifier) -> None:
    principal = verifier.verify(issuer.token(scope="openid profile"))
    assert principal.access is None
    policy = api_policy(principal, METHOD_ARN)
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Deny"


def test_scp_claim_as_list(issuer: Issuer, verifier: OidcVerifier) -> None:
    # Okta and Entra ID put scopes in `scp`.
    assert verifier.verify(issuer.token(scope=None, scp=["skypacs/write"])).access == "write"
    assert scopes_of({"scp": "a b", "scope": "c"}) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda i: i.token(lifetime=-120), "expired"),
        (lambda i: i.token(iss="https://evil.example.org"), "another issuer"),
        (lambda i: i.token(key=new_key()), "not valid"),  # right kid, wrong signature
        (lambda i: i.token(kid="unknown-key"), "signing key"),
        (lambda i: "not-a-jwt", "not valid"),
        (lambda i: "", "authentication required"),
    ],
    ids=["expired", "wrong-issuer", "forged-signature", "unknown-kid", "garbage", "empty"],
)
def test_bad_tokens_are_401(issuer: Issuer, verifier: OidcVerifier, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Unauthenticated, match=message):
        verifier.verify(make(issuer))


def test_unsigned_and_hmac_tokens_are_refused(issuer: Issuer, verifier: OidcVerifier) -> None:
    unsigned = jwt.encode({"iss": issuer.url, "sub": "x", "exp": 2**31, "scope": "skypacs/write"}, None,
                          algorithm="none")
    with pytest.raises(Unauthenticated, match="algorithm"):
        verifier.verify(unsigned)
    hmac_token = jwt.encode({"iss": issuer.url, "sub": "x", "exp": 2**31, "scope": "skypacs/write"},
                            "a-public-value-used-as-secret-0123456789", algorithm="HS256",
                            headers={"kid": issuer.kid})
    with pytest.raises(Unauthenticated, match="algorithm"):
        verifier.verify(hmac_token)


def test_audience_from_aud_or_cognito_client_id(issuer: Issuer) -> None:
    verifier = OidcVerifier(OidcSettings(issuer=issuer.url, audiences=("ohif-client",)))
    assert verifier.verify(issuer.token(aud="ohif-client")).access == "read"
    assert verifier.verify(issuer.token(aud=["other", "ohif-client"])).access == "read"
    # Cognito access tokens name the app client in client_id and carry no aud.
    assert verifier.verify(issuer.token(client_id="ohif-client", token_use="access")).access == "read"
    with pytest.raises(Unauthenticated, match="audience"):
        verifier.verify(issuer.token(aud="someone-else"))
    with pytest.raises(Unauthenticated, match="audience"):
        verifier.verify(issuer.token())


def test_keys_fetched_once_through_discovery(issuer: Issuer) -> None:
    verifier = OidcVerifier(OidcSettings(issuer=issuer.url))
    before = issuer.requests
    for _ in range(5):
        verifier.verify(issuer.token())
    assert issuer.requests - before == 2  # discovery document + JWKS, then cached


def test_unreachable_issuer_is_401_not_a_crash() -> None:
    verifier = OidcVerifier(OidcSettings(issuer="http://127.0.0.1:9"))
    token = jwt.encode({"iss": "http://127.0.0.1:9", "exp": 2**31}, new_key(), algorithm="RS256",
                       headers={"kid": "k"})
    with pytest.raises(Unauthenticated, match="discovery document"):
        verifier.verify(token)


def test_policy_covers_the_whole_api_for_the_allowed_methods() -> None:
    # API Gateway caches the policy per token: it must allow the next request on another path too.
    read = api_policy(Principal("u", "read"), METHOD_ARN)
    assert read["policyDocument"]["Statement"][0]["Resource"] == [
        "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/prod/GET/*",
        "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/prod/HEAD/*",
    ]
    assert read["principalId"] == "u" and read["context"]["access"] == "read"
    assert set(allowed_methods(api_policy(Principal("u", "write"), METHOD_ARN))) == {
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}


def test_settings_from_environment() -> None:
    settings = OidcSettings.from_environ({
        "SKYPACS_OIDC_ISSUER": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc/",
        "SKYPACS_OIDC_AUDIENCE": "a, b",
    })
    assert settings.issuer == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc"
    assert settings.audiences == ("a", "b")
    assert (settings.read_scope, settings.write_scope) == ("skypacs/read", "skypacs/write")
    with pytest.raises(RuntimeError, match="https"):
        OidcSettings.from_environ({"SKYPACS_OIDC_ISSUER": "http://issuer.example.org"})


def test_write_group_lifts_a_read_token_to_write(issuer: Issuer) -> None:
    # Cognito gives every user of the viewer client the same scopes; the writers group is per user.
    verifier = OidcVerifier(OidcSettings(issuer=issuer.url, write_groups=("skypacs-writers",)))
    token = issuer.token(scope="openid skypacs/read", **{"cognito:groups": ["skypacs-writers"]})
    assert verifier.verify(token).access == "write"
    assert verifier.verify(issuer.token(scope="skypacs/read", groups=["radiologists"])).access == "read"
    # A group never grants access on its own: the token must be meant for the API (a scope).
    assert verifier.verify(issuer.token(scope="openid", groups=["skypacs-writers"])).access is None
    settings = OidcSettings.from_environ({"SKYPACS_OIDC_ISSUER": "https://issuer.example.org",
                                          "SKYPACS_OIDC_WRITE_GROUPS": "a, b"})
    assert settings.write_groups == ("a", "b")
