"""Cold start of every Lambda handler, import and first request, against the floor measured in the same run.

The floor is what any of our Lambdas must import: `import boto3` + Powertools `Logger` and `Metrics`. Each handler
module (every `functions/handlers/*.py`, found by listing the folder) is imported in a fresh interpreter, several
times, then what its usual first request loads before any I/O: its `SETTINGS` and the contracts it validates and
answers with, built (`model_rebuild`: every contract defers its schema to first use), and the modules the handler
imports inside its function (`FIRST_REQUEST`). Both are timed inside the interpreter, so its own start-up is not
counted, in CPU time (`time.process_time`: on a shared machine wall time also counts the waits for a core, and moved
ratios by 0.3x between runs), and the medians are divided by the floor's. The verdict is on import + first request:
what a cold Lambda pays before its first answer, so a cost moved from the import into the first call still counts.
Light handlers must stay within 1.5x the floor; heavy ones (prepare: the image stack) are printed but not judged.

The environment is a deployed function's: `PYDANTIC_DISABLE_PLUGINS=__all__`, as cdk/catalog_infra/lambdas.py sets
for every function (without it pydantic scans every installed package's entry points at its first model build;
`--plugins-on` measures that). Tracing is off as in tests and `catalog run` (`POWERTOOLS_TRACE_DISABLED=1`);
`--tracing-on` measures with it on, as a deployed function with active X-Ray tracing runs (aws_xray_sdk is then
imported, by design).

    .venv/bin/python bench/bench_cold_start.py [--repeat 7] [--tracing-on] [--plugins-on] [--explain 12]

Prints figures and one PASS/FAIL line; exits 1 on FAIL. `--explain N` then prints, for each light handler, the N
modules its import and first request add beyond the floor with the largest self time (`-X importtime`, one extra
interpreter each; model builds are not imports and are not listed; not part of the verdict).
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
# Printed for reference, not judged: the floor plus pydantic and one model built, the least any handler that validates
# its settings and payload pays (pydantic.main and pydantic.fields alone are about 1.35-1.4x the floor).
PYDANTIC_CODE = f"{FLOOR_CODE}; from pydantic import BaseModel"
PYDANTIC_FIRST_REQUEST = "type('Probe', (BaseModel,), {'__annotations__': {'size': int}})(size=1)"
RATIO_LIMIT = 1.5
# Container-image functions that load the image stack by design; measured, not judged against the light floor.
HEAVY_HANDLERS = frozenset({"prepare"})
# What every deployed function's environment holds besides its settings (cdk/catalog_infra/lambdas.py, LIBRARY_ENV).
DEPLOYED_ENVIRONMENT = {"PYDANTIC_DISABLE_PLUGINS": "__all__"}

# What a light handler's usual first request loads before its first AWS call, besides its own SETTINGS:
# "module" is imported, "module:Name" is a contract (or model) whose schema is built (`model_rebuild`). Read from the
# handler's code path; the usual request is the common case (an S3 notification, not an EventBridge event; a
# publish without a Shopify store; a sweep with reviews to e-mail; a reconcile run with nothing overdue; checks for a
# photo with its packshot only, the stack's default jobs: a generated image to compare also loads numpy and Pillow).
FIRST_REQUEST: dict[str, tuple[str, ...]] = {
    "automatic_checks": ("functions.stages.review_items", "schemas:ChecksInput", "schemas:ReviewRequest"),
    "backfill_batch": (
        "schemas.backfill:BackfillBatch",
        "schemas.backfill:BackfillBatchResult",
        "schemas:ExecutionInput",
    ),
    "gpu_job_outcome": ("schemas:JobResult",),
    "ingest": ("schemas:ExecutionInput",),
    "publish": ("schemas:PublishInput", "schemas:PublishResult"),
    "reconcile_gpu_jobs": (),
    "review_api": ("schemas.review:ReviewTask", "schemas.review:ReviewDecision"),
    "review_notify": ("functions.handlers.review_notify:ReviewTaskRequest", "schemas.review:ReviewTask"),
    "review_schedule": ("schemas.review:ReviewTask",),
    "shopify_ingest": ("schemas.shopify:ShopifyWork", "schemas.shopify:ShopifySettings"),
    "shopify_webhook": ("schemas.shopify:ShopifyWork",),
    "submit_gpu_job": ("functions.handlers.submit_gpu_job:SubmitRequest",),
}


def handler_modules() -> list[str]:
    """Every handler module in functions/handlers/ (new handlers are picked up without editing this file)."""
    return sorted(
        f"functions.handlers.{path.stem}" for path in HANDLERS_DIR.glob("*.py") if not path.stem.startswith("_")
    )


def _environment(tracing_on: bool, plugins_on: bool = False) -> dict[str, str]:
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONDONTWRITEBYTECODE="1")
    environment.pop("POWERTOOLS_TRACE_DISABLED", None)
    environment.pop("PYDANTIC_DISABLE_PLUGINS", None)
    if not plugins_on:
        environment.update(DEPLOYED_ENVIRONMENT)
    if tracing_on:
        # Powertools (and `tracer_for`) trace only inside Lambda, which they recognise by this variable.
        environment["LAMBDA_TASK_ROOT"] = str(REPO_ROOT)
    else:
        environment["POWERTOOLS_TRACE_DISABLED"] = "1"
    return environment


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


def first_request_code(module: str) -> str:
    """The statements that load and build what the handler's usual first request needs, after its import."""
    name = module.rsplit(".", 1)[1]
    if name not in FIRST_REQUEST and name not in HEAVY_HANDLERS:
        raise SystemExit(f"{module}: say in FIRST_REQUEST what its usual first request loads and validates")
    lines = [f"{module}.SETTINGS.model_rebuild()"]
    for entry in FIRST_REQUEST.get(name, ()):
        target, _, model = entry.partition(":")
        lines.append(f"import {target}")
        if model:
            lines.append(f"{target}.{model}.model_rebuild()")
    return "\n".join(lines)


