"""The default try-on model library, for brands that have not supplied photos of their own models.

These are not photographs: each "model" is a figure drawn procedurally (flat tones, no antialiasing) on a
studio backdrop, the same pixels every time for the same id and size. They exist so that try-on can run end to
end without a brand library (tests, `--models tiny`, a first look); a brand that sells with try-on supplies real
model photos in `BrandProfile.model_library`. Each body part is drawn in its own tone (`FIGURE_TONES`, keyed by
the human-parsing label names of `segmentation.DEFAULT_HUMAN_PARSING_LABELS`), which lets the tiny parser in
`tiny_segmenters` label the figure by colour.
"""

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from schemas import GarmentCategory, ModelPhoto

# Flat RGB tone per human-parsing label. Face and arm skin differ slightly so a colour-only parser can tell them apart.
FIGURE_TONES: dict[str, tuple[int, int, int]] = {
    "background": (236, 234, 230),
    "hair": (58, 40, 30),
    "face": (226, 182, 152),
    "upper_clothes": (70, 110, 160),
    "pants": (40, 44, 56),
    "left_arm": (212, 166, 134),
    "left_shoe": (20, 20, 20),
}


@dataclass(frozen=True)
class _Pose:
    arm_angle_deg: float  # arms out from the body's vertical
    stance: float  # half the gap between the feet, as a share of the image width
    head_tilt_px: float  # sideways offset of the head, as a share of the image width


_POSES: dict[str, _Pose] = {
    "default-a": _Pose(arm_angle_deg=8.0, stance=0.05, head_tilt_px=0.0),
    "default-b": _Pose(arm_angle_deg=20.0, stance=0.09, head_tilt_px=0.01),
    "default-c": _Pose(arm_angle_deg=13.0, stance=0.07, head_tilt_px=-0.01),
}
DEFAULT_MODEL_IDS: tuple[str, ...] = tuple(_POSES)
DEFAULT_SIZE = (768, 1024)


def draw_default_model(model_id: str, size: tuple[int, int] = DEFAULT_SIZE) -> Image.Image:
    """Draw the default library's figure `model_id` as an RGB image of `size` (width, height)."""
    if model_id not in _POSES:
        raise ValueError(f"unknown default model {model_id!r}; known: {', '.join(DEFAULT_MODEL_IDS)}")
    width, height = size
    if width < 32 or height < 32:
        raise ValueError(f"a default model needs at least 32x32 pixels, got {width}x{height}")
    pose = _POSES[model_id]
    image = Image.new("RGB", size, FIGURE_TONES["background"])
    draw = ImageDraw.Draw(image)
    cx = width / 2

    def x(share: float) -> float:
        return cx + share * width

    def y(share: float) -> float:
        return share * height

    # Proportions as shares of the frame: head at the top fifth, hips at 55%, feet at 95%.
    head_cx = x(pose.head_tilt_px)
    head_w, head_h = 0.07 * height, 0.09 * height
    shoulder_y, hip_y, ankle_y = y(0.2), y(0.55), y(0.91)
    shoulder_half, hip_half = 0.12 * height, 0.09 * height

    # Legs (trousers) from the hips to the ankles, then shoes.
    for side in (-1, 1):
        foot_x = cx + side * pose.stance * width
        draw.polygon(
            [(cx, hip_y), (cx + side * hip_half, hip_y), (foot_x + side * 0.035 * height, ankle_y), (foot_x, ankle_y)],
            fill=FIGURE_TONES["pants"],
        )
        draw.ellipse(
            [foot_x - 0.03 * height, ankle_y - 0.01 * height, foot_x + 0.05 * height, ankle_y + 0.03 * height],
            fill=FIGURE_TONES["left_shoe"],
        )
    # Arms hang from the shoulders at the pose's angle; drawn before the top so short sleeves cover their tops.
    arm_length, arm_half = 0.33 * height, 0.022 * height
    for side in (-1, 1):
        angle = math.radians(pose.arm_angle_deg)
        sx, sy = cx + side * (shoulder_half - arm_half), shoulder_y + arm_half
        ex, ey = sx + side * math.sin(angle) * arm_length, sy + math.cos(angle) * arm_length
        nx, ny = math.cos(angle) * arm_half, side * -math.sin(angle) * arm_half
        draw.polygon(
            [(sx - nx, sy - ny), (sx + nx, sy + ny), (ex + nx, ey + ny), (ex - nx, ey - ny)],
            fill=FIGURE_TONES["left_arm"],
        )
        draw.ellipse(
            [ex - 1.4 * arm_half, ey - arm_half, ex + 1.4 * arm_half, ey + 1.8 * arm_half],
            fill=FIGURE_TONES["left_arm"],
        )
        # Short sleeve over the upper arm.
        sleeve = 0.09 * height
        draw.polygon(
            [
                (sx - 1.3 * nx, sy - 1.3 * ny - arm_half),
                (sx + 1.3 * nx, sy + 1.3 * ny - arm_half),
                (sx + side * math.sin(angle) * sleeve + 1.3 * nx, sy + math.cos(angle) * sleeve + 1.3 * ny),
                (sx + side * math.sin(angle) * sleeve - 1.3 * nx, sy + math.cos(angle) * sleeve - 1.3 * ny),
            ],
            fill=FIGURE_TONES["upper_clothes"],
        )
    # Torso (the top), a little past the hips.
    draw.polygon(
        [
            (cx - shoulder_half, shoulder_y),
            (cx + shoulder_half, shoulder_y),
            (cx + hip_half * 1.05, hip_y + 0.02 * height),
            (cx - hip_half * 1.05, hip_y + 0.02 * height),
        ],
        fill=FIGURE_TONES["upper_clothes"],
    )
    # Neck, hair behind the head, then the face.
    draw.rectangle(
        [head_cx - 0.02 * height, y(0.12), head_cx + 0.02 * height, shoulder_y + 0.01 * height],
        fill=FIGURE_TONES["face"],
    )
    draw.ellipse(
        [head_cx - 0.55 * head_w, y(0.035), head_cx + 0.55 * head_w, y(0.035) + 0.85 * head_h],
        fill=FIGURE_TONES["hair"],
    )
    draw.ellipse([head_cx - head_w / 2, y(0.05), head_cx + head_w / 2, y(0.05) + head_h], fill=FIGURE_TONES["face"])
    return image


def default_model_library(folder: Path, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[ModelPhoto, ...]:
    """Write the default figures as PNGs into `folder` (when not already there) and describe them as `ModelPhoto`s."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for model_id in DEFAULT_MODEL_IDS:
        path = folder / f"{model_id}-{size[0]}x{size[1]}.png"
        if not path.exists():
            draw_default_model(model_id, size).save(path, format="PNG")
        photos.append(
            ModelPhoto(
                model_id=model_id,
                uri=path.as_uri(),
                # A figure in a top and trousers serves every category try-on knows.
                body_regions=(
                    GarmentCategory.TOPS,
                    GarmentCategory.OUTERWEAR,
                    GarmentCategory.BOTTOMS,
                    GarmentCategory.DRESSES,
                ),
            )
        )
    return tuple(photos)
