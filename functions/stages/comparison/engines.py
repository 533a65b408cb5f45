"""Image engines behind one interface: our lifestyle recipe (any adapter version, TI on or off, ControlNet on or off),
Amazon Bedrock image models and an OpenAI-compatible Images API.

Every engine gets the same task (prompt, seed, size, the product cutout placed on the same canvas) and returns an
image, or raises `EngineFailedError` with a reason a report can count (`throttled`, `content_filtered`, `timeout`, ...).

    engines = parse_engines("base,acme/ss27@v3,ti:acme/ss27@v4,controlnet:canny,openai:gpt-image-1", context)
    output = engines[0].generate(task)        # EngineOutput, or EngineFailedError with a reason

Engine names (comma-separated; `+` combines our recipe's options, e.g. `ti:acme/ss27@v4+controlnet:canny`):

| name                             | what runs                                                                  |
|----------------------------------|----------------------------------------------------------------------------|
| `base`                           | our lifestyle recipe, no brand adapter                                     |
| `<brand>/<name>@v<N>`            | our recipe with that version's LoRA (its TI embeddings off)                |
| `ti:<brand>/<name>@v<N>`         | the same LoRA with its pivotal-tuning embeddings and trigger token         |
| `controlnet:<canny/depth>`       | our recipe guided by a ControlNet from the product                         |
| `bedrock:<model id>`             | Bedrock Nova Canvas / Titan Image: OUTPAINTING around the product mask     |
| `bedrock-text:<model id>`        | the same model, TEXT_IMAGE from the prompt alone                           |
| `openai:<model>`                 | OpenAI-compatible `/images/edits` with the product masked in               |
| `openai-text:<model>`            | OpenAI-compatible `/images/generations` from the prompt alone              |
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from functions.ports import BlobStorage, GpuJobRunner
from schemas import AdapterRef, BrandProfile, JobKind, JobRequest, Status

if TYPE_CHECKING:
    from functions.stages.comparison.prices import PriceTable

PRODUCT_ALPHA_THRESHOLD = 128
BACKGROUND_FILL = 127


class EngineFailedError(Exception):
    """A cell that produced no image, with a reason the report counts and a message a person reads.

    Reasons: `throttled`, `content_filtered`, `timeout`, `bad_request`, `unavailable`, `error` (and for our recipe,
    the GPU worker's codes: `bad_input`, `licence_refused`, `internal_error`, ...).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class GenerationTask:
    """One cell: a prompt on one product with one seed, written under `cell_dir`."""

    prompt: str
    negative_prompt: str | None
    seed: int
    size: int
    product_path: Path  # the cutout (RGBA PNG, alpha = product)
    sku: str
    cell_dir: Path


@dataclass(frozen=True)
class EngineOutput:
    """What an engine made: the image, and (when it placed the product) the product as placed and the kept region."""

    image: Image.Image
    placed: Image.Image | None  # RGBA, the canvas' size: the product's own pixels, alpha = product
    keep_mask: Image.Image | None  # "L", 255 where the product's pixels must be kept exactly
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)  # model and adapter versions, for the record
    seed_honoured: bool = True  # False: the provider takes no seed, so the seed only labels the repeat


class Engine(Protocol):
    """One column of the comparison."""

    name: str  # as the user typed it: the column's heading and the key in the price table
    kind: str  # "recipe", "bedrock" or "openai"

    def generate(self, task: GenerationTask) -> EngineOutput: ...


