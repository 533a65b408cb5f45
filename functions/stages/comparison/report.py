"""The comparison's three files: `report.html` (the grid), `metrics.csv` (one row per cell), `summary.json`.

- report.html: rows prompt x product, columns engines, the same seeds side by side in every cell, each image opens
  large on click, its metrics and flags under it; a table of every metric with its source and whether it was
  available; failed cells show their reason. Self-contained but for the images, which it links relatively.
- metrics.csv: prompt, product, engine, seed, status and reason, then every metric as `name [source]`.
- summary.json: per engine, the mean and spread (std, min, max, n) of every metric, the seconds and the cost per
  image, the failures by reason; which metrics were available and what each rests on.
"""

from __future__ import annotations

import csv
import html
import json
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from functions.stages.comparison.grid import CellRecord, GridPlan
from functions.stages.comparison.prices import PriceTable
from functions.stages.image_metrics import METRIC_WARNINGS, METRICS

REPORT_HTML, METRICS_CSV, SUMMARY_JSON = "report.html", "metrics.csv", "summary.json"
PIXEL_METRICS = (
    "product_pixels_preserved",
    "garment_delta_e",
    "silhouette_iou",
    "product_found_scale",
    "sharpness",
    "exposure_mean",
    "exposure_clipped",
)
EMBEDDING_METRICS = ("clip_t", "clip_i_brand")
ALL_METRICS = (*PIXEL_METRICS, *EMBEDDING_METRICS, "nsfw_score", "seconds", "cost")


def availability(
    records: Sequence[CellRecord], embedder_name: str | None, prices: PriceTable, nsfw_name: str | None = None
) -> dict[str, Any]:
    """Per metric: its source, whether it has values, and why not when it has none."""
    found = {name for record in records for name, value in record.metrics.items() if value is not None}
    table: dict[str, Any] = {}
    for name in ALL_METRICS:
        spec = METRICS[name]
        source = spec.source
        if name in EMBEDDING_METRICS and embedder_name:
            source = f"{source} ({embedder_name})"
        if name == "cost":
            source = f"{source} ({prices.source}, {prices.currency})"
        if name == "nsfw_score" and nsfw_name:
            source = f"{source} ({nsfw_name})"
        why_not = None
        if name not in found:
            if name in EMBEDDING_METRICS and not embedder_name:
                why_not = "no embedding model configured (--embedding-model)"
            elif name == "clip_i_brand":
                why_not = "no brand training photos to compare with (--brand-photos)"
            elif name == "nsfw_score":
                why_not = "no NSFW classifier configured (--nsfw-model)" if not nsfw_name else "no cell was scored"
            elif name == "cost":
                why_not = "the price table prices none of these engines"
            else:
                why_not = "no cell produced an image"
        table[name] = {
            "label": spec.label,
            "source": source,
            "needs": spec.needs,
            "better": spec.better,
            "available": name in found,
            "why_not": why_not,
        }
    return table


def _column(name: str, prices: PriceTable, embedder_name: str | None, nsfw_name: str | None = None) -> str:
    needs = METRICS[name].needs
    tag = {
        "nothing": "pixels",
        "embedding model": f"embedding:{embedder_name or 'none'}",
        "nsfw classifier": f"classifier:{nsfw_name or 'none'}",
        "timing": "timing",
        "price table": f"prices:{prices.currency}",
    }[needs]
    return f"{name} [{tag}]"


def _spread(values: list[float]) -> dict[str, float | int]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
    }


