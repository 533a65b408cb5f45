"""Cold import time of every Lambda handler module against the floor measured in the same run.

The floor is what any of our Lambdas must import: `import boto3` + Powertools `Logger` and `Metrics`. Each handler
module (every `functions/handlers/*.py`, found by listing the folder) is imported in a fresh interpreter with
`python -X importtime`, several times; the median of the summed top-level import times is compared with the floor's
median. Light handlers must stay within 1.5x the floor; heavy ones (prepare: the image stack) are printed but not
judged. Tracing is off as in tests and `catalog run` (`POWERTOOLS_TRACE_DISABLED=1`); `--tracing-on` measures
with it on, as a deployed function with active X-Ray tracing runs (aws_xray_sdk is then imported, by design).

    .venv/bin/python bench/bench_cold_start.py [--repeat 7] [--tracing-on] [--explain 12]

Prints figures and one PASS/FAIL line; exits 1 on FAIL. `--explain N` then prints, for each light handler, the N
modules it adds beyond the floor with the largest self time (one extra interpreter each; not part of the verdict).
Not a test: timings belong in a benchmark, not in CI.
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HANDLERS_DIR = REPO_ROOT / "functions" / "handlers"
FLOOR_CODE = "import boto3; from aws_lambda_powertools import Logger, Metrics"
RATIO_LIMIT = 1.5
# Container-image functions that load the image stack by design; measured, not judged against the light floor.
HEAVY_HANDLERS = frozenset({"prepare"})


def handler_modules() -> list[str]:
    """Every handler module in functions/handlers/ (new handlers are picked up without editing this file)."""
    return sorted(
        f"functions.handlers.{path.stem}" for path in HANDLERS_DIR.glob("*.py") if not path.stem.startswith("_")
    )


def _environment(tracing_on: bool) -> dict[str, str]:
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONDONTWRITEBYTECODE="1")
    environment.pop("POWERTOOLS_TRACE_DISABLED", None)
    if tracing_on:
        # Powertools (and `tracer_for`) trace only inside Lambda, which they recognise by this variable.
        environment["LAMBDA_TASK_ROOT"] = str(REPO_ROOT)
    else:
        environment["POWERTOOLS_TRACE_DISABLED"] = "1"
    return environment


def _imported_at_startup(environment: dict[str, str]) -> set[str]:
    """Modules the interpreter imports before `-c` runs (site, encodings, ...): not the code's cost."""
    return set(_import_times("pass", environment, exclude=set()).keys())


def _importtime_report(code: str, environment: dict[str, str]) -> str:
    """What `python -X importtime -c code` prints (on stderr), in a fresh interpreter."""
    finished = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO_ROOT,
        check=False,
    )
    if finished.returncode != 0:
        raise SystemExit(f"`{code}` failed:\n{finished.stderr[-2000:]}")
    return finished.stderr


def _import_times(code: str, environment: dict[str, str], exclude: set[str]) -> dict[str, int]:
    """Top-level module -> cumulative microseconds, from `-X importtime` (nested imports are inside their parent)."""
    times: dict[str, int] = {}
    for line in _importtime_report(code, environment).splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, raw_name = line.split("|", 2)
        cumulative_us = int(cumulative)
        if raw_name.startswith("  "):  # a nested import: already counted in its parent's cumulative time
            continue
        module = raw_name.strip()
        if module not in exclude:
            times[module] = cumulative_us
    return times


_FLOOR_DONE = "-- floor imported --"


def added_beyond_floor(module: str, environment: dict[str, str]) -> list[tuple[str, float, float]]:
    """What importing `module` after the floor adds: (module, self ms, cumulative ms), largest self time first."""
    code = f"{FLOOR_CODE}; import sys; print({_FLOOR_DONE!r}, file=sys.stderr); import {module}"
    added = []
    for line in _importtime_report(code, environment).split(_FLOOR_DONE, 1)[1].splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
            added.append((name.strip(), int(self_us) / 1000, int(cumulative_us) / 1000))
    return sorted(added, key=lambda row: row[1], reverse=True)


def explain(modules: list[str], environment: dict[str, str], top: int) -> None:
    """Print the modules each light handler adds beyond the floor that cost the most (self time)."""
    for module in modules:
        if module.rsplit(".", 1)[1] in HEAVY_HANDLERS:
            continue
        added = added_beyond_floor(module, environment)
        total = sum(self_ms for _, self_ms, _ in added)
        print(f"\n{module}: {len(added)} modules beyond the floor, {total:.1f} ms (self times, one run)")
        for name, self_ms, cumulative_ms in added[:top]:
            print(f"  {self_ms:7.1f} ms self {cumulative_ms:8.1f} ms cumulative  {name}")


def import_ms(code: str, environment: dict[str, str], startup: set[str]) -> float:
    """The summed top-level import time of `code` in one fresh interpreter, in ms."""
    return sum(_import_times(code, environment, startup).values()) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="fresh interpreters per module (median)")
    parser.add_argument("--tracing-on", action="store_true", help="measure with Powertools tracing enabled")
    parser.add_argument(
        "--explain", type=int, default=0, metavar="N", help="also print the N costliest modules each handler adds"
    )
    args = parser.parse_args()

    # 1. The environment: tracing off unless asked, the repository importable, no bytecode written by us.
    environment = _environment(args.tracing_on)
    startup = _imported_at_startup(environment)

    # 2. Warm the bytecode caches once so every measured run reads .pyc files, as a Lambda image does.
    for module in handler_modules():
        subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            env=dict(environment, PYTHONDONTWRITEBYTECODE=""),
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )

    # 3. Rounds: in each, the floor and then every handler, each in a fresh interpreter. Interleaved so that load from
    #    other processes on the machine falls on the floor and the handlers alike; medians over the rounds.
    modules = handler_modules()
    samples: dict[str, list[float]] = {FLOOR_CODE: [], **{module: [] for module in modules}}
    for _ in range(args.repeat):
        samples[FLOOR_CODE].append(import_ms(FLOOR_CODE, environment, startup))
        for module in modules:
            samples[module].append(import_ms(f"import {module}", environment, startup))
    floor = statistics.median(samples[FLOOR_CODE])
    print(f"tracing {'on' if args.tracing_on else 'off'}; median of {args.repeat} rounds, a fresh interpreter each")
    print(f"{'floor (boto3 + Logger + Metrics)':44s} {floor:8.1f} ms   1.00x")
    failures = []
    for module in modules:
        elapsed = statistics.median(samples[module])
        ratio = elapsed / floor
        name = module.rsplit(".", 1)[1]
        judged = name not in HEAVY_HANDLERS
        verdict = ("ok" if ratio <= RATIO_LIMIT else "OVER") if judged else "heavy (not judged)"
        if judged and ratio > RATIO_LIMIT:
            failures.append(f"{name} {ratio:.2f}x")
        print(f"{module:44s} {elapsed:8.1f} ms  {ratio:5.2f}x  {verdict}")

    # 4. Where the time goes, when asked: not part of the verdict.
    if args.explain:
        explain(modules, environment, args.explain)

    # 5. One verdict line.
    if failures:
        print(f"FAIL: light handlers over {RATIO_LIMIT}x the floor: {', '.join(failures)}")
        return 1
    print(f"PASS: every light handler within {RATIO_LIMIT}x the floor ({floor:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
