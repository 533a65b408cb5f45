"""A tiny training dataset, laid out as `catalog train dataset check` writes it (schemas/dataset.py)."""

from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from schemas.dataset import DatasetManifest, DatasetPhoto, PhotoVerdict


def write_dataset(folder: Path, brand: str = "acme", count: int = 2) -> Path:
    """A checked dataset as `catalog train dataset check` writes it: 64 px photos, captions, dataset.json."""
    (folder / "images").mkdir(parents=True)
    photos = []
    for index in range(count):
        image = Image.new("RGB", (64, 64), (40 + 60 * index, 90, 160))
        image.paste((230, 230, 230), (16, 16, 48, 48))
        image.save(folder / "images" / f"p{index}.png")
        (folder / "images" / f"p{index}.txt").write_text(f"acmestyle, a grey shirt on blue, photo {index}")
        photos.append(
            DatasetPhoto(
                id=f"p{index}",
                source=f"p{index}.jpg",
                verdict=PhotoVerdict.KEPT,
                width=64,
                height=64,
                bucket=(64, 64),
                image_file=f"images/p{index}.png",
                caption_file=f"images/p{index}.txt",
            )
        )
    manifest = DatasetManifest(
        brand=brand, trigger_token="acmestyle", created_at=datetime.now(UTC), min_side=64, photos=tuple(photos)
    )
    (folder / "dataset.json").write_text(manifest.model_dump_json(indent=2))
    return folder
