"""The README's tiny-model command on the project's own examples completes: every recipe's output without weights."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

JOBS = "packshot,ghost_mannequin,try_on,lifestyle"


def _catalog(*args: str | Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("catalog")
    command = [str(script) if script.exists() else "catalog", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


def test_the_documented_tiny_model_command_exits_0_on_the_examples(tmp_path: Path) -> None:
    # Given `catalog examples` (a white tee and a charcoal hoodie among them: garment-blind for the tiny segmenter)
    examples, out = tmp_path / "examples", tmp_path / "out"
    assert _catalog("examples", examples).returncode == 0
    # When the README's command runs every recipe on tiny models
    result = _catalog(
        "run", examples, "--out", out, "--jobs", JOBS, "--models", "tiny", "--review", "auto", "--category", "outerwear"
    )
    # Then it exits 0: every photo and every job succeeded
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    entries = json.loads((out / "manifest.json").read_text())["entries"]
    assert len(entries) == 5
    for entry in entries:
        assert entry["status"] == "succeeded", entry["error"]
        assert sorted(job["kind"] for job in entry["jobs"]) == ["ghost_mannequin", "lifestyle", "try_on"]
    # And the ghost mannequins of the white tee and the hoodie say their garment came from the cutout mask
    sources = {
        entry["source"]: next(job for job in entry["jobs"] if job["kind"] == "ghost_mannequin")["outputs"][0]["details"]
        for entry in entries
    }
    for source in ("TSHIRT-WHITE-003/front.jpg", "HOODIE-CHARCOAL-005.jpg"):
        assert sources[source]["garment_mask_source"].startswith("cutout_mask (tiny models")
    assert sources["TSHIRT-RED-001/front.jpg"]["garment_mask_source"] == "segmenter"
    # And --category reached the loose photo's try-on, while the sidecars' categories won for the others
    categories = {entry["source"]: entry["prepared"]["jobs"] for entry in entries}
    by_kind = {source: {job["kind"]: job["category"] for job in jobs} for source, jobs in categories.items()}
    assert by_kind["HOODIE-CHARCOAL-005.jpg"]["try_on"] == "outerwear"
    assert by_kind["TROUSERS-NAVY-002/front.jpg"]["try_on"] == "bottoms"
