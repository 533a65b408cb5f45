"""Least privilege, role by role: exactly the actions each function (and the GPU model) gets, on exactly which
resources, read from the synthesized template. A new grant fails here until it is listed with the code path that
needs it.

Resources are written readably: a logical id without its hash (`StorageWork`), `/prefix/*` for objects under a
prefix, `${AWS::Region}` for pseudo parameters; `(s3:prefix ...)` is a condition on the statement.
"""

import json
import re
from typing import Any

import pytest
from moto import mock_aws

LOGS = {("logs:CreateLogStream", "{fn}Logs"), ("logs:PutLogEvents", "{fn}Logs")}
XRAY = {("xray:PutTelemetryRecords", "*"), ("xray:PutTraceSegments", "*")}
GPU_KEY = {(f"kms:{a}", "GpuKey") for a in ("Decrypt", "Encrypt", "GenerateDataKey*", "ReEncrypt*")}
REVIEW_KEY = {(f"kms:{a}", "ReviewKey") for a in ("Decrypt", "Encrypt", "GenerateDataKey*", "ReEncrypt*")}
TASK_RESPONSE = {
    (f"states:{a}", "WorkflowPerImage") for a in ("SendTaskFailure", "SendTaskHeartbeat", "SendTaskSuccess")
}
# CDK's put grant (conditional puts of new objects; Abort* for multipart uploads)
PUT_SET = (
    "s3:Abort*",
    "s3:PutObject",
    "s3:PutObjectLegalHold",
    "s3:PutObjectRetention",
    "s3:PutObjectTagging",
    "s3:PutObjectVersionTagging",
)
SIGNING_KEYS = {
    ("secretsmanager:DescribeSecret", "ReviewSigningKeys"),
    ("secretsmanager:GetSecretValue", "ReviewSigningKeys"),
}


def on_table(table: str, *actions: str) -> set[tuple[str, str]]:
    """A table and its indexes: CDK's table grant covers both (the GPU jobs' and the reviews' sparse indexes)."""
    return {(f"dynamodb:{a}", resource) for a in actions for resource in (table, f"{table}/index/*")}


def on_jobs(*actions: str) -> set[tuple[str, str]]:
    return on_table("GpuJobs", *actions)


def on_reviews(*actions: str) -> set[tuple[str, str]]:
    return on_table("ReviewReviews", *actions)


def puts(bucket: str, *prefixes: str) -> set[tuple[str, str]]:
    return {(action, f"{bucket}/{prefix}*") for action in PUT_SET for prefix in prefixes}


def gets(bucket: str, *prefixes: str) -> set[tuple[str, str]]:
    return {("s3:GetObject", f"{bucket}/{prefix}*") for prefix in prefixes}


def listing(bucket: str, *prefixes: str) -> set[tuple[str, str]]:
    return {("s3:ListBucket", f"{bucket} (s3:prefix {', '.join(f'{p}*' for p in prefixes)})")}


