"""`file://` URIs confined to the folders a run was given (its input and output), written atomically."""

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse


def file_uri(path: Path) -> str:
    return path.resolve().as_uri()


def path_of(uri: str) -> Path:
    """The path a `file:///...` URI names; anything else is a ValueError naming the URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ValueError(f"expected a file:///absolute/path URI, got {uri!r}")
    return Path(unquote(parsed.path))


class FileStorage:
    """The storage port on local files. Reads and writes outside `roots` are refused (symlinks resolved first)."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = tuple(root.resolve() for root in roots)

    def _confined(self, uri: str) -> Path:
        path = path_of(uri).resolve()
        if not any(path == root or root in path.parents for root in self.roots):
            raise ValueError(f"{uri} is outside the folders this run may use")
        return path

    def read_bytes(self, uri: str) -> bytes:
        return self._confined(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._confined(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temp file and a rename: an interrupted run never leaves a half-written file a re-run would reuse.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def write_new(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write `uri` only if nothing is there (False when something is): a hard link of a finished temp file."""
        path = self._confined(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.link(temporary, path)  # atomic, and refuses an existing name: never an overwrite
            return True
        except FileExistsError:
            return False
        finally:
            Path(temporary).unlink(missing_ok=True)

    def list_uris(self, prefix_uri: str) -> list[str]:
        """Every file under the folder `prefix_uri` names (recursively, sorted), as URIs under `prefix_uri`."""
        folder = self._confined(prefix_uri)
        if not folder.is_dir():
            return []
        base = prefix_uri.rstrip("/")
        return sorted(
            f"{base}/{path.relative_to(folder).as_posix()}"
            for path in folder.rglob("*")
            if path.is_file() and not path.name.endswith(".partial")
        )
