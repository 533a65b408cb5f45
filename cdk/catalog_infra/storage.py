"""Buckets: intake (originals, write-once), work (intermediates, expiring), output (published), access logs.

Every bucket is versioned, encrypted, private and TLS-only. Only the intake bucket notifies intake, and only for
its `incoming/` prefix; derived files live in the work and output buckets, so no output can re-trigger intake.
"""

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

INTAKE_PREFIX = "incoming/"
WORK_PREFIXES = {"prepared": "prepared/", "requests": "gpu/requests/", "outputs": "gpu/outputs/"}
ASYNC_OUTPUT_PREFIX = "gpu/results/"
ASYNC_FAILURE_PREFIX = "gpu/failures/"
APPROVED_PREFIX = "approved/"
FEEDBACK_PREFIX = "feedback/"
INTERMEDIATE_DAYS = 30


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        common: dict[str, Any] = {
            "encryption": s3.BucketEncryption.S3_MANAGED,
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "enforce_ssl": True,
            "versioned": True,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "removal_policy": RemovalPolicy.RETAIN,
        }
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            **common,
            lifecycle_rules=[
                s3.LifecycleRule(expiration=Duration.days(365), noncurrent_version_expiration=Duration.days(30))
            ],
        )
        self.intake = s3.Bucket(
            self,
            "Intake",
            **common,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="intake/",
            lifecycle_rules=[s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(7))],
        )
        # Originals are write-once: a put under incoming/ must be conditional (If-None-Match: *), so an upload can
        # never replace an original; versioning keeps even a deliberate delete recoverable.
        self.intake.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OriginalsAreWriteOnce",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[self.intake.arn_for_objects(f"{INTAKE_PREFIX}*")],
                conditions={"Null": {"s3:if-none-match": "true"}},
            )
        )
        self.work = s3.Bucket(
            self,
            "Work",
            **common,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="work/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="IntermediatesExpire",
                    expiration=Duration.days(INTERMEDIATE_DAYS),
                    noncurrent_version_expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
        )
        self.output = s3.Bucket(
            self,
            "Output",
            **common,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="output/",
            lifecycle_rules=[s3.LifecycleRule(noncurrent_version_expiration=Duration.days(90))],
        )
