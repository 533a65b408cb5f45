"""`schemas` imports a contract's module on first use (PEP 562), so a Lambda loads only the contracts it reads;
`from schemas import X` works as before, for every public name."""

import ast
import subprocess
import sys

import pytest

import schemas
from schemas import GenerationProvenance, ReviewItem, ReviewItemDetails
from tests.conftest import REPO_ROOT


def _loaded_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}; print(sorted(m for m in sys.modules if m.startswith('schemas')))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    ).stdout
    return ast.literal_eval(out.strip())


def test_importing_the_package_loads_no_contract_and_a_name_loads_only_its_module():
    # Given fresh interpreters
    # When only the package is imported, and then one contract from it
    bare = _loaded_after("import schemas")
    one = _loaded_after("from schemas import ExecutionInput")
    # Then the package alone loads no contract module, and ExecutionInput brings only its own module and base
    assert bare == ["schemas"]
    assert one == ["schemas", "schemas._base", "schemas.execution"]


def test_every_public_name_resolves_to_its_module_and_type_checkers_see_the_same_names():
    # Given the names the package promises, and the imports type checkers read (under TYPE_CHECKING)
    tree = ast.parse((REPO_ROOT / "schemas" / "__init__.py").read_text())
    type_checking = next(
        node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    declared = {
        alias.name: node.module
        for node in type_checking.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    # When each is looked up on the package
    resolved = {name: getattr(schemas, name) for name in schemas.__all__}
    # Then the three lists agree, every name is the object its module defines, and dir() lists them
    assert set(declared) == set(schemas.__all__) == set(schemas._MODULE_OF)
    assert all(declared[name] == schemas._MODULE_OF[name] for name in declared)
    assert all(value.__module__ == f"schemas.{schemas._MODULE_OF[name]}" for name, value in resolved.items())
    assert set(schemas.__all__) <= set(dir(schemas))


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="NoSuchContract"):
        schemas.NoSuchContract  # type: ignore[attr-defined]  # noqa: B018


def test_default_details_and_provenance_equal_validated_empty_ones():
    # Given an item that names no details (the defaults are made without building validators at import)
    item = ReviewItem(item_id="i1", sku="TEE-1", original="s3://b/o.jpg", generated="s3://b/g.png", job_kind="packshot")
    # Then its details are what validating empty input gives, and they dump and compare alike
    assert item.details == ReviewItemDetails.model_validate({})
    assert item.details.provenance == GenerationProvenance.model_validate({})
    assert item.model_dump()["details"] == ReviewItemDetails.model_validate({}).model_dump()
    assert item.details.model_fields_set == set()
    assert ReviewItem.model_validate_json(item.model_dump_json()) == item
