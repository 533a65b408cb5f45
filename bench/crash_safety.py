"""Crash safety of `catalog run`: SIGKILL the whole process group at random moments, run again, check the outputs.

    python bench/crash_safety.py                       # 50 photos, 20 kills, every GPU job on tiny models
    python bench/crash_safety.py --photos 8 --kills 3 --size 256 --seed 1   # what the test suite runs

First a clean reference run (its duration T sets the range of kill moments). Then, for each kill: a fresh output
folder, the same command started in its own process group, SIGKILL to the group at a seeded random moment in
(0, T), and the same command run again to the end. The re-run must exit 0 and leave, byte for byte, the reference's
files (no truncated file, no leftover temporary file, no duplicate approved file), a manifest that lists every photo
once with files that exist and decode, and one `published.jsonl` line per approved file. Prints what it did; exits 1
on the first trial that breaks a rule.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from functions.local.synthetic_photos import render_product_photo  # noqa: E402

# Files whose bytes legitimately differ between two runs (times, review ids, random keys).
_VOLATILE = ("manifest.json", "report.html", "published.jsonl")
_VOLATILE_DIRS = (".review", "outbox")
_GARMENTS = (
    ("tshirt", "tops", (196, 28, 36)),
    ("trousers", "bottoms", (34, 42, 72)),
    ("dress", "dresses", (118, 140, 112)),
    ("hoodie", "outerwear", (40, 110, 160)),
)


def write_photos(root: Path, count: int) -> None:
    """`count` SKU folders, one photo each, with a sidecar naming the category."""
    for index in range(count):
        garment, category, rgb = _GARMENTS[index % len(_GARMENTS)]
        sku = root / f"SKU-{index:03d}"
        sku.mkdir(parents=True)
        photo = render_product_photo(garment, rgb, (244, 244, 242), size=(300, 400), seed=index)
        photo.image.save(sku / "front.jpg", "JPEG", quality=90)
        (sku / "product.json").write_text(json.dumps({"title": f"{garment} {index}", "category": category}))


def catalog_command(input_dir: Path, out: Path, args: argparse.Namespace) -> list[str]:
    script = Path(sys.executable).with_name("catalog")
    return [
        str(script) if script.exists() else "catalog",
        "run",
        str(input_dir),
        "--out",
        str(out),
        "--jobs",
        args.jobs,
        "--models",
        "tiny",
        "--review",
        "auto",
        "--size",
        str(args.size),
        "--workers",
        str(args.workers),
    ]


def run_to_end(command: list[str]) -> tuple[int, float, str]:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, start_new_session=True)
    return result.returncode, time.monotonic() - started, result.stdout + result.stderr


def run_and_kill(command: list[str], after_s: float) -> bool:
    """Start the command in its own process group and SIGKILL the group after `after_s`; False if it ended first."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=after_s)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the runner's process pool goes with it
        process.wait()
        return True


def _stable_files(out: Path) -> dict[str, str]:
    found = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        if not path.is_file() or relative.parts[0] in _VOLATILE_DIRS or relative.as_posix() in _VOLATILE:
            continue
        if relative.name == "result.json":  # timings and finished_at differ; checked for validity below
            found[relative.as_posix()] = "result.json"
            continue
        found[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:
        return False


def check_output(out: Path, reference: dict[str, str], photos: int) -> list[str]:
    """Every rule a finished re-run must meet; returns the broken ones."""
    problems: list[str] = []
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError) as error:
        return [f"manifest.json unreadable: {error}"]
    sources = [entry["source"] for entry in manifest["entries"]]
    if len(sources) != photos or len(set(sources)) != photos:
        problems.append(f"manifest lists {len(sources)} entries ({len(set(sources))} distinct) for {photos} photos")
    for entry in manifest["entries"]:
        if entry["status"] != "succeeded":
            problems.append(f"{entry['source']}: {entry['status']} ({(entry.get('error') or {}).get('message')})")
        for kind, relative in entry["outputs"].items():
            if not (out / relative).is_file() or not _decodes(out / relative):
                problems.append(f"{entry['source']}: {kind} {relative} missing or does not decode")
        for job in entry["jobs"]:
            prefix = None
            for output in job["outputs"]:
                path = Path(output["uri"].removeprefix("file://"))
                prefix = path.parent
                if not path.is_file() or not _decodes(path):
                    problems.append(f"{entry['source']}: {job['kind']} output {path.name} missing or does not decode")
            if prefix is not None:
                try:
                    json.loads((prefix / "result.json").read_text())
                except (OSError, ValueError):
                    problems.append(f"{entry['source']}: {job['kind']} result.json missing or unreadable")
    files = _stable_files(out)
    extra = sorted(set(files) - set(reference))
    missing = sorted(set(reference) - set(files))
    differ = sorted(name for name in set(files) & set(reference) if files[name] != reference[name])
    if extra:
        problems.append(f"files the reference does not have (leftovers, duplicates): {extra[:5]}")
    if missing:
        problems.append(f"files missing: {missing[:5]}")
    if differ:
        problems.append(f"files whose bytes differ from the reference (truncated or redone differently): {differ[:5]}")
    approved = sorted(name for name in files if name.startswith("approved/"))
    try:
        lines = [json.loads(line)["path"] for line in (out / "published.jsonl").read_text().splitlines()]
    except (OSError, ValueError):
        lines = []
    if sorted(lines) != approved:
        problems.append(
            f"published.jsonl has {len(lines)} lines ({len(set(lines))} distinct) for {len(approved)} approved files"
        )
    return problems


