"""The brand store's versions and promotions: nothing overwritten, half-written versions invisible, promote and
rollback as an append-only log, the promotion gate's seam, on local files and on S3 (moto)."""

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from functions.adapters.aws.s3_storage import S3Storage
from functions.adapters.local.files import FileStorage, file_uri
from functions.stages.brand import resolve_brand
from functions.stages.brand_versions import (
    BrandStoreError,
    GateVerdict,
    active_version,
    list_versions,
    promote,
    promotion_log,
    register_version,
    rollback,
    version_uri,
)

ADAPTER = "pytorch_lora_weights.safetensors"


def _files(tag: bytes) -> dict[str, bytes]:
    return {ADAPTER: b"lora-" + tag, "training.json": b'{"steps": 2}', "validation/grid.png": b"png-" + tag}


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    """(storage, brands_uri) on a local folder and on a moto bucket."""
    if request.param == "file":
        (tmp_path / "brands").mkdir()
        yield FileStorage([tmp_path]), file_uri(tmp_path / "brands")
        return
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="brand-store")
        yield S3Storage(s3), "s3://brand-store/brands/"


def test_each_registration_takes_the_next_number_and_never_overwrites(store):
    storage, brands = store
    # Given a brand with one registered version
    first = register_version(storage, brands, "acme", "ss27", _files(b"1"), run_key="run-1", source="local")

    # When a second, different training run registers under the same name
    second = register_version(storage, brands, "acme", "ss27", _files(b"2"), run_key="run-2", source="local")

    # Then it is v2, and v1's files are unchanged
    assert (first.ref, second.ref) == ("ss27@v1", "ss27@v2")
    assert storage.read_bytes(f"{version_uri(brands, 'acme', 'ss27@v1')}/{ADAPTER}") == b"lora-1"
    assert [version.ref for version in list_versions(storage, brands, "acme")] == ["ss27@v1", "ss27@v2"]


def test_a_rerun_of_the_same_training_returns_its_version_instead_of_a_copy(store):
    storage, brands = store
    # Given a registered version
    first = register_version(storage, brands, "acme", "ss27", _files(b"1"), run_key="run-1", source="local")

    # When the same run registers again (the command was re-run)
    again = register_version(storage, brands, "acme", "ss27", _files(b"1"), run_key="run-1", source="local")

    # Then no second version appears
    assert again.ref == first.ref
    assert len(list_versions(storage, brands, "acme")) == 1


def test_a_half_written_version_is_invisible_and_its_rerun_finishes_it(store):
    storage, brands = store
    # Given a registration that was killed after its claim and the adapter, before version.json
    folder = version_uri(brands, "acme", "ss27@v1")
    storage.write_new(f"{folder}/.claim.json", json.dumps({"run_key": "run-1"}).encode())
    storage.write_new(f"{folder}/{ADAPTER}", b"lora-1")

    # Then no version is listed, and it cannot be promoted
    assert list_versions(storage, brands, "acme") == []
    with pytest.raises(BrandStoreError, match="no version ss27@v1"):
        promote(storage, brands, "acme", "ss27@v1", gate=None, force_reason=None, actor="test")

    # When another run registers, it skips the claimed number; when the killed run is re-run, it finishes v1
    other = register_version(storage, brands, "acme", "ss27", _files(b"2"), run_key="run-2", source="local")
    resumed = register_version(storage, brands, "acme", "ss27", _files(b"1"), run_key="run-1", source="local")
    assert (other.ref, resumed.ref) == ("ss27@v2", "ss27@v1")
    assert [version.ref for version in list_versions(storage, brands, "acme")] == ["ss27@v1", "ss27@v2"]


def test_a_resumed_registration_refuses_to_replace_different_bytes(store):
    storage, brands = store
    # Given a claimed folder whose adapter holds other bytes than the re-run brings
    folder = version_uri(brands, "acme", "ss27@v1")
    storage.write_new(f"{folder}/.claim.json", json.dumps({"run_key": "run-1"}).encode())
    storage.write_new(f"{folder}/{ADAPTER}", b"something else")

    # When the run registers, Then it stops naming the file, which keeps its bytes
    with pytest.raises(BrandStoreError, match="already exists with other content"):
        register_version(storage, brands, "acme", "ss27", _files(b"1"), run_key="run-1", source="local")
    assert storage.read_bytes(f"{folder}/{ADAPTER}") == b"something else"


