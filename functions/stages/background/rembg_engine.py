"""Background removal with a rembg ONNX session, built once per process from a local model file.

A model is a rembg session name (`isnet-general-use`, `u2net`, `birefnet-general`, ...) whose file
`<models_dir>/<name>.onnx` must already be there, or a path to any `.onnx` file with the U²-Net I/O
layout. Nothing is fetched unless `allow_download=True`.

How rembg (2.0.86) would otherwise download: `BaseSession.__init__` calls the class's
`download_models()`, which looks for `<name>.onnx` under `$U2NET_HOME` (or `$REMBG_HOME`/
`$XDG_DATA_HOME`/`~/.rembg` + `models/<name>/`) and calls `pooch.retrieve` from GitHub when it is
missing; earlier 2.0.x releases called `pooch.retrieve` every time, which re-downloads a present
file whose MD5 differs from the release's (a fine-tuned model saved under the release's name).
So we never let rembg look: each session class is subclassed with a `download_models` that
returns our file. Only with `allow_download=True` does rembg's own `download_models` run, with its
home pointed at `models_dir` so the file lands (MD5/SHA-256 checked by rembg) where the next run
without the flag will find it. rembg and onnxruntime are imported on first use only: light Lambdas
import this module without paying for them.
"""

import importlib
import importlib.util
import os
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops

from functions.errors import BackgroundRemovalError, ConfigurationError
from functions.stages.background.base import BackgroundResult

# Licences, as far as the upstream projects state them (checked for this module; not legal advice):
# - isnet-general-use: IS-Net by Qin et al. (github.com/xuebinqin/DIS). The repository states "Our code
#   and evaluation metric use Apache License 2.0" and releases isnet-general-use.pth for general use;
#   the weights carry no separate licence file, and the DIS5K training set has its own terms of use
#   (see xuebinqin/DIS issue #150). rembg's README lists no restriction on it.
# - u2net, u2netp, u2net_human_seg, silueta: U²-Net (github.com/xuebinqin/U-2-Net, Apache-2.0); the author
#   states the released models follow the repository's licence (xuebinqin/U-2-Net issue #208).
# - birefnet-*: BiRefNet (github.com/ZhengPeng7/BiRefNet, MIT LICENSE); the author states code and
#   weights are MIT (ZhengPeng7/BiRefNet issues #6, #316).
# - bria-rmbg: BRIA RMBG-2.0, released under a BRIA licence (CC BY-NC 4.0) that needs a paid agreement
#   for commercial use; rembg's own README (2.0.86) says so. Non-commercial.
# The default is u2net: its weights are the ones whose commercial use the author states plainly, and it is
# light enough for a CPU worker. birefnet-general (MIT) cuts out better at several times the cost.
DEFAULT_REMBG_MODEL = "u2net"
NON_COMMERCIAL_MODELS: frozenset[str] = frozenset({"bria-rmbg"})

MODELS_DIR_ENV = "CATALOG_MODELS_DIR"
INSTALL_HINT = "pip install 'catalog-image-processor[rembg]'"

# A model given as a path runs through rembg's `u2net_custom` session: 320x320 input normalised with
# ImageNet's mean/std, first output = mask. That is the U²-Net family's layout, the most common one for
# exported salient-object nets. (`dis_custom` would feed 1024x1024 with mean 0.5/std 1 for IS-Net
# exports; such a model is better placed in models_dir under its rembg name, e.g. isnet-general-use.onnx.)
CUSTOM_SESSION = "u2net_custom"

# rembg sessions this engine does not serve by name: SAM needs prompts (and two files); the *_custom
# ones take a path (give the path instead); remote ones send the photo off the machine.
_NOT_BY_NAME = frozenset({"sam", "u2net_custom", "dis_custom", "ben_custom"})

# Photos larger than this (longer side) are reduced before the net sees them: every rembg session
# resizes to 1024 px or less anyway, and a 24 MP LANCZOS resize costs more than the inference.
_MAX_WORKING_SIDE = 2048

