"""A brand's profile: its LoRA adapters, prompts, scene presets and model library."""

from pydantic import EmailStr, Field

from ._base import Contract
from .jobs import Uri
from .product import GarmentCategory


class AdapterRef(Contract):
    """A LoRA adapter by name, where its weights live, and how strongly to apply it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    uri: Uri
    weight: float = Field(default=1.0, ge=0.0, le=2.0)
    version: str | None = None
    embeddings_uri: Uri | None = Field(
        default=None,
        description="Pivotal tuning's textual-inversion embeddings (learned_embeds.safetensors) trained with it.",
    )
    embeddings_token: str | None = Field(
        default=None, description="The word prompts use for those embeddings (the brand's trigger token)."
    )


class ScenePreset(Contract):
    name: str
    prompt: str
    negative_prompt: str | None = None


class ModelPhoto(Contract):
    """A photo of one of the brand's models, usable for virtual try-on."""

    model_id: str
    uri: Uri
    body_regions: tuple[GarmentCategory, ...] = ()


class BrandProfile(Contract):
    brand: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")
    display_name: str | None = None
    commercial: bool = Field(default=True, description="Refuse non-commercial weights when true.")
    trigger_token: str | None = None
    adapters: tuple[AdapterRef, ...] = ()
    prompt_templates: dict[str, str] = Field(
        default_factory=dict, description="Category or collection -> prompt template with {title}, {colour}."
    )
    negative_prompt: str | None = None
    scene_presets: tuple[ScenePreset, ...] = ()
    model_library: tuple[ModelPhoto, ...] = ()
    reviewers: tuple[EmailStr, ...] = Field(default=(), description="Who reviews this brand's images (e-mail).")
