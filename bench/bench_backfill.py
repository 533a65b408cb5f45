"""A measured backfill: N existing objects through `catalog backfill --runtime aws-sim`, extrapolated to 10k and 100k.

What it measures on this machine: the wall time of one backfill pass over N small synthetic photos (packshot only,
tiny models: nothing here runs a real GPU job), and the state transitions each image's execution took (moto's
execution history: one per state entered, as Step Functions bills them). What it extrapolates from: that measured
transitions per image, and the stack's own settings read from the synthesized template: the backfill map's
MaxConcurrency, MaxItemsPerBatch and seconds per image (its pace), the endpoint's instance count and request TTL,
the review digest's cadence. The sim's own speed (one machine, one process) says nothing about AWS's wall time; the
AWS figures come from those bounds.

    .venv/bin/python bench/bench_backfill.py [--objects 1000] [--stop-after-batches 50] [--photo-size 96x128]
        [--packshot-size 64]

With `--stop-after-batches N` the first pass stops after N batches and a second pass resumes it, as `catalog
backfill --runtime aws-sim --stop-after-batches N` does (what the ledger holds is skipped); the figures per image count
both. A last pass goes over the finished listing. Prints figures, the process's CPU time and peak RSS; asserts nothing;
not run in CI.
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DIGEST_PERIOD_S = 300  # review_schedule runs every 5 minutes (cdk/catalog_infra/review.py)
STATE_MACHINE_TRANSITION_USD = 0.025 / 1000  # Standard workflows, us-east-1 list price
START_EXECUTION_PER_S = 300  # Standard StartExecution refill rate (us-east-1, per account)


def write_photos(root: Path, count: int, size: tuple[int, int]) -> None:
    """`count` small product photos, one SKU folder each (garment, colour and seed vary)."""
    from functions.local.synthetic_photos import GARMENTS, render_product_photo

    for number in range(count):
        garment = GARMENTS[number % len(GARMENTS)]
        colour = (40 + (number * 37) % 180, 40 + (number * 91) % 180, 40 + (number * 53) % 180)
        photo = render_product_photo(garment, colour, (245, 245, 243), size=size, seed=number)
        folder = root / f"SKU-{number:05d}"
        folder.mkdir(parents=True)
        photo.image.save(folder / "front.jpg", quality=90)


def template_bounds(sim: object) -> dict[str, float]:
    """The deployment's own limits, from the synthesized template the sim deployed."""
    deployment = sim.deployment  # type: ignore[attr-defined]
    targets = deployment.stack.resources("AWS::ApplicationAutoScaling::ScalableTarget")
    instances = max((int(t["Properties"]["MaxCapacity"]) for t in targets.values()), default=1)
    return {
        "max_concurrency": sim.map.max_concurrency,  # type: ignore[attr-defined]
        "items_per_batch": sim.map.items_per_batch,  # type: ignore[attr-defined]
        "seconds_per_image": float(deployment.environment["BACKFILL_SECONDS_PER_IMAGE"]),
        "instances": instances,
        "request_ttl_s": float(deployment.environment["REQUEST_TTL_SECONDS"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--photo-size", default="96x128", help="WxH of each synthetic photo")
    parser.add_argument("--packshot-size", type=int, default=64)
    parser.add_argument(
        "--stop-after-batches", type=int, default=None, help="stop the first pass after N batches, then resume it"
    )
    args = parser.parse_args()
    width, height = (int(part) for part in args.photo_size.split("x"))

    # 1. Inputs: N small photos in SKU folders, and the run's settings (packshot only, tiny models, every core).
    from functions.local.backfill_sim import SimBackfill
    from functions.local.discovery import discover_inputs
    from functions.local.runner import RunSettings
    from functions.stages.gpu_requests import parse_jobs

    scratch = Path(tempfile.mkdtemp(prefix="bench-backfill."))
    write_photos(scratch / "photos", args.objects, (width, height))
    photos = discover_inputs(scratch / "photos", exclude=scratch / "out")
    settings = RunSettings(
        size=args.packshot_size, jobs=parse_jobs("packshot"), models="tiny", workers=os.cpu_count() or 1
    )

    # 2. The sim's world (synthesis is cached per process and not timed), the objects put in with no notifications.
    setup_started = time.monotonic()
    with SimBackfill(scratch / "out", settings) as sim:
        seeded = sim.seed(photos, "acme")
        setup_s = time.monotonic() - setup_started
        bounds = template_bounds(sim)

        rss_after_setup_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        # 3. The backfill, timed pass by pass (wall time, and this process's CPU time: the machine may be shared):
        #    stopped after N batches and resumed, if asked; then a pass over the finished listing (a resume with
        #    nothing left to do).
        stops = [args.stop_after_batches, None] if args.stop_after_batches else [None]
        passes = []
        for stop in [*stops, None]:
            cpu_before = sum(os.times()[:2])
            run = sim.run("incoming/acme/", "acme", lambda counts: None, stop)
            passes.append((run, sum(os.times()[:2]) - cpu_before))
        published = len(sim.published_keys())
        per_execution = [
            sim.state_transitions([arn]) for arn in list(sim.driver.executions)[: min(50, len(sim.driver.executions))]
        ]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # 4. Figures measured here.
    print(
        f"objects: {seeded} photos of {width}x{height} px, packshot {args.packshot_size} px, jobs packshot, models tiny"
    )
    print(f"set-up (moto, stack deployed into it, objects put): {setup_s:.1f} s")
    for number, (run, cpu_s) in enumerate(passes, start=1):
        counts = run.counts
        role = (
            "over finished work"
            if number == len(passes)
            else "stopped"
            if run.stopped
            else ("resumed" if number > 1 else "the backfill")
        )
        print(
            f"pass {number} ({role}): {run.seconds:.1f} s wall, {cpu_s:.1f} s CPU, {counts.listed} listed / "
            f"{counts.started} started / {counts.skipped} skipped / {counts.done} done / {counts.failed} failed in "
            f"{counts.batches} batches, {run.state_transitions} state transitions"
        )
    work = passes[:-1]
    started = sum(run.counts.started for run, _ in work)
    seconds = sum(run.seconds for run, _ in work)
    transitions_per_image = sum(run.state_transitions for run, _ in work) / max(started, 1)
    print(
        f"backfill: {started} images started in {seconds:.1f} s = {seconds / max(started, 1) * 1000:.0f} ms per image "
        f"on this machine ({sum(cpu for _, cpu in work) / max(started, 1) * 1000:.0f} ms CPU)"
    )
    print(f"published: {published}")
    print(
        f"state transitions per image (per-image execution, moto history): {transitions_per_image:.2f} "
        f"(median of {len(per_execution)} executions: {statistics.median(per_execution) if per_execution else 0})"
    )
    print(f"peak RSS: {peak_rss_mb:,.0f} MB ({rss_after_setup_mb:,.0f} MB after set-up)")

    # 5. Extrapolation: the AWS bounds, from the template.
    concurrency, batch = bounds["max_concurrency"], bounds["items_per_batch"]
    pace = bounds["seconds_per_image"]
    map_rate_per_h = concurrency * batch / max(batch * pace, 1.0) * 3600  # a child waits batch x pace
    endpoint_rate_per_h = bounds["instances"] * 3600 / max(pace, 1.0)  # pace = one GPU job on one instance
    digest_rate_per_h = 500 / DIGEST_PERIOD_S * 3600  # 10 emails of 50 images per 5-minute run
    ttl_backlog = bounds["instances"] * bounds["request_ttl_s"] / max(pace, 1.0)
    in_flight = concurrency * batch
    # Per batch the map adds its child's states (StartBatch, Pace) and, per run, a handful (Defaults, RunSettings,
    # Source, the Map): a child is a Standard execution, so its transitions bill too.
    map_transitions_per_image = 2 / batch
    print()
    print(
        f"stack bounds: MaxConcurrency {concurrency:.0f} x {batch:.0f} items per batch, pace {pace:.0f} s per image, "
        f"endpoint up to {bounds['instances']:.0f} instances, request TTL {bounds['request_ttl_s'] / 3600:.1f} h"
    )
    print(
        f"start rate: map {map_rate_per_h:,.0f}/h, endpoint drains {endpoint_rate_per_h:,.0f}/h per GPU job kind, "
        f"digest {digest_rate_per_h:,.0f}/h, StartExecution {START_EXECUTION_PER_S * 3600:,.0f}/h"
    )
    print(f"endpoint backlog: at most {in_flight:.0f} images in flight (TTL allows {ttl_backlog:,.0f} queued jobs)")
    for total in (10_000, 100_000):
        hours = total / min(map_rate_per_h, endpoint_rate_per_h, digest_rate_per_h)
        transitions = total * (transitions_per_image + map_transitions_per_image)
        sim_hours = total * seconds / max(started, 1) / 3600
        print(
            f"{total:>7,} images: {hours:,.1f} h on AWS at the bound; {transitions:,.0f} state transitions "
            f"(${transitions * STATE_MACHINE_TRANSITION_USD:,.2f}); {sim_hours:,.1f} h in this sim"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
