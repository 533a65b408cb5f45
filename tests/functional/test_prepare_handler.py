"""`prepare` against moto: derived images land under the work bucket's own prefix, the original is never touched,
bad uploads end with an error the workflow can Catch that names the code and the object, and the engine is the
configured one (`backdrop`, so no model file is needed)."""

import hashlib
import io
import json

import boto3
import numpy as np
import pytest
from moto import mock_aws
from PIL import Image

from functions.errors import BackgroundRemovalError, CatalogError, ConfigurationError, IntakeError
from functions.handlers import prepare
from functions.synthetic_photos import render_product_photo

from .aws_fixtures import INTAKE, REGION, WORK, FakeContext, create_resources

KEY = "incoming/acme/SKU-1/front.jpg"
IMAGE_ID = "0123456789abcdef0123456789abcdef"
PACKSHOT_SIZE = 256
# The packshot must fill 85% of the canvas; the product lands in the middle, so this band is pure backdrop.
PACKSHOT_MARGIN = PACKSHOT_SIZE * 5 // 100


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CatalogImages")
    monkeypatch.setenv("BACKGROUND_SPEC", "backdrop")
    monkeypatch.setenv("CATALOG_MODELS_DIR", "/nonexistent/models")  # proves no model file is read
    monkeypatch.setenv("PACKSHOT_SIZE", str(PACKSHOT_SIZE))
    monkeypatch.setenv("REVIEWERS", "buyer@acme.example, ,lead@acme.example")
    with mock_aws():
        prepare.client.cache_clear()
        prepare.background_remover.cache_clear()
        create_resources(monkeypatch)
        client = boto3.client("s3", region_name=REGION)
        client.put_bucket_versioning(Bucket=INTAKE, VersioningConfiguration={"Status": "Enabled"})
        yield client
        prepare.client.cache_clear()
        prepare.background_remover.cache_clear()
        prepare.settings.load.cache_clear()


def studio_jpeg(seed: int = 3) -> bytes:
    photo = render_product_photo("tshirt", (30, 45, 110), (236, 236, 234), size=(360, 480), seed=seed)
    buffer = io.BytesIO()
    photo.image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def upload(s3, body: bytes, key: str = KEY) -> str:
    return str(s3.put_object(Bucket=INTAKE, Key=key, Body=body)["VersionId"])


def execution_input(version_id: str | None, key: str = KEY) -> dict:
    """What `ingest` starts the execution with (the state machine passes it to prepare as is)."""
    return {
        "bucket": INTAKE,
        "key": key,
        "version_id": version_id,
        "etag": "abc",
        "size": 1234,
        "brand": "acme",
        "sku": "SKU-1",
        "filename": key.rsplit("/", 1)[-1],
        "image_id": IMAGE_ID,
    }


def run(event: dict) -> dict:
    return prepare.lambda_handler(event, FakeContext())


