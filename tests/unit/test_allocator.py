"""A prepare process keeps its freed image buffers for the next photo instead of faulting them back in."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# One "photo" worth of arrays of the sizes prepare makes for a 600x800 photo (float planes, a 2000 px packshot),
# made and dropped; then the page faults that 20 more photos cost.
_PHOTOS = """
import resource, sys
import numpy as np
from functions.allocator import keep_image_buffers
if sys.argv[1] == "tuned":
    assert keep_image_buffers()
def photo():
    planes = np.ones((800, 600, 3), np.float32)
    packshot = np.ones((2000, 2000, 3), np.uint8)
    doubled = planes * 2
    plane = np.ones((800, 600), np.float32)
    del planes, packshot, doubled, plane
photo()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    photo()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def _faults_per_photo(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _PHOTOS, mode], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_image_buffers_are_reused_photo_after_photo():
    # Given a process that makes and drops image-sized arrays photo after photo, with glibc's defaults
    default = _faults_per_photo("default")
    # When it keeps image buffers instead
    tuned = _faults_per_photo("tuned")
    # Then the next photos fault in (nearly) no fresh pages, where the default faults in thousands a photo
    assert default > 500
    assert tuned < default / 20
