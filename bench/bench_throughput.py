"""`catalog run` throughput on 600x800 catalog photos: today's code path and the new one, side by side.

Both paths run the same runner (discovery, reuse check, worker processes, manifest checkpoints, report) on the same
input folder, each in its own process so that its peak RSS is its own:
  baseline  the CPU stages as they were at f423e76: the frozen copies in bench/baseline_*.py (keyer, packshot,
            encoder, prepare), swapped into the runner, whose workers keep glibc's default malloc settings and
            OpenBLAS' default threads as today's did
  new       the stages in functions/ as they are now (workers with `functions.allocator.keep_image_buffers` and
            `functions.blas_threads.one_blas_thread`)
Printed: photos/s of each and their ratio; the IoU between the two paths' masks (min and mean, for the synthetic
photos and for the real samples in ../shared/samples when present); the per-photo overhead outside the stages
(the runner's own process CPU time per photo, and a re-run where every photo is reused); the workers' CPU seconds
per photo (steadier than wall time when other work shares the machine); and the new path's peak
RSS at two batch sizes, to show memory stays flat. Prints figures; asserts nothing.

The batch (--batch): `mixed`, synthetic renders plus the real samples as they are (768x1024); `synthetic`, the renders
only; `samples`, the real samples resized to 600x800, in turn (real photos at the size the goal names). The baseline
runs twice, before and after the new path, and its figures are the mean of the two.

With --memory-sizes (e.g. 50,1000,10000) it measures only the runner's memory, on batches of small photos (120x160,
256 px packshots, so that 10,000 photos take minutes): the runner's peak RSS after a first run and after a re-run
where every photo is reused, each size in a fresh process.

    .venv/bin/python bench/bench_throughput.py [--photos 50] [--batch mixed] [--rss-photos 200] [--workers 2]
    .venv/bin/python bench/bench_throughput.py --memory-sizes 50,1000,10000
"""

import argparse
import json
import multiprocessing
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"
GARMENT_COLOURS = (
    ((196, 28, 36), (246, 246, 244)),
    ((34, 42, 72), (218, 218, 216)),
    ((240, 240, 237), (247, 247, 247)),  # white on white, the hard case
    ((118, 140, 112), (242, 222, 222)),
    ((92, 94, 98), (245, 245, 245)),
)


