"""The review Lambdas against moto: a real `.waitForTaskToken` execution, DynamoDB conditional writes, the SES
outbox, Secrets Manager keys and S3 presigned images. The task token must reach Step Functions and nothing else.
"""

import email
import io
import json
import logging
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from functions.adapters.aws import review as aws_review
from functions.handlers import review_api, review_notify, review_schedule
from functions.review.signing import LinkParams, SigningKeys
from schemas import QualityFlag, ReviewItem, ReviewItemDetails, ReviewRequest

from .aws_fixtures import create_review_table

REGION = "eu-west-1"
SENDER = "review@brand.example.com"
REVIEWER = "buyer@brand.example.com"
TABLE = "catalog-reviews"
BUCKET = "catalog-outputs"


@dataclass
class FakeContext:
    function_name: str = "review"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{DEFAULT_ACCOUNT_ID}:function:review"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 240_000


@pytest.fixture
def aws(monkeypatch):
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "REVIEW_TABLE_NAME": TABLE,
        "REVIEW_KEYS_SECRET_ID": "catalog/review-keys",
        "REVIEW_SENDER": SENDER,
        "REVIEW_BASE_URL": "https://api.example.com/prod",
        "REVIEW_LINK_TTL_SECONDS": "7200",
        "REVIEW_REMIND_BEFORE_SECONDS": "3600",
        "POWERTOOLS_SERVICE_NAME": "review",
    }.items():
        monkeypatch.setenv(name, value)
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock_aws(config=config):
        aws_review.reset()
        create_review_table(boto3.client("dynamodb", region_name=REGION), TABLE)
        boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="catalog/review-keys", SecretString=SigningKeys.generate("k1").to_json()
        )
        boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for sku in ("SKU-1", "SKU-2"):
            for kind in ("original", "packshot"):
                s3.put_object(Bucket=BUCKET, Key=f"{sku}/front.{kind}.jpg", Body=b"\xff\xd8 fake jpeg")
        yield
        aws_review.reset()


def _items() -> list[ReviewItem]:
    """One image's review items, built as `automatic_checks` builds them (the workflow's ReviewRequest.items)."""
    return [
        ReviewItem(
            item_id=f"i{n}",
            sku=sku,
            original=f"s3://{BUCKET}/{sku}/front.original.jpg",
            generated=f"s3://{BUCKET}/{sku}/front.packshot.jpg",
            job_kind="packshot",
            flags=(QualityFlag(code="touches_edge", message="Touches the edge."),) if n == 1 else (),
            details=ReviewItemDetails(publish_name=f"{sku}/front.packshot.jpg"),
        )
        for n, sku in ((1, "SKU-1"), (2, "SKU-2"))
    ]


def _start_waiting_executions(images: list[list[ReviewItem]]) -> list[tuple[str, dict]]:
    """One execution per image, each waiting at its review task; a token reaches us the way it reaches a task."""
    # The review task's input is the checks' ReviewRequest; the state machine adds the token.
    inputs = [
        ReviewRequest(brand="acme", reviewers=(REVIEWER,), items=tuple(items)).model_dump(mode="json")["items"]
        for items in images
    ]
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="review-requests")["QueueUrl"]
    role = boto3.client("iam", region_name=REGION).create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")
    definition = {
        "StartAt": "HumanReview",
        "States": {
            "HumanReview": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {
                    "QueueUrl": queue,
                    "MessageBody": {
                        "task_token.$": "$$.Task.Token",
                        "brand": "acme",
                        "reviewers": [REVIEWER],
                        "items.$": "$.items",
                    },
                },
                "End": True,
            }
        },
    }
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(
        name="catalog-review", definition=json.dumps(definition), roleArn=role["Role"]["Arn"]
    )["stateMachineArn"]
    executions = {
        json.dumps(items, sort_keys=True): sfn.start_execution(
            stateMachineArn=machine, name=f"image-{n}", input=json.dumps({"items": items})
        )["executionArn"]
        for n, items in enumerate(inputs)
    }
    bodies: dict[str, dict] = {}
    for _ in range(40):
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            body = json.loads(message["Body"])
            bodies[json.dumps(body["items"], sort_keys=True)] = body
        if len(bodies) == len(inputs):
            return [(executions[key], bodies[key]) for key in executions]
        time.sleep(0.25)
    raise AssertionError("the review tasks never sent their tokens")


def _start_waiting_execution() -> tuple[str, dict]:
    return _start_waiting_executions([_items()])[0]


