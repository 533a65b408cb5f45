"""A run's manifest entries kept on disk while it goes, read back one at a time: the runner's memory stays flat.

A photo's entry (its prepared payload, checks, jobs, review items) is 20-25 KB in memory; 10,000 of them held in lists
were most of a big run's RSS. The runner puts each finished entry in an `EntrySpool` instead, and every later pass
(GPU jobs, checks, stale outputs, manifest, report) reads it back entry by entry.

A spool is a SQLite file under `OUT/.catalog-spool/`: scratch, never what a run resumes from (that is the manifest,
checkpointed as the run goes). It is deleted when closed or garbage-collected; a killed run's is swept by the next run
(`manifest.remove_interrupted_writes`).
"""

import contextlib
import os
import sqlite3
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import overload

from schemas import ManifestEntry

SPOOL_DIR = ".catalog-spool"
_BATCH = 64  # rows fetched per query when reading in order
_COMMIT_EVERY = 256  # puts per transaction: one per put costs more than the put
_LIVE: set[Path] = set()  # this process's open spools: the sweep at a run's start leaves them alone


def leftover_spools(out_dir: Path) -> list[Path]:
    """Spool files under OUT that no open spool of this process owns: a killed run's."""
    folder = out_dir / SPOOL_DIR
    if not folder.is_dir():
        return []
    return [path for path in folder.iterdir() if path.is_file() and path.resolve() not in _LIVE]


def _discard(db: sqlite3.Connection, path: Path) -> None:
    db.close()
    _LIVE.discard(path)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # the last spool of the run takes the folder with it


class EntriesByPosition(Sequence[ManifestEntry]):
    """Manifest entries read from disk one at a time, by position; a subclass says where an entry's JSON lies."""

    def _entry_json(self, index: int) -> str | bytes:
        """The JSON of the entry at `index`, 0 <= index < len(self)."""
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> ManifestEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[ManifestEntry]: ...

    def __getitem__(self, index: int | slice) -> ManifestEntry | list[ManifestEntry]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        size = len(self)
        if not -size <= index < size:
            raise IndexError(index)
        return ManifestEntry.model_validate_json(self._entry_json(index % size))


class EntrySpool(EntriesByPosition):
    """Manifest entries by source, in `position` order, each stored as its `model_dump_json(indent=2)` text.

    The stored text is what the manifest is made of, so writing the manifest reads text and dumps nothing. Putting an
    entry for a source already there replaces it and keeps its position (a checkpoint's order).
    """

    def __init__(self, out_dir: Path) -> None:
        folder = out_dir / SPOOL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="entries.", suffix=".sqlite3", dir=folder)
        os.close(handle)
        self.out_dir = out_dir
        self.path = Path(name).resolve()
        # Scratch: no journal, no fsync. check_same_thread=False: the finalizer may run on any thread.
        self._db = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        self._db.executescript(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -1024;"
            "CREATE TABLE entries (source TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE, entry TEXT NOT NULL);"
        )
        self._count = 0
        self._next = 0  # the position a new source gets when none is given
        self._unsaved = 0
        self._db.execute("BEGIN")  # writes go in batches (`_COMMIT_EVERY`); this connection reads its own at once
        _LIVE.add(self.path)
        self._finalizer = weakref.finalize(self, _discard, self._db, self.path)

    def sibling(self) -> "EntrySpool":
        """A new, empty spool beside this one (a pass that changes entries writes its result there)."""
        return EntrySpool(self.out_dir)

    def close(self) -> None:
        """Delete the file now (it is also deleted when the spool is garbage-collected)."""
        self._finalizer()

    # -- writing ----------------------------------------------------------------------------------------------------

    def put(self, entry: ManifestEntry, position: int | None = None) -> None:
        self.put_text(entry.source, entry.model_dump_json(indent=2), position)

    def put_text(self, source: str, text: str, position: int | None = None) -> None:
        """`text` is `entry.model_dump_json(indent=2)` of the entry for `source`."""
        if position is None:
            position = self._next
        try:
            self._db.execute("INSERT INTO entries (source, position, entry) VALUES (?, ?, ?)", (source, position, text))
            self._count += 1
            self._next = max(self._next, position + 1)
        except sqlite3.IntegrityError:
            if not self._db.execute("UPDATE entries SET entry = ? WHERE source = ?", (text, source)).rowcount:
                raise  # the position is another source's: a caller's mistake
        self._unsaved += 1
        if self._unsaved >= _COMMIT_EVERY:
            self.flush()

    def flush(self) -> None:
        """Commit what was put (other connections see it; this one always does)."""
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        self._unsaved = 0

    # -- reading ----------------------------------------------------------------------------------------------------

    def get(self, source: str) -> ManifestEntry | None:
        row = self._db.execute("SELECT entry FROM entries WHERE source = ?", (source,)).fetchone()
        return None if row is None else ManifestEntry.model_validate_json(row[0])

    def texts(self) -> Iterator[str]:
        """Each entry's stored text, in order."""
        for _, _, text in self._rows():
            yield text

    def items_text(self) -> Iterator[tuple[str, str]]:
        """Each source with its entry's stored text, in order."""
        for _, source, text in self._rows():
            yield source, text

    def sources(self) -> Iterator[str]:
        for _, source, _ in self._rows():
            yield source

    def _rows(self) -> Iterator[tuple[int, str, str]]:
        # Keyset pages, not one open cursor: the caller may put entries (into this spool or another) as it reads.
        after = -1
        while True:
            rows = self._db.execute(
                "SELECT position, source, entry FROM entries WHERE position > ? ORDER BY position LIMIT ?",
                (after, _BATCH),
            ).fetchall()
            yield from rows
            if len(rows) < _BATCH:
                return
            after = rows[-1][0]

    def __iter__(self) -> Iterator[ManifestEntry]:
        for text in self.texts():
            yield ManifestEntry.model_validate_json(text)

    def __len__(self) -> int:
        return self._count

    def _entry_json(self, index: int) -> str:
        row = self._db.execute("SELECT entry FROM entries ORDER BY position LIMIT 1 OFFSET ?", (index,)).fetchone()
        return str(row[0])


class PreviousEntries(Mapping[str, ManifestEntry]):
    """The last run's entries by source (what `load_previous_manifest` returns), in its manifest's order, on disk."""

    def __init__(self, spool: EntrySpool) -> None:
        self.spool = spool

    def __getitem__(self, source: str) -> ManifestEntry:
        entry = self.spool.get(source)
        if entry is None:
            raise KeyError(source)
        return entry

    def __iter__(self) -> Iterator[str]:
        return self.spool.sources()

    def __len__(self) -> int:
        return len(self.spool)

    def close(self) -> None:
        self.spool.close()


def close_spooled(*collections: object) -> None:
    """Delete the spools behind these collections now; plain lists and dicts are left as they are."""
    for collection in collections:
        if isinstance(collection, EntrySpool | PreviousEntries):
            collection.close()
