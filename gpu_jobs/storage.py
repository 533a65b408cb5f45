"""Read and write job files by URI: `file:///abs/path` and `s3://bucket/key`, nothing else, and only in scope.

    from gpu_jobs import storage

    scope = storage.StorageScope.of(roots=["/data"], buckets=["catalog-work"])
    with storage.confined(scope):                                          # this thread, this job
        image = storage.read_image("file:///data/sku1/cutout.png")       # PIL image, loaded
        uri = storage.write_png(storage.join(request.output_prefix, "lifestyle_0.png"), image)
        local = storage.fetch_to_cache("s3://catalog-work/acme/summer.safetensors", cache_dir)

Every read and write of a job goes through here, and each checks the URI against the scope installed for the
calling thread (a context variable: the server runs each job on its own thread, so jobs cannot widen each
other's scope). A `file://` path is resolved first (symlinks, `..`) and must then lie under one of the roots; an
`s3://` URI must name one of the buckets. No scope installed means nothing is readable or writable (fail closed).
What the runner itself was configured with (its LoRA cache folder) is not a job's URI and is not checked.

S3 goes through boto3 (credentials and endpoint from the environment, e.g. `AWS_ENDPOINT_URL`).
Errors are `StorageError` (bad scheme), `UriRefusedError` (outside the scope; never says anything of the
file) or the usual `FileNotFoundError` for a missing object.
"""

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from PIL import Image

# Larger inputs than this are refused before decoding (24 MP photos are ~100 MB as RGBA).
MAX_IMAGE_PIXELS = 64_000_000
# S3's bucket naming rules, loosely: what a configured bucket must look like.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class StorageError(ValueError):
    """A URI this module cannot or will not serve."""


class UriRefusedError(StorageError):
    """A URI outside the roots and buckets of the current scope. The message names the URI, never its contents."""


@dataclass(frozen=True)
class StorageScope:
    """Where a job may read and write: folders (resolved, absolute) and S3 buckets. Empty: nowhere."""

    roots: tuple[Path, ...] = ()
    buckets: frozenset[str] = frozenset()

    @classmethod
    def of(cls, roots: Iterable[str | Path] = (), buckets: Iterable[str] = ()) -> "StorageScope":
        """Roots are resolved now (so a root that is itself a symlink means its target); bucket names are checked."""
        resolved: list[Path] = []
        for root in roots:
            path = Path(root).expanduser().resolve()
            if path not in resolved:
                resolved.append(path)
        names = frozenset(bucket.strip() for bucket in buckets if bucket.strip())
        for name in names:
            if not _BUCKET_NAME.match(name):
                raise StorageError(f"not an S3 bucket name: {name!r}")
        return cls(roots=tuple(resolved), buckets=names)

    def allows_path(self, path: Path) -> bool:
        """`path` must already be resolved."""
        return any(path == root or path.is_relative_to(root) for root in self.roots)

    def allows_bucket(self, bucket: str) -> bool:
        return bucket in self.buckets

    def describe(self) -> str:
        roots = ", ".join(str(root) for root in self.roots) or "none"
        buckets = ", ".join(sorted(self.buckets)) or "none"
        return f"data roots: {roots}; buckets: {buckets}"


_scope: ContextVar[StorageScope | None] = ContextVar("gpu_jobs_storage_scope", default=None)


@contextmanager
def confined(scope: StorageScope) -> Iterator[StorageScope]:
    """Install `scope` for the calling thread (context) until the block ends."""
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def current_scope() -> StorageScope | None:
    """The scope installed for the calling thread; None when none is (then nothing is allowed)."""
    return _scope.get()


def _split(uri: str) -> tuple[str, str, str]:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file URIs must be file:///absolute/path, got {uri!r}")
        path = unquote(parsed.path)
        if not path.startswith("/"):
            raise StorageError(f"file URIs must name an absolute path, got {uri!r}")
        if "\x00" in path:
            raise StorageError(f"file URIs may not contain NUL bytes, got {uri!r}")
        return "file", "", path
    if parsed.scheme == "s3":
        key = parsed.path.lstrip("/")
        if not parsed.netloc or not key:
            raise StorageError(f"s3 URIs must be s3://bucket/key, got {uri!r}")
        return "s3", parsed.netloc, key
    raise StorageError(f"only file:// and s3:// URIs are supported, got {uri!r}")