def _execution_status(execution: str, until_not: str = "RUNNING") -> dict:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    for _ in range(40):
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != until_not:
            return described
        time.sleep(0.25)
    return described


def _sent_mail() -> list[email.message.Message]:
    backend = ses_backends[DEFAULT_ACCOUNT_ID][REGION]
    return [email.message_from_string(m.raw_data) for m in backend.sent_messages]


def _api_event(
    method: str,
    path: str,
    query: dict | None = None,
    body: str | None = None,
    content_type: str = "",
    authorizer: dict | None = None,
) -> dict:
    parts = path.strip("/").split("/")
    resource, params = "/" + parts[0], {}
    names = ["review_id", "image", "item_id", "kind"] if parts[0] == "review" else ["name"]
    for name, value in zip(names, parts[1:], strict=False):
        resource += "/image" if name == "image" else "/{" + name + "}"
        if name != "image":
            params[name] = value
    headers = {"Content-Type": content_type} if content_type else {}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "pathParameters": params,
        "stageVariables": None,
        "requestContext": {
            "accountId": DEFAULT_ACCOUNT_ID,
            "stage": "prod",
            "requestId": "r-1",
            "httpMethod": method,
            "path": "/prod" + path,
            "resourcePath": resource,
            "identity": {"sourceIp": "203.0.113.9"},
            **({"authorizer": authorizer} if authorizer else {}),
        },
        "body": body,
        "isBase64Encoded": False,
    }


def _link_params(message: email.message.Message) -> tuple[str, dict[str, str]]:
    text = next(part for part in message.walk() if part.get_content_type() == "text/plain").get_payload(decode=True)
    link = next(line for line in text.decode().splitlines() if line.startswith("https://api.example.com/prod/review/"))
    url = urllib.parse.urlsplit(link)
    return url.path.rsplit("/", 1)[1], dict(urllib.parse.parse_qsl(url.query))


@pytest.fixture
def log_output():
    """Every log line as the Lambda would write it: Powertools' JSON formatter, on its logger and on the root."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(review_notify.logger.registered_formatter)
    loggers = [logging.getLogger("review"), logging.getLogger()]
    for logger in loggers:
        logger.addHandler(handler)
    yield stream
    for logger in loggers:
        logger.removeHandler(handler)


def _notify(body: dict, logs_stream) -> tuple[str, dict[str, str], str, str]:
    """The image's notify task, then the scheduled digest that emails it: (link id, link query, logs, review id)."""
    result = review_notify.lambda_handler(body, FakeContext())
    digest = review_schedule.lambda_handler({}, FakeContext())
    logs = logs_stream.getvalue()
    link_id, query = _link_params(_sent_mail()[-1])
    assert digest["emailed"] == [link_id]
    return link_id, query, logs, result["review_id"]


def _csrf(review_id: str, query: dict[str, str]) -> str:
    return aws_review.review_service().csrf(LinkParams.from_fields(review_id, query))


def _decide(review_id: str, query: dict, decisions: list[dict]) -> dict:
    body = json.dumps({**query, "csrf": _csrf(review_id, query), "decisions": decisions})
    event = _api_event("POST", f"/review/{review_id}", body=body, content_type="application/json")
    return review_api.lambda_handler(event, FakeContext())


def test_notify_stores_the_token_server_side_and_the_digest_emails_one_link_never_logging_the_token(aws, log_output):
    # Given an execution waiting at the review task
    execution, body = _start_waiting_execution()
    token = body["task_token"]
    # When the notify handler runs with the task's input
    review_id = review_notify.lambda_handler(body, FakeContext())["review_id"]
    # Then nothing is emailed yet, and the token is in DynamoDB, beside the review, for the resume
    assert _sent_mail() == []
    row = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"pk": {"S": review_id}, "sk": {"S": "review"}}
    )["Item"]
    assert row["resume_handle"]["S"] == token and row["state"]["S"] == "pending" and "awaiting_digest" in row
    # When the scheduled digest runs
    digest = review_schedule.lambda_handler({}, FakeContext())
    logs = log_output.getvalue()
    # Then one email went out, with both parts, a link (to the batch) carrying only e/k/s, and no token anywhere
    mails = _sent_mail()
    batch_id, query = _link_params(mails[0])
    assert digest["emailed"] == [batch_id] and batch_id != review_id
    assert len(mails) == 1 and mails[0]["To"] == REVIEWER and "2 images to review for acme" in mails[0]["Subject"]
    assert {p.get_content_type() for p in mails[0].walk()} >= {"text/plain", "text/html"}
    assert set(query) == {"e", "k", "s"}
    assert token not in mails[0].as_string() and token not in logs and review_id in logs and batch_id in logs
    assert _execution_status(execution)["status"] == "RUNNING"


