"""The in-process GPU worker: stands in for the SageMaker async endpoint in `catalog run` (and in aws-sim).

The requests are the same `JobRequest`s the endpoint takes. `gpu_jobs` (and torch with it) is imported only when
a GPU job is actually requested. Like the endpoint, a job reads and writes only under the folders and in the
buckets the worker was given (symlinks and `..` resolved first); given none, it reads and writes nothing.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from functions.errors import ConfigurationError
from schemas import JobRequest, JobResult

if TYPE_CHECKING:
    from gpu_jobs.config import ModelConfig

TINY_MODELS = "tiny"


def load_model_config(models: str) -> "ModelConfig":
    """`tiny` or a model config JSON file; importing gpu_jobs here keeps torch out of runs without GPU jobs."""
    try:
        from gpu_jobs.config import ModelConfig
    except ImportError as error:
        raise ConfigurationError(
            f"GPU jobs need the gpu extra ({error.name} is missing): "
            "pip install torch==2.13.0 && pip install -e '.[gpu]'"
        ) from error
    if models == TINY_MODELS:
        return ModelConfig.tiny()
    try:
        return ModelConfig.from_file(Path(models))
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"--models {models}: {error}") from error


class InProcessGpuWorker:
    """Runs each job in this process, one at a time (one GPU); a failure is a `failed` JobResult, never a raise.

    `data_roots` (folders) and `buckets` (S3 bucket names) are where its jobs may read and write: a run's input,
    output and brand-store folders locally, the work and brand-store buckets under aws-sim.
    """

    def __init__(self, models: str, *, data_roots: Iterable[Path] = (), buckets: Iterable[str] = ()) -> None:
        self.config = load_model_config(models)
        from gpu_jobs.storage import StorageError, StorageScope

        try:
            self.scope = StorageScope.of(roots=data_roots, buckets=buckets)
        except StorageError as error:
            raise ConfigurationError(f"GPU worker storage: {error}") from error

    def run(self, request: JobRequest) -> JobResult:
        from gpu_jobs.inprocess import run_job_in_process

        return run_job_in_process(request, self.config, scope=self.scope)
