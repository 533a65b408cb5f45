"""Reading a job's `params` and seeds the same way in every recipe: a bad value names its field."""

import secrets
from typing import Any, TypeVar, cast

from schemas import JobRequest

from .errors import JobInputError

ChoiceT = TypeVar("ChoiceT", bound=str)


def int_param(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobInputError(f"params.{name}", f"must be an integer from {low} to {high}, got {value!r}")
    return value


def float_param(
    params: dict[str, Any], name: str, default: float, low: float, high: float, prefix: str = "params"
) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise JobInputError(f"{prefix}.{name}", f"must be a number from {low} to {high}, got {value!r}")
    return float(value)


def variation_seeds(request: JobRequest) -> list[int]:
    """seed, seed+1, ... one per variation; a random base when none is given (each output records its seed)."""
    base = request.seed if request.seed is not None else secrets.randbelow(2**31)
    return [base + index for index in range(request.variations)]


def bool_param(params: dict[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise JobInputError(f"params.{name}", "must be true or false")
    return value


def choice_param(params: dict[str, Any], name: str, default: ChoiceT, choices: tuple[ChoiceT, ...]) -> ChoiceT:
    value = params.get(name, default)
    if value not in choices:
        quoted = [f"'{choice}'" for choice in choices]
        allowed = f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        raise JobInputError(f"params.{name}", f"must be {allowed}, got {value!r}")
    return cast(ChoiceT, value)
