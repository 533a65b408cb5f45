"""The loopback review server of `catalog run --review local`: 127.0.0.1 only, images from the run's folder."""

import mimetypes
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from functions.adapters.local.files import path_of
from functions.review.page import ImageUrl, security_headers
from functions.review.service import ReviewService
from functions.review.signing import LinkParams, LinkRefusedError
from functions.review.store import StoredReview
from functions.review.web import ReviewWeb, WebResponse
from schemas.review import ReviewItem

IMAGE_KINDS = ("original", "generated", "preview")


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


def local_image_urls(base_url: str) -> Callable[[StoredReview, LinkParams], ImageUrl]:
    """Image links carry the same signed params as the page: the route checks them like any other request."""

    def for_review(review: StoredReview, params: LinkParams) -> ImageUrl:
        def url(item: ReviewItem, kind: str) -> str:
            return f"{base_url}/review/{review.review_id}/image/{quote(item.item_id, safe='')}/{kind}?{params.query()}"

        return url

    return for_review


class LocalReviewServer:
    """Serves the review routes on 127.0.0.1 in a background thread; `port=0` takes a free port."""

    def __init__(self, service: ReviewService, out_dir: Path, port: int = 0) -> None:
        self.service, self.out_dir = service, out_dir
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.web = ReviewWeb(service, local_image_urls(self.base_url))
        self._thread: threading.Thread | None = None

    def link(self, params: LinkParams) -> str:
        return f"{self.base_url}/review/{params.review_id}?{params.query()}"

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
            review, _ = self.service.open(review_id, query)
            item = review.item(item_id)
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

            def _send(self, response: WebResponse, head_only: bool = False) -> None:
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if not head_only:
                    self.wfile.write(response.body)

            def _get(self, head_only: bool) -> None:
                url = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                self._send(server.route_get(url.path, query), head_only)

            def do_GET(self) -> None:
                self._get(head_only=False)

            def do_HEAD(self) -> None:
                self._get(head_only=True)

            def do_POST(self) -> None:
                parts = [unquote(part) for part in urlsplit(self.path).path.strip("/").split("/")]
                length = int(self.headers.get("Content-Length") or 0)
                if len(parts) != 2 or parts[0] != "review":
                    self._send(server.web.not_found())
                    return
                if length > 64 * 1024:
                    self._send(WebResponse(413, b"request too large", {"Content-Type": "text/plain"}))
                    return
                body = self.rfile.read(length)
                self._send(server.web.decide(parts[1], self.headers.get("Content-Type", ""), body))

            def log_message(self, format: str, *args: object) -> None:
                # The default logs every request line to stderr, link signatures included; keep the terminal quiet.
                return

        return Handler
