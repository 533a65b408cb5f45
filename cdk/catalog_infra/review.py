"""Human review: the `.waitForTaskToken` notify Lambda (stores one image's review, sends nothing), the scheduled
digest + sweep (one email per batch of images, reminders, expiry), the review page API (API Gateway + Lambda), their
DynamoDB table (KMS, it holds task tokens), the SES sender and the link-signing keys.
"""

import json

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ses as ses
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from .apis import logged_stage
from .config import DeployConfig
from .lambdas import image_function, light_code
from .storage import WORK_PREFIXES, Storage, grant_object_reads

STAGE = "review"
# The digest runs with the sweep: an image's review is emailed at most this long after its notify task. Five
# minutes keeps that wait short next to a link that lives for days, and still gathers a burst of uploads (which
# arrives over minutes) into a few emails instead of one per image. One function for both keeps a single writer
# of reminders and batches; every step is a conditional write, so an overlapping run changes nothing twice.
SCHEDULE_EVERY = Duration.minutes(5)
REMIND_BEFORE = Duration.hours(24)  # a batch still undecided this long before its link expires gets one reminder
IMAGE_URL_LIFETIME = Duration.minutes(5)  # presigned image URLs on the page; emails use long-lived signed routes
# The review table actions of each function's code path (functions/adapters/aws/review_store.py, DynamoDBReviewStore). A
# TransactWriteItems needs the action of each of its items: Put -> PutItem, Update -> UpdateItem, ConditionCheck ->
# ConditionCheckItem. Notify only creates (one transaction of Puts); the page reads (Query, GetItem) and decides (a
# ConditionCheck + Update transaction, conditional UpdateItems to close and mark resumed), it never puts; the digest
# forms batches (a Put + Updates transaction), expires and resumes (conditional UpdateItems), and scans (below).
NOTIFY_TABLE_ACTIONS = ("dynamodb:PutItem",)
PAGE_TABLE_ACTIONS = ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem")
SWEEP_TABLE_ACTIONS = ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:PutItem")
# The signing keys as deployed: one key, k1, whose secret is the generated field, in hex (see cdk/README.md).
SIGNING_KEYS_GENERATED_FIELD = "k1_secret_hex"
SIGNING_KEYS_TEMPLATE = json.dumps(
    {"active": "k1", "keys": [{"kid": "k1", "created": "deploy", "secret_hex_field": SIGNING_KEYS_GENERATED_FIELD}]}
)


