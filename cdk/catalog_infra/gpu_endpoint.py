"""GPU jobs on a SageMaker asynchronous inference endpoint that scales to zero.

The model is the `gpu_jobs` container image plus an optional model artefact; the endpoint config has an
AsyncInferenceConfig (S3 output and failure paths, SNS success/error topics, one invocation per instance).
Application Auto Scaling runs 0..N instances on `ApproximateBacklogSizePerInstance`, and a step policy on
`HasBacklogWithoutCapacity` wakes it from zero. Three light Lambdas drive it: submit (`.waitForTaskToken`),
outcome (SNS -> SendTaskSuccess/Failure) and the scheduled reconciler.
"""

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from .config import DeployConfig
from .lambdas import IMAGE_EXCLUDES, REPO_ROOT, image_function, light_code
from .storage import (
    ASYNC_FAILURE_PREFIX,
    ASYNC_OUTPUT_PREFIX,
    BRANDS_PREFIX,
    WORK_PREFIXES,
    Storage,
    grant_object_reads,
)

VARIANT = "AllTraffic"
REQUEST_TTL = Duration.hours(2)  # queued requests wait this long for capacity (cold start from zero included)
INVOCATION_TIMEOUT = Duration.minutes(20)  # one job on one GPU
RECONCILE_GRACE = Duration.minutes(10)
RECONCILE_EVERY = Duration.minutes(10)
# The waiting task gives up only after the reconciler had its chance to settle the job.
SUBMIT_TASK_TIMEOUT = Duration.seconds(
    REQUEST_TTL.to_seconds() + INVOCATION_TIMEOUT.to_seconds() + RECONCILE_GRACE.to_seconds() + 2 * 600
)
BACKLOG_PER_INSTANCE_TARGET = 2.0