# Role (logical id without hash) -> {(action, resource)}; each line names the code path that needs it.
EXPECTED: dict[str, set[tuple[str, str]]] = {
    "BackfillBatchRole": {
        # ingest's start (the same ledger writes and StartExecution), plus HeadObject for the version id a listing
        # lacks (GetObjectVersion for an inventory row's VersionId); a vanished object is a 404
        ("dynamodb:GetItem", "IntakeLedger"),
        ("dynamodb:PutItem", "IntakeLedger"),
        ("dynamodb:UpdateItem", "IntakeLedger"),
        ("states:StartExecution", "WorkflowPerImage"),
        *gets("StorageIntake", "incoming/"),
        ("s3:GetObjectVersion", "StorageIntake/incoming/*"),
        *listing("StorageIntake", "incoming/"),
    },
    "IntakeIngestRole": {
        # the ledger: conditional put (claim), read on a lost race, update (started)
        ("dynamodb:GetItem", "IntakeLedger"),
        ("dynamodb:PutItem", "IntakeLedger"),
        ("dynamodb:UpdateItem", "IntakeLedger"),
        ("states:StartExecution", "WorkflowPerImage"),
        *{
            (f"sqs:{a}", "IntakeEvents")
            for a in ("ChangeMessageVisibility", "DeleteMessage", "GetQueueAttributes", "GetQueueUrl", "ReceiveMessage")
        },
    },
    "ShopifyWebhookRole": {
        # the app's client secret(s); the event claim (conditional put), confirmed once queued (update), released
        # when queueing failed (delete)
        ("secretsmanager:DescribeSecret", "ShopifyWebhookSecret"),
        ("secretsmanager:GetSecretValue", "ShopifyWebhookSecret"),
        *{(f"dynamodb:{a}", "ShopifyEvents") for a in ("DeleteItem", "PutItem", "UpdateItem")},
        *{(f"sqs:{a}", "ShopifyWork") for a in ("GetQueueAttributes", "GetQueueUrl", "SendMessage")},
    },
    "ShopifyIngestRole": {
        # EventBridge event claims and releases, the product's latest event (conditional update), image versions
        *{(f"dynamodb:{a}", "ShopifyEvents") for a in ("DeleteItem", "GetItem", "PutItem", "UpdateItem")},
        # new images and product.json under incoming/ (conditional puts); <brand>/shopify.json, a 404 when missing
        *puts("StorageIntake", "incoming/"),
        *gets("StorageBrands", "brands/"),
        *listing("StorageBrands", "brands/"),
        *{
            (f"sqs:{a}", "ShopifyWork")
            for a in ("ChangeMessageVisibility", "DeleteMessage", "GetQueueAttributes", "GetQueueUrl", "ReceiveMessage")
        },
    },
    "WorkflowPrepareRole": {
        # the uploaded version (VersionId) and the optional product.json: a missing sidecar is a 404
        ("s3:GetObject", "StorageIntake/incoming/*"),
        ("s3:GetObjectVersion", "StorageIntake/incoming/*"),
        *listing("StorageIntake", "incoming/"),
        # brands/<brand>/profile.json: a missing profile is a 404 (packshot defaults)
        *gets("StorageBrands", "brands/"),
        *listing("StorageBrands", "brands/"),
        *puts("StorageWork", "prepared/"),
    },
    "WorkflowChecksRole": gets("StorageWork", "prepared/", "gpu/outputs/"),
    "WorkflowPublishRole": {
        *gets("StorageWork", "prepared/", "gpu/outputs/"),
        # conditional puts; read back only after PreconditionFailed (the object is there)
        *puts("StorageOutput", "approved/", "feedback/"),
        *gets("StorageOutput", "approved/", "feedback/"),
        # the brand's publishing.json only (a 404 when missing: the defaults), and the store's Admin token
        ("s3:GetObject", "StorageBrands/brands/*/publishing.json"),
        ("s3:ListBucket", "StorageBrands (s3:prefix brands/*/publishing.json)"),
        ("secretsmanager:DescribeSecret", "ShopifyAdminToken"),
        ("secretsmanager:GetSecretValue", "ShopifyAdminToken"),
    },
    "GpuSubmitRole": {
        *on_jobs("GetItem", "PutItem", "UpdateItem"),
        *GPU_KEY,
        *puts("StorageWork", "gpu/requests/"),
        (
            "sagemaker:InvokeEndpointAsync",
            "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:endpoint/catalogimageprocessor-gpu-jobs",
        ),
    },
    "GpuOutcomeRole": {
        *on_jobs("GetItem", "Query", "UpdateItem"),
        *GPU_KEY,
        # reads the result its notification names: no listing
        *gets("StorageWork", "gpu/results/", "gpu/failures/"),
        *TASK_RESPONSE,
    },
    "GpuReconcileRole": {
        *on_jobs("GetItem", "Query", "UpdateItem"),
        *GPU_KEY,
        # HeadObject: "is there an outcome?" needs 404 for a missing one
        *gets("StorageWork", "gpu/results/", "gpu/failures/"),
        *listing("StorageWork", "gpu/results/", "gpu/failures/"),
        *TASK_RESPONSE,
    },
    "ReviewNotifyRole": {
        # stores one review: a TransactWriteItems of Puts. No signing keys: it signs nothing.
        *on_reviews("PutItem"),
        *REVIEW_KEY,
    },
    "ReviewPageRole": {
        # reads (Query, GetItem), decides (ConditionCheck + Update transaction), closes/marks resumed (UpdateItem)
        *on_reviews("ConditionCheckItem", "GetItem", "Query", "UpdateItem"),
        *REVIEW_KEY,
        *SIGNING_KEYS,
        # presigned image URLs: a missing image is the browser's 403 either way
        *gets("StorageWork", "prepared/", "gpu/outputs/"),
        *TASK_RESPONSE,
    },
    "ReviewSweepRole": {
        # digest batches (Put + Update transaction), expiry and resumes (UpdateItem), scans for what is due
        *on_reviews("GetItem", "PutItem", "Query", "UpdateItem"),
        *REVIEW_KEY,
        *SIGNING_KEYS,
        ("ses:SendRawEmail", "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/catalog@example.com"),
        *TASK_RESPONSE,
    },
}
FUNCTION_ROLES = sorted(EXPECTED)

