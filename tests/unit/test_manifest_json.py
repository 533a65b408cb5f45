"""`OUT/manifest.json` is written one entry at a time (flat memory on big batches) with the same bytes pydantic's
whole dump gives, so every reader of the manifest sees no difference."""

import io
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from functions.local import runner
from functions.local.discovery import discover_inputs
from functions.local.manifest import load_previous_manifest
from schemas import RunManifest


def _manifest(entries) -> RunManifest:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    settings = runner.RunSettings(workers=1, size=128)
    return RunManifest(
        tool_version="0",
        started_at=now,
        finished_at=now,
        input_root="/in/ünïcode",
        options=settings.run_options(),
        entries=tuple(entries),
    )


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
    for chosen in ([], entries[:1], entries):
        # Given a manifest of none, one or several real entries
        manifest = _manifest(chosen)
        # When it is written entry by entry
        streamed = io.BytesIO()
        runner.write_manifest_json(manifest, streamed)
        # Then the bytes are pydantic's own dump with a newline, and they read back as the same manifest
        assert streamed.getvalue() == manifest.model_dump_json(indent=2).encode() + b"\n"
        assert RunManifest.model_validate_json(streamed.getvalue()) == manifest


def test_a_written_manifest_is_found_again_by_the_next_run(tmp_path):
    # Given a run's entries written as OUT/manifest.json
    entries = _real_entries(tmp_path)
    settings = runner.RunSettings(workers=1, size=128)
    runner.write_manifest(tmp_path / "out", tmp_path / "in", settings, datetime.now(UTC), entries)
    # When the next run loads it, Then it finds every entry, and no partial file is left behind
    assert set(load_previous_manifest(tmp_path / "out")) == {entry.source for entry in entries}
    assert not list((tmp_path / "out").glob(".*.partial"))
