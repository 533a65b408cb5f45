"""What a SageMaker training job for a brand LoRA needs: a least-privilege role and the stack outputs to start one.

`catalog train run --on sagemaker` (functions/adapters/aws/training_jobs.py) starts the job from the ML owner's
machine with the `gpu_jobs` image the endpoint uses (its `train` command). The job reads the uploaded dataset
(`brands/<brand>/datasets/...`) and writes its model and spot checkpoints under `brands/<brand>/training/...`;
it never writes `versions/` or `promotions/`: the CLI registers a version after the job completes, with the user's
own credentials, so a job can never replace or promote one.
"""

from aws_cdk import Acknowledgment, ArnFormat, CfnOutput, Stack, Validations
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .storage import BRANDS_PREFIX, Storage, grant_object_reads

DATASETS = f"{BRANDS_PREFIX}*/datasets/"
TRAINING = f"{BRANDS_PREFIX}*/training/"
TRAINING_LOG_GROUPS = "/aws/sagemaker/TrainingJobs"


class Training(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, storage: Storage, image: ecr_assets.DockerImageAsset):
        super().__init__(scope, construct_id)
        self._stack = Stack.of(self)
        self.role = self._build_role(storage.brands, image)
        self._acknowledge(storage.brands)
        self._add_outputs(storage, image)

    # 1. The role SageMaker assumes for the job.

    def _build_role(self, brands: s3.IBucket, image: ecr_assets.DockerImageAsset) -> iam.Role:
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="Brand LoRA training jobs: read the uploaded dataset, write model and checkpoints, pull the "
            "gpu_jobs image, logs and metrics",
        )
        image.repository.grant_pull(role)
        # The `train` channel (File mode lists the prefix and copies it in) and the checkpoints a resumed job reads.
        grant_object_reads(brands, role, [DATASETS, TRAINING], missing_is_not_found=True)
        # model.tar.gz (SageMaker's output path) and the spot checkpoints it uploads as training goes.
        brands.grant_put(role, f"{TRAINING}*")
        self._allow_logs_and_metrics(role)
        return role

    def _allow_logs_and_metrics(self, role: iam.Role) -> None:
        """Training jobs log to /aws/sagemaker/TrainingJobs and publish metrics to SageMaker's namespace only."""
        log_groups = self._stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{TRAINING_LOG_GROUPS}*",  # the group and its streams (`...:log-stream:<job>/...`)
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[log_groups],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/TrainingJobs", "AWS/SageMaker"]}},
            )
        )

    # 2. cdk-nag: each wildcard named, with the reason it is the narrowest scope.

    def _acknowledge(self, brands: s3.IBucket) -> None:
        child = brands.node.default_child
        assert child is not None
        bucket = f"<{self._stack.get_logical_id(child)}.Arn>"  # type: ignore[arg-type]
        log_groups = f"arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:{TRAINING_LOG_GROUPS}*"
        findings = {
            f"AwsSolutions-IAM5[Resource::{bucket}/{DATASETS}*]": (
                "The uploaded datasets of every brand (`brands/<brand>/datasets/<sha256>/`): the brand and dataset "
                "are chosen per job by the ML owner; read-only."
            ),
            f"AwsSolutions-IAM5[Resource::{bucket}/{TRAINING}*]": (
                "Each run's own `brands/<brand>/training/<run>/` (model.tar.gz and checkpoints), named per run at "
                "start time; never versions/ or promotions/."
            ),
            "AwsSolutions-IAM5[Action::s3:Abort*]": "CDK's S3 put grant (s3:Abort* for multipart uploads).",
            "AwsSolutions-IAM5[Resource::*]": (
                "ecr:GetAuthorizationToken and cloudwatch:PutMetricData accept only '*'; the metric namespace is "
                "limited to SageMaker's by condition."
            ),
            f"AwsSolutions-IAM5[Resource::{log_groups}]": (
                "SageMaker creates each training job's log stream under /aws/sagemaker/TrainingJobs at run time."
            ),
        }
        for finding, reason in findings.items():
            Validations.of(self.role).acknowledge(Acknowledgment(id=finding, reason=reason))

    # 3. What `catalog train run --on sagemaker` takes.

    def _add_outputs(self, storage: Storage, image: ecr_assets.DockerImageAsset) -> None:
        outputs = {
            "TrainingRoleArn": (self.role.role_arn, "catalog train run --on sagemaker --role-arn"),
            "TrainingImageUri": (image.image_uri, "catalog train run --on sagemaker --image-uri"),
            "BrandStoreBucket": (storage.brands.bucket_name, "The brand store's bucket (--brands s3://<it>/brands/)"),
        }
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description).override_logical_id(name)
