"""Throttles and transient service errors inside a task, raised as ONE error name the state machine retries.

An AWS call that is throttled or briefly unavailable (after botocore's own retries) must not fail the image: the
handlers wrap their work in `transient_service_errors`, which re-raises such an error as `TransientServiceError`.
Lambda reports the class name as the error, and every task of the workflow retries that name with backoff and full
jitter (`cdk/catalog_infra/workflow.py`, `TRANSIENT_ERRORS`). Anything else passes through unchanged.

The new error's message names the operation and the error code only: a service's own message may echo what was sent
(a task token in a SendTaskSuccess, for one), and Step Functions shows the message as the failure's cause.
"""

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

# The Step Functions error name (the class name, as the Lambda runtime reports it); the workflow retries it.
TRANSIENT_ERROR_NAME = "TransientServiceError"

# botocore ClientError codes that mean "try again later", across the services the handlers call.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalServerException",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "TransactionInProgressException",
    }
)
# HTTP statuses that are transient whatever the code says (S3 answers 503 SlowDown, some services a bare 5xx).
_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Network trouble between the Lambda and the service endpoint.
_TRANSIENT_NETWORK_ERRORS = (ConnectTimeoutError, ReadTimeoutError, EndpointConnectionError, ConnectionClosedError)

P = ParamSpec("P")
R = TypeVar("R")


class TransientServiceError(Exception):
    """An AWS call was throttled or the service was briefly unavailable: retry the task later."""


def transient_reason(error: BaseException) -> str | None:
    """`<operation>: <code>` when `error` is transient, else None."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in TRANSIENT_ERROR_CODES or status in _TRANSIENT_STATUSES:
            return f"{error.operation_name}: {code or status}"
        return None
    if isinstance(error, _TRANSIENT_NETWORK_ERRORS):
        return type(error).__name__
    return None


@contextmanager
def transient_service_errors() -> Iterator[None]:
    """Re-raise throttles, transient service errors and connection/read timeouts as `TransientServiceError`."""
    try:
        yield
    except (ClientError, *_TRANSIENT_NETWORK_ERRORS) as error:
        reason = transient_reason(error)
        if reason is None:
            raise
        raise TransientServiceError(f"transient AWS error, the task is retried: {reason}") from None


def retry_transient(function: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of `transient_service_errors`, for a Lambda handler (innermost, next to the function)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with transient_service_errors():
            return function(*args, **kwargs)

    return wrapper
