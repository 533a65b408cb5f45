"""`catalog run` end to end, as a merchandiser runs it: a folder in, packshots, a manifest and a report out."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from functions.local.synthetic_photos import write_example_photos
from tests.conftest import tree_digest

pytestmark = pytest.mark.e2e


def catalog(*args: str | Path, check_exit: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `catalog` console script, the way the README does."""
    script = Path(sys.executable).with_name("catalog")
    command = [str(script) if script.exists() else "catalog", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if check_exit is not None:
        assert result.returncode == check_exit, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Example photos plus the kinds of bad file a real intake folder holds."""
    root = tmp_path_factory.mktemp("intake")
    write_example_photos(root, size=(900, 1200))
    bad = root / "BAD-FILES"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "logo.png").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>')
    good_jpeg = next(root.rglob("*.jpg")).read_bytes()
    (bad / "cut-short.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    broken_sidecar = root / "BROKEN-SIDECAR"
    broken_sidecar.mkdir()
    shutil.copy(next(root.rglob("*.jpg")), broken_sidecar / "front.jpg")
    (broken_sidecar / "product.json").write_text('{"title": "x", "category": "hats"}')
    return root


@pytest.fixture(scope="module")
def first_run(photo_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    before = tree_digest(photo_folder)
    result = catalog("run", photo_folder, "--out", out, "--size", "800", "--workers", "2")
    return result, out, before


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_bad_files_fail_alone_and_the_rest_of_the_batch_is_written(first_run, photo_folder):
    result, out, _ = first_run
    # Then the exit status says some failed
    assert result.returncode == 1, result.stderr
    entries = {e["source"]: e for e in _manifest(out)["entries"]}
    # And every input file has exactly one entry
    inputs = [p for p in photo_folder.rglob("*") if p.is_file() and p.name != "product.json"]
    assert len(entries) == len(inputs)
    # And each bad file has its stable code and a sentence naming it
    expected = {
        "BAD-FILES/empty.jpg": "empty_file",
        "BAD-FILES/logo.png": "unsupported_format",
        "BAD-FILES/cut-short.jpg": "truncated_image",
        "BROKEN-SIDECAR/front.jpg": "invalid_sidecar",
    }
    for source, code in expected.items():
        entry = entries[source]
        assert entry["status"] == "failed"
        assert entry["error"]["code"] == code
        assert Path(source).name in entry["error"]["message"] or "product.json" in entry["error"]["message"]
        assert entry["outputs"] == {}
    # And every other photo succeeded
    good = [e for s, e in entries.items() if s not in expected]
    assert good and all(e["status"] == "succeeded" and e["error"] is None for e in good)


def test_outputs_line_up_with_the_original_and_the_packshot_is_pure_white(first_run, photo_folder):
    _, out, _ = first_run
    for entry in _manifest(out)["entries"]:
        if entry["status"] != "succeeded":
            continue
        original = Image.open(photo_folder / entry["source"])
        cutout = Image.open(out / entry["outputs"]["cutout"])
        mask = Image.open(out / entry["outputs"]["mask"])
        packshot = Image.open(out / entry["outputs"]["packshot"])
        # The cutout and mask have the normalised original's size, so they overlay it pixel for pixel
        assert cutout.mode == "RGBA" and cutout.size == original.size == mask.size
        assert np.array_equal(np.asarray(cutout.getchannel("A")), np.asarray(mask))
        # The packshot is the requested square, with an exactly white background and no metadata
        assert packshot.size == (800, 800) and packshot.format == "JPEG"
        pixels = np.asarray(packshot.convert("RGB"))
        for corner in (pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]):
            assert tuple(corner) == (255, 255, 255)
        assert not packshot.getexif() and "icc_profile" not in packshot.info


def test_originals_are_never_modified(first_run, photo_folder):
    _, _, before = first_run
    assert tree_digest(photo_folder) == before


def test_report_shows_every_input_and_every_failure_reason(first_run):
    _, out, _ = first_run
    html = (out / "report.html").read_text()
    for entry in _manifest(out)["entries"]:
        assert entry["source"].replace("&", "&amp;") in html
        if entry["error"]:
            assert entry["error"]["code"] in html
        else:
            # The thumbnails it links to exist
            for kind in ("thumb_original", "thumb_cutout", "thumb_packshot"):
                assert (out / entry["outputs"][kind]).is_file()
                assert entry["outputs"][kind] in html


def test_white_on_white_is_flagged_low_confidence_in_the_record(first_run):
    _, out, _ = first_run
    records = [e for e in _manifest(out)["entries"] if e["status"] == "succeeded"]
    white = [e for e in records if "WHITE" in e["sku"].upper()]
    assert white, "the example set has a white garment on white"
    assert all(e["cutout"]["low_confidence"] for e in white)
    assert all(any(c["code"] == "low_confidence_cutout" for c in e["checks"]) for e in white)


def test_a_rerun_skips_finished_work_and_keeps_the_same_bytes(first_run, photo_folder):
    _, out, _ = first_run
    produced = tree_digest(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.packshot.jpg")}

    # When the same folder is run again
    again = catalog("run", photo_folder, "--out", out, "--size", "800", "--workers", "2")

    # Then the same files fail, everything else is reused untouched
    assert again.returncode == 1
    entries = _manifest(out)["entries"]
    assert all(e["reused"] for e in entries if e["status"] == "succeeded")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.packshot.jpg")} == mtimes
    after = tree_digest(out)
    produced.pop("manifest.json"), after.pop("manifest.json")
    produced.pop("report.html"), after.pop("report.html")
    assert after == produced


def test_forced_reprocessing_on_one_worker_gives_identical_bytes(first_run, photo_folder, tmp_path):
    _, out, _ = first_run
    # When the batch is processed from scratch, serially, into another folder
    catalog("run", photo_folder, "--out", tmp_path, "--size", "800", "--workers", "1", "--force")
    # Then every output is byte-identical to the parallel run's
    ours = {k: v for k, v in tree_digest(tmp_path).items() if k not in ("manifest.json", "report.html")}
    theirs = {k: v for k, v in tree_digest(out).items() if k not in ("manifest.json", "report.html")}
    assert ours == theirs


def test_changing_the_format_reprocesses_and_removes_stale_outputs(tmp_path):
    photos = tmp_path / "in"
    write_example_photos(photos, size=(600, 800))
    out = tmp_path / "out"
    catalog("run", photos, "--out", out, "--size", "300", "--workers", "1", check_exit=0)
    assert list(out.rglob("*.packshot.jpg"))

    catalog(
        "run",
        photos,
        "--out",
        out,
        "--size",
        "300",
        "--preset",
        "transparent",
        "--workers",
        "1",
        check_exit=0,
    )

    assert not list(out.rglob("*.packshot.jpg"))
    pngs = list(out.rglob("*.packshot.png"))
    assert pngs and all(Image.open(p).mode == "RGBA" for p in pngs)
    assert not any(e["reused"] for e in _manifest(out)["entries"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "/no/such/folder", "--out", "{tmp}/o"], "does not exist"),
        (["run", "{tmp}", "--out", "{tmp}"], "--out must differ"),
        (["run", "{tmp}", "--out", "{tmp}/o", "--background", "magic"], "not understood"),
        (["run", "{tmp}", "--out", "{tmp}/o", "--preset", "transparent", "--format", "jpeg"], "transparent"),
        (["run", "{tmp}", "--out", "{tmp}/o", "--fill", "3"], "fill"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(tmp_path, args, needle):
    (tmp_path / "a.jpg").write_bytes(b"")
    result = catalog(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2
    assert needle in result.stdout + result.stderr


def test_a_missing_rembg_model_stops_the_run_before_any_work(tmp_path):
    photos = tmp_path / "in"
    write_example_photos(photos, size=(600, 800))
    result = catalog(
        "run",
        photos,
        "--out",
        tmp_path / "out",
        "--background",
        "rembg:u2net",
        "--models-dir",
        tmp_path / "models",
    )
    assert result.returncode == 2
    assert "u2net" in result.stderr and "--allow-download" in result.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_single_good_folder_exits_0_and_writes_json_schemas(tmp_path):
    photos = tmp_path / "in"
    write_example_photos(photos, size=(600, 800))
    catalog("run", photos, "--out", tmp_path / "out", "--size", "256", check_exit=0)
    catalog("schemas", tmp_path / "schemas", check_exit=0)
    assert (tmp_path / "schemas" / "product-sidecar.schema.json").is_file()


def test_real_sample_photos_become_packshots(samples_dir, tmp_path):
    # Given the real studio photos (read in place; the folder is read-only) and whatever else lies beside them
    before = tree_digest(samples_dir)
    photos = sorted(p.name for p in samples_dir.glob("*.jpg"))
    others = sorted(p.name for p in samples_dir.iterdir() if p.is_file() and p.suffix != ".jpg")
    # When they are run through the default pipeline
    result = catalog("run", samples_dir, "--out", tmp_path, "--size", "1000")
    # Then every photo has a plausible cutout and a white packshot
    entries = {e["source"]: e for e in _manifest(tmp_path)["entries"]}
    for name in photos:
        entry = entries[name]
        assert entry["status"] == "succeeded", entry
        assert 0.1 < entry["cutout"]["coverage"] < 0.8, entry
        packshot = Image.open(io.BytesIO((tmp_path / entry["outputs"]["packshot"]).read_bytes()))
        assert packshot.getpixel((0, 0)) == (255, 255, 255)
    # And a non-photo beside them (the folder's README) is reported, not silently skipped
    for name in others:
        assert entries[name]["error"]["code"] == "unsupported_format"
    assert result.returncode == (1 if others else 0)
    # And the white top on white is the one the keyer is unsure about
    assert entries["09133_00.jpg"]["cutout"]["low_confidence"]
    assert tree_digest(samples_dir) == before


def test_console_script_is_installed():
    assert shutil.which("catalog", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))


def test_gpu_jobs_without_models_is_a_usage_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    result = catalog("run", tmp_path, "--out", tmp_path / "o", "--jobs", "packshot,lifestyle")
    assert result.returncode == 2
    assert "--models tiny" in result.stderr


def test_sidecar_jobs_run_in_process_with_tiny_models_and_go_to_review(tmp_path):
    # Given one SKU whose product.json asks for a lifestyle scene and a try-on
    from functions.local.synthetic_photos import render_product_photo

    sku = tmp_path / "in" / "DRESS-1"
    sku.mkdir(parents=True)
    render_product_photo("dress", (120, 60, 140), (244, 244, 242), size=(240, 320), seed=3).image.save(sku / "f.jpg")
    (sku / "product.json").write_text('{"title": "Slip dress", "category": "dresses", "jobs": ["lifestyle", "try_on"]}')
    out = tmp_path / "out"

    # When it runs with tiny models and automatic approval
    catalog("run", tmp_path / "in", "--out", out, "--size", "256", "--models", "tiny", "--review", "auto", check_exit=0)

    # Then the manifest records both jobs with their outputs, written under OUT
    [entry] = _manifest(out)["entries"]
    assert entry["requested_jobs"] == ["packshot", "lifestyle", "try_on"]
    kinds = {job["kind"]: job for job in entry["jobs"]}
    assert set(kinds) == {"lifestyle", "try_on"}
    for job in kinds.values():
        assert job["status"] == "succeeded" and job["outputs"]
        for output in job["outputs"]:
            path = Path(output["uri"].removeprefix("file://"))
            assert out.resolve() in path.parents and Image.open(path).size[0] > 0
            assert output["seed"] is not None
    # And the report says in plain words that tiny models paint noise
    assert "noise by design" in (out / "report.html").read_text()
    # And every generated image went through review with the packshot, and was published once approved
    approved = [p for p in (out / "approved").rglob("*") if p.is_file()]
    generated = sum(len(job["outputs"]) for job in entry["jobs"])
    assert len(approved) == generated + 1