GPU_MODEL_ROLE = {
    *{
        (
            f"ecr:{a}",
            "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/<container assets repository>",
        )
        for a in ("BatchCheckLayerAvailability", "BatchGetImage", "GetDownloadUrlForLayer")
    },
    ("ecr:GetAuthorizationToken", "*"),
    # job inputs; gpu_jobs turns a missing one (404) into the job's input error
    *gets("StorageWork", "gpu/requests/", "prepared/", "gpu/outputs/"),
    *listing("StorageWork", "gpu/requests/", "prepared/", "gpu/outputs/"),
    *puts("StorageWork", "gpu/outputs/", "gpu/results/", "gpu/failures/"),
    *gets("StorageBrands", "brands/"),
    *listing("StorageBrands", "brands/"),
    ("sns:Publish", "GpuJobFailed"),
    ("sns:Publish", "GpuJobSucceeded"),
    *GPU_KEY,
    *{
        (f"logs:{a}", "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group//aws/sagemaker/*")
        for a in ("CreateLogGroup", "CreateLogStream", "DescribeLogStreams", "PutLogEvents")
    },
    ("cloudwatch:PutMetricData", "* (cloudwatch:namespace /aws/sagemaker/*, AWS/SageMaker)"),
}

_HASH = re.compile(r"[0-9A-F]{8}$")


def _name(logical_id: str) -> str:
    return _HASH.sub("", logical_id)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if "Fn::GetAtt" in value:
        return _name(value["Fn::GetAtt"][0])
    if "Ref" in value:
        ref = value["Ref"]
        return f"${{{ref}}}" if ref.startswith("AWS::") else _name(ref)
    if "Fn::Join" in value:
        return "".join(_render(part) for part in value["Fn::Join"][1])
    if "Fn::Sub" in value and "container-assets" in value["Fn::Sub"]:
        return "<container assets repository>"
    raise AssertionError(f"unexpected resource {value!r}")