def test_get_changes_nothing_and_decisions_resume_the_execution_exactly_once(aws, log_output):
    execution, body = _start_waiting_execution()
    review_id, query, _, _ = _notify(body, log_output)

    # When the page is fetched (a mail scanner would), Then it renders with presigned S3 images and strict headers
    page = review_api.lambda_handler(_api_event("GET", f"/review/{review_id}", query), FakeContext())
    headers = page["multiValueHeaders"] if "multiValueHeaders" in page else page["headers"]
    flat = {k: (v[0] if isinstance(v, list) else v) for k, v in headers.items()}
    assert page["statusCode"] == 200 and "X-Amz-Signature" in page["body"] and body["task_token"] not in page["body"]
    assert flat["Cache-Control"] == "no-store" and "frame-ancestors 'none'" in flat["Content-Security-Policy"]
    assert f"https://{BUCKET}.s3" in flat["Content-Security-Policy"]
    assert _execution_status(execution)["status"] == "RUNNING"

    # When one item is rejected and the other approved (by an SSO user), and the approval is clicked again
    first = _decide(review_id, query, [{"item_id": "i1", "verdict": "rejected", "reason": "artefacts", "note": "halo"}])
    second = _decide(review_id, query, [{"item_id": "i2", "verdict": "approved"}])
    again = _decide(review_id, query, [{"item_id": "i2", "verdict": "rejected", "reason": "other"}])

    # Then each decision applied once, the second click is told who decided, and the execution resumed with both
    assert first["statusCode"] == 200 and second["statusCode"] == 200 and again["statusCode"] == 409
    assert json.loads(again["body"])["results"][0]["status"] == "already_decided"
    done = _execution_status(execution)
    assert done["status"] == "SUCCEEDED"
    output = json.loads(done["output"])
    assert output["state"] == "decided" and [d["verdict"] for d in output["decisions"]] == ["rejected", "approved"]
    assert {d["reviewer"] for d in output["decisions"]} == {REVIEWER}


def test_sso_claims_are_recorded_as_the_reviewer(aws, log_output):
    _, body = _start_waiting_execution()
    review_id, query, _, _ = _notify(body, log_output)
    csrf = _csrf(review_id, query)
    event = _api_event(
        "POST",
        f"/review/{review_id}",
        body=urllib.parse.urlencode({**query, "csrf": csrf, "item_id": "i1", "verdict": "approved"}),
        content_type="application/x-www-form-urlencoded",
        authorizer={"claims": {"email": "ann@brand.example.com", "sub": "abc"}},
    )
    response = review_api.lambda_handler(event, FakeContext())
    assert response["statusCode"] == 200 and "sso:ann@brand.example.com" in response["body"]
    stored = aws_review.review_service().view(review_id)
    assert stored.decisions["i1"].reviewer == "sso:ann@brand.example.com"


def test_tampered_link_is_403_and_the_image_route_redirects_to_a_presigned_url(aws, log_output):
    _, body = _start_waiting_execution()
    review_id, query, _, _ = _notify(body, log_output)
    bad = dict(query, e=str(int(query["e"]) + 60))
    refused = review_api.lambda_handler(_api_event("GET", f"/review/{review_id}", bad), FakeContext())
    image = review_api.lambda_handler(_api_event("GET", f"/review/{review_id}/image/i1/preview", query), FakeContext())
    location = image.get("headers", {}).get("Location") or image["multiValueHeaders"]["Location"][0]
    assert refused["statusCode"] == 403 and image["statusCode"] == 302
    assert "X-Amz-Expires=300" in location and "SKU-1/front.packshot.jpg" in location


def test_a_closed_execution_gives_an_already_closed_page_not_a_500(aws, log_output):
    execution, body = _start_waiting_execution()
    link_id, query, _, review_id = _notify(body, log_output)
    # Given the execution closed meanwhile (moto keeps no token state for a stopped one, so close it by its token)
    boto3.client("stepfunctions", region_name=REGION).send_task_success(taskToken=body["task_token"], output="{}")
    assert _execution_status(execution)["status"] == "SUCCEEDED"
    _decide(link_id, query, [{"item_id": "i1", "verdict": "approved"}])
    last = _decide(link_id, query, [{"item_id": "i2", "verdict": "approved"}])
    assert last["statusCode"] == 410 and "already closed" in json.loads(last["body"])["error"]
    assert aws_review.review_service().store.get(review_id).resumed_at is not None  # not retried for ever


