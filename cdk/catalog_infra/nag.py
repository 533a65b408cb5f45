"""cdk-nag AwsSolutions acknowledgements: each one scoped to the construct it concerns, naming the exact finding
(cdk-nag 3 matches finding ids exactly) and saying why it is acceptable. Anything else fails `cdk synth`.
"""

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
from constructs import IConstruct

from .storage import BRANDS_PREFIX

X_RAY = "X-Ray's PutTraceSegments/PutTelemetryRecords accept no resource but '*' (active tracing)."
S3_PUT_SET = "CDK's S3 put grant (s3:Abort* for multipart uploads), limited to one key prefix of one bucket."
S3_PREFIX = "One key prefix of one bucket: the narrowest scope S3 offers for objects that are created at run time."
BRAND_STORE = (
    "Read-only on the brand store (`brands/` of the brands bucket): the profile, adapters and model photos are "
    "named by the brand at run time and curated by the brand's ML owner."
)
KMS_SET = "kms:GenerateDataKey*/ReEncrypt* from CDK's encrypt/decrypt grant, on one customer-managed key of this stack."
SAGEMAKER_LOGS = "SageMaker creates the endpoint's log groups under /aws/sagemaker/ at run time; limited to that path."
SAGEMAKER_LOG_GROUPS = "arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group//aws/sagemaker/*"
TABLE_INDEXES = (
    "CDK's DynamoDB table grant names the table and its indexes (`<table>/index/*`): one table of this stack, "
    "whose only index is a sparse keys-only queue of due work; actions stay those of the table grant."
)
LAMBDA_VERSIONS = "Step Functions may invoke the task function's versions and aliases (`<function arn>:*`), no other."


def _arn(stack: Stack, construct: IConstruct) -> str:
    child = construct.node.default_child
    assert isinstance(child, CfnResource), construct.node.path
    return f"<{stack.get_logical_id(child)}.Arn>"


def _find(stack: Stack, path: str) -> IConstruct:
    node: IConstruct = stack
    for part in path.split("/"):
        node = node.node.find_child(part)
    return node


def _iam5_for_roles(stack: Stack) -> dict[str, str]:
    buckets = {name: _arn(stack, _find(stack, f"Storage/{name}")) for name in ("Intake", "Work", "Output")}
    prefixes = {
        "Intake": ("incoming/*",),
        "Work": ("prepared/*", "gpu/requests/*", "gpu/outputs/*", "gpu/results/*", "gpu/failures/*"),
        "Output": ("approved/*", "feedback/*"),
    }
    findings = {"AwsSolutions-IAM5[Resource::*]": X_RAY}
    findings["AwsSolutions-IAM5[Action::s3:Abort*]"] = S3_PUT_SET
    for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
        findings[f"AwsSolutions-IAM5[Action::{action}]"] = KMS_SET
    for name, bucket_prefixes in prefixes.items():
        for prefix in bucket_prefixes:
            findings[f"AwsSolutions-IAM5[Resource::{buckets[name]}/{prefix}]"] = S3_PREFIX
    return findings


def _publishing_profiles(stack: Stack) -> dict[str, str]:
    """The publish step reads one file of each brand's folder: `<brand>/publishing.json`."""
    brands = _arn(stack, _find(stack, "Storage/Brands"))
    return {
        f"AwsSolutions-IAM5[Resource::{brands}/{BRANDS_PREFIX}*/publishing.json]": (
            "The publish step reads each brand's publishing.json (and may list that key alone, to tell a brand "
            "without one from a refusal); the brand is only known per execution, so the brand folder is a wildcard."
        )
    }


def _brand_store_reader(stack: Stack) -> dict[str, str]:
    """Only the roles that read the brand store (BRAND_STORE_READERS) are acknowledged for it."""
    brands = _arn(stack, _find(stack, "Storage/Brands"))
    return {f"AwsSolutions-IAM5[Resource::{brands}/{BRANDS_PREFIX}*]": BRAND_STORE}