def read(s3, uri: str) -> tuple[bytes, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    obj = s3.get_object(Bucket=bucket, Key=key)
    return obj["Body"].read(), obj["ContentType"]


def prepared_keys(s3) -> list[str]:
    return [obj["Key"] for obj in s3.list_objects_v2(Bucket=WORK, Prefix="prepared/").get("Contents", [])]


def test_derived_images_are_written_under_the_image_prefix_with_their_content_types(s3):
    # Given a studio photo uploaded to the intake bucket
    version = upload(s3, studio_jpeg())

    # When prepare runs on that object version
    result = run(execution_input(version))

    # Then the cutout, the mask and the packshot (and the normalised photo) are in the work bucket under
    # prepared/<image id>/, each with the content type a browser needs
    expected = {
        "normalised": (f"prepared/{IMAGE_ID}/normalised.png", "image/png", "RGB"),
        "cutout": (f"prepared/{IMAGE_ID}/cutout.png", "image/png", "RGBA"),
        "mask": (f"prepared/{IMAGE_ID}/mask.png", "image/png", "L"),
        "packshot": (f"prepared/{IMAGE_ID}/packshot.jpg", "image/jpeg", "RGB"),
    }
    assert sorted(prepared_keys(s3)) == sorted(key for key, _, _ in expected.values())
    for name, (key, content_type, mode) in expected.items():
        assert result[name] == f"s3://{WORK}/{key}"
        body, stored_type = read(s3, result[name])
        assert stored_type == content_type
        assert Image.open(io.BytesIO(body)).mode == mode
    # And the cutout and mask line up with the photo pixel for pixel; the packshot is the configured square
    assert Image.open(io.BytesIO(read(s3, result["cutout"])[0])).size == (360, 480)
    assert Image.open(io.BytesIO(read(s3, result["mask"])[0])).size == (360, 480)
    assert Image.open(io.BytesIO(read(s3, result["packshot"])[0])).size == (PACKSHOT_SIZE, PACKSHOT_SIZE)
    # And nothing was written back into the intake bucket
    assert [v["Key"] for v in s3.list_object_versions(Bucket=INTAKE).get("Versions", [])] == [KEY]


def test_the_original_is_byte_identical_and_keeps_its_only_version(s3):
    # Given an uploaded original and its version
    original = studio_jpeg()
    version = upload(s3, original)
    before = s3.list_object_versions(Bucket=INTAKE)["Versions"]

    # When prepare runs (twice, as a Lambda retry would)
    first = run(execution_input(version))
    second = run(execution_input(version))

    # Then the original is the same bytes, the same single version, unmodified
    after = s3.list_object_versions(Bucket=INTAKE)["Versions"]
    assert [(v["VersionId"], v["ETag"], v["LastModified"]) for v in after] == [
        (v["VersionId"], v["ETag"], v["LastModified"]) for v in before
    ]
    assert s3.get_object(Bucket=INTAKE, Key=KEY)["Body"].read() == original
    # And the result points at it and fingerprints exactly those bytes, the same on a re-run
    assert first["original"] == f"s3://{INTAKE}/{KEY}"
    assert first["content_sha256"] == hashlib.sha256(original).hexdigest() == second["content_sha256"]


def test_the_uploaded_version_is_read_not_a_newer_one(s3):
    # Given an upload, then a different photo uploaded to the same key
    first_bytes, newer_bytes = studio_jpeg(seed=3), studio_jpeg(seed=4)
    first_version = upload(s3, first_bytes)
    upload(s3, newer_bytes)

    # When prepare runs for the first upload's execution
    result = run(execution_input(first_version))

    # Then it prepared the first upload, not whatever the key holds now
    assert result["content_sha256"] == hashlib.sha256(first_bytes).hexdigest()
    assert result["content_sha256"] != hashlib.sha256(newer_bytes).hexdigest()


def test_the_packshot_background_is_exactly_white(s3):
    # Given a photo on a light grey studio sweep (not white)
    version = upload(s3, studio_jpeg())

    # When prepare makes the packshot
    result = run(execution_input(version))

    # Then every pixel of the margin around the product is pure white (255, 255, 255), not the sweep's grey
    packshot = np.asarray(Image.open(io.BytesIO(read(s3, result["packshot"])[0])).convert("RGB"))
    band = np.ones(packshot.shape[:2], bool)
    band[PACKSHOT_MARGIN:-PACKSHOT_MARGIN, PACKSHOT_MARGIN:-PACKSHOT_MARGIN] = False
    assert (packshot[band] == 255).all()
    # And the product itself is there (the packshot is not blank)
    assert packshot[PACKSHOT_SIZE // 2, PACKSHOT_SIZE // 2].max() < 200


def test_the_configured_background_engine_is_used(s3, monkeypatch):
    # Given BACKGROUND_SPEC=backdrop (the weight-free keyer) and no model directory at all
    version = upload(s3, studio_jpeg())

    # When prepare runs
    result = run(execution_input(version))

    # Then the backdrop keyer made the cutout, and says so in the result the review and feedback carry
    assert result["engine"] == "backdrop"
    # And the result is plain JSON with the reviewers from the stack's comma-separated list
    assert json.loads(json.dumps(result)) == result
    assert result["reviewers"] == ["buyer@acme.example", "lead@acme.example"]


def test_an_unknown_background_engine_stops_before_anything_is_written(s3, monkeypatch):
    # Given a BACKGROUND_SPEC nobody can build
    monkeypatch.setenv("BACKGROUND_SPEC", "magic-eraser")
    prepare.settings.load.cache_clear()
    version = upload(s3, studio_jpeg())

    # When prepare runs, Then it fails on the configuration, naming it, and writes nothing
    with pytest.raises(ConfigurationError, match="magic-eraser"):
        run(execution_input(version))
    assert prepared_keys(s3) == []


def _svg() -> bytes:
    return b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("zero-byte", lambda: b"", "empty_file"),
        ("svg", _svg, "unsupported_format"),
        ("truncated jpeg", lambda: studio_jpeg()[:6000], "truncated_image"),
    ],
)
def test_a_bad_upload_fails_with_a_catchable_error_naming_the_code_and_the_key(s3, name, body, code):
    # Given a bad upload in the intake bucket
    version = upload(s3, body())

    # When prepare runs
    with pytest.raises(CatalogError) as raised:
        run(execution_input(version))

    # Then Step Functions sees error "IntakeError" (what Lambda reports: the class name) and a cause (str of the
    # error) that carries the stable code and the object's key
    assert type(raised.value).__name__ == "IntakeError"
    assert raised.value.code == code
    cause = str(raised.value)
    assert cause.startswith(f"{code}: ")
    assert f"s3://{INTAKE}/{KEY}" in cause
    # And nothing half-made was written
    assert prepared_keys(s3) == []