def timed_code(imports: str, first_request: str = "") -> str:
    """Code printing the ms its imports took and the ms they and the first request took, timed in the interpreter."""
    return (
        "import time\n_start = time.process_time()\n"
        f"{imports}\n_imported = time.process_time()\n"
        f"{first_request or 'pass'}\n_done = time.process_time()\n"
        "print((_imported - _start) * 1000, (_done - _start) * 1000)"
    )


def cold_start_ms(code: str, environment: dict[str, str]) -> tuple[float, float]:
    """(import ms, import + first request ms) of `timed_code` in one fresh interpreter."""
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=REPO_ROOT, check=False
    )
    if finished.returncode != 0:
        raise SystemExit(f"`{code}` failed:\n{finished.stderr[-2000:]}")
    imported, done = (float(value) for value in finished.stdout.split()[-2:])
    return imported, done


_FLOOR_DONE = "-- floor imported --"


def added_beyond_floor(module: str, environment: dict[str, str]) -> list[tuple[str, float, float]]:
    """What importing `module` and its first request add after the floor: (module, self ms, cumulative ms), largest
    self time first."""
    code = (
        f"{FLOOR_CODE}\nimport sys\nprint({_FLOOR_DONE!r}, file=sys.stderr)\n"
        f"import {module}\n{first_request_code(module)}"
    )
    added = []
    for line in _importtime_report(code, environment).split(_FLOOR_DONE, 1)[1].splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
            added.append((name.strip(), int(self_us) / 1000, int(cumulative_us) / 1000))
    return sorted(added, key=lambda row: row[1], reverse=True)