# Findings about one construct that hold whatever the stack's names are.
SIGNING_KEYS_FINDINGS = {
    "AwsSolutions-SMG4": (
        "Review link keys are rotated by their owner, not on a schedule: a new key becomes `active` while the "
        "old one stays listed until the links it signed expire (functions/review/signing.py). A scheduled "
        "rotation that dropped a key would break links already emailed."
    )
}
REVIEW_API_FINDINGS = {
    "AwsSolutions-APIG2": (
        "The routes take a path, a signed query string and a small form; the function validates all of them "
        "(and the link signature) before it reads anything, so a request model would only duplicate that."
    ),
    "AwsSolutions-APIG3": (
        "No WAF web ACL by default (a fixed monthly cost for a low-traffic page): every route verifies an "
        "HMAC link signature and expiry first, decisions need a CSRF token, and the stage throttles at 20 "
        "requests/s. Attach a web ACL to the stage where the organisation requires one."
    ),
    "AwsSolutions-APIG4": (
        "Reviewers are email recipients without accounts: the signed, expiring link authorises each request, "
        "checked in the function for every route."
    ),
    "AwsSolutions-COG4": "As APIG4: no Cognito user pool; the HMAC-signed link authorises each request.",
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AmazonAPIGatewayPushToCloudWatchLogs]": (
        "API Gateway's account-level logging role uses the managed policy AWS documents for it."
    ),
}
SHOPIFY_API_FINDINGS = {
    "AwsSolutions-APIG2": (
        "Shopify's webhook body is verified byte for byte (HMAC-SHA256) and parsed by the function; a request model "
        "would have API Gateway parse unauthenticated JSON first and answer 400s Shopify counts as failures."
    ),
    "AwsSolutions-APIG3": (
        "No WAF web ACL by default (a fixed monthly cost): the stage throttles, the body size is capped, and every "
        "request without a valid HMAC is answered 401 before anything is read or written. Attach a web ACL to the "
        "stage where the organisation requires one."
    ),
    "AwsSolutions-APIG4": (
        "Shopify cannot send AWS credentials or tokens: its webhooks authenticate with an HMAC of the body under the "
        "app's client secret, checked in constant time by the function for every request."
    ),
    "AwsSolutions-COG4": "As APIG4: Shopify authenticates each delivery with the HMAC, not with a Cognito user pool.",
}
SHOPIFY_SECRET_FINDINGS = {
    "AwsSolutions-SMG4": (
        "Shopify issues the app's client secret and Admin token; they are rotated in the Shopify admin, then "
        "copied here (the webhook secret keeps the previous one for an overlap window). No Lambda can rotate them."
    )
}
NOTIFICATIONS_HANDLER_FINDINGS = {
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]": (
        "CDK's own S3 bucket-notification custom resource; it runs once per deployment. Every function of "
        "ours has its own role and log group instead."
    ),
    "AwsSolutions-IAM5[Resource::*]": (
        "CDK's bucket-notification custom resource calls s3:PutBucketNotification, granted on '*' by CDK."
    ),
}
MODEL_ROLE_FINDINGS = {
    "AwsSolutions-IAM5[Resource::*]": (
        "ecr:GetAuthorizationToken and cloudwatch:PutMetricData accept only '*'; the metric namespace is "
        "limited to SageMaker's by condition."
    ),
    f"AwsSolutions-IAM5[Resource::{SAGEMAKER_LOG_GROUPS}]": SAGEMAKER_LOGS,
}
LAMBDA_FUNCTIONS = {
    "Intake": ("Ingest",),
    "Shopify": ("Webhook", "Ingest"),
    "Gpu": ("Submit", "Outcome", "Reconcile"),
    "Review": ("Notify", "Page", "Sweep"),
    "Workflow": ("Prepare", "Checks", "Publish"),
}
# Tables with an index, and the roles granted on them (their index ARN is `<table arn>/index/*`).
INDEXED_TABLE_USERS = {
    "Gpu/Jobs": ("Gpu/SubmitRole", "Gpu/OutcomeRole", "Gpu/ReconcileRole"),
    "Review/Reviews": ("Review/NotifyRole", "Review/PageRole", "Review/SweepRole"),
}
TASK_FUNCTIONS = ("Gpu/Submit", "Review/Notify", "Workflow/Prepare", "Workflow/Checks", "Workflow/Publish")
BRAND_STORE_READERS = ("Workflow/PrepareRole", "Gpu/ModelRole", "Shopify/IngestRole")


def acknowledgements(stack: Stack) -> dict[str, dict[str, str]]:
    """Construct path (relative to the stack) -> {finding id: reason}."""
    role_findings = _iam5_for_roles(stack)
    found: dict[str, dict[str, str]] = {
        f"{construct}/{name}Role": dict(role_findings)
        for construct, names in LAMBDA_FUNCTIONS.items()
        for name in names
    }
    found["Gpu/ModelRole"] = {**role_findings, **MODEL_ROLE_FINDINGS}
    for reader in BRAND_STORE_READERS:
        found[reader].update(_brand_store_reader(stack))
    found["Workflow/PublishRole"].update(_publishing_profiles(stack))
    for table, users in INDEXED_TABLE_USERS.items():
        for user in users:
            found[user][f"AwsSolutions-IAM5[Resource::{_arn(stack, _find(stack, table))}/index/*]"] = TABLE_INDEXES
    found["Workflow/PerImage/Role"] = {
        "AwsSolutions-IAM5[Resource::*]": X_RAY,
        **{
            f"AwsSolutions-IAM5[Resource::{_arn(stack, _find(stack, path))}:*]": LAMBDA_VERSIONS
            for path in TASK_FUNCTIONS
        },
    }
    found["Review/SigningKeys"] = SIGNING_KEYS_FINDINGS
    found["Shopify/Api"] = SHOPIFY_API_FINDINGS
    found["Shopify/WebhookSecret"] = SHOPIFY_SECRET_FINDINGS
    found["Shopify/AdminToken"] = SHOPIFY_SECRET_FINDINGS
    found["Review/Api"] = REVIEW_API_FINDINGS
    notifications_handler = next(
        child.node.id for child in stack.node.children if child.node.id.startswith("BucketNotificationsHandler")
    )
    found[notifications_handler] = NOTIFICATIONS_HANDLER_FINDINGS
    return found


def acknowledge_findings(stack: Stack) -> None:
    for path, findings in acknowledgements(stack).items():
        scope = _find(stack, path)
        for finding, reason in findings.items():
            Validations.of(scope).acknowledge(Acknowledgment(id=finding, reason=reason))
