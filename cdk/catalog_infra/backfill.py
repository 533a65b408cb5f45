"""Bulk backfill: what is already in the intake bucket -> the normal per-image flow (`catalog backfill`).

A second Standard state machine. Its input names a prefix under `incoming/<brand>/` (or an S3 Inventory manifest of
the intake bucket) and the brand; a Distributed Map reads the objects (ItemReader: S3 ListObjectsV2, or the
inventory manifest), hands them in batches (ItemBatcher) to `backfill_batch`, which starts each one exactly as
`ingest` does (the intake ledger and the deterministic execution name: what the ledger holds is skipped), then the
child waits per image it started. At most `MaxConcurrency` children run at once, so the per-image executions start
no faster than `maxConcurrency / secondsPerImage` a second: sized to what the GPU endpoint drains before a request's
TTL runs out, and to how many images a review digest can hold. Each batch's result goes to the work bucket
(`backfill/results/`, ResultWriter); a run fails only when more than the tolerated share of batches failed, and a
stopped or failed run is redriven, or run again: every start is idempotent.

Context: `backfillMaxConcurrency` (default: the endpoint's `maxInstances`), `backfillSecondsPerImage` (default 20:
one lifestyle job on one ml.g5.xlarge), `backfillToleratedFailurePercent` (default 5).
"""

from aws_cdk import Acknowledgment, ArnFormat, CfnOutput, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from .config import DeployConfig
from .intake import Intake
from .lambdas import image_function, light_code
from .storage import INTAKE_PREFIX, Storage, grant_object_reads
from .workflow import lambda_task

ITEMS_PER_BATCH = 10
INVENTORY_PREFIX = "inventory/"  # where the intake bucket's S3 Inventory reports go (its manifest and data files)
RESULTS_PREFIX = "backfill/results/"
MAP_LABELS = ("Listing", "Inventory")  # the two Distributed Map states (and their map runs' labels)
# One lifestyle job on one ml.g5.xlarge, as cdk/README.md states it (~180 an hour): with MaxConcurrency = instances,
# the map starts images as fast as the endpoint drains them.
DEFAULT_SECONDS_PER_IMAGE = 20.0
DEFAULT_TOLERATED_FAILURE_PERCENT = 5
BATCH_TIMEOUT = Duration.minutes(5)
X_RAY = "X-Ray's PutTraceSegments/PutTelemetryRecords accept no resource but '*' (active tracing)."
S3_PREFIX = "One key prefix of one bucket: the narrowest scope S3 offers for objects that are created at run time."
LOGS_AND_X_RAY = (
    "CloudWatch Logs delivery (vended logs) and X-Ray actions accept no resource but '*', as AWS documents for "
    "Step Functions logging and tracing."
)
INVENTORY = (
    "S3 Inventory writes the manifest and its data files under its destination prefix with names made at run "
    "time; read-only, one prefix of one bucket."
)
CHILD_EXECUTIONS = (
    "A Distributed Map starts and stops its own child executions, named at run time: states:StartExecution, "
    "DescribeExecution and StopExecution on this state machine's executions only (CDK's Distributed Map grant)."
)


