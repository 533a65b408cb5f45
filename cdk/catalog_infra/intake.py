"""Event intake: S3 notifications (incoming/ only) -> SQS (+ DLQ) -> `ingest` -> one execution per object version.

With `intakeViaEventBridge`, the intake bucket sends its events to EventBridge instead, and a rule routes "Object
Created" under incoming/ to the same queue; `ingest` reads both shapes and gives an object the same ledger key either
way, so switching routes (or a moment with both) starts no image twice.
"""

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from .lambdas import image_function, light_code
from .queues import work_queue
from .storage import INTAKE_PREFIX, Storage

INGEST_TIMEOUT = Duration.seconds(60)


class Intake(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        state_machine: sfn.IStateMachine,
        via_event_bridge: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.queue, self.dlq = work_queue(self, "Events", INGEST_TIMEOUT)
        if via_event_bridge:
            self._route_through_event_bridge(storage.intake)
        else:
            storage.intake.add_event_notification(
                s3.EventType.OBJECT_CREATED,
                s3n.SqsDestination(self.queue),
                s3.NotificationKeyFilter(prefix=INTAKE_PREFIX),
            )
        self.ledger = self._build_ledger()
        self.function = self._build_ingest(state_machine)

    def _route_through_event_bridge(self, intake: s3.Bucket) -> None:
        """The bucket's events go to EventBridge; "Object Created" under incoming/ goes on to the queue."""
        intake.enable_event_bridge_notification()
        events.Rule(
            self,
            "ObjectCreated",
            description="Intake uploads (incoming/) -> the intake queue",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={"bucket": {"name": [intake.bucket_name]}, "object": {"key": [{"prefix": INTAKE_PREFIX}]}},
            ),
            targets=[targets.SqsQueue(self.queue)],
        )

    def _build_ledger(self) -> dynamodb.Table:
        """One item per object version: the claim that makes intake idempotent."""
        return dynamodb.Table(
            self,
            "Ledger",
            partition_key=dynamodb.Attribute(name="object_version", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _build_ingest(self, state_machine: sfn.IStateMachine) -> lambda_.DockerImageFunction:
        function = image_function(
            self,
            "Ingest",
            light_code("functions.handlers.ingest.lambda_handler"),
            description="S3 notifications -> one Step Functions execution per object version",
            environment={
                "LEDGER_TABLE_NAME": self.ledger.table_name,
                "STATE_MACHINE_ARN": state_machine.state_machine_arn,
                "INTAKE_PREFIX": INTAKE_PREFIX,
            },
            timeout=INGEST_TIMEOUT,
            memory_size=256,
        )
        self.ledger.grant(function, "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem")
        state_machine.grant_start_execution(function)
        function.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=10,
                max_batching_window=Duration.seconds(5),
                report_batch_item_failures=True,
                # Caps StartExecution bursts; SQS holds the rest (a 10k upload drains at ~50 executions a second).
                max_concurrency=5,
            )
        )
        return function
