"""One comparison, start to finish: engines built, the grid run (only missing cells), the rejected cases re-run,
the three report files written. `catalog compare` and the promotion gate both call `run_comparison`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from functions.stages.comparison.engines import EngineContext, build_engines, split_engine_list
from functions.stages.comparison.grid import CellRecord, Embedder, GridPlan, UnsafeScorer, run_grid
from functions.stages.comparison.prices import PriceTable
from functions.stages.comparison.rejected import read_failure_log, rerun_rejected
from functions.stages.comparison.report import summarise, write_reports


@dataclass(frozen=True)
class ComparisonResult:
    records: list[CellRecord]
    summary: dict[str, Any]  # per engine, as in summary.json's "engines"
    paths: dict[str, Path]
    reused: int  # cells read back from an earlier run


def run_comparison(
    plan: GridPlan,
    engine_names: str | Sequence[str],
    out_dir: Path,
    context: EngineContext,
    *,
    embedder: Embedder | None = None,
    nsfw: UnsafeScorer | None = None,
    failure_log: Path | None = None,
    on_cell: Callable[[CellRecord, bool], None] | None = None,
) -> ComparisonResult:
    names = split_engine_list(engine_names) if isinstance(engine_names, str) else list(engine_names)
    prices = context.prices or PriceTable()
    engines = build_engines(names, context)
    reused = 0

    def count(record: CellRecord, was_reused: bool) -> None:
        nonlocal reused
        reused += int(was_reused)
        if on_cell is not None:
            on_cell(record, was_reused)

    records = run_grid(plan, engines, out_dir, prices, embedder, count, nsfw)
    loop = None
    if failure_log is not None:
        cases = read_failure_log(failure_log, context.brand)
        loop = rerun_rejected(
            cases, engines, plan.products, out_dir, plan.size, prices, embedder, str(failure_log), nsfw
        )
    paths = write_reports(
        out_dir,
        plan,
        names,
        records,
        brand=context.brand,
        prices=prices,
        embedder_name=getattr(embedder, "name", None),
        nsfw_name=getattr(nsfw, "name", None),
        learning_loop=loop,
    )
    return ComparisonResult(records, summarise(records, names), paths, reused)
