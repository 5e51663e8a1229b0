"""The DICOMweb API: the Chalice app on Lambda behind API Gateway (REST), an OIDC authorizer, and the
Cognito user pool that issues its tokens unless another OIDC issuer is named.

- REST API, because Chalice speaks the REST (payload 1.0) format; defined by an OpenAPI document built
  from the Chalice app's own routes (:mod:`infra.constructs.openapi` says why), regional endpoint,
  binary media types for DICOM, images and multipart, access logs without query strings (they may
  hold patient names), execution logs at ERROR without request or response data, X-Ray, throttling.
- Authentication: a TOKEN authorizer Lambda (``functions/authorizer``, :mod:`skypacs.dicomweb.oidc`)
  verifies the bearer JWT of any OIDC issuer; REST APIs have no native JWT authorizer, and a Cognito
  authorizer would tie the API to Cognito. By default the stack makes a Cognito user pool (no
  self-sign-up, MFA required, strong passwords) with the resource server ``skypacs`` and its scopes
  ``skypacs/read`` and ``skypacs/write``, an app client for browser viewers (OHIF: authorization code
  with PKCE, no secret, read scope unless told otherwise) and one for scripts (client credentials, both
  scopes). In Cognito, scopes follow the app client, so per-user write access is a group:
  members of ``skypacs-writers`` may store and delete with the viewer's read-scoped token.
- Large answers and uploads: the function redirects study/series retrieval and answers over 4 MB to
  the streaming service (``SKYPACS_STREAMING_URL``, the signing key read from Secrets Manager at run
  time), and ``POST /uploads`` presigns S3 PUTs under ``incoming/`` (the indexer ingests them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Acknowledgment as Ack
from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, lambda_code
from infra.constructs.network import log_encryption_key
from infra.constructs.openapi import lambda_invocation_uri, openapi_definition
from infra.constructs.search import Search, acknowledge_iam5, acknowledge_lambda_findings
from skypacs.adapters.dynamodb_catalog import SOP_INDEX
from skypacs.config import (
    ENV_BUCKET,
    ENV_CATALOG_TABLE,
    ENV_CORS_ORIGINS,
    ENV_EVENT_BUS,
    ENV_OIDC_AUDIENCE,
    ENV_OIDC_ISSUER,
    ENV_OIDC_READ_SCOPE,
    ENV_OIDC_WRITE_GROUPS,
    ENV_OIDC_WRITE_SCOPE,
    ENV_OPENSEARCH_ENDPOINT,
    ENV_OPENSEARCH_PREFIX,
    ENV_STREAMING_URL,
    ENV_URL_SIGNING_SECRET_ARN,
)
from skypacs.dicomweb.oidc import DEFAULT_READ_SCOPE, DEFAULT_WRITE_SCOPE
from skypacs.keys import CATALOG_METADATA_PREFIX, INCOMING_PREFIX, QUARANTINE_PREFIX, STUDIES_PREFIX

API_HANDLER = "functions.dicomweb.app.app"
AUTHORIZER_HANDLER = "functions.authorizer.handler.handler"
STAGE = "prod"
API_TIMEOUT = Duration.seconds(29)  # API Gateway's integration timeout
API_MEMORY_MB = 1769  # one full vCPU: rendering and transcoding are CPU-bound
LOG_RETENTION = logs.RetentionDays.ONE_YEAR
RESOURCE_SERVER = "skypacs"
WRITERS_GROUP = "skypacs-writers"


class OidcIssuer:
    """Who issues the API's tokens: an external issuer, or the stack's Cognito user pool."""

    def __init__(self, issuer: str, audiences: Sequence[str] = (), *, read_scope: str = DEFAULT_READ_SCOPE,
                 write_scope: str = DEFAULT_WRITE_SCOPE, write_groups: Sequence[str] = ()) -> None:
        self.issuer, self.audiences = issuer, list(audiences)
        self.read_scope, self.write_scope = read_scope, write_scope
        self.write_groups = list(write_groups)


class DicomWebApi(Construct):
    """Attributes: ``rest_api``, ``function`` (the API Lambda), ``authorizer_function``, ``url`` (the
    DICOMweb root), ``issuer`` (what the authorizer accepts), ``user_pool`` / ``viewer_client`` /
    ``script_client`` / ``user_pool_domain`` (None with an external issuer)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        bucket: s3.IBucket,
        bucket_key: kms.IKey,
        table: dynamodb.ITable,
        search: Search | None = None,
        event_bus: events.IEventBus | None = None,
        streaming_url: str | None = None,
        signing_secret: secretsmanager.ISecret | None = None,
        issuer: OidcIssuer | None = None,
        callback_urls: Sequence[str] = ("http://localhost:3000/callback",),
        viewer_write: bool = False,
        domain_prefix: str | None = None,
        cors_origins: Sequence[str] = (),
        reserved_concurrency: int = 100,
        authorizer_reserved_concurrency: int = 20,
        throttle_rate: int = 500,
        throttle_burst: int = 1000,
        log_key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        log_key = log_key or log_encryption_key(self, "LogKey", removal_policy=RemovalPolicy.RETAIN)
        self.user_pool: cognito.UserPool | None = None
        self.viewer_client: cognito.UserPoolClient | None = None
        self.script_client: cognito.UserPoolClient | None = None
        self.user_pool_domain: cognito.UserPoolDomain | None = None
        self.issuer = issuer or self._cognito(callback_urls, viewer_write, domain_prefix)

        environment = {ENV_BUCKET: bucket.bucket_name, ENV_CATALOG_TABLE: table.table_name,
                       "POWERTOOLS_SERVICE_NAME": "skypacs-dicomweb"}
        if event_bus is not None:
            environment[ENV_EVENT_BUS] = event_bus.event_bus_name
        if search is not None:
            environment[ENV_OPENSEARCH_ENDPOINT] = search.endpoint
            environment[ENV_OPENSEARCH_PREFIX] = search.index_prefix
        if streaming_url is not None and signing_secret is not None:
            environment[ENV_STREAMING_URL] = streaming_url
            environment[ENV_URL_SIGNING_SECRET_ARN] = signing_secret.secret_arn
        if cors_origins:
            environment[ENV_CORS_ORIGINS] = ",".join(cors_origins)

        self.function = self._function(
            "Function", "SkyPACS DICOMweb API (Chalice on API Gateway)", API_HANDLER, API_MEMORY_MB,
            API_TIMEOUT, reserved_concurrency, vpc, environment, log_key)
        self.authorizer_function = self._function(
            "Authorizer", "SkyPACS DICOMweb API: OIDC/JWT bearer token authorizer", AUTHORIZER_HANDLER, 256,
            # API Gateway caches each token's policy for 300 s: the authorizer runs far less often.
            Duration.seconds(10), authorizer_reserved_concurrency, vpc, {
                ENV_OIDC_ISSUER: self.issuer.issuer,
                ENV_OIDC_AUDIENCE: ",".join(self.issuer.audiences),
                ENV_OIDC_READ_SCOPE: self.issuer.read_scope,
                ENV_OIDC_WRITE_SCOPE: self.issuer.write_scope,
                ENV_OIDC_WRITE_GROUPS: ",".join(self.issuer.write_groups),
                "POWERTOOLS_SERVICE_NAME": "skypacs-authorizer",
            }, log_key)

        self._grant(bucket, bucket_key, table, search, event_bus, signing_secret)
        self.rest_api = self._rest_api(bool(cors_origins), throttle_rate, throttle_burst, log_key)
        self.url = self.rest_api.url.rstrip("/")
        for function in (self.function, self.authorizer_function):
            function.add_permission(
                "InvokedByApi", principal=iam.ServicePrincipal("apigateway.amazonaws.com"),
                source_arn=self.rest_api.arn_for_execute_api("*", "/*", "*") if function is self.function
                else f"arn:{Aws.PARTITION}:execute-api:{Aws.REGION}:{Aws.ACCOUNT_ID}:"
                     f"{self.rest_api.rest_api_id}/authorizers/*")
        self._acknowledge_findings()

    # --- identity -------------------------------------------------------------------------------------

    def _cognito(self, callback_urls: Sequence[str], viewer_write: bool, domain_prefix: str | None) -> OidcIssuer:
        pool = cognito.UserPool(
            self, "UserPool",
            self_sign_up_enabled=False,  # an archive of patient data: administrators create the users
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12, require_digits=True, require_lowercase=True, require_uppercase=True,
                require_symbols=True, temp_password_validity=Duration.days(3)),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        read = cognito.ResourceServerScope(scope_name="read", scope_description="Search and retrieve")
        write = cognito.ResourceServerScope(scope_name="write", scope_description="Store and delete")
        server = pool.add_resource_server("ResourceServer", identifier=RESOURCE_SERVER, scopes=[read, write])
        viewer_scopes = [cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE,
                         cognito.OAuthScope.resource_server(server, read)]
        if viewer_write:
            viewer_scopes.append(cognito.OAuthScope.resource_server(server, write))
        self.viewer_client = pool.add_client(
            "ViewerClient",
            generate_secret=False,  # a browser application cannot keep a secret: PKCE instead
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True), scopes=viewer_scopes,
                callback_urls=list(callback_urls),
                logout_urls=sorted({url.rsplit("/", 1)[0] + "/" for url in callback_urls})),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            prevent_user_existence_errors=True,
            access_token_validity=Duration.hours(1), id_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.hours(12),
        )
        self.script_client = pool.add_client(
            "ScriptClient",
            generate_secret=True,
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(client_credentials=True),
                scopes=[cognito.OAuthScope.resource_server(server, read),
                        cognito.OAuthScope.resource_server(server, write)]),
            access_token_validity=Duration.hours(1),
        )
        self.user_pool_domain = pool.add_domain("Domain", cognito_domain=cognito.CognitoDomainOptions(
            domain_prefix=domain_prefix or f"skypacs-{Aws.ACCOUNT_ID}"))
        # Per-user write access: members of this group may store and delete with the viewer's
        # read-scoped token (`aws cognito-idp admin-add-user-to-group --group-name skypacs-writers`).
        cognito.CfnUserPoolGroup(self, "WritersGroup", user_pool_id=pool.user_pool_id, group_name=WRITERS_GROUP,
                                 description="May store (STOW-RS, uploads) and delete through the viewer")
        self.user_pool = pool
        return OidcIssuer(pool.user_pool_provider_url,
                          [self.viewer_client.user_pool_client_id, self.script_client.user_pool_client_id],
                          read_scope=f"{RESOURCE_SERVER}/read", write_scope=f"{RESOURCE_SERVER}/write",
                          write_groups=[WRITERS_GROUP])

    # --- functions ------------------------------------------------------------------------------------

    def _function(self, construct_id: str, description: str, handler: str, memory_mb: int, timeout: Duration,
                  reserved_concurrency: int, vpc: ec2.IVpc, environment: Mapping[str, str],
                  log_key: kms.IKey) -> lambda_.Function:
        return lambda_.Function(
            self, construct_id,
            description=description,
            code=lambda_code(), handler=handler, runtime=LAMBDA_RUNTIME, architecture=LAMBDA_ARCHITECTURE,
            memory_size=memory_mb, timeout=timeout,
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            vpc=vpc, vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            environment=dict(environment),
            log_group=logs.LogGroup(self, f"{construct_id}Logs", retention=LOG_RETENTION, encryption_key=log_key),
        )

    def _grant(self, bucket: s3.IBucket, bucket_key: kms.IKey, table: dynamodb.ITable, search: Search | None,
               event_bus: events.IEventBus | None, signing_secret: secretsmanager.ISecret | None) -> None:
        """What the API's services do (skypacs.services.retrieve/store/delete/uploads):

        - read objects under ``studies/`` (WADO-RS); list them (DELETE of a study or series lists its
          prefix; a missing key then answers 404 rather than 403);
        - write ``studies/*`` (STOW-RS) and ``quarantine/*`` (refused STOW parts are kept with their
          reason); presign PUTs under ``incoming/`` (the URL carries this role's permission);
        - delete ``studies/*`` (DELETE; versioning keeps what was deleted for the retention period);
        - the catalog: read, write and delete items (quarantine records, DELETE), query its SOP index;
        - search the index (QIDO-RS) and delete from it (DELETE); publish InstanceDeleted.
        """
        fn = self.function
        # Oversized catalog metadata (DynamoDbCatalog) is read beside the objects and deleted with them.
        metadata = bucket.arn_for_objects(f"{CATALOG_METADATA_PREFIX}*")
        fn.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{STUDIES_PREFIX}*"), metadata]))
        fn.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:PutObject"],
            resources=[bucket.arn_for_objects(f"{p}*") for p in (STUDIES_PREFIX, QUARANTINE_PREFIX, INCOMING_PREFIX)]))
        fn.add_to_role_policy(iam.PolicyStatement(
            actions=["s3:DeleteObject"], resources=[bucket.arn_for_objects(f"{STUDIES_PREFIX}*"), metadata]))
        fn.add_to_role_policy(iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[bucket_key.key_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(
            actions=["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem"],
            resources=[table.table_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(
            actions=["dynamodb:Query"], resources=[f"{table.table_arn}/index/{SOP_INDEX}"]))
        if table.encryption_key is not None:
            fn.add_to_role_policy(iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[table.encryption_key.key_arn]))
        if search is not None:
            search.allow_from(fn.connections.security_groups[0])
            assert fn.role is not None
            search.add_writer(fn.role)  # DELETE removes index entries
        if event_bus is not None:
            event_bus.grant_put_events_to(fn)
        if signing_secret is not None:
            signing_secret.grant_read(fn)
        self._bucket_resources = [bucket.arn_for_objects(f"{p}*")
                                  for p in (STUDIES_PREFIX, QUARANTINE_PREFIX, INCOMING_PREFIX, CATALOG_METADATA_PREFIX)]

    # --- the REST API ---------------------------------------------------------------------------------

    def _rest_api(self, cors: bool, throttle_rate: int, throttle_burst: int, log_key: kms.IKey) -> apigw.SpecRestApi:
        from functions.dicomweb import app as chalice_app  # the route table API Gateway must mirror

        stack = Stack.of(self)
        definition = openapi_definition(
            {path: list(methods) for path, methods in chalice_app.app.routes.items()},
            title=f"{stack.stack_name} DICOMweb",
            integration_uri=lambda_invocation_uri(Aws.PARTITION, Aws.REGION, self.function.function_arn),
            authorizer_uri=lambda_invocation_uri(Aws.PARTITION, Aws.REGION,
                                                 self.authorizer_function.function_arn),
            binary_media_types=chalice_app.app.api.binary_types,
            cors=cors,
        )
        access_logs = logs.LogGroup(self, "AccessLogs", retention=LOG_RETENTION, encryption_key=log_key)
        return apigw.SpecRestApi(
            self, "RestApi",
            api_definition=apigw.ApiDefinition.from_inline(definition),
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,  # execution logs need the account's API Gateway CloudWatch role
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                # No query strings (QIDO parameters may name patients), no headers (tokens).
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=True),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request and response bodies are patient data
                tracing_enabled=True,
                metrics_enabled=True,
                throttling_rate_limit=throttle_rate,
                throttling_burst_limit=throttle_burst,
            ),
        )

    def outputs(self, scope: Construct) -> None:
        """The stack outputs a user needs to point viewers and scripts at the API."""
        CfnOutput(scope, "DicomWebUrl", value=self.url, description="DICOMweb root (QIDO-RS, WADO-RS, STOW-RS)")
        CfnOutput(scope, "OidcIssuer", value=self.issuer.issuer, description="Issuer of the API's tokens")
        if self.user_pool is not None and self.viewer_client is not None and self.script_client is not None:
            CfnOutput(scope, "UserPoolId", value=self.user_pool.user_pool_id)
            CfnOutput(scope, "ViewerClientId", value=self.viewer_client.user_pool_client_id,
                      description="OIDC client_id for OHIF (authorization code + PKCE)")
            CfnOutput(scope, "ScriptClientId", value=self.script_client.user_pool_client_id,
                      description="Client credentials for scripts (secret: aws cognito-idp describe-user-pool-client)")
        if self.user_pool_domain is not None:
            CfnOutput(scope, "AuthDomain", value=self.user_pool_domain.base_url(),
                      description="Cognito hosted sign-in (OAuth 2.0 endpoints /oauth2/authorize, /oauth2/token)")

    # --- cdk-nag --------------------------------------------------------------------------------------

    def _acknowledge_findings(self) -> None:
        acknowledge_iam5(self.function.role, self._bucket_resources,
                         "Objects of the one DICOM bucket, limited by key prefix to what the API reads, "
                         "writes, deletes and presigns.")
        for function in (self.function, self.authorizer_function):
            acknowledge_lambda_findings(function)
            Validations.of(function).acknowledge(Ack(
                id="HIPAA.Security-LambdaDLQ",
                reason="Invoked synchronously by API Gateway: the caller sees every failure; there is no "
                "asynchronous event to keep."))
        api = self.rest_api
        for rule, reason in {
            "AwsSolutions-APIG2": "Requests are validated by the DICOMweb routes themselves (400/415 with a "
                                  "reason); an API Gateway model cannot express DICOMweb query parameters.",
            "AwsSolutions-APIG3": "AWS WAF's managed rule groups inspect and cap request bodies (8 KB), which "
                                  "breaks STOW-RS; abuse is bounded by stage throttling and the authorizer.",
            "AwsSolutions-COG4": "A TOKEN authorizer verifies the JWT of any OIDC issuer (Cognito by default); "
                                 "a Cognito authorizer would tie the API to Cognito.",
            "HIPAA.Security-APIGWCacheEnabledAndEncrypted": "Responses are patient data behind per-user "
                                                            "authorization: they must not be cached by the API.",
            "HIPAA.Security-APIGWSSLEnabled": "The backend is a Lambda proxy integration, not an HTTP "
                                              "endpoint: there is no backend TLS connection to authenticate.",
        }.items():
            Validations.of(api).acknowledge(Ack(id=rule, reason=reason))
        Validations.of(api).acknowledge(Ack(
            id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
               "AmazonAPIGatewayPushToCloudWatchLogs]",
            reason="API Gateway's account-wide logging role: the AWS managed policy is the documented one, "
                   "scoped to CloudWatch Logs."))
        if self.user_pool is not None:
            for rule in ("AwsSolutions-COG3", "AwsSolutions-COG8"):
                Validations.of(self.user_pool).acknowledge(Ack(
                    id=rule,
                    reason="Threat protection needs Cognito's Plus feature plan (billed per active user); "
                    "users are created by administrators, with MFA required and strong passwords."))