# A mask value counts as "clearly product" at >= 0.9 and "clearly background" at <= 0.1.
_CLEARLY_OUT = round(0.1 * 255)
_CLEARLY_IN = round(0.9 * 255)
# Below this share of the frame at >= 0.5, nothing was found.
_MIN_PRODUCT_SHARE = 0.002
# A product under 2% of a catalog photo is suspicious; above 98%, the backdrop was not separated.
_SMALL_PRODUCT_SHARE = 0.02
_FULL_FRAME_SHARE = 0.98
# Confidence falls linearly to 0 as the undecided share of the frame grows to this.
_UNDECIDED_SHARE_AT_ZERO = 0.25
_LOW_CONFIDENCE_BELOW = 0.6

# One onnxruntime session per (session name, model file, threads) per process, shared by all removers.
_SESSIONS: dict[tuple[str, str, int | None], Any] = {}
_SESSIONS_LOCK = threading.Lock()
# rembg's session classes by name, loaded on first use.
_REGISTRY: dict[str, Any] | None = None
_REGISTRY_LOCK = threading.Lock()


def default_models_dir() -> Path:
    """Where models are looked up: `$CATALOG_MODELS_DIR`, else `~/.cache/catalog/models`."""
    configured = os.environ.get(MODELS_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "catalog" / "models"


class RembgRemover:
    """Product mask from a rembg model; the onnxruntime session is built once per process and reused.

    `threads` sets onnxruntime's intra-op threads (1 when a process pool already uses every core).
    Raises ConfigurationError at construction for a missing, unknown or refused model.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_REMBG_MODEL,
        *,
        models_dir: Path | None = None,
        allow_download: bool = False,
        commercial: bool = True,
        threads: int | None = None,
    ) -> None:
        # 1. Check the inputs that need no rembg.
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        model_text = os.fspath(model).strip()
        by_path = isinstance(model, os.PathLike) or model_text.lower().endswith(".onnx") or os.sep in model_text
        if commercial:
            _refuse_non_commercial(Path(model_text).stem if by_path else model_text)

        # 2. Import rembg, which also checks the model name against its sessions.
        registry = _import_rembg_sessions()

        # 3. Find the model file; fetch it only when allowed.
        if by_path:
            model_file = Path(model_text).expanduser().resolve()
            if not model_file.is_file():
                raise ConfigurationError(f"rembg model file {model_file} does not exist.")
            session_name, self._engine = CUSTOM_SESSION, f"rembg:{model_file.name}"
            download_into = None
        else:
            supported = _supported_names(registry)
            if model_text not in supported:
                raise ConfigurationError(
                    f"Unknown rembg model {model_text!r}: use one of {', '.join(sorted(supported))}, "
                    "or a path to a .onnx file."
                )
            folder = (models_dir if models_dir is not None else default_models_dir()).expanduser().resolve()
            model_file = folder / f"{model_text}.onnx"
            if not model_file.is_file() and not allow_download:
                raise ConfigurationError(
                    f"rembg model {model_text!r} was not found in the models folder {folder}: expected the "
                    f"file {model_file}. Copy it there (the folder is set by --models-dir or "
                    f"${MODELS_DIR_ENV}), or run once with --allow-download (allow_download=True) to let "
                    "rembg fetch it from its GitHub release."
                )
            session_name, self._engine = model_text, f"rembg:{model_text}"
            download_into = folder if not model_file.is_file() else None

        # 4. Build the session once per process.
        self._session = _cached_session(registry[session_name], session_name, model_file, download_into, threads)

    @property
    def engine(self) -> str:
        """`rembg:<model name>`, or `rembg:<file name>` for a model given by path."""
        return self._engine

    def remove(self, image: Image.Image) -> BackgroundResult:
        """Mask at the image's own size; transparent pixels of an RGBA image are background."""
        # 1. Check the input.
        if image.mode not in ("RGB", "RGBA"):
            raise ValueError(f"expected an RGB or RGBA image, got mode {image.mode!r}")

        # 2. Make the picture the net sees: reduced if huge, transparency flattened onto white.
        working = _working_image(image)
        alpha = working.getchannel("A") if working.mode == "RGBA" else None
        if alpha is not None:
            flattened = Image.new("RGB", working.size, (255, 255, 255))
            flattened.paste(working, mask=alpha)
            working = flattened

        # 3. Predict. rembg min-max stretches the raw output; a flat one divides 0 by 0, which we
        #    then read as "nothing found" rather than let numpy warn.
        with np.errstate(invalid="ignore", divide="ignore"):
            masks = self._session.predict(working)
        mask = masks[0].convert("L")
        for extra in masks[1:]:  # u2net_cloth_seg gives one mask per garment class: keep them all.
            mask = ImageChops.lighter(mask, extra.convert("L"))
        if alpha is not None:
            mask = ImageChops.multiply(mask, alpha)

        # 4. Judge how decisive the mask is.
        confidence, low_confidence, notes = self._judge(np.asarray(mask))

        # 5. Align with the input pixel for pixel.
        if mask.size != image.size:
            mask = mask.resize(image.size, Image.Resampling.BILINEAR)
            if image.mode == "RGBA":
                mask = ImageChops.multiply(mask, image.getchannel("A"))
        return BackgroundResult(
            mask=mask, engine=self._engine, confidence=confidence, low_confidence=low_confidence, notes=notes
        )

    def _judge(self, mask: np.ndarray) -> tuple[float, bool, tuple[str, ...]]:
        """Confidence from the share of undecided pixels and from how much was found."""
        total = mask.size
        product_share = float(np.count_nonzero(mask >= 128)) / total
        if product_share < _MIN_PRODUCT_SHARE:
            raise BackgroundRemovalError(
                "no_product_found",
                f"{self._engine} found no product: its mask covers {product_share:.2%} of the image.",
            )
        undecided_share = float(np.count_nonzero((mask > _CLEARLY_OUT) & (mask < _CLEARLY_IN))) / total
        confidence = max(0.0, 1.0 - undecided_share / _UNDECIDED_SHARE_AT_ZERO)
        notes = []
        if product_share < _SMALL_PRODUCT_SHARE:
            confidence *= product_share / _SMALL_PRODUCT_SHARE
            notes.append(f"The product covers only {product_share:.1%} of the image.")
        if product_share > _FULL_FRAME_SHARE:
            confidence *= 0.5
            notes.append(f"The mask covers {product_share:.1%} of the image: the backdrop may not have been separated.")
        low_confidence = bool(confidence < _LOW_CONFIDENCE_BELOW)
        if low_confidence and undecided_share > 0.1 * _UNDECIDED_SHARE_AT_ZERO:
            notes.append(
                f"{undecided_share:.1%} of the mask is neither clearly product nor clearly background "
                f"({self._engine} was unsure)."
            )
        return round(float(confidence), 3), low_confidence, tuple(notes)


def _working_image(image: Image.Image) -> Image.Image:
    """The image itself, or a box-filtered reduction (alpha-premultiplied by Pillow) when it is huge."""
    longer = max(image.size)
    if longer <= _MAX_WORKING_SIDE:
        return image
    return image.reduce(-(-longer // _MAX_WORKING_SIDE))


def _refuse_non_commercial(name: str) -> None:
    """ConfigurationError for a model whose licence forbids commercial use (a file named like one too)."""
    lowered = name.lower()
    if any(lowered == refused or lowered.startswith(f"{refused}-") for refused in NON_COMMERCIAL_MODELS):
        raise ConfigurationError(
            f"rembg model {name!r} is licensed for non-commercial use only (BRIA RMBG-2.0: CC BY-NC 4.0; "
            "commercial use needs a paid agreement with BRIA). It is refused while commercial use is "
            "configured: pick a commercially usable model such as "
            f"{DEFAULT_REMBG_MODEL!r}, or pass --allow-non-commercial (commercial=False) if your use "
            "is non-commercial."
        )


def _import_rembg_sessions() -> dict[str, Any]:
    """rembg's session classes by name; ConfigurationError with the install command when absent."""
    global _REGISTRY
    with _REGISTRY_LOCK:  # Loading edits sys.modules: one thread at a time.
        if _REGISTRY is None:
            try:
                # onnxruntime first: rembg calls sys.exit(1) when it cannot import it.
                import onnxruntime  # noqa: F401

                _REGISTRY = _load_rembg_session_classes()
            except ImportError as error:
                raise ConfigurationError(
                    f"rembg background removal needs rembg and onnxruntime ({error}). Install them with: {INSTALL_HINT}"
                ) from error
        return _REGISTRY


def _load_rembg_session_classes() -> dict[str, Any]:
    """`rembg.sessions.sessions`, loaded without running `rembg/__init__.py` when rembg is not imported yet.

    `rembg/__init__.py` imports `rembg.bg`, which imports pymatting, scipy and scikit-image for
    `rembg.remove()`'s matting; we only need the sessions. pymatting compiles its numba kernels at
    import (about a minute when their cache cannot be written, e.g. a read-only Lambda image) and
    costs over a second even when cached; the sessions alone load in about 0.4 s.
    """
    if "rembg" in sys.modules:  # Someone imported the real package already: use it.
        from rembg.sessions import sessions

        return dict(sessions)
    spec = importlib.util.find_spec("rembg")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'rembg'")
    # A bare stand-in for the package lets Python import `rembg.sessions` from the real folder.
    stand_in = types.ModuleType("rembg")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules["rembg"] = stand_in
    try:
        return dict(importlib.import_module("rembg.sessions").sessions)
    finally:
        # Leave nothing half-built behind: a later `import rembg` elsewhere gets the whole package.
        # The classes we return keep their modules' globals alive.
        for name in [name for name in sys.modules if name == "rembg" or name.startswith("rembg.")]:
            del sys.modules[name]


def _supported_names(registry: dict[str, Any]) -> set[str]:
    """Session names that run locally from one model file, with no credential or prompt."""
    return {
        name
        for name, session_class in registry.items()
        if name not in _NOT_BY_NAME
        and getattr(session_class, "is_local", lambda: True)()
        and not getattr(session_class, "requires_credentials", lambda: False)()
    }


def _cached_session(
    session_class: Any, session_name: str, model_file: Path, download_into: Path | None, threads: int | None
) -> Any:
    """The process-wide session for this model file, built on first use."""
    key = (session_name, str(model_file), threads)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _build_session(session_class, session_name, model_file, download_into, threads)
            _SESSIONS[key] = session
        return session


def _build_session(
    session_class: Any, session_name: str, model_file: Path, download_into: Path | None, threads: int | None
) -> Any:
    """A rembg session on `model_file`; rembg's downloader runs only when `download_into` is given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        # One process per core already fills the machine: more threads per session only contend.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1

    if download_into is None:
        # The file is known to be there: hand it over instead of letting rembg look or fetch.
        overrides: dict[str, Any] = {"download_models": classmethod(lambda cls, *args, **kwargs: str(model_file))}
    else:
        # rembg's own download (with its checksum), into our folder and under the name we look for.
        # (birefnet-general-fp16 is converted from birefnet-general, which rembg fetches into its own home.)
        home = str(download_into)
        overrides = {
            attribute: classmethod(lambda cls, *args, **kwargs: home)
            for attribute in ("model_dir", "rembg_home", "legacy_home", "u2net_home")
        }
    local_class = type(f"Local{session_class.__name__}", (session_class,), overrides)
    try:
        # model_path is required by the *_custom sessions' constructors and ignored by the others.
        return local_class(session_name, options, model_path=str(model_file))
    except Exception as error:
        if download_into is not None:
            raise ConfigurationError(
                f"rembg could not fetch model {session_name!r} into {download_into} ({error}). Copy the "
                f"file {model_file} there by hand, or check the network."
            ) from error
        raise ConfigurationError(f"rembg could not load model {model_file} as {session_name!r}: {error}") from error
