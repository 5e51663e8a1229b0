"""The SkyPACS stack: composes the constructs, grants access between them, and emits the outputs a user
needs (where to point modalities, viewers and scripts).

Environment-agnostic (no account or region), so ``cdk synth`` runs offline without credentials. Every
setting comes from CDK context (:mod:`infra.context` lists them).

The wiring, in the order data flows (DESIGN.md):
modality -> Gateway (Fargate, NLB 11112/2762) -> Storage (S3) -> SQS -> Indexer (Lambda) -> Catalog
(DynamoDB), Search (OpenSearch), Plugins (EventBridge); viewers and scripts -> DicomWebApi (API Gateway +
Lambda, OIDC) -> the same stores, with large retrievals redirected to the StreamingService (Fargate behind
CloudFront) and large uploads presigned straight into S3. Observability watches all of it.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from constructs import Construct

from infra.constructs.api import DicomWebApi, OidcIssuer
from infra.constructs.catalog import Catalog
from infra.constructs.gateway import DICOM_TLS_PORT, DIMSE_PORT, Gateway, make_cluster
from infra.constructs.indexer import Indexer
from infra.constructs.network import Network
from infra.constructs.observability import Observability
from infra.constructs.plugins import Plugins, plugin_specs_from_context
from infra.constructs.search import Search
from infra.constructs.storage import DEFAULT_NONCURRENT_RETENTION_DAYS, Storage
from infra.constructs.streaming import StreamingService
from infra.context import Settings
from skypacs.dicomweb.oidc import DEFAULT_READ_SCOPE, DEFAULT_WRITE_SCOPE

#: Context key (``cdk.json`` or ``cdk synth -c noncurrentRetentionDays=N``): days a replaced or deleted
#: DICOM object version is kept.
NONCURRENT_RETENTION_DAYS_CONTEXT = "noncurrentRetentionDays"


ISSUER_ONLY_SETTINGS = ("authAudience", "authReadScope", "authWriteScope", "authWriteGroups")
"""Context keys that describe an external issuer (``authIssuer``); the Cognito pool has fixed ones."""

class SkyPacsStack(Stack):
    """Everything SkyPACS deploys to one account and region."""

    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        settings = Settings(self)
        retention_days = settings.integer(NONCURRENT_RETENTION_DAYS_CONTEXT, DEFAULT_NONCURRENT_RETENTION_DAYS,
                                          minimum=1)
        self.storage = Storage(self, "Storage", noncurrent_version_retention=Duration.days(retention_days))
        self.network = Network(self, "Network", max_azs=settings.integer("maxAzs", 2, minimum=2),
                               nat_gateways=settings.integer("natGateways", 1, minimum=1))
        vpc, log_key = self.network.vpc, self.network.log_key
        bucket, bucket_key = self.storage.bucket, self.storage.key
        self.catalog = Catalog(self, "Catalog")
        table = self.catalog.table
        self.search = Search(
            self, "Search", vpc=vpc, log_key=log_key,
            instance_type=settings.text("searchInstanceType", "r6g.large.search") or "r6g.large.search",
            data_nodes=settings.integer("searchDataNodes", 2, minimum=1),
            volume_size_gib=settings.integer("searchVolumeGiB", 100, minimum=10),
            dedicated_master_nodes=settings.integer("searchMasterNodes", 0),
            instance_shards=settings.integer("searchShards", 0) or None)
        self.plugins = Plugins(self, "Plugins", vpc=vpc, log_key=log_key,
                               plugins=plugin_specs_from_context(settings.raw("plugins")))
        self.indexer = Indexer(
            self, "Indexer", bucket=bucket, bucket_key=bucket_key, table=table, vpc=vpc, search=self.search,
            event_bus=self.plugins.bus, log_key=log_key,
            reserved_concurrency=settings.integer("indexerReservedConcurrency", 50, minimum=2))

        cluster = make_cluster(self, "Cluster", vpc)
        streaming_count = settings.integer("streamingDesiredCount", 1, minimum=1)
        self.streaming = StreamingService(
            self, "Streaming", vpc=vpc, cluster=cluster, bucket=bucket, bucket_key=bucket_key, table=table,
            desired_count=streaming_count,
            max_count=settings.integer("streamingMaxCount", streaming_count, minimum=streaming_count),
            domain_name=settings.text("streamingDomainName"),
            certificate_arn=settings.text("streamingCertificateArn"))
        issuer_url = settings.text("authIssuer")
        issuer_only = [key for key in ISSUER_ONLY_SETTINGS if settings.raw(key) not in (None, "", [])]
        if issuer_url is None and issuer_only:
            raise ValueError(
                f"context {', '.join(issuer_only)} configure(s) an external OIDC issuer and need(s) authIssuer; "
                "with the default Cognito user pool the scopes are skypacs/read and skypacs/write and writers "
                "are the skypacs-writers group"
            )
        issuer = OidcIssuer(
            issuer_url, settings.strings("authAudience"),
            read_scope=settings.text("authReadScope", DEFAULT_READ_SCOPE) or DEFAULT_READ_SCOPE,
            write_scope=settings.text("authWriteScope", DEFAULT_WRITE_SCOPE) or DEFAULT_WRITE_SCOPE,
            write_groups=settings.strings("authWriteGroups"),
        ) if issuer_url else None
        self.api = DicomWebApi(
            self, "Api", vpc=vpc, bucket=bucket, bucket_key=bucket_key, table=table, search=self.search,
            event_bus=self.plugins.bus, streaming_url=self.streaming.url,
            signing_secret=self.streaming.signing_secret, issuer=issuer,
            callback_urls=settings.strings("authCallbackUrls") or ("http://localhost:3000/callback",),
            viewer_write=settings.flag("authViewerWrite"), domain_prefix=settings.text("authDomainPrefix"),
            cors_origins=settings.strings("corsOrigins"), log_key=log_key,
            reserved_concurrency=settings.integer("apiReservedConcurrency", 100, minimum=1))
        self.storage.allow_browser_uploads(list(settings.strings("corsOrigins")))
        tls_certificate = settings.text("gatewayTlsCertificateArn")
        self.gateway = Gateway(
            self, "Gateway", vpc=vpc, cluster=cluster, bucket=bucket, bucket_key=bucket_key, table=table,
            ae_title=settings.text("gatewayAeTitle", "SKYPACS") or "SKYPACS",
            allowed_aes=settings.strings("gatewayAllowedAes"),
            destinations=settings.destinations("gatewayDestinations"),
            allowed_cidrs=settings.strings("gatewayAllowedCidrs"),
            internet_facing=settings.flag("gatewayInternetFacing"),
            tls_certificate_arn=tls_certificate,
            desired_count=settings.integer("gatewayDesiredCount", 2, minimum=1),
            max_count=settings.integer("gatewayMaxCount", 10, minimum=1),
            search=self.search)

        self.observability = Observability(
            self, "Observability",
            functions={"Indexer": self.indexer.function, "ApiFunction": self.api.function,
                       "Authorizer": self.api.authorizer_function, **self.plugins.functions},
            queues={"Ingest": self.indexer.queue},
            dead_letter_queues={"IngestDeadLetters": self.indexer.dead_letter_queue,
                                "PluginDeadLetters": self.plugins.dead_letter_queue},
            rest_api=self.api.rest_api,
            services={"Gateway": self.gateway.service, "Streaming": self.streaming.service},
            load_balancers={"GatewayNlb": self.gateway.load_balancer},
            target_groups={"GatewayNlb": self.gateway.target_group},
            alarm_email=settings.text("alarmEmail"))
        self._outputs(tls_certificate is not None)

    def _outputs(self, tls: bool) -> None:
        CfnOutput(self, "BucketName", value=self.storage.bucket.bucket_name, description="DICOM object bucket")
        CfnOutput(self, "CatalogTableName", value=self.catalog.table.table_name)
        CfnOutput(self, "GatewayHost", value=self.gateway.load_balancer.load_balancer_dns_name,
                  description="Point modalities here (AE title gatewayAeTitle)")
        CfnOutput(self, "GatewayPort", value=str(DIMSE_PORT))
        if tls:
            CfnOutput(self, "GatewayTlsPort", value=str(DICOM_TLS_PORT))
        self.api.outputs(self)
        CfnOutput(self, "StreamingUrl", value=self.streaming.url,
                  description="Large retrievals (the API redirects here with signed URLs)")
        CfnOutput(self, "IngestDeadLetterQueue", value=self.indexer.dead_letter_queue.queue_url,
                  description="Objects whose ingest kept failing (redrive: see docs/deploy-aws.md)")
        CfnOutput(self, "EventBusName", value=self.plugins.bus.event_bus_name)
        CfnOutput(self, "AlarmTopicArn", value=self.observability.topic.topic_arn)
        CfnOutput(self, "DashboardName", value=self.observability.dashboard.dashboard_name)
