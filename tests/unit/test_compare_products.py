"""Which product cutouts `catalog compare --products DIR` takes: a `catalog run` output folder, or PNGs with alpha."""

from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from functions.local.cli import app
from functions.local.synthetic_photos import render_product_photo
from functions.stages.comparison.grid import find_products


def test_a_catalog_run_output_folder_gives_each_photos_cutout(tmp_path: Path) -> None:
    # Given a `catalog run` output for two SKUs, one of them with two photos
    photos = tmp_path / "photos"
    shots = (("SKU-A/front.jpg", "tshirt"), ("SKU-A/back.jpg", "tshirt"), ("SKU-B/front.jpg", "dress"))
    for relative, garment in shots:
        (photos / relative).parent.mkdir(parents=True, exist_ok=True)
        render_product_photo(garment, (180, 40, 40), (244, 244, 244), size=(240, 320)).image.save(photos / relative)
    out = tmp_path / "out"
    assert (
        CliRunner().invoke(app, ["run", str(photos), "--out", str(out), "--size", "256", "--workers", "1"]).exit_code
        == 0
    )

    # When the output folder is passed as the products
    products = {product.sku: product.cutout for product in find_products(out)}

    # Then each photo's cutout is a product, the SKU's second photo under its own name; masks and previews are not
    assert set(products) == {"SKU-A", "SKU-A-front", "SKU-B"}
    assert all(path.name.endswith(".cutout.png") and Image.open(path).mode == "RGBA" for path in products.values())


def test_a_folder_of_pngs_takes_only_those_with_alpha(tmp_path: Path) -> None:
    # Given a cutout, its mask and an opaque preview side by side, and a loose cutout
    (tmp_path / "SKU-C").mkdir()
    Image.new("RGBA", (8, 8), (200, 0, 0, 255)).save(tmp_path / "SKU-C" / "front.cutout.png")
    Image.new("L", (8, 8), 255).save(tmp_path / "SKU-C" / "front.mask.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "SKU-C" / "preview.png")
    Image.new("RGBA", (8, 8)).save(tmp_path / "SKU-D.png")

    # When the folder is searched
    products = {product.sku: product.cutout.name for product in find_products(tmp_path)}

    # Then only the images with alpha are products, named by their folder or stem
    assert products == {"SKU-C": "front.cutout.png", "SKU-D": "SKU-D.png"}
