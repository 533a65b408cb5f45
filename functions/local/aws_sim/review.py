"""The review on the sim: the real review handlers, the digest email through SES, and two loopback servers.

- The digest: `review_schedule`'s handler (what EventBridge runs every 5 minutes) batches the reviews the HumanReview
  tasks stored and sends one email per batch through SES (moto); each raw message is written to `OUT/outbox/`.
- `--review auto`: every stored review is approved through the review service the handlers use
  (`approve_everything(..., AUTO_REVIEWER)`), so the decisions record that no person reviewed, exactly as the local
  runtime's auto review does; each review's last decision resumes its execution (SendTaskSuccess), which publishes.
- `--review local`: the review API handler is served on 127.0.0.1 (`review_api_server`: HTTP requests become API
  Gateway REST proxy events, under the stage path REVIEW_BASE_URL names); the person's decisions resume the
  executions; at the timeout (or Ctrl-C) what is undecided is expired (SendTaskFailure ReviewExpired).
- `--review none`: nobody is asked; the stored reviews are expired, so nothing is published.

Images: the page's presigned S3 URLs point at the sim's S3 endpoint, `s3_object_server` on 127.0.0.1 (boto3 is given
it as the S3 endpoint, and moto answers every boto3 call to it in-process), which serves GETs of unexpired
presigned URLs from moto to the browser.
"""

import base64
import email
import email.policy
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3

from functions.adapters.local.outbox import OutboxMailer
from functions.errors import ConfigurationError
from functions.local.aws_sim.driver import FlowDriver
from functions.local.aws_sim.lambdas import LambdaFunctions
from functions.local.aws_sim.stack import ACCOUNT, REGION
from functions.local.runner import ShowLink
from functions.review.local_flow import OUTBOX_DIR, ReviewMode, ReviewOptions, ReviewRunResult
from functions.review.service import AUTO_REVIEWER
from schemas.review import ReviewState, Verdict

REVIEW_SCHEDULE = "functions.handlers.review_schedule.lambda_handler"
REVIEW_API = "functions.handlers.review_api.lambda_handler"
REVIEW_POLL_SECONDS = 0.25
MAX_BODY_BYTES = 64 * 1024


class _LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread; `port=0` takes a free port."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="aws-sim-loopback", daemon=True)

    def __enter__(self) -> "_LoopbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class _QuietHandler(BaseHTTPRequestHandler):
    server_version = "catalog-aws-sim"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        return  # request lines carry link signatures: keep them off the terminal

    def _send(self, status: int, headers: dict[str, str], body: bytes, head_only: bool = False) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)


def s3_object_server() -> _LoopbackServer:
    """The sim's S3 endpoint for browsers: GET/HEAD of an object by its presigned path-style URL, while unexpired."""

    class Handler(_QuietHandler):
        def _get(self, head_only: bool) -> None:
            url = urlsplit(self.path)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            bucket, _, key = unquote(url.path).lstrip("/").partition("/")
            if not _presigned_and_unexpired(query):
                self._send(403, {"Content-Type": "text/plain"}, b"not a valid presigned URL", head_only)
                return
            s3 = boto3.client("s3", region_name=REGION)
            try:
                found = s3.get_object(Bucket=bucket, Key=key)
            except s3.exceptions.ClientError:
                self._send(404, {"Content-Type": "text/plain"}, b"no such object", head_only)
                return
            headers = {
                "Content-Type": found.get("ContentType", "application/octet-stream"),
                "Cache-Control": "no-store",
            }
            self._send(200, headers, found["Body"].read(), head_only)

        def do_GET(self) -> None:
            self._get(head_only=False)

        def do_HEAD(self) -> None:
            self._get(head_only=True)

    return _LoopbackServer(Handler)


def _presigned_and_unexpired(query: dict[str, str]) -> bool:
    try:
        signed = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = signed + timedelta(seconds=int(query["X-Amz-Expires"]))
    except (KeyError, ValueError):
        return False
    return bool(query.get("X-Amz-Signature")) and datetime.now(UTC) < expires


def api_gateway_event(method: str, stage: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Any:
    """An API Gateway REST proxy event for a request to `/<stage><path>`, as the stack's `{proxy+}` resources see it."""
    top, _, rest = path.lstrip("/").partition("/")
    resource = f"/{top}/{{proxy+}}" if rest else f"/{top}"
    parameters = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {key: [value] for key, value in headers.items()},
        "queryStringParameters": parameters or None,
        "multiValueQueryStringParameters": {k: v for k, v in parse_qs(query, keep_blank_values=True).items()} or None,
        "pathParameters": {"proxy": rest} if rest else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "aws-sim",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "resourcePath": resource,
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body.decode("utf-8", "replace") if body else None,
        "isBase64Encoded": False,
    }


