"""Finding photos: SKU folders, loose files, sidecars, and what is never treated as a photo."""

import json

from functions.local.discovery import discover_inputs


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_sub_folders_are_skus_and_loose_files_are_their_own_sku(tmp_path):
    # Given a SKU folder with a sidecar, a nested detail shot, a loose file and OS clutter
    _touch(tmp_path / "TEE-1" / "front.jpg")
    _touch(tmp_path / "TEE-1" / "details" / "collar.jpg")
    (tmp_path / "TEE-1" / "product.json").write_text(json.dumps({"title": "Tee", "category": "tops"}))
    _touch(tmp_path / "TEE-1" / ".DS_Store")
    _touch(tmp_path / "hoodie-9.png")
    _touch(tmp_path / ".hidden" / "x.jpg")
    _touch(tmp_path / "__MACOSX" / "._front.jpg")

    # When the folder is scanned
    photos = discover_inputs(tmp_path)

    # Then each photo is found once, with its SKU, and clutter and the sidecar are not photos
    assert [(p.source, p.sku) for p in photos] == [
        ("TEE-1/details/collar.jpg", "TEE-1"),
        ("TEE-1/front.jpg", "TEE-1"),
        ("hoodie-9.png", "hoodie-9"),
    ]
    assert photos[1].sidecar is not None and photos[1].sidecar.title == "Tee"
    assert photos[0].output_stem == "TEE-1/details__collar"


def test_sidecar_sku_overrides_the_folder_name(tmp_path):
    _touch(tmp_path / "folder" / "a.jpg")
    (tmp_path / "folder" / "product.json").write_text('{"sku": "SKU-42"}')
    [photo] = discover_inputs(tmp_path)
    assert photo.sku == "SKU-42"
    assert photo.output_stem == "SKU-42/a"


def test_an_invalid_sidecar_fails_only_its_own_sku_and_names_the_field(tmp_path):
    _touch(tmp_path / "BAD" / "a.jpg")
    (tmp_path / "BAD" / "product.json").write_text('{"category": "hats", "title": "x"}')
    _touch(tmp_path / "GOOD" / "b.jpg")

    bad, good = discover_inputs(tmp_path)

    assert bad.sidecar_error is not None
    assert bad.sidecar_error.code == "invalid_sidecar"
    assert "BAD/product.json" in bad.sidecar_error.message and "category" in bad.sidecar_error.message
    assert good.sidecar_error is None


def test_sidecar_that_is_not_json_is_reported(tmp_path):
    _touch(tmp_path / "S" / "a.jpg")
    (tmp_path / "S" / "product.json").write_text("{title: oops")
    [photo] = discover_inputs(tmp_path)
    assert photo.sidecar_error is not None and "S/product.json" in photo.sidecar_error.message


def test_same_stem_different_extension_get_distinct_outputs(tmp_path):
    _touch(tmp_path / "S" / "front.jpg")
    _touch(tmp_path / "S" / "front.png")
    stems = [p.output_stem for p in discover_inputs(tmp_path)]
    assert len(set(stems)) == 2


def test_skus_with_odd_characters_get_safe_output_paths(tmp_path):
    _touch(tmp_path / "Tee red:XL" / "a b.jpg")
    [photo] = discover_inputs(tmp_path)
    assert photo.sku == "Tee red:XL"
    assert photo.output_stem == "Tee_red_XL/a_b"


def test_the_output_folder_inside_the_input_is_not_scanned(tmp_path):
    _touch(tmp_path / "S" / "a.jpg")
    _touch(tmp_path / "out" / "S" / "a.packshot.jpg")
    photos = discover_inputs(tmp_path, exclude=tmp_path / "out")
    assert [p.source for p in photos] == ["S/a.jpg"]
