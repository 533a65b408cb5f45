"""Automatic quality checks: flags shown to the reviewer, never silent fixes."""

from enum import StrEnum

from ._base import Contract


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"


class QualityFlag(Contract):
    """One finding about an image, e.g. `touches_edge`, with a sentence a reviewer can act on."""

    code: str
    severity: Severity = Severity.WARNING
    message: str