class GpuEndpoint(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, storage: Storage, config: DeployConfig) -> None:
        super().__init__(scope, construct_id)
        self._stack = Stack.of(self)
        self._work = storage.work
        self.key = kms.Key(self, "Key", enable_key_rotation=True, description="GPU job tokens, topics, async I/O")
        self.success_topic = sns.Topic(self, "JobSucceeded", master_key=self.key, enforce_ssl=True)
        self.error_topic = sns.Topic(self, "JobFailed", master_key=self.key, enforce_ssl=True)
        self.image = image = self._build_image()  # also the training jobs' image (training.py)
        self.model_role = self._build_model_role(image, storage)
        model = self._build_model(image, config, storage)
        self.endpoint = self._build_endpoint(model, config)
        self.endpoint_name = self.endpoint.attr_endpoint_name
        self._build_scaling(config)
        self.jobs = self._build_job_store()
        environment = self._function_environment()
        self.submit = self._build_submit(environment)
        self.outcome = self._build_outcome(environment)
        self.reconcile = self._build_reconcile(environment)
        self._grant_settling(self.outcome, missing_is_not_found=False)  # reads the location its notification names
        self._grant_settling(self.reconcile, missing_is_not_found=True)  # HeadObject: does an outcome exist?

    # 1. The model: the gpu_jobs container, weights from the artefact (or baked into the image).

    def _build_image(self) -> ecr_assets.DockerImageAsset:
        return ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(REPO_ROOT),
            file="gpu_jobs/Dockerfile",
            exclude=IMAGE_EXCLUDES,
            platform=ecr_assets.Platform.LINUX_AMD64,
        )

    def _build_model_role(self, image: ecr_assets.DockerImageAsset, storage: Storage) -> iam.Role:
        role = iam.Role(
            self,
            "ModelRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="The GPU jobs container: its inputs and outputs in the work bucket, its topics, its logs",
        )
        image.repository.grant_pull(role)
        work = self._work
        # gpu_jobs/storage.py turns a missing input or adapter (404) into the job's own input error.
        reads = [WORK_PREFIXES["requests"], WORK_PREFIXES["prepared"], WORK_PREFIXES["outputs"]]
        grant_object_reads(work, role, reads, missing_is_not_found=True)
        work.grant_put(role, f"{WORK_PREFIXES['outputs']}*")
        work.grant_put(role, f"{ASYNC_OUTPUT_PREFIX}*")
        work.grant_put(role, f"{ASYNC_FAILURE_PREFIX}*")
        # The brand's LoRA adapters and model photos its jobs load (read-only: the ML owner curates them).
        grant_object_reads(storage.brands, role, [BRANDS_PREFIX], missing_is_not_found=True)
        self.success_topic.grant_publish(role)
        self.error_topic.grant_publish(role)
        self.key.grant_encrypt_decrypt(role)
        self._allow_logs_and_metrics(role)
        return role

    def _allow_logs_and_metrics(self, role: iam.Role) -> None:
        """The container's logs and metrics, under SageMaker's own log groups and namespaces only."""
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[
                    self._stack.format_arn(service="logs", resource="log-group", resource_name="/aws/sagemaker/*")
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "AWS/SageMaker"]}},
            )
        )

    def _build_model(
        self, image: ecr_assets.DockerImageAsset, config: DeployConfig, storage: Storage
    ) -> sagemaker.CfnModel:
        container: dict[str, object] = {
            "image": image.image_uri,
            "environment": {
                "GPU_JOBS_COMMERCIAL": "true" if config.commercial else "false",
                # The only buckets a job may read or write (gpu_jobs.storage refuses every other URI).
                "GPU_JOBS_BUCKETS": f"{storage.work.bucket_name},{storage.brands.bucket_name}",
            },
        }
        if config.model_artefact_s3_uri:
            container["model_data_url"] = config.model_artefact_s3_uri
            bucket, _, key = config.model_artefact_s3_uri.removeprefix("s3://").partition("/")
            self.model_role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"], resources=[f"arn:{self._stack.partition}:s3:::{bucket}/{key}"]
                )
            )
        model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.model_role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(**container),  # type: ignore[arg-type]
        )
        model.node.add_dependency(self.model_role)
        return model

    # 2. Async endpoint config and endpoint.

    def _build_endpoint(self, model: sagemaker.CfnModel, config: DeployConfig) -> sagemaker.CfnEndpoint:
        work = self._work
        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            kms_key_id=self.key.key_arn,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=model.attr_model_name,
                    instance_type=config.instance_type,
                    initial_instance_count=1,  # SageMaker needs one to create it; auto scaling takes it to zero
                    initial_variant_weight=1.0,
                )
            ],
            async_inference_config=sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty(
                output_config=sagemaker.CfnEndpointConfig.AsyncInferenceOutputConfigProperty(
                    s3_output_path=work.s3_url_for_object(ASYNC_OUTPUT_PREFIX.rstrip("/")),
                    s3_failure_path=work.s3_url_for_object(ASYNC_FAILURE_PREFIX.rstrip("/")),
                    kms_key_id=self.key.key_arn,
                    notification_config=sagemaker.CfnEndpointConfig.AsyncInferenceNotificationConfigProperty(
                        success_topic=self.success_topic.topic_arn,
                        error_topic=self.error_topic.topic_arn,
                    ),
                ),
                client_config=sagemaker.CfnEndpointConfig.AsyncInferenceClientConfigProperty(
                    max_concurrent_invocations_per_instance=1
                ),
            ),
        )
        return sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self._fixed_endpoint_name,
            endpoint_config_name=endpoint_config.attr_endpoint_config_name,
        )

    @property
    def _fixed_endpoint_name(self) -> str:
        """A fixed lower-case name: IAM matches endpoint ARNs in lower case, so the submit policy can name it."""
        return f"{self._stack.stack_name.lower()}-gpu-jobs"[:63]

    # 3. Scale 0..N on the backlog; wake from zero on HasBacklogWithoutCapacity.

    def _build_scaling(self, config: DeployConfig) -> None:
        scaling = appscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=0,
            max_capacity=config.max_instances,
        )
        scaling.node.add_dependency(self.endpoint)
        scaling.scale_to_track_metric(
            "BacklogPerInstance",
            target_value=BACKLOG_PER_INSTANCE_TARGET,
            custom_metric=self._endpoint_metric("ApproximateBacklogSizePerInstance"),
            scale_in_cooldown=Duration.minutes(10),
            scale_out_cooldown=Duration.minutes(2),
        )
        scaling.scale_on_metric(
            "WakeFromZero",
            metric=self._endpoint_metric("HasBacklogWithoutCapacity"),
            scaling_steps=[
                appscaling.ScalingInterval(upper=0.5, change=0),
                appscaling.ScalingInterval(lower=0.5, change=1),
            ],
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            cooldown=Duration.minutes(5),
            evaluation_periods=1,
        )

    def _endpoint_metric(self, metric_name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/SageMaker",
            metric_name=metric_name,
            dimensions_map={"EndpointName": self.endpoint_name},
            statistic="Average",
            period=Duration.minutes(1),
        )

    # 4. The job store and the three functions that drive the endpoint.

    def _build_job_store(self) -> dynamodb.Table:
        # One item per attempt, holding the task token (hence the customer-managed key).
        table = dynamodb.Table(
            self,
            "Jobs",
            partition_key=dynamodb.Attribute(name="job_id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute="expires_at",  # written at submission (functions/adapters/aws/job_store.py)
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Sparse: only open jobs carry `open_job`, so the reconciler reads a page of them, oldest first, not the table.
        table.add_global_secondary_index(
            index_name="open-jobs",
            partition_key=dynamodb.Attribute(name="open_job", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="submitted_at", type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        return table

    def _function_environment(self) -> dict[str, str]:
        """The same settings for submit, outcome and reconcile (GpuJobSettings)."""
        return {
            "JOBS_TABLE_NAME": self.jobs.table_name,
            "WORK_BUCKET": self._work.bucket_name,
            "ENDPOINT_NAME": self.endpoint_name,
            "REQUEST_TTL_SECONDS": str(int(REQUEST_TTL.to_seconds())),
            "INVOCATION_TIMEOUT_SECONDS": str(int(INVOCATION_TIMEOUT.to_seconds())),
            "RECONCILE_GRACE_SECONDS": str(int(RECONCILE_GRACE.to_seconds())),
        }

    def _build_submit(self, environment: dict[str, str]) -> lambda_.DockerImageFunction:
        submit = image_function(
            self,
            "Submit",
            light_code("functions.handlers.submit_gpu_job.lambda_handler"),
            description="Writes the GPU job request to S3, InvokeEndpointAsync, stores the task token",
            environment=environment,
        )
        self.jobs.grant(submit, "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem")
        self.key.grant_encrypt_decrypt(submit)
        self._work.grant_put(submit, f"{WORK_PREFIXES['requests']}*")
        submit.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpointAsync"],
                resources=[
                    self._stack.format_arn(
                        service="sagemaker", resource="endpoint", resource_name=self._fixed_endpoint_name
                    )
                ],
            )
        )
        return submit

    def _build_outcome(self, environment: dict[str, str]) -> lambda_.DockerImageFunction:
        outcome = image_function(
            self,
            "Outcome",
            light_code("functions.handlers.gpu_job_outcome.lambda_handler"),
            description="SageMaker async SNS notifications -> SendTaskSuccess / SendTaskFailure",
            environment=environment,
        )
        outcome.add_event_source(sources.SnsEventSource(self.success_topic))
        outcome.add_event_source(sources.SnsEventSource(self.error_topic))
        return outcome

    def _build_reconcile(self, environment: dict[str, str]) -> lambda_.DockerImageFunction:
        reconcile = image_function(
            self,
            "Reconcile",
            light_code("functions.handlers.reconcile_gpu_jobs.lambda_handler"),
            description="Settles GPU jobs with no outcome after RequestTTL + invocation timeout",
            environment=environment,
            timeout=Duration.minutes(5),
        )
        events.Rule(
            self,
            "ReconcileSchedule",
            schedule=events.Schedule.rate(RECONCILE_EVERY),
            targets=[targets.LambdaFunction(reconcile)],
        )
        return reconcile

    def _grant_settling(self, function: lambda_.IFunction, *, missing_is_not_found: bool) -> None:
        """The outcome handler and the reconciler read the async results and settle the job's item."""
        self.jobs.grant(function, "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query")
        self.key.grant_encrypt_decrypt(function)
        grant_object_reads(
            self._work, function, [ASYNC_OUTPUT_PREFIX, ASYNC_FAILURE_PREFIX], missing_is_not_found=missing_is_not_found
        )

    def allow_resume(self, state_machine: sfn.IStateMachine) -> None:
        """The outcome handler and the reconciler resume (or fail) the waiting task."""
        state_machine.grant_task_response(self.outcome)
        state_machine.grant_task_response(self.reconcile)