def explain(modules: list[str], environment: dict[str, str], top: int) -> None:
    """Print the modules each light handler's import and first request add beyond the floor that cost the most."""
    for module in modules:
        if module.rsplit(".", 1)[1] in HEAVY_HANDLERS:
            continue
        added = added_beyond_floor(module, environment)
        total = sum(self_ms for _, self_ms, _ in added)
        print(f"\n{module}: {len(added)} modules beyond the floor, {total:.1f} ms (self times, one run)")
        for name, self_ms, cumulative_ms in added[:top]:
            print(f"  {self_ms:7.1f} ms self {cumulative_ms:8.1f} ms cumulative  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="fresh interpreters per module (median)")
    parser.add_argument("--tracing-on", action="store_true", help="measure with Powertools tracing enabled")
    parser.add_argument(
        "--plugins-on",
        action="store_true",
        help="measure without PYDANTIC_DISABLE_PLUGINS (as before the stack set it)",
    )
    parser.add_argument(
        "--explain", type=int, default=0, metavar="N", help="also print the N costliest modules each handler adds"
    )
    args = parser.parse_args()

    # 1. The environment: a deployed function's, tracing off unless asked, the repository importable, no bytecode
    #    written by us.
    environment = _environment(args.tracing_on, args.plugins_on)
    modules = handler_modules()
    codes = {FLOOR_CODE: timed_code(FLOOR_CODE), PYDANTIC_CODE: timed_code(PYDANTIC_CODE, PYDANTIC_FIRST_REQUEST)}
    codes |= {module: timed_code(f"import {module}", first_request_code(module)) for module in modules}

    # 2. Warm the bytecode caches once so every measured run reads .pyc files, as a Lambda image does (its Dockerfile
    #    compiles our packages: the task root is read-only, so nothing is cached at run time).
    for module in modules:
        subprocess.run(
            [sys.executable, "-c", codes[module]],
            env=dict(environment, PYTHONDONTWRITEBYTECODE=""),
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )

    # 3. Rounds: in each, the floor and then every handler, each in a fresh interpreter. Interleaved so that load from
    #    other processes on the machine falls on the floor and the handlers alike; medians over the rounds.
    samples: dict[str, list[tuple[float, float]]] = {code: [] for code in codes}
    for _ in range(args.repeat):
        for key, code in codes.items():
            samples[key].append(cold_start_ms(code, environment))
    floor = statistics.median(done for _, done in samples[FLOOR_CODE])
    print(
        f"tracing {'on' if args.tracing_on else 'off'}, pydantic plugins {'on' if args.plugins_on else 'off'}; "
        f"median of {args.repeat} rounds, a fresh interpreter each"
    )
    print(f"{'':44s} {'import':>16s}   {'+ first request':>16s}")
    print(f"{'floor (boto3 + Logger + Metrics)':44s} {floor:8.1f} ms 1.00x")
    reference = statistics.median(total for _, total in samples[PYDANTIC_CODE])
    print(
        f"{'floor + pydantic, one model built':44s} {'':16s}   {reference:8.1f} ms {reference / floor:4.2f}x  reference"
    )
    failures = []
    for module in modules:
        imported = statistics.median(first for first, _ in samples[module])
        done = statistics.median(total for _, total in samples[module])
        ratio = done / floor
        name = module.rsplit(".", 1)[1]
        judged = name not in HEAVY_HANDLERS
        verdict = ("ok" if ratio <= RATIO_LIMIT else "OVER") if judged else "heavy (not judged)"
        if judged and ratio > RATIO_LIMIT:
            failures.append(f"{name} {ratio:.2f}x")
        print(f"{module:44s} {imported:8.1f} ms {imported / floor:4.2f}x   {done:8.1f} ms {ratio:4.2f}x  {verdict}")

    # 4. Where the time goes, when asked: not part of the verdict.
    if args.explain:
        explain(modules, environment, args.explain)

    # 5. One verdict line, on import + first request.
    if failures:
        print(f"FAIL: light handlers' import + first request over {RATIO_LIMIT}x the floor: {', '.join(failures)}")
        return 1
    print(f"PASS: every light handler's import + first request within {RATIO_LIMIT}x the floor ({floor:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
