"""The DICOMweb API construct (API Gateway REST + Chalice Lambda + OIDC authorizer + Cognito), with the
constructs it needs, in one small stack: CloudFormation assertions and cdk-nag AwsSolutions and HIPAA.

One app is synthesized per module (jsii dominates the run time); Lambda bundling is skipped.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks

from functions.dicomweb import app as chalice_app
from infra.constructs.api import DicomWebApi, OidcIssuer
from infra.constructs.catalog import Catalog
from infra.constructs.network import Network
from infra.constructs.openapi import secured_operations
from infra.constructs.storage import Storage

STACK_ID = "ApiOnly"
OWN_PATHS = (f"{STACK_ID}/Api",)


class Deployment:
    def __init__(self, context: dict[str, Any], outdir: str) -> None:
        self.app = cdk.App(context={**context, "aws:cdk:bundling-stacks": []}, outdir=outdir)
        self.stack = cdk.Stack(self.app, STACK_ID)
        storage = Storage(self.stack, "Storage")
        network = Network(self.stack, "Network")
        catalog = Catalog(self.stack, "Catalog")
        self.secret = secretsmanager.Secret(self.stack, "Signing")
        self.api = DicomWebApi(
            self.stack, "Api", vpc=network.vpc, bucket=storage.bucket, bucket_key=storage.key,
            table=catalog.table, streaming_url="https://retrieve.example.org", signing_secret=self.secret,
            cors_origins=("https://viewer.example.org",), callback_urls=("https://viewer.example.org/callback",),
            log_key=network.log_key)
        self.api.outputs(self.stack)
        # An external issuer instead of Cognito: a second, small stack.
        other = cdk.Stack(self.app, "ExternalIssuer")
        other_network = Network(other, "Network")
        other_storage, other_catalog = Storage(other, "Storage"), Catalog(other, "Catalog")
        DicomWebApi(other, "Api", vpc=other_network.vpc, bucket=other_storage.bucket,
                    bucket_key=other_storage.key, table=other_catalog.table,
                    issuer=OidcIssuer("https://login.example.org/realms/pacs", ["ohif"]))
        self.template = Template.from_stack(self.stack)
        self.external = Template.from_stack(other)


@pytest.fixture(scope="module")
def deployment(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return Deployment(cdk_context, str(tmp_path_factory.mktemp("cdk.out")))


def _definition(template: Template) -> dict[str, Any]:
    (api,) = template.find_resources("AWS::ApiGateway::RestApi").values()
    body: dict[str, Any] = api["Properties"]["Body"]
    return body


def _functions(template: Template) -> dict[str, dict[str, Any]]:
    return {lid: r["Properties"] for lid, r in template.find_resources("AWS::Lambda::Function").items()
            if lid.startswith("Api")}


def test_every_chalice_route_is_in_the_api_and_only_preflights_and_health_are_open(deployment: Deployment) -> None:
    secured = secured_operations(_definition(deployment.template))
    expected = {(path, method) for path, methods in chalice_app.app.routes.items() for method in methods}
    assert set(secured) == expected
    open_operations = {op for op, guarded in secured.items() if not guarded}
    assert {method for _, method in open_operations} == {"OPTIONS", "GET"}
    assert {path for path, method in open_operations if method == "GET"} == {"/health"}
    assert secured[("/studies", "POST")] and secured[("/studies/{study}", "DELETE")]
    assert secured[("/uploads", "POST")]


def test_authorizer_is_a_token_authorizer_on_the_authorization_header(deployment: Deployment) -> None:
    scheme = _definition(deployment.template)["components"]["securitySchemes"]["oidc"]
    assert scheme["name"] == "Authorization" and scheme["in"] == "header"
    authorizer = scheme["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "token" and authorizer["authorizerResultTtlInSeconds"] == 300


def test_binary_media_types_and_cors_gateway_responses(deployment: Deployment) -> None:
    definition = _definition(deployment.template)
    assert {"multipart/related", "application/dicom", "image/jpeg"} <= set(
        definition["x-amazon-apigateway-binary-media-types"])
    responses = definition["x-amazon-apigateway-gateway-responses"]
    assert set(responses) >= {"UNAUTHORIZED", "ACCESS_DENIED"}
    assert "x-amazon-apigateway-gateway-responses" not in _definition(deployment.external)  # no CORS asked


def test_stage_logs_without_patient_data_and_traces(deployment: Deployment) -> None:
    (stage,) = deployment.template.find_resources("AWS::ApiGateway::Stage").values()
    properties = stage["Properties"]
    assert properties["TracingEnabled"] is True
    (settings,) = properties["MethodSettings"]
    assert settings["LoggingLevel"] == "ERROR" and settings["DataTraceEnabled"] is False
    log_format = properties["AccessLogSetting"]["Format"]
    assert "requestId" in log_format and "querystring" not in log_format.lower()


def test_functions_in_vpc_with_concurrency_tracing_and_environment(deployment: Deployment) -> None:
    functions = _functions(deployment.template)
    by_handler = {p["Handler"]: p for p in functions.values()}
    api, authorizer = by_handler["functions.dicomweb.app.app"], by_handler["functions.authorizer.handler.handler"]
    for fn in (api, authorizer):
        assert fn["Runtime"] == "python3.12" and fn["TracingConfig"] == {"Mode": "Active"}
        assert fn["VpcConfig"]["SubnetIds"] and fn["ReservedConcurrentExecutions"] > 0
    env = api["Environment"]["Variables"]
    assert env["SKYPACS_STREAMING_URL"] == "https://retrieve.example.org"
    assert "SKYPACS_URL_SIGNING_SECRET_ARN" in env and "SKYPACS_URL_SIGNING_KEY" not in env
    assert env["SKYPACS_CORS_ORIGINS"] == "https://viewer.example.org"
    auth_env = authorizer["Environment"]["Variables"]
    assert auth_env["SKYPACS_OIDC_READ_SCOPE"] == "skypacs/read"
    assert auth_env["SKYPACS_OIDC_WRITE_SCOPE"] == "skypacs/write"
    assert "SKYPACS_OIDC_ISSUER" in auth_env and auth_env["SKYPACS_OIDC_AUDIENCE"]
    assert auth_env["SKYPACS_OIDC_WRITE_GROUPS"] == "skypacs-writers"
    external = {p["Handler"]: p for p in _functions(deployment.external).values()}
    assert external["functions.authorizer.handler.handler"]["Environment"]["Variables"][
        "SKYPACS_OIDC_ISSUER"] == "https://login.example.org/realms/pacs"
    assert not deployment.external.find_resources("AWS::Cognito::UserPool")


def test_cognito_user_pool_secure_defaults(deployment: Deployment) -> None:
    (pool,) = deployment.template.find_resources("AWS::Cognito::UserPool").values()
    properties = pool["Properties"]
    assert properties["MfaConfiguration"] == "ON"
    assert properties["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert properties["Policies"]["PasswordPolicy"]["MinimumLength"] >= 12
    assert pool["DeletionPolicy"] == "Retain"
    (group,) = deployment.template.find_resources("AWS::Cognito::UserPoolGroup").values()
    assert group["Properties"]["GroupName"] == "skypacs-writers"
    clients = {lid: c["Properties"]
               for lid, c in deployment.template.find_resources("AWS::Cognito::UserPoolClient").items()}
    viewer = next(p for p in clients.values() if p.get("AllowedOAuthFlows") == ["code"])
    assert viewer["GenerateSecret"] is False
    scopes = str(viewer["AllowedOAuthScopes"])
    assert "'/read'" in scopes and "'/write'" not in scopes  # {ResourceServer}/read
    assert viewer["CallbackURLs"] == ["https://viewer.example.org/callback"]
    script = next(p for p in clients.values() if p.get("AllowedOAuthFlows") == ["client_credentials"])
    assert script["GenerateSecret"] is True


def test_api_role_least_privilege(deployment: Deployment) -> None:
    statements = [s for p in deployment.template.find_resources("AWS::IAM::Policy").values()
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert "s3:*" not in actions and "dynamodb:*" not in actions and "*" not in actions
    deletes = [s for s in statements if "s3:DeleteObject" in s["Action"]]
    assert deletes and all("studies/*" in str(s["Resource"]) and "quarantine" not in str(s["Resource"])
                           for s in deletes)


def test_outputs_name_what_viewers_need(deployment: Deployment) -> None:
    outputs = deployment.template.find_outputs("*")
    assert {"DicomWebUrl", "OidcIssuer", "UserPoolId", "ViewerClientId", "ScriptClientId", "AuthDomain"} <= set(outputs)


def _findings(report: Any) -> list[str]:
    return [f"{v.rule_name} at {path}" for v in report.violations
            for path in (r.construct_path for r in v.violating_resources) if path.startswith(OWN_PATHS)]


@pytest.mark.parametrize("pack", [AwsSolutionsChecks, HIPAASecurityChecks], ids=["AwsSolutions", "HIPAA"])
def test_no_unacknowledged_nag_findings(deployment: Deployment, pack: Any) -> None:
    assert _findings(pack().validate_scope(deployment.stack)) == []
