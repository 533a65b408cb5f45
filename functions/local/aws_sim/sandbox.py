"""The process-wide set-up one sim run needs, all of it undone afterwards: environment, moto, handler caches, logs.

The handlers read their settings, clients and keys from the process (environment variables, module-level caches),
exactly as in a Lambda container; the sim is one "container" shared by every function for the run's duration.
"""

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from functions.local.aws_sim.stack import REGION

# Credentials that can reach nothing; moto accepts any.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "aws-sim",
    "AWS_SECRET_ACCESS_KEY": "aws-sim",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "POWERTOOLS_TRACE_DISABLED": "1",  # no X-Ray daemon here
}
# What could send boto3 to a real account, or to another endpoint, from the user's shell or ~/.aws.
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN")
_UNSET_PREFIXES = ("AWS_ENDPOINT_URL", "AWS_WEB_IDENTITY", "AWS_CONTAINER_")
MOTO_CONFIG: Any = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


@contextmanager
def environment(variables: dict[str, str], scratch: Path) -> Iterator[None]:
    """Set `variables` over fake credentials, with no profile or config file in play; everything restored on exit."""
    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if name in _UNSET or name.startswith(_UNSET_PREFIXES):
                del os.environ[name]
        # An empty config and credentials file: nothing in ~/.aws can point boto3 at a real account or endpoint.
        empty = scratch / "aws-config"
        empty.write_text("", encoding="utf-8")
        os.environ.update({"AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty)})
        os.environ.update(FAKE_CREDENTIALS)
        os.environ.update(variables)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def moto_services() -> Iterator[None]:
    """moto in this process (S3, SQS, DynamoDB, Step Functions executing ASL, SNS, SES, Secrets Manager, SageMaker
    runtime); every boto3 client in every thread talks to it until exit, when all its state is dropped."""
    from moto import mock_aws

    with mock_aws(config=MOTO_CONFIG):
        yield


def clear_handler_caches() -> None:
    """Forget the settings, clients, review service and background engine the handlers cached (a new container)."""
    from functions.adapters.aws import clients, settings
    from functions.adapters.aws import review as aws_review
    from functions.handlers import prepare

    settings.load.cache_clear()
    clients.client.cache_clear()
    aws_review.reset()
    prepare.background_remover.cache_clear()


@contextmanager
def fresh_handler_caches() -> Iterator[None]:
    clear_handler_caches()
    try:
        yield
    finally:
        clear_handler_caches()


@contextmanager
def lambda_logs(path: Path, modules: list[ModuleType]) -> Iterator[None]:
    """What CloudWatch Logs would hold, written to `path` instead of the terminal: the handlers' Powertools loggers,
    their metrics (EMF, printed to stdout) and moto's own log lines (e.g. each failed state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log, contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(log))
        stack.enter_context(_handler_streams_to(log, modules))
        stack.enter_context(_logger_to("moto", log))
        # Powertools warns when a handler published no metric; that is normal here.
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        yield


@contextmanager
def _handler_streams_to(log: TextIO, modules: list[ModuleType]) -> Iterator[None]:
    # Powertools loggers keep the stream they were created with (sys.stdout at import): point them at the log.
    originals: dict[int, tuple[logging.StreamHandler[Any], Any]] = {}
    for module in modules:
        for handler in getattr(getattr(module, "logger", None), "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and id(handler) not in originals:
                originals[id(handler)] = (handler, _swap_stream(handler, log))
    try:
        yield
    finally:
        for handler, stream in originals.values():
            _swap_stream(handler, stream)


def _swap_stream(handler: "logging.StreamHandler[Any]", stream: Any) -> Any:
    # Not setStream(): it flushes the old stream, which may be closed (a test runner's captured stdout).
    handler.acquire()
    try:
        old, handler.stream = handler.stream, stream
    finally:
        handler.release()
    return old


@contextmanager
def _logger_to(name: str, log: TextIO) -> Iterator[None]:
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
