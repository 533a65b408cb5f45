"""`catalog run` killed at random moments (SIGKILL to its whole process group) and run again finishes the work
once: the reduced form of `bench/crash_safety.py` (4 photos, packshots at 128 px, a lifestyle job each on
tiny models, 3 kills at seeded moments). The full one: `python bench/crash_safety.py` (50 photos, 20 kills,
every GPU job)."""

import subprocess
import sys
from pathlib import Path

import pytest

from functions.local.manifest import remove_interrupted_writes

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "crash_safety.py"


def test_a_killed_run_is_finished_by_the_same_command(tmp_path: Path) -> None:
    # Given 4 photos, a clean reference run, and 3 runs SIGKILLed at seeded random moments
    command = [sys.executable, str(SCRIPT), "--photos", "4", "--kills", "3", "--size", "128", "--seed", "1"]
    command += ["--jobs", "packshot,lifestyle", "--workers", "2", "--workdir", str(tmp_path)]
    # When each is run again with the same command
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    # Then every re-run exits 0 with the reference's files byte for byte, every photo once in the manifest, no
    # leftover temporary file and one published line per approved file
    (tmp_path / "crash_safety.log").write_text(result.stdout + result.stderr)  # kept by pytest for a look later
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "3/3 kills recovered" in result.stdout


def test_the_temporary_files_of_unfinished_writes_are_swept_and_nothing_else(tmp_path: Path) -> None:
    # Given an output folder where a killed run left temporary files beside finished outputs
    sku = tmp_path / "SKU-1"
    sku.mkdir()
    kept = [sku / "front.packshot.jpg", sku / ".hidden-but-not-ours", tmp_path / ".review" / ".x.partial"]
    swept = [sku / ".front.cutout.png.k2j4_x9a.partial", tmp_path / ".manifest.json.partial"]
    swept.append(sku / ".result.json.ab_c12de")  # gpu_jobs.storage's NamedTemporaryFile
    for path in kept + swept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    # When the next run starts
    removed = remove_interrupted_writes(tmp_path)
    # Then only the unfinished writes are gone (the review store's own files are left alone)
    assert sorted(removed) == sorted(swept)
    assert all(path.exists() for path in kept)


class _Quiet:
    def photo_done(self, entry: object) -> None: ...

    def start_jobs(self, count: int) -> None: ...

    def job_done(self, result: object) -> None: ...


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (no handler, no final manifest)."""


class _FakeWorker:
    """Writes one PNG per job, as a recipe would; `die_on` jobs are killed before they finish."""

    def __init__(self, die_on: int | None = None) -> None:
        self.ran: list[str] = []
        self.die_on = die_on

    def run(self, request):  # type: ignore[no-untyped-def]
        from PIL import Image

        from schemas import JobOutput, JobResult, Status

        if self.die_on is not None and len(self.ran) == self.die_on:
            raise _Killed
        self.ran.append(request.job_id)
        folder = Path(request.output_prefix.removeprefix("file://"))
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / "out.png")
        output = JobOutput(uri=(folder / "out.png").as_uri(), seed=request.seed)
        return JobResult(job_id=request.job_id, kind=request.kind, status=Status.SUCCEEDED, outputs=(output,))


def test_a_photo_whose_packshot_is_reused_still_runs_its_unfinished_gpu_jobs_once(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from functions.local.discovery import discover_inputs
    from functions.local.manifest import load_previous_manifest
    from functions.local.runner import CheckpointedProgress, RunSettings, count_gpu_jobs, run_batch, run_job_stage
    from functions.local.synthetic_photos import render_product_photo
    from schemas import JobKind, Status

    # Given one photo asking for two GPU jobs, and a run killed after its packshot and its first job
    source, out = tmp_path / "in", tmp_path / "out"
    (source / "SKU-1").mkdir(parents=True)
    render_product_photo("tshirt", (200, 30, 30), (245, 245, 245), size=(150, 200)).image.save(
        source / "SKU-1" / "front.jpg"
    )
    (source / "SKU-1" / "product.json").write_text('{"category": "tops"}')
    photos = discover_inputs(source)
    settings = RunSettings(size=128, jobs=(JobKind.PACKSHOT, JobKind.TRY_ON, JobKind.LIFESTYLE), models="tiny")

    def checkpointed() -> CheckpointedProgress:
        previous = load_previous_manifest(out)
        return CheckpointedProgress(_Quiet(), out, source, settings, datetime.now(UTC), previous, interval_s=0.0)

    progress = checkpointed()
    first = run_batch(photos, out, settings, on_done=progress.photo_done)
    killed = _FakeWorker(die_on=1)
    with pytest.raises(_Killed):
        run_job_stage(first, lambda: killed, on_done=progress.job_done)
    assert len(killed.ran) == 1
    # When the same command runs again
    progress = checkpointed()
    again = run_batch(photos, out, settings, on_done=progress.photo_done)
    # Then the packshot is reused, and only the unfinished job is left to run
    (entry,) = again
    assert entry.reused and [job.job_id for job in entry.jobs] == killed.ran
    assert count_gpu_jobs(again) == 1
    rerun = _FakeWorker()
    (done,) = run_job_stage(again, lambda: rerun, on_done=progress.job_done)
    # And it runs once, and the photo ends with both jobs, in the order prepare asked for them
    assert entry.prepared is not None
    assert rerun.ran == [entry.prepared.jobs[1].job_id]
    assert done.status is Status.SUCCEEDED
    assert [job.job_id for job in done.jobs] == [request.job_id for request in entry.prepared.jobs]
    # And a third run finds nothing left to do
    third = run_batch(photos, out, settings)
    assert third[0].reused and count_gpu_jobs(third) == 0
