"""Where photos are prepared, OpenBLAS runs one thread: its idle threads would otherwise spin on the cores the other
workers (and prepare's encoding threads) need."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

REPO = Path(__file__).resolve().parents[2]
needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts one thread per core")

_THREADS = """
import sys
import cv2, numpy
from threadpoolctl import threadpool_info
from functions.blas_threads import one_blas_thread
if sys.argv[1] == "one":
    assert one_blas_thread()
print(" ".join(str(library["num_threads"]) for library in threadpool_info() if library["user_api"] == "blas"))
"""


def _run_unlimited(code: str, *args: str) -> str:
    """What `code` prints in a fresh interpreter where no *_NUM_THREADS variable is set (as on a user's machine; the
    test session sets OMP_NUM_THREADS, which OpenBLAS also reads)."""
    environment = {name: value for name, value in os.environ.items() if not name.endswith("_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=environment, capture_output=True, text=True, check=True
    )
    return done.stdout


def _blas_threads(mode: str) -> list[int]:
    return [int(count) for count in _run_unlimited(_THREADS, mode).split()]


def blas_threads_here() -> list[int]:
    return [library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"]


@needs_two_cores
def test_a_process_that_prepares_photos_keeps_one_blas_thread():
    # Given a process that has loaded OpenCV and numpy, each with its OpenBLAS at one thread per core
    assert all(count > 1 for count in _blas_threads("default"))
    # When it settles for image work, Then every OpenBLAS it loaded runs one thread
    threads = _blas_threads("one")
    assert threads and all(count == 1 for count in threads)


_WORKERS = """
from functions.local import runner
from tests.unit.test_blas_threads import blas_threads_here
with runner._worker_pool(2, runner.RunSettings(workers=2), threads=1) as pool:
    for threads in [pool.submit(blas_threads_here).result(timeout=120) for _ in range(2)]:
        print(" ".join(str(count) for count in threads))
"""


@needs_two_cores
def test_catalog_runs_workers_keep_one_blas_thread():
    # Given `catalog run`'s pool of two workers, started where no *_NUM_THREADS variable is set
    # When each worker reports its BLAS threads
    out = _run_unlimited(_WORKERS)

    # Then each worker's OpenBLAS runs one thread
    reported = [[int(count) for count in line.split()] for line in out.splitlines()]
    assert len(reported) == 2 and all(threads and set(threads) == {1} for threads in reported)