def test_promote_and_rollback_move_the_active_version_and_keep_the_log(store):
    storage, brands = store
    # Given three versions, promoted one after another
    for tag in (b"1", b"2", b"3"):
        register_version(storage, brands, "acme", "ss27", _files(tag), run_key=f"run-{tag.decode()}", source="local")
    for ref in ("ss27@v1", "ss27@v2", "ss27@v3"):
        promote(storage, brands, "acme", ref, gate=None, force_reason=None, actor="ana")
    assert active_version(storage, brands, "acme").ref == "ss27@v3"

    # When the brand rolls back twice
    rollback(storage, brands, "acme", actor="ana")
    assert active_version(storage, brands, "acme").ref == "ss27@v2"
    rollback(storage, brands, "acme", actor="ana")

    # Then it is back at v1, a third rollback has nowhere to go, and all five changes are in the log
    assert active_version(storage, brands, "acme").ref == "ss27@v1"
    with pytest.raises(BrandStoreError, match="no earlier active version"):
        rollback(storage, brands, "acme", actor="ana")
    log = promotion_log(storage, brands, "acme")
    assert [(record.action.value, record.version, record.previous) for record in log] == [
        ("promote", "ss27@v1", None),
        ("promote", "ss27@v2", "ss27@v1"),
        ("promote", "ss27@v3", "ss27@v2"),
        ("rollback", "ss27@v2", "ss27@v3"),
        ("rollback", "ss27@v1", "ss27@v2"),
    ]


def test_a_failing_gate_refuses_unless_forced_with_a_recorded_reason(store):
    storage, brands = store
    # Given v1 active and a v2 the gate says regressed
    for tag in (b"1", b"2"):
        register_version(storage, brands, "acme", "ss27", _files(tag), run_key=f"run-{tag.decode()}", source="local")
    promote(storage, brands, "acme", "ss27@v1", gate=None, force_reason=None, actor="ana")
    asked: list[tuple[str, str | None]] = []

    def gate(candidate: str, active: str | None) -> GateVerdict:
        asked.append((candidate, active))
        return GateVerdict(passed=False, reasons=("clip_score: 0.31 < 0.33",), report_uri="file:///r/report.html")

    # When v2 is promoted without force, Then it is refused with the gate's reasons, and v1 stays active
    with pytest.raises(BrandStoreError, match=r"clip_score: 0.31 < 0.33.*report.html"):
        promote(storage, brands, "acme", "ss27@v2", gate=gate, force_reason=None, actor="ana")
    assert asked == [("ss27@v2", "ss27@v1")]
    assert active_version(storage, brands, "acme").ref == "ss27@v1"

    # And a forced promotion needs a non-empty reason, which is recorded with the gate's verdict
    with pytest.raises(BrandStoreError, match="needs a reason"):
        promote(storage, brands, "acme", "ss27@v2", gate=gate, force_reason=" ", actor="ana")
    record = promote(storage, brands, "acme", "ss27@v2", gate=gate, force_reason="launch deadline", actor="ana")
    assert (record.forced_reason, record.gate_passed, record.gate_reasons) == (
        "launch deadline",
        False,
        ("clip_score: 0.31 < 0.33",),
    )
    assert record.gate_report_uri == "file:///r/report.html"
    assert active_version(storage, brands, "acme").ref == "ss27@v2"


def test_the_active_version_reaches_the_resolved_profile(tmp_path):
    # Given a brand store with a profile and a promoted version with pivotal-tuning embeddings
    brands_dir = tmp_path / "brands"
    (brands_dir / "acme").mkdir(parents=True)
    (brands_dir / "acme" / "profile.json").write_text(json.dumps({"brand": "acme", "trigger_token": "old"}))
    storage, brands = FileStorage([tmp_path]), file_uri(brands_dir)
    files = {**_files(b"1"), "learned_embeds.safetensors": b"emb"}
    register_version(
        storage, brands, "acme", "ss27", files, run_key="r", source="local",
        embeddings_file="learned_embeds.safetensors", trigger_token="acmestyle",
    )  # fmt: skip
    promote(storage, brands, "acme", "ss27@v1", gate=None, force_reason=None, actor="ana")

    # When prepare resolves the brand
    selection = resolve_brand("acme", brands, storage)

    # Then the GPU jobs get the version's adapter, embeddings and trigger token, and the resolution names it
    [adapter] = selection.profile.adapters
    folder = Path(brands_dir / "acme" / "versions" / "ss27@v1")
    assert adapter.version == "ss27@v1"
    assert adapter.uri == f"{brands}/acme/versions/ss27@v1/{ADAPTER}"
    assert adapter.embeddings_uri.endswith("ss27@v1/learned_embeds.safetensors")
    assert (folder / ADAPTER).read_bytes() == b"lora-1"
    assert selection.profile.trigger_token == "acmestyle"
    assert selection.resolved.adapters == {"ss27": "ss27@v1"}


def test_a_brand_with_a_promoted_version_but_no_profile_still_gets_its_adapter(tmp_path):
    # Given only a promoted version
    (tmp_path / "brands").mkdir()
    storage, brands = FileStorage([tmp_path]), file_uri(tmp_path / "brands")
    register_version(storage, brands, "acme", "ss27", _files(b"1"), run_key="r", source="local")
    promote(storage, brands, "acme", "ss27@v1", gate=None, force_reason=None, actor="ana")

    # When prepare resolves the brand, Then the profile is the version alone
    selection = resolve_brand("acme", brands, storage)
    assert [adapter.version for adapter in selection.profile.adapters] == ["ss27@v1"]
