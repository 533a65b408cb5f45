"""The automatic-checks stage: honest outputs pass quietly, each broken promise gets its flag naming what changed.

Images are built in memory and served through a dict-backed `read_image`, as the real ports serve files or S3
objects: PNG bytes decoded on read, a missing URI raises FileNotFoundError.
"""

import io
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from functions.stages.checks import check_generated_output
from schemas import JobKind, JobOutput, QualityFlag, Severity

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZE = 16  # 16x16 images: big enough for a product, a garment and a background, small enough to read in a test
TINY_NOTE = "tiny random models: the image is noise by design"


class FakeStorage:
    """URIs -> encoded bytes; `read_image` decodes like the file:// and s3:// ports and counts the reads."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.reads: Counter[str] = Counter()

    def put(self, name: str, pixels: np.ndarray | bytes, mode: str | None = None) -> str:
        uri = f"s3://bucket/out/{name}"
        if isinstance(pixels, bytes):
            self.files[uri] = pixels
        else:
            buffer = io.BytesIO()
            Image.fromarray(pixels, mode).save(buffer, format="PNG")
            self.files[uri] = buffer.getvalue()
        return uri

    def read_image(self, uri: str) -> Image.Image:
        self.reads[uri] += 1
        if uri not in self.files:
            raise FileNotFoundError(f"no such object: {uri}")
        return Image.open(io.BytesIO(self.files[uri]))


def warnings_of(flags: tuple[QualityFlag, ...]) -> list[QualityFlag]:
    return [flag for flag in flags if flag.severity == Severity.WARNING]


def only_flag(flags: tuple[QualityFlag, ...], code: str) -> QualityFlag:
    warnings = warnings_of(flags)
    assert [flag.code for flag in warnings] == [code], flags
    return warnings[0]


def noise(seed: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(SIZE, SIZE, channels), dtype=np.uint8)


def square_mask(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[top:bottom, left:right] = 255
    return mask


# ---- lifestyle -------------------------------------------------------------------------------------------------------
@pytest.fixture
def lifestyle() -> tuple[FakeStorage, np.ndarray, JobOutput]:
    """A product placed on a canvas (placed.png), its kept core (keep_mask.png), and an honest painted scene."""
    storage = FakeStorage()
    placed = noise(1, channels=4)
    placed[..., 3] = square_mask(3, 3, 13, 13)
    keep = square_mask(4, 4, 12, 12)
    scene = noise(2)
    scene[keep == 255] = placed[..., :3][keep == 255]
    details = {
        "mode": "inpaint",
        "keep_mask_uri": storage.put("keep_mask.png", keep, "L"),
        "placed_uri": storage.put("placed.png", placed, "RGBA"),
        "note": TINY_NOTE,
    }
    return storage, scene, JobOutput(uri=storage.put("lifestyle_0.png", scene), seed=7, details=details)


def test_an_honest_lifestyle_output_has_only_the_test_model_note(lifestyle: Any) -> None:
    # Given a scene whose kept product pixels equal placed.png exactly (the rest is painted)
    storage, _, output = lifestyle
    # When it is checked
    flags = check_generated_output(JobKind.LIFESTYLE, output, storage.read_image)
    # Then no warning, only the tiny-model note as INFO
    assert [(flag.code, flag.severity, flag.message) for flag in flags] == [("test_model", Severity.INFO, TINY_NOTE)]


def test_a_single_changed_product_pixel_is_flagged_with_where_and_how_much(lifestyle: Any) -> None:
    # Given an output with one kept product pixel off by 40 levels in one channel
    storage, scene, output = lifestyle
    scene = scene.copy()
    scene[6, 5, 1] = int(scene[6, 5, 1]) + (40 if scene[6, 5, 1] < 128 else -40)
    storage.put("lifestyle_0.png", scene)
    # When it is checked
    flag = only_flag(check_generated_output(JobKind.LIFESTYLE, output, storage.read_image), "product_pixels_changed")
    # Then the flag says how many of the kept pixels changed, by how much, where, and against which file
    assert "1 of the 64 kept product pixels (1.6%) differs from placed.png" in flag.message
    assert "by up to 40 levels" in flag.message and "x=5, y=6" in flag.message


def test_pixels_outside_the_kept_product_may_change(lifestyle: Any) -> None:
    # Given an output repainted in the edge band (inside the product, outside the kept core) and the background
    storage, scene, output = lifestyle
    scene = scene.copy()
    scene[3, 3] = scene[0, 0] = (1, 2, 3)
    storage.put("lifestyle_0.png", scene)
    # When it is checked, then nothing is flagged: only the kept core is promised
    assert warnings_of(check_generated_output(JobKind.LIFESTYLE, output, storage.read_image)) == []


@pytest.mark.parametrize(("shift", "tolerance", "flagged"), [(2, 2, False), (3, 2, True), (1, 0, True), (5, 5, False)])
def test_the_tolerance_is_per_channel_levels(lifestyle: Any, shift: int, tolerance: int, flagged: bool) -> None:
    # Given a kept product pixel shifted by `shift` levels in every channel
    storage, scene, output = lifestyle
    scene = scene.copy()
    scene[8, 8] = np.where(scene[8, 8] > 127, scene[8, 8] - shift, scene[8, 8] + shift)
    storage.put("lifestyle_0.png", scene)
    # When it is checked with `tolerance`
    flags = check_generated_output(JobKind.LIFESTYLE, output, storage.read_image, tolerance=tolerance)
    # Then it is flagged only when the shift exceeds the tolerance
    assert [flag.code for flag in warnings_of(flags)] == (["product_pixels_changed"] if flagged else [])


def test_a_missing_keep_mask_detail_says_the_check_did_not_run(lifestyle: Any) -> None:
    # Given an inpaint output whose details lack keep_mask_uri
    storage, _, output = lifestyle
    details = {key: value for key, value in output.details.items() if key != "keep_mask_uri"}
    # When it is checked
    flags = check_generated_output(
        JobKind.LIFESTYLE, output.model_copy(update={"details": details}), storage.read_image
    )
    # Then a warning names the missing detail (a check that cannot run must say so), and the note still shows
    flag = only_flag(flags, "invariant_not_checked")
    assert "product-pixel check did not run" in flag.message and "keep_mask_uri" in flag.message
    assert "test_model" in [flag.code for flag in flags]


def test_an_unreadable_reference_says_which_file(lifestyle: Any) -> None:
    # Given placed.png that is not an image
    storage, _, output = lifestyle
    storage.put("placed.png", b"not a png at all")
    # When it is checked, then the check says it did not run and names the file and the detail
    flag = only_flag(check_generated_output(JobKind.LIFESTYLE, output, storage.read_image), "invariant_not_checked")
    assert "placed.png (placed_uri) cannot be read" in flag.message


def test_a_size_mismatch_is_a_flag_not_an_exception(lifestyle: Any) -> None:
    # Given an output one pixel narrower than placed.png and the keep mask
    storage, scene, output = lifestyle
    storage.put("lifestyle_0.png", np.ascontiguousarray(scene[:, :-1]))
    # When it is checked
    flag = only_flag(check_generated_output(JobKind.LIFESTYLE, output, storage.read_image), "product_pixels_changed")
    # Then the flag names both sizes
    assert "lifestyle_0.png is 15x16" in flag.message and "placed.png is 16x16" in flag.message


def test_img2img_and_text2img_scenes_have_no_product_pixels_to_check() -> None:
    # Given a text2img lifestyle output (no product placed, so no keep mask)
    storage = FakeStorage()
    output = JobOutput(uri=storage.put("lifestyle_0.png", noise(3)), details={"mode": "text2img"})
    # When it is checked, then nothing is flagged
    assert check_generated_output(JobKind.LIFESTYLE, output, storage.read_image) == ()


def test_each_uri_is_decoded_once_per_call(lifestyle: Any) -> None:
    # Given an honest lifestyle output
    storage, _, output = lifestyle
    # When it is checked
    check_generated_output(JobKind.LIFESTYLE, output, storage.read_image)
    # Then the output, placed.png and the keep mask were each read exactly once
    assert sorted(storage.reads.values()) == [1, 1, 1]


# ---- try-on ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def try_on() -> tuple[FakeStorage, np.ndarray, JobOutput]:
    """A model photo, the agnostic mask (the clothing to replace), and an output repainted inside it only."""
    storage = FakeStorage()
    model = noise(4)
    agnostic = square_mask(5, 4, 11, 12)
    dressed = model.copy()
    dressed[agnostic == 255] = (200, 30, 30)
    details = {
        "model_uri": storage.put("default_model_default-a.png", model),
        "agnostic_mask_uri": storage.put("try_on_0_agnostic_mask.png", agnostic, "L"),
    }
    return storage, dressed, JobOutput(uri=storage.put("try_on_0_0.png", dressed), seed=1, details=details)


def test_an_honest_try_on_output_is_not_flagged(try_on: Any) -> None:
    # Given a model photo repainted only inside the agnostic mask
    storage, _, output = try_on
    # When it is checked, then nothing is flagged (no note: not a tiny model)
    assert check_generated_output(JobKind.TRY_ON, output, storage.read_image) == ()


def test_a_changed_model_pixel_outside_the_garment_area_is_flagged(try_on: Any) -> None:
    # Given an output whose model photo changed at one pixel of the face (outside the agnostic mask)
    storage, dressed, output = try_on
    dressed = dressed.copy()
    dressed[1, 2] = 255 - dressed[1, 2]
    storage.put("try_on_0_0.png", dressed)
    # When it is checked
    flag = only_flag(check_generated_output(JobKind.TRY_ON, output, storage.read_image), "model_photo_changed")
    # Then the flag names the model photo, the count and the place
    assert "1 of the 208 pixels" in flag.message and "default_model_default-a.png" in flag.message
    assert "x=2, y=1" in flag.message


def test_a_missing_model_photo_names_the_file(try_on: Any) -> None:
    # Given details pointing at a model photo that no longer exists
    storage, _, output = try_on
    del storage.files[output.details["model_uri"]]
    # When it is checked, then no exception escapes: the check says it did not run and names the file
    flag = only_flag(check_generated_output(JobKind.TRY_ON, output, storage.read_image), "invariant_not_checked")
    assert "default_model_default-a.png (model_uri) cannot be read" in flag.message
    assert "FileNotFoundError" in flag.message


def test_a_try_on_without_its_mask_detail_says_so(try_on: Any) -> None:
    storage, _, output = try_on
    # Given details with neither the agnostic mask nor the model photo
    bare = output.model_copy(update={"details": {}})
    # When it is checked, then both missing details are named
    flag = only_flag(check_generated_output(JobKind.TRY_ON, bare, storage.read_image), "invariant_not_checked")
    assert "agnostic_mask_uri and model_uri" in flag.message


# ---- ghost mannequin -------------------------------------------------------------------------------------------------
BACKDROP, SHIRT = (240, 240, 238), (200, 60, 60)


def ghost_case(background: str) -> tuple[FakeStorage, np.ndarray, JobOutput]:
    """A garment photo, its garment and fill masks, and the output compose_ghost would make from them."""
    storage = FakeStorage()
    photo = np.full((SIZE, SIZE, 3), BACKDROP, np.uint8)
    photo[4:14, 3:13] = SHIRT
    photo[6:10, 6:10] = np.random.default_rng(5).integers(0, 256, size=(4, 4, 3))  # some texture on the garment
    garment = square_mask(4, 3, 14, 13)
    garment[4:7, 6:10] = 0  # the neckline: the mannequin shows through it...
    fill = square_mask(4, 6, 7, 10)  # ...and is the filled region
    painted = np.random.default_rng(6).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    is_garment, is_fill = garment == 255, fill == 255
    if background == "white":
        out = np.full((SIZE, SIZE, 3), 255, np.uint8)
        out[is_garment], out[is_fill] = photo[is_garment], painted[is_fill]
        value, mode = [255, 255, 255], "RGB"
    else:
        out = np.zeros((SIZE, SIZE, 4), np.uint8)
        out[is_garment, :3], out[is_fill, :3] = photo[is_garment], painted[is_fill]
        out[is_garment | is_fill, 3] = 255
        value, mode = [0, 0, 0, 0], "RGBA"
    details = {
        "background": background,
        "input_uri": storage.put("front.png", photo),
        "fill_mask_uri": storage.put("ghost_mannequin_fill_mask.png", fill, "L"),
        "garment_mask_uri": storage.put("ghost_mannequin_garment_mask.png", garment, "L"),
        "background_value": value,
    }
    return storage, out, JobOutput(uri=storage.put("ghost_mannequin_0.png", out, mode), details=details)


def check_ghost(output: JobOutput, storage: FakeStorage) -> tuple[QualityFlag, ...]:
    return check_generated_output(JobKind.GHOST_MANNEQUIN, output, storage.read_image)


@pytest.mark.parametrize("background", ["white", "transparent"])
def test_an_honest_ghost_mannequin_output_is_not_flagged(background: str) -> None:
    # Given the garment as photographed, a painted neckline, and exact background everywhere else
    storage, _, output = ghost_case(background)
    # When it is checked, then nothing is flagged
    assert check_ghost(output, storage) == ()


@pytest.mark.parametrize("background", ["white", "transparent"])
def test_a_stray_pixel_outside_the_fill_region_is_flagged(background: str) -> None:
    # Given an output with one leftover backdrop-coloured pixel where the mannequin's stand was
    storage, out, output = ghost_case(background)
    out = out.copy()
    out[15, 8] = (*BACKDROP, 255)[: out.shape[2]]
    storage.put("ghost_mannequin_0.png", out, "RGB" if background == "white" else "RGBA")
    # When it is checked
    flag = only_flag(
        check_generated_output(JobKind.GHOST_MANNEQUIN, output, storage.read_image), "ghost_pixels_changed"
    )
    # Then the flag says one background pixel is not exactly the background, and where
    assert f"1 background pixel is not exactly {background}" in flag.message and "x=8, y=15" in flag.message


def test_a_changed_garment_pixel_is_flagged_against_the_input_photo() -> None:
    # Given an output whose garment lost a pixel to white (a hole in the garment)
    storage, out, output = ghost_case("white")
    out = out.copy()
    out[12, 4] = 255
    storage.put("ghost_mannequin_0.png", out)
    # When it is checked
    flag = only_flag(
        check_generated_output(JobKind.GHOST_MANNEQUIN, output, storage.read_image), "ghost_pixels_changed"
    )
    # Then the garment pixel is reported against the input photo
    assert "1 garment pixel differs from front.png" in flag.message and "by up to 195 levels" in flag.message


def test_a_soft_blend_at_the_garment_edge_is_flagged_because_the_recipe_composes_hard_edges() -> None:
    # Given an output with a half garment, half white pixel just outside the garment mask (a feathered seam)
    storage, out, output = ghost_case("white")
    out = out.copy()
    out[14, 8] = (np.array(SHIRT) + 255) // 2
    storage.put("ghost_mannequin_0.png", out)
    # When it is checked, then it is flagged: compose_ghost's masks are hard, so a blend is a change
    only_flag(check_generated_output(JobKind.GHOST_MANNEQUIN, output, storage.read_image), "ghost_pixels_changed")


def test_the_fill_region_may_hold_anything() -> None:
    # Given an output repainted differently inside the fill region
    storage, out, output = ghost_case("transparent")
    out = out.copy()
    out[5, 7] = (1, 2, 3, 255)
    storage.put("ghost_mannequin_0.png", out, "RGBA")
    # When it is checked, then nothing is flagged
    assert check_ghost(output, storage) == ()


def test_a_transparent_input_is_compared_as_the_recipe_saw_it_flattened_on_white() -> None:
    # Given an RGBA input photo whose backdrop is transparent, and an output made from it flattened on white
    storage, out, output = ghost_case("white")
    photo = np.asarray(Image.open(io.BytesIO(storage.files[output.details["input_uri"]])).convert("RGBA")).copy()
    photo[..., 3] = 255
    photo[0:2, :, :] = (7, 7, 7, 0)  # transparent rows: garbage RGB under alpha 0, white once flattened
    photo[8, 8, 3] = 128  # a half-transparent garment pixel: flattened, it is a blend with white
    storage.put("front.png", photo, "RGBA")
    out = out.copy()
    flat = Image.new("RGBA", (SIZE, SIZE), (255, 255, 255, 255))
    flat.alpha_composite(Image.fromarray(photo, "RGBA"))
    out[8, 8] = np.asarray(flat.convert("RGB"))[8, 8]
    storage.put("ghost_mannequin_0.png", out)
    # When it is checked, then nothing is flagged
    assert check_ghost(output, storage) == ()


def test_a_transparent_output_read_as_rgb_is_not_transparent() -> None:
    # Given a transparent-background job whose written output lost its alpha (saved as RGB)
    storage, out, output = ghost_case("transparent")
    storage.put("ghost_mannequin_0.png", np.ascontiguousarray(out[..., :3]))
    # When it is checked, then its black background is not "transparent"
    flag = only_flag(
        check_generated_output(JobKind.GHOST_MANNEQUIN, output, storage.read_image), "ghost_pixels_changed"
    )
    assert "background pixels are not exactly transparent" in flag.message


def test_a_ghost_output_with_a_different_size_is_flagged() -> None:
    storage, out, output = ghost_case("white")
    # Given an output one row shorter than the masks
    storage.put("ghost_mannequin_0.png", np.ascontiguousarray(out[:-1]))
    # When it is checked, then the flag names the sizes
    flag = only_flag(
        check_generated_output(JobKind.GHOST_MANNEQUIN, output, storage.read_image), "ghost_pixels_changed"
    )
    assert "ghost_mannequin_0.png is 16x15" in flag.message and "ghost_mannequin_fill_mask.png is 16x16" in flag.message


@pytest.mark.parametrize(("detail", "value"), [("fill_mask_uri", None), ("background_value", [255, 255])])
def test_a_ghost_output_without_what_its_check_needs_says_so(detail: str, value: Any) -> None:
    # Given details missing the fill mask, or with a malformed background value
    storage, _, output = ghost_case("white")
    details = {**output.details, detail: value}
    # When it is checked, then the check says it did not run and names the detail
    flags = check_generated_output(
        JobKind.GHOST_MANNEQUIN, output.model_copy(update={"details": details}), storage.read_image
    )
    assert detail in only_flag(flags, "invariant_not_checked").message


# ---- every output ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [JobKind.LIFESTYLE, JobKind.TRY_ON, JobKind.GHOST_MANNEQUIN, JobKind.PACKSHOT])
@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n truncated", None])
def test_an_unreadable_output_is_flagged_with_its_file_name_and_reason(kind: JobKind, content: bytes | None) -> None:
    # Given an output that is corrupt, or missing altogether, with the tiny-model note
    storage = FakeStorage()
    uri = storage.put("output_3.png", content) if content is not None else "file:///data/out/output_3.png"
    output = JobOutput(uri=uri, details={"note": TINY_NOTE})
    # When it is checked
    flags = check_generated_output(kind, output, storage.read_image)
    # Then one warning names the file and why, no invariant check is attempted, and the note still shows
    flag = only_flag(flags, "unreadable_output")
    assert "output_3.png cannot be read" in flag.message
    assert ("FileNotFoundError" if content is None else "Error") in flag.message
    assert [flag.code for flag in flags] == ["unreadable_output", "test_model"]


def test_a_packshot_has_no_recipe_invariant_to_check() -> None:
    storage = FakeStorage()
    output = JobOutput(uri=storage.put("packshot.png", noise(9)))
    assert check_generated_output(JobKind.PACKSHOT, output, storage.read_image) == ()


def test_the_module_imports_no_ml_library() -> None:
    # Given a fresh interpreter, when only the checks stage is imported, then no torch/diffusers/rembg is loaded
    code = (
        "import functions.stages.checks, sys; "
        "assert not any(m in sys.modules for m in ('torch','diffusers','rembg','onnxruntime'))"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
