"""Shared test fixtures: where the real sample photos live (optional), and tiny helpers."""

import hashlib
import os
from pathlib import Path

import pytest

# One math thread per process: pytest-xdist already runs a worker per core, and tiny models spend more time in thread
# hand-offs than in arithmetic (measured ~8x slower with two torch threads per worker on 2 cores). Set before any test
# module imports torch or onnxruntime; the CLI subprocesses the tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT.parent / "shared" / "samples"


@pytest.fixture
def samples_dir() -> Path:
    """The real product photos beside the checkout; tests using them skip cleanly when absent."""
    if not SAMPLES_DIR.is_dir() or not any(SAMPLES_DIR.glob("*.jpg")):
        pytest.skip(f"real sample photos not found at {SAMPLES_DIR}")
    return SAMPLES_DIR


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path: proves a folder was not modified."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
