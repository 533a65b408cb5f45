"""The per-image workflow: a Step Functions Standard state machine (JSONPath).

prepare -> Map over the GPU jobs (submit, `.waitForTaskToken`) -> automatic checks -> review (`.waitForTaskToken`)
-> publish (approved images, and the rejections' feedback) -> Published | RejectionRecorded.
Every task retries throttling and service errors with full jitter, has a timeout, and catches to a Fail state
that carries the error and its cause.
"""

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from .config import DeployConfig
from .gpu_endpoint import SUBMIT_TASK_TIMEOUT, GpuEndpoint
from .lambdas import IMAGE_EXCLUDES, REPO_ROOT, image_function, light_code
from .review import Review
from .storage import (
    APPROVED_PREFIX,
    BRANDS_PREFIX,
    FEEDBACK_PREFIX,
    INTAKE_PREFIX,
    WORK_PREFIXES,
    Storage,
    grant_object_reads,
)

TRANSIENT_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
    # A throttle or transient AWS error inside a task, re-raised under this name (functions/adapters/aws/transient.py).
    "TransientServiceError",
]
GPU_JOB_ERRORS = ["GpuJobFailed", "GpuJobTimedOut"]
REVIEW_EXPIRED = "ReviewExpired"  # functions.review.resume: the sweep expired the batch
GPU_JOB_CONCURRENCY = 4  # per image; the endpoint's own backlog queues the rest
PREPARE_TIMEOUT = Duration.minutes(5)
EXECUTION_TIMEOUT = Duration.days(10)
CATALOG_MODELS_DIR = "/opt/models"  # where functions/Dockerfile.prepare bakes the rembg model
# Prepare's fixed choices, set explicitly so the deployed values show in the template (they are the runtime's and
# the local CLI's defaults; make one a context value when a deployment needs another).
PREPARE_FIXED = {
    "PACKSHOT_FILL_RATIO": "0.85",
    "PACKSHOT_FORMAT": "",  # empty: the preset's own (jpeg, or png for transparent)
    "PACKSHOT_QUALITY": "92",
    "MAX_MEGAPIXELS": "50",  # larger photos are refused with a per-file error
}


def _retry_transient(task: sfn.TaskStateBase) -> None:
    task.add_retry(
        errors=TRANSIENT_ERRORS,
        interval=Duration.seconds(2),
        max_attempts=5,
        backoff_rate=2.0,
        max_delay=Duration.seconds(60),
        jitter_strategy=sfn.JitterType.FULL,
    )


def lambda_task(
    scope: Construct,
    construct_id: str,
    function: lambda_.IFunction,
    *,
    payload: sfn.TaskInput | None = None,
    result_path: str | None,
    timeout: Duration,
    catch_to: sfn.IChainable | None,
    wait_for_token: bool = False,
    catch_first: Mapping[str, sfn.IChainable] | None = None,
) -> tasks.LambdaInvoke:
    """A Lambda task that retries transient Lambda errors and catches everything else (into `$.error`).

    `catch_first` maps an error to its own handler, tried before the catch-all `catch_to`; a task inside a Map
    passes `catch_to=None` and lets the Map catch. A plain task returns only the function's payload; a
    `.waitForTaskToken` task returns what the resuming side sends.
    """
    task = tasks.LambdaInvoke(
        scope,
        construct_id,
        lambda_function=function,
        payload=payload,
        # CDK refuses payload_response_only next to an explicit integration pattern.
        integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN if wait_for_token else None,
        payload_response_only=not wait_for_token,
        retry_on_service_exceptions=False,  # _retry_transient does it, with jitter
        result_path=result_path,
        task_timeout=sfn.Timeout.duration(timeout),
    )
    _retry_transient(task)
    for error, handler in (catch_first or {}).items():
        task.add_catch(handler, errors=[error], result_path="$.error")
    if catch_to is not None:
        task.add_catch(catch_to, errors=["States.ALL"], result_path="$.error")
    return task


