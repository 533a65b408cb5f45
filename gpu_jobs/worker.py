"""Run one job at a time on this process's models: dispatch by kind to `gpu_jobs.recipes.<kind>.run`.

A recipe module exposes `run(request: JobRequest, registry: ModelRegistry) -> JobResult` and is
imported on first use, so a missing or unfinished recipe fails its own requests (501), not start-up.

    from gpu_jobs.worker import JobRunner, JobInputError

    runner = JobRunner(registry)
    result = runner.execute(request, wait_s=30)   # raises JobInputError, WorkerBusyError, LicenceError, ...
    result = runner.run(request)                  # never raises: a failure is a `failed` JobResult

Both write `result.json` under `request.output_prefix` (best effort for failures). Files go through `storage`
under the scope the caller installed (`storage.confined`): the request's inputs and output prefix are checked
against it before the job takes the GPU, so a refused URI fails at once, naming its field.
"""

import importlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from schemas import JobRequest, JobResult, ProcessingError, Status

from . import storage
from .errors import JobInputError, JobTimeoutError, RecipeUnavailableError, WorkerBusyError
from .licences import LicenceError

if TYPE_CHECKING:  # torch/diffusers load with the registry, not with this module (the server starts first)
    from .models import ModelRegistry

__all__ = ["JobInputError", "JobRunner", "RecipeUnavailableError", "WorkerBusyError", "error_code"]

logger = logging.getLogger(__name__)

Recipe = Callable[[JobRequest, "ModelRegistry"], JobResult]

RESULT_NAME = "result.json"


def error_code(error: BaseException) -> str:
    """The stable code a failure is reported under."""
    if isinstance(error, storage.UriRefusedError) or isinstance(error.__cause__, storage.UriRefusedError):
        return "uri_refused"
    if isinstance(error, JobInputError):
        return "bad_input"
    if isinstance(error, LicenceError):
        return "licence_refused"
    if isinstance(error, RecipeUnavailableError):
        return "recipe_unavailable"
    if isinstance(error, WorkerBusyError):
        return "busy"
    if isinstance(error, JobTimeoutError):
        return "timeout"
    return "internal_error"


def load_recipe(kind: str) -> Recipe:
    """`gpu_jobs.recipes.<kind>.run`, imported now; RecipeUnavailableError when that module does not exist."""
    module_name = f"{__package__}.recipes.{kind}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise  # the recipe exists but one of its imports is missing: a build error, not a 501
        raise RecipeUnavailableError(f"no GPU recipe for job kind '{kind}' in this build") from error
    run: Any = getattr(module, "run", None)
    if not callable(run):
        raise RecipeUnavailableError(f"recipe module {module_name} has no run(request, registry)")
    recipe: Recipe = run
    return recipe


class JobRunner:
    """Serialises jobs on one GPU: a second job waits up to `wait_s` for the first, then is refused."""

    def __init__(self, registry: "ModelRegistry", *, wait_s: float = 0.0) -> None:
        self.registry = registry
        self.wait_s = wait_s
        self._gpu = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._gpu.locked()

    def execute(self, request: JobRequest, *, wait_s: float | None = None) -> JobResult:
        """Run the job; errors propagate (the server maps them to HTTP codes)."""
        recipe = load_recipe(request.kind.value)
        check_uris(request)
        wait = self.wait_s if wait_s is None else wait_s
        acquired = self._gpu.acquire(timeout=wait) if wait > 0 else self._gpu.acquire(blocking=False)
        if not acquired:
            raise WorkerBusyError(
                f"another job is running on this GPU (one at a time); waited {wait:g} s. Retry later."
            )
        started = time.perf_counter()
        try:
            self.registry.begin_job()
            result = recipe(request, self.registry)
        finally:
            self.registry.end_job()
            self._gpu.release()
        timings = {**result.timings_s, "total": round(time.perf_counter() - started, 4)}
        result = result.model_copy(
            update={
                "timings_s": timings,
                "model_version": result.model_version or self.registry.model_version,
                "finished_at": result.finished_at or datetime.now(UTC),
            }
        )
        _write_result(request, result)
        return result

    def run(self, request: JobRequest, *, wait_s: float | None = None) -> JobResult:
        """Like `execute`, but a failure comes back as a `failed` JobResult with a stable error code."""
        try:
            return self.execute(request, wait_s=wait_s)
        except Exception as error:
            if error_code(error) == "internal_error":
                logger.exception("job %s (%s) failed", request.job_id, request.kind)
            result = failed_result(request, error)
            _write_result(request, result, best_effort=True)
            return result


def check_uris(request: JobRequest) -> None:
    """Every input and the output prefix must be in the current storage scope; JobInputError names the first not."""
    named = [(f"inputs.{name}", uri) for name, uri in request.inputs.items()]
    for field, uri in [*named, ("output_prefix", request.output_prefix)]:
        try:
            storage.check(uri)
        except storage.StorageError as error:
            raise JobInputError(field, str(error)) from error


def failed_result(request: JobRequest, error: BaseException) -> JobResult:
    message = str(error) if error_code(error) != "internal_error" else f"{type(error).__name__}: {error}"
    return JobResult(
        job_id=request.job_id,
        kind=request.kind,
        status=Status.FAILED,
        error=ProcessingError(code=error_code(error), message=message),
        finished_at=datetime.now(UTC),
    )


def _write_result(request: JobRequest, result: JobResult, best_effort: bool = False) -> None:
    try:
        storage.write_bytes(
            storage.join(request.output_prefix, RESULT_NAME),
            result.model_dump_json(indent=2).encode(),
            content_type="application/json",
        )
    except Exception:
        if not best_effort:
            raise
        logger.warning("could not write %s for job %s", RESULT_NAME, request.job_id, exc_info=True)
