"""The publisher port on a folder: `OUT/approved/<sku>/...` (never overwritten), `OUT/feedback/<brand>.jsonl`
(appended), and `OUT/published.jsonl`, one line per published file with its provenance (S3 keeps it as metadata).
"""

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from functions.adapters.local.files import FileStorage, file_uri
from functions.ports import PublishStatus
from functions.stages.publish import safe_name

APPROVED_DIR = "approved"
FEEDBACK_DIR = "feedback"
PUBLISHED_LOG = "published.jsonl"


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_APPEND and one write: concurrent runs for the same brand never interleave inside a line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class FolderPublisher:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir.resolve()
        self._files = FileStorage([self.out_dir])  # its create-only write: never an overwrite, never half a file

    def _inside(self, relative: str) -> Path:
        target = (self.out_dir / relative).resolve()
        if self.out_dir not in target.parents:
            raise ValueError(f"{relative!r} is outside {self.out_dir}")
        return target

    def publish(
        self, brand: str, name: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> tuple[PublishStatus, str]:
        relative = f"{APPROVED_DIR}/{name}"
        target = self._inside(relative)
        if not self._files.write_new(file_uri(target), data, content_type):
            same = hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
            return (PublishStatus.ALREADY_PUBLISHED if same else PublishStatus.CONFLICT), relative
        line = {"path": relative, "content_type": content_type, "metadata": dict(sorted(metadata.items()))}
        _append(self.out_dir / PUBLISHED_LOG, (json.dumps(line) + "\n").encode())
        return PublishStatus.PUBLISHED, relative

    def record_feedback(self, brand: str, review_id: str, lines: bytes) -> tuple[PublishStatus, str]:
        relative = f"{FEEDBACK_DIR}/{safe_name(brand)}.jsonl"
        path = self._inside(relative)
        # A re-run of the same review brings the same lines (they name the review): record them once, as S3 does.
        if path.is_file() and lines in path.read_bytes():
            return PublishStatus.ALREADY_PUBLISHED, relative
        _append(path, lines)
        return PublishStatus.PUBLISHED, relative