def review_api_server(functions: LambdaFunctions, stage: str, port: int) -> _LoopbackServer:
    """The review API (API Gateway + the review_api Lambda) on 127.0.0.1:`port`, under `/<stage>`."""
    function = functions.logical_id_of(REVIEW_API)

    class Handler(_QuietHandler):
        def _handle(self, method: str, head_only: bool = False) -> None:
            url = urlsplit(self.path)
            prefix = f"/{stage}"
            if not (url.path == prefix or url.path.startswith(prefix + "/")):
                self._send(403, {"Content-Type": "application/json"}, b'{"message":"Missing Authentication Token"}')
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._send(413, {"Content-Type": "text/plain"}, b"request too large")
                return
            body = self.rfile.read(length) if length else b""
            headers = {name: value for name, value in self.headers.items()}
            event = api_gateway_event(method, stage, url.path[len(prefix) :] or "/", url.query, headers, body)
            response = functions.call(function, event)
            payload = response.get("body") or ""
            data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
            response_headers = dict(response.get("headers") or {})
            for name, values in (response.get("multiValueHeaders") or {}).items():
                response_headers[name] = values[-1]
            self._send(int(response.get("statusCode", 502)), response_headers, data, head_only)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_HEAD(self) -> None:
            self._handle("GET", head_only=True)

        def do_POST(self) -> None:
            self._handle("POST")

    return _LoopbackServer(Handler, port)


@contextmanager
def review_api_if_local(functions: LambdaFunctions, options: ReviewOptions, stage: str) -> Iterator[str | None]:
    """The review API's base URL on loopback (local review), or None when nobody will open a link."""
    if options.mode is not ReviewMode.LOCAL:
        yield None
        return
    try:
        server = review_api_server(functions, stage, options.port)
    except OSError as error:
        message = f"cannot serve the review page on 127.0.0.1:{options.port}: {error.strerror}"
        raise ConfigurationError(message) from error
    with server:
        yield f"{server.url}/{stage}"


# -- the digest email --------------------------------------------------------------------------------------------


def send_digest(functions: LambdaFunctions, out_dir: Path, review_base_url: str) -> list[tuple[str, str, str]]:
    """Run the scheduled digest once; write each email SES sent to OUT/outbox/. Returns (batch id, link, email path)."""
    from moto.ses.models import ses_backends

    functions.call(functions.logical_id_of(REVIEW_SCHEDULE), {"source": "aws.events", "detail-type": "Scheduled Event"})
    sent = []
    outbox = OutboxMailer(out_dir / OUTBOX_DIR)  # the local runtime's names: review-<batch id>.eml
    for raw in ses_backends[ACCOUNT][REGION].sent_messages:
        message = email.message_from_string(str(raw.raw_data), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        sent.append((str(message["X-Catalog-Review-Id"]), _review_link(message, review_base_url), outbox.send(message)))
    return sent


def _review_link(message: EmailMessage, review_base_url: str) -> str:
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    base = review_base_url.rstrip("/") + "/review/"
    return next((line.strip() for line in str(text).splitlines() if line.strip().startswith(base)), "")


# -- deciding ----------------------------------------------------------------------------------------------------


def decide(
    driver: FlowDriver,
    functions: LambdaFunctions,
    options: ReviewOptions,
    out_dir: Path,
    review_base_url: str,
    on_link: ShowLink,
) -> ReviewRunResult:
    """Email the stored reviews, then decide them as `options.mode` says; returns when every review is closed."""
    from functions.adapters.aws.review import review_service

    service = review_service()
    review_ids = list(driver.review_ids.values())
    if options.mode is ReviewMode.NONE or not review_ids:
        for review_id in review_ids:
            service.expire(review_id)  # nobody is asked: SendTaskFailure(ReviewExpired), nothing published
        return ReviewRunResult(options.mode)

    sent = send_digest(functions, out_dir, review_base_url)
    if options.mode is ReviewMode.AUTO:
        for review_id in review_ids:
            service.approve_everything(review_id, AUTO_REVIEWER)
    else:
        for _, link, path in sent:  # one email per batch (of up to 50 images)
            on_link(link, path, options.timeout)
        _wait_for_decisions(driver, options.timeout)
        for review_id in review_ids:
            service.expire(review_id)  # timed out or interrupted: no late click lands after we publish
    return _review_result(options.mode, review_ids, sent)


def _wait_for_decisions(driver: FlowDriver, timeout: timedelta) -> None:
    deadline = time.monotonic() + timeout.total_seconds()
    try:
        while time.monotonic() < deadline:
            driver.drain_invocations()
            driver.refresh_statuses()
            if driver.all_finished():  # every decided review resumed its execution, which published
                return
            time.sleep(REVIEW_POLL_SECONDS)
    except KeyboardInterrupt:
        return  # Ctrl-C ends the review, as in the local runtime


def _review_result(mode: ReviewMode, review_ids: list[str], sent: list[tuple[str, str, str]]) -> ReviewRunResult:
    from functions.adapters.aws.review import review_service

    service = review_service()
    reviews = [review for review in map(service.store.get, review_ids) if review is not None]
    approved = sum(d.verdict is Verdict.APPROVED for review in reviews for d in review.decisions.values())
    decided = sum(len(review.decisions) for review in reviews)
    states = {review.state for review in reviews}
    state = (
        ReviewState.PENDING
        if ReviewState.PENDING in states
        else ReviewState.DECIDED
        if states <= {ReviewState.DECIDED}
        else ReviewState.EXPIRED
    )
    batch_id, link, path = sent[0] if sent else (None, None, None)
    return ReviewRunResult(
        mode=mode,
        state=state,
        review_id=batch_id,
        link=link,
        email=path,
        approved=approved,
        rejected=decided - approved,
        pending=sum(len(review.pending_items) for review in reviews),
    )
