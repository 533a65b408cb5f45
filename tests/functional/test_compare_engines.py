"""External engines against loopback fakes that speak the providers' documented APIs: an OpenAI-compatible Images API
over HTTP, and Amazon Bedrock's InvokeModel through boto3. Each answer (an image, a 429, a content-filter refusal,
a timeout) ends up in its own cell; nothing crashes the run, and a re-run asks only for the missing cells."""

import base64
import io
import json
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config
from PIL import Image

from functions.stages.comparison.compare import run_comparison
from functions.stages.comparison.engines import EngineContext
from functions.stages.comparison.grid import GridPlan, ProductSpec, PromptSpec
from functions.stages.comparison.openai_images import OpenAIImagesSettings
from functions.stages.comparison.prices import PriceTable, PriceTableError
from tests.fakes.bedrock_runtime import FakeBedrockRuntime
from tests.fakes.openai_images import API_KEY, FakeOpenAIImages

SIZE = 64
NOVA = "amazon.nova-canvas-v1:0"


def write_cutout(path: Path) -> Path:
    """A 48x48 textured 'garment' (an opaque rounded body on a transparent background)."""
    yy, xx = np.mgrid[0:48, 0:48]
    inside = ((xx - 24) ** 2 / 18**2 + (yy - 24) ** 2 / 22**2) <= 1
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[..., 0] = 180 + (xx % 7) * 6
    rgba[..., 1] = 40 + (yy % 5) * 10
    rgba[..., 2] = 60
    rgba[..., 3] = np.where(inside, 255, 0)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


@pytest.fixture
def plan(tmp_path: Path) -> GridPlan:
    cutout = write_cutout(tmp_path / "shirt-1.png")
    return GridPlan(
        prompts=(PromptSpec("terrace", "a shirt on a sunny terrace"), PromptSpec("studio", "a shirt in a studio")),
        products=(ProductSpec("shirt-1", cutout),),
        seeds=(0, 1),
        size=SIZE,
    )


@pytest.fixture
def openai_fake():
    fake = FakeOpenAIImages(slow_answer_s=2.0).start()
    yield fake
    fake.stop()


@pytest.fixture
def bedrock_fake():
    fake = FakeBedrockRuntime(slow_answer_s=2.0).start()
    yield fake
    fake.stop()


@pytest.fixture
def bedrock_client(bedrock_fake: FakeBedrockRuntime, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = Config(read_timeout=0.5, connect_timeout=2, retries={"mode": "standard", "total_max_attempts": 1})
    return boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=bedrock_fake.endpoint_url, config=config
    )


def context(openai_fake: FakeOpenAIImages | None = None, bedrock_client=None, prices=None) -> EngineContext:
    settings = None
    if openai_fake is not None:
        settings = OpenAIImagesSettings(base_url=openai_fake.base_url, api_key=API_KEY, timeout_s=0.5)
    return EngineContext(brand="acme", bedrock_client=bedrock_client, openai_settings=settings, prices=prices)


def cells(out: Path) -> dict[str, dict]:
    return {
        path.parent.relative_to(out / "cells").as_posix(): json.loads(path.read_text())
        for path in sorted((out / "cells").rglob("cell.json"))
    }


def test_openai_edits_keep_the_product_and_every_failure_is_recorded_in_its_cell(
    plan: GridPlan, openai_fake: FakeOpenAIImages, tmp_path: Path
) -> None:
    # Given an Images API that throttles the 1st request, refuses the 2nd on content policy and is too slow for the 3rd
    openai_fake.script("throttle", "content_policy", "timeout", "ok")
    out = tmp_path / "cmp"

    # When gpt-image-1 is compared on 2 prompts x 1 product x 2 seeds
    result = run_comparison(plan, "openai:gpt-image-1", out, context(openai_fake))

    # Then the run finishes with four cells: three failed with their reasons, one image
    recorded = cells(out)
    assert len(recorded) == 4
    reasons = sorted(cell["reason"] for cell in recorded.values() if cell["status"] == "failed")
    assert reasons == ["content_filtered", "throttled", "timeout"]
    made = [cell for cell in recorded.values() if cell["status"] == "ok"]
    assert len(made) == 1
    # the edit kept the product's own pixels, and the report says where the seed went
    assert made[0]["metrics"]["product_pixels_preserved"] == 1.0
    assert made[0]["metrics"]["garment_delta_e"] < 0.5
    assert made[0]["flags"] == []
    assert made[0]["seed_honoured"] is False
    assert result.summary["openai:gpt-image-1"]["failed"] == {"throttled": 1, "content_filtered": 1, "timeout": 1}
    # and the requests were the documented edits: multipart image + RGBA mask, no response_format for gpt-image-1
    edit = openai_fake.requests[0]
    assert edit["path"] == "/v1/images/edits"
    assert edit["files"] == ["image", "mask"]
    assert "response_format" not in edit["fields"]
    # and the key is in no file the comparison wrote
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".html"):
            assert API_KEY not in path.read_text(encoding="utf-8")

    # When the comparison runs again and the API now answers
    before = len(openai_fake.requests)
    kept = next(path for path in (out / "cells").rglob("cell.json") if json.loads(path.read_text())["status"] == "ok")
    kept_bytes = kept.read_bytes()
    again = run_comparison(plan, "openai:gpt-image-1", out, context(openai_fake))

    # Then only the three missing cells were asked for, and the kept one was not touched
    assert len(openai_fake.requests) - before == 3
    assert again.reused == 1
    assert kept.read_bytes() == kept_bytes
    assert all(cell["status"] == "ok" for cell in cells(out).values())


