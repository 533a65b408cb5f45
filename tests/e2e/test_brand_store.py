"""`catalog run --brand NAME --brands DIR`: the brand's profile reaches its GPU jobs, and which adapter made each
image travels to the review item, the feedback record and the published file's provenance."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from functions.local.cli import app
from functions.local.synthetic_photos import write_example_photos

pytestmark = pytest.mark.e2e

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small SKU with a sidecar, so the run stays short."""
    folder = tmp_path_factory.mktemp("photos")
    write_example_photos(folder, size=(300, 400))
    keep = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    for other in folder.iterdir():
        if other != keep:
            if other.is_dir():
                for file in other.iterdir():
                    file.unlink()
                other.rmdir()
            else:
                other.unlink()
    return folder


def _brand_store(root: Path, profile: dict | str) -> Path:
    from gpu_jobs.tiny_models import write_tiny_lora

    folder = root / "brands" / "acme"
    (folder / "adapters").mkdir(parents=True)
    write_tiny_lora(folder / "adapters" / "ss27.safetensors", seed=3)
    text = profile if isinstance(profile, str) else json.dumps(profile)
    (folder / "profile.json").write_text(text)
    return root / "brands"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["run", *args, "--size", "256", "--workers", "1"])
    return result.exit_code, result.output


def test_the_brand_profile_reaches_the_lifestyle_job_and_its_adapter_version_reaches_the_published_file(
    photos, tmp_path
):
    # Given a brand store whose profile names a LoRA by a path relative to the brand's folder, with a version
    profile = {
        "brand": "acme",
        "trigger_token": "acmestyle",
        "adapters": [{"name": "ss27", "uri": "adapters/ss27.safetensors", "version": "v3"}],
    }
    brands = _brand_store(tmp_path, profile)
    out = tmp_path / "out"

    # When the brand's photos run with a lifestyle job, auto-approved
    code, output = _run(
        str(photos), "--out", str(out), "--brand", "acme", "--brands", str(brands),
        "--jobs", "lifestyle", "--models", "tiny", "--review", "auto",
    )  # fmt: skip

    # Then the job was asked with the resolved profile and ran with the brand's adapter
    assert code == 0, output
    [entry] = json.loads((out / "manifest.json").read_text())["entries"]
    [job] = entry["prepared"]["jobs"]
    adapter_uri = job["params"]["brand_profile"]["adapters"][0]["uri"]
    assert adapter_uri == (brands / "acme" / "adapters" / "ss27.safetensors").resolve().as_uri()
    assert entry["jobs"][0]["adapter_versions"] == {"ss27": "v3"}
    # And the review item and the published file's provenance say which adapter and version made the image
    [generated] = [item for item in entry["review_items"] if item["job_kind"] == "lifestyle"]
    assert generated["details"]["provenance"]["adapter_version"] == "ss27=v3"
    published = [json.loads(line) for line in (out / "published.jsonl").read_text().splitlines()]
    [lifestyle] = [line for line in published if line["metadata"]["job-kind"] == "lifestyle"]
    assert lifestyle["metadata"]["adapter-version"] == "ss27=v3"
    assert (out / lifestyle["path"]).is_file()


def test_a_brand_without_a_profile_runs_on_packshot_defaults_with_a_note(photos, tmp_path):
    # Given an empty brand store
    (tmp_path / "brands").mkdir()
    out = tmp_path / "out"

    # When a brand with no profile runs
    code, output = _run(str(photos), "--out", str(out), "--brand", "newbrand", "--brands", str(tmp_path / "brands"))

    # Then the packshots are made and the user is told why no brand adapters apply
    assert code == 0, output
    assert "No profile for brand 'newbrand'" in " ".join(output.split())
    [entry] = json.loads((out / "manifest.json").read_text())["entries"]
    assert entry["status"] == "succeeded" and entry["prepared"]["brand"]["brand"] == "newbrand"


def test_a_malformed_profile_stops_the_run_naming_the_field(photos, tmp_path):
    # Given a profile whose adapter weight is out of range
    brands = _brand_store(
        tmp_path, {"brand": "acme", "adapters": [{"name": "ss27", "uri": "adapters/ss27.safetensors", "weight": 9}]}
    )

    # When the run starts
    code, output = _run(str(photos), "--out", str(tmp_path / "out"), "--brand", "acme", "--brands", str(brands))

    # Then it stops before any work with an error naming the profile and the field
    assert code == 2
    assert "adapters.0.weight" in output and "profile.json" in output
    assert not (tmp_path / "out" / "manifest.json").exists()