def summarise(records: Sequence[CellRecord], engines: Sequence[str]) -> dict[str, Any]:
    """Per engine: cells, images, failures by reason, flags by code, and every metric's mean and spread."""
    summary: dict[str, Any] = {}
    for engine in engines:
        mine = [record for record in records if record.engine == engine]
        ok = [record for record in mine if record.ok]
        metrics: dict[str, Any] = {}
        for name in ALL_METRICS:
            values = [float(value) for record in ok if (value := record.metrics.get(name)) is not None]
            values = [value for value in values if math.isfinite(value)]
            if values:
                metrics[name] = _spread(values)
        costs = [record.cost for record in ok if record.cost is not None]
        summary[engine] = {
            "cells": len(mine),
            "images": len(ok),
            "failed": dict(Counter(record.reason or "error" for record in mine if not record.ok)),
            "flags": dict(Counter(code for record in ok for code in record.flags)),
            "warnings": dict(Counter(code for record in ok for code in record.warnings)),
            "metrics": metrics,
            "seconds_per_image": metrics.get("seconds", {}).get("mean"),
            "cost_per_image": round(statistics.fmean(costs), 6) if costs else None,
            "currency": next((record.currency for record in ok if record.currency), None),
            "seed_honoured": all(record.seed_honoured for record in ok) if ok else None,
        }
    return summary


def write_metrics_csv(
    path: Path,
    records: Sequence[CellRecord],
    prices: PriceTable,
    embedder_name: str | None,
    nsfw_name: str | None = None,
) -> None:
    columns = [_column(name, prices, embedder_name, nsfw_name) for name in ALL_METRICS]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "prompt_id",
                "prompt",
                "sku",
                "engine",
                "seed",
                "status",
                "reason",
                "message",
                "image",
                *columns,
                "currency",
                "flags [automatic checks]",
                "warnings [metric limits]",
            ]
        )
        for record in records:
            values = ["" if record.metrics.get(name) is None else record.metrics[name] for name in ALL_METRICS]
            writer.writerow(
                [
                    record.prompt_id,
                    record.prompt,
                    record.sku,
                    record.engine,
                    record.seed,
                    record.status,
                    record.reason or "",
                    record.message or "",
                    record.image or "",
                    *values,
                    record.currency or "",
                    " ".join(record.flags),
                    " ".join(record.warnings),
                ]
            )