def child(path: str, input_dir: Path, out_dir: Path, workers: int, size: int = 2000) -> dict[str, float]:
    """Runs inside the measured process: the prepare half of `catalog run` (no GPU jobs are asked for)."""
    sys.path.insert(0, str(REPO))
    # The baseline's stages are swapped into the runner's module before the workers fork, so they inherit them.
    multiprocessing.set_start_method("fork", force=True)
    import functions.local.runner as runner
    from functions.local.discovery import discover_inputs
    from functions.review.local_flow import ReviewOptions

    runner.WORKER_START_METHOD = "fork"  # both paths: the workers must inherit the baseline's stages swapped in below
    if path == "baseline":
        from bench import baseline_keyer, baseline_prepare

        runner.prepare_image = baseline_prepare.prepare_image  # type: ignore[assignment]
        runner.build_remover = lambda settings, threads: baseline_keyer.BackdropKeyer()
        runner.keep_image_buffers = lambda: False  # today's workers left glibc's malloc settings as they were
        runner.one_blas_thread = lambda: False  # ... and OpenBLAS' threads as many as the cores

    class Quiet:
        def photo_done(self, entry: object) -> None: ...

        def start_jobs(self, count: int) -> None: ...

        def job_done(self, result: object) -> None: ...

    def run() -> int:
        # `catalog run` without its CLI: checkpoints, batch, checks, stale outputs, manifest, report (no review).
        photos = discover_inputs(input_dir, exclude=out_dir)
        settings = runner.RunSettings(workers=workers, size=size)
        finished = runner.run_locally(
            input_dir, photos, out_dir, settings, ReviewOptions(), Quiet(), lambda *link: None
        )
        return len(finished.manifest.entries)

    wall, cpu = time.perf_counter(), time.process_time()
    count = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    workers_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    first_run_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rerun = time.perf_counter()
    run()  # every photo reused: discovery, reuse check, manifest and report only
    rerun = time.perf_counter() - rerun
    return {
        "photos": count,
        "wall_s": wall,
        "runner_cpu_ms_per_photo": 1000 * cpu / count,
        # CPU seconds the workers spent per photo: on a busy machine a steadier measure than wall time.
        "worker_cpu_s_per_photo": (workers_cpu.ru_utime + workers_cpu.ru_stime) / count,
        "rerun_ms_per_photo": 1000 * rerun / count,
        "peak_rss_runner_first_run_mb": first_run_rss,
        "peak_rss_runner_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def write_photos(folder: Path, count: int, with_samples: bool, size: tuple[int, int] = (600, 800)) -> None:
    """`count` synthetic JPEGs (600x800 unless said; a SKU folder each), plus the real samples as one more folder."""
    from functions.local.synthetic_photos import GARMENTS, render_product_photo

    for index in range(count):
        garment_rgb, backdrop_rgb = GARMENT_COLOURS[index % len(GARMENT_COLOURS)]
        photo = render_product_photo(GARMENTS[index % len(GARMENTS)], garment_rgb, backdrop_rgb, size=size, seed=index)
        sku = folder / f"SKU-{index:05d}"
        sku.mkdir(parents=True)
        photo.image.save(sku / "front.jpg", "JPEG", quality=90)
    if with_samples:
        (folder / "SAMPLES").mkdir()
        for sample in sorted(SAMPLES.glob("*.jpg")):
            shutil.copyfile(sample, folder / "SAMPLES" / sample.name)


def write_sample_photos(folder: Path, count: int, size: tuple[int, int] = (600, 800)) -> None:
    """`count` JPEGs made from the real samples, resized to `size` (a SKU folder each, the samples in turn)."""
    from PIL import Image

    samples = sorted(SAMPLES.glob("*.jpg"))
    for index in range(count):
        sku = folder / f"SAMPLES-{index:05d}"
        sku.mkdir(parents=True)
        with Image.open(samples[index % len(samples)]) as sample:
            photo = sample.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        photo.save(sku / "front.jpg", "JPEG", quality=92)


def copy_batch(pool: Path, folder: Path, count: int) -> None:
    """A batch of `count` photos made of copies of the pool's SKU photos (for the memory check)."""
    sources = sorted(pool.glob("*/front.jpg"))
    for index in range(count):
        (folder / f"SKU-{index:05d}").mkdir(parents=True)
        shutil.copyfile(sources[index % len(sources)], folder / f"SKU-{index:05d}" / "front.jpg")


def memory_only(sizes: list[int], workers: int) -> None:
    """The runner's peak RSS on batches of small photos, a fresh process for each size."""
    print(f"runner memory, new path: small photos (120x160, 256 px packshots), workers: {workers}")
    print(f"{'photos':>8}{'first run MB':>14}{'+ re-run MB':>13}{'runner CPU ms/photo':>21}{'re-run ms/photo':>17}")
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix="bench-runner-memory-"))
        # Five 120x160 renders, repeated.
        write_photos(work / "pool", 5, with_samples=False, size=(120, 160))
        copy_batch(work / "pool", work / "photos", size)
        r = measure("new", work / "photos", work / "out", workers, packshot_size=256)
        print(
            f"{size:>8}{r['peak_rss_runner_first_run_mb']:>14.0f}{r['peak_rss_runner_mb']:>13.0f}"
            f"{r['runner_cpu_ms_per_photo']:>21.1f}{r['rerun_ms_per_photo']:>17.1f}",
            flush=True,
        )
        shutil.rmtree(work, ignore_errors=True)


