"""`catalog backfill --runtime aws-sim`: photos already in the intake bucket go through the AWS flow, in the stack's
batches, and a stopped backfill, resumed, starts nothing twice."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from functions.local.cli import app
from functions.local.synthetic_photos import render_product_photo

pytest.importorskip("moto")
pytest.importorskip("aws_cdk")

PHOTOS = 11  # the map's batches hold 10: two batches


@pytest.fixture(scope="module")
def existing_photos(tmp_path_factory) -> Path:
    """Eleven small product photos, one SKU folder each, as a bucket that predates intake would hold them."""
    root = tmp_path_factory.mktemp("existing")
    for number in range(PHOTOS):
        photo = render_product_photo("tshirt", (30 + 20 * number, 40, 90), (245, 245, 243), size=(72, 96), seed=number)
        (root / f"SKU-{number:02d}").mkdir()
        photo.image.save(root / f"SKU-{number:02d}" / "front.jpg", quality=90)
    return root


def pass_counts(output: str, number: int) -> dict[str, int]:
    line = re.search(rf"pass {number}: (.*?);", output)
    assert line, output
    return {name: int(value) for name, value in (part.split() for part in line.group(1).split(", "))}


def test_a_stopped_backfill_resumes_and_starts_nothing_twice(existing_photos, tmp_path):
    # Given eleven photos put in the intake bucket with its notifications off (nothing ingested them)
    # When the backfill runs through the AWS flow, is stopped after its first batch, and is resumed
    result = CliRunner().invoke(
        app,
        [
            "backfill",
            "s3://intake/incoming/acme/",
            "--brand",
            "acme",
            "--runtime",
            "aws-sim",
            "--photos",
            str(existing_photos),
            "--out",
            str(tmp_path / "out"),
            "--size",
            "64",
            "--stop-after-batches",
            "1",
        ],
    )

    # Then the first pass started one batch (ten images) and every one of them finished
    assert result.exit_code == 0, result.output
    first, second = pass_counts(result.output, 1), pass_counts(result.output, 2)
    assert first == {"listed": 10, "skipped": 0, "started": 10, "dropped": 0, "done": 10, "failed": 0}
    assert "(stopped)" in result.output
    # And the resumed pass skipped what the ledger holds and started only the eleventh
    assert second == {"listed": 11, "skipped": 10, "started": 1, "dropped": 0, "done": 1, "failed": 0}
    # And each photo was published exactly once
    assert f"{PHOTOS} images published" in result.output


def test_a_source_outside_the_brands_intake_folder_is_refused(tmp_path):
    result = CliRunner().invoke(
        app,
        ["backfill", "s3://intake/prepared/", "--brand", "acme", "--runtime", "aws-sim", "--out", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "incoming/acme/" in result.output
