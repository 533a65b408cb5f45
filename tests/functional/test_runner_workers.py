"""`catalog run`'s worker processes: a batch runs to the end whatever this process did with OpenCV before it.

Workers forked from a process whose OpenCV thread pool had been at work inherited that pool mid-wait, and their first
OpenCV call (cv2.setNumThreads) waited forever: the batch hung with no error. They now start from a fresh server
process. The batch runs in a subprocess with a deadline, so a hang fails this test instead of stalling the suite.
"""

import json
import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT

BATCH_AFTER_OPENCV_WORK = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path

    import cv2
    import numpy as np
    from PIL import Image

    from functions.local import runner
    from functions.local.discovery import discover_inputs


    def main():
        # This process's OpenCV pool does some work first, as an earlier run or the caller's own image code would.
        cv2.setNumThreads(2)
        cv2.GaussianBlur(np.zeros((2000, 2000, 3), np.float32), (0, 0), 5.0)
        root = Path(tempfile.mkdtemp())
        for number in range(3):
            folder = root / "in" / f"SKU-{number}"
            folder.mkdir(parents=True)
            pixels = np.full((160, 120, 3), 245, np.uint8)
            pixels[40:120, 30:90] = (200, 30, 40)
            Image.fromarray(pixels).save(folder / "front.jpg")
        photos = discover_inputs(root / "in", exclude=root / "out")
        entries = runner.run_batch(photos, root / "out", runner.RunSettings(workers=2, size=256))
        print(json.dumps([entry.status.value for entry in entries]))


    if __name__ == "__main__":
        main()
    """
)


def test_a_batch_on_two_workers_finishes_after_this_process_used_opencv_threads(tmp_path):
    # Given a process that has used OpenCV's thread pool, then runs a batch of three photos on two workers
    script = tmp_path / "batch_after_opencv.py"
    script.write_text(BATCH_AFTER_OPENCV_WORK)
    # When it runs (a hang would run into the deadline and fail here)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    # Then every photo was processed
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["succeeded"] * 3
