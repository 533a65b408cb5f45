"""boto3 clients made once per Lambda container (cold start), shared by the handlers' warm invocations."""

from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config


@lru_cache(maxsize=16)
def client(name: str) -> Any:
    if name == "s3":
        # SigV4 on the regional virtual-hosted endpoint: presigned review image URLs SigV2 would make are deprecated.
        return boto3.client("s3", config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}))
    return boto3.client(name)