def test_a_photo_with_no_product_fails_as_background_removal(s3):
    # Given a plain backdrop with nothing on it
    buffer = io.BytesIO()
    Image.new("RGB", (360, 480), (236, 236, 234)).save(buffer, "JPEG", quality=92)
    version = upload(s3, buffer.getvalue())

    # When prepare runs, Then the workflow gets a BackgroundRemovalError naming the key, and nothing is written
    with pytest.raises(BackgroundRemovalError) as raised:
        run(execution_input(version))
    assert f"s3://{INTAKE}/{KEY}" in str(raised.value)
    assert str(raised.value).startswith(f"{raised.value.code}: ")
    assert prepared_keys(s3) == []


def test_an_invalid_sidecar_fails_naming_the_sidecar_and_the_field(s3):
    # Given a photo whose product.json asks for a job that does not exist
    version = upload(s3, studio_jpeg())
    s3.put_object(Bucket=INTAKE, Key="incoming/acme/SKU-1/product.json", Body=b'{"jobs": ["teleport"]}')

    # When prepare runs
    with pytest.raises(IntakeError) as raised:
        run(execution_input(version))

    # Then the error is bad_sidecar and says which file and which field are wrong; nothing is written
    assert raised.value.code == "bad_sidecar"
    assert f"s3://{INTAKE}/incoming/acme/SKU-1/product.json" in str(raised.value)
    assert "jobs" in str(raised.value)
    assert prepared_keys(s3) == []


def test_a_sidecar_that_is_not_json_is_a_bad_sidecar(s3):
    version = upload(s3, studio_jpeg())
    s3.put_object(Bucket=INTAKE, Key="incoming/acme/SKU-1/product.json", Body=b"{not json")
    with pytest.raises(IntakeError) as raised:
        run(execution_input(version))
    assert raised.value.code == "bad_sidecar"


def test_without_a_sidecar_only_the_packshot_is_made(s3):
    version = upload(s3, studio_jpeg())
    result = run(execution_input(version))
    assert result["jobs"] == []
    assert result["sku"] == "SKU-1"


def test_the_sidecar_asks_for_gpu_jobs_on_the_prepared_images(s3, monkeypatch):
    # Given a sidecar overriding the SKU and asking for a packshot, lifestyle (twice) and try-on
    monkeypatch.setenv("BRAND_PROFILE_URI", f"s3://{WORK}/brands/acme.json")
    prepare.settings.load.cache_clear()
    version = upload(s3, studio_jpeg())
    sidecar = {"sku": "ACME-TEE-01", "title": "Tee", "jobs": ["packshot", "lifestyle", "try_on", "lifestyle"]}
    s3.put_object(Bucket=INTAKE, Key="incoming/acme/SKU-1/product.json", Body=json.dumps(sidecar).encode())

    # When prepare runs
    result = run(execution_input(version))

    # Then one GPU job per kind (the packshot is made here), each reading this image's prepared cutout
    assert result["sku"] == "ACME-TEE-01"
    jobs = {job["kind"]: job for job in result["jobs"]}
    assert sorted(jobs) == ["lifestyle", "try_on"]
    assert jobs["lifestyle"]["inputs"] == {"cutout": result["cutout"], "brand_profile": f"s3://{WORK}/brands/acme.json"}
    assert jobs["try_on"]["inputs"]["garment"] == result["cutout"]
    assert jobs["lifestyle"]["params"] == {"product": {"title": "Tee"}}
    assert all(job["sku"] == "ACME-TEE-01" for job in result["jobs"])
    assert jobs["lifestyle"]["output_prefix"] == f"s3://{WORK}/gpu/outputs/{IMAGE_ID}/lifestyle"
