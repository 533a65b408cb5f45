"""Shopify intake: the webhook endpoint (API Gateway REST, stage-throttled, no auth besides the HMAC checked in the
function), its queue and DLQ, the intake consumer that writes product images under incoming/<brand>/<handle>/, the
event table (dedupe + staleness), the app's secrets, and optionally a rule on Shopify's partner event bus.

Why API Gateway and not a function URL: a function URL has no throttling of its own, and reserved concurrency would
cap the function rather than shed a flood at the edge. The stage throttle answers 429 beyond its rate; Shopify retries
those deliveries, and the queue behind the function absorbs the bursts it lets through.
"""

import json

from aws_cdk import CfnOutput, Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from .apis import logged_stage
from .config import DeployConfig
from .lambdas import image_function, light_code
from .queues import work_queue
from .storage import BRANDS_PREFIX, INTAKE_PREFIX, Storage, grant_object_reads

STAGE = "shopify"
WEBHOOK_PATH = ("webhooks", "shopify")
WEBHOOK_TIMEOUT = Duration.seconds(10)  # Shopify waits 5 s for the answer; the function answers in well under one
INGEST_TIMEOUT = Duration.seconds(120)  # a product's images, each bounded by the fetcher's own timeouts
MAX_BODY_BYTES = 512 * 1024
# Shopify sends bursts (a bulk edit of a thousand products is a thousand webhooks); beyond this, 429 and a retry.
THROTTLE_RATE = 50
THROTTLE_BURST = 100
PARTNER_SOURCE_PREFIX = "aws.partner/shopify.com"
# The secrets' documents (functions/stages/shopify_intake.py WebhookSecrets; the publish step reads the token). Only
# the generated field is filled at deploy time, with a random placeholder the operator replaces.
WEBHOOK_SECRET_TEMPLATE = json.dumps({"previous": "", "previous_until": ""})
ADMIN_TOKEN_TEMPLATE = json.dumps({"shop": ""})
# The table actions of each code path (functions/adapters/aws/shopify_store.py): the endpoint claims an event
# (conditional put), confirms it once queued (update) and releases it when queueing failed (delete); intake also
# claims EventBridge events, advances the product's latest event time (conditional update) and reads and marks image
# versions.
WEBHOOK_TABLE_ACTIONS = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
INGEST_TABLE_ACTIONS = ("dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem", "dynamodb:GetItem")