def test_schedule_reminds_once_then_expires_with_send_task_failure(aws, log_output, monkeypatch):
    execution, body = _start_waiting_execution()
    batch_id, _, _, review_id = _notify(body, log_output)
    service = aws_review.review_service()
    start = datetime.now(UTC)

    # When the sweep runs 70 minutes in (within an hour of expiry), twice
    monkeypatch.setattr(service, "clock", lambda: start + timedelta(minutes=70))
    first = review_schedule.lambda_handler({}, FakeContext())
    second = review_schedule.lambda_handler({}, FakeContext())
    # Then exactly one reminder went out, and it is recorded
    reminders = [m for m in _sent_mail() if " ".join(m["Subject"].split()).startswith("Reminder: ")]
    assert first["reminded"] == [batch_id] and second["reminded"] == [] and len(reminders) == 1
    assert service.view(batch_id).reminder_sent_at is not None

    # When the sweep runs after the expiry
    monkeypatch.setattr(service, "clock", lambda: start + timedelta(hours=3))
    expired = review_schedule.lambda_handler({}, FakeContext())
    logs = log_output.getvalue()
    # Then the batch is expired and the execution failed with ReviewExpired, the token never logged
    described = _execution_status(execution)
    assert expired["expired"] == [review_id] and service.store.get(review_id).state.value == "expired"
    assert described["status"] == "FAILED" and described.get("error") == "ReviewExpired"
    assert body["task_token"] not in logs and review_id in logs


def test_dynamodb_store_applies_a_decision_once(aws):
    from functions.adapters.aws.review_store import DynamoDBReviewStore
    from functions.review.store import AlreadyDecided, DecisionApplied
    from schemas.review import ReviewDecision, ReviewTask, Verdict

    store = DynamoDBReviewStore(boto3.client("dynamodb", region_name=REGION), TABLE)
    now = datetime.now(UTC)
    task = ReviewTask(
        review_id="R" * 32,
        brand="acme",
        reviewers=(REVIEWER,),
        items=tuple(_items()),
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )
    store.create(task, REVIEWER, None)
    decision = ReviewDecision(item_id="i1", verdict=Verdict.APPROVED, reviewer=REVIEWER, decided_at=now)
    other = decision.model_copy(update={"reviewer": "someone-else"})
    assert isinstance(store.decide(task.review_id, decision, now), DecisionApplied)
    second = store.decide(task.review_id, other, now)
    assert isinstance(second, AlreadyDecided) and second.decision.reviewer == REVIEWER
    assert not store.close_if_decided(task.review_id)  # i2 still pending
    late = store.decide(task.review_id, decision.model_copy(update={"item_id": "i2"}), now + timedelta(hours=2))
    assert type(late).__name__ == "ReviewClosed"


def _image_items(image: int) -> list[ReviewItem]:
    """One product image's items, with ids unique across images as the workflow makes them (job ids)."""
    return [
        ReviewItem(
            item_id=f"img{image}-{kind}",
            sku=f"SKU-{image}",
            original=f"s3://{BUCKET}/SKU-1/front.original.jpg",
            generated=f"s3://{BUCKET}/SKU-1/front.packshot.jpg",
            job_kind=kind,
        )
        for kind in ("packshot", "lifestyle")
    ]


