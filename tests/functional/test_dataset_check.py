"""`catalog train dataset check` as an ML owner runs it: a folder of SKU photos in, a dataset folder out with every
photo's verdict, captions they can edit, masks, buckets and a report; bad input ends with reasons and writes nothing.
"""

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from functions.adapters.local.publisher import FolderPublisher
from functions.local.cli import app
from functions.local.synthetic_photos import render_product_photo, write_example_photos
from functions.stages.publish import publish_decisions
from functions.stages.training_runs import dataset_hash
from schemas import RejectionReason, ReviewDecision, ReviewItem, Verdict
from schemas.dataset import DatasetManifest
from tests.conftest import tree_digest

SMALL = ["--min-side", "200", "--bucket-resolution", "256"]  # tiny photos keep the test fast
EXTRA_GARMENTS = [("hoodie", (30, 90, 160)), ("dress", (160, 40, 90)), ("trousers", (120, 100, 60))]


def check(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["train", "dataset", "check", *map(str, args)])
    return result.exit_code, " ".join(result.output.split())


def _render(garment: str, colour: tuple[int, int, int], path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    render_product_photo(garment, colour, (244, 244, 244), size=(240, 320), seed=seed).image.save(path, quality=90)


def _write_feedback_run(out: Path) -> None:
    """A `catalog run` output folder: one approved lifestyle image and one rejected one in acme's feedback."""
    approved, rejected = out / "gen" / "approved.png", out / "gen" / "rejected.png"
    _render("tshirt", (20, 130, 60), approved, seed=40)
    _render("tshirt", (230, 120, 20), rejected, seed=41)
    items = [
        ReviewItem(item_id=name, sku="TEE-9", original="TEE-9/front.jpg", generated=str(path), job_kind="lifestyle")
        for name, path in (("ok", approved), ("bad", rejected))
    ]
    decided = datetime(2026, 11, 30, tzinfo=UTC)
    decisions = [
        ReviewDecision(item_id="ok", verdict=Verdict.APPROVED, reviewer="m@example.com", decided_at=decided),
        ReviewDecision(
            item_id="bad",
            verdict=Verdict.REJECTED,
            reason=RejectionReason.WRONG_COLOUR,
            note="Orange, should be green",
            reviewer="m@example.com",
            decided_at=decided,
        ),
    ]
    publish_decisions(
        "acme", "r" * 16, items, decisions, read_bytes=lambda p: Path(p).read_bytes(), publisher=FolderPublisher(out)
    )


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> tuple[int, str, Path, Path]:
    """Eight good photos, a cut-short file, an empty frame, a copy, a photo with a bad sidecar; a run's feedback and
    approved image."""
    root = tmp_path_factory.mktemp("check")
    photos = root / "photos"
    write_example_photos(photos, size=(240, 320))
    for seed, (garment, colour) in enumerate(EXTRA_GARMENTS, start=10):
        _render(garment, colour, photos / f"EXTRA-{seed}" / "front.jpg", seed)
    shutil.copy(photos / "EXTRA-10" / "front.jpg", photos / "EXTRA-11" / "copy.jpg")
    good = (photos / "EXTRA-12" / "front.jpg").read_bytes()
    (photos / "EXTRA-12" / "cut.jpg").write_bytes(good[: len(good) // 3])
    Image.new("RGB", (240, 320), (244, 244, 244)).save(photos / "EMPTY-FRAME.jpg")
    (photos / "BAD-SIDECAR").mkdir()
    shutil.copy(photos / "EXTRA-10" / "front.jpg", photos / "BAD-SIDECAR" / "front.jpg")
    (photos / "BAD-SIDECAR" / "product.json").write_text('{"title": "Hat", "category": "hats"}')
    run_out = root / "run-out"
    _write_feedback_run(run_out)
    out = root / "ds"
    code, output = check(
        photos, "--out", out, "--brand", "acme", "--trigger-token", "sks", *SMALL,
        "--feedback", run_out, "--include-approved", run_out,
    )  # fmt: skip
    return code, output, out, photos


@pytest.fixture(scope="module")
def five_photo_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """The smallest dataset the check accepts, for the re-run tests: five example photos, checked once."""
    root = tmp_path_factory.mktemp("five")
    photos = root / "photos"
    write_example_photos(photos, size=(240, 320))
    code, output = check(photos, "--out", root / "ds", "--brand", "acme", "--trigger-token", "sks", *SMALL)
    assert code == 0, output
    return root / "ds", photos


def _dataset(out: Path) -> dict:
    return json.loads((out / "dataset.json").read_text())


def test_every_photo_gets_a_verdict_and_a_reason_and_the_kept_ones_are_written(checked):
    code, output, out, _ = checked
    # Then the check succeeds, with a warning that fewer than 10 photos were kept
    assert code == 0, output
    dataset = _dataset(out)
    verdicts = {p["source"]: (p["verdict"], [f["code"] for f in p["findings"]]) for p in dataset["photos"]}
    assert verdicts["EXTRA-12/cut.jpg"] == ("refused", ["truncated_image"])
    assert verdicts["EMPTY-FRAME.jpg"] == ("refused", ["no_product"])
    assert verdicts["EXTRA-11/copy.jpg"] == ("refused", ["exact_duplicate"])
    assert verdicts["BAD-SIDECAR/front.jpg"] == ("refused", ["invalid_sidecar"])
    kept = [p for p in dataset["photos"] if p["verdict"] == "kept"]
    assert len(kept) == 9  # 8 photos and the opted-in approved image
    assert any("only 9 photos kept" in warning for warning in dataset["warnings"])
    # And each kept photo is its normalised original (never enlarged), with its mask and caption beside it
    for photo in kept:
        image, mask = Image.open(out / photo["image_file"]), Image.open(out / photo["mask_file"])
        assert image.size == (photo["width"], photo["height"]) == mask.size == (240, 320) and mask.mode == "L"
        caption = (out / photo["caption_file"]).read_text(encoding="utf-8").strip()
        assert caption == photo["caption"] and caption.startswith("sks")
        assert photo["bucket"][0] <= 240 and photo["bucket"][1] <= 320
    # And nothing of a refused photo (the dropped copy among them) is left among the training files
    expected = {f"{p['id']}{suffix}" for p in kept for suffix in (".png", ".txt")}
    assert {path.name for path in (out / "images").iterdir()} == expected
    assert {path.name for path in (out / "masks").iterdir()} == {f"{p['id']}.png" for p in kept}
    dress = next(p for p in kept if p["source"] == "DRESS-SAGE-004/front.jpg")
    assert dress["caption"] == "sks, Slip dress, sage green dresses"
    assert sum(dataset["buckets"].values()) == 9
    # And the recorded hash is the one training keys its work on (one definition: schemas.dataset.dataset_digest)
    manifest = DatasetManifest.model_validate(dataset)
    assert dataset["dataset_sha256"] == dataset_hash(out, manifest)
    # And the terminal table names every refused file with its reason
    assert "EXTRA-12/cut.jpg" in output and "truncated_image" in output and "9 of 13 photos kept" in output


def test_the_feedback_shows_as_a_failure_case_and_the_approved_image_is_marked(checked):
    _, _, out, _ = checked
    dataset = _dataset(out)
    # Then the rejection is in the failure log with its reason and note
    assert [(c["reason"], c["item_id"], c["note"]) for c in dataset["failure_cases"]] == [
        ("wrong_colour", "bad", "Orange, should be green")
    ]
    # And the approved generated image is a candidate marked as such
    approved = [p for p in dataset["photos"] if p["origin"] == "approved_generated"]
    assert len(approved) == 1 and approved[0]["source"].endswith("approved/TEE-9/ok.png")
    # And the report shows verdicts, reasons, thumbnails, the duplicate group and the failure log
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "truncated_image" in report and "exact_duplicate" in report and 'id="failure-wrong_colour"' in report
    thumbs = [p for p in dataset["photos"] if (out / "thumbs" / f"{p['id']}.jpg").is_file()]
    assert len(thumbs) == 11  # every decodable file, kept or not
    assert "Orange, should be green" in report and "dup-1" in report


def test_a_rerun_keeps_the_users_caption_edits_and_refreshes_the_rest(five_photo_dataset, tmp_path):
    # Given the dataset folder, and a caption the user rewrote
    first, photos = five_photo_dataset
    out = tmp_path / "ds"
    shutil.copytree(first, out)
    dress = next(p for p in _dataset(out)["photos"] if p["source"] == "DRESS-SAGE-004/front.jpg")
    (out / dress["caption_file"]).write_text("sks, a bias-cut slip dress in sage silk\n", encoding="utf-8")

    # When the check runs again with another template
    code, output = check(photos, "--out", out, "--brand", "acme", *SMALL, "--caption-template", "{title} {sku}")
    assert code == 0, output

    # Then the edit survives and is marked as the user's (later runs keep it); the others follow the new template
    photos_after = {p["source"]: p for p in _dataset(out)["photos"]}
    edited = photos_after["DRESS-SAGE-004/front.jpg"]
    kept_text = (out / edited["caption_file"]).read_text(encoding="utf-8").strip()
    assert kept_text == "sks, a bias-cut slip dress in sage silk"
    assert edited["caption_edited"] is True
    assert photos_after["TSHIRT-RED-001/front.jpg"]["caption"] == "Crew-neck T-shirt TSHIRT-RED-001"


def test_a_caption_in_another_encoding_stops_the_check_and_changes_nothing(five_photo_dataset, tmp_path):
    # Given a dataset whose caption file the user saved as Latin-1
    first, photos = five_photo_dataset
    out = tmp_path / "ds"
    shutil.copytree(first, out)
    caption = out / "images" / "TSHIRT-RED-001__front.txt"
    caption.write_bytes("sks, tee-shirt rouge à col rond".encode("latin-1"))
    before = tree_digest(out)
    # When the check runs again
    code, output = check(photos, "--out", out, "--brand", "acme", *SMALL)
    # Then it is refused, naming the file and what to do, and the dataset is exactly as it was
    assert code == 1
    unwrapped = output.replace("- ", "-")  # the terminal wraps long paths at their hyphens
    assert "TSHIRT-RED-001__front.txt is not UTF-8" in unwrapped and "save it as UTF-8" in unwrapped
    assert tree_digest(out) == before


def test_a_check_killed_while_writing_leaves_the_previous_dataset_whole(five_photo_dataset, tmp_path, monkeypatch):
    # Given a dataset, and a check that dies while writing its report (after the images)
    first, photos = five_photo_dataset
    out = tmp_path / "ds"
    shutil.copytree(first, out)
    before = tree_digest(out)
    import functions.stages.dataset_report as report

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", killed)
    # When it is run
    CliRunner().invoke(app, ["train", "dataset", "check", str(photos), "--out", str(out), "--brand", "acme", *SMALL])
    # Then the dataset folder is as it was and nothing half-written is left beside it
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_a_swap_cut_short_is_repaired_by_the_next_check(five_photo_dataset, tmp_path):
    # Given a dataset with an edited caption, moved aside by a check that died before putting the new one in place
    first, photos = five_photo_dataset
    out = tmp_path / "ds"
    shutil.copytree(first, out)
    (out / "images" / "TSHIRT-RED-001__front.txt").write_text("my words\n", encoding="utf-8")
    out.rename(tmp_path / ".ds.previous")
    # ...and the half-built folder of a check that was killed (its process is gone)
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    (tmp_path / f".ds.check-{killed.pid}" / "images").mkdir(parents=True)
    # When the check runs again
    code, output = check(photos, "--out", out, "--brand", "acme", *SMALL)
    # Then the previous dataset was put back first, so the edit was kept, and the leftover is gone
    assert code == 0, output
    assert (out / "images" / "TSHIRT-RED-001__front.txt").read_text(encoding="utf-8") == "my words\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("case", ["three photos", "duplicates only"])
def test_too_few_usable_photos_are_refused_with_reasons_and_nothing_is_written(tmp_path, case):
    # Given three good photos, or one photo and four copies of it
    photos = tmp_path / "photos"
    if case == "three photos":
        for seed, (garment, colour) in enumerate(EXTRA_GARMENTS):
            _render(garment, colour, photos / f"SKU-{seed}" / "front.jpg", seed)
    else:
        _render("dress", (160, 40, 90), photos / "SKU" / "front.jpg", 3)
        for n in range(4):
            shutil.copy(photos / "SKU" / "front.jpg", photos / "SKU" / f"copy-{n}.jpg")
    # When they are checked
    code, output = check(photos, "--out", tmp_path / "ds", "--brand", "acme", *SMALL)
    # Then the check is refused, saying why, and no dataset folder appears
    assert code == 1
    assert "a dataset needs at least 5" in output
    if case == "duplicates only":
        assert output.count("exact_duplicate") == 4 and "only 1 of 5 photos passed" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--caption-template", "{title} {price}"], "the fields are"),
        (["--brand", "Acme Co"], "lower-case letters"),
        (["--trigger-token", "two words"], "one word"),
        (["--feedback", "nowhere"], "no such file"),
    ],
)
def test_usage_errors_exit_2_before_any_work(tmp_path, args, message):
    photos = tmp_path / "photos"
    photos.mkdir()
    code, output = check(photos, "--out", tmp_path / "ds", "--brand", "acme", *args)
    assert code == 2 and message in output and not (tmp_path / "ds").exists()


def test_out_must_not_be_the_photos_or_a_folder_that_is_not_a_dataset(tmp_path):
    photos = tmp_path / "photos"
    (photos / "SKU").mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    code, output = check(photos, "--out", photos / "ds", "--brand", "acme")
    assert code == 2 and "outside the photos folder" in output
    code, output = check(photos, "--out", tmp_path / "notes", "--brand", "acme")
    assert code == 2 and "no dataset.json" in output and (tmp_path / "notes" / "todo.txt").exists()


def test_a_captioner_folder_that_is_missing_is_a_usage_error(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    code, output = check(photos, "--out", tmp_path / "ds", "--brand", "acme", "--captioner", tmp_path / "none")
    assert code == 2 and "never downloaded" in output


def test_a_missing_imagehash_names_the_extra_to_install(tmp_path, monkeypatch):
    # Given a machine without the `train` extra
    monkeypatch.setitem(sys.modules, "imagehash", None)  # makes `import imagehash` raise ImportError
    photos = tmp_path / "photos"
    photos.mkdir()
    # When the check is asked for, then it stops before any work, saying what to install
    code, output = check(photos, "--out", tmp_path / "ds", "--brand", "acme")
    assert code == 2 and "pip install -e '.[train]'" in output and not (tmp_path / "ds").exists()
