"""The loopback review server of `catalog run --review local`: 127.0.0.1 only, images from the run's folder.

One request per connection, read within `timeout` seconds (head and body together), so a client that trickles
bytes cannot hold a thread; a `Content-Length` that is not a plain number is a 400.
"""

import contextlib
import mimetypes
import re
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from functions.adapters.local.files import path_of
from functions.review.page import ImageUrl, security_headers
from functions.review.service import ReviewService
from functions.review.signing import IMAGE_KINDS, LinkParams, LinkRefusedError
from functions.review.store import StoredReview
from functions.review.web import MAX_BODY_BYTES, ReviewWeb, WebResponse
from schemas.review import ReviewItem

__all__ = ["IMAGE_KINDS", "LocalReviewServer", "local_image_path", "local_image_urls"]

DEFAULT_TIMEOUT_SECONDS = 30.0  # to send a whole request; a browser on the same machine takes milliseconds
PAGE_IMAGE_LIFETIME = timedelta(hours=1)  # the page's images: reloading the page signs fresh ones
_CONTENT_LENGTH = re.compile(r"^[0-9]{1,9}$")


def local_image_path(out_dir: Path, item: ReviewItem, kind: str) -> Path:
    """The file behind an image route, refused if it would lie outside the run's folder."""
    relative = {
        "original": item.original,
        "generated": item.generated,
        "preview": item.details.generated_thumbnail or item.generated,
    }[kind]
    root = out_dir.resolve()
    # Items name their images by file:// URI (the prepare stage's outputs) or, in older runs, relative to OUT.
    path = (root / (path_of(relative) if relative.startswith("file://") else relative)).resolve()
    if root not in path.parents:
        raise LinkRefusedError("image outside the output folder")
    return path


def local_image_urls(
    base_url: str, service: ReviewService, lifetime: timedelta = PAGE_IMAGE_LIFETIME
) -> Callable[[StoredReview, LinkParams], ImageUrl]:
    """The page's images carry an image-only capability (never the link's signature), valid for `lifetime` at most."""

    def for_review(review: StoredReview, params: LinkParams) -> ImageUrl:
        expires = min(params.expires, int((service.clock() + lifetime).timestamp()))

        def url(item: ReviewItem, kind: str) -> str:
            return image_url(base_url, service, review.review_id, item, kind, expires)

        return url

    return for_review


def image_url(base_url: str, service: ReviewService, review_id: str, item: ReviewItem, kind: str, expires: int) -> str:
    image = service.image_capability(review_id, item.item_id, kind, expires)
    return f"{base_url}/review/{review_id}/image/{quote(item.item_id, safe='')}/{kind}?{image.query()}"


