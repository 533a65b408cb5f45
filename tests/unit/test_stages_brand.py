"""Resolving a photo's brand to its profile in the brand store (`<brands>/<brand>/profile.json`), through the
storage port: a folder locally, an S3 prefix on AWS. A fake in-memory store stands in for both."""

import json

import pytest

from functions.errors import IntakeError
from functions.stages.brand import parse_profile, profile_uri, resolve_brand
from schemas import BrandProfile

BRANDS = "s3://catalog-brands/brands/"
PROFILE = "s3://catalog-brands/brands/acme/profile.json"


class MemoryStorage:
    """The storage port as a dict of URI -> bytes; a missing URI raises FileNotFoundError, as the adapters do."""

    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        self.blobs = dict(blobs or {})
        self.reads: list[str] = []

    def read_bytes(self, uri: str) -> bytes:
        self.reads.append(uri)
        if uri not in self.blobs:
            raise FileNotFoundError(uri)
        return self.blobs[uri]

    def write_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.blobs[uri] = data


def profile(**changes) -> dict:
    document = {
        "brand": "acme",
        "adapters": [
            {"name": "acme-ss27", "uri": "adapters/ss27.safetensors", "version": "v3"},
            {"name": "shared-studio", "uri": "s3://catalog-brands/shared/studio.safetensors"},
        ],
        "model_library": [{"model_id": "m1", "uri": "models/m1.jpg"}],
        "reviewers": ["lead@acme.example"],
    }
    return document | changes


def store_with(document: dict | bytes) -> MemoryStorage:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    return MemoryStorage({PROFILE: data})


def test_the_profile_is_read_from_the_brands_own_folder():
    # Given a brand store URI with or without its trailing slash
    # When the profile location is built, Then it is <store>/<brand>/profile.json either way
    assert profile_uri(BRANDS, "acme") == PROFILE
    assert profile_uri(BRANDS.rstrip("/"), "acme") == PROFILE
    assert profile_uri("file:///srv/brands/", "acme") == "file:///srv/brands/acme/profile.json"


def test_a_stored_profile_resolves_with_its_adapters_and_versions():
    # Given acme's profile in the store
    storage = store_with(profile())

    # When the brand is resolved
    selection = resolve_brand("acme", BRANDS, storage)

    # Then the payload says which profile applies and which adapter versions it names (no note)
    assert selection.resolved.brand == "acme"
    assert selection.resolved.profile_uri == PROFILE
    assert selection.resolved.adapters == {"acme-ss27": "v3", "shared-studio": "unversioned"}
    assert selection.resolved.note is None
    # And the profile itself is there for the GPU jobs
    assert isinstance(selection.profile, BrandProfile) and selection.profile.reviewers == ("lead@acme.example",)
    assert storage.reads == [PROFILE]


def test_relative_uris_become_uris_in_the_brands_folder_and_absolute_ones_are_kept():
    # Given a profile naming an adapter and a model photo relative to its own folder, and one adapter by full URI
    # When it is parsed
    parsed = parse_profile(json.dumps(profile()).encode(), PROFILE, "acme")

    # Then the relative ones point into s3://.../brands/acme/, the absolute one is untouched
    assert [adapter.uri for adapter in parsed.adapters] == [
        "s3://catalog-brands/brands/acme/adapters/ss27.safetensors",
        "s3://catalog-brands/shared/studio.safetensors",
    ]
    assert parsed.model_library[0].uri == "s3://catalog-brands/brands/acme/models/m1.jpg"


def test_a_local_profile_resolves_to_file_uris():
    # Given the brand store as a local folder
    uri = "file:///srv/brands/acme/profile.json"
    # When the profile is parsed, Then its relative adapter is a file:// URI in the brand's folder
    parsed = parse_profile(json.dumps(profile()).encode(), uri, "acme")
    assert parsed.adapters[0].uri == "file:///srv/brands/acme/adapters/ss27.safetensors"


def test_no_profile_means_packshot_defaults_with_a_note():
    # Given an empty brand store
    # When the brand is resolved
    selection = resolve_brand("acme", BRANDS, MemoryStorage())

    # Then there is no profile, and the note says so and where it looked
    assert selection.profile is None
    assert selection.resolved.profile_uri is None and selection.resolved.adapters == {}
    assert PROFILE in selection.resolved.note and "packshot defaults" in selection.resolved.note


def test_no_brand_store_configured_means_packshot_defaults_with_a_note():
    # Given no brand store at all (a local run without --brands), When the brand is resolved
    selection = resolve_brand("acme", None, MemoryStorage())
    # Then nothing is read and the note says no store is configured
    assert selection.profile is None and "No brand store" in selection.resolved.note


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"adapters": [{"name": "acme-ss27", "uri": "a.safetensors", "weight": 5}]}, "adapters.0.weight"),
        ({"adapters": [{"name": "has space", "uri": "a.safetensors"}]}, "adapters.0.name"),
        ({"colour_palette": ["red"]}, "colour_palette"),
        ({"reviewers": "lead@acme.example"}, "reviewers"),
        ({"reviewers": ["lead@acme.example", "buyer at acme"]}, "reviewers.1"),
    ],
)
def test_a_malformed_profile_fails_naming_the_field(change, field):
    # Given a profile with one bad field
    storage = store_with(profile(**change))

    # When the brand is resolved, Then it fails as invalid_brand_profile, naming the profile and the field
    with pytest.raises(IntakeError) as raised:
        resolve_brand("acme", BRANDS, storage)
    assert raised.value.code == "invalid_brand_profile"
    assert PROFILE in raised.value.message and field in raised.value.message


@pytest.mark.parametrize("bad", ["../other/adapters/theirs.safetensors", "/etc/passwd", "a/../../b.safetensors"])
def test_a_relative_uri_that_leaves_the_brands_folder_is_refused(bad):
    # Given a profile whose adapter path climbs out of the brand's folder
    document = profile(adapters=[{"name": "acme-ss27", "uri": bad}])

    # When it is parsed, Then it fails naming the field
    with pytest.raises(IntakeError) as raised:
        parse_profile(json.dumps(document).encode(), PROFILE, "acme")
    assert raised.value.code == "invalid_brand_profile" and "adapters.0.uri" in raised.value.message


@pytest.mark.parametrize(("data", "says"), [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object")])
def test_a_profile_that_is_not_a_json_object_is_refused(data, says):
    # Given a profile file that is not a JSON object, When it is parsed, Then it fails saying what is wrong
    with pytest.raises(IntakeError) as raised:
        parse_profile(data, PROFILE, "acme")
    assert raised.value.code == "invalid_brand_profile" and says in raised.value.message


def test_a_profile_for_another_brand_is_refused():
    # Given acme's folder holding a profile that says it is globex's
    storage = store_with(profile(brand="globex"))

    # When acme is resolved, Then it fails: another brand's adapters must never style acme's photos
    with pytest.raises(IntakeError) as raised:
        resolve_brand("acme", BRANDS, storage)
    assert raised.value.code == "invalid_brand_profile" and "globex" in raised.value.message


@pytest.mark.parametrize("brand", ["../globex", "Acme", "acme/x", "", "a" * 65])
def test_a_brand_that_is_not_a_folder_name_is_refused_before_anything_is_read(brand):
    # Given a brand taken from an upload key that could climb out of the store
    storage = MemoryStorage()

    # When it is resolved, Then it is refused as invalid_brand and the store is never read
    with pytest.raises(IntakeError) as raised:
        resolve_brand(brand, BRANDS, storage)
    assert raised.value.code == "invalid_brand" and storage.reads == []