def test_openai_generations_from_the_prompt_alone(plan: GridPlan, openai_fake: FakeOpenAIImages, tmp_path: Path):
    # Given a text-to-image engine, which places no product
    # When it is compared
    result = run_comparison(plan, "openai-text:dall-e-3", tmp_path / "cmp", context(openai_fake))

    # Then it was asked through /images/generations for base64 (a non-gpt-image model), at the cell's size
    first = openai_fake.requests[0]
    assert first["path"] == "/v1/images/generations"
    assert first["fields"]["response_format"] == "b64_json"
    assert first["fields"]["size"] == f"{SIZE}x{SIZE}"
    # and the product-fidelity metrics say the product is not in its images
    metrics = result.summary["openai-text:dall-e-3"]["metrics"]
    assert metrics["product_pixels_preserved"]["mean"] < 0.5
    assert result.summary["openai-text:dall-e-3"]["images"] == 4


def test_a_product_the_engine_moved_is_found_where_it_is(plan: GridPlan, openai_fake: FakeOpenAIImages, tmp_path):
    # Given an engine that keeps the product's pixels but shifts it 6 px right and 4 px up
    openai_fake.move_product = (6, -4)

    # When it is compared
    result = run_comparison(plan, "openai:gpt-image-1", tmp_path / "cmp", context(openai_fake))

    # Then the product is found where it went, and its pixels count as kept there
    metrics = result.summary["openai:gpt-image-1"]["metrics"]
    assert metrics["product_pixels_preserved"]["min"] == 1.0
    assert metrics["garment_delta_e"]["max"] < 0.5


def test_bedrock_outpainting_around_the_product_and_its_failures(
    plan: GridPlan, bedrock_fake: FakeBedrockRuntime, bedrock_client, tmp_path: Path
) -> None:
    # Given Bedrock throttling the first call, refusing the second with its content filter, timing out on the third
    bedrock_fake.script("throttle", "content_filter", "timeout")
    out = tmp_path / "cmp"

    # When Nova Canvas is compared
    result = run_comparison(plan, f"bedrock:{NOVA}", out, context(bedrock_client=bedrock_client))

    # Then each failure is recorded in its cell with its reason, and the fourth cell has its image
    assert result.summary[f"bedrock:{NOVA}"]["failed"] == {"throttled": 1, "content_filtered": 1, "timeout": 1}
    assert result.summary[f"bedrock:{NOVA}"]["images"] == 1
    # and the request was the documented OUTPAINTING body: the placed product, black over it in maskImage
    body = bedrock_fake.requests[0]["body"]
    assert body["taskType"] == "OUTPAINTING"
    assert body["imageGenerationConfig"] == {
        "numberOfImages": 1,
        "width": SIZE,
        "height": SIZE,
        "cfgScale": 6.5,
        "seed": 0,
    }
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["outPaintingParams"]["maskImage"]))).convert("L"))
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["outPaintingParams"]["image"]))).convert("RGB"))
    assert set(np.unique(mask)) == {0, 255}
    assert (image[mask == 0][:, 0] >= 180).all()  # the product's red is under the black (kept) region
    made = next(cell for cell in cells(out).values() if cell["status"] == "ok")
    assert made["metrics"]["product_pixels_preserved"] == 1.0
    assert made["cost"] == 0.04 and made["currency"] == "USD"

    # When it runs again, only the three failed cells are asked for
    before = len(bedrock_fake.requests)
    again = run_comparison(plan, f"bedrock:{NOVA}", out, context(bedrock_client=bedrock_client))
    assert len(bedrock_fake.requests) - before == 3
    assert again.summary[f"bedrock:{NOVA}"]["images"] == 4


def test_bedrock_text_to_image_and_seeds_in_the_body(
    plan: GridPlan, bedrock_fake: FakeBedrockRuntime, bedrock_client, tmp_path: Path
) -> None:
    # When Titan is compared text-to-image
    run_comparison(
        plan, "bedrock-text:amazon.titan-image-generator-v2:0", tmp_path / "cmp", context(bedrock_client=bedrock_client)
    )

    # Then every request was TEXT_IMAGE with the row's seeds, the same for each prompt
    bodies = [request["body"] for request in bedrock_fake.requests]
    assert {body["taskType"] for body in bodies} == {"TEXT_IMAGE"}
    assert [body["imageGenerationConfig"]["seed"] for body in bodies] == [0, 1, 0, 1]
    assert bodies[0]["textToImageParams"]["text"] == "a shirt on a sunny terrace"