class LocalReviewServer:
    """Serves the review routes on 127.0.0.1 in a background thread; `port=0` takes a free port. A connection that
    has not sent its whole request within `timeout` seconds is closed."""

    def __init__(
        self, service: ReviewService, out_dir: Path, port: int = 0, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        if timeout <= 0:
            raise ValueError("the request timeout must be positive")
        self.service, self.out_dir, self.timeout = service, out_dir, timeout
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.web = ReviewWeb(service, local_image_urls(self.base_url, service))
        self._thread: threading.Thread | None = None

    def link(self, params: LinkParams) -> str:
        return f"{self.base_url}/review/{params.review_id}?{params.query()}"

    def thumbnail_url(self, params: LinkParams, item: ReviewItem) -> str:
        """An email thumbnail: the item's preview only, for as long as the link lives; it opens nothing else."""
        return image_url(self.base_url, self.service, params.review_id, item, "preview", params.expires)

    def start(self) -> "LocalReviewServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="review-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LocalReviewServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def image(self, review_id: str, item_id: str, kind: str, query: dict[str, str]) -> WebResponse:
        if kind not in IMAGE_KINDS:
            return self.web.not_found()
        try:
            _, item = self.service.open_image(review_id, item_id, kind, query)
            if item is None:
                return self.web.not_found()
            path = local_image_path(self.out_dir, item, kind)
            data = path.read_bytes()
        except LinkRefusedError as error:
            return self.web.refused(reason=error.reason)
        except OSError:
            return self.web.not_found()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return WebResponse(200, data, security_headers(content_type=content_type))

    def route_get(self, path: str, query: dict[str, str]) -> WebResponse:
        parts = [unquote(part) for part in path.strip("/").split("/")]
        if len(parts) == 2 and parts[0] == "review-static":
            return self.web.static(parts[1])
        if len(parts) == 2 and parts[0] == "review":
            return self.web.page(parts[1], query)
        if len(parts) == 5 and parts[0] == "review" and parts[2] == "image":
            return self.image(parts[1], parts[3], parts[4], query)
        return self.web.not_found()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "catalog-review"
            sys_version = ""
            timeout = server.timeout  # each read; the deadline below bounds the whole request

            def setup(self) -> None:
                super().setup()
                self._lock = threading.Lock()
                self._reading, self._timed_out = True, False
                self._deadline = threading.Timer(server.timeout, self._give_up)
                self._deadline.daemon = True
                self._deadline.start()

            def _give_up(self) -> None:
                """The request was not read in time: shut the socket, which ends any read in progress."""
                with self._lock:
                    if not self._reading:
                        return
                    self._timed_out = True
                    self.close_connection = True
                with contextlib.suppress(OSError):  # already closed
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _request_read(self) -> bool:
                """Stop the deadline; False when it had already fired (the socket is shut: answer nothing)."""
                self._deadline.cancel()
                with self._lock:
                    self._reading = False
                    return not self._timed_out

            def finish(self) -> None:
                self._deadline.cancel()
                with contextlib.suppress(OSError):  # the client went away, or we shut the socket: nothing to flush
                    super().finish()

            def _send(self, response: WebResponse, head_only: bool = False) -> None:
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if not head_only:
                    self.wfile.write(response.body)

            def _plain(self, status: int, message: str) -> None:
                self.close_connection = True
                self._send(WebResponse(status, message.encode(), security_headers(content_type="text/plain")))

            def _get(self, head_only: bool) -> None:
                if not self._request_read():
                    return
                url = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                self._send(server.route_get(url.path, query), head_only)

            def do_GET(self) -> None:
                self._get(head_only=False)

            def do_HEAD(self) -> None:
                self._get(head_only=True)

            def do_POST(self) -> None:
                parts = [unquote(part) for part in urlsplit(self.path).path.strip("/").split("/")]
                lengths = self.headers.get_all("Content-Length") or []
                if self.headers.get("Transfer-Encoding") or len(lengths) > 1:
                    if self._request_read():
                        self._plain(400, "send one Content-Length, without Transfer-Encoding")
                    return
                length_text = lengths[0].strip() if lengths else "0"
                if not _CONTENT_LENGTH.match(length_text):
                    if self._request_read():
                        self._plain(400, "Content-Length must be a non-negative whole number")
                    return
                length = int(length_text)
                if len(parts) != 2 or parts[0] != "review":
                    if self._request_read():
                        self.close_connection = True
                        self._send(server.web.not_found())
                    return
                if length > MAX_BODY_BYTES:
                    if self._request_read():
                        self._plain(413, "request too large")
                    return
                try:
                    body = self.rfile.read(length)
                except OSError:  # a read timed out, or the deadline shut the socket
                    self.close_connection = True
                    return
                if not self._request_read():
                    return
                if len(body) != length:
                    self._plain(400, "the request body is shorter than its Content-Length")
                    return
                self._send(server.web.decide(parts[1], self.headers.get("Content-Type", ""), body))

            def log_message(self, format: str, *args: object) -> None:
                # The default logs every request line to stderr, link signatures included; keep the terminal quiet.
                return

        return Handler