def on_disk_at_kill(out: Path) -> str:
    manifest = out / "manifest.json"
    entries = "no manifest"
    if manifest.is_file():
        try:
            entries = f"manifest with {len(json.loads(manifest.read_text())['entries'])} entries"
        except ValueError:
            entries = "unreadable manifest"
    temporary = sum(1 for path in out.rglob(".*") if path.is_file() and ".review" not in path.parts)
    approved = sum(1 for path in (out / "approved").rglob("*") if path.is_file()) if (out / "approved").is_dir() else 0
    return f"{entries}, {temporary} temporary file(s), {approved} approved"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="packshot side")
    parser.add_argument("--jobs", default="packshot,ghost_mannequin,try_on,lifestyle")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards when given")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows as it happens

    work = args.workdir or Path(tempfile.mkdtemp(prefix="crash-safety-"))
    work.mkdir(parents=True, exist_ok=True)
    input_dir = work / "input"
    shutil.rmtree(input_dir, ignore_errors=True)
    write_photos(input_dir, args.photos)
    reference_out = work / "reference"
    shutil.rmtree(reference_out, ignore_errors=True)
    code, duration, log = run_to_end(catalog_command(input_dir, reference_out, args))
    print(f"reference run: {args.photos} photos, jobs {args.jobs}, size {args.size}: exit {code} in {duration:.1f} s")
    if code != 0:
        print(log[-3000:])
        return 1
    reference = _stable_files(reference_out)
    problems = check_output(reference_out, reference, args.photos)
    if problems:
        print("the reference run itself breaks the rules:", *problems, sep="\n  ")
        return 1

    rng = random.Random(args.seed)
    failures = 0
    for trial in range(1, args.kills + 1):
        out = work / f"trial-{trial:02d}"
        shutil.rmtree(out, ignore_errors=True)
        command = catalog_command(input_dir, out, args)
        for _attempt in range(5):
            moment = rng.uniform(0.0, duration)
            started = time.monotonic()
            killed = run_and_kill(command, moment)
            if killed:
                break
            # The run was quicker than the reference (a less loaded machine): draw again within its real duration.
            duration = time.monotonic() - started
            print(f"trial {trial:2d}: the run finished before {moment:.1f} s; drawing a moment within {duration:.1f} s")
            shutil.rmtree(out, ignore_errors=True)
        state = on_disk_at_kill(out) if out.is_dir() else "nothing written"
        code, rerun_s, log = run_to_end(command)
        problems = [f"re-run exited {code}"] if code != 0 else []
        problems += check_output(out, reference, args.photos)
        verdict = "ok" if not problems else "FAILED"
        what = f"killed at {moment:.1f} s ({state})" if killed else f"finished before {moment:.1f} s"
        print(f"trial {trial:2d}: {what}; re-run exit {code} in {rerun_s:.1f} s: {verdict}")
        for problem in problems:
            print(f"    {problem}")
        if problems:
            failures += 1
            if code != 0:
                print("    " + log[-1500:].replace("\n", "\n    "))
        else:
            shutil.rmtree(out, ignore_errors=True)
    print(f"{args.kills - failures}/{args.kills} kills recovered")
    if args.workdir is None and not failures:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
