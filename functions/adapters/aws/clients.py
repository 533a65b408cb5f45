"""boto3 clients made once per Lambda container (cold start), shared by the handlers' warm invocations."""

from functools import lru_cache
from typing import Any

import boto3


@lru_cache(maxsize=8)
def client(name: str) -> Any:
    return boto3.client(name)
