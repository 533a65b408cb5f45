"""Shopify webhooks in: the product payload (only the fields we use), the queued work item and a brand's settings.

Shopify adds fields to its payloads without notice, so the product models ignore fields they do not know; our own
contracts (the work item, the settings) stay strict.
"""

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._base import Contract
from .product import GarmentCategory, JobKind

SHOPIFY_CDN_HOST = "cdn.shopify.com"
SHOPIFY_SETTINGS_NAME = "shopify.json"  # beside profile.json in the brand store: <brands>/<brand>/shopify.json


class ShopifyTopic(StrEnum):
    """The webhook topics that start the pipeline."""

    PRODUCTS_CREATE = "products/create"
    PRODUCTS_UPDATE = "products/update"


class EventSource(StrEnum):
    HTTPS = "https"  # Shopify's HTTPS delivery, signed with the app's client secret
    EVENTBRIDGE = "eventbridge"  # Shopify's partner event source: no HMAC, AWS authenticates the sender
    BACKFILL = "backfill"  # `catalog shopify sync`: the product read through the Admin API, no webhook


class _ShopifyPayload(BaseModel):
    """Shopify's own JSON: frozen, and tolerant of fields we do not use."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class ShopifyImage(_ShopifyPayload):
    """One entry of a product's `images` (REST webhook shape)."""

    id: int
    src: str = Field(min_length=1)
    alt: str | None = None
    position: int = 1
    variant_ids: tuple[int, ...] = ()
    admin_graphql_api_id: str | None = None


class ShopifyVariant(_ShopifyPayload):
    id: int
    sku: str | None = None
    position: int = 1
    option1: str | None = None
    option2: str | None = None
    option3: str | None = None


class ShopifyOption(_ShopifyPayload):
    name: str
    position: int = 1
    values: tuple[str, ...] = ()


class ShopifyProduct(_ShopifyPayload):
    """The `products/create` and `products/update` payload, as far as the pipeline reads it."""

    id: int
    title: str = ""
    handle: str | None = None
    product_type: str = ""
    tags: str = Field(default="", description="Comma-separated, as Shopify sends them.")
    updated_at: datetime | None = None
    variants: tuple[ShopifyVariant, ...] = ()
    options: tuple[ShopifyOption, ...] = ()
    images: tuple[ShopifyImage, ...] = ()
    admin_graphql_api_id: str | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_as_text(cls, value: object) -> object:
        # The REST payload sends one comma-separated string; some API versions send a list.
        if isinstance(value, list | tuple):
            return ", ".join(str(tag) for tag in value)
        return "" if value is None else value

    def tag_list(self) -> list[str]:
        return [tag.strip() for tag in self.tags.split(",") if tag.strip()]


class ShopifyWork(Contract):
    """One product event accepted at the endpoint (or read from EventBridge), waiting in the queue for intake."""

    source: EventSource
    topic: ShopifyTopic
    event_id: str = Field(min_length=1, max_length=200, description="X-Shopify-Event-Id, else X-Shopify-Webhook-Id.")
    shop_domain: str = Field(default="", max_length=255)
    triggered_at: datetime | None = None
    api_version: str | None = None
    brand: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")
    product: ShopifyProduct

    @property
    def product_key(self) -> str:
        """The product across events: the shop and Shopify's product id."""
        return f"{self.shop_domain or '-'}#{self.product.id}"


class ShopifySettings(Contract):
    """A brand's Shopify intake settings, from `<brands>/<brand>/shopify.json`; every field has a default."""

    category_map: dict[str, GarmentCategory] = Field(
        default_factory=dict,
        description="Product type (case-insensitive) -> garment category; wins over the built-in keyword mapping.",
    )
    colour_option_names: tuple[str, ...] = Field(
        default=("Color", "Colour"), min_length=1, description="The variant option that holds the colour."
    )
    collection_tag_prefix: str = Field(
        default="collection:", min_length=1, description="A tag `collection:<name>` names the product's collection."
    )
    jobs: tuple[JobKind, ...] = Field(default=(JobKind.PACKSHOT,), min_length=1)
    image_hosts: tuple[str, ...] = Field(
        default=(SHOPIFY_CDN_HOST,), description="Hosts images may be fetched from (HTTPS); Shopify's CDN by default."
    )
    max_image_bytes: int = Field(default=25 * 2**20, ge=1024, le=256 * 2**20)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    total_timeout_seconds: float = Field(default=60.0, gt=0, le=600, description="One image's whole download.")
    max_images: int = Field(default=50, ge=1, le=250, description="Images taken from one product event.")
