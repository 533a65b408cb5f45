"""`prepare` against moto: derived images land under the work bucket's own prefix, the original is never touched,
bad uploads end with an error the workflow can Catch that names the code and the object, the engine is the
configured one (`backdrop`, so no model file is needed), and the brand's profile from the brand store reaches
every GPU job it asks for."""

import hashlib
import io
import json

import boto3
import numpy as np
import pytest
from moto import mock_aws
from PIL import Image

from functions.adapters.aws import settings
from functions.errors import BackgroundRemovalError, CatalogError, ConfigurationError, IntakeError
from functions.handlers import prepare
from functions.local.synthetic_photos import render_product_photo
from schemas import BrandProfile, ExecutionInput, JobKind, PreparedImage

from .aws_fixtures import INTAKE, REGION, WORK, FakeContext, create_resources

KEY = "incoming/acme/SKU-1/front.jpg"
SIDECAR_KEY = "incoming/acme/SKU-1/product.json"
IMAGE_ID = "0123456789abcdef0123456789abcdef"
BRANDS = "catalog-brands"
BRANDS_URI = f"s3://{BRANDS}/brands/"
PROFILE_KEY = "brands/acme/profile.json"
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
    monkeypatch.setenv("PACKSHOT_FILL_RATIO", "0.85")
    monkeypatch.setenv("PACKSHOT_QUALITY", "92")
    monkeypatch.setenv("MAX_MEGAPIXELS", "50")
    monkeypatch.setenv("DEFAULT_JOBS", "packshot")
    monkeypatch.setenv("BRANDS_URI", BRANDS_URI)
    monkeypatch.setenv("REVIEWERS", "buyer@acme.example, ,lead@acme.example")
    with mock_aws():
        prepare.client.cache_clear()
        prepare.background_remover.cache_clear()
        create_resources(monkeypatch)
        client = boto3.client("s3", region_name=REGION)
        client.put_bucket_versioning(Bucket=INTAKE, VersioningConfiguration={"Status": "Enabled"})
        client.create_bucket(Bucket=BRANDS)
        yield client
        prepare.client.cache_clear()
        prepare.background_remover.cache_clear()
        settings.load.cache_clear()


