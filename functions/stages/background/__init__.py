"""Background removal: a weight-free backdrop keyer and rembg sessions behind one interface."""

from pathlib import Path

from functions.errors import ConfigurationError
from functions.stages.background.base import BackgroundRemover, BackgroundResult, cutout_rows, make_cutout

__all__ = ["BackgroundRemover", "BackgroundResult", "background_remover_from_spec", "cutout_rows", "make_cutout"]

BACKGROUND_SPEC_HELP = "backdrop | rembg | rembg:<model name> | rembg:<path to .onnx>"


def background_remover_from_spec(
    spec: str,
    *,
    models_dir: Path | None = None,
    allow_download: bool = False,
    commercial: bool = True,
    threads: int | None = None,
) -> BackgroundRemover:
    """Build the engine a `--background` value names. Engines are imported lazily: rembg pulls onnxruntime."""
    name, _, model = spec.strip().partition(":")
    if name == "backdrop" and not model:
        from functions.stages.background.keyer import BackdropKeyer

        return BackdropKeyer()
    if name == "rembg":
        from functions.stages.background.rembg_engine import DEFAULT_REMBG_MODEL, RembgRemover

        return RembgRemover(
            model or DEFAULT_REMBG_MODEL,
            models_dir=models_dir,
            allow_download=allow_download,
            commercial=commercial,
            threads=threads,
        )
    raise ConfigurationError(f"--background {spec!r} is not understood; use {BACKGROUND_SPEC_HELP}.")