class Workflow(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        gpu: GpuEndpoint,
        review: Review,
        config: DeployConfig,
    ) -> None:
        super().__init__(scope, construct_id)
        self.prepare_function = self._build_prepare_function(storage, config)
        self.checks_function = self._build_checks_function(storage)
        self.publish_function = self._build_publish_function(storage)
        self._failed = self._build_failure_choice()
        definition = (
            self._build_prepare_task()
            .next(self._build_gpu_jobs(gpu))
            .next(self._build_checks_task())
            .next(self._build_review_task(review))
            .next(self._build_publish_task())
            .next(self._build_outcome_choice())
        )
        self.state_machine = self._build_state_machine(definition)

    # The task functions this construct owns.

    def _build_prepare_function(self, storage: Storage, config: DeployConfig) -> lambda_.DockerImageFunction:
        function = image_function(
            self,
            "Prepare",
            lambda_.DockerImageCode.from_image_asset(
                str(REPO_ROOT),
                file="functions/Dockerfile.prepare",
                exclude=IMAGE_EXCLUDES,
                build_args={
                    "REMBG_MODEL_FILE": config.rembg_model_file,
                    "REMBG_MODEL_NAME": config.background_spec.partition(":")[2] or "u2net",
                },
                platform=ecr_assets.Platform.LINUX_AMD64,
            ),
            description="Intake + background removal + packshot (rembg model baked into the image)",
            environment={
                "WORK_BUCKET": storage.work.bucket_name,
                "INTAKE_PREFIX": INTAKE_PREFIX,
                "BACKGROUND_SPEC": config.background_spec,
                "CATALOG_MODELS_DIR": CATALOG_MODELS_DIR,
                "COMMERCIAL": "true" if config.commercial else "false",
                "PACKSHOT_PRESET": config.packshot_preset,
                "PACKSHOT_SIZE": str(config.packshot_size),
                **PREPARE_FIXED,
                "REVIEWERS": ",".join(config.reviewer_emails),
                "BRANDS_URI": storage.brands_uri,
                "DEFAULT_JOBS": config.default_jobs,  # for a SKU whose product.json names no jobs, or that has none
            },
            timeout=PREPARE_TIMEOUT,
            memory_size=3008,
            reserved_concurrency=config.prepare_concurrency,
        )
        # The uploaded version, and the SKU's optional product.json: a missing sidecar must be a 404, not a 403.
        grant_object_reads(storage.intake, function, [INTAKE_PREFIX], object_versions=True, missing_is_not_found=True)
        storage.work.grant_put(function, f"{WORK_PREFIXES['prepared']}*")
        # The brand's profile, `brands/<brand>/profile.json`: a missing profile is a 404 (packshot-only defaults).
        grant_object_reads(storage.brands, function, [BRANDS_PREFIX], missing_is_not_found=True)
        return function

    def _build_checks_function(self, storage: Storage) -> lambda_.DockerImageFunction:
        function = image_function(
            self,
            "Checks",
            light_code("functions.handlers.automatic_checks.lambda_handler"),
            description="Automatic checks on generated images -> review items with flags",
            environment={"MAX_PIXEL_DIFFERENCE": "2"},
            timeout=Duration.minutes(5),
            memory_size=2048,
        )
        # Every read is of an object the workflow wrote; any failure to read is reported as a flag, 403 or 404.
        grant_object_reads(storage.work, function, [WORK_PREFIXES["prepared"], WORK_PREFIXES["outputs"]])
        return function

    def _build_publish_function(self, storage: Storage) -> lambda_.DockerImageFunction:
        function = image_function(
            self,
            "Publish",
            light_code("functions.handlers.publish.lambda_handler"),
            description="Approved -> output bucket (never over an object); rejected -> feedback records",
            environment={
                "OUTPUT_BUCKET": storage.output.bucket_name,
                "APPROVED_PREFIX": APPROVED_PREFIX,
                "FEEDBACK_PREFIX": FEEDBACK_PREFIX,
                "BRANDS_URI": storage.brands_uri,
            },
            # Shopify's retries (backoff, throttling) come after the bucket writes: room for both.
            timeout=Duration.minutes(5),
            memory_size=1024,
        )
        grant_object_reads(storage.work, function, [WORK_PREFIXES["prepared"], WORK_PREFIXES["outputs"]])
        for prefix in (APPROVED_PREFIX, FEEDBACK_PREFIX):
            storage.output.grant_put(function, f"{prefix}*")
        # Read back only after a conditional put found the object there (PreconditionFailed): it exists.
        grant_object_reads(storage.output, function, [APPROVED_PREFIX, FEEDBACK_PREFIX])
        # The brand's publishing choices (`<brand>/publishing.json`) and nothing else of the brand store; listing
        # only that key tells a brand without the file (defaults) from a refusal.
        profiles = f"{BRANDS_PREFIX}*/publishing.json"
        iam.Grant.add_to_principal(
            grantee=function, actions=["s3:GetObject"], resource_arns=[storage.brands.arn_for_objects(profiles)]
        )
        iam.Grant.add_to_principal(
            grantee=function,
            actions=["s3:ListBucket"],
            resource_arns=[storage.brands.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [profiles]}},
        )
        return function

    def publish_to_shopify(self, admin_token: secretsmanager.ISecret) -> None:
        """The publish step also puts approved images on the store's products: it may read that one secret."""
        self.publish_function.add_environment("SHOPIFY_ADMIN_SECRET_ID", admin_token.secret_arn)
        admin_token.grant_read(self.publish_function)

    # The states, in execution order.

    def _build_failure_choice(self) -> sfn.Choice:
        # A Fail state may not raise a `States.*` error itself: those (timeouts, runtime errors) get a fixed name.
        return (
            sfn.Choice(self, "WhichFailure")
            .when(
                sfn.Condition.string_matches("$.error.Error", "States.*"),
                sfn.Fail(self, "WorkflowFailed", error="WorkflowFailed", cause_path="$.error.Cause"),
            )
            .otherwise(sfn.Fail(self, "ImageFailed", error_path="$.error.Error", cause_path="$.error.Cause"))
        )

    def _build_prepare_task(self) -> tasks.LambdaInvoke:
        return lambda_task(
            self,
            "PrepareImage",
            self.prepare_function,
            result_path="$.prepared",
            timeout=PREPARE_TIMEOUT.plus(Duration.minutes(1)),
            catch_to=self._failed,
        )

    def _build_gpu_jobs(self, gpu: GpuEndpoint) -> sfn.Map:
        submit = lambda_task(
            self,
            "RunGpuJob",
            gpu.submit,
            wait_for_token=True,
            payload=sfn.TaskInput.from_object(
                {
                    "task_token": sfn.JsonPath.task_token,
                    "attempt": sfn.JsonPath.string_at("$$.State.RetryCount"),
                    "execution_arn": sfn.JsonPath.execution_id,
                    "job": sfn.JsonPath.object_at("$"),
                }
            ),
            result_path=None,  # the job's result is the Map item's result
            timeout=SUBMIT_TASK_TIMEOUT,
            catch_to=None,  # the Map catches: one failed job fails the image
        )
        # A failed or lost job is tried again as a new attempt (a new job id), then the image fails.
        submit.add_retry(
            errors=GPU_JOB_ERRORS,
            interval=Duration.seconds(30),
            max_attempts=2,
            backoff_rate=2.0,
            jitter_strategy=sfn.JitterType.FULL,
        )
        gpu_jobs = sfn.Map(
            self,
            "GpuJobs",
            items_path="$.prepared.jobs",
            max_concurrency=GPU_JOB_CONCURRENCY,
            result_path="$.gpu_results",
        )
        gpu_jobs.item_processor(submit)
        gpu_jobs.add_catch(self._failed, errors=["States.ALL"], result_path="$.error")
        return gpu_jobs

    def _build_checks_task(self) -> tasks.LambdaInvoke:
        return lambda_task(
            self,
            "AutomaticChecks",
            self.checks_function,
            payload=sfn.TaskInput.from_object(
                {"prepared": sfn.JsonPath.object_at("$.prepared"), "gpu_results": sfn.JsonPath.list_at("$.gpu_results")}
            ),
            result_path="$.review",
            timeout=Duration.minutes(6),
            catch_to=self._failed,
        )

    def _build_review_task(self, review: Review) -> tasks.LambdaInvoke:
        not_decided = sfn.Fail(self, "ReviewNotDecided", error_path="$.error.Error", cause_path="$.error.Cause")
        timed_out = sfn.Fail(
            self,
            "ReviewTimedOut",
            error="ReviewTimedOut",
            cause="No decision arrived within the review link's lifetime.",
        )
        # The notify handler's input (functions/handlers/review_notify.py, ReviewRequest).
        return lambda_task(
            self,
            "HumanReview",
            review.notify,
            wait_for_token=True,
            payload=sfn.TaskInput.from_object(
                {
                    "task_token": sfn.JsonPath.task_token,
                    "brand": sfn.JsonPath.string_at("$.review.brand"),
                    "reviewers": sfn.JsonPath.list_at("$.review.reviewers"),
                    "items": sfn.JsonPath.list_at("$.review.items"),
                }
            ),
            result_path="$.outcome",
            # The link's lifetime plus the sweep's period and a margin: the sweep normally expires it first.
            timeout=review.link_ttl.plus(Duration.hours(1)),
            catch_first={REVIEW_EXPIRED: not_decided, "States.Timeout": timed_out},
            catch_to=self._failed,
        )

    def _build_publish_task(self) -> tasks.LambdaInvoke:
        return lambda_task(
            self,
            "PublishDecisions",
            self.publish_function,
            payload=sfn.TaskInput.from_object(
                {"review": sfn.JsonPath.object_at("$.review"), "outcome": sfn.JsonPath.object_at("$.outcome")}
            ),
            result_path="$.published",
            timeout=Duration.minutes(3),
            catch_to=self._failed,
        )

    def _build_outcome_choice(self) -> sfn.Choice:
        return (
            sfn.Choice(self, "AnythingApproved")
            .when(sfn.Condition.number_greater_than("$.published.published_count", 0), sfn.Succeed(self, "Published"))
            .otherwise(sfn.Succeed(self, "RejectionRecorded"))
        )

    def _build_state_machine(self, definition: sfn.IChainable) -> sfn.StateMachine:
        log_group = logs.LogGroup(
            self, "ExecutionLogs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY
        )
        return sfn.StateMachine(
            self,
            "PerImage",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=EXECUTION_TIMEOUT,
            tracing_enabled=True,
            # Execution data stays out of the logs: task inputs carry task tokens.
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
