"""A loopback Shopify store: the Admin GraphQL API (the operations the publisher sends), staged uploads, its CDN.

The GraphQL requests are parsed, validated and executed by graphql-core against a small schema written from
Shopify's documented types (Admin API 2025-10: Product, MediaImage, stagedUploadsCreate, productUpdate with
`media: [CreateMediaInput!]`, productReorderMedia, fileUpdate, productByIdentifier, products): a field or argument the
real API does not have is a GraphQL validation error here too. Around it, what Shopify does at the HTTP level:
`X-Shopify-Access-Token` (401 otherwise), the version in the path, a leaky bucket reported in
`extensions.cost.throttleStatus` with `THROTTLED` errors when it runs dry, and injected 429/5xx answers.

- `POST /admin/api/<version>/graphql.json`: the API.
- `POST /staged-uploads`: the staged upload target (multipart form: the target's parameters, then `file`).
- `GET /cdn/<name>`: product images (the merchant's own and attached media), for intake to fetch.
"""

import email.parser
import email.policy
import io
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from graphql import GraphQLError, build_schema, graphql_sync
from PIL import Image

API_VERSION = "2025-10"

SCHEMA = build_schema(
    """
    scalar URL
    scalar UnsignedInt64
    scalar DateTime
    enum MediaContentType { EXTERNAL_VIDEO IMAGE MODEL_3D VIDEO }
    enum MediaStatus { FAILED PROCESSING READY UPLOADED }
    enum StagedUploadTargetGenerateUploadResource { BULK_MUTATION_VARIABLES COLLECTION_IMAGE FILE IMAGE MODEL_3D
      PRODUCT_IMAGE SHOP_IMAGE URL_REDIRECT_IMPORT VIDEO }
    enum StagedUploadHttpMethodType { POST PUT }
    interface Media { id: ID! alt: String mediaContentType: MediaContentType! status: MediaStatus! }
    interface File { id: ID! alt: String }
    type Image { url: URL! altText: String width: Int height: Int }
    type MediaImage implements Media & File {
      id: ID! alt: String mediaContentType: MediaContentType! status: MediaStatus! image: Image
    }
    type MediaConnection { nodes: [Media!]! }
    type SelectedOption { name: String! value: String! }
    type ProductVariant {
      id: ID! legacyResourceId: UnsignedInt64! sku: String position: Int! selectedOptions: [SelectedOption!]!
    }
    type ProductVariantConnection { nodes: [ProductVariant!]! }
    type ProductOption { id: ID! name: String! position: Int! values: [String!]! }
    type Product {
      id: ID! legacyResourceId: UnsignedInt64! handle: String! title: String! productType: String! tags: [String!]!
      updatedAt: DateTime! options(first: Int): [ProductOption!]! variants(first: Int): ProductVariantConnection!
      media(first: Int, last: Int): MediaConnection!
      metafield(namespace: String, key: String!): Metafield
    }
    type Metafield { id: ID! namespace: String! key: String! type: String! value: String! }
    input MetafieldsSetInput { ownerId: ID! namespace: String key: String! type: String value: String! }
    type MetafieldsSetUserError { code: String field: [String!] message: String! elementIndex: Int }
    type MetafieldsSetPayload { metafields: [Metafield!] userErrors: [MetafieldsSetUserError!]! }
    type ProductConnection { nodes: [Product!]! }
    input ProductIdentifierInput { id: ID handle: String }
    type Query {
      product(id: ID!): Product
      productByIdentifier(identifier: ProductIdentifierInput!): Product
      products(first: Int, query: String): ProductConnection!
    }
    input StagedUploadInput {
      resource: StagedUploadTargetGenerateUploadResource! filename: String! mimeType: String!
      httpMethod: StagedUploadHttpMethodType fileSize: UnsignedInt64
    }
    type StagedUploadParameter { name: String! value: String! }
    type StagedMediaUploadTarget { url: URL resourceUrl: URL parameters: [StagedUploadParameter!]! }
    type UserError { field: [String!] message: String! }
    type MediaUserError { code: String field: [String!] message: String! }
    type FilesUserError { code: String field: [String!] message: String! }
    type StagedUploadsCreatePayload { stagedTargets: [StagedMediaUploadTarget!] userErrors: [UserError!]! }
    input ProductUpdateInput { id: ID title: String handle: String }
    input CreateMediaInput { originalSource: String! alt: String mediaContentType: MediaContentType! }
    type ProductUpdatePayload { product: Product userErrors: [UserError!]! }
    input MoveInput { id: ID! newPosition: UnsignedInt64! }
    type Job { id: ID! done: Boolean! }
    type ProductReorderMediaPayload { job: Job mediaUserErrors: [MediaUserError!]! }
    input FileUpdateInput { id: ID! alt: String referencesToAdd: [ID!] referencesToRemove: [ID!] }
    type FileUpdatePayload { files: [File!] userErrors: [FilesUserError!]! }
    type Mutation {
      stagedUploadsCreate(input: [StagedUploadInput!]!): StagedUploadsCreatePayload
      productUpdate(product: ProductUpdateInput, media: [CreateMediaInput!]): ProductUpdatePayload
      productReorderMedia(id: ID!, moves: [MoveInput!]!): ProductReorderMediaPayload
      fileUpdate(files: [FileUpdateInput!]!): FileUpdatePayload
      metafieldsSet(metafields: [MetafieldsSetInput!]!): MetafieldsSetPayload
    }
    """
)
_MUTATION_COST = 10  # Shopify's documented cost of a mutation
_QUERY_COST = 12  # a product with a page of media: a few points