class Review(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, storage: Storage, config: DeployConfig) -> None:
        super().__init__(scope, construct_id)
        self._stack = Stack.of(self)
        self.link_ttl = Duration.hours(config.review_link_hours)
        self.key = kms.Key(self, "Key", enable_key_rotation=True, description="Review batches and their task tokens")
        self.table = self._build_table()
        self.keys_secret = self._build_signing_keys()
        self.identity = ses.EmailIdentity(self, "Sender", identity=ses.Identity.email(config.sender_email))
        self.api = self._build_api()
        environment = self._function_environment(config)
        self.notify = self._build_notify(environment)
        self.page = self._build_page(environment, config.review_page_concurrency)
        self.sweep = self._build_sweep(environment)
        self._grant_review_store(self.notify, NOTIFY_TABLE_ACTIONS, signs_links=False)
        self._grant_review_store(self.page, PAGE_TABLE_ACTIONS, signs_links=True)
        self._grant_review_store(self.sweep, SWEEP_TABLE_ACTIONS, signs_links=True)
        self._grant_sending(self.sweep, config)
        self._grant_image_reads(self.page, storage)

    def _build_table(self) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            "Reviews",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Sparse: a review or batch carries `sweep_queue` only while the digest or the sweep has work on it (see
        # functions/adapters/aws/review_store.py), so each scheduled run reads a bounded page of due work only.
        table.add_global_secondary_index(
            index_name="sweep",
            partition_key=dynamodb.Attribute(name="sweep_queue", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sweep_at", type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        return table

    def _build_signing_keys(self) -> secretsmanager.Secret:
        # The link-signing key document in its one form (functions/review/signing.py, cdk/README.md): Secrets Manager
        # generates only a top-level field, so the template's entry names that field and says it is hex.
        return secretsmanager.Secret(
            self,
            "SigningKeys",
            description="Review link signing keys: {'active': kid, 'keys': [{'kid', 'secret_b64'|'secret_hex'...}]}",
            encryption_key=self.key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=SIGNING_KEYS_TEMPLATE,
                generate_string_key=SIGNING_KEYS_GENERATED_FIELD,
                password_length=64,  # 64 hex characters: 32 random bytes
                exclude_uppercase=True,
                exclude_punctuation=True,
                exclude_characters="ghijklmnopqrstuvwxyz",
                include_space=False,
                require_each_included_type=False,
            ),
        )

    def _build_api(self) -> apigw.RestApi:
        return apigw.RestApi(
            self,
            "Api",
            description="Review pages and decisions (signed links)",
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            deploy_options=logged_stage(self, STAGE, rate_limit=20, burst_limit=40),
        )

    def _function_environment(self, config: DeployConfig) -> dict[str, str]:
        """The same settings for notify, page and sweep (ReviewSettings)."""
        # The API's own URL, built from the RestApi id and a fixed stage name (not api.url: the stage depends on
        # the methods, which depend on the function whose environment needs the URL).
        stack = self._stack
        base_url = f"https://{self.api.rest_api_id}.execute-api.{stack.region}.{stack.url_suffix}/{STAGE}"
        return {
            "REVIEW_TABLE_NAME": self.table.table_name,
            "REVIEW_KEYS_SECRET_ID": self.keys_secret.secret_arn,
            "REVIEW_SENDER": config.sender_email,
            "REVIEW_BASE_URL": base_url,
            "REVIEW_LINK_TTL_SECONDS": str(int(self.link_ttl.to_seconds())),
            "REVIEW_REMIND_BEFORE_SECONDS": str(int(REMIND_BEFORE.to_seconds())),
            "REVIEW_IMAGE_URL_SECONDS": str(int(IMAGE_URL_LIFETIME.to_seconds())),
        }

    def _build_notify(self, environment: dict[str, str]) -> lambda_.DockerImageFunction:
        return image_function(
            self,
            "Notify",
            light_code("functions.handlers.review_notify.lambda_handler"),
            description="Review .waitForTaskToken task: stores the image's review and its token for the next digest",
            environment=environment,
        )

    def _build_page(self, environment: dict[str, str], concurrency: int) -> lambda_.DockerImageFunction:
        page = image_function(
            self,
            "Page",
            light_code("functions.handlers.review_api.lambda_handler"),
            description="Review page (GET, read-only) and decisions (signed, single-use POST)",
            environment=environment,
            reserved_concurrency=concurrency,  # a public page: a flood of requests cannot take the account's pool
        )
        integration = apigw.LambdaIntegration(page)
        for path in ("review", "review-static"):
            self.api.root.add_resource(path).add_proxy(default_integration=integration, any_method=True)
        return page

    def _build_sweep(self, environment: dict[str, str]) -> lambda_.DockerImageFunction:
        sweep = image_function(
            self,
            "Sweep",
            light_code("functions.handlers.review_schedule.lambda_handler"),
            description="Emails one digest per batch of reviews, reminds before a link expires, expires reviews, "
            "retries failed resumes",
            environment=environment,
            timeout=Duration.minutes(4),  # shorter than the schedule, so runs do not normally overlap
        )
        events.Rule(
            self,
            "SweepSchedule",
            schedule=events.Schedule.rate(SCHEDULE_EVERY),
            targets=[targets.LambdaFunction(sweep)],
        )
        return sweep

    def _grant_review_store(
        self, function: lambda_.IFunction, table_actions: tuple[str, ...], *, signs_links: bool
    ) -> None:
        """The review table actions the function's code path uses, and the signing keys only where links are signed
        or verified (the page and the digest; notify stores a review and signs nothing)."""
        self.table.grant(function, *table_actions)
        self.key.grant_encrypt_decrypt(function)  # the table's key (and the secret's)
        if signs_links:
            self.keys_secret.grant_read(function)

    def _grant_sending(self, sweep: lambda_.IFunction, config: DeployConfig) -> None:
        """Only the digest/sweep emails (notify stores, it sends nothing); it queries the sparse sweep index."""
        sweep.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ses:SendRawEmail"],
                resources=[
                    self._stack.format_arn(service="ses", resource="identity", resource_name=config.sender_email)
                ],
            )
        )

    @staticmethod
    def _grant_image_reads(page: lambda_.IFunction, storage: Storage) -> None:
        # Presigned image URLs are signed with the page function's own credentials; the emails' thumbnails are its
        # signed image route, so no other review function reads the images.
        # A missing image is the browser's 403 either way: no listing.
        grant_object_reads(storage.work, page, [WORK_PREFIXES["prepared"], WORK_PREFIXES["outputs"]])

    def allow_resume(self, state_machine: sfn.IStateMachine) -> None:
        """Deciding the last item (page) or expiring a batch (sweep) resumes or fails the waiting task."""
        state_machine.grant_task_response(self.page)
        state_machine.grant_task_response(self.sweep)
