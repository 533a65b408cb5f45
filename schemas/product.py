"""The merchandiser's `product.json` sidecar, and the kinds of job a product can ask for."""

from enum import StrEnum

from pydantic import Field

from ._base import Contract

SIDECAR_NAME = "product.json"  # beside a SKU's photos, in a local folder or under incoming/<brand>/<sku>/


class JobKind(StrEnum):
    """What can be made from a product photo."""

    PACKSHOT = "packshot"
    GHOST_MANNEQUIN = "ghost_mannequin"
    TRY_ON = "try_on"
    LIFESTYLE = "lifestyle"


class GarmentCategory(StrEnum):
    """Broad garment categories; try-on uses them to pick the body region to replace."""

    TOPS = "tops"
    BOTTOMS = "bottoms"
    DRESSES = "dresses"
    OUTERWEAR = "outerwear"
    SHOES = "shoes"
    ACCESSORIES = "accessories"
    OTHER = "other"


class ProductSidecar(Contract):
    """`product.json` next to a SKU's photos. Every field is optional; unknown fields are refused."""

    sku: str | None = Field(default=None, min_length=1, max_length=128, description="Overrides the folder name.")
    title: str | None = Field(default=None, max_length=500)
    category: GarmentCategory = GarmentCategory.OTHER
    colour: str | None = Field(default=None, max_length=100)
    collection: str | None = Field(default=None, max_length=200)
    jobs: tuple[JobKind, ...] = Field(default=(JobKind.PACKSHOT,), min_length=1)