# ---- the product on the canvas (the same layout for every engine) ----------------------------------------------------
def place_product(product: Image.Image, size: int, fill: float = 0.6, margin: float = 0.06) -> Image.Image:
    """The cutout cropped to the product, scaled so its larger side fills `fill` of a square canvas, bottom-anchored.

    The same rules as gpu_jobs.recipes.lifestyle._place_product's defaults (functions never imports gpu_jobs), so the
    external engines get the product where our recipe puts it.
    """
    rgba = product.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    if not (alpha >= PRODUCT_ALPHA_THRESHOLD).any():
        raise EngineFailedError("bad_input", "the product cutout's mask is empty (no pixel with alpha >= 128)")
    rows, cols = np.nonzero(alpha)
    crop = rgba.crop((int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1))
    room = size * (1 - 2 * margin)
    scale = min(fill * min(size / crop.width, size / crop.height), room / crop.width, room / crop.height)
    if scale != 1.0:
        crop = crop.resize(
            (max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.LANCZOS
        )
    left = (size - crop.width) // 2
    top = size - round(margin * size) - crop.height
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(crop, (left, top))
    return canvas


def provider_output(
    image: Image.Image,
    task: GenerationTask,
    placed: Image.Image | None,
    seconds: float,
    model: str,
    seed_honoured: bool = True,
) -> EngineOutput:
    """An external provider's decoded answer as a cell's output: the task's size, the product's region to keep."""
    if image.size != (task.size, task.size):
        image = image.resize((task.size, task.size), Image.Resampling.LANCZOS)
    return EngineOutput(
        image=image,
        placed=placed,
        keep_mask=product_mask(placed) if placed is not None else None,
        seconds=seconds,
        versions={"model": model},
        seed_honoured=seed_honoured,
    )


def product_mask(placed: Image.Image) -> Image.Image:
    """255 where the placed product is, 0 elsewhere."""
    alpha = np.asarray(placed.getchannel("A"))
    return Image.fromarray(np.where(alpha >= PRODUCT_ALPHA_THRESHOLD, 255, 0).astype(np.uint8))


def canvas_rgb(placed: Image.Image) -> Image.Image:
    """The placed product on mid grey: what an inpainting engine is given to paint around."""
    background = Image.new("RGBA", placed.size, (BACKGROUND_FILL, BACKGROUND_FILL, BACKGROUND_FILL, 255))
    mask = product_mask(placed)
    background.paste(placed, (0, 0), mask)
    return background.convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def read_cutout(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            image = (
                opened.convert("RGBA") if opened.mode in ("RGBA", "LA", "PA") or "transparency" in opened.info else None
            )
    except (OSError, ValueError) as error:
        raise EngineFailedError(
            "bad_input", f"{path.name}: cannot read the product cutout ({type(error).__name__})"
        ) from error
    if image is None:
        raise EngineFailedError(
            "bad_input", f"{path.name}: the product cutout needs an alpha channel (the product mask)"
        )
    return image


# ---- our recipe ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecipeOptions:
    """What `base`, `<brand>/<name>@vN`, `ti:` and `controlnet:` ask of our lifestyle recipe."""

    version: str | None = None  # "ss27@v4"
    version_brand: str | None = None
    textual_inversion: bool = False
    controlnet: str | None = None


class RecipeEngine:
    """Our lifestyle recipe through a GPU job runner (the in-process worker locally), one job per cell."""

    kind = "recipe"

    def __init__(
        self,
        name: str,
        options: RecipeOptions,
        runner: GpuJobRunner,
        brand: str,
        brands_uri: str | None,
        *,
        storage: BlobStorage | None = None,
        work_prefix: str | None = None,
    ) -> None:
        """`storage` and `work_prefix` (s3://...) for a remote runner (the deployed endpoint): the cutout is put
        there and the outputs read from there; without them, the runner reads and writes local files."""
        self.name = name
        self.options = options
        self._runner = runner
        self._brand = brand
        self._storage = storage
        self._work_prefix = work_prefix.rstrip("/") if work_prefix else None
        self._profile = self._profile_for(brand, brands_uri)

    def _profile_for(self, brand: str, brands_uri: str | None) -> BrandProfile | None:
        options = self.options
        if options.version is None:
            return None
        if brands_uri is None:
            raise EngineFailedError("bad_input", f"engine {self.name}: a version needs the brand store (--brands DIR)")
        from functions.stages.brand_versions import version_uri

        version_brand = options.version_brand or brand
        folder = version_uri(brands_uri, version_brand, options.version)
        name = options.version.split("@", 1)[0]
        trigger = None
        embeddings_uri = None
        if options.textual_inversion:
            embeddings_uri = f"{folder}/learned_embeds.safetensors"
            trigger = self._trigger_token(folder)
            if trigger is None:
                raise EngineFailedError(
                    "bad_input", f"engine {self.name}: {options.version} records no trigger token for its embeddings"
                )
        adapter = AdapterRef(
            name=name,
            uri=f"{folder}/pytorch_lora_weights.safetensors",
            version=options.version,
            embeddings_uri=embeddings_uri,
            embeddings_token=trigger,
        )
        return BrandProfile(brand=version_brand, adapters=(adapter,), trigger_token=trigger)

    def generate(self, task: GenerationTask) -> EngineOutput:
        params: dict[str, Any] = {
            "prompt": task.prompt,
            "width": task.size,
            "height": task.size,
        }
        if task.negative_prompt:
            params["negative_prompt"] = task.negative_prompt
        if self.options.controlnet:
            params["controlnet"] = self.options.controlnet
        if self._profile is not None:
            params["brand_profile"] = self._profile.model_dump(mode="json")  # the recipe adds its trigger token
        job_id = _job_id(f"cmp-{task.sku}-{self.name}-{task.seed}-{_digest(task.prompt.encode())}")
        if self._work_prefix is not None and self._storage is not None:
            data = task.product_path.read_bytes()
            cutout_uri = f"{self._work_prefix}/inputs/{_job_id(task.sku)}-{_digest(data)}.png"
            self._storage.write_bytes(cutout_uri, data, "image/png")
            output_prefix = f"{self._work_prefix}/outputs/{job_id}"
        else:
            task.cell_dir.mkdir(parents=True, exist_ok=True)
            cutout_uri, output_prefix = task.product_path.resolve().as_uri(), task.cell_dir.resolve().as_uri()
        request = JobRequest(
            job_id=job_id,
            kind=JobKind.LIFESTYLE,
            brand=self._brand,
            sku=task.sku[:128],
            inputs={"cutout": cutout_uri},
            output_prefix=output_prefix,
            seed=task.seed,
            params=params,
        )
        started = time.perf_counter()
        result = self._runner.run(request)
        seconds = time.perf_counter() - started
        if result.status is not Status.SUCCEEDED or not result.outputs:
            error = result.error
            code = error.code if error is not None else "error"
            message = error.message if error is not None else "the recipe returned no image"
            raise EngineFailedError("timeout" if code == "timeout" else code, message)
        output = result.outputs[0]
        details = output.details
        versions = {"model": result.model_version or "unknown", **result.adapter_versions}
        return EngineOutput(
            image=self._open(output.uri).convert("RGB"),
            placed=self._open(details["placed_uri"]).convert("RGBA") if "placed_uri" in details else None,
            keep_mask=self._open(details["keep_mask_uri"]).convert("L") if "keep_mask_uri" in details else None,
            seconds=seconds,
            versions=versions,
        )

    def _read(self, uri: str) -> bytes:
        if uri.startswith("s3://") and self._storage is not None:
            return self._storage.read_bytes(uri)
        return _path_of(uri).read_bytes()

    def _open(self, uri: str) -> Image.Image:
        with Image.open(io.BytesIO(self._read(uri))) as image:
            image.load()
            return image.copy()

    def _trigger_token(self, version_folder_uri: str) -> str | None:
        """The version's trigger token (version.json, else training.json): its TI embeddings are bound to it."""
        return _trigger_token(lambda name: self._read(f"{version_folder_uri}/{name}"))


def _trigger_token(read: Callable[[str], bytes]) -> str | None:
    import json

    for file_name in ("version.json", "training.json"):
        try:
            raw = json.loads(read(file_name))
        except (OSError, ValueError, EngineFailedError):
            continue
        if not isinstance(raw, dict):
            continue
        token = raw.get("trigger_token")
        if token is None and isinstance(raw.get("config"), dict):
            token = raw["config"].get("trigger_token")
        if isinstance(token, str) and token:
            return token
    return None


def _path_of(uri: str) -> Path:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        raise EngineFailedError("bad_input", f"only local files are compared here, got {parsed.scheme}://")
    return Path(unquote(parsed.path))


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:12]


def _job_id(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9\-_]", "-", text)
    return cleaned[:128].ljust(8, "-")


# ---- parsing the --engines list --------------------------------------------------------------------------------------
_VERSION = re.compile(r"^(?:(?P<brand>[a-z0-9][a-z0-9\-]{0,63})/)?(?P<ref>[a-z0-9][a-z0-9_\-]{0,47}@v[1-9][0-9]{0,5})$")
_CONTROLNETS = ("canny", "depth")


@dataclass(frozen=True)
class EngineContext:
    """What building the engines needs: the brand, the brand store, and clients made on demand."""

    brand: str
    brands_uri: str | None = None
    recipe_runner_factory: Any = None  # () -> GpuJobRunner, called once, when the first recipe engine is built
    work_storage: Any = None  # BlobStorage for `work_prefix` and the brand store when our recipes run remotely
    work_prefix: str | None = None  # s3://bucket/prefix: where a remote runner (the endpoint) reads and writes
    bedrock_client: Any = None  # a boto3 bedrock-runtime client, or None to build one from the environment
    openai_settings: Any = None  # OpenAIImagesSettings, or None to read OPENAI_BASE_URL / OPENAI_API_KEY
    prices: PriceTable | None = None


class EngineSpecError(ValueError):
    """An --engines entry that names no engine; the message says the accepted forms."""


def split_engine_list(text: str) -> list[str]:
    """Comma-separated names; a Bedrock model id's `:0` stays with it."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise EngineSpecError("--engines: name at least one engine, e.g. base,acme/ss27@v3")
    if len(set(names)) != len(names):
        raise EngineSpecError(f"--engines: {', '.join(sorted({n for n in names if names.count(n) > 1}))} twice")
    return names


def recipe_options(name: str) -> RecipeOptions | None:
    """`base`, `acme/ss27@v4`, `ti:acme/ss27@v4`, `controlnet:canny`, or `+`-joined; None when not our recipe."""
    version: str | None = None
    version_brand: str | None = None
    ti = False
    controlnet: str | None = None
    for part in name.split("+"):
        part = part.strip()
        if part == "base":
            continue
        if part.startswith("controlnet:"):
            kind = part.removeprefix("controlnet:")
            if kind not in _CONTROLNETS:
                raise EngineSpecError(f"--engines {name}: ControlNet must be one of {', '.join(_CONTROLNETS)}")
            controlnet = kind
            continue
        if part.startswith("ti:"):
            ti, part = True, part.removeprefix("ti:")
        match = _VERSION.match(part)
        if match is None:
            return None
        version, version_brand = match["ref"], match["brand"]
    return RecipeOptions(version=version, version_brand=version_brand, textual_inversion=ti, controlnet=controlnet)


def build_engines(names: list[str], context: EngineContext) -> list[Engine]:
    """The engines, in the order named; our recipes share one GPU job runner (the models load once)."""
    runners: list[GpuJobRunner] = []

    def runner() -> GpuJobRunner:
        if not runners:
            if context.recipe_runner_factory is None:
                raise EngineSpecError("--engines: our recipes need --models (tiny or a model config JSON)")
            runners.append(context.recipe_runner_factory())
        return runners[0]

    return [build_engine(name, context, runner) for name in names]


def build_engine(name: str, context: EngineContext, runner: Any) -> Engine:
    """One engine from its name (see the table in this module's docstring); `runner()` gives the GPU job runner."""
    if name.startswith(("bedrock:", "bedrock-text:")):
        from functions.stages.comparison.bedrock import BedrockEngine

        kind, model_id = name.split(":", 1)
        return BedrockEngine(name, model_id, text_only=kind == "bedrock-text", client=context.bedrock_client)
    if name.startswith(("openai:", "openai-text:")):
        from functions.stages.comparison.openai_images import OpenAIImagesEngine, OpenAIImagesSettings

        kind, model = name.split(":", 1)
        settings = context.openai_settings or OpenAIImagesSettings.from_environment()
        return OpenAIImagesEngine(name, model, settings, text_only=kind == "openai-text")
    options = recipe_options(name)
    if options is None:
        raise EngineSpecError(
            f"--engines: {name!r} is not an engine; use base, <brand>/<name>@v<N>, ti:<brand>/<name>@v<N>, "
            "controlnet:canny|depth (joined with +), bedrock:<model id>, bedrock-text:<model id>, openai:<model> "
            "or openai-text:<model>"
        )
    if options.version_brand is not None and options.version_brand != context.brand:
        raise EngineSpecError(f"--engines {name}: the version belongs to {options.version_brand}, not {context.brand}")
    return RecipeEngine(
        name,
        options,
        runner(),
        context.brand,
        context.brands_uri,
        storage=context.work_storage,
        work_prefix=context.work_prefix,
    )
