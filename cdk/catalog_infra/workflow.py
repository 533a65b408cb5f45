"""The per-image workflow: a Step Functions Standard state machine (JSONPath).

prepare -> Map over the GPU jobs (submit, `.waitForTaskToken`) -> automatic checks -> review (`.waitForTaskToken`)
-> publish (approved images, and the rejections' feedback) -> Published | RejectionRecorded.
Every task retries throttling and service errors with full jitter, has a timeout, and catches to a Fail state
that carries the error and its cause.
"""

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from .config import DeployConfig
from .gpu_endpoint import SUBMIT_TASK_TIMEOUT, GpuEndpoint
from .lambdas import IMAGE_EXCLUDES, REPO_ROOT, image_function, light_code
from .review import Review
from .storage import APPROVED_PREFIX, FEEDBACK_PREFIX, INTAKE_PREFIX, WORK_PREFIXES, Storage

TRANSIENT_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
]
GPU_JOB_ERRORS = ["GpuJobFailed", "GpuJobTimedOut"]
REVIEW_EXPIRED = "ReviewExpired"  # functions.review.resume: the sweep expired the batch
GPU_JOB_CONCURRENCY = 4  # per image; the endpoint's own backlog queues the rest
PREPARE_TIMEOUT = Duration.minutes(5)
EXECUTION_TIMEOUT = Duration.days(10)


