"""Deployment choices, from CDK context (`-c key=value` or cdk.json), checked before anything is built."""

import re
from dataclasses import dataclass
from typing import Any

from constructs import Node

EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")
BRAND = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")
INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")


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
        )