def tiny_jpeg(colour: tuple[int, int, int] = (180, 40, 40), size: int = 96) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@dataclass
class FakeProduct:
    id: str
    handle: str
    title: str
    sku: str
    media: list[dict[str, Any]] = field(default_factory=list)
    metafields: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


class FakeShopifyStore:
    """The store's state and its HTTP face. Use as a context manager; `url` is `http://127.0.0.1:PORT`."""

    def __init__(
        self,
        token: str = "shpat_test_token",
        *,
        maximum_available: int = 2000,
        restore_rate: int = 100,
        max_megapixels: float = 20.0,
    ) -> None:
        self.token = token
        self.max_pixels = int(max_megapixels * 1_000_000)  # Shopify's documented ceiling for a MediaImage
        # True: new media stay PROCESSING with no image URL (as on Shopify, for a while) until `finish_processing`.
        self.processing = False
        self.refuse_uploads = 0  # the next N staged uploads are refused (403, as for an expired upload policy)
        self.products: dict[str, FakeProduct] = {}
        self.files: dict[str, bytes] = {}  # the CDN: name -> bytes
        self.staged: dict[str, bytes] = {}  # staged uploads: key -> bytes
        self.detached: list[str] = []
        self.requests: list[str] = []  # GraphQL root fields, in order (what a test may assert on)
        self.maximum_available, self.restore_rate = float(maximum_available), float(restore_rate)
        self.available, self._filled_at = float(maximum_available), time.monotonic()
        self._fail_next: list[int] = []
        self._ids = itertools.count(1001)
        self._lock = threading.RLock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeShopifyStore":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- what tests arrange and inspect -----------------------------------------------------------------------

    def add_product(self, handle: str, title: str, merchant_images: int = 1, sku: str | None = None) -> FakeProduct:
        number = next(self._ids)
        product = FakeProduct(f"gid://shopify/Product/{number}", handle, title, sku or handle.upper())
        for index in range(merchant_images):
            name = f"{handle}-merchant-{index + 1}.jpg"
            self.files[name] = tiny_jpeg((40 + 60 * index, 90, 160))
            product.media.append(self._media(name, f"{title} photo {index + 1}"))
        self.products[product.id] = product
        return product

    def delete_product(self, product: FakeProduct) -> None:
        with self._lock:
            self.products.pop(product.id, None)

    def finish_processing(self) -> None:
        for product in self.products.values():
            for media in product.media:
                if media["status"] == "PROCESSING":
                    media.update(status="READY", image=media.pop("_image"))

    def drain(self) -> None:
        """Spend the whole throttle bucket, as other apps on the same store would."""
        with self._lock:
            self._throttle(0)
            self.available = 0.0

    def fail_next(self, *statuses: int) -> None:
        """The next GraphQL requests get these HTTP statuses (429 with `Retry-After: 0`, or a 5xx)."""
        self._fail_next.extend(statuses)

    def media_urls(self, product: FakeProduct) -> list[str]:
        return [m["image"]["url"] for m in product.media]

    def webhook_product(self, product: FakeProduct) -> dict[str, Any]:
        """The product as a `products/create` webhook body (REST shape), its images served by this store's CDN."""
        numeric = int(product.id.rsplit("/", 1)[1])
        images = [
            {
                "id": int(m["id"].rsplit("/", 1)[1]),
                "product_id": numeric,
                "position": position,
                "src": m["image"]["url"],
                "alt": m["alt"],
                "width": 96,
                "height": 96,
                "variant_ids": [],
                "admin_graphql_api_id": m["id"],
            }
            for position, m in enumerate(product.media, start=1)
        ]
        return {
            "id": numeric,
            "title": product.title,
            "handle": product.handle,
            "product_type": "Shirts",
            "tags": "",
            "updated_at": "2026-11-30T12:00:00-05:00",
            "variants": [{"id": numeric * 10, "product_id": numeric, "sku": product.sku, "position": 1}],
            "options": [],
            "images": images,
            "admin_graphql_api_id": product.id,
        }

    # -- the store's behaviour --------------------------------------------------------------------------------

    def _media(self, name: str, alt: str) -> dict[str, Any]:
        return {
            "__typename": "MediaImage",
            "id": f"gid://shopify/MediaImage/{next(self._ids)}",
            "alt": alt,
            "mediaContentType": "IMAGE",
            "status": "READY",
            "image": {"url": f"{self.url}/cdn/{name}", "altText": alt},
        }

    def _product_view(self, product: FakeProduct | None) -> dict[str, Any] | None:
        if product is None:
            return None
        media = list(product.media)
        numeric = product.id.rsplit("/", 1)[1]
        variant = {
            "id": f"gid://shopify/ProductVariant/{numeric}0",
            "legacyResourceId": f"{numeric}0",
            "sku": product.sku,
            "position": 1,
            "selectedOptions": [{"name": "Color", "value": "Red"}],
        }
        return {
            "id": product.id,
            "legacyResourceId": numeric,
            "handle": product.handle,
            "title": product.title,
            "productType": "Shirts",
            "tags": ["linen", "collection:Summer"],
            "updatedAt": "2026-11-30T17:00:00Z",
            "options": [
                {"id": f"gid://shopify/ProductOption/{numeric}", "name": "Color", "position": 1, "values": ["Red"]}
            ],
            "variants": {"nodes": [variant]},
            "metafield": lambda info, key, namespace=None: product.metafields.get((namespace or "", key)),
            "media": lambda info, first=None, last=None: {"nodes": media[:first] if first else media[-(last or 0) :]},
        }

    def _root(self) -> dict[str, Any]:
        def record(name: str) -> None:
            self.requests.append(name)

        def product(info: Any, id: str) -> Any:
            record("product")
            return self._product_view(self.products.get(id))

        def product_by_identifier(info: Any, identifier: dict[str, str]) -> Any:
            record("productByIdentifier")
            found = [
                p
                for p in self.products.values()
                if p.handle == identifier.get("handle") or p.id == identifier.get("id")
            ]
            return self._product_view(found[0] if found else None)

        def products(info: Any, first: int | None = None, query: str | None = None) -> Any:
            record("products")
            sku = (query or "").removeprefix("sku:").strip('"')
            return {"nodes": [self._product_view(p) for p in self.products.values() if p.sku == sku][: first or 50]}

        def staged_uploads_create(info: Any, input: list[dict[str, Any]]) -> Any:
            record("stagedUploadsCreate")
            targets, errors = [], []
            for index, entry in enumerate(input):
                if entry["mimeType"] not in ("image/jpeg", "image/png", "image/webp", "image/gif"):
                    errors.append({"field": ["input", str(index), "mimeType"], "message": "Mime type is invalid"})
                    continue
                key = f"tmp/{next(self._ids)}/{entry['filename']}"
                targets.append(
                    {
                        "url": f"{self.url}/staged-uploads",
                        "resourceUrl": f"{self.url}/staged-uploads/{key}",
                        "parameters": [
                            {"name": "Content-Type", "value": entry["mimeType"]},
                            {"name": "success_action_status", "value": "201"},
                            {"name": "key", "value": key},
                        ],
                    }
                )
            return {"stagedTargets": None if errors else targets, "userErrors": errors}

        def product_update(info: Any, product: dict[str, Any] | None = None, media: Any = None) -> Any:
            record("productUpdate")
            found = self.products.get((product or {}).get("id", ""))
            if found is None:
                return {"product": None, "userErrors": [{"field": ["id"], "message": "Product does not exist"}]}
            errors = []
            for index, entry in enumerate(media or ()):
                key = entry["originalSource"].split("/staged-uploads/", 1)[-1]
                if key not in self.staged:
                    errors.append({"field": ["media", str(index), "originalSource"], "message": "Image URL is invalid"})
                    continue
                if len(entry.get("alt") or "") > 512:
                    errors.append({"field": ["media", str(index), "alt"], "message": "Alt is too long"})
                    continue
                with Image.open(io.BytesIO(self.staged[key])) as image:
                    width, height = image.size
                if width * height > self.max_pixels:
                    message = f"Image {width}x{height} exceeds the maximum of {self.max_pixels} pixels"
                    errors.append({"field": ["media", str(index), "originalSource"], "message": message})
                    continue
                name = key.rsplit("/", 1)[1]
                self.files[name] = self.staged[key]
                created = self._media(name, entry.get("alt") or "")
                if self.processing:
                    created.update(status="PROCESSING", _image=created["image"], image=None)
                found.media.append(created)
            return {"product": self._product_view(found), "userErrors": errors}

        def product_reorder_media(info: Any, id: str, moves: list[dict[str, Any]]) -> Any:
            record("productReorderMedia")
            found = self.products.get(id)
            if found is None:
                return {
                    "job": None,
                    "mediaUserErrors": [
                        {"code": "PRODUCT_DOES_NOT_EXIST", "field": ["id"], "message": "Product does not exist"}
                    ],
                }
            for move in moves:  # evaluated in order, each to its zero-based position
                current = next((m for m in found.media if m["id"] == move["id"]), None)
                if current is None:
                    return {
                        "job": None,
                        "mediaUserErrors": [
                            {"code": "MEDIA_DOES_NOT_EXIST", "field": ["moves"], "message": "Media does not exist"}
                        ],
                    }
                found.media.remove(current)
                found.media.insert(int(move["newPosition"]), current)
            return {"job": {"id": f"gid://shopify/Job/{next(self._ids)}", "done": True}, "mediaUserErrors": []}

        def metafields_set(info: Any, metafields: list[dict[str, Any]]) -> Any:
            record("metafieldsSet")
            saved, errors = [], []
            for index, entry in enumerate(metafields):
                owner = self.products.get(entry["ownerId"])
                if owner is None:
                    errors.append({"field": ["metafields", str(index), "ownerId"], "message": "Owner does not exist"})
                    continue
                if entry.get("type") == "json":
                    try:
                        json.loads(entry["value"])
                    except ValueError:
                        errors.append(
                            {"field": ["metafields", str(index), "value"], "message": "Value is invalid JSON"}
                        )
                        continue
                key = (entry.get("namespace") or "", entry["key"])
                current = owner.metafields.get(key) or {"id": f"gid://shopify/Metafield/{next(self._ids)}"}
                owner.metafields[key] = {
                    **current,
                    "namespace": key[0],
                    "key": key[1],
                    "type": entry.get("type") or "",
                    "value": entry["value"],
                }
                saved.append(owner.metafields[key])
            return {"metafields": None if errors else saved, "userErrors": errors}

        def file_update(info: Any, files: list[dict[str, Any]]) -> Any:
            record("fileUpdate")
            for entry in files:
                for product_id in entry.get("referencesToRemove") or ():
                    found = self.products.get(product_id)
                    if found:
                        found.media = [m for m in found.media if m["id"] != entry["id"]]
                        self.detached.append(entry["id"])
            return {"files": [{"__typename": "MediaImage", "id": e["id"]} for e in files], "userErrors": []}

        return {
            "product": product,
            "productByIdentifier": product_by_identifier,
            "products": products,
            "stagedUploadsCreate": staged_uploads_create,
            "productUpdate": product_update,
            "productReorderMedia": product_reorder_media,
            "fileUpdate": file_update,
            "metafieldsSet": metafields_set,
        }

    def _cost(self, query: str) -> int:
        return _MUTATION_COST if query.lstrip().startswith("mutation") else _QUERY_COST

    def _throttle(self, requested: int) -> dict[str, Any]:
        now = time.monotonic()
        self.available = min(self.maximum_available, self.available + (now - self._filled_at) * self.restore_rate)
        self._filled_at = now
        throttled = requested > self.available
        if not throttled:
            self.available -= requested
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": None if throttled else requested,
            "throttleStatus": {
                "maximumAvailable": self.maximum_available,
                "currentlyAvailable": int(self.available),
                "restoreRate": self.restore_rate,
            },
        }

    def graphql(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            query = body.get("query") or ""
            cost = self._throttle(self._cost(query))
            if cost["actualQueryCost"] is None:
                throttled = {"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": "..."}}
                return {"errors": [throttled], "extensions": {"cost": cost}}
            result = graphql_sync(SCHEMA, query, root_value=self._root(), variable_values=body.get("variables"))
            answer: dict[str, Any] = {"data": result.data, "extensions": {"cost": cost}}
            if result.errors:
                answer["errors"] = [_error(e) for e in result.errors]
            return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        store = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                name = self.path.removeprefix("/cdn/")
                data = store.files.get(name)
                if not self.path.startswith("/cdn/") or data is None:
                    self._send(404, b"Not Found", "text/plain")
                else:
                    self._send(200, data, "image/png" if name.endswith(".png") else "image/jpeg")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/staged-uploads":
                    self._staged_upload(body)
                elif self.path == f"/admin/api/{API_VERSION}/graphql.json":
                    self._graphql(body)
                else:
                    self._send(404, b'{"errors":"Not Found"}', "application/json")

            def _graphql(self, body: bytes) -> None:
                if self.headers.get("X-Shopify-Access-Token") != store.token:
                    message = (
                        b'{"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"}'
                    )
                    self._send(401, message, "application/json")
                    return
                if store._fail_next:
                    status = store._fail_next.pop(0)
                    headers = {"Retry-After": "0"} if status == 429 else {}
                    self._send(status, b'{"errors":"Internal Server Error"}', "application/json", headers)
                    return
                answer = store.graphql(json.loads(body))
                self._send(200, json.dumps(answer).encode(), "application/json")

            def _staged_upload(self, body: bytes) -> None:
                head = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
                fields: dict[str, bytes] = {}
                for part in message.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    payload = part.get_payload(decode=True)
                    fields[str(name)] = payload if isinstance(payload, bytes) else b""
                if store.refuse_uploads:
                    store.refuse_uploads -= 1
                    self._send(403, b"<Error><Code>AccessDenied</Code>Request has expired</Error>", "application/xml")
                    return
                key = fields.get("key", b"").decode()
                if not key or "file" not in fields or list(fields)[-1] != "file":
                    self._send(400, b"<Error><Code>InvalidArgument</Code></Error>", "application/xml")
                    return
                store.staged[key] = fields["file"]
                self._send(201, b"<PostResponse></PostResponse>", "application/xml")

        return Handler


def _error(error: GraphQLError) -> dict[str, Any]:
    return {
        "message": error.message,
        "locations": [{"line": at.line, "column": at.column} for at in error.locations or ()],
    }