def measure(path: str, input_dir: Path, out_dir: Path, workers: int, packshot_size: int = 2000) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", path, "--input", str(input_dir), "--out", str(out_dir)]
    command += ["--workers", str(workers), "--size", str(packshot_size)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def mask_ious(baseline_out: Path, new_out: Path) -> dict[str, list[float]]:
    """IoU (mask > 127) between the two runs' masks, per photo, grouped as synthetic or real sample."""
    import numpy as np
    from PIL import Image

    from functions.local.manifest import load_previous_manifest

    baseline, new = load_previous_manifest(baseline_out), load_previous_manifest(new_out)
    groups: dict[str, list[float]] = {"synthetic": [], "samples": [], "failed_in_one_only": []}
    for source, entry in baseline.items():
        other = new[source]
        if ("mask" in entry.outputs) != ("mask" in other.outputs):
            groups["failed_in_one_only"].append(1.0)
            continue
        if "mask" not in entry.outputs:
            continue
        a = np.asarray(Image.open(baseline_out / entry.outputs["mask"])) > 127
        b = np.asarray(Image.open(new_out / other.outputs["mask"])) > 127
        iou = float((a & b).sum() / max(1, (a | b).sum()))
        groups["samples" if source.startswith("SAMPLES") else "synthetic"].append(iou)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=50, help="photos in the side-by-side batch (besides the samples)")
    parser.add_argument(
        "--batch",
        choices=("mixed", "synthetic", "samples"),
        default="mixed",
        help="mixed: synthetic photos + the real samples as they are; synthetic: only those; samples: the real "
        "samples resized to 600x800, in turn",
    )
    parser.add_argument("--rss-photos", type=int, default=200, help="the larger batch for the memory check")
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--memory-sizes", help="only the runner's memory, at these batch sizes (e.g. 50,1000,10000)")
    parser.add_argument("--child", choices=("baseline", "new"))
    parser.add_argument("--input", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--size", type=int, default=2000, help="(child) packshot side")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.input, args.out, args.workers, args.size)))
        return

    sys.path.insert(0, str(REPO))
    if args.memory_sizes:
        memory_only([int(size) for size in args.memory_sizes.split(",")], args.workers)
        return
    # 1. The input folder: synthetic catalog photos and the real samples when they are there, or one of the two.
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    photos = work / "photos"
    with_samples = SAMPLES.is_dir() and any(SAMPLES.glob("*.jpg"))
    if args.batch == "samples":
        if not with_samples:
            raise SystemExit(f"--batch samples needs the real samples in {SAMPLES}")
        write_sample_photos(photos, args.photos)
        print(f"batch: {args.photos} real samples resized to 600x800")
    else:
        with_samples = with_samples and args.batch == "mixed"
        write_photos(photos, args.photos, with_samples)
        total = args.photos + (len(list(SAMPLES.glob("*.jpg"))) if with_samples else 0)
        samples_too = f" + {total - args.photos} real samples" if with_samples else ""
        print(f"batch: {args.photos} synthetic 600x800 photos{samples_too}")
    print(f"workers: {args.workers}; each path in a fresh process; python {sys.version.split()[0]}")

    # 2. The same batch through both paths (baseline first, then new, then baseline again to even out drift).
    results = {
        "baseline": measure("baseline", photos, work / "out-baseline", args.workers),
        "new": measure("new", photos, work / "out-new", args.workers),
    }
    again = measure("baseline", photos, work / "out-baseline-2", args.workers)
    for key in ("wall_s", "worker_cpu_s_per_photo"):
        results["baseline"][key] = (results["baseline"][key] + again[key]) / 2

    # 3. Memory at a larger batch (copies of the same photos), new path only.
    large = work / "photos-large"
    copy_batch(photos, large, args.rss_photos)
    results[f"new x{args.rss_photos}"] = measure("new", large, work / "out-large", args.workers)

    base_rate = results["baseline"]["photos"] / results["baseline"]["wall_s"]
    base_cpu = results["baseline"]["worker_cpu_s_per_photo"]
    print(
        f"\n{'path':<12}{'photos':>8}{'wall s':>9}{'photos/s':>10}{'s/photo':>9}{'vs base':>9}"
        f"{'worker CPU s/photo':>20}{'vs base':>9}"
        f"{'runner CPU ms/photo':>21}{'re-run ms/photo':>17}{'RSS runner MB':>15}{'RSS worker MB':>15}"
    )
    for name, r in results.items():
        rate = r["photos"] / r["wall_s"]
        # The larger batch is copies of the batch's 600x800 photos only: no ratio against the baseline of the one above.
        comparable = name in ("baseline", "new")
        print(
            f"{name:<12}{r['photos']:>8.0f}{r['wall_s']:>9.1f}{rate:>10.2f}{r['wall_s'] / r['photos']:>9.3f}"
            + (f"{rate / base_rate:>8.2f}x" if comparable else f"{'-':>9}")
            + f"{r['worker_cpu_s_per_photo']:>20.3f}"
            + (f"{base_cpu / r['worker_cpu_s_per_photo']:>8.2f}x" if comparable else f"{'-':>9}")
            + f"{r['runner_cpu_ms_per_photo']:>21.1f}{r['rerun_ms_per_photo']:>17.1f}"
            + f"{r['peak_rss_runner_mb']:>15.0f}{r['peak_rss_worker_mb']:>15.0f}"
        )

    # 4. Same masks? IoU between the two paths' masks.
    ious = mask_ious(work / "out-baseline", work / "out-new")
    for group in ("synthetic", "samples"):
        if ious[group]:
            values = ious[group]
            print(f"mask IoU new vs baseline, {group}: min {min(values):.4f}, mean {sum(values) / len(values):.4f}")
    if ious["failed_in_one_only"]:
        print(f"photos that failed in one path only: {len(ious['failed_in_one_only'])}")
    print(
        "\nrunner CPU ms/photo: the runner process's own CPU (discovery, reuse check, hashing, manifest checkpoints,"
        "\nreport), outside the workers' stages; re-run ms/photo: the same batch again, every photo reused."
        f"\nnew x{args.rss_photos}: copies of the batch's 600x800 photos (a mixed batch's samples left out), for memory"
        "\nand the rate at scale; the baseline ran on the batch above only, so that row has no ratio."
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
