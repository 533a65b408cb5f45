"""The learning loop: re-run the rejected cases (the failure log) on a candidate and count, per rejection reason,
how many of them the checks still flag.

A failure log is JSON Lines (or a JSON list, or a dataset manifest's `failure_cases`) of `schemas.dataset.FailureCase`:
each names its SKU, prompt, seed and the reviewer's reason. Each case is re-run with its own prompt and seed on every
engine given, on the SKU's cutout from the comparison's products; a case is "still flagged" when the automatic checks
or a metric limit flag its new image. Cases without a prompt or seed, or whose SKU has no cutout, are counted as
skipped with why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from functions.stages.comparison.engines import Engine
from functions.stages.comparison.grid import (
    CellJob,
    CellRecord,
    Embedder,
    GridInputError,
    ProductSpec,
    PromptSpec,
    UnsafeScorer,
    cell_dir,
    read_cell,
    run_cell,
)
from functions.stages.comparison.prices import PriceTable
from schemas.dataset import FailureCase

REJECTED_FOLDER = "rejected"


def read_failure_log(path: Path, brand: str) -> list[FailureCase]:
    """The brand's rejected cases: from the feedback file `catalog run` writes (`OUT/feedback/<brand>.jsonl`, or the
    run's folder), or from FailureCase JSON Lines, a JSON list, or a dataset manifest; errors name the line."""
    from functions.stages.feedback import feedback_file, parse_feedback

    path = feedback_file(path, brand)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise GridInputError(f"{path}: cannot read the failure log ({error})") from error
    feedback = parse_feedback(data, str(path), brand)
    if feedback.cases:
        return list(feedback.cases)
    stripped = text.lstrip()
    entries: list[tuple[str, Any]]
    if stripped.startswith(("[", "{")) and not _looks_like_lines(stripped):
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise GridInputError(f"{path}: not valid JSON ({error})") from error
        items = raw.get("failure_cases", []) if isinstance(raw, dict) else raw
        entries = [(f"item {index + 1}", item) for index, item in enumerate(items)]
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    entries.append((f"line {number}", json.loads(line)))
                except ValueError as error:
                    raise GridInputError(f"{path}: line {number}: not valid JSON ({error})") from error
    cases = []
    for where, item in entries:
        try:
            cases.append(FailureCase.model_validate(item))
        except ValidationError as error:
            first = error.errors(include_url=False, include_input=False)[0]
            field = ".".join(str(part) for part in first["loc"]) or "(top level)"
            raise GridInputError(f"{path}: {where}: {field}: {first['msg']}") from error
    return cases


def _looks_like_lines(text: str) -> bool:
    first_line = text.split("\n", 1)[0].strip()
    if not first_line.startswith("{"):
        return False
    try:
        json.loads(first_line)
    except ValueError:
        return False
    return "\n" in text.strip()


def rerun_rejected(
    cases: Sequence[FailureCase],
    engines: Sequence[Engine],
    products: Sequence[ProductSpec],
    out_dir: Path,
    size: int,
    prices: PriceTable,
    embedder: Embedder | None,
    source: str,
    nsfw: UnsafeScorer | None = None,
) -> dict[str, Any]:
    """Re-run each case on each engine (resumable like the grid) and count per reason what is still flagged."""
    by_sku = {product.sku: product for product in products}
    rejected_dir = out_dir / REJECTED_FOLDER
    by_reason: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    records: list[CellRecord] = []
    for index, case in enumerate(cases):
        reason = str(case.reason.value if hasattr(case.reason, "value") else case.reason)
        row = by_reason.setdefault(reason, {"cases": 0, "rerun": {}, "still_flagged": {}, "flags": {}})
        row["cases"] += 1
        if case.prompt is None or case.seed is None:
            skipped.append(f"{case.item_id}: no prompt or seed recorded")
            continue
        product = by_sku.get(case.sku)
        if product is None:
            skipped.append(f"{case.item_id}: no cutout for SKU {case.sku} in the products folder")
            continue
        prompt = PromptSpec(f"case-{index + 1}", case.prompt)
        for engine in engines:
            job = CellJob(prompt, product, engine, case.seed)
            folder = cell_dir(rejected_dir, prompt.id, product.sku, engine.name, case.seed)
            existing = read_cell(folder)
            record = (
                existing
                if existing is not None and existing.ok
                else run_cell(job, rejected_dir, size, prices, embedder, nsfw)
            )
            records.append(record)
            if not record.ok:
                continue
            row["rerun"][engine.name] = row["rerun"].get(engine.name, 0) + 1
            codes = [*record.flags, *record.warnings]
            if codes:
                row["still_flagged"][engine.name] = row["still_flagged"].get(engine.name, 0) + 1
            for code in codes:
                flags = row["flags"].setdefault(engine.name, {})
                flags[code] = flags.get(code, 0) + 1
    return {
        "source": source,
        "cases": len(cases),
        "engines": [engine.name for engine in engines],
        "by_reason": by_reason,
        "skipped": skipped,
        "failed_cells": [f"{r.engine} {r.prompt_id} seed {r.seed}: {r.reason}" for r in records if not r.ok],
    }
