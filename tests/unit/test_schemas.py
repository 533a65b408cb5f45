"""The contracts: immutable, strict about unknown fields, exported as JSON Schema."""

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import JobKind, JobRequest, ProductSidecar, ReviewDecision, ReviewRequest, Verdict
from schemas.export import EXPORTED, write_json_schemas


def test_sidecar_refuses_unknown_fields_and_names_them():
    # Given a product.json with a typo'd field
    # When it is parsed
    with pytest.raises(ValidationError) as caught:
        ProductSidecar.model_validate_json('{"title": "Tee", "colur": "red"}')
    # Then the error names the unknown field
    assert "colur" in str(caught.value)


def test_sidecar_defaults_to_a_packshot_and_is_frozen():
    sidecar = ProductSidecar.model_validate_json('{"category": "tops"}')
    assert sidecar.jobs == (JobKind.PACKSHOT,)
    with pytest.raises(ValidationError):
        sidecar.title = "changed"  # type: ignore[misc]


def test_sidecar_refuses_an_unknown_category():
    with pytest.raises(ValidationError) as caught:
        ProductSidecar.model_validate({"category": "hats-and-gloves"})
    assert "category" in str(caught.value)


def test_job_request_accepts_s3_and_file_uris_only():
    base = {"job_id": "job-0001-abcd", "kind": "lifestyle", "brand": "acme", "sku": "TEE-1"}
    ok = JobRequest.model_validate(
        {**base, "inputs": {"product": "s3://bucket-a/in/p.png"}, "output_prefix": "file:///tmp/out/"}
    )
    assert ok.kind is JobKind.LIFESTYLE
    with pytest.raises(ValidationError) as caught:
        JobRequest.model_validate({**base, "inputs": {"product": "http://x/p.png"}, "output_prefix": "s3://b-b/o/"})
    assert "inputs" in str(caught.value)


def test_a_rejection_needs_a_reason_but_an_approval_does_not():
    now = datetime.now(UTC)
    ReviewDecision(item_id="i1", verdict=Verdict.APPROVED, reviewer="r@example.com", decided_at=now)
    with pytest.raises(ValidationError, match="reason"):
        ReviewDecision(item_id="i1", verdict=Verdict.REJECTED, reviewer="r@example.com", decided_at=now)


@pytest.mark.parametrize(
    "address", ["reviewer", "reviewer@localhost", "a@b.example, c@d.example", "a@b.example\r\nBcc: x@y.example"]
)
def test_the_review_request_refuses_what_is_not_one_mail_address(address):
    # Given reviewer addresses already checked where they entered (profile, stack settings, --reviewer), When one that
    # could not be a single address reaches the workflow's contract, Then it is refused rather than mailed
    item = {"item_id": "i1", "sku": "S", "original": "s3://b/o.jpg", "generated": "s3://b/g.png"}
    request = {"brand": "acme", "items": [{**item, "job_kind": "packshot"}]}
    with pytest.raises(ValidationError, match=r"reviewers\.0"):
        ReviewRequest.model_validate({**request, "reviewers": [address]})
    accepted = ReviewRequest.model_validate({**request, "reviewers": ["Lead.Buyer+ss27@acme.example"]})
    assert accepted.reviewers == ("Lead.Buyer+ss27@acme.example",)


def test_every_contract_is_written_as_a_json_schema(tmp_path):
    # When the schemas are exported
    written = write_json_schemas(tmp_path)
    # Then there is one valid JSON Schema file per contract, forbidding unknown properties
    assert len(written) == len(EXPORTED)
    sidecar = json.loads((tmp_path / "product-sidecar.schema.json").read_text())
    assert sidecar["additionalProperties"] is False
    assert "category" in sidecar["properties"]
    manifest = json.loads((tmp_path / "run-manifest.schema.json").read_text())
    assert "entries" in manifest["required"]
