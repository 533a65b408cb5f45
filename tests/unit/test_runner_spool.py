"""`catalog run` keeps its photos' manifest entries on disk (a spool under OUT), not in lists: the runner's memory
stays flat on a batch of 10,000 photos, and the manifest, the report and a resumed run are what they were."""

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from functions.local import runner
from functions.local.discovery import discover_inputs
from functions.local.entry_spool import SPOOL_DIR, EntrySpool
from functions.local.manifest import MANIFEST_NAME, load_previous_manifest, remove_interrupted_writes
from functions.local.report import render_report, write_report
from functions.review.local_flow import ReviewOptions
from schemas import ManifestEntry, RunManifest, Status

SETTINGS = runner.RunSettings(workers=1, size=128)


def _photo(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((160, 120, 3), 245, np.uint8)
    pixels[40:120, 30:90] = colour
    Image.fromarray(pixels).save(path)


def _inputs(root: Path) -> Path:
    """Two SKUs with two photos each, one of them not a photo (a failed entry)."""
    _photo(root / "in" / "SKU-A" / "front.jpg", (200, 30, 40))
    _photo(root / "in" / "SKU-A" / "side.jpg", (30, 40, 200))
    _photo(root / "in" / "SKU-B" / "front.jpg", (30, 160, 60))
    (root / "in" / "SKU-B" / "label.jpg").write_bytes(b"not a photo\n")
    return root / "in"


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ManifestEntry]]:
    """Real entries (prepared payloads, checks, review items, an error), made once for the module."""
    root = tmp_path_factory.mktemp("batch")
    photos = discover_inputs(_inputs(root), exclude=root / "out")
    spooled = runner.check_and_itemise(runner.run_batch(photos, root / "out", SETTINGS), root / "out", SETTINGS)
    return root, list(spooled)


def test_a_batch_s_entries_are_on_disk_and_come_back_in_input_order(tmp_path: Path) -> None:
    # Given four inputs, one of them not a photo
    photos = discover_inputs(_inputs(tmp_path), exclude=tmp_path / "out")
    # When the batch runs
    entries = runner.run_batch(photos, tmp_path / "out", SETTINGS)
    # Then its entries are in a SQLite file under OUT, one row per photo, as their JSON
    assert isinstance(entries, EntrySpool)
    (spool_file,) = (tmp_path / "out" / SPOOL_DIR).iterdir()
    with sqlite3.connect(spool_file) as db:
        stored = dict(db.execute("SELECT source, entry FROM entries").fetchall())
    assert sorted(stored) == sorted(photo.source for photo in photos)
    # And they read back in input order, each the entry that was stored
    assert [entry.source for entry in entries] == [photo.source for photo in photos]
    assert [entry.status for entry in entries].count(Status.FAILED) == 1
    assert all(ManifestEntry.model_validate_json(stored[entry.source]) == entry for entry in entries)
    assert entries[-1].source == photos[-1].source and len(entries[1:3]) == 2
    # And closing the spool deletes its file and folder
    entries.close()
    assert not (tmp_path / "out" / SPOOL_DIR).exists()


def test_the_manifest_and_report_from_a_spool_have_the_bytes_of_the_in_memory_path(
    batch: tuple[Path, list[ManifestEntry]], tmp_path: Path
) -> None:
    # Given real entries in a spool, the two SKUs' photos interleaved (each SKU's cards must still come together)
    _, entries = batch
    interleaved = [entries[0], entries[2], entries[1], entries[3]]
    assert [entry.sku for entry in interleaved] == ["SKU-A", "SKU-B", "SKU-A", "SKU-B"]
    spool = EntrySpool(tmp_path)
    for position, entry in enumerate(interleaved):
        spool.put(entry, position)
    # When the manifest and the report are written from it
    manifest = runner.write_manifest(tmp_path, tmp_path / "in", SETTINGS, datetime.now(UTC), spool)
    spool.close()
    report = write_report(tmp_path, manifest).read_text(encoding="utf-8")
    # Then the manifest is pydantic's whole dump of the same entries, and its entries are read back from the file
    written = (tmp_path / MANIFEST_NAME).read_bytes()
    whole = RunManifest.model_validate_json(written)
    assert written == whole.model_dump_json(indent=2).encode() + b"\n"
    assert whole.entries == tuple(interleaved) == tuple(manifest.entries)
    # And the report is the page rendered from the manifest held whole in memory, cards grouped by SKU
    assert report == render_report(whole)
    a, b = report.index("<h2>SKU-A</h2>"), report.index("<h2>SKU-B</h2>")
    assert a < report.index("SKU-A/side.jpg") < b < report.index("SKU-B/front.jpg")
    assert 'id="failed">Failed (1)' in report


