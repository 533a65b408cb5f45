"""Deployment choices, from CDK context (`-c key=value` or cdk.json), checked before anything is built."""

import re
from dataclasses import dataclass
from typing import Any

from constructs import Node

EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")
BRAND = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")
INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
PARTNER_SOURCE = re.compile(r"^aws\.partner/shopify\.com/[0-9]+/[\w.\-/]+$")
JOB_KINDS = ("packshot", "ghost_mannequin", "try_on", "lifestyle")  # schemas.JobKind's values
PACKSHOT_PRESETS = ("white-square", "transparent", "shadow")  # functions.stages.packshot's presets
PACKSHOT_SIZES = range(64, 10001)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class DeployConfig:
    brand: str = "demo"
    reviewer_emails: tuple[str, ...] = ("reviewer@example.com",)
    sender_email: str = "catalog@example.com"
    model_artefact_s3_uri: str = ""  # s3://bucket/key/model.tar.gz; empty when the weights are baked into the image
    instance_type: str = "ml.g5.xlarge"
    max_instances: int = 2
    commercial: bool = True
    background_spec: str = "rembg:u2net"
    rembg_model_file: str = "models/u2net.onnx"  # relative to the repository root, copied into the prepare image
    alarm_email: str = ""
    review_link_hours: int = 72
    packshot_preset: str = "white-square"
    packshot_size: int = 2000  # the square packshot's side in pixels
    default_jobs: str = "packshot"  # for SKUs whose product.json names no jobs
    # Reserved concurrency: prepare at ~5 s per photo keeps up with intake's ~50 starts a second at 250; the review
    # page serves a throttled API (20 requests/s) in well under a second per request.
    prepare_concurrency: int = 250
    review_page_concurrency: int = 10
    intake_via_event_bridge: bool = False  # intake through EventBridge "Object Created" instead of S3 notifications
    shopify_event_source: str = ""  # Shopify's partner event source name (aws.partner/shopify.com/...); empty: none

    def __post_init__(self) -> None:
        problems = []
        if not BRAND.match(self.brand):
            problems.append(f"brand {self.brand!r}: lower-case letters, digits and '-', at most 64")
        bad = [email for email in (*self.reviewer_emails, self.sender_email) if not EMAIL.match(email)]
        if bad or not self.reviewer_emails:
            problems.append(f"reviewerEmails/senderEmail: not email addresses: {bad or 'none given'}")
        if self.model_artefact_s3_uri and not re.match(r"^s3://[a-z0-9.\-]{3,63}/.+", self.model_artefact_s3_uri):
            problems.append(f"modelArtefactS3Uri {self.model_artefact_s3_uri!r}: expected s3://bucket/key")
        if not INSTANCE_TYPE.match(self.instance_type):
            problems.append(f"instanceType {self.instance_type!r}: expected e.g. ml.g5.xlarge")
        if not 1 <= self.max_instances <= 20:
            problems.append(f"maxInstances {self.max_instances}: from 1 to 20")
        if not 1 <= self.review_link_hours <= 720:
            problems.append(f"reviewLinkHours {self.review_link_hours}: from 1 to 720")
        if self.packshot_preset not in PACKSHOT_PRESETS:
            problems.append(f"packshotPreset {self.packshot_preset!r}: one of {', '.join(PACKSHOT_PRESETS)}")
        if self.packshot_size not in PACKSHOT_SIZES:
            problems.append(
                f"packshotSize {self.packshot_size}: from {PACKSHOT_SIZES[0]} to {PACKSHOT_SIZES[-1]} pixels"
            )
        for name, value in (
            ("prepareConcurrency", self.prepare_concurrency),
            ("reviewPageConcurrency", self.review_page_concurrency),
        ):
            if not 1 <= value <= 1000:
                problems.append(f"{name} {value}: reserved concurrency from 1 to 1000")
        unknown_jobs = [job for job in self.default_jobs.split(",") if job.strip() not in JOB_KINDS]
        if unknown_jobs:
            problems.append(f"defaultJobs {self.default_jobs!r}: comma-separated, from {', '.join(JOB_KINDS)}")
        if self.shopify_event_source and not PARTNER_SOURCE.match(self.shopify_event_source):
            problems.append(
                f"shopifyEventSource {self.shopify_event_source!r}: expected aws.partner/shopify.com/<app id>/<name>"
            )
        if problems:
            raise ValueError("invalid deployment context: " + "; ".join(problems))

    @classmethod
    def from_context(cls, node: Node) -> "DeployConfig":
        def get(name: str, default: Any) -> Any:
            value = node.try_get_context(name)
            return default if value is None else value

        defaults = cls.__dataclass_fields__
        emails = get("reviewerEmails", ",".join(defaults["reviewer_emails"].default))  # type: ignore[arg-type]
        if isinstance(emails, str):
            emails = [email.strip() for email in emails.split(",") if email.strip()]
        return cls(
            brand=str(get("brand", cls.brand)),
            reviewer_emails=tuple(str(email) for email in emails),
            sender_email=str(get("senderEmail", cls.sender_email)),
            model_artefact_s3_uri=str(get("modelArtefactS3Uri", cls.model_artefact_s3_uri)),
            instance_type=str(get("instanceType", cls.instance_type)),
            max_instances=int(get("maxInstances", cls.max_instances)),
            commercial=_bool(get("commercial", cls.commercial)),
            background_spec=str(get("backgroundSpec", cls.background_spec)),
            rembg_model_file=str(get("rembgModelFile", cls.rembg_model_file)),
            alarm_email=str(get("alarmEmail", cls.alarm_email)),
            review_link_hours=int(get("reviewLinkHours", cls.review_link_hours)),
            packshot_preset=str(get("packshotPreset", cls.packshot_preset)),
            packshot_size=int(get("packshotSize", cls.packshot_size)),
            default_jobs=str(get("defaultJobs", cls.default_jobs)),
            prepare_concurrency=int(get("prepareConcurrency", cls.prepare_concurrency)),
            review_page_concurrency=int(get("reviewPageConcurrency", cls.review_page_concurrency)),
            intake_via_event_bridge=_bool(get("intakeViaEventBridge", cls.intake_via_event_bridge)),
            shopify_event_source=str(get("shopifyEventSource", cls.shopify_event_source)),
        )