def _condition(statement: dict[str, Any]) -> str:
    condition = statement.get("Condition")
    if not condition:
        return ""
    ((operator, keys),) = condition.items()
    assert operator == "StringLike", condition
    ((key, values),) = keys.items()
    return f" ({key} {', '.join(values if isinstance(values, list) else [values])})"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants_of(template: dict[str, Any], role: str) -> set[tuple[str, str]]:
    """(action, resource) for every Allow statement of every policy attached to the role (by name, less its hash)."""
    (role_id,) = [n for n, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role" and _name(n) == role]
    found = set()
    for policy in template["Resources"].values():
        if policy["Type"] != "AWS::IAM::Policy" or {"Ref": role_id} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow", statement
            for action in _as_list(statement["Action"]):
                for resource in _as_list(statement["Resource"]):
                    found.add((action, _render(resource) + _condition(statement)))
    return found


@pytest.mark.parametrize("role", FUNCTION_ROLES)
def test_each_function_role_gets_exactly_what_its_code_path_uses(synthesized, role):
    # Given the role as synthesized
    function = role.removesuffix("Role")
    expected = {(a, r.replace("{fn}", function)) for a, r in EXPECTED[role] | LOGS | XRAY}

    # Then it holds exactly these grants: nothing missing, nothing more
    found = grants_of(synthesized.template, role)
    assert sorted(found - expected) == [], "granted beyond what the code uses"
    assert sorted(expected - found) == [], "missing grants"


def test_every_function_role_is_listed(synthesized):
    roles = {
        _name(f["Properties"]["Role"]["Fn::GetAtt"][0])
        for n, f in synthesized.resources("AWS::Lambda::Function").items()
        if not n.startswith("BucketNotificationsHandler")
    }
    assert roles == set(FUNCTION_ROLES)


def test_the_gpu_model_role_gets_exactly_its_inputs_outputs_topics_and_logs(synthesized):
    found = grants_of(synthesized.template, "GpuModelRole")
    assert sorted(found - GPU_MODEL_ROLE) == [], "granted beyond what the container uses"
    assert sorted(GPU_MODEL_ROLE - found) == [], "missing grants"


def test_no_role_can_list_a_whole_bucket_or_read_bucket_settings(synthesized):
    # Given every policy in the stack
    for name, policy in synthesized.resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = _as_list(statement["Action"])
            # Then listing is always limited to prefixes, and no role reads bucket configuration
            assert not any(a in ("s3:List*", "s3:GetBucket*", "s3:GetObject*", "s3:*") for a in actions), name
            if "s3:ListBucket" in actions:
                assert "s3:prefix" in json.dumps(statement.get("Condition", {})), (name, statement)


def test_prepare_and_the_review_page_have_reserved_concurrency(synthesized):
    # Given the default context (cdk.json)
    functions = {_name(n): f["Properties"] for n, f in synthesized.resources("AWS::Lambda::Function").items()}

    # Then prepare (the heavy step every image takes) and the public review page are capped; others are not
    reserved = {
        n: f["ReservedConcurrentExecutions"] for n, f in functions.items() if "ReservedConcurrentExecutions" in f
    }
    assert reserved == {"WorkflowPrepare": 250, "ReviewPage": 10}


@pytest.mark.parametrize(
    ("context", "problem"),
    [({"prepareConcurrency": 0}, "prepareConcurrency"), ({"reviewPageConcurrency": 1001}, "reviewPageConcurrency")],
)
def test_bad_concurrency_context_is_refused(synthesized, context, problem):
    # (`synthesized` puts cdk/ on the path)
    import aws_cdk as cdk
    from catalog_infra.app import default_context
    from catalog_infra.config import DeployConfig

    app = cdk.App(context={**default_context(), **context})
    with pytest.raises(ValueError, match=problem):
        DeployConfig.from_context(app.node)


def test_the_notify_task_stores_a_review_without_the_signing_keys(monkeypatch):
    # Given the review table and settings, but no signing-keys secret at all (the notify role cannot read it)
    import boto3

    from functions.adapters.aws import review as aws_review
    from functions.handlers import review_notify
    from schemas import ReviewItem, ReviewItemDetails

    region = "eu-west-1"
    for name, value in {
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "REVIEW_TABLE_NAME": "reviews",
        "REVIEW_KEYS_SECRET_ID": "catalog/review-keys",
        "REVIEW_SENDER": "review@brand.example.com",
        "REVIEW_BASE_URL": "https://api.example.com/review",
        "REVIEW_LINK_TTL_SECONDS": "7200",
        "REVIEW_REMIND_BEFORE_SECONDS": "3600",
    }.items():
        monkeypatch.setenv(name, value)
    item = ReviewItem(
        item_id="img-1-packshot",
        sku="SKU-1",
        original="s3://work/prepared/img-1/original.jpg",
        generated="s3://work/prepared/img-1/packshot.jpg",
        job_kind="packshot",
        details=ReviewItemDetails(publish_name="SKU-1/front.jpg"),
    )
    body = {
        "task_token": "token-1",
        "brand": "acme",
        "reviewers": ["buyer@brand.example.com"],
        "items": [item.model_dump(mode="json")],
    }
    with mock_aws():
        aws_review.reset()
        boto3.client("dynamodb", region_name=region).create_table(
            TableName="reviews",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )

        # When the notify task runs
        try:
            result = review_notify.lambda_handler(body, _Context())
        finally:
            aws_review.reset()

        # Then the review is stored, waiting for the digest
        rows = boto3.client("dynamodb", region_name=region).scan(TableName="reviews")["Items"]
        assert {row["pk"]["S"] for row in rows} == {result["review_id"]}


class _Context:
    function_name = "notify"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:notify"
    aws_request_id = "req-1"
