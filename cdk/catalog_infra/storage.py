"""Buckets: intake (originals, write-once), work (intermediates, expiring), output (published), brands (the brand
store), access logs.

Every bucket is versioned, encrypted, private and TLS-only. Only the intake bucket notifies intake, and only for
its `incoming/` prefix; derived files live in the work and output buckets, so no output can re-trigger intake.
"""

from collections.abc import Sequence
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
# The brand store: `brands/<brand>/profile.json` and the adapters and model photos a profile points at.
BRANDS_PREFIX = "brands/"
INTERMEDIATE_DAYS = 30


def grant_object_reads(
    bucket: s3.IBucket,
    grantee: iam.IGrantable,
    prefixes: Sequence[str],
    *,
    object_versions: bool = False,
    missing_is_not_found: bool = False,
) -> None:
    """`s3:GetObject` on the objects under `prefixes` of one bucket, and nothing on the bucket itself.

    CDK's `grant_read` adds `s3:GetBucket*` and `s3:List*` on the whole bucket; here listing is granted only where a
    code path must tell a missing object (404, "not found") from a refusal (403), which S3 answers only to a caller
    that may list: then `s3:ListBucket`, limited by `s3:prefix` to the same prefixes. `object_versions` adds
    `s3:GetObjectVersion` for reads of one version (`VersionId`).
    """
    actions = ["s3:GetObject", *(["s3:GetObjectVersion"] if object_versions else [])]
    iam.Grant.add_to_principal(
        grantee=grantee, actions=actions, resource_arns=[bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes]
    )
    if missing_is_not_found:
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:ListBucket"],
            resource_arns=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in prefixes]}},
        )


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self._common: dict[str, Any] = {
            "encryption": s3.BucketEncryption.S3_MANAGED,
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "enforce_ssl": True,
            "versioned": True,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "removal_policy": RemovalPolicy.RETAIN,
        }
        self.access_logs = self._build_access_logs()
        self.intake = self._build_intake()
        self.work = self._build_work()
        self.output = self._build_output()
        self.brands = self._build_brands()

    def _logged_bucket(self, construct_id: str, log_prefix: str, lifecycle_rules: list[s3.LifecycleRule]) -> s3.Bucket:
        """A bucket with the common settings whose server access logs go to the access-log bucket."""
        return s3.Bucket(
            self,
            construct_id,
            **self._common,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=log_prefix,
            lifecycle_rules=lifecycle_rules,
        )

    def _build_access_logs(self) -> s3.Bucket:
        return s3.Bucket(
            self,
            "AccessLogs",
            **self._common,
            lifecycle_rules=[
                s3.LifecycleRule(expiration=Duration.days(365), noncurrent_version_expiration=Duration.days(30))
            ],
        )

    def _build_intake(self) -> s3.Bucket:
        intake = self._logged_bucket(
            "Intake", "intake/", [s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(7))]
        )
        # Originals are write-once: a put under incoming/ must be conditional (If-None-Match: *), so an upload can
        # never replace an original; versioning keeps even a deliberate delete recoverable.
        intake.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OriginalsAreWriteOnce",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[intake.arn_for_objects(f"{INTAKE_PREFIX}*")],
                conditions={"Null": {"s3:if-none-match": "true"}},
            )
        )
        return intake

    def _build_work(self) -> s3.Bucket:
        return self._logged_bucket(
            "Work",
            "work/",
            [
                s3.LifecycleRule(
                    id="IntermediatesExpire",
                    expiration=Duration.days(INTERMEDIATE_DAYS),
                    noncurrent_version_expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
        )

    def _build_output(self) -> s3.Bucket:
        return self._logged_bucket(
            "Output", "output/", [s3.LifecycleRule(noncurrent_version_expiration=Duration.days(90))]
        )

    def _build_brands(self) -> s3.Bucket:
        # Curated by the brand's ML owner (profiles, LoRA adapters, model photos): nothing here expires, and an
        # overwritten or deleted object stays recoverable as a noncurrent version. Only unfinished multipart uploads
        # of large adapters are cleaned up.
        return self._logged_bucket(
            "Brands", "brands/", [s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(7))]
        )

    @property
    def brands_uri(self) -> str:
        """`s3://<brands bucket>/brands/`: where prepare resolves `<brand>/profile.json`."""
        return self.brands.s3_url_for_object(BRANDS_PREFIX)
