"""The prepare stage with fakes: an in-memory storage port and a background remover that always finds the same
product. What a user notices: where the derived files land, which GPU jobs are asked for and with what, and that a
failed photo leaves nothing half-written. Also the local storage adapter, which keeps every read and write inside
the folders a run was given."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from functions.adapters.local.files import FileStorage, file_uri
from functions.errors import BackgroundRemovalError, IntakeError
from functions.stages.background import BackgroundResult
from functions.stages.brand import BrandSelection
from functions.stages.intake import IntakeLimits
from functions.stages.packshot import PackshotSettings
from functions.stages.prepare import PREVIEW_SIDE, PhotoToPrepare, PrepareTargets, prepare_image
from schemas import BrandProfile, JobKind, ProductSidecar, ResolvedBrand

IMAGE_ID = "0123456789abcdef"
SIZE = (480, 640)  # width, height: larger than a preview
PRODUCT = (120, 160, 360, 480)  # left, top, right, bottom
PROFILE = BrandProfile.model_validate(
    {"brand": "acme", "adapters": [{"name": "acme-ss27", "uri": "s3://brands/acme/ss27.safetensors", "version": "v3"}]}
)


class MemoryStorage:
    """The storage port as a dict: URI -> (bytes, content type)."""

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str]] = {}

    def read_bytes(self, uri: str) -> bytes:
        if uri not in self.blobs:
            raise FileNotFoundError(uri)
        return self.blobs[uri][0]

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.blobs[uri] = (data, content_type)


class BoxRemover:
    """A background remover that always finds the product in the same rectangle (or fails, when told to)."""

    engine = "fake-box"

    def __init__(self, confidence: float = 0.95, fail: bool = False) -> None:
        self.confidence, self.fail = confidence, fail

    def remove(self, image: Image.Image) -> BackgroundResult:
        if self.fail:
            raise BackgroundRemovalError("no_product_found", "nothing stands out from the backdrop")
        mask = Image.new("L", image.size, 0)
        mask.paste(255, PRODUCT)
        low = self.confidence < 0.5
        return BackgroundResult(mask, self.engine, self.confidence, low, notes=("soft edges",) if low else ())


def photo_bytes() -> bytes:
    pixels = np.full((SIZE[1], SIZE[0], 3), 236, np.uint8)
    left, top, right, bottom = PRODUCT
    pixels[top:bottom, left:right] = (30, 45, 110)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def photo(kinds=(JobKind.PACKSHOT,), sidecar: ProductSidecar | None = None, data: bytes | None = None):
    return PhotoToPrepare(
        data=photo_bytes() if data is None else data,
        image_id=IMAGE_ID,
        source="s3://catalog-intake/incoming/acme/SKU-1/front.png",
        filename="front.png",
        sku="SKU-1",
        publish_stem="SKU-1/front",
        content_sha256="ab" * 32,
        sidecar=sidecar,
        kinds=kinds,
    )


def targets(root: str = "s3://catalog-work/") -> PrepareTargets:
    return PrepareTargets(
        files_prefix=f"{root}prepared/{IMAGE_ID}/",
        previews_prefix=f"{root}prepared/{IMAGE_ID}/preview.",
        jobs_prefix=f"{root}gpu/outputs/{IMAGE_ID}/",
    )


def brand(profile: BrandProfile | None = None) -> BrandSelection:
    if profile is None:
        return BrandSelection(ResolvedBrand(brand="acme", note="No profile: packshot defaults."), None)
    resolved = ResolvedBrand(brand="acme", profile_uri="s3://brands/acme/profile.json", adapters={"acme-ss27": "v3"})
    return BrandSelection(resolved, profile)


def prepare(storage, to_prepare=None, selection=None, remover=None, where: PrepareTargets | None = None, **settings):
    return prepare_image(
        to_prepare or photo(),
        selection or brand(),
        remover=remover or BoxRemover(),
        packshot_settings=PackshotSettings(size=256, **settings),
        limits=IntakeLimits(),
        storage=storage,
        targets=where or targets(),
        reviewers=("buyer@acme.example",),
    )


def image(storage: MemoryStorage, uri: str) -> Image.Image:
    return Image.open(io.BytesIO(storage.read_bytes(uri)))


def test_the_derived_files_are_written_under_the_photos_prefixes_with_their_content_types():
    # Given a photo that asks only for its packshot
    storage = MemoryStorage()

    # When it is prepared
    prepared = prepare(storage).prepared

    # Then exactly the cutout, mask, packshot and three previews are written, under the photo's own prefixes
    prefix = f"s3://catalog-work/prepared/{IMAGE_ID}/"
    assert {uri: content_type for uri, (_, content_type) in storage.blobs.items()} == {
        f"{prefix}cutout.png": "image/png",
        f"{prefix}mask.png": "image/png",
        f"{prefix}packshot.jpg": "image/jpeg",
        f"{prefix}preview.original.jpg": "image/jpeg",
        f"{prefix}preview.cutout.png": "image/png",
        f"{prefix}preview.packshot.jpg": "image/jpeg",
    }
    # And the payload names each file where it was written; no normalised copy without a ghost-mannequin job
    assert prepared.files.cutout == f"{prefix}cutout.png" and prepared.files.packshot == f"{prefix}packshot.jpg"
    assert prepared.files.packshot_preview == f"{prefix}preview.packshot.jpg"
    assert prepared.files.normalised is None
    # And the cutout and mask line up with the photo; the packshot is the configured square
    assert image(storage, prepared.files.cutout).size == SIZE and image(storage, prepared.files.mask).mode == "L"
    assert image(storage, prepared.files.packshot).size == (256, 256)


def test_the_cutout_record_gives_the_products_box_and_its_share_of_the_frame():
    # Given a remover whose mask is a 240 x 320 product in a 480 x 640 photo
    storage = MemoryStorage()

    # When the photo is prepared
    cutout = prepare(storage).prepared.cutout

    # Then the record names the engine, the product's box and the quarter of the frame it covers
    assert cutout.engine == "fake-box" and cutout.confidence == 0.95 and not cutout.low_confidence
    left, top, right, bottom = PRODUCT
    assert cutout.product_box is not None
    assert (cutout.product_box.left, cutout.product_box.top) == (left, top)
    assert (cutout.product_box.right, cutout.product_box.bottom) == (right, bottom)
    assert cutout.coverage == 0.25


def test_previews_are_small_enough_for_an_email():
    # Given a photo larger than a preview, When it is prepared
    storage = MemoryStorage()
    files = prepare(storage).prepared.files
    # Then every preview fits in the preview square
    for uri in (files.original_preview, files.cutout_preview, files.packshot_preview):
        assert max(image(storage, uri).size) <= PREVIEW_SIDE


def test_a_transparent_packshot_is_written_as_png_with_a_png_preview():
    # Given the transparent preset, When the photo is prepared
    storage = MemoryStorage()
    files = prepare(storage, preset="transparent").prepared.files
    # Then the packshot and its preview are PNGs that keep the transparency
    assert files.packshot.endswith("packshot.png") and files.packshot_preview.endswith("preview.packshot.png")
    assert image(storage, files.packshot).mode == "RGBA" and image(storage, files.packshot_preview).mode == "RGBA"


def test_a_ghost_mannequin_job_needs_the_normalised_photo_and_gets_it():
    # Given a photo asking for a ghost mannequin
    storage = MemoryStorage()

    # When it is prepared
    prepared = prepare(storage, photo(kinds=(JobKind.PACKSHOT, JobKind.GHOST_MANNEQUIN))).prepared

    # Then the upright sRGB photo is written, and the ghost-mannequin job reads exactly it (and the product mask)
    assert prepared.files.normalised == f"s3://catalog-work/prepared/{IMAGE_ID}/normalised.png"
    normalised = image(storage, prepared.files.normalised)
    assert (normalised.mode, normalised.size) == ("RGB", SIZE)
    (job,) = prepared.jobs
    assert job.kind is JobKind.GHOST_MANNEQUIN
    assert job.inputs == {"image": prepared.files.normalised, "mask": prepared.files.mask}


def test_the_gpu_jobs_asked_for_are_built_with_the_brand_profile():
    # Given a photo asking for try-on and lifestyle, of a brand with a profile
    storage = MemoryStorage()
    sidecar = ProductSidecar(sku="ACME-TEE", title="Tee", jobs=(JobKind.TRY_ON, JobKind.LIFESTYLE))
    to_prepare = photo(kinds=(JobKind.PACKSHOT, JobKind.TRY_ON, JobKind.LIFESTYLE), sidecar=sidecar)

    # When it is prepared
    prepared = prepare(storage, to_prepare, brand(PROFILE)).prepared

    # Then one job per GPU kind, ids from the image id, outputs under the jobs prefix, each with the profile
    assert [(job.job_id, job.kind) for job in prepared.jobs] == [
        (f"{IMAGE_ID}-try-on", JobKind.TRY_ON),
        (f"{IMAGE_ID}-lifestyle", JobKind.LIFESTYLE),
    ]
    assert [job.output_prefix for job in prepared.jobs] == [
        f"s3://catalog-work/gpu/outputs/{IMAGE_ID}/try_on",
        f"s3://catalog-work/gpu/outputs/{IMAGE_ID}/lifestyle",
    ]
    assert all(BrandProfile.model_validate(job.params["brand_profile"]) == PROFILE for job in prepared.jobs)
    # And the sidecar's SKU names the product everywhere; the payload records the brand resolution
    assert prepared.sku == "ACME-TEE" and {job.sku for job in prepared.jobs} == {"ACME-TEE"}
    assert prepared.brand.adapters == {"acme-ss27": "v3"} and prepared.reviewers == ("buyer@acme.example",)


def test_the_same_photo_gives_the_same_bytes_and_seeds_on_both_runtimes(tmp_path):
    # Given the same photo prepared into memory (s3:// prefixes) and into a folder (file:// prefixes)
    kinds = (JobKind.PACKSHOT, JobKind.LIFESTYLE, JobKind.GHOST_MANNEQUIN)
    on_s3 = MemoryStorage()
    aws = prepare(on_s3, photo(kinds=kinds)).prepared
    local_root = file_uri(tmp_path) + "/"
    local = prepare(FileStorage([tmp_path]), photo(kinds=kinds), where=targets(local_root)).prepared

    # Then every derived file has the same bytes, whichever runtime wrote it
    for name, uri in aws.files.model_dump().items():
        local_uri = getattr(local.files, name)
        assert local_uri.startswith(local_root)
        assert (tmp_path / local_uri.removeprefix(local_root)).read_bytes() == on_s3.read_bytes(uri), name
    # And the GPU jobs get the same seeds
    assert [job.seed for job in local.jobs] == [job.seed for job in aws.jobs]


@pytest.fixture
def opencv_threads():
    """Sets OpenCV's thread count (what prepare reads as this photo's cores) for one test, then restores it."""
    import cv2

    before = cv2.getNumThreads()
    yield cv2.setNumThreads
    cv2.setNumThreads(before)


def test_one_core_or_several_give_the_same_files(opencv_threads):
    # Given the same photo (all three GPU jobs, so the normalised copy is written too)
    kinds = (JobKind.PACKSHOT, JobKind.LIFESTYLE, JobKind.GHOST_MANNEQUIN)
    written = []
    for threads in (1, 4):
        # When it is prepared with one core (steps in turn) and with several (encodings side by side)
        opencv_threads(threads)
        storage = MemoryStorage()
        prepared = prepare(storage, photo(kinds=kinds)).prepared
        written.append((storage.blobs, prepared))
    # Then the same files with the same bytes are written, and the payloads are equal
    (one_core, one_payload), (cores, payload) = written
    assert one_core == cores and len(cores) == 7
    assert one_payload == payload


def test_a_low_confidence_cutout_is_flagged_for_the_reviewer():
    # Given an engine unsure where the product ends, When the photo is prepared
    prepared = prepare(MemoryStorage(), remover=BoxRemover(confidence=0.3)).prepared
    # Then the reviewer is warned, with the engine's reason
    (flag,) = [flag for flag in prepared.checks if flag.code == "low_confidence_cutout"]
    assert "fake-box" in flag.message and "soft edges" in flag.message
    assert prepared.cutout.low_confidence and prepared.cutout.engine == "fake-box"


def test_a_failed_background_removal_names_the_photo_and_writes_nothing():
    # Given an engine that finds no product
    storage = MemoryStorage()

    # When the photo is prepared, Then the error names the photo, and nothing was written
    with pytest.raises(BackgroundRemovalError) as raised:
        prepare(storage, remover=BoxRemover(fail=True))
    assert raised.value.code == "no_product_found"
    assert "s3://catalog-intake/incoming/acme/SKU-1/front.png" in raised.value.message
    assert storage.blobs == {}


def test_a_file_that_is_not_a_photo_writes_nothing():
    # Given bytes that are not an image, When they are prepared, Then intake refuses them and nothing is written
    storage = MemoryStorage()
    with pytest.raises(IntakeError):
        prepare(storage, photo(data=b"%PDF-1.7 not a photo"))
    assert storage.blobs == {}


# ---- the local storage adapter --------------------------------------------------------------------------------------


def test_file_storage_reads_and_writes_inside_its_roots(tmp_path):
    # Given a storage confined to an output folder
    storage = FileStorage([tmp_path / "out"])
    uri = file_uri(tmp_path / "out" / "SKU-1" / "front.cutout.png")

    # When a file is written and read back, Then it is there, folders made, with no temporary file left behind
    storage.write_bytes(uri, b"png bytes", "image/png")
    assert storage.read_bytes(uri) == b"png bytes"
    assert sorted(p.name for p in (tmp_path / "out" / "SKU-1").iterdir()) == ["front.cutout.png"]
    # And a missing file reads as FileNotFoundError (what the stages treat as "not there")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(file_uri(tmp_path / "out" / "product.json"))


@pytest.mark.parametrize("outside", ["../elsewhere/x.png", "../out-sibling/x.png", "../../etc/x.png"])
def test_file_storage_refuses_paths_outside_its_roots(tmp_path, outside):
    # Given a storage confined to OUT, and a URI that climbs out of it
    root = tmp_path / "run" / "out"
    root.mkdir(parents=True)
    storage = FileStorage([root])
    uri = "file://" + str(root) + "/" + outside

    # When it is written or read, Then it is refused, and nothing appears outside
    with pytest.raises(ValueError, match="outside"):
        storage.write_bytes(uri, b"x")
    with pytest.raises(ValueError, match="outside"):
        storage.read_bytes(uri)
    assert [p for p in tmp_path.rglob("x.png")] == []


def test_file_storage_refuses_a_symlink_that_escapes_its_roots(tmp_path):
    # Given a symlink inside OUT that points at a folder outside it
    root, secret = tmp_path / "out", tmp_path / "secret"
    root.mkdir()
    secret.mkdir()
    (secret / "keys.json").write_text("{}")
    os.symlink(secret, root / "link")
    storage = FileStorage([root])

    # When a file is read or written through the link, Then both are refused and the outside folder is unchanged
    with pytest.raises(ValueError, match="outside"):
        storage.read_bytes(file_uri(root) + "/link/keys.json")
    with pytest.raises(ValueError, match="outside"):
        storage.write_bytes(file_uri(root) + "/link/new.png", b"x")
    assert sorted(p.name for p in secret.iterdir()) == ["keys.json"]


def test_file_storage_serves_several_roots_and_refuses_other_schemes(tmp_path):
    # Given a storage over an input and an output folder
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    (photos / "front.jpg").write_bytes(b"jpeg")
    storage = FileStorage([photos, out])

    # Then it reads from one and writes to the other
    assert storage.read_bytes(file_uri(photos / "front.jpg")) == b"jpeg"
    storage.write_bytes(file_uri(out / "a.png"), b"png")
    assert (out / "a.png").read_bytes() == b"png"
    # And an S3 URI or a bare path is not a file URI
    for uri in ("s3://bucket/key.png", str(out / "a.png"), "file://otherhost/x.png"):
        with pytest.raises(ValueError):
            storage.read_bytes(uri)


def test_file_uris_round_trip_names_with_spaces_and_non_ascii(tmp_path):
    # Given a file whose name a merchandiser typed, When it is written and read by its URI, Then it is the same file
    storage = FileStorage([tmp_path])
    path = tmp_path / "SKU 1" / "vêtement #2%.png"
    storage.write_bytes(file_uri(path), b"bytes")
    assert path.read_bytes() == b"bytes" and storage.read_bytes(file_uri(path)) == b"bytes"


def test_a_root_given_through_a_symlink_is_still_usable(tmp_path):
    # Given an output folder reached through a symlink (as /tmp often is), When the storage writes there
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "alias")
    storage = FileStorage([Path(tmp_path / "alias")])
    storage.write_bytes((tmp_path / "alias" / "x.png").absolute().as_uri(), b"x")
    # Then the file lands in the real folder
    assert (real / "x.png").read_bytes() == b"x"
