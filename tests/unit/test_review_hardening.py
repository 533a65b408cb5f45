"""Issue 9 hardening of the local review: thumbnails that cannot decide, a server that a slow or lying client cannot
hold or crash, private state and outbox files, terminal output that file names cannot restyle, and a notify task
whose validation errors never echo the task token."""

import email
import io
import json
import logging
import os
import socket
import stat
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from functions.adapters.local.files import file_uri
from functions.adapters.local.outbox import OutboxMailer
from functions.adapters.local.review_server import LocalReviewServer
from functions.adapters.local.review_store import SQLiteReviewStore
from functions.review.local_flow import local_service, serve_and_wait
from functions.review.service import ResumeStatus, ReviewService
from functions.review.signing import SigningKeys
from schemas import ManifestEntry, ProcessingError, Status
from schemas.review import ReviewItem, ReviewItemDetails


class NullResumer:
    def resume(self, review_id, handle, outcome):
        return ResumeStatus.RESUMED

    def fail_expired(self, review_id, handle, cause):
        return ResumeStatus.RESUMED


def _items(out: Path, count: int = 2) -> list[ReviewItem]:
    items = []
    for i in range(count):
        for kind in ("original", "packshot"):
            path = out / f"SKU-{i}" / f"front.{kind}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), (200, 30 * i, 30)).save(path)
        items.append(
            ReviewItem(
                item_id=f"item{i}",
                sku=f"SKU-{i}",
                original=file_uri(out / f"SKU-{i}" / "front.original.jpg"),
                generated=file_uri(out / f"SKU-{i}" / "front.packshot.jpg"),
                job_kind="packshot",
                details=ReviewItemDetails(publish_name=f"SKU-{i}/front.packshot.jpg"),
            )
        )
    return items


