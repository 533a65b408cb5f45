"""The local runtime and aws-sim publish byte-identical results for the same photos, settings and seeds, with the same
automatic-check flags; and a lifestyle image that alters the product's own pixels is flagged on both.

Both runtimes run the GPU worker in this process (tiny random models), so one monkeypatch reaches both.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from functions.local.cli import app
from functions.local.synthetic_photos import write_example_photos

pytestmark = pytest.mark.e2e

for _module in ("moto", "aws_cdk", "cdk_nag", "torch", "diffusers"):
    pytest.importorskip(_module)
if shutil.which("node") is None:
    pytest.skip("the CDK synthesizes through node, which is not installed", allow_module_level=True)

RUNTIMES = ("local", "aws-sim")
SAME_SETTINGS = ("--size", "256", "--jobs", "lifestyle", "--models", "tiny", "--review", "auto", "--workers", "1")


def catalog_run(input_dir: Path, out: Path, runtime: str) -> Result:
    command = ["run", str(input_dir), "--out", str(out), "--runtime", runtime, *SAME_SETTINGS]
    result = CliRunner().invoke(app, command)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a crash, not an exit status: show its traceback
    return result


def approved_tree(out: Path) -> dict[str, str]:
    approved = out / "approved"
    return {
        path.relative_to(approved).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(approved.rglob("*"))
        if path.is_file()
    }


def flags_by_publish_name(out: Path) -> dict[str, list[tuple[str, str, str]]]:
    entries = json.loads((out / "manifest.json").read_text())["entries"]
    return {
        item["details"]["publish_name"]: [(flag["code"], flag["severity"], flag["message"]) for flag in item["flags"]]
        for entry in entries
        for item in entry["review_items"]
    }


def photos(tmp_path: Path, skus: tuple[str, ...]) -> Path:
    examples = tmp_path / "examples"
    write_example_photos(examples, size=(300, 400))
    intake = tmp_path / "intake"
    for sku in skus:
        shutil.copytree(examples / sku, intake / sku)
    return intake


def run_both(intake: Path, tmp_path: Path) -> dict[str, Path]:
    outs = {}
    for runtime in RUNTIMES:
        out = tmp_path / f"out-{runtime}"
        result = catalog_run(intake, out, runtime)
        assert result.exit_code == 0, f"{runtime}: {result.output}"
        outs[runtime] = out
    return outs


def test_both_runtimes_publish_the_same_bytes_and_flags(tmp_path):
    # Given two photos, each asking for a packshot and a lifestyle scene
    intake = photos(tmp_path, ("TSHIRT-RED-001", "DRESS-SAGE-004"))

    # When the same settings and seeds run on the local runtime and through the AWS flow
    outs = run_both(intake, tmp_path)

    # Then both published the same files, byte for byte: packshots and the tiny models' lifestyle scenes
    local, aws = (approved_tree(outs[runtime]) for runtime in RUNTIMES)
    assert local == aws
    assert sorted(local) == [
        "DRESS-SAGE-004/front.lifestyle/lifestyle_0.png",
        "DRESS-SAGE-004/front.packshot.jpg",
        "TSHIRT-RED-001/front.lifestyle/lifestyle_0.png",
        "TSHIRT-RED-001/front.packshot.jpg",
    ]
    # And every item carries the same automatic-check flags on both
    assert flags_by_publish_name(outs["local"]) == flags_by_publish_name(outs["aws-sim"])


def test_a_lifestyle_that_alters_product_pixels_is_flagged_on_both_runtimes(tmp_path, monkeypatch):
    # Given a lifestyle recipe that changes one of the product's own pixels after compositing it back
    from gpu_jobs.recipes import lifestyle

    composite = lifestyle._composite

    def composite_then_alter_a_product_pixel(placement, generated):
        pixels = np.asarray(composite(placement, generated)).copy()
        rows, columns = np.nonzero(placement.keep)
        row, column = rows[len(rows) // 2], columns[len(columns) // 2]
        pixels[row, column] = (pixels[row, column].astype(np.int16) + 128) % 256
        return Image.fromarray(pixels)

    monkeypatch.setattr(lifestyle, "_composite", composite_then_alter_a_product_pixel)
    intake = photos(tmp_path, ("TSHIRT-RED-001",))

    # When it runs on both runtimes
    outs = run_both(intake, tmp_path)

    # Then the automatic checks flag the lifestyle image on both, the same way, and leave the packshot alone
    for runtime in RUNTIMES:
        flags = flags_by_publish_name(outs[runtime])
        codes = [code for code, _, _ in flags["TSHIRT-RED-001/front.lifestyle/lifestyle_0.png"]]
        assert "product_pixels_changed" in codes, (runtime, flags)
        assert not any(code == "product_pixels_changed" for code, _, _ in flags["TSHIRT-RED-001/front.packshot.jpg"])
    assert flags_by_publish_name(outs["local"]) == flags_by_publish_name(outs["aws-sim"])
