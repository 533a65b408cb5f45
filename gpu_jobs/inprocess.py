"""Run GPU jobs inside the calling process (`catalog run --jobs ... --models tiny`): CUDA when present, else CPU.

    from gpu_jobs.config import ModelConfig
    from gpu_jobs.inprocess import run_job_in_process
    from gpu_jobs.storage import StorageScope

    scope = StorageScope.of(roots=[run_folder], buckets=[])
    result = run_job_in_process(request, ModelConfig.tiny(), scope=scope)   # never raises: failures are `failed`

The job reads and writes only inside `scope` (nothing, when none is given and the caller installed none).
The registry (models, LoRAs, segmenters) is built on the first call for a config and reused after.
"""

import threading

from schemas import JobRequest, JobResult

from . import storage
from .config import ModelConfig
from .worker import JobRunner, failed_result

_runners: dict[str, JobRunner] = {}
_runners_lock = threading.Lock()


def runner_for(config: ModelConfig) -> JobRunner:
    """The process's JobRunner for `config`, built once (loading the models)."""
    key = config.model_dump_json()
    with _runners_lock:
        if key not in _runners:
            from .models import ModelRegistry

            # In-process callers queue on the lock rather than being refused: they have nowhere else to go.
            _runners[key] = JobRunner(ModelRegistry(config), wait_s=config.job_timeout_s)
        return _runners[key]


def run_job_in_process(
    request: JobRequest, config: ModelConfig, *, scope: storage.StorageScope | None = None
) -> JobResult:
    """Run one job inside `scope` (default: the scope the caller installed, if any); never raises.

    Model-loading failures (missing weights, licence refusals) come back as a failed result too.
    """
    try:
        runner = runner_for(config)
    except Exception as error:
        return failed_result(request, error)
    if scope is None:
        return runner.run(request)
    with storage.confined(scope):
        return runner.run(request)
