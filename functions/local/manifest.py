"""The run's record: `OUT/manifest.json` (read for reuse; written as the run goes and at the end) and clean-up of
outputs it no longer claims and of writes a killed run left half-done. (`runner.write_manifest` writes it, atomically.)

The manifest is read and written one entry at a time, so a run of 10,000 photos never holds them all in memory; its
bytes are still exactly `RunManifest.model_dump_json(indent=2)` and a newline, what every reader loads whole.
"""

import contextlib
import os
import re
import sqlite3
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pydantic import ValidationError

from functions.adapters.local.files import path_of
from functions.local.entry_spool import SPOOL_DIR, EntriesByPosition, EntrySpool, PreviousEntries, leftover_spools
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


def load_previous_manifest(out_dir: Path) -> Mapping[str, ManifestEntry]:
    """Entries of the last run into this folder, by source, kept on disk (a spool) and read one at a time; an
    unreadable manifest just means no reuse."""
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    spool = EntrySpool(out_dir)
    try:
        with path.open("rb") as file:
            head = _split_in_layout(file, lambda text: spool.put(ManifestEntry.model_validate_json(text)))
        if head is None:  # not in the layout this package writes (edited by hand, say): read whole
            spool.close()
            spool = EntrySpool(out_dir)
            for entry in RunManifest.model_validate_json(path.read_bytes()).entries:
                spool.put(entry)
        else:
            RunManifest.model_validate_json(head)  # the manifest's own fields, as a whole read would check them
    except (OSError, ValidationError):
        spool.close()
        return {}
    if not len(spool):
        spool.close()
        return {}
    return PreviousEntries(spool)


# The layout of `model_dump_json(indent=2)`: "entries" is RunManifest's last field, each entry an object opened and
# closed at four spaces. JSON strings hold no raw newline, so these lines can only be the structure itself.
_ENTRIES_OPEN = b'  "entries": [\n'
_ENTRY_OPEN = b"    {\n"
_ENTRY_CLOSE = (b"    }\n", b"    },\n")
_ENTRIES_CLOSE = (b"  ]\n", b"  ],\n")


def _split_in_layout(file: BinaryIO, on_entry: Callable[[bytes], None]) -> bytes | None:
    """Feed each entry's JSON to `on_entry` as it is read; return the manifest's JSON with `"entries": []`, or None
    when the file is not in the layout this package writes (the caller then reads it whole)."""
    head: list[bytes] = []
    in_layout = False  # "entries" opened on a line of its own (an empty list, or other JSON, is read whole)
    lines = iter(file)
    for line in lines:
        if line != _ENTRIES_OPEN:
            head.append(line)
            continue
        if in_layout:
            return None  # a second "entries": not a manifest this package wrote
        while True:
            if next(lines, None) != _ENTRY_OPEN:
                return None
            body = [b"{"]
            for line in lines:
                if line in _ENTRY_CLOSE:
                    break
                body.append(line)
            else:
                return None  # cut short
            on_entry(b"".join(body) + b"}")
            if line == _ENTRY_CLOSE[0]:
                break
        closing_line = next(lines, None)
        if closing_line not in _ENTRIES_CLOSE:
            return None
        head.append(b'  "entries": []' + closing_line[3:])
        in_layout = True
    return b"".join(head) if in_layout else None


class ManifestEntriesOnDisk(EntriesByPosition):
    """The entries of a manifest just written, read back from the file one at a time (through an open handle: a
    later run replacing OUT/manifest.json does not change them)."""

    def __init__(self, handle: int, spans: array) -> None:
        self._handle = handle
        self._spans = spans  # start, end of each entry's JSON in the file
        weakref.finalize(self, os.close, handle)

    def __len__(self) -> int:
        return len(self._spans) // 2

    def _entry_json(self, index: int) -> bytes:
        start, end = self._spans[2 * index], self._spans[2 * index + 1]
        return os.pread(self._handle, end - start, start)

    def __iter__(self) -> Iterator[ManifestEntry]:
        for index in range(len(self)):
            yield self[index]


def write_manifest_entries(head: RunManifest, texts: Iterable[str], file: BinaryIO) -> array:
    """Write `head` (its own entries are ignored) with these entries, given as `model_dump_json(indent=2)` texts:
    the bytes of the whole manifest's `model_dump_json(indent=2)` plus a newline. Returns each entry's start and end
    in the file."""
    before, empty, after = head.model_copy(update={"entries": ()}).model_dump_json(indent=2).rpartition('"entries": []')
    assert empty, "RunManifest always dumps its entries"
    spans = array("q")
    written = file.write(before.encode() + b'"entries": [')
    for number, text in enumerate(texts):
        # An entry sits two levels deep (the manifest object, its list): the same JSON, indented four more spaces.
        lines = text.encode().replace(b"\n", b"\n    ")
        written += file.write(b"\n    " if number == 0 else b",\n    ")
        spans.extend((written, written + len(lines)))
        written += file.write(lines)
    file.write((b"\n  ]" if spans else b"]") + after.encode() + b"\n")
    return spans


def remove_stale_outputs(
    out_dir: Path, previous: Mapping[str, ManifestEntry], entries: Iterable[ManifestEntry]
) -> None:
    """Delete outputs the last run wrote that this run no longer claims (e.g. after changing --format)."""
    if not previous:
        return
    root = out_dir.resolve()
    # The paths this run claims go to a private temporary database, not a set: 70,000 of them at 10,000 photos.
    with closing(sqlite3.connect("")) as kept:
        kept.execute("CREATE TABLE kept (path TEXT PRIMARY KEY)")
        kept.executemany(
            "INSERT OR IGNORE INTO kept VALUES (?)", ((path,) for entry in entries for path in entry.outputs.values())
        )
        for entry in previous.values():
            for path in entry.outputs.values():
                if kept.execute("SELECT 1 FROM kept WHERE path = ?", (path,)).fetchone():
                    continue
                target = (out_dir / path).resolve()
                if root in target.parents and target.is_file():
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
    for path in leftover_spools(out_dir):  # a killed run's scratch (entry_spool); the manifest is its record
        path.unlink(missing_ok=True)
        removed.append(path)
    with contextlib.suppress(OSError):
        (out_dir / SPOOL_DIR).rmdir()  # when empty
    for path in out_dir.rglob(".*"):
        relative = path.relative_to(out_dir).parts
        if relative[0] in _NOT_SWEPT or not _INTERRUPTED_WRITE.match(path.name) or not path.is_file():
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
