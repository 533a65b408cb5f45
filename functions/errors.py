"""Errors that end one file's processing with a stable code and a sentence a merchandiser can act on."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class CatalogError(Exception):
    """A per-file failure. `code` is stable (tests and dashboards match on it); `message` names the file."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type["CatalogError"], tuple[str, str]]:
        # Keeps the code across process pools, which pickle exceptions.
        return (type(self), (self.code, self.message))


class IntakeError(CatalogError):
    """The file cannot be accepted as a product photo (format, size, corruption)."""


class BackgroundRemovalError(CatalogError):
    """No usable product mask could be made (e.g. nothing stands out from the backdrop)."""


class ConfigurationError(Exception):
    """A setting is wrong for the whole run (unknown model, missing weights). Stops the run before work starts."""


def field_problems(error: "ValidationError") -> str:
    """Every bad field of a pydantic error as `path: reason`, joined: the part of a message that names the field.

    Never the input values: a sidecar or profile may hold anything, and messages reach logs and emails.
    """
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or '(top level)'}: {problem['msg']}"
        for problem in error.errors(include_input=False)
    )
