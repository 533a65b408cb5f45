"""Errors a GPU job raises on purpose. Light: no torch import, safe to import anywhere.

A recipe raises `JobInputError` for anything the caller can fix (a missing input, an unreadable
file, a bad parameter); the server answers it with a 4xx naming the field:

    from gpu_jobs.errors import JobInputError

    if "cutout" not in request.inputs:
        raise JobInputError("inputs.cutout", "the lifestyle recipe needs a product cutout (RGBA PNG)")
"""


class JobInputError(ValueError):
    """The request cannot be served as asked; `field` is a dotted path into the JobRequest."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class RecipeUnavailableError(RuntimeError):
    """The job kind is valid but its recipe is not installed in this build (HTTP 501)."""


class WorkerBusyError(RuntimeError):
    """Another job holds the GPU and did not finish within the wait allowed (HTTP 429)."""


class JobTimeoutError(RuntimeError):
    """The job ran past its deadline and was stopped between denoising steps (HTTP 504)."""
