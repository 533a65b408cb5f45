"""The promotion gate: the candidate against the active version on the brand's validation set; a regression is refused,
`--force` needs a reason and records it, and the comparison is kept with the candidate.

The GPU side here is a small lifestyle runner (the `GpuJobRunner` port) that writes what the recipe writes (the
image, placed.png, keep_mask.png) without torch: version v2 of it repaints the product's pixels, as a LoRA that leaks
into the product would. The recipe itself runs in tests/e2e/test_compare_report.py.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from functions.adapters.local.files import FileStorage, file_uri, path_of
from functions.local.promotion_gate import build_gate, read_validation_set, regressions
from functions.stages.brand_versions import BrandStoreError, latest_promotion, promote, register_version
from functions.stages.comparison.grid import GridInputError
from schemas import JobOutput, JobRequest, JobResult, Status
from tests.functional.test_compare_engines import write_cutout


class LifestyleRunner:
    """Places the product on a painted canvas like the recipe; the adapter version `ss27@v2` tints the product."""

    def __init__(self) -> None:
        self.requests: list[JobRequest] = []

    def run(self, request: JobRequest) -> JobResult:
        self.requests.append(request)
        size = int(request.params["width"])
        cutout = np.asarray(Image.open(path_of(request.inputs["cutout"])).convert("RGBA"))
        placed = np.zeros((size, size, 4), np.uint8)
        top = left = (size - cutout.shape[0]) // 2
        placed[top : top + cutout.shape[0], left : left + cutout.shape[1]] = cutout
        keep = placed[..., 3] >= 128
        rng = np.random.default_rng(request.seed)
        image = rng.integers(60, 200, (size, size, 3)).astype(np.uint8)
        image[keep] = placed[..., :3][keep]
        adapters = (request.params.get("brand_profile") or {}).get("adapters") or []
        versions = {adapter["name"]: adapter["version"] for adapter in adapters}
        if versions.get("ss27") == "ss27@v2":
            image[keep] = np.clip(image[keep].astype(int) + np.array([0, 60, 60]), 0, 255).astype(np.uint8)
        folder = path_of(request.output_prefix)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "lifestyle_0.png")
        Image.fromarray(placed, "RGBA").save(folder / "placed.png")
        Image.fromarray(np.where(keep, 255, 0).astype(np.uint8)).save(folder / "keep_mask.png")
        details = {
            "mode": "inpaint",
            "placed_uri": file_uri(folder / "placed.png"),
            "keep_mask_uri": file_uri(folder / "keep_mask.png"),
        }
        return JobResult(
            job_id=request.job_id,
            kind=request.kind,
            status=Status.SUCCEEDED,
            outputs=(JobOutput(uri=file_uri(folder / "lifestyle_0.png"), seed=request.seed, details=details),),
            model_version="test-lifestyle",
            adapter_versions=versions,
        )


@pytest.fixture
def store(tmp_path: Path):
    """A brand store with ss27@v1 active, ss27@v2 and ss27@v3 registered, and a validation set."""
    brands = tmp_path / "brands"
    brand_dir = brands / "acme"
    (brand_dir / "validation" / "products").mkdir(parents=True)
    write_cutout(brand_dir / "validation" / "products" / "shirt-1.png")
    (brand_dir / "validation.yaml").write_text(
        "prompts:\n  - {id: terrace, prompt: a linen shirt on a terrace}\nproducts: validation/products\n"
        "seeds: [0, 1]\nsize: 64\nmodels: tiny\n"
    )
    storage, brands_uri = FileStorage([brands]), file_uri(brands) + "/"
    for run in ("one", "two", "three"):
        files = {"pytorch_lora_weights.safetensors": f"weights {run}".encode()}
        register_version(storage, brands_uri, "acme", "ss27", files, run_key=run, source="local")
    promote(storage, brands_uri, "acme", "ss27@v1", gate=None, force_reason=None, actor="test")
    return storage, brands_uri, brand_dir


def gate_for(store, runner: LifestyleRunner):
    storage, brands_uri, _ = store
    return build_gate(storage, brands_uri, "acme", runner_factory=lambda models, roots: runner)


def test_a_candidate_that_changes_the_product_is_refused_and_its_report_kept(store) -> None:
    storage, brands_uri, brand_dir = store
    runner = LifestyleRunner()

    # When ss27@v2 (which repaints the product) is promoted over the active ss27@v1
    with pytest.raises(BrandStoreError) as refused:
        promote(storage, brands_uri, "acme", "ss27@v2", gate=gate_for(store, runner), force_reason=None, actor="t")

    # Then it is refused, naming the metrics that regressed and where the report is
    message = str(refused.value)
    assert "ss27@v2 did not pass the promotion gate against ss27@v1" in message
    assert "product_pixels_preserved fell from 1 to 0" in message
    assert "garment_delta_e rose" in message
    assert "the automatic checks flagged 2 of its images (acme/ss27@v1: 0)" in message
    report = brand_dir / "versions" / "ss27@v2" / "gate" / "against-ss27@v1" / "report.html"
    assert report.is_file() and file_uri(report) in message
    summary = json.loads((report.parent / "summary.json").read_text())
    assert list(summary["engines"]) == ["acme/ss27@v1", "acme/ss27@v2"]
    # both ran on the fixed set: 1 prompt x 1 product x 2 seeds each, the same seeds
    assert sorted((r.params["brand_profile"]["adapters"][0]["version"], r.seed) for r in runner.requests) == [
        ("ss27@v1", 0), ("ss27@v1", 1), ("ss27@v2", 0), ("ss27@v2", 1)
    ]  # fmt: skip
    # and ss27@v1 stays active
    latest = latest_promotion(storage, brands_uri, "acme")
    assert latest is not None and latest.version == "ss27@v1"


def test_a_candidate_as_good_as_the_active_one_passes_and_force_records_its_reason(store) -> None:
    storage, brands_uri, brand_dir = store

    # When ss27@v3 (as faithful as v1) is promoted
    record = promote(
        storage, brands_uri, "acme", "ss27@v3", gate=gate_for(store, LifestyleRunner()), force_reason=None, actor="t"
    )

    # Then it passes, with the gate's verdict and report recorded
    assert record.version == "ss27@v3" and record.gate_passed is True and record.gate_reasons == ()
    assert record.gate_report_uri == file_uri(
        brand_dir / "versions" / "ss27@v3" / "gate" / "against-ss27@v1" / "report.html"
    )

    # When ss27@v2 is forced over it with a reason
    forced = promote(
        storage, brands_uri, "acme", "ss27@v2", gate=gate_for(store, LifestyleRunner()),
        force_reason="the product tint is the new season's colour", actor="t",
    )  # fmt: skip

    # Then it is active, and the record keeps the failed verdict, the reason and the report
    assert forced.gate_passed is False and forced.forced_reason == "the product tint is the new season's colour"
    assert any("product_pixels_preserved" in line for line in forced.gate_reasons)
    assert (brand_dir / "versions" / "ss27@v2" / "gate" / "against-ss27@v3" / "report.html").is_file()


def test_catalog_brand_promote_runs_the_gate(store, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.local import promotion_gate
    from functions.local.cli import app

    _, _, brand_dir = store
    monkeypatch.setattr(promotion_gate, "DEFAULT_RUNNER_FACTORY", lambda models, roots: LifestyleRunner())
    brands = str(brand_dir.parent)

    # When the regressing candidate is promoted from the command line
    refused = CliRunner().invoke(app, ["brand", "promote", "acme", "ss27@v2", "--brands", brands])

    # Then it is refused (exit 2) with the regression named
    assert refused.exit_code == 2, refused.output
    assert "product_pixels_preserved fell" in " ".join(refused.output.split())

    # When it is forced with a reason, it is promoted and the reason shown
    forced = CliRunner().invoke(
        app, ["brand", "promote", "acme", "ss27@v2", "--force", "--reason", "approved by the brand", "--brands", brands]
    )
    assert forced.exit_code == 0, forced.output
    assert "forced: approved by the brand" in forced.output


def test_regressions_respect_each_metrics_direction_and_threshold() -> None:
    def engine(**means: float) -> dict:
        return {
            "images": 4, "cells": 4, "failed": {}, "flags": {},
            "metrics": {name: {"mean": value} for name, value in means.items()},
        }  # fmt: skip

    summary = {
        "old": engine(garment_delta_e=2.0, silhouette_iou=0.90, clip_t=20.0),
        "new": engine(garment_delta_e=2.9, silhouette_iou=0.80, clip_t=25.0),
    }
    thresholds = {"garment_delta_e": 1.0, "silhouette_iou": 0.05, "clip_t": 1.0}

    # ΔE rose 0.9 (allowed 1.0): fine; IoU fell 0.10 (allowed 0.05): a regression; CLIP-T rose: better
    assert regressions(summary, "new", "old", thresholds) == [
        "silhouette_iou fell from 0.9 to 0.8 (worse by 0.1, allowed 0.05)"
    ]


def test_a_malformed_validation_set_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "validation.yaml").write_text("prompts: [a shirt]\nproducts: ../elsewhere\n")
    with pytest.raises(GridInputError, match=r"validation.yaml: products: a folder inside the brand's folder"):
        read_validation_set(tmp_path)
    (tmp_path / "validation.yaml").write_text("prompts: [a shirt]\nproducts: p\nthresholds: {exposure_mean: 1}\n")
    with pytest.raises(GridInputError, match=r"thresholds.exposure_mean: not a metric that can regress"):
        read_validation_set(tmp_path)
