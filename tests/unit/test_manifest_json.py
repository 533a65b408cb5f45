"""`OUT/manifest.json` is written one entry at a time (flat memory on big batches) with the same bytes pydantic's
whole dump gives, so every reader of the manifest sees no difference."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from functions.local import runner
from functions.local.discovery import discover_inputs
from functions.local.manifest import load_previous_manifest
from schemas import RunManifest


def _real_entries(tmp_path):
    # A processed photo (prepared payload, cutout figures, checks) and a file that fails (an error), run for real
    (tmp_path / "in" / "SKU-é").mkdir(parents=True)
    pixels = np.full((160, 120, 3), 245, np.uint8)
    pixels[40:120, 30:90] = (200, 30, 40)
    Image.fromarray(pixels).save(tmp_path / "in" / "SKU-é" / "front.jpg")
    (tmp_path / "in" / "SKU-é" / "back.jpg").write_bytes(b"not a photo\n")
    photos = discover_inputs(tmp_path / "in", exclude=tmp_path / "out")
    return runner.run_batch(photos, tmp_path / "out", runner.RunSettings(workers=1, size=128))


def test_the_streamed_manifest_has_the_bytes_of_a_whole_dump(tmp_path):
    entries = _real_entries(tmp_path)
    assert {entry.status.value for entry in entries} == {"succeeded", "failed"}
    settings = runner.RunSettings(workers=1, size=128)
    for number, chosen in enumerate(([], entries[:1], list(entries))):
        # Given none, one or several real entries
        out_dir = tmp_path / f"out-{number}"
        # When the run's manifest is written, entry by entry
        manifest = runner.write_manifest(out_dir, Path("/in/ünïcode"), settings, datetime.now(UTC), chosen)
        written = (out_dir / "manifest.json").read_bytes()
        # Then the bytes are pydantic's own dump with a newline, and they read back as the same manifest
        assert written == manifest.model_dump_json(indent=2).encode() + b"\n"
        assert RunManifest.model_validate_json(written) == manifest


def test_a_written_manifest_is_found_again_by_the_next_run(tmp_path):
    # Given a run's entries written as OUT/manifest.json
    entries = _real_entries(tmp_path)
    settings = runner.RunSettings(workers=1, size=128)
    runner.write_manifest(tmp_path / "out", tmp_path / "in", settings, datetime.now(UTC), entries)
    # When the next run loads it, Then it finds every entry, and no partial file is left behind
    assert set(load_previous_manifest(tmp_path / "out")) == {entry.source for entry in entries}
    assert not list((tmp_path / "out").glob(".*.partial"))