def test_three_images_get_one_digest_email_whose_link_lists_them_all_and_each_resumes_alone(aws, log_output):
    # Given three images' executions waiting at their review tasks, and their notify invocations
    waiting = _start_waiting_executions([_image_items(n) for n in (1, 2, 3)])
    review_ids = [review_notify.lambda_handler(body, FakeContext())["review_id"] for _, body in waiting]
    tokens = [body["task_token"] for _, body in waiting]
    # Then nothing is emailed yet
    assert _sent_mail() == []

    # When the digest runs, twice
    first = review_schedule.lambda_handler({}, FakeContext())
    second = review_schedule.lambda_handler({}, FakeContext())
    # Then exactly one email went out, for all six items, and the second run sent nothing
    mails = _sent_mail()
    assert len(mails) == 1 and "6 images to review for acme" in " ".join(mails[0]["Subject"].split())
    batch_id, query = _link_params(mails[0])
    assert first["emailed"] == [batch_id] and second["emailed"] == [] and batch_id not in review_ids

    # When its one link is opened, Then the page lists every item of the three images
    page = review_api.lambda_handler(_api_event("GET", f"/review/{batch_id}", query), FakeContext())
    assert page["statusCode"] == 200
    for n in (1, 2, 3):
        assert f'id="item-img{n}-packshot"' in page["body"] and f'id="item-img{n}-lifestyle"' in page["body"]
        assert f"SKU-{n}" in page["body"]

    # When every item of the second image is decided through the batch link
    response = _decide(
        batch_id,
        query,
        [
            {"item_id": "img2-packshot", "verdict": "approved"},
            {"item_id": "img2-lifestyle", "verdict": "rejected", "reason": "off_brand"},
        ],
    )
    # Then only the second image's execution resumed, with its own decisions under its own item ids
    assert response["statusCode"] == 200
    statuses = [_execution_status(execution) for execution, _ in waiting]
    assert [s["status"] for s in statuses] == ["RUNNING", "SUCCEEDED", "RUNNING"]
    output = json.loads(statuses[1]["output"])
    assert output["review_id"] == review_ids[1]
    assert [(d["item_id"], d["verdict"]) for d in output["decisions"]] == [
        ("img2-packshot", "approved"),
        ("img2-lifestyle", "rejected"),
    ]
    service = aws_review.review_service()
    assert service.store.get(review_ids[0]).state.value == "pending"

    # And no task token is in the email, the page or any log line
    logs = log_output.getvalue()
    for token in tokens:
        assert token not in mails[0].as_string() and token not in page["body"] and token not in logs


def test_approve_all_remaining_works_across_the_batch_even_when_item_ids_repeat(aws, log_output):
    # Given two images whose items share ids (i1, i2), batched by one digest
    waiting = _start_waiting_executions(
        [_items(), [item.model_copy(update={"sku": f"B-{item.sku}"}) for item in _items()]]
    )
    for _, body in waiting:
        review_notify.lambda_handler(body, FakeContext())
    review_schedule.lambda_handler({}, FakeContext())
    batch_id, query = _link_params(_sent_mail()[-1])
    # When the first image's SKU-1 item is rejected, then "Approve all remaining" is clicked
    page = aws_review.review_service().view(batch_id)
    assert len(page.task.items) == 4 and len({item.item_id for item in page.task.items}) == 4
    rejected = next(item.item_id for item in page.task.items if item.sku == "SKU-1")
    _decide(batch_id, query, [{"item_id": rejected, "verdict": "rejected", "reason": "artefacts"}])
    body = json.dumps({**query, "csrf": _csrf(batch_id, query), "approve_all": True})
    event = _api_event("POST", f"/review/{batch_id}", body=body, content_type="application/json")
    response = review_api.lambda_handler(event, FakeContext())
    # Then the three remaining items were approved and both executions resumed with their own item ids
    assert response["statusCode"] == 200 and json.loads(response["body"])["review"]["state"] == "decided"
    outputs = [json.loads(_execution_status(execution)["output"]) for execution, _ in waiting]
    assert [[(d["item_id"], d["verdict"]) for d in o["decisions"]] for o in outputs] == [
        [("i1", "rejected"), ("i2", "approved")],
        [("i1", "approved"), ("i2", "approved")],
    ]


def test_a_batch_is_reminded_once_and_each_member_expires_with_review_expired(aws, log_output, monkeypatch):
    # Given two images batched into one email
    waiting = _start_waiting_executions([_image_items(1), _image_items(2)])
    for _, body in waiting:
        review_notify.lambda_handler(body, FakeContext())
    review_schedule.lambda_handler({}, FakeContext())
    batch_id, _ = _link_params(_sent_mail()[-1])
    service = aws_review.review_service()
    start = datetime.now(UTC)
    # When the schedule runs within an hour of the expiry, twice
    monkeypatch.setattr(service, "clock", lambda: start + timedelta(minutes=70))
    first = review_schedule.lambda_handler({}, FakeContext())
    second = review_schedule.lambda_handler({}, FakeContext())
    # Then one reminder went out, for the batch (not one per image)
    reminders = [m for m in _sent_mail() if " ".join(m["Subject"].split()).startswith("Reminder: ")]
    assert first["reminded"] == [batch_id] and second["reminded"] == [] and len(reminders) == 1
    assert "4 images" in " ".join(reminders[0]["Subject"].split())
    # When it runs after the expiry, Then each image's execution failed with ReviewExpired
    monkeypatch.setattr(service, "clock", lambda: start + timedelta(hours=3))
    expired = review_schedule.lambda_handler({}, FakeContext())
    assert len(expired["expired"]) == 2
    assert [_execution_status(execution).get("error") for execution, _ in waiting] == ["ReviewExpired"] * 2
    assert service.view(batch_id).state.value == "expired"