class Backfill(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        intake: Intake,
        state_machine: sfn.IStateMachine,
        config: DeployConfig,
    ) -> None:
        super().__init__(scope, construct_id)
        self.max_concurrency = int(self.node.try_get_context("backfillMaxConcurrency") or config.max_instances)
        self.seconds_per_image = float(
            self.node.try_get_context("backfillSecondsPerImage") or DEFAULT_SECONDS_PER_IMAGE
        )
        self.tolerated_failure_percent = int(
            self.node.try_get_context("backfillToleratedFailurePercent") or DEFAULT_TOLERATED_FAILURE_PERCENT
        )
        self._check_choices()
        self._storage = storage
        self.function = self._build_batch_function(storage, intake, state_machine)
        self.state_machine = self._build_state_machine(storage)
        self._acknowledge_findings()
        CfnOutput(
            self,
            "StateMachineArn",
            value=self.state_machine.state_machine_arn,
            description="catalog backfill s3://<intake bucket>/incoming/<brand>/ --brand <brand> starts it",
        )

    def _check_choices(self) -> None:
        problems = []
        if not 1 <= self.max_concurrency <= 1000:
            problems.append(f"backfillMaxConcurrency {self.max_concurrency}: from 1 to 1000 child executions")
        if not 0 <= self.seconds_per_image * ITEMS_PER_BATCH <= 3600:
            problems.append(f"backfillSecondsPerImage {self.seconds_per_image}: a batch may wait an hour at most")
        if not 0 <= self.tolerated_failure_percent <= 100:
            problems.append(f"backfillToleratedFailurePercent {self.tolerated_failure_percent}: from 0 to 100")
        if problems:
            raise ValueError("invalid deployment context: " + "; ".join(problems))

    def _build_batch_function(
        self, storage: Storage, intake: Intake, state_machine: sfn.IStateMachine
    ) -> lambda_.DockerImageFunction:
        function = image_function(
            self,
            "Batch",
            light_code("functions.handlers.backfill_batch.lambda_handler"),
            description="Backfill batch: existing intake objects -> one execution each, as ingest starts them",
            environment={
                "LEDGER_TABLE_NAME": intake.ledger.table_name,
                "STATE_MACHINE_ARN": state_machine.state_machine_arn,
                "INTAKE_PREFIX": INTAKE_PREFIX,
                "BACKFILL_SECONDS_PER_IMAGE": repr(self.seconds_per_image),
            },
            timeout=Duration.seconds(60),
            memory_size=256,
        )
        # The same rights as ingest, plus HeadObject (the version id a listing lacks; a vanished object is a 404).
        intake.ledger.grant(function, "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem")
        state_machine.grant_start_execution(function)
        grant_object_reads(storage.intake, function, [INTAKE_PREFIX], object_versions=True, missing_is_not_found=True)
        return function

    def _build_batch_processor(self, suffix: str) -> sfn.IChainable:
        """One child: start the batch, then wait what the batch asks (its started images x secondsPerImage)."""
        start = lambda_task(
            self,
            f"StartBatch{suffix}",
            self.function,
            result_path="$",  # the child's output is the batch's counts (the ResultWriter keeps them)
            timeout=BATCH_TIMEOUT,
            catch_to=None,  # a failed batch fails its child; the Map tolerates a share of them
        )
        pace = sfn.Wait(self, f"Pace{suffix}", time=sfn.WaitTime.seconds_path("$.wait_seconds"))
        return start.next(pace)

    def _build_defaults(self) -> sfn.Chain:
        """The run's input over the deployment's defaults: `catalog backfill --max-concurrency N` may lower (or
        raise) the bound for one run; without it, the bound sized for the endpoint applies."""
        defaults = sfn.Pass(
            self,
            "Defaults",
            result=sfn.Result.from_object({"max_concurrency": self.max_concurrency}),
            result_path="$.defaults",
        )
        merged = sfn.Pass(
            self,
            "RunSettings",
            parameters={"run.$": "States.JsonMerge($.defaults, $$.Execution.Input, false)"},
            output_path="$.run",
        )
        return defaults.next(merged)

    def _build_map(self, storage: Storage, construct_id: str, reader: sfn.IItemReader) -> sfn.DistributedMap:
        objects = sfn.DistributedMap(
            self,
            construct_id,
            item_reader=reader,
            item_batcher=sfn.ItemBatcher(
                max_items_per_batch=ITEMS_PER_BATCH,
                batch_input={"bucket": storage.intake.bucket_name, "brand.$": "$.brand"},
            ),
            max_concurrency_path="$.max_concurrency",  # the run's, else the deployment's (see _build_defaults)
            tolerated_failure_percentage=self.tolerated_failure_percent,
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_writer=sfn.ResultWriter(bucket=storage.work, prefix=RESULTS_PREFIX),
            label=construct_id,
        )
        objects.item_processor(self._build_batch_processor(construct_id))
        return objects

    def _build_state_machine(self, storage: Storage) -> sfn.StateMachine:
        listing = self._build_map(
            storage,
            "Listing",
            sfn.S3ObjectsItemReader(bucket=storage.intake, prefix=sfn.JsonPath.string_at("$.prefix")),
        )
        inventory = self._build_map(
            storage,
            "Inventory",
            sfn.S3ManifestItemReader(bucket=storage.intake, key=sfn.JsonPath.string_at("$.manifest_key")),
        )
        source = self._build_defaults().next(
            sfn.Choice(self, "Source").when(sfn.Condition.is_present("$.manifest_key"), inventory).otherwise(listing)
        )
        log_group = logs.LogGroup(
            self, "ExecutionLogs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY
        )
        # CDK's Distributed Map grants read on every object of the intake bucket and write on the whole work bucket;
        # the machine gets a role of its own that CDK may not add to, holding exactly what the map does.
        role = self._build_role(storage)
        machine = sfn.StateMachine(
            self,
            "Objects",
            definition_body=sfn.DefinitionBody.from_chainable(source),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=Duration.days(30),
            tracing_enabled=True,
            role=role.without_policy_updates(),
            # Execution data stays out of the logs: batches name object keys.
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        machine.node.add_dependency(role)  # the logging permissions exist before the machine is created
        self._allow_child_executions(machine, role)
        return machine

    def _build_role(self, storage: Storage) -> iam.Role:
        role = iam.Role(
            self,
            "ObjectsRole",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description="Backfill map: list incoming/, read inventory/, invoke the batch function, write results",
        )
        statements = [
            # The batch function itself (the task names its unqualified ARN: no versions or aliases).
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[self.function.function_arn]),
            # ItemReader: ListObjectsV2 under incoming/ only.
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[storage.intake.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{INTAKE_PREFIX}*"]}},
            ),
            # ItemReader (MANIFEST): the inventory's manifest and the data files it lists, under inventory/.
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[storage.intake.arn_for_objects(f"{INVENTORY_PREFIX}*")]
            ),
            # ResultWriter: the run's manifest and result files (multipart for large ones).
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"],
                resources=[storage.work.arn_for_objects(f"{RESULTS_PREFIX}*")],
            ),
            # Logs to CloudWatch and traces to X-Ray: these actions take no resource but '*' (AWS documents so).
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogDelivery",
                    "logs:GetLogDelivery",
                    "logs:UpdateLogDelivery",
                    "logs:DeleteLogDelivery",
                    "logs:ListLogDeliveries",
                    "logs:PutResourcePolicy",
                    "logs:DescribeResourcePolicies",
                    "logs:DescribeLogGroups",
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                    "xray:GetSamplingRules",
                    "xray:GetSamplingTargets",
                ],
                resources=["*"],
            ),
        ]
        for statement in statements:
            role.add_to_policy(statement)
        return role

    def _allow_child_executions(self, machine: sfn.StateMachine, role: iam.Role) -> None:
        """The Distributed Map runs its batches as child executions of this machine (a separate policy: it names the
        machine, which needs the role first)."""
        executions = Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        map_runs = [
            Stack.of(self).format_arn(
                service="states",
                resource="execution",
                resource_name=f"{machine.state_machine_name}/{label}:*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            for label in MAP_LABELS
        ]
        iam.Policy(
            self,
            "ChildExecutions",
            roles=[role],
            statements=[
                iam.PolicyStatement(actions=["states:StartExecution"], resources=[machine.state_machine_arn]),
                iam.PolicyStatement(
                    actions=["states:DescribeExecution", "states:StopExecution"], resources=[executions]
                ),
                iam.PolicyStatement(actions=["states:RedriveExecution"], resources=map_runs),
            ],
        )

    def _acknowledge_findings(self) -> None:
        """cdk-nag, scoped to this construct's roles and policies; each reason says why no narrower scope exists."""
        stack = Stack.of(self)
        intake, work = (
            stack.get_logical_id(bucket.node.default_child)  # type: ignore[arg-type]
            for bucket in (self._storage.intake, self._storage.work)
        )
        machine = stack.get_logical_id(self.state_machine.node.default_child)  # type: ignore[arg-type]
        executions = (
            "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
            f'{{"Fn::Select":[6,{{"Fn::Split":[":",{{"Ref":"{machine}"}}]}}]}}'
        )
        executions_by_name = f"arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<{machine}.Name>"
        findings = {
            "BatchRole": {
                "AwsSolutions-IAM5[Resource::*]": X_RAY,
                f"AwsSolutions-IAM5[Resource::<{intake}.Arn>/{INTAKE_PREFIX}*]": S3_PREFIX,
            },
            "ObjectsRole": {
                "AwsSolutions-IAM5[Resource::*]": LOGS_AND_X_RAY,
                f"AwsSolutions-IAM5[Resource::<{intake}.Arn>/{INVENTORY_PREFIX}*]": INVENTORY,
                f"AwsSolutions-IAM5[Resource::<{work}.Arn>/{RESULTS_PREFIX}*]": S3_PREFIX,
            },
        }
        suffixes = ("", *(f"/{label}" for label in MAP_LABELS))
        findings["ChildExecutions"] = {
            f"AwsSolutions-IAM5[Resource::{executions_by_name}{suffix}:*]": CHILD_EXECUTIONS for suffix in suffixes
        }
        # CDK's own Distributed Map policy: built, but attached to nothing (the machine's role takes no updates).
        findings["Objects"] = {
            f"AwsSolutions-IAM5[Resource::{executions}{suffix}:*]": CHILD_EXECUTIONS for suffix in suffixes
        }
        for path, acknowledged in findings.items():
            for finding, reason in acknowledged.items():
                Validations.of(self.node.find_child(path)).acknowledge(Acknowledgment(id=finding, reason=reason))