def write_reports(
    out_dir: Path,
    plan: GridPlan,
    engines: Sequence[str],
    records: Sequence[CellRecord],
    *,
    brand: str,
    prices: PriceTable,
    embedder_name: str | None,
    nsfw_name: str | None = None,
    learning_loop: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write report.html, metrics.csv and summary.json into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_table = availability(records, embedder_name, prices, nsfw_name)
    summary = {
        "brand": brand,
        "prompts": [{"id": prompt.id, "prompt": prompt.text} for prompt in plan.prompts],
        "products": [product.sku for product in plan.products],
        "seeds": list(plan.seeds),
        "size": plan.size,
        "engines": summarise(records, engines),
        "metrics": metrics_table,
        "metrics_available": [name for name, row in metrics_table.items() if row["available"]],
        "warning_limits": {
            warning.code: f"{warning.metric} {'>' if warning.above else '<'} {warning.limit:g}"
            for warning in METRIC_WARNINGS
        },
        "prices": {"source": prices.source, "currency": prices.currency},
    }
    if learning_loop is not None:
        summary["learning_loop"] = learning_loop
    paths = {"summary": out_dir / SUMMARY_JSON, "csv": out_dir / METRICS_CSV, "html": out_dir / REPORT_HTML}
    paths["summary"].write_text(json.dumps(summary, indent=2, sort_keys=False), encoding="utf-8")
    write_metrics_csv(paths["csv"], records, prices, embedder_name, nsfw_name)
    paths["html"].write_text(render_html(plan, engines, records, summary), encoding="utf-8")
    return paths


# ---- the HTML ------------------------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222}
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:6px;vertical-align:top}
th{background:#f5f5f5;position:sticky;top:0}
.seeds{display:flex;gap:6px}.shot{width:148px}.shot img{width:144px;height:144px;object-fit:cover;cursor:zoom-in;
border:1px solid #ccc;image-rendering:pixelated}.m{font:11px/1.3 ui-monospace,monospace;color:#444}
.flag{color:#a40000;font-weight:600}.warn{color:#8a5a00}.failed{background:#fff1f0;color:#a40000;font-size:12px;
width:144px;height:144px;padding:4px;box-sizing:border-box;overflow:auto}
.na{color:#888}dialog{padding:8px;border:0;box-shadow:0 4px 24px #0006}dialog img{max-width:90vw;max-height:80vh;
min-width:512px;image-rendering:pixelated}
"""

_SCRIPT = """
document.querySelectorAll('img[data-full]').forEach(function(img){img.addEventListener('click',function(){
var d=document.getElementById('zoom');document.getElementById('zoom-img').src=img.dataset.full;
document.getElementById('zoom-caption').textContent=img.alt;d.showModal();});});
document.getElementById('zoom').addEventListener('click',function(){this.close();});
"""

_SHOWN_UNDER_IMAGE = (
    ("product_pixels_preserved", "kept", "{:.1%}"),
    ("garment_delta_e", "ΔE", "{:.2f}"),
    ("silhouette_iou", "IoU", "{:.2f}"),
    ("sharpness", "sharp", "{:.0f}"),
    ("exposure_clipped", "clip", "{:.1%}"),
    ("clip_t", "CLIP-T", "{:.1f}"),
    ("clip_i_brand", "CLIP-I", "{:.2f}"),
    ("seconds", "s", "{:.2f}"),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _shot(record: CellRecord | None, seed: int) -> str:
    if record is None:
        return f'<div class="shot"><div class="failed">seed {seed}: not run</div></div>'
    if not record.ok:
        return (
            f'<div class="shot" data-status="failed" data-reason="{_e(record.reason)}"><div class="failed">'
            f"seed {seed}: <b>{_e(record.reason)}</b><br>{_e(record.message or '')}</div></div>"
        )
    lines = []
    for name, short, form in _SHOWN_UNDER_IMAGE:
        value = record.metrics.get(name)
        if value is not None:
            lines.append(f"{short} {form.format(value)}")
    if record.cost is not None:
        lines.append(f"{record.currency} {record.cost:.4f}")
    flags = "".join(f'<div class="flag">⚑ {_e(code)}</div>' for code in record.flags)
    warnings = "".join(f'<div class="warn">△ {_e(code)}</div>' for code in record.warnings)
    alt = f"{record.engine} · {record.sku} · {record.prompt_id} · seed {seed}"
    seed_note = "" if record.seed_honoured else " (no seed API)"
    return (
        f'<div class="shot" data-status="ok"><img src="{_e(record.image)}" data-full="{_e(record.image)}" '
        f'alt="{_e(alt)}"><div class="m">seed {seed}{seed_note}<br>{"<br>".join(_e(x) for x in lines)}'
        f"</div>{flags}{warnings}</div>"
    )


def render_html(plan: GridPlan, engines: Sequence[str], records: Sequence[CellRecord], summary: dict[str, Any]) -> str:
    by_key = {(r.prompt_id, r.sku, r.engine, r.seed): r for r in records}
    head = "".join(f"<th>{_e(engine)}</th>" for engine in engines)
    rows = []
    for prompt in plan.prompts:
        for product in plan.products:
            cells = []
            for engine in engines:
                shots = "".join(_shot(by_key.get((prompt.id, product.sku, engine, seed)), seed) for seed in plan.seeds)
                cells.append(f'<td data-engine="{_e(engine)}"><div class="seeds">{shots}</div></td>')
            rows.append(
                f'<tr data-row="{_e(prompt.id)}/{_e(product.sku)}"><th style="position:static;text-align:left">'
                f"{_e(prompt.id)}: {_e(prompt.text)}<br><span class='m'>{_e(product.sku)}</span></th>"
                f"{''.join(cells)}</tr>"
            )
    metric_rows = "".join(
        f'<tr data-metric="{_e(name)}" data-available="{str(row["available"]).lower()}"><td>{_e(row["label"])}<br>'
        f'<span class="m">{_e(name)}</span></td><td>{_e(row["source"])}</td><td>'
        + ("yes" if row["available"] else f"<span class=na>no: {_e(row['why_not'])}</span>")
        + "</td></tr>"
        for name, row in summary["metrics"].items()
    )
    engine_rows = []
    for engine in engines:
        item = summary["engines"][engine]
        means = item["metrics"]

        def mean(name: str, form: str, means: dict[str, Any] = means) -> str:
            if name not in means:
                return "<span class=na>–</span>"
            return f"{form.format(means[name]['mean'])} ± {form.format(means[name]['std'])}"

        failed = ", ".join(f"{reason} {count}" for reason, count in item["failed"].items()) or "none"
        cost = "–" if item["cost_per_image"] is None else f"{item['currency']} {item['cost_per_image']:.4f}"
        engine_rows.append(
            f'<tr data-engine="{_e(engine)}"><td>{_e(engine)}</td><td>{item["images"]}/{item["cells"]}</td>'
            f"<td>{_e(failed)}</td><td>{mean('product_pixels_preserved', '{:.3f}')}</td>"
            f"<td>{mean('garment_delta_e', '{:.2f}')}</td><td>{mean('silhouette_iou', '{:.2f}')}</td>"
            f"<td>{mean('clip_t', '{:.1f}')}</td><td>{mean('seconds', '{:.2f}')}</td><td>{_e(cost)}</td></tr>"
        )
    loop = _learning_loop_html(summary.get("learning_loop"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Comparison: {_e(summary["brand"])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>
<h1>Comparison: {_e(summary["brand"])}</h1>
<p>{_count(len(plan.prompts), "prompt")} × {_count(len(plan.products), "product")} × {_count(len(plan.seeds), "seed")}
({", ".join(str(seed) for seed in plan.seeds)}) at {plan.size} px; the same seeds across every row.
Click an image to enlarge it. ⚑ = a flag the automatic checks give a reviewer; △ = a metric past its limit.</p>
<h2>Engines</h2>
<table id="engines"><tr><th>engine</th><th>images</th><th>failed</th><th>kept pixels</th><th>ΔE2000</th><th>IoU</th>
<th>CLIP-T</th><th>seconds</th><th>cost / image</th></tr>{"".join(engine_rows)}</table>
<h2>Grid</h2>
<table id="grid"><tr><th>prompt × product</th>{head}</tr>{"".join(rows)}</table>
{loop}
<h2>Metrics and their sources</h2>
<table id="metrics"><tr><th>metric</th><th>source</th><th>available</th></tr>{metric_rows}</table>
<dialog id="zoom"><img id="zoom-img" alt=""><div id="zoom-caption" class="m"></div></dialog>
<script>{_SCRIPT}</script></body></html>
"""


def _learning_loop_html(loop: dict[str, Any] | None) -> str:
    if not loop:
        return ""
    engines = loop["engines"]
    head = "".join(f"<th>{_e(engine)}: still flagged</th>" for engine in engines)
    rows = "".join(
        f'<tr data-reason="{_e(reason)}"><td>{_e(reason)}</td><td>{row["cases"]}</td>'
        + "".join(
            f"<td>{row['still_flagged'].get(engine, 0)} of {row['rerun'].get(engine, 0)}</td>" for engine in engines
        )
        + "</tr>"
        for reason, row in loop["by_reason"].items()
    )
    return (
        f"<h2>Rejected cases re-run</h2><p>{loop['cases']} rejected cases from {_e(loop['source'])}, re-run with their "
        "own prompts and seeds; a case is still flagged when the automatic checks or a metric limit flag it.</p>"
        f'<table id="learning-loop"><tr><th>reason</th><th>cases</th>{head}</tr>{rows}</table>'
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
