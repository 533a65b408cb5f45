"""Resolve a photo's brand to its profile in the brand store: `<brands>/<brand>/profile.json`.

The brand store is a folder locally (`--brands DIR`) and an S3 prefix on AWS; both are a base URI read through the
storage port. A profile may name its adapters and model photos relative to its own folder
(`adapters/ss27.safetensors`); they are resolved to full URIs here, so the GPU jobs get only absolute ones.
No profile means packshot-only defaults, with a note; a malformed profile fails the image naming the field.
The brand's promoted version (functions/stages/brand_versions.py) is merged in as its adapter, named `name@vN`.
"""

import json
import re
from dataclasses import dataclass
from typing import cast

from pydantic import ValidationError

from functions.errors import IntakeError, field_problems
from functions.ports import BlobStorage
from functions.stages.brand_versions import BrandStoreError, VersionStorage, active_version, with_active_version
from schemas import BrandProfile, ResolvedBrand
from schemas.brand_versions import BrandVersion

PROFILE_NAME = "profile.json"
# A brand is a folder name in the store: the BrandProfile's own rule, so a key can never climb out of the store.
_BRAND = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")
_RELATIVE_URI_FIELDS = (("adapters", "uri"), ("model_library", "uri"))


@dataclass(frozen=True)
class BrandSelection:
    """What prepare passes on: the resolution for the payloads, and the profile for the jobs."""

    resolved: ResolvedBrand
    profile: BrandProfile | None


def profile_uri(brands_uri: str, brand: str) -> str:
    return f"{brands_uri.rstrip('/')}/{brand}/{PROFILE_NAME}"


def _absolute(uri: str, folder_uri: str) -> str:
    if "://" in uri:
        return uri
    if uri.startswith("/") or ".." in uri.split("/"):
        raise ValueError(f"{uri!r} must be a URI or a path inside the brand's folder")
    return f"{folder_uri}/{uri}"


def parse_profile(data: bytes, uri: str, brand: str) -> BrandProfile:
    """A profile's bytes -> BrandProfile with absolute URIs; IntakeError `invalid_brand_profile` names the field."""
    folder_uri = uri.rsplit("/", 1)[0]
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise IntakeError("invalid_brand_profile", f"{uri} is not valid: (top level): expected a JSON object.")
        for list_name, field in _RELATIVE_URI_FIELDS:
            for index, entry in enumerate(raw.get(list_name) or ()):
                if isinstance(entry, dict) and isinstance(entry.get(field), str):
                    try:
                        entry[field] = _absolute(entry[field], folder_uri)
                    except ValueError as error:
                        raise IntakeError(
                            "invalid_brand_profile", f"{uri} is not valid: {list_name}.{index}.{field}: {error}."
                        ) from error
        profile = BrandProfile.model_validate(raw)
    except json.JSONDecodeError as error:
        raise IntakeError("invalid_brand_profile", f"{uri} is not valid JSON: {error}.") from error
    except ValidationError as error:
        problems = field_problems(error)
        raise IntakeError("invalid_brand_profile", f"{uri} is not valid: {problems}.") from error
    if profile.brand != brand:
        message = f"{uri} is not valid: brand: says {profile.brand!r}, but it is {brand!r}'s profile."
        raise IntakeError("invalid_brand_profile", message)
    return profile


def resolve_brand(brand: str, brands_uri: str | None, storage: BlobStorage) -> BrandSelection:
    """The brand's profile from the store, or packshot-only defaults (with a note) when it has none."""
    if not _BRAND.match(brand):
        raise IntakeError(
            "invalid_brand",
            f"brand {brand!r}: a brand is lower-case letters, digits and '-' (at most 64), as in incoming/<brand>/.",
        )
    if not brands_uri:
        return BrandSelection(ResolvedBrand(brand=brand, note="No brand store is configured: packshot defaults."), None)
    uri = profile_uri(brands_uri, brand)
    active = _active_version(brand, brands_uri, storage)
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        if active is None:
            note = f"No profile for brand {brand!r} at {uri}: packshot defaults, GPU jobs without brand adapters."
            return BrandSelection(ResolvedBrand(brand=brand, note=note), None)
        data = json.dumps({"brand": brand}).encode()
    profile = parse_profile(data, uri, brand)
    if active is not None:
        profile = with_active_version(profile, active, brands_uri)
    adapters = {adapter.name: adapter.version or "unversioned" for adapter in profile.adapters}
    return BrandSelection(ResolvedBrand(brand=brand, profile_uri=uri, adapters=adapters), profile)


def _active_version(brand: str, brands_uri: str, storage: BlobStorage) -> BrandVersion | None:
    """The promoted version (`catalog brand promote`), read where the storage can list; a broken store fails loudly."""
    if not hasattr(storage, "list_uris"):  # a read-only port (no versions to find there)
        return None
    try:
        return active_version(cast(VersionStorage, storage), brands_uri, brand)
    except (BrandStoreError, ValidationError) as error:
        message = f"brand {brand!r}: the active version is unusable: {error}"
        raise IntakeError("invalid_brand_version", message) from error
