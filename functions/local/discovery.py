"""Finding the photos of a `catalog run`: one sub-folder per SKU (with an optional product.json), loose files each
their own SKU, and every other file listed too, so that a stray PDF or SVG is reported rather than skipped.
"""

from dataclasses import dataclass
from pathlib import Path

from functions.errors import CatalogError
from functions.stages.intake import parse_sidecar
from functions.stages.publish import safe_name
from schemas import ProcessingError, ProductSidecar
from schemas.product import SIDECAR_NAME

# Files a camera, OS or sync tool leaves beside photos; never product photos.
IGNORED_NAMES = frozenset({SIDECAR_NAME, "Thumbs.db", "desktop.ini", "Icon\r"})


@dataclass(frozen=True)
class InputPhoto:
    """One file found under the input folder, with the SKU it belongs to and what its sidecar says."""

    path: Path
    source: str  # relative to the input root, forward slashes
    sku: str
    output_stem: str  # relative to OUT, without the output kind and extension
    sidecar: ProductSidecar | None = None
    sidecar_error: ProcessingError | None = None


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES or name == "__MACOSX"


def read_sidecar(path: Path, display: str) -> tuple[ProductSidecar | None, ProcessingError | None]:
    """Parse a `product.json`; an error names the file and the field, and fails that SKU's photos only."""
    try:
        return parse_sidecar(path.read_bytes(), display), None
    except CatalogError as error:
        return None, ProcessingError(code=error.code, message=error.message)
    except OSError as error:
        return None, ProcessingError(code="invalid_sidecar", message=f"{display} cannot be read: {error}.")


def discover_inputs(root: Path, exclude: Path | None = None) -> list[InputPhoto]:
    """Photos under `root`: each sub-folder is a SKU (with an optional product.json), each loose file its own SKU.

    Every other file is listed too, so that a stray PDF or SVG is reported rather than silently skipped.
    """
    root = root.resolve()
    excluded = exclude.resolve() if exclude else None
    if root.is_file():
        return [InputPhoto(root, root.name, root.stem, f"{safe_name(root.stem)}/{safe_name(root.stem)}")]

    found: list[InputPhoto] = []
    for entry in sorted(root.iterdir()):
        if _is_ignored(entry.name) or (excluded and entry.resolve() == excluded):
            continue
        if entry.is_file():
            sku = entry.stem
            found.append(InputPhoto(entry, entry.name, sku, f"{safe_name(sku)}/{safe_name(entry.stem)}"))
        elif entry.is_dir():
            found.extend(_discover_sku_folder(root, entry, excluded))
    return found


def _discover_sku_folder(root: Path, folder: Path, excluded: Path | None) -> list[InputPhoto]:
    sidecar, sidecar_error = None, None
    sidecar_path = folder / SIDECAR_NAME
    if sidecar_path.is_file():
        sidecar, sidecar_error = read_sidecar(sidecar_path, sidecar_path.relative_to(root).as_posix())
    sku = sidecar.sku if sidecar and sidecar.sku else folder.name

    files = [
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and not any(_is_ignored(part) for part in path.relative_to(folder).parts)
        and not (excluded and excluded in path.resolve().parents)
    ]
    stems = [path.relative_to(folder).with_suffix("").as_posix() for path in files]
    photos = []
    for path, stem in zip(files, stems, strict=True):
        # Two files differing only by extension (front.jpg, front.png) must not share outputs.
        name = stem if stems.count(stem) == 1 else f"{stem}{path.suffix}"
        output_stem = f"{safe_name(sku)}/{safe_name(name.replace('/', '__'))}"
        photos.append(InputPhoto(path, path.relative_to(root).as_posix(), sku, output_stem, sidecar, sidecar_error))
    return photos
