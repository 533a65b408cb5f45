"""`catalog compare --models tiny` end to end: our recipe (base, a trained version, ControlNet canny), an
OpenAI-compatible fake and a Bedrock fake on 2 prompts x 1 product x 2 seeds; the three files, the report in Chromium.

Needs `/usr/bin/chromium` for the browser part (skips cleanly without it).
"""

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from functions.adapters.local.files import FileStorage, file_uri
from functions.local.cli import app
from functions.stages.brand_versions import register_version
from tests.fakes.bedrock_runtime import FakeBedrockRuntime
from tests.fakes.openai_images import API_KEY, FakeOpenAIImages
from tests.functional.test_compare_engines import write_cutout

pytestmark = pytest.mark.e2e

# As tests/e2e/test_review_browser.py runs Debian's chromium.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
ARTIFACTS = Path(__file__).parent / "artifacts"

ENGINES = ["base", "acme/ss27@v1", "controlnet:canny", "openai:gpt-image-1", "bedrock:amazon.nova-canvas-v1:0"]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory):
    """One comparison run for every test here (the tiny models load once)."""
    import torch

    from gpu_jobs.tiny_models import write_tiny_lora

    # Tiny models run fastest on one thread; on a shared 2-core runner, two OpenMP threads spin against each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    root = tmp_path_factory.mktemp("compare")
    brands = root / "brands"
    (brands / "acme").mkdir(parents=True)
    lora = write_tiny_lora(root / "lora.safetensors", seed=3)
    register_version(
        FileStorage([brands]),
        file_uri(brands) + "/",
        "acme",
        "ss27",
        {"pytorch_lora_weights.safetensors": lora.read_bytes()},
        run_key="e2e",
        source="local",
    )
    products = root / "products"
    (products / "shirt-1").mkdir(parents=True)
    write_cutout(products / "shirt-1" / "cutout.png")
    prompts = root / "prompts.yaml"
    prompts.write_text("- id: terrace\n  prompt: a linen shirt on a sunny terrace\n- a linen shirt in a white studio\n")
    openai_fake, bedrock_fake = FakeOpenAIImages().start(), FakeBedrockRuntime().start()
    bedrock_fake.script("ok", "throttle", "throttle", "throttle")  # the 2nd cell: throttled on all three attempts
    out = root / "cmp"
    env = {
        "OPENAI_BASE_URL": openai_fake.base_url,
        "OPENAI_API_KEY": API_KEY,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock_fake.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    args = [
        "compare",
        "--brand", "acme",
        "--prompts", str(prompts),
        "--products", str(products),
        "--engines", ",".join(ENGINES),
        "--seeds", "2",
        "--models", "tiny",
        "--brands", str(brands),
        "--size", "64",
        "--embedding-model", "tiny",
        "--nsfw-model", "tiny",
        "--out", str(out),
    ]  # fmt: skip
    first = CliRunner().invoke(app, args, env=env)
    rerun = CliRunner().invoke(app, args, env=env)
    yield {"out": out, "first": first, "rerun": rerun, "openai": openai_fake, "bedrock": bedrock_fake}
    openai_fake.stop()
    bedrock_fake.stop()
    torch.set_num_threads(threads)


def test_the_three_files_hold_every_cell_and_every_engine(comparison) -> None:
    out: Path = comparison["out"]
    # Given one throttled Bedrock cell, the first run says some cells failed (exit 1) and writes the three files
    assert comparison["first"].exit_code == 1, comparison["first"].output
    assert {"report.html", "metrics.csv", "summary.json"} <= {path.name for path in out.iterdir()}

    # Then summary.json has every engine with its means, spreads, seconds and cost per image
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["engines"]) == ENGINES
    assert summary["seeds"] == [0, 1]
    for engine in ENGINES:
        item = summary["engines"][engine]
        assert item["cells"] == 4 and item["images"] == 4, (engine, item)
        for metric in ("product_pixels_preserved", "garment_delta_e", "silhouette_iou", "sharpness", "clip_t"):
            assert set(item["metrics"][metric]) == {"mean", "std", "min", "max", "n"}
        assert item["seconds_per_image"] is not None and item["cost_per_image"] is not None
    # our recipe keeps the product's pixels where it promised (the automatic check agrees: no flag)
    assert summary["engines"]["base"]["flags"] == {}
    assert summary["engines"]["base"]["metrics"]["product_pixels_preserved"]["min"] == 1.0
    # which metrics were available, and what each rests on
    assert {"clip_t", "nsfw_score"} <= set(summary["metrics_available"])
    assert "tiny-random-nsfw" in summary["metrics"]["nsfw_score"]["source"]
    assert 0.0 <= summary["engines"]["base"]["metrics"]["nsfw_score"]["min"] <= 1.0
    assert "tiny-random-clip" in summary["metrics"]["clip_t"]["source"]
    assert summary["metrics"]["garment_delta_e"]["source"].startswith("pixels:")
    assert "tiny-random-clip" in summary["metrics"]["clip_t"]["source"]

    # And metrics.csv has one row per prompt x product x engine x seed, each metric column naming its source
    with (out / "metrics.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 1 * len(ENGINES) * 2
    assert "garment_delta_e [pixels]" in rows[0] and "clip_t [embedding:tiny-random-clip]" in rows[0]
    assert "nsfw_score [classifier:tiny-random-nsfw]" in rows[0]
    assert {(row["engine"], row["seed"]) for row in rows if row["prompt_id"] == "terrace"} == {
        (engine, seed) for engine in ENGINES for seed in ("0", "1")
    }


def test_the_version_really_changes_the_image_and_the_rerun_fills_only_the_missing_cell(comparison) -> None:
    out: Path = comparison["out"]
    cells = out / "cells" / "terrace" / "shirt-1"
    base = Image.open(cells / "base" / "seed-0" / "image.png")
    version = Image.open(cells / "acme-ss27@v1" / "seed-0" / "image.png")
    assert base.tobytes() != version.tobytes()
    record = json.loads((cells / "acme-ss27@v1" / "seed-0" / "cell.json").read_text())
    assert record["versions"]["ss27"] == "ss27@v1"
    # the first run recorded the throttle in its cell; the re-run asked Bedrock for that cell only and exited 0
    assert comparison["rerun"].exit_code == 0, comparison["rerun"].output
    # 4 cells, 2 more tries of the throttled one (botocore's standard retries), 1 for it on the re-run
    assert len(comparison["bedrock"].requests) == 4 + 2 + 1
    assert "19 cells kept from an earlier run" in comparison["rerun"].output


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_the_report_in_a_real_browser(comparison, browser) -> None:
    out: Path = comparison["out"]
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto((out / "report.html").as_uri())

    # Then every row holds one column per engine and each column the same two seeds, all images loaded
    assert page.locator("#grid tr[data-row]").count() == 2
    first_row = page.locator("#grid tr[data-row]").first
    assert first_row.locator("td[data-engine]").count() == len(ENGINES)
    for cell in first_row.locator("td[data-engine]").all():
        assert cell.locator(".m").all_inner_texts()[0].startswith("seed 0")
    images = page.locator("#grid img")
    assert images.count() == 2 * len(ENGINES) * 2
    assert page.evaluate(
        "Array.from(document.querySelectorAll('#grid img')).every(i => i.complete && i.naturalWidth === 64)"
    )
    assert "ΔE" in first_row.inner_text() and "IoU" in first_row.inner_text()
    # the metrics table says what each metric rests on
    assert "no brand training photos to compare with" in page.locator("#metrics").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "compare-report.png"), full_page=True)

    # When an image is clicked, it opens enlarged
    images.nth(3).click()
    dialog = page.locator("#zoom")
    assert dialog.is_visible()
    assert page.evaluate("document.getElementById('zoom-img').getBoundingClientRect().width") >= 512
    page.screenshot(path=str(ARTIFACTS / "compare-report-enlarged.png"))
    dialog.click()
    assert not dialog.is_visible()