class Shopify(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        config: DeployConfig,
        log_role_api: apigw.RestApi | None = None,
    ) -> None:
        """`log_role_api`: the API whose account-level CloudWatch role this stage's logging needs (one per
        account and region; the review API creates it)."""
        super().__init__(scope, construct_id)
        self.webhook_secret = self._build_webhook_secret()
        self.admin_token = self._build_admin_token()
        self.table = self._build_table()
        self.queue, self.dlq = work_queue(self, "Work", INGEST_TIMEOUT)
        self.api = self._build_api(log_role_api)
        self.webhook = self._build_webhook(config)
        self.ingest = self._build_ingest(storage, config)
        if config.shopify_event_source:
            self._route_partner_events(config.shopify_event_source)
        self._add_outputs()

    def _build_webhook_secret(self) -> secretsmanager.Secret:
        # The app's client secret, set by the operator after the deploy (README, "Shopify"). Until then a random
        # placeholder: no delivery verifies. During a rotation `previous` holds the old secret until `previous_until`.
        return secretsmanager.Secret(
            self,
            "WebhookSecret",
            description='Shopify app client secret(s): {"current", "previous", "previous_until" (ISO-8601)}',
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=WEBHOOK_SECRET_TEMPLATE,
                generate_string_key="current",
                password_length=48,
                exclude_punctuation=True,
            ),
        )

    def _build_admin_token(self) -> secretsmanager.Secret:
        # The Admin API access token of the custom app, read by the publish step; set by the operator.
        return secretsmanager.Secret(
            self,
            "AdminToken",
            description='Shopify Admin API access token: {"shop": "<shop>.myshopify.com", "access_token": "shpat_..."}',
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=ADMIN_TOKEN_TEMPLATE,
                generate_string_key="access_token",
                password_length=48,
                exclude_punctuation=True,
            ),
        )

    def _build_table(self) -> dynamodb.Table:
        """Event claims (expire through TTL), each product's latest event time, image versions taken."""
        return dynamodb.Table(
            self,
            "Events",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute="expires_at",
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _build_api(self, log_role_api: apigw.RestApi | None) -> apigw.RestApi:
        api = apigw.RestApi(
            self,
            "Api",
            description="Shopify webhooks (products/create, products/update); the function verifies the HMAC",
            cloud_watch_role=False,  # one account-level role per region: the review API's
            binary_media_types=["*/*"],  # the body reaches the function base64-encoded: the exact bytes Shopify signed
            deploy_options=logged_stage(self, STAGE, rate_limit=THROTTLE_RATE, burst_limit=THROTTLE_BURST),
        )
        if log_role_api is not None:
            account = log_role_api.node.try_find_child("Account")
            if account is not None:
                api.deployment_stage.node.add_dependency(account)
        return api

    def _build_webhook(self, config: DeployConfig) -> lambda_.DockerImageFunction:
        webhook = image_function(
            self,
            "Webhook",
            light_code("functions.handlers.shopify_webhook.lambda_handler"),
            description="Shopify webhooks: HMAC on the raw body, dedupe on the event id, queue, answer",
            environment={
                "SHOPIFY_SECRET_ID": self.webhook_secret.secret_arn,
                "SHOPIFY_TABLE_NAME": self.table.table_name,
                "SHOPIFY_QUEUE_URL": self.queue.queue_url,
                "SHOPIFY_BRAND": config.brand,
                "SHOPIFY_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            },
            timeout=WEBHOOK_TIMEOUT,
            memory_size=256,
        )
        self.webhook_secret.grant_read(webhook)
        self.table.grant(webhook, *WEBHOOK_TABLE_ACTIONS)
        self.queue.grant_send_messages(webhook)
        resource = self.api.root
        for part in WEBHOOK_PATH:
            resource = resource.add_resource(part)
        resource.add_method("POST", apigw.LambdaIntegration(webhook))
        return webhook

    def _build_ingest(self, storage: Storage, config: DeployConfig) -> lambda_.DockerImageFunction:
        ingest = image_function(
            self,
            "Ingest",
            light_code("functions.handlers.shopify_ingest.lambda_handler"),
            description="Queued Shopify product events -> new images under incoming/<brand>/<handle>/",
            environment={
                "SHOPIFY_TABLE_NAME": self.table.table_name,
                "SHOPIFY_BRAND": config.brand,
                "INTAKE_BUCKET": storage.intake.bucket_name,
                "INTAKE_PREFIX": INTAKE_PREFIX,
                "BRANDS_URI": storage.brands_uri,
            },
            timeout=INGEST_TIMEOUT,
            memory_size=512,
        )
        self.table.grant(ingest, *INGEST_TABLE_ACTIONS)
        # Conditional puts of new images and the product.json (the bucket refuses any other put under incoming/).
        storage.intake.grant_put(ingest, f"{INTAKE_PREFIX}*")
        # <brand>/shopify.json: a missing one is a 404 (the defaults), so listing is granted on the prefix.
        grant_object_reads(storage.brands, ingest, [BRANDS_PREFIX], missing_is_not_found=True)
        ingest.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=5,
                report_batch_item_failures=True,
                max_concurrency=5,  # fetches from Shopify's CDN stay polite; the queue holds the rest
            )
        )
        return ingest

    def _route_partner_events(self, event_source_name: str) -> None:
        """Shopify's partner event source: its bus (named like the source) and a rule to the same queue."""
        bus = events.EventBus(self, "PartnerBus", event_source_name=event_source_name)  # named like the source
        events.Rule(
            self,
            "PartnerEvents",
            event_bus=bus,
            description="Shopify product events from the partner event source -> the Shopify work queue",
            event_pattern=events.EventPattern(source=events.Match.prefix(PARTNER_SOURCE_PREFIX)),
            targets=[targets.SqsQueue(self.queue)],
        )

    def _add_outputs(self) -> None:
        CfnOutput(
            self,
            "WebhookUrl",
            value=self.api.url_for_path("/" + "/".join(WEBHOOK_PATH)),
            description="Shopify admin > Settings > Notifications > Webhooks (or the app's subscriptions): this URL",
        )
        CfnOutput(
            self,
            "WebhookSecretArn",
            value=self.webhook_secret.secret_arn,
            description='Put the app\'s client secret here: {"current": "<client secret>", "previous": ""}',
        )
        CfnOutput(
            self,
            "AdminTokenSecretArn",
            value=self.admin_token.secret_arn,
            description='The Admin API token: {"shop": "<shop>.myshopify.com", "access_token": "shpat_..."}',
        )