def reload_settings(monkeypatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings.load.cache_clear()


def studio_jpeg(seed: int = 3) -> bytes:
    photo = render_product_photo("tshirt", (30, 45, 110), (236, 236, 234), size=(360, 480), seed=seed)
    buffer = io.BytesIO()
    photo.image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def upload(s3, body: bytes, key: str = KEY) -> str:
    return str(s3.put_object(Bucket=INTAKE, Key=key, Body=body)["VersionId"])


def put_sidecar(s3, sidecar: dict | bytes) -> None:
    body = sidecar if isinstance(sidecar, bytes) else json.dumps(sidecar).encode()
    s3.put_object(Bucket=INTAKE, Key=SIDECAR_KEY, Body=body)


def put_profile(s3, profile: dict | bytes) -> None:
    body = profile if isinstance(profile, bytes) else json.dumps(profile).encode()
    s3.put_object(Bucket=BRANDS, Key=PROFILE_KEY, Body=body)


def execution_input(version_id: str | None, key: str = KEY, image_id: str = IMAGE_ID) -> dict:
    """What `ingest` starts the execution with (the state machine passes it to prepare as is)."""
    return ExecutionInput(
        bucket=INTAKE,
        key=key,
        version_id=version_id,
        etag="abc",
        size=1234,
        brand="acme",
        sku="SKU-1",
        filename=key.rsplit("/", 1)[-1],
        image_id=image_id,
    ).model_dump(mode="json")


def run(event: dict) -> PreparedImage:
    response = prepare.lambda_handler(event, FakeContext())
    # What Step Functions carries on is plain JSON, and it is the workflow's PreparedImage contract.
    assert json.loads(json.dumps(response)) == response
    return PreparedImage.model_validate(response)


def read(s3, uri: str) -> tuple[bytes, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    obj = s3.get_object(Bucket=bucket, Key=key)
    return obj["Body"].read(), obj["ContentType"]


def image_at(s3, uri: str) -> Image.Image:
    return Image.open(io.BytesIO(read(s3, uri)[0]))


def prepared_keys(s3) -> list[str]:
    return [obj["Key"] for obj in s3.list_objects_v2(Bucket=WORK, Prefix="prepared/").get("Contents", [])]


def test_derived_images_are_written_under_the_image_prefix_with_their_content_types(s3):
    # Given a studio photo uploaded to the intake bucket, with no GPU job asked for
    version = upload(s3, studio_jpeg())

    # When prepare runs on that object version
    result = run(execution_input(version))

    # Then the cutout, the mask, the packshot and the reviewer's previews are in the work bucket under
    # prepared/<image id>/, each with the content type a browser needs
    prefix = f"prepared/{IMAGE_ID}/"
    expected = {
        "cutout": (f"{prefix}cutout.png", "image/png", "RGBA"),
        "mask": (f"{prefix}mask.png", "image/png", "L"),
        "packshot": (f"{prefix}packshot.jpg", "image/jpeg", "RGB"),
        "original_preview": (f"{prefix}preview.original.jpg", "image/jpeg", "RGB"),
        "cutout_preview": (f"{prefix}preview.cutout.png", "image/png", "RGBA"),
        "packshot_preview": (f"{prefix}preview.packshot.jpg", "image/jpeg", "RGB"),
    }
    assert sorted(prepared_keys(s3)) == sorted(key for key, _, _ in expected.values())
    files = result.files.model_dump()
    for name, (key, content_type, mode) in expected.items():
        assert files[name] == f"s3://{WORK}/{key}"
        body, stored_type = read(s3, files[name])
        assert stored_type == content_type
        assert Image.open(io.BytesIO(body)).mode == mode
    # And no normalised copy is written when no ghost-mannequin job needs it
    assert result.files.normalised is None
    # And the cutout and mask line up with the photo pixel for pixel; the packshot is the configured square
    assert image_at(s3, result.files.cutout).size == (360, 480)
    assert image_at(s3, result.files.mask).size == (360, 480)
    assert image_at(s3, result.files.packshot).size == (PACKSHOT_SIZE, PACKSHOT_SIZE)
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
    assert first.source == f"s3://{INTAKE}/{KEY}"
    assert first.content_sha256 == hashlib.sha256(original).hexdigest() == second.content_sha256
    assert first == second


def test_the_uploaded_version_is_read_not_a_newer_one(s3):
    # Given an upload, then a different photo uploaded to the same key
    first_bytes, newer_bytes = studio_jpeg(seed=3), studio_jpeg(seed=4)
    first_version = upload(s3, first_bytes)
    upload(s3, newer_bytes)

    # When prepare runs for the first upload's execution
    result = run(execution_input(first_version))

    # Then it prepared the first upload, not whatever the key holds now
    assert result.content_sha256 == hashlib.sha256(first_bytes).hexdigest()
    assert result.content_sha256 != hashlib.sha256(newer_bytes).hexdigest()


def test_the_packshot_background_is_exactly_white(s3):
    # Given a photo on a light grey studio sweep (not white)
    version = upload(s3, studio_jpeg())

    # When prepare makes the packshot
    result = run(execution_input(version))

    # Then every pixel of the margin around the product is pure white (255, 255, 255), not the sweep's grey
    packshot = np.asarray(image_at(s3, result.files.packshot).convert("RGB"))
    band = np.ones(packshot.shape[:2], bool)
    band[PACKSHOT_MARGIN:-PACKSHOT_MARGIN, PACKSHOT_MARGIN:-PACKSHOT_MARGIN] = False
    assert (packshot[band] == 255).all()
    # And the product itself is there (the packshot is not blank)
    assert packshot[PACKSHOT_SIZE // 2, PACKSHOT_SIZE // 2].max() < 200


def test_the_configured_packshot_format_is_used(s3, monkeypatch):
    # Given PACKSHOT_FORMAT=png
    reload_settings(monkeypatch, PACKSHOT_FORMAT="png")
    version = upload(s3, studio_jpeg())

    # When prepare runs, Then the packshot is a PNG, stored as one
    result = run(execution_input(version))
    assert result.files.packshot == f"s3://{WORK}/prepared/{IMAGE_ID}/packshot.png"
    assert read(s3, result.files.packshot)[1] == "image/png"
    assert image_at(s3, result.files.packshot).format == "PNG"


def test_the_configured_background_engine_is_used(s3):
    # Given BACKGROUND_SPEC=backdrop (the weight-free keyer) and no model directory at all
    version = upload(s3, studio_jpeg())

    # When prepare runs
    result = run(execution_input(version))

    # Then the backdrop keyer made the cutout, and says so in the result the review and feedback carry
    assert result.cutout.engine == "backdrop"
    # And the reviewers are the stack's comma-separated list (the brand has no profile naming its own)
    assert result.reviewers == ("buyer@acme.example", "lead@acme.example")


def test_an_unknown_background_engine_stops_before_anything_is_written(s3, monkeypatch):
    # Given a BACKGROUND_SPEC nobody can build
    reload_settings(monkeypatch, BACKGROUND_SPEC="magic-eraser")
    version = upload(s3, studio_jpeg())

    # When prepare runs, Then it fails on the configuration, naming it, and writes nothing
    with pytest.raises(ConfigurationError, match="magic-eraser"):
        run(execution_input(version))
    assert prepared_keys(s3) == []


def test_a_reviewer_that_is_not_an_address_stops_before_anything_is_written(s3, monkeypatch):
    # Given the stack's REVIEWERS with one entry that is not an e-mail address
    reload_settings(monkeypatch, REVIEWERS="buyer@acme.example, lead at acme")
    version = upload(s3, studio_jpeg())

    # When prepare runs, Then it fails on the setting, naming it and the bad entry, before any work is written
    with pytest.raises(ValueError, match=r"reviewers[\s\S]*'lead at acme' is not an e-mail address"):
        run(execution_input(version))
    assert prepared_keys(s3) == []


def test_a_photo_over_the_pixel_cap_is_refused(s3, monkeypatch):
    # Given MAX_MEGAPIXELS below the photo's 360 x 480 pixels
    reload_settings(monkeypatch, MAX_MEGAPIXELS="0.1")
    version = upload(s3, studio_jpeg())

    # When prepare runs, Then the photo is refused as too large, naming the object, and nothing is written
    with pytest.raises(IntakeError) as raised:
        run(execution_input(version))
    assert f"s3://{INTAKE}/{KEY}" in str(raised.value)
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
    put_sidecar(s3, {"jobs": ["teleport"]})

    # When prepare runs
    with pytest.raises(IntakeError) as raised:
        run(execution_input(version))

    # Then the error is invalid_sidecar and says which file and which field are wrong; nothing is written
    assert raised.value.code == "invalid_sidecar"
    assert str(raised.value).startswith("invalid_sidecar: ")
    assert f"s3://{INTAKE}/{SIDECAR_KEY}" in str(raised.value)
    assert "jobs" in str(raised.value)
    assert prepared_keys(s3) == []


def test_a_sidecar_that_is_not_json_is_an_invalid_sidecar(s3):
    # Given a product.json that is not JSON, When prepare runs, Then the image fails as invalid_sidecar
    version = upload(s3, studio_jpeg())
    put_sidecar(s3, b"{not json")
    with pytest.raises(IntakeError) as raised:
        run(execution_input(version))
    assert raised.value.code == "invalid_sidecar"
    assert prepared_keys(s3) == []


def test_without_a_sidecar_the_stacks_default_jobs_are_made(s3, monkeypatch):
    # Given no product.json: with DEFAULT_JOBS=packshot only the packshot is made, no GPU job is asked for
    version = upload(s3, studio_jpeg())
    packshot_only = run(execution_input(version))
    assert packshot_only.jobs == () and packshot_only.sku == "SKU-1"
    assert packshot_only.publish_stem == "SKU-1/front"

    # When the stack's default asks for a lifestyle scene too
    reload_settings(monkeypatch, DEFAULT_JOBS="packshot,lifestyle")
    with_default = run(execution_input(version))

    # Then the photo gets exactly that GPU job
    assert [job.kind for job in with_default.jobs] == [JobKind.LIFESTYLE]


def test_the_sidecar_asks_for_gpu_jobs_on_the_prepared_images(s3):
    # Given a sidecar overriding the SKU and asking for a packshot, lifestyle (twice) and try-on
    version = upload(s3, studio_jpeg())
    sidecar = {"sku": "ACME-TEE-01", "title": "Tee", "jobs": ["packshot", "lifestyle", "try_on", "lifestyle"]}
    put_sidecar(s3, sidecar)

    # When prepare runs
    result = run(execution_input(version))

    # Then one GPU job per kind (the packshot is made here), each reading this image's prepared cutout
    assert result.sku == "ACME-TEE-01" and result.publish_stem == "ACME-TEE-01/front"
    jobs = {job.kind.value: job for job in result.jobs}
    assert sorted(jobs) == ["lifestyle", "try_on"]
    assert jobs["lifestyle"].inputs == {"cutout": result.files.cutout}
    assert jobs["try_on"].inputs == {"garment": result.files.cutout}
    assert jobs["lifestyle"].params == {"product": {"title": "Tee"}}
    assert all(job.sku == "ACME-TEE-01" and job.brand == "acme" for job in result.jobs)
    # And each has its own id (the image id and its kind) and output prefix under the work bucket
    assert jobs["lifestyle"].job_id == f"{IMAGE_ID}-lifestyle"
    assert jobs["try_on"].job_id == f"{IMAGE_ID}-try-on"
    assert jobs["lifestyle"].output_prefix == f"s3://{WORK}/gpu/outputs/{IMAGE_ID}/lifestyle"
    assert jobs["try_on"].output_prefix == f"s3://{WORK}/gpu/outputs/{IMAGE_ID}/try_on"


def test_a_photo_in_a_sub_folder_of_the_sku_reads_the_sku_folders_sidecar(s3):
    # Given a photo under incoming/acme/SKU-1/angles/ and the SKU's sidecar one level up, as `catalog run` reads it
    key = "incoming/acme/SKU-1/angles/back.jpg"
    version = upload(s3, studio_jpeg(), key=key)
    put_sidecar(s3, {"title": "Tee", "jobs": ["lifestyle"]})

    # When prepare runs
    result = run(execution_input(version, key=key))

    # Then the sidecar's jobs apply, and the photo is named as the local runtime names it
    assert [job.kind.value for job in result.jobs] == ["lifestyle"]
    assert result.publish_stem == "SKU-1/angles__back"


def test_a_ghost_mannequin_job_gets_the_normalised_photo(s3):
    # Given a sidecar asking for a ghost mannequin
    version = upload(s3, studio_jpeg())
    put_sidecar(s3, {"jobs": ["ghost_mannequin"]})

    # When prepare runs
    result = run(execution_input(version))

    # Then the upright sRGB photo is written beside the cutout, and it is what the ghost-mannequin job reads
    assert result.files.normalised == f"s3://{WORK}/prepared/{IMAGE_ID}/normalised.png"
    normalised = image_at(s3, result.files.normalised)
    assert (normalised.mode, normalised.size) == ("RGB", (360, 480))
    (job,) = result.jobs
    assert job.kind is JobKind.GHOST_MANNEQUIN
    assert job.inputs == {"image": result.files.normalised, "mask": result.files.mask}


def test_the_same_photo_gets_the_same_seeds_under_another_key(s3):
    # Given the same photo uploaded under two keys (two object versions, two image ids)
    photo = studio_jpeg()
    put_sidecar(s3, {"jobs": ["lifestyle", "try_on"]})
    first = run(execution_input(upload(s3, photo)))
    other_key = "incoming/acme/SKU-1/front-copy.jpg"
    second = run(execution_input(upload(s3, photo, other_key), other_key, image_id="fedcba9876543210" * 2))

    # Then each job kind gets the same seed for both (so the same images come out), and the kinds differ
    seeds = [{job.kind: job.seed for job in result.jobs} for result in (first, second)]
    assert seeds[0] == seeds[1]
    assert len(set(seeds[0].values())) == 2
    # And the job ids stay apart
    assert {job.job_id for job in first.jobs}.isdisjoint(job.job_id for job in second.jobs)


def brand_profile() -> dict:
    """The brand's profile as the brand/ML owner stores it, with paths relative to its own folder."""
    return {
        "brand": "acme",
        "display_name": "ACME",
        "adapters": [
            {"name": "acme-ss27", "uri": "adapters/ss27.safetensors", "version": "v3", "weight": 0.8},
            {"name": "acme-studio", "uri": f"s3://{BRANDS}/shared/studio.safetensors"},
        ],
        "model_library": [{"model_id": "m1", "uri": "models/m1.jpg", "body_regions": ["tops"]}],
        "prompt_templates": {"tops": "{title} in {colour}, studio"},
        "reviewers": ["brand-lead@acme.example"],
    }


def test_the_brand_profile_from_the_brand_store_reaches_every_gpu_job(s3):
    # Given acme's profile in the brand store, and a sidecar asking for every GPU job
    put_profile(s3, brand_profile())
    version = upload(s3, studio_jpeg())
    put_sidecar(s3, {"jobs": ["ghost_mannequin", "try_on", "lifestyle"]})

    # When prepare runs
    result = run(execution_input(version))

    # Then the image records which profile applies and its adapters' versions, with no note
    assert result.brand.brand == "acme"
    assert result.brand.profile_uri == f"{BRANDS_URI}acme/profile.json"
    assert result.brand.adapters == {"acme-ss27": "v3", "acme-studio": "unversioned"}
    assert result.brand.note is None
    # And every GPU job carries the same resolved profile, its relative paths now full URIs in the brand's folder
    assert sorted(job.kind.value for job in result.jobs) == ["ghost_mannequin", "lifestyle", "try_on"]
    profiles = [BrandProfile.model_validate(job.params["brand_profile"]) for job in result.jobs]
    assert all(profile == profiles[0] for profile in profiles)
    profile = profiles[0]
    assert [adapter.uri for adapter in profile.adapters] == [
        f"s3://{BRANDS}/brands/acme/adapters/ss27.safetensors",
        f"s3://{BRANDS}/shared/studio.safetensors",
    ]
    assert profile.adapters[0].weight == 0.8
    assert profile.model_library[0].uri == f"s3://{BRANDS}/brands/acme/models/m1.jpg"
    # And the brand's own reviewers replace the stack's default list
    assert result.reviewers == ("brand-lead@acme.example",)


def test_a_malformed_brand_profile_fails_the_image_naming_the_field(s3):
    # Given a profile whose adapter weight is out of range
    profile = brand_profile()
    profile["adapters"][0]["weight"] = 7
    put_profile(s3, profile)
    version = upload(s3, studio_jpeg())

    # When prepare runs
    with pytest.raises(IntakeError) as raised:
        run(execution_input(version))

    # Then the image fails as invalid_brand_profile, naming the photo, the profile and the field; nothing is written
    cause = str(raised.value)
    assert raised.value.code == "invalid_brand_profile" and cause.startswith("invalid_brand_profile: ")
    assert f"s3://{INTAKE}/{KEY}" in cause
    assert f"{BRANDS_URI}acme/profile.json" in cause
    assert "adapters.0.weight" in cause
    assert prepared_keys(s3) == []


def test_a_profile_that_climbs_out_of_its_folder_is_refused(s3):
    # Given a profile whose adapter path leaves the brand's folder
    profile = brand_profile()
    profile["adapters"][0]["uri"] = "../other-brand/adapters/theirs.safetensors"
    put_profile(s3, profile)
    version = upload(s3, studio_jpeg())

    # When prepare runs, Then the image fails, naming the field, before anything is written
    with pytest.raises(IntakeError) as raised:
        run(execution_input(version))
    assert raised.value.code == "invalid_brand_profile" and "adapters.0.uri" in str(raised.value)
    assert prepared_keys(s3) == []


def test_without_a_profile_the_image_says_so_and_the_packshot_is_still_made(s3):
    # Given no profile for acme in the brand store
    version = upload(s3, studio_jpeg())

    # When prepare runs
    result = run(execution_input(version))

    # Then the packshot is made with the stack's settings, and the image carries a note saying why
    assert image_at(s3, result.files.packshot).size == (PACKSHOT_SIZE, PACKSHOT_SIZE)
    assert result.brand.profile_uri is None and result.brand.adapters == {}
    assert result.brand.note is not None and "acme" in result.brand.note and "packshot defaults" in result.brand.note


def test_without_a_profile_gpu_jobs_run_without_brand_adapters(s3):
    # Given no profile, and a sidecar asking for a lifestyle scene
    version = upload(s3, studio_jpeg())
    put_sidecar(s3, {"jobs": ["lifestyle"]})

    # When prepare runs, Then the job is still asked for, without any brand profile
    (job,) = run(execution_input(version)).jobs
    assert job.kind is JobKind.LIFESTYLE and "brand_profile" not in job.params