def _retry_transient(task: sfn.TaskStateBase) -> None:
    task.add_retry(
        errors=TRANSIENT_ERRORS,
        interval=Duration.seconds(2),
        max_attempts=5,
        backoff_rate=2.0,
        max_delay=Duration.seconds(60),
        jitter_strategy=sfn.JitterType.FULL,
    )


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
        # 1. The task functions this construct owns.
        self.prepare_function = image_function(
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
                "CATALOG_MODELS_DIR": "/opt/models",
                "COMMERCIAL": "true" if config.commercial else "false",
                "REVIEWERS": ",".join(config.reviewer_emails),
            },
            timeout=PREPARE_TIMEOUT,
            memory_size=3008,
        )
        storage.intake.grant_read(self.prepare_function, f"{INTAKE_PREFIX}*")
        storage.work.grant_put(self.prepare_function, f"{WORK_PREFIXES['prepared']}*")
        self.checks_function = image_function(
            self,
            "Checks",
            light_code("functions.handlers.automatic_checks.lambda_handler"),
            description="Automatic checks on generated images -> review items with flags",
            environment={"MAX_PIXEL_DIFFERENCE": "2"},
            timeout=Duration.minutes(5),
            memory_size=2048,
        )
        storage.work.grant_read(self.checks_function, f"{WORK_PREFIXES['prepared']}*")
        storage.work.grant_read(self.checks_function, f"{WORK_PREFIXES['outputs']}*")
        self.publish_function = image_function(
            self,
            "Publish",
            light_code("functions.handlers.publish.lambda_handler"),
            description="Approved -> output bucket (never over an object); rejected -> feedback records",
            environment={
                "OUTPUT_BUCKET": storage.output.bucket_name,
                "APPROVED_PREFIX": APPROVED_PREFIX,
                "FEEDBACK_PREFIX": FEEDBACK_PREFIX,
            },
            timeout=Duration.minutes(2),
            memory_size=1024,
        )
        storage.work.grant_read(self.publish_function, f"{WORK_PREFIXES['prepared']}*")
        storage.work.grant_read(self.publish_function, f"{WORK_PREFIXES['outputs']}*")
        storage.output.grant_put(self.publish_function, f"{APPROVED_PREFIX}*")
        storage.output.grant_put(self.publish_function, f"{FEEDBACK_PREFIX}*")
        storage.output.grant_read(self.publish_function, f"{APPROVED_PREFIX}*")
        storage.output.grant_read(self.publish_function, f"{FEEDBACK_PREFIX}*")

        # 2. The states.
        # A Fail state may not raise a `States.*` error itself: those (timeouts, runtime errors) get a fixed name.
        failed = (
            sfn.Choice(self, "WhichFailure")
            .when(
                sfn.Condition.string_matches("$.error.Error", "States.*"),
                sfn.Fail(self, "WorkflowFailed", error="WorkflowFailed", cause_path="$.error.Cause"),
            )
            .otherwise(sfn.Fail(self, "ImageFailed", error_path="$.error.Error", cause_path="$.error.Cause"))
        )
        not_decided = sfn.Fail(self, "ReviewNotDecided", error_path="$.error.Error", cause_path="$.error.Cause")
        timed_out = sfn.Fail(
            self,
            "ReviewTimedOut",
            error="ReviewTimedOut",
            cause="No decision arrived within the review link's lifetime.",
        )

        prepare = tasks.LambdaInvoke(
            self,
            "PrepareImage",
            lambda_function=self.prepare_function,
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path="$.prepared",
            task_timeout=sfn.Timeout.duration(PREPARE_TIMEOUT.plus(Duration.minutes(1))),
        )
        _retry_transient(prepare)
        prepare.add_catch(failed, errors=["States.ALL"], result_path="$.error")

        submit = tasks.LambdaInvoke(
            self,
            "RunGpuJob",
            lambda_function=gpu.submit,
            integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
            payload=sfn.TaskInput.from_object(
                {
                    "task_token": sfn.JsonPath.task_token,
                    "attempt": sfn.JsonPath.string_at("$$.State.RetryCount"),
                    "execution_arn": sfn.JsonPath.execution_id,
                    "job": sfn.JsonPath.object_at("$"),
                }
            ),
            retry_on_service_exceptions=False,
            task_timeout=sfn.Timeout.duration(SUBMIT_TASK_TIMEOUT),
        )
        _retry_transient(submit)
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
        gpu_jobs.add_catch(failed, errors=["States.ALL"], result_path="$.error")

        checks = tasks.LambdaInvoke(
            self,
            "AutomaticChecks",
            lambda_function=self.checks_function,
            payload_response_only=True,
            retry_on_service_exceptions=False,
            payload=sfn.TaskInput.from_object(
                {"prepared": sfn.JsonPath.object_at("$.prepared"), "gpu_results": sfn.JsonPath.list_at("$.gpu_results")}
            ),
            result_path="$.review",
            task_timeout=sfn.Timeout.duration(Duration.minutes(6)),
        )
        _retry_transient(checks)
        checks.add_catch(failed, errors=["States.ALL"], result_path="$.error")

        # The notify handler's input (functions/handlers/review_notify.py, ReviewRequest).
        ask_reviewers = tasks.LambdaInvoke(
            self,
            "HumanReview",
            lambda_function=review.notify,
            integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
            payload=sfn.TaskInput.from_object(
                {
                    "task_token": sfn.JsonPath.task_token,
                    "brand": sfn.JsonPath.string_at("$.review.brand"),
                    "reviewers": sfn.JsonPath.list_at("$.review.reviewers"),
                    "items": sfn.JsonPath.list_at("$.review.items"),
                }
            ),
            retry_on_service_exceptions=False,
            result_path="$.outcome",
            # The link's lifetime plus the sweep's period and a margin: the sweep normally expires it first.
            task_timeout=sfn.Timeout.duration(review.link_ttl.plus(Duration.hours(1))),
        )
        _retry_transient(ask_reviewers)
        ask_reviewers.add_catch(not_decided, errors=[REVIEW_EXPIRED], result_path="$.error")
        ask_reviewers.add_catch(timed_out, errors=["States.Timeout"], result_path="$.error")
        ask_reviewers.add_catch(failed, errors=["States.ALL"], result_path="$.error")

        publish = tasks.LambdaInvoke(
            self,
            "PublishDecisions",
            lambda_function=self.publish_function,
            payload_response_only=True,
            retry_on_service_exceptions=False,
            payload=sfn.TaskInput.from_object(
                {"review": sfn.JsonPath.object_at("$.review"), "outcome": sfn.JsonPath.object_at("$.outcome")}
            ),
            result_path="$.published",
            task_timeout=sfn.Timeout.duration(Duration.minutes(3)),
        )
        _retry_transient(publish)
        publish.add_catch(failed, errors=["States.ALL"], result_path="$.error")

        anything_published = (
            sfn.Choice(self, "AnythingApproved")
            .when(sfn.Condition.number_greater_than("$.published.published_count", 0), sfn.Succeed(self, "Published"))
            .otherwise(sfn.Succeed(self, "RejectionRecorded"))
        )
        definition = prepare.next(gpu_jobs).next(checks).next(ask_reviewers).next(publish).next(anything_published)

        log_group = logs.LogGroup(
            self, "ExecutionLogs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY
        )
        self.state_machine = sfn.StateMachine(
            self,
            "PerImage",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=EXECUTION_TIMEOUT,
            tracing_enabled=True,
            # Execution data stays out of the logs: task inputs carry task tokens.
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