def test_the_previous_manifest_is_read_entry_by_entry_as_a_whole_read_would(
    batch: tuple[Path, list[ManifestEntry]], tmp_path: Path
) -> None:
    # Given a manifest written by a run
    _, entries = batch
    runner.write_manifest(tmp_path, tmp_path / "in", SETTINGS, datetime.now(UTC), entries)
    path = tmp_path / MANIFEST_NAME
    whole = RunManifest.model_validate_json(path.read_bytes())
    # When the next run loads it, Then it finds every entry by source, in order, as the whole read does
    previous = load_previous_manifest(tmp_path)
    assert list(previous.items()) == [(entry.source, entry) for entry in whole.entries]
    # And a manifest in another layout (compact JSON, edited by hand) is still read
    path.write_text(whole.model_dump_json())
    assert dict(load_previous_manifest(tmp_path)) == dict(previous)
    # And a cut-short manifest or one with a bad field of its own means no reuse, as before
    text = whole.model_dump_json(indent=2)
    path.write_text(text[: len(text) // 2])
    assert load_previous_manifest(tmp_path) == {}
    path.write_text(text.replace('"manifest_version": 1', '"manifest_version": "one"'))
    assert load_previous_manifest(tmp_path) == {}


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (no handler, no final manifest)."""


class _KilledAfter:
    def __init__(self, photos: int) -> None:
        self.left = photos

    def photo_done(self, entry: ManifestEntry) -> None:
        if self.left == 0:
            raise _Killed
        self.left -= 1

    def start_jobs(self, count: int) -> None: ...

    def job_done(self, result: object) -> None: ...


def test_a_run_killed_mid_batch_resumes_from_its_checkpointed_manifest(tmp_path: Path) -> None:
    # Given a run killed after its first photo, and the spool file a SIGKILL would have left
    source, out = _inputs(tmp_path), tmp_path / "out"
    photos = discover_inputs(source, exclude=out)

    def run(progress: runner.Progress) -> runner.FinishedRun:
        return runner.run_locally(source, photos, out, SETTINGS, ReviewOptions(), progress, lambda *a: None)

    with pytest.raises(_Killed):
        run(_KilledAfter(1))
    checkpointed = [
        entry.source for entry in RunManifest.model_validate_json((out / MANIFEST_NAME).read_bytes()).entries
    ]
    assert checkpointed == [photos[0].source]
    (out / SPOOL_DIR).mkdir(exist_ok=True)
    (out / SPOOL_DIR / "entries.k2j4x9.sqlite3").write_bytes(b"left by a killed run")
    # When the same command runs again
    finished = run(_KilledAfter(len(photos)))
    # Then the checkpointed photo is reused, the rest are processed, each photo once in the manifest
    entries = list(finished.manifest.entries)
    assert [entry.source for entry in entries] == [photo.source for photo in photos]
    assert [entry.reused for entry in entries] == [True, False, False, False]
    on_disk = RunManifest.model_validate_json((out / MANIFEST_NAME).read_bytes())
    assert on_disk.entries == tuple(entries)
    # And no spool is left under OUT
    assert not (out / SPOOL_DIR).exists()


def test_the_sweep_removes_a_killed_run_s_spool_but_not_a_live_one(tmp_path: Path) -> None:
    # Given a spool this process is using and one a killed run left
    live = EntrySpool(tmp_path)
    leftover = tmp_path / SPOOL_DIR / "entries.abc123.sqlite3"
    leftover.write_bytes(b"left by a killed run")
    # When the next run starts
    removed = remove_interrupted_writes(tmp_path)
    # Then only the killed run's is gone, and the live one still works
    assert removed == [leftover]
    assert live.path.is_file() and len(live) == 0
    live.close()
