"""Read and write job files by URI: `file:///abs/path` and `s3://bucket/key`, nothing else.

    from gpu_jobs import storage

    image = storage.read_image("file:///data/sku1/cutout.png")           # PIL image, loaded
    uri = storage.write_png(storage.join(request.output_prefix, "lifestyle_0.png"), image)
    local = storage.fetch_to_cache("s3://brand-models/acme/summer.safetensors", cache_dir)

S3 goes through boto3 (credentials and endpoint from the environment, e.g. `AWS_ENDPOINT_URL`).
Errors are `StorageError` (bad scheme) or the usual `FileNotFoundError` for a missing object.
"""

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from PIL import Image

# Larger inputs than this are refused before decoding (24 MP photos are ~100 MB as RGBA).
MAX_IMAGE_PIXELS = 64_000_000


class StorageError(ValueError):
    """A URI this module cannot or will not serve."""


def _split(uri: str) -> tuple[str, str, str]:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file URIs must be file:///absolute/path, got {uri!r}")
        path = unquote(parsed.path)
        if not path.startswith("/"):
            raise StorageError(f"file URIs must name an absolute path, got {uri!r}")
        return "file", "", path
    if parsed.scheme == "s3":
        key = parsed.path.lstrip("/")
        if not parsed.netloc or not key:
            raise StorageError(f"s3 URIs must be s3://bucket/key, got {uri!r}")
        return "s3", parsed.netloc, key
    raise StorageError(f"only file:// and s3:// URIs are supported, got {uri!r}")


def _s3() -> Any:
    import boto3  # imported on use: file:// jobs never need it

    return boto3.client("s3")


def read_bytes(uri: str) -> bytes:
    """The object's bytes. Missing objects raise FileNotFoundError for both schemes."""
    scheme, bucket, key = _split(uri)
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
    scheme, bucket, key = _split(uri)
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
    """A local path for `uri`: file:// is used in place, s3:// is downloaded once into `cache_dir`."""
    scheme, bucket, key = _split(uri)
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
