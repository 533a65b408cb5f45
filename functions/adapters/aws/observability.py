"""Tracing only where it is on: Powertools' `Tracer` imports aws_xray_sdk (~165 ms of a cold start) even when
tracing is disabled, so a handler asks `tracer_for(service)` instead, and gets a real Tracer only when Powertools
would trace (inside Lambda, `POWERTOOLS_TRACE_DISABLED` not set); elsewhere (tests, `catalog run --runtime aws-sim`)
a tracer whose decorators return the function unchanged and which never imports the X-Ray SDK.
"""

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

FunctionT = TypeVar("FunctionT", bound=Callable[..., Any])


def tracing_enabled() -> bool:
    """Powertools' own rule (`Tracer._is_tracer_disabled`): off when disabled by the variable, or outside Lambda,
    or under SAM CLI / Chalice local emulation."""
    if resolve_truthy_env_var_choice(env=os.getenv(constants.TRACER_DISABLED_ENV, "false")):
        return False
    in_lambda = bool(os.getenv(constants.LAMBDA_TASK_ROOT_ENV))
    emulated = bool(os.getenv(constants.SAM_LOCAL_ENV) or os.getenv(constants.CHALICE_LOCAL_ENV))
    return in_lambda and not emulated


class DisabledTracer:
    """The decorators and calls handlers use, doing nothing: what a disabled Powertools Tracer does, minus the SDK."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.disabled = True

    def capture_lambda_handler(self, function: FunctionT) -> FunctionT:
        return function

    def capture_method(self, function: FunctionT) -> FunctionT:
        return function

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str | None = None) -> None:
        return None


def tracer_for(service: str) -> "Tracer | DisabledTracer":
    """A Powertools Tracer where tracing is on, else a DisabledTracer (decided once, at the module's import)."""
    if not tracing_enabled():
        return DisabledTracer(service)
    from aws_lambda_powertools import Tracer

    return Tracer(service=service)
