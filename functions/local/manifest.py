"""The run's record: `OUT/manifest.json` (read for reuse; written as the run goes and at the end) and clean-up of
outputs it no longer claims and of writes a killed run left half-done. (`runner.write_manifest` writes it, atomically.)
"""

import re
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from functions.adapters.local.files import path_of
from schemas import ManifestEntry, PreparedImage, RunManifest

MANIFEST_NAME = "manifest.json"
# Temporary files of an atomic write (temp + rename) that a killed process never renamed: `.<name>.partial` and
# `.<name>.<random>.partial` (this package's writers), `.<name>.<8 random>` (gpu_jobs.storage, NamedTemporaryFile).
_INTERRUPTED_WRITE = re.compile(r"^\..+\.(partial|[a-z0-9_]{8})$")
_NOT_SWEPT = frozenset({".review"})  # the review store keeps its own state (SQLite journals, keys)


def relative_to_out(uri: str, out_dir: Path) -> str:
    """A `file://` URI under OUT as a path relative to OUT (what the manifest and the report use)."""
    return path_of(uri).resolve().relative_to(out_dir.resolve()).as_posix()


def manifest_outputs(prepared: PreparedImage, out_dir: Path) -> dict[str, str]:
    """The prepared files as the manifest lists them: output kind -> path relative to OUT."""
    files = prepared.files
    named = {
        "cutout": files.cutout,
        "mask": files.mask,
        "packshot": files.packshot,
        "normalised": files.normalised,
        "thumb_original": files.original_preview,
        "thumb_cutout": files.cutout_preview,
        "thumb_packshot": files.packshot_preview,
    }
    return {kind: relative_to_out(uri, out_dir) for kind, uri in named.items() if uri is not None}


def load_previous_manifest(out_dir: Path) -> dict[str, ManifestEntry]:
    """Entries of the last run into this folder, by source; an unreadable manifest just means no reuse."""
    try:
        manifest = RunManifest.model_validate_json((out_dir / MANIFEST_NAME).read_bytes())
    except (OSError, ValidationError):
        return {}
    return {entry.source: entry for entry in manifest.entries}


def remove_stale_outputs(out_dir: Path, previous: dict[str, ManifestEntry], entries: list[ManifestEntry]) -> None:
    """Delete outputs the last run wrote that this run no longer claims (e.g. after changing --format)."""
    kept = {path for entry in entries for path in entry.outputs.values()}
    root = out_dir.resolve()
    for entry in previous.values():
        for path in entry.outputs.values():
            target = (out_dir / path).resolve()
            if path not in kept and root in target.parents and target.is_file():
                target.unlink()


def relative_posix(path: Path, root: Path) -> str:
    return PurePosixPath(path.resolve().relative_to(root.resolve())).as_posix()


def remove_interrupted_writes(out_dir: Path) -> list[Path]:
    """Delete the temporary files of writes a killed run never finished; returns what was deleted.

    Outputs are written to a temporary name and renamed, so a kill leaves at most such a file beside a complete
    (or absent) output. Only this run's writers make hidden files under OUT, and `.review/` is left alone.
    """
    removed: list[Path] = []
    if not out_dir.is_dir():
        return removed
    for path in out_dir.rglob(".*"):
        relative = path.relative_to(out_dir).parts
        if relative[0] in _NOT_SWEPT or not _INTERRUPTED_WRITE.match(path.name) or not path.is_file():
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
