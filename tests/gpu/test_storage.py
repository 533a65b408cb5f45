"""Job storage by URI: file:// and s3:// only, atomic local writes, no escaping the output prefix."""

from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from PIL import Image

from gpu_jobs import storage


def test_file_round_trip_and_png(tmp_path: Path) -> None:
    uri = storage.join((tmp_path / "out").as_uri(), "a/b.bin")
    assert storage.write_bytes(uri, b"hello") == uri
    assert storage.read_bytes(uri) == b"hello"
    image = Image.new("RGB", (5, 4), (1, 2, 3))
    png_uri = storage.write_png(storage.join((tmp_path / "out").as_uri(), "x.png"), image)
    assert storage.read_image(png_uri).getpixel((0, 0)) == (1, 2, 3)
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left behind


@pytest.mark.parametrize("uri", ["http://example.com/a.png", "file://host/a.png", "s3://bucket", "/plain/path"])
def test_other_uris_are_refused(uri: str) -> None:
    with pytest.raises(storage.StorageError):
        storage.read_bytes(uri)


def test_join_refuses_names_that_climb_out(tmp_path: Path) -> None:
    with pytest.raises(storage.StorageError):
        storage.join(tmp_path.as_uri(), "../escape.png")
    assert storage.join("s3://bucket/prefix/", "a.png") == "s3://bucket/prefix/a.png"


def test_missing_and_truncated_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        storage.read_bytes((tmp_path / "nope").as_uri())
    Image.new("RGB", (64, 64)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(OSError):
        storage.read_image((tmp_path / "cut.png").as_uri())


def test_s3_read_write_and_cache(tmp_path: Path) -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="jobs")
        uri = storage.write_bytes("s3://jobs/out/r.json", b"{}", content_type="application/json")
        assert storage.read_bytes(uri) == b"{}"
        with pytest.raises(FileNotFoundError):
            storage.read_bytes("s3://jobs/missing")
        local = storage.fetch_to_cache(uri, tmp_path / "cache")
        assert local.read_bytes() == b"{}" and local.is_relative_to(tmp_path / "cache")
        with pytest.raises(FileNotFoundError):
            storage.fetch_to_cache("s3://jobs/missing.safetensors", tmp_path / "cache")