def _thumbnail_urls(message: email.message.Message) -> list[str]:
    html = next(p for p in message.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    return [chunk.split('"', 1)[0].replace("&amp;", "&") for chunk in html.split('<img src="')[1:]]


def test_a_digest_thumbnail_opens_its_image_only_never_the_page_or_a_decision(aws, log_output):
    # Given the digest email of a waiting image
    _, body = _start_waiting_execution()
    review_id, query, _, _ = _notify(body, log_output)
    thumbnail = urllib.parse.urlsplit(_thumbnail_urls(_sent_mail()[-1])[0])
    fields = dict(urllib.parse.parse_qsl(thumbnail.query))
    path = thumbnail.path.removeprefix("/prod")
    # Then the thumbnail carries its own capability, not the link's signature
    assert "s" not in fields and query["s"] not in thumbnail.query
    # When a mail proxy fetches it, Then it is redirected to the presigned image
    image = review_api.lambda_handler(_api_event("GET", path, fields), FakeContext())
    assert image["statusCode"] == 302
    # When its parameters are tried on the page or in a decision, also relabelled as a link signature: refused
    page = review_api.lambda_handler(_api_event("GET", f"/review/{review_id}", fields), FakeContext())
    assert page["statusCode"] == 403
    for value in fields.values():
        relabelled = {"e": fields.get("e", ""), "k": fields.get("k", ""), "s": value}
        page = review_api.lambda_handler(_api_event("GET", f"/review/{review_id}", relabelled), FakeContext())
        assert page["statusCode"] == 403
        post = json.dumps(
            {**relabelled, "csrf": _csrf(review_id, query), "decisions": [{"item_id": "i1", "verdict": "approved"}]}
        )
        decided = review_api.lambda_handler(
            _api_event("POST", f"/review/{review_id}", body=post, content_type="application/json"), FakeContext()
        )
        assert decided["statusCode"] == 403
    post = json.dumps(
        {**fields, "csrf": _csrf(review_id, query), "decisions": [{"item_id": "i1", "verdict": "approved"}]}
    )
    decided = review_api.lambda_handler(
        _api_event("POST", f"/review/{review_id}", body=post, content_type="application/json"), FakeContext()
    )
    assert decided["statusCode"] == 403
    # And it is scoped to its item and kind
    for other in (path.replace("/preview", "/original"), path.rsplit("/", 2)[0] + "/not-an-item/preview"):
        refused = review_api.lambda_handler(_api_event("GET", other, fields), FakeContext())
        assert refused["statusCode"] in (403, 404)
    assert aws_review.review_service().view(review_id).decisions == {}


def test_a_link_emailed_before_a_key_rotation_still_opens_after_the_functions_reread_the_secret(
    aws, log_output, monkeypatch
):
    from functions.review.signing import rotate_key_document

    # Given a digest email sent with the deployed key
    _, body = _start_waiting_execution()
    review_id, query, _, _ = _notify(body, log_output)
    # When the secret is rotated (staged, then activated) and a warm function's keys are older than their max age
    secrets = boto3.client("secretsmanager", region_name=REGION)
    current = secrets.get_secret_value(SecretId="catalog/review-keys")["SecretString"]
    staged = rotate_key_document(current, "k2", activate=False)
    secrets.put_secret_value(
        SecretId="catalog/review-keys", SecretString=SigningKeys.from_json(staged).activated("k2").to_json()
    )
    later = time.monotonic() + aws_review.KEYS_MAX_AGE_SECONDS + 1
    monkeypatch.setattr(aws_review.time, "monotonic", lambda: later)
    # Then the function signs with the new key, and the link sent before the rotation still opens
    assert aws_review.review_service().keys.active == "k2"
    page = review_api.lambda_handler(_api_event("GET", f"/review/{review_id}", query), FakeContext())
    assert page["statusCode"] == 200 and query["k"] == "k1"
