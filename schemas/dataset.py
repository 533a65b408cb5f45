"""A brand's training dataset as `catalog train dataset check` writes it: `DS/dataset.json`.

The folder beside it holds `images/<id>.png` (the kept photo, normalised by intake), `images/<id>.txt` (its caption,
which the user may edit; a re-run keeps the edit), `masks/<id>.png` (the product mask, 8-bit L) and `report.html`.
Training reads only the kept photos, and the caption from the `.txt` file.
"""

import hashlib
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from ._base import Contract
from .review import RejectionReason


class PhotoVerdict(StrEnum):
    KEPT = "kept"
    REFUSED = "refused"


class PhotoOrigin(StrEnum):
    PHOTO = "photo"
    APPROVED_GENERATED = "approved_generated"


class GateFinding(Contract):
    """One quality gate's finding on one photo: a stable code and a sentence naming the file and the reason."""

    code: str
    message: str
    refuses: bool = Field(description="True when this finding alone keeps the photo out of the dataset.")


class DatasetPhoto(Contract):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}$")
    source: str = Field(description="The input photo, relative to the checked folder.")
    origin: PhotoOrigin = PhotoOrigin.PHOTO
    verdict: PhotoVerdict
    findings: tuple[GateFinding, ...] = ()
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    width: int | None = None
    height: int | None = None
    bucket: tuple[int, int] | None = Field(default=None, description="The training resolution (width, height).")
    duplicate_group: str | None = None
    image_file: str | None = Field(default=None, description="Relative to the dataset folder; kept photos only.")
    caption_file: str | None = None
    mask_file: str | None = None
    caption: str | None = Field(default=None, description="The caption as last written or edited.")
    caption_edited: bool = Field(
        default=False, description="True once the user has edited the caption file; later checks keep their text."
    )


class FailureCase(Contract):
    """A generated image a reviewer rejected, with what made it, for the next training round and its comparison."""

    reason: RejectionReason
    review_id: str
    item_id: str
    sku: str
    job_kind: str
    generated: str
    note: str | None = None
    prompt: str | None = None
    seed: int | None = None
    adapter: str | None = None
    adapter_version: str | None = None
    model_version: str | None = None
    flags: tuple[str, ...] = ()


class DatasetManifest(Contract):
    brand: str
    trigger_token: str | None = None
    created_at: datetime
    min_side: int
    photos: tuple[DatasetPhoto, ...]
    buckets: dict[str, int] = Field(default_factory=dict, description="`WxH` -> how many kept photos train at it.")
    dataset_sha256: str | None = Field(
        default=None, description="Over the kept images and their captions, in id order: what training records."
    )
    failure_cases: tuple[FailureCase, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def kept(self) -> tuple[DatasetPhoto, ...]:
        return tuple(photo for photo in self.photos if photo.verdict is PhotoVerdict.KEPT)


def dataset_digest(kept: Iterable[tuple[str, bytes, str]]) -> str:
    """The hash of what trains: each kept photo's (id, image bytes, caption as edited), in id order.

    The one definition the dataset check records, the trainer writes into training.json and the training run keys its
    work on, so the three agree on the same folder.
    """
    digest = hashlib.sha256()
    for photo_id, image, caption in sorted(kept, key=lambda item: item[0]):
        digest.update(photo_id.encode() + b"\0" + hashlib.sha256(image).hexdigest().encode() + b"\0")
        digest.update(caption.strip().encode("utf-8") + b"\0")
    return digest.hexdigest()
