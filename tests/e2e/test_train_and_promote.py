"""The brand loop on tiny models: `catalog train run` -> `catalog brand versions` -> `catalog brand promote` ->
`catalog run --brand acme` uses the promoted version, and its lifestyle result names it."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from functions.local.cli import app
from functions.local.synthetic_photos import write_example_photos
from tests.tiny_dataset import write_dataset

pytestmark = pytest.mark.e2e

pytest.importorskip("torch")

TRAIN = ["--models", "tiny", "--steps", "2", "--rank", "2", "--validation-steps", "2"]


def _catalog(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a shared 2-core runner two OpenMP threads spin against each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A brand store with one trained version of acme's ss27, and the first run's output."""
    root = tmp_path_factory.mktemp("brand-loop")
    dataset = write_dataset(root / "ds")
    brands = root / "brands"
    code, output = _catalog(
        "train", "run", str(dataset), "--brand", "acme", "--name", "ss27", "--brands", str(brands), *TRAIN
    )
    assert code == 0, output
    return dataset, brands, output


def test_a_finished_training_run_is_registered_with_its_report_grid_and_dataset(trained):
    _, brands, output = trained
    # Then the run says which version it registered, and the version holds what the issue lists
    assert "registered ss27@v1" in output
    folder = brands / "acme" / "versions" / "ss27@v1"
    for name in ("pytorch_lora_weights.safetensors", "training.json", "dataset.json", "version.json"):
        assert (folder / name).is_file(), name
    assert list((folder / "validation").rglob("*.png")), "the validation grid is kept with the version"
    assert json.loads((folder / "training.json").read_text())["steps_done"] == 2
    # And the versions list shows it, not yet active
    code, listing = _catalog("brand", "versions", "acme", "--brands", str(brands))
    assert code == 0 and "ss27@v1" in listing and "active" not in listing.split("ss27@v1", 1)[1][:60]


def test_re_running_the_same_training_registers_nothing_new(trained):
    dataset, brands, _ = trained
    # When the same command runs again
    code, output = _catalog(
        "train", "run", str(dataset), "--brand", "acme", "--name", "ss27", "--brands", str(brands), *TRAIN
    )

    # Then it says the run is already registered, and there is still one version
    assert code == 0 and "already registered as ss27@v1" in output
    assert sorted(path.name for path in (brands / "acme" / "versions").iterdir()) == ["ss27@v1"]


def test_a_dataset_of_another_brand_is_refused_before_training(trained, tmp_path):
    dataset, brands, _ = trained
    # When the dataset says acme but the run says another brand
    code, output = _catalog("train", "run", str(dataset), "--brand", "other", "--name", "ss27", "--brands", str(brands))

    # Then it stops, naming the file and both brands, and nothing is written for that brand
    assert code == 2 and "dataset.json: brand is 'acme', but --brand is 'other'" in output
    assert not (brands / "other").exists()


def test_the_promoted_version_is_what_the_lifestyle_job_uses_and_names(trained, tmp_path):
    _, brands, _ = trained
    # Given the version promoted
    code, output = _catalog("brand", "promote", "acme", "ss27@v1", "--brands", str(brands))
    assert code == 0 and "ss27@v1 is active" in output
    photos = tmp_path / "photos"
    write_example_photos(photos, size=(256, 256))
    first = sorted(path for path in photos.iterdir() if path.is_dir())[0]
    for other in photos.iterdir():
        if other != first:
            for file in other.iterdir() if other.is_dir() else ():
                file.unlink()
            other.rmdir() if other.is_dir() else other.unlink()

    # When a catalog run with the brand makes a packshot and a lifestyle scene
    out = tmp_path / "out"
    code, output = _catalog(
        "run", str(photos), "--out", str(out), "--brand", "acme", "--brands", str(brands),
        "--jobs", "packshot,lifestyle", "--models", "tiny", "--review", "auto", "--size", "256", "--workers", "1",
    )  # fmt: skip

    # Then the lifestyle job ran with the promoted version, and its review item and published file name it
    assert code == 0, output
    [entry] = json.loads((out / "manifest.json").read_text())["entries"]
    [lifestyle] = [job for job in entry["jobs"] if job["kind"] == "lifestyle"]
    assert lifestyle["adapter_versions"] == {"ss27": "ss27@v1"}
    [item] = [item for item in entry["review_items"] if item["job_kind"] == "lifestyle"]
    assert item["details"]["provenance"]["adapter_version"] == "ss27=ss27@v1"
    # And the prompt that made it is recorded, led by the version's trigger token
    assert item["details"]["provenance"]["prompt"].startswith("acmestyle")
    published = [json.loads(line) for line in (out / "published.jsonl").read_text().splitlines()]
    [record] = [line for line in published if line["metadata"]["job-kind"] == "lifestyle"]
    assert record["metadata"]["adapter-version"] == "ss27=ss27@v1"


class ProcessKilledError(Exception):
    """Stands in for the process dying between two steps (a real `kill -9` resumes the same way)."""


def test_a_run_that_dies_halfway_leaves_no_version_and_its_rerun_resumes(monkeypatch, tmp_path):
    import gpu_jobs.training.lora as lora

    dataset = write_dataset(tmp_path / "ds")
    brands = tmp_path / "brands"
    command = ["train", "run", str(dataset), "--brand", "acme", "--name", "ss27", "--brands", str(brands)]
    command += [*TRAIN, "--checkpoint-every", "1"]
    real_train_lora = lora.train_lora

    def dies_before_the_end(*args, progress, **kwargs):
        def report(step: int, total: int, loss: float) -> None:
            progress(step, total, loss)
            if step == 2:  # after checkpoint-1, before the run finished
                raise ProcessKilledError

        return real_train_lora(*args, progress=report, **kwargs)

    # Given a run that died after its first checkpoint, before it finished
    monkeypatch.setattr(lora, "train_lora", dies_before_the_end)
    result = CliRunner().invoke(app, command)
    assert isinstance(result.exception, ProcessKilledError)
    monkeypatch.setattr(lora, "train_lora", real_train_lora)

    # Then nothing is registered
    assert not (brands / "acme" / "versions").exists()

    # When the same command runs again
    code, output = _catalog(*command)

    # Then it resumed from the checkpoint and registered exactly one version
    assert code == 0 and "registered ss27@v1" in output, output
    report = json.loads((brands / "acme" / "versions" / "ss27@v1" / "training.json").read_text())
    assert (report["resumed_from_step"], report["steps_done"]) == (1, 2)
