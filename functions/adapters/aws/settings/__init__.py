"""Each Lambda's environment as a pydantic model. The CDK stack sets the same names (upper case).

Field names are the environment variable names in lower case, so `grep -ri ledger_table_name` finds both sides.
Every handler module names the model it reads as `SETTINGS` and loads it at entry (`load(SETTINGS)`), so a missing
or bad variable fails the invocation with the variable's name; a test checks the stack sets exactly these names.
One module per handler's settings (`ingest`, `prepare`, ...), importing none of the others, so a cold start builds
only its own classes.
"""

import os
from functools import cache
from typing import Self, TypeVar

from pydantic import BaseModel, ConfigDict

DEFAULT_INTAKE_PREFIX = "incoming/"


class LambdaSettings(BaseModel):
    """Fields are read from the variables of the same name, any case. Plain pydantic rather than pydantic-settings,
    which cost ~60 ms of every light Lambda's cold start; fields are scalars (str, int, float, bool), as Lambda's
    environment is text."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    @classmethod
    def from_environment(cls) -> Self:
        environment = {name.lower(): value for name, value in os.environ.items()}
        return cls.model_validate({name: environment[name] for name in cls.model_fields if name in environment})


SettingsT = TypeVar("SettingsT", bound=LambdaSettings)


@cache
def load(kind: type[SettingsT]) -> SettingsT:
    """Read once per execution environment; tests call `load.cache_clear()` after changing the environment."""
    return kind.from_environment()
