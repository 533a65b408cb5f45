"""How approved images are published: provenance marking, and publishing to a Shopify store's product media.

The brand configures it in its brand store folder (`<brands>/<brand>/publishing.json`); a run or a deployment
without that file gets the defaults below (XMP source type on every image, no C2PA, the merchant's media kept).
"""

from enum import StrEnum

from pydantic import Field

from ._base import Contract

# The default media order on a product page: the clean catalog shot first, then what shows the garment best.
DEFAULT_MEDIA_ORDER = ("packshot", "ghost_mannequin", "lifestyle", "try_on")


class PublishingProfile(Contract):
    """`<brands>/<brand>/publishing.json`: the brand's publishing choices. Every field is optional."""

    ai_disclosure: bool = Field(
        default=False, description="Alt text of generated images says so (e.g. `Linen shirt (AI-generated image)`)."
    )
    ai_disclosure_text: str = Field(default="AI-generated image", min_length=1, max_length=100)
    media_order: tuple[str, ...] = Field(
        default=DEFAULT_MEDIA_ORDER,
        min_length=1,
        description="Job kinds in the order their images appear after the merchant's own media.",
    )
    ours_first: bool = Field(
        default=False, description="Put our images before the merchant's own media instead of after them."
    )
    replace_merchant_media: bool = Field(
        default=False, description="Detach the merchant's own images once ours are attached. Off: never touched."
    )


class ShopifyMediaStatus(StrEnum):
    """What happened to one approved image on its product. `attached` and `already_attached` are successes."""

    ATTACHED = "attached"
    ALREADY_ATTACHED = "already_attached"  # a retried publish: our media with this content hash was there
    REJECTED = "rejected"  # Shopify answered userErrors for this image; they are in `errors`
    PRODUCT_NOT_FOUND = "product_not_found"  # deleted (or never there) between the webhook and the publish
    SHOPIFY_UNAVAILABLE = "shopify_unavailable"  # 429/5xx/throttled past every retry: nothing half-attached


class ShopifyMediaResult(Contract):
    item_id: str
    product: str = Field(description="The product's handle (the SKU folder) or its gid.")
    status: ShopifyMediaStatus
    media_id: str | None = None
    errors: tuple[str, ...] = Field(default=(), description="Shopify's userErrors or the terminal reason, per image.")


class ShopifyPublishResult(Contract):
    shop: str
    api_version: str
    media: tuple[ShopifyMediaResult, ...] = ()
    detached: tuple[str, ...] = Field(default=(), description="Merchant media detached (replacement configured).")

    def count(self, status: ShopifyMediaStatus) -> int:
        return sum(result.status is status for result in self.media)

    def not_on_store(self) -> tuple[ShopifyMediaResult, ...]:
        """The images that ended in a failure state (each with its reason)."""
        on_store = (ShopifyMediaStatus.ATTACHED, ShopifyMediaStatus.ALREADY_ATTACHED)
        return tuple(result for result in self.media if result.status not in on_store)