@pytest.fixture
def service(tmp_path):
    store = SQLiteReviewStore(tmp_path / ".review" / "reviews.sqlite")
    return ReviewService(store, SigningKeys.generate(), NullResumer())


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _post(url: str, document: dict) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _email_thumbnails(eml_path: str) -> list[str]:
    message = email.message_from_bytes(Path(eml_path).read_bytes())
    html = next(p for p in message.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    return [chunk.split('"', 1)[0].replace("&amp;", "&") for chunk in html.split('<img src="')[1:]]


# -- item 5: an email thumbnail is an image-only capability ------------------------------------------------------


def test_an_email_thumbnail_url_opens_its_image_but_not_the_page_nor_a_decision(tmp_path):
    # Given a local review whose email was written to the outbox (its link served on 127.0.0.1)
    service, resumer = local_service(tmp_path)
    task, params = service.create("acme", ["buyer@example.com"], _items(tmp_path), timedelta(minutes=5))
    seen: dict[str, str] = {}
    ready = threading.Event()

    def on_link(link: str, eml: str) -> None:
        seen.update(link=link, eml=eml)
        ready.set()

    runner = threading.Thread(target=serve_and_wait, args=(service, resumer, task, params, tmp_path, 0, on_link))
    runner.start()
    try:
        assert ready.wait(20)
        thumbnails = _email_thumbnails(seen["eml"])
        thumb = urllib.parse.urlsplit(thumbnails[0])
        fields = dict(urllib.parse.parse_qsl(thumb.query))
        base = f"{thumb.scheme}://{thumb.netloc}"
        # When a mail proxy fetches the thumbnail, Then it gets the image
        status, image = _get(thumbnails[0])
        assert status == 200 and image[:2] == b"\xff\xd8"
        # And the thumbnail's parameters are not the link's signature
        assert params.signature not in thumbnails[0] and "s" not in fields
        # When the same parameters are tried on the page, or renamed to look like a link, Then both are refused
        assert _get(f"{base}/review/{task.review_id}?{thumb.query}")[0] == 403
        relabelled = {"e": fields.get("e", ""), "k": fields.get("k", ""), "s": next(iter(fields.values()))}
        for value in fields.values():
            relabelled["s"] = value
            assert _get(f"{base}/review/{task.review_id}?{urllib.parse.urlencode(relabelled)}")[0] == 403
        # And a POST with them decides nothing
        csrf = service.csrf(params)
        decision = {"item_id": "item0", "verdict": "approved"}
        assert _post(f"{base}/review/{task.review_id}", {**fields, "csrf": csrf, "decisions": [decision]}) == 403
        assert _post(f"{base}/review/{task.review_id}", {**relabelled, "csrf": csrf, "decisions": [decision]}) == 403
        # And it is scoped to its item and kind: the other item's image, or the original, is refused
        other = thumb.path.replace("/item0/", "/item1/")
        assert _get(f"{base}{other}?{thumb.query}")[0] == 403
        assert _get(f"{base}{thumb.path.replace('/preview', '/original')}?{thumb.query}")[0] == 403
        assert service.store.get(task.review_id).decisions == {}
    finally:
        service.expire(task.review_id)
        resumer.finished.set()
        runner.join(20)


def test_the_page_images_are_image_capabilities_too(service, tmp_path):
    # Given the page served by the local server
    _, params = service.create("acme", ["buyer@example.com"], _items(tmp_path), timedelta(hours=1))
    with LocalReviewServer(service, tmp_path) as server:
        status, page = _get(server.link(params))
        sources = [chunk.split('"', 1)[0].replace("&amp;", "&") for chunk in page.decode().split(' src="')[1:]]
        image_sources = [src for src in sources if "/image/" in src]
        # Then its images open, and none carries the link's signature
        assert status == 200 and image_sources
        assert all(params.signature not in src for src in image_sources)
        assert all(_get(src if src.startswith("http") else server.base_url + src)[0] == 200 for src in image_sources)


# -- item 8: the loopback server ---------------------------------------------------------------------------------


def _raw_request(port: int, head: bytes, body: bytes = b"", wait: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        connection.sendall(head + body)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        return received


@pytest.mark.parametrize("length", [b"-1", b"-100", b"abc", b"1e3", b"", b" 12 x"])
def test_a_negative_or_non_numeric_content_length_is_a_400(service, tmp_path, length):
    task, _ = service.create("acme", ["buyer@example.com"], _items(tmp_path), timedelta(hours=1))
    with LocalReviewServer(service, tmp_path) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        head = (
            f"POST /review/{task.review_id} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
            + b"Content-Length: "
            + length
            + b"\r\n\r\n"
        )
        response = _raw_request(port, head, b'{"e": "1"}', wait=5)
    # Then the answer is a 400, not a connection dropped or a read that waits for 8 MiB
    assert response.startswith(b"HTTP/1.0 400") or response.startswith(b"HTTP/1.1 400"), response[:80]
    assert service.store.get(task.review_id).decisions == {}


def test_a_client_that_trickles_its_headers_is_disconnected_after_the_timeout(service, tmp_path):
    with LocalReviewServer(service, tmp_path, timeout=1.0) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        connection = socket.create_connection(("127.0.0.1", port), timeout=1)
        started = time.monotonic()
        closed_after = None
        try:
            connection.sendall(b"GET /review-static/review.css HTTP/1.1\r\n")
            # When the client sends a header line a little faster than the timeout, for a long time
            while time.monotonic() - started < 15:
                try:
                    connection.sendall(b"X-Slow: 1\r\n")
                    connection.settimeout(0.3)
                    if connection.recv(1024) == b"":
                        closed_after = time.monotonic() - started
                        break
                except TimeoutError:
                    continue
                except OSError:  # reset or broken pipe: closed by the server
                    closed_after = time.monotonic() - started
                    break
        finally:
            connection.close()
    # Then the server closed the connection well before the generous bound
    assert closed_after is not None and closed_after < 10


def test_review_state_and_outbox_are_private(tmp_path):
    # Given a fresh run folder, When the review state and an email are written
    out = tmp_path / "OUT"
    out.mkdir()
    service, _ = local_service(out)
    task, _ = service.create("acme", ["buyer@example.com"], _items(out), timedelta(hours=1))
    from functions.review.mailer import build_review_email

    message = build_review_email(task, "http://127.0.0.1/review/x", lambda item: "http://127.0.0.1/i", "a@localhost")
    written = Path(OutboxMailer(out / "outbox").send(message))
    # Then only the owner can read them
    mode = lambda path: stat.S_IMODE(os.stat(path).st_mode)  # noqa: E731
    assert mode(out / ".review") == 0o700
    assert mode(out / "outbox") == 0o700
    assert mode(written) == 0o600


def test_an_existing_review_folder_is_made_private(tmp_path):
    (tmp_path / ".review").mkdir(mode=0o755)
    os.chmod(tmp_path / ".review", 0o755)
    (tmp_path / "outbox").mkdir()
    os.chmod(tmp_path / "outbox", 0o755)
    local_service(tmp_path)
    OutboxMailer(tmp_path / "outbox").send(_message())
    assert stat.S_IMODE(os.stat(tmp_path / ".review").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "outbox").st_mode) == 0o700


def _message():
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = "x"
    message["X-Catalog-Review-Id"] = "r1"
    message.set_content("x")
    return message


# -- item 8: the terminal output ---------------------------------------------------------------------------------

HOSTILE = "x[reverse]y\x1b[31m.jpg"


def test_the_failure_table_prints_file_names_as_text(monkeypatch, tmp_path):
    from functions.local import cli

    # Given a failed file whose name holds rich markup and a raw escape sequence
    stream = io.StringIO()
    # A terminal without colours: rich writes no escape sequence of its own, so any ESC came from the name.
    monkeypatch.setattr(cli, "console", Console(file=stream, force_terminal=True, color_system=None, width=200))
    entry = ManifestEntry(
        source=HOSTILE,
        sku="SKU-1",
        status=Status.FAILED,
        error=ProcessingError(code="unreadable", message=f"cannot open {HOSTILE} [bold]"),
        settings_fingerprint="f",
    )
    # When the summary is printed
    cli._print_summary([entry], tmp_path / "manifest.json", tmp_path / "report.html")
    printed = stream.getvalue()
    # Then the markup shows as typed, and the escape sequence in a visible form, not as a control character
    assert "x[reverse]y" in printed and "[bold]" in printed
    assert "\x1b" not in printed
    assert "\\x1b[31m.jpg" in printed


def test_terminal_text_makes_control_and_bidi_characters_visible():
    from functions.local.cli import terminal_text

    assert terminal_text("a\x1b[2Jb\x07c\x9bd\u202ee\nf") == "a\\x1b[2Jb\\x07c\\x9bd\\u202ee\\x0af"
    assert terminal_text("plain [red]name[/].jpg") == "plain [red]name[/].jpg"


# -- review_notify: a validation error never echoes the task token --------------------------------------------


@pytest.mark.parametrize(
    "mutation",
    [
        lambda body: body.update(items="not a list"),
        lambda body: body.update(unexpected="field"),
        lambda body: body.update(task_token=body["task_token"] * 200),  # too long: the value itself is invalid
        lambda body: body.update(brand=None),
        lambda body: body.pop("reviewers"),
        lambda body: body.update(task_token={"nested": body["task_token"]}),
    ],
)
def test_a_notify_validation_error_never_shows_the_task_token(monkeypatch, mutation):
    from functions.handlers import review_notify

    token = "AQCEAAAAKgAAAAMAAAAAAAAAAf4dSecretTaskToken0123456789" * 3
    body = {"task_token": token, "brand": "acme", "reviewers": ["buyer@example.com"], "items": []}
    mutation(body)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(review_notify.logger.registered_formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    review_notify.logger.addHandler(handler)

    class Context:
        function_name, memory_limit_in_mb, aws_request_id = "notify", 128, "r-1"
        invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:notify"

    try:
        with pytest.raises(Exception) as raised:
            review_notify.lambda_handler(body, Context())
    finally:
        root.removeHandler(handler)
        review_notify.logger.removeHandler(handler)
    shown = "".join(traceback.format_exception(raised.value)) + repr(raised.value) + stream.getvalue()
    for cause in (raised.value.__cause__, raised.value.__context__):
        if cause is not None:
            shown += str(cause) + repr(cause)
    # pydantic shortens a long input in its message: no 12 characters of the token may show, not just all of it
    assert not any(token[i : i + 12] in shown for i in range(len(token) - 12))
    assert (
        "task_token" in shown or "items" in shown or "unexpected" in shown or "brand" in shown or "reviewers" in shown
    )
