"""The loopback webhook endpoint of `catalog shopify serve`: 127.0.0.1 only, `POST /webhooks/shopify`.

The request thread only verifies and queues (the answer takes milliseconds); one worker thread fetches the images
into `OUT/incoming/<brand>/<handle>/` and appends what it did to `OUT/shopify/intake.jsonl`.
"""

import json
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from functions.adapters.local.files import FileStorage, file_uri
from functions.adapters.local.shopify_store import SQLiteShopifyStore
from functions.stages.shopify_intake import (
    DEFAULT_MAX_BODY_BYTES,
    ImageFetcher,
    ProductIntake,
    TransientFetchError,
    WebhookAnswer,
    WebhookSecrets,
    ingest_product,
    receive_webhook,
)
from schemas.shopify import ShopifySettings, ShopifyWork

WEBHOOK_PATH = "/webhooks/shopify"
REQUEST_TIMEOUT_SECONDS = 10.0  # a socket read; Shopify sends the whole request at once
RETRY_DELAYS_SECONDS = (1.0, 4.0, 15.0)  # transient fetch failures; then the event is recorded as failed


class LocalShopifyServer:
    """The endpoint and its worker. `port=0` takes a free port; `stop()` finishes the queued work first."""

    def __init__(
        self,
        out_dir: Path,
        *,
        secrets: WebhookSecrets,
        brand: str,
        settings: ShopifySettings,
        extra_image_hosts: tuple[str, ...] = (),
        port: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        report: Callable[[dict[str, Any]], None] = lambda line: None,
    ) -> None:
        self.out_dir = out_dir.resolve()
        self.secrets, self.brand, self.settings, self.max_body_bytes = secrets, brand, settings, max_body_bytes
        self.report = report
        self.store = SQLiteShopifyStore(self.out_dir / "shopify" / "intake.sqlite3")
        self.writer = FileStorage([self.out_dir])
        self.fetcher = ImageFetcher(settings, extra_image_hosts)
        self.log_path = self.out_dir / "shopify" / "intake.jsonl"
        self.work: queue.Queue[ShopifyWork | None] = queue.Queue()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{WEBHOOK_PATH}"
        self._threads: list[threading.Thread] = []

    def start(self) -> "LocalShopifyServer":
        self._threads = [
            threading.Thread(target=self.httpd.serve_forever, name="shopify-webhooks", daemon=True),
            threading.Thread(target=self._work_loop, name="shopify-intake", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.work.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        self.store.close()

    def __enter__(self) -> "LocalShopifyServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the endpoint
    def answer(self, body: bytes, headers: dict[str, str]) -> WebhookAnswer:
        answer = receive_webhook(
            body,
            headers,
            secrets=self.secrets,
            brand=self.brand,
            store=self.store,
            enqueue=self.work.put,
            max_body_bytes=self.max_body_bytes,
        )
        line: dict[str, Any] = {"stage": "webhook", "status": answer.status, "outcome": answer.outcome}
        if answer.work is not None:
            line.update(event_id=answer.work.event_id, product_id=answer.work.product.id)
        line["detail"] = answer.detail
        self._record(line)
        return answer

    # ---- the worker
    def _work_loop(self) -> None:
        while (work := self.work.get()) is not None:
            self._record(self._ingest(work))

    def _ingest(self, work: ShopifyWork) -> dict[str, Any]:
        line: dict[str, Any] = {"stage": "intake", "event_id": work.event_id, "product_id": work.product.id}
        for attempt, delay in enumerate((*RETRY_DELAYS_SECONDS, None)):
            try:
                result = ingest_product(
                    work,
                    intake_root=file_uri(self.out_dir / "incoming"),
                    store=self.store,
                    writer=self.writer,
                    fetcher=self.fetcher,
                    settings=self.settings,
                )
                return {**line, **_summary(result)}
            except TransientFetchError as error:
                if delay is None:
                    return {**line, "outcome": "failed", "attempts": attempt + 1, "detail": str(error)}
                time.sleep(delay)
            except Exception as error:  # one bad product must not stop the worker: record it and go on
                return {**line, "outcome": "failed", "detail": f"{type(error).__name__}: {error}"}
        raise AssertionError("unreachable")

    def _record(self, line: dict[str, Any]) -> None:
        line = {"at": datetime.now(UTC).isoformat(), **line}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")
        self.report(line)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "catalog-shopify"
            sys_version = ""
            timeout = REQUEST_TIMEOUT_SECONDS

            def log_message(self, format: str, *args: Any) -> None:  # the intake log says what matters
                return

            def _reply(self, status: int, outcome: str, detail: str) -> None:
                body = json.dumps({"outcome": outcome, "detail": detail}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                if self.path.split("?", 1)[0] != WEBHOOK_PATH:
                    self._reply(404, "not_found", f"POST {WEBHOOK_PATH}")
                    return
                length = self.headers.get("Content-Length", "")
                if not length.isdigit():
                    self.close_connection = True
                    self._reply(411, "length_required", "Content-Length must be a number")
                    return
                if int(length) > server.max_body_bytes:
                    self.close_connection = True  # the body is not read at all
                    self._reply(413, "body_too_large", f"body of {length} bytes, over {server.max_body_bytes}")
                    return
                body = self.rfile.read(int(length))
                answer = server.answer(body, {key: value for key, value in self.headers.items()})
                self._reply(answer.status, answer.outcome, answer.detail)

            def do_GET(self) -> None:
                self._reply(405, "method_not_allowed", f"POST {WEBHOOK_PATH}")

        return Handler


def _summary(result: ProductIntake) -> dict[str, Any]:
    summary: dict[str, Any] = {"outcome": result.outcome, "folder": result.folder, "images": result.counts()}
    if result.outcome == "processed":
        summary["sidecar_written"] = result.sidecar_written
    refused = [{"image_id": i.image_id, "code": i.code, "detail": i.message} for i in result.images if i.code]
    if refused:
        summary["refused"] = refused
    if result.message:
        summary["detail"] = result.message
    return summary