def test_the_price_table_file_replaces_the_defaults(tmp_path: Path) -> None:
    # Given a price file in YAML
    path = tmp_path / "prices.yaml"
    path.write_text("currency: EUR\nper_image:\n  bedrock:amazon.nova-canvas-v1:0: 0.05\nrecipe_per_gpu_hour: 3.6\n")

    # When it is read
    table = PriceTable.from_file(path)

    # Then its prices win, the model's price serves its text-only twin, and our recipes cost by the GPU second
    assert table.currency == "EUR"
    assert table.cost(f"bedrock-text:{NOVA}", "bedrock", 9.0) == 0.05
    assert table.cost("base", "recipe", 2.0) == pytest.approx(0.002)
    assert table.cost("openai:some-other-model", "openai", 1.0) is None
    # and a bad entry is refused naming the file and the field
    path.write_text("per_image:\n  openai:gpt-image-1: -1\n")
    with pytest.raises(PriceTableError, match=r"prices.yaml: per_image.openai:gpt-image-1"):
        PriceTable.from_file(path)


def failure_line(reason: str, item: str, prompt: str | None, seed: int | None, sku: str = "shirt-1") -> str:
    return json.dumps(
        {
            "reason": reason,
            "review_id": "review-1",
            "item_id": item,
            "sku": sku,
            "job_kind": "lifestyle",
            "generated": f"file:///out/{item}.png",
            "prompt": prompt,
            "seed": seed,
            "adapter_version": "ss27@v3",
        }
    )


def test_rejected_cases_rerun_with_their_prompts_and_seeds_counted_per_reason(
    plan: GridPlan, openai_fake: FakeOpenAIImages, bedrock_fake: FakeBedrockRuntime, bedrock_client, tmp_path: Path
) -> None:
    # Given a failure log: two product_altered rejections, one wrong_colour, one without a recorded prompt
    log = tmp_path / "failures.jsonl"
    log.write_text(
        "\n".join(
            [
                failure_line("product_altered", "a", "a shirt on a beach", 41),
                failure_line("product_altered", "b", "a shirt in a garden", 42),
                failure_line("wrong_colour", "c", "a shirt at night", 43),
                failure_line("other", "d", None, None),
            ]
        )
    )
    engines = f"openai:gpt-image-1,bedrock-text:{NOVA}"

    # When the comparison re-runs them on an engine that keeps the product and one that does not place it at all
    result = run_comparison(plan, engines, tmp_path / "cmp", context(openai_fake, bedrock_client), failure_log=log)

    # Then per reason, the keeping engine has no case still flagged and the text-only one has every case flagged
    loop = json.loads(result.paths["summary"].read_text())["learning_loop"]
    product_altered = loop["by_reason"]["product_altered"]
    assert product_altered["cases"] == 2
    assert product_altered["rerun"] == {"openai:gpt-image-1": 2, f"bedrock-text:{NOVA}": 2}
    assert product_altered["still_flagged"] == {f"bedrock-text:{NOVA}": 2}
    assert product_altered["flags"][f"bedrock-text:{NOVA}"]["product_pixels_changed"] == 2
    assert loop["by_reason"]["wrong_colour"]["still_flagged"] == {f"bedrock-text:{NOVA}": 1}
    assert loop["skipped"] == ["d: no prompt or seed recorded"]
    # with the cases' own seeds sent to Bedrock, after the grid's
    seeds = [request["body"]["imageGenerationConfig"]["seed"] for request in bedrock_fake.requests]
    assert seeds[-3:] == [41, 42, 43]
    # and the report shows the table
    html = result.paths["html"].read_text()
    assert 'id="learning-loop"' in html and "2 of 2" in html


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from functions.local.cli import app

    products = tmp_path / "products"
    products.mkdir()
    write_cutout(products / "shirt-1.png")
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("- id: a\n  prompt: one\n- id: a\n  prompt: two\n")
    out = tmp_path / "cmp"

    def compare(*extra: str) -> tuple[int, str]:
        args = ["compare", "--brand", "acme", "--prompts", str(prompts), "--products", str(products), "--out", str(out)]
        result = CliRunner().invoke(app, [*args, *extra])
        return result.exit_code, " ".join(result.output.split())

    # A prompts file with a repeated id names the file and the ids
    code, output = compare("--engines", "openai:gpt-image-1")
    assert code == 2 and "prompts.yaml: prompt ids must be unique" in output
    prompts.write_text("- a shirt\n")
    # An engine that does not exist says which forms exist
    code, output = compare("--engines", "midjourney")
    assert code == 2 and "'midjourney' is not an engine; use base," in output
    # Our recipes without --models say what to add
    code, output = compare("--engines", "base")
    assert code == 2 and "our recipes need --models" in output
    assert not (out / "summary.json").exists()