def _refused(uri: str, scope: StorageScope | None) -> UriRefusedError:
    if scope is None or (not scope.roots and not scope.buckets):
        return UriRefusedError(f"{uri} is refused: this worker was given no data roots or buckets to use")
    where = "data roots" if uri.startswith("file:") else "buckets"
    return UriRefusedError(f"{uri} is refused: it is outside the {where} this worker may use")


def _checked(uri: str) -> tuple[str, str, str]:
    """`_split`, then the scope check; a file path comes back resolved (symlinks and '..' followed)."""
    scheme, bucket, key = _split(uri)
    scope = _scope.get()
    if scheme == "file":
        try:
            resolved = Path(key).resolve()
        except (OSError, RuntimeError) as error:  # a symlink loop
            raise _refused(uri, scope) from error
        if scope is None or not scope.allows_path(resolved):
            raise _refused(uri, scope)
        return scheme, bucket, str(resolved)
    if scope is None or not scope.allows_bucket(bucket):
        raise _refused(uri, scope)
    return scheme, bucket, key


def check(uri: str) -> None:
    """Raise StorageError / UriRefusedError unless the current scope lets a job read or write `uri`."""
    _checked(uri)


def _s3() -> Any:
    import boto3  # imported on use: file:// jobs never need it

    return boto3.client("s3")


def read_bytes(uri: str) -> bytes:
    """The object's bytes. Missing objects raise FileNotFoundError for both schemes."""
    scheme, bucket, key = _checked(uri)
    if scheme == "file":
        return Path(key).read_bytes()
    client = _s3()
    try:
        data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data
    except client.exceptions.NoSuchKey as error:
        raise FileNotFoundError(f"no such object: {uri}") from error


def write_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream") -> str:
    """Write `data` to `uri` (file writes are atomic: temp file + rename) and return the URI."""
    scheme, bucket, key = _checked(uri)
    if scheme == "file":
        path = Path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
        return uri
    _s3().put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    return uri


def join(prefix_uri: str, name: str) -> str:
    """`prefix/name` with exactly one slash; `name` may not climb out of the prefix."""
    if name.startswith("/") or ".." in Path(name).parts:
        raise StorageError(f"output names must stay under the prefix, got {name!r}")
    _split(prefix_uri)
    return f"{prefix_uri.rstrip('/')}/{name}"


def read_image(uri: str) -> Image.Image:
    """Decode an image fully (so a truncated file fails here, not later) with a pixel cap."""
    data = read_bytes(uri)
    with Image.open(io.BytesIO(data)) as probe:
        width, height = probe.size
        if width * height > MAX_IMAGE_PIXELS:
            raise StorageError(f"{uri} is {width}x{height}, above the {MAX_IMAGE_PIXELS} pixel limit")
        probe.load()
        return probe.copy()


def write_png(uri: str, image: Image.Image) -> str:
    """Encode `image` as PNG (no metadata) and write it; returns the URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=4)
    return write_bytes(uri, buffer.getvalue(), content_type="image/png")


def fetch_to_cache(uri: str, cache_dir: Path) -> Path:
    """A local path for `uri`: file:// is used in place (resolved), s3:// is downloaded once into `cache_dir`.

    `uri` is checked against the scope; `cache_dir` is the runner's own (configured) folder and is not.
    """
    scheme, bucket, key = _checked(uri)
    if scheme == "file":
        path = Path(key)
        if not path.exists():
            raise FileNotFoundError(f"no such file: {uri}")
        return path
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = cache_dir / digest / Path(key).name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle:
            try:
                _s3().download_fileobj(bucket, key, handle)
            except Exception as error:
                Path(handle.name).unlink(missing_ok=True)
                if "404" in str(error) or "Not Found" in str(error):
                    raise FileNotFoundError(f"no such object: {uri}") from error
                raise
        os.replace(handle.name, target)
    return target
