"""How every Lambda here is built: a container image from the repository, its own role, log group and X-Ray.

Light functions share one small image (`functions/Dockerfile.lambda`: pydantic, Powertools, boto3, our code; no
torch, rembg or OpenCV); each sets its own handler as the image command. Images keep `cdk synth` offline (Docker
is needed only to deploy) and put every function on the same dependency set.
"""

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

REPO_ROOT = Path(__file__).resolve().parents[2]

# Never part of an image (and never hashed): environments, caches, tests, build output.
IMAGE_EXCLUDES = [
    ".git",
    ".venv",
    "**/node_modules",
    "**/cdk.out",
    "**/__pycache__",
    "**/*.egg-info",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "tests",
    "cdk",
    "bench",
    "out",
    "examples",
    "build",
    "dist",
]

DEFAULT_TIMEOUT = Duration.seconds(30)
# Read by the libraries, not by a handler's settings. PYDANTIC_DISABLE_PLUGINS: otherwise pydantic scans every installed
# distribution's entry points for plugins when it builds its first model, on every cold start (we use none).
LIBRARY_ENV = {
    "POWERTOOLS_METRICS_NAMESPACE": "CatalogImages",
    "LOG_LEVEL": "INFO",
    "PYDANTIC_DISABLE_PLUGINS": "__all__",
}


def light_code(handler: str) -> lambda_.DockerImageCode:
    return lambda_.DockerImageCode.from_image_asset(
        str(REPO_ROOT),
        file="functions/Dockerfile.lambda",
        exclude=IMAGE_EXCLUDES,
        cmd=[handler],
        platform=ecr_assets.Platform.LINUX_AMD64,
    )


def image_function(
    scope: Construct,
    construct_id: str,
    code: lambda_.DockerImageCode,
    *,
    description: str,
    environment: dict[str, str],
    timeout: Duration = DEFAULT_TIMEOUT,
    memory_size: int = 512,
    reserved_concurrency: int | None = None,
) -> lambda_.DockerImageFunction:
    """A function with a role of its own (nothing but its log group until grants are added) and one log group.

    `reserved_concurrency` caps the function (and keeps that much of the account's concurrency for it)."""
    log_group = logs.LogGroup(
        scope,
        f"{construct_id}Logs",
        retention=logs.RetentionDays.ONE_MONTH,
        removal_policy=RemovalPolicy.DESTROY,
    )
    role = iam.Role(
        scope,
        f"{construct_id}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"{construct_id}: least privilege, grants added by the construct that owns it",
    )
    log_group.grant_write(role)
    return lambda_.DockerImageFunction(
        scope,
        construct_id,
        code=code,
        description=description,
        role=role,
        log_group=log_group,
        environment={**LIBRARY_ENV, **environment},
        timeout=timeout,
        memory_size=memory_size,
        reserved_concurrent_executions=reserved_concurrency,
        tracing=lambda_.Tracing.ACTIVE,
        architecture=lambda_.Architecture.X86_64,
    )
