"""Approved images onto their Shopify product, once: staged upload -> `productUpdate` media -> order -> (replace).

A second publish target, run after `publish_decisions` has written `approved/` (or the output bucket): that copy is
the record and stays whatever Shopify answers, so nothing is lost and `catalog shopify sync` can publish it again.
It is not a `Publisher` adapter because a product is the unit here (ordering and replacement look at all of a
product's media at once, and the alt text comes from the product), while the port publishes one file at a time.

Per product (the SKU folder intake made: the handle, a variant SKU or `product-<id>`):
1. find it (`productByIdentifier(identifier: {handle})`, else a `sku:` search, else the id); gone -> every image of
   it ends `product_not_found`.
2. recognise our own media, two ways: our file names carry `cip` + 16 hex of the approved image's SHA-256, and a
   product metafield (`catalog_image_processor.published_media`, JSON `{hash: media id}`) records what we attached,
   which covers the minutes Shopify is still processing a new image (its URL, hence its file name, unknown yet). An
   image whose hash is there already is `already_attached`: a retried publish adds nothing.
3. each new image: marked with its provenance (XMP, C2PA when configured), `stagedUploadsCreate` (IMAGE, POST),
   the file to the target, `productUpdate(product: {id}, media: [{originalSource, alt, mediaContentType: IMAGE}])`
   (productCreateMedia is deprecated); the product's title as alt text. userErrors -> that image is `rejected`.
4. `productReorderMedia`: the merchant's media keep their order; ours follow (or lead) by the brand's kind order.
5. with `replace_merchant_media`, and only when every image of the product is there, the merchant's images are
   detached from the product (`fileUpdate` referencesToRemove: the files stay in the store's Files).
Shopify unavailable past the client's retries, or refusing the token -> this and every later image
`shopify_unavailable` (terminal), with the reason.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Protocol

from functions.stages.provenance import C2paSigning, alt_text
from functions.stages.publish import ReadBytes, _decided, published_bytes, safe_name
from functions.stages.shopify_names import OUR_MEDIA_NAME as _OURS
from schemas import ReviewDecision, ReviewItem, Verdict
from schemas.publishing import PublishingProfile, ShopifyMediaResult, ShopifyMediaStatus, ShopifyPublishResult


class ShopifyRefusedError(Exception):
    """The Admin API refused a request for good (token, query): retrying will not help."""


class ShopifyUnavailableError(ShopifyRefusedError):
    """429, 5xx, THROTTLED or no connection past every retry: a terminal state for this publish."""


class AdminGraphQL(Protocol):
    """What this stage needs of the Admin API (functions/adapters/shopify/admin.py; a loopback fake in tests)."""

    base_url: str
    api_version: str

    def execute(self, query: str, variables: Mapping[str, Any] | None = None, cost: int = 10) -> Any: ...

    def upload(self, target: Mapping[str, Any], data: bytes, filename: str, content_type: str) -> None: ...


_MEDIA_FIELDS = "id alt mediaContentType status ... on MediaImage { image { url } }"
METAFIELD_NAMESPACE, METAFIELD_KEY = "catalog_image_processor", "published_media"
PRODUCT_FIELDS = (
    f"id handle title media(first: 250) {{ nodes {{ {_MEDIA_FIELDS} }} }}"
    f' metafield(namespace: "{METAFIELD_NAMESPACE}", key: "{METAFIELD_KEY}") {{ value }}'
)
PRODUCT_BY_HANDLE = (
    "query ProductByHandle($handle: String!) {"
    f" productByIdentifier(identifier: {{handle: $handle}}) {{ {PRODUCT_FIELDS} }} }}"
)
PRODUCT_BY_SKU = (
    f"query ProductBySku($query: String!) {{ products(first: 1, query: $query) {{ nodes {{ {PRODUCT_FIELDS} }} }} }}"
)
PRODUCT_BY_ID = f"query ProductById($id: ID!) {{ product(id: $id) {{ {PRODUCT_FIELDS} }} }}"
STAGED_UPLOADS_CREATE = (
    "mutation StagedUploads($input: [StagedUploadInput!]!) { stagedUploadsCreate(input: $input) {"
    " stagedTargets { url resourceUrl parameters { name value } } userErrors { field message } } }"
)
ATTACH_MEDIA = (
    "mutation AttachMedia($product: ProductUpdateInput!, $media: [CreateMediaInput!]) {"
    f" productUpdate(product: $product, media: $media) {{ product {{ {PRODUCT_FIELDS} }}"
    " userErrors { field message } } }"
)
REORDER_MEDIA = (
    "mutation ReorderMedia($id: ID!, $moves: [MoveInput!]!) { productReorderMedia(id: $id, moves: $moves) {"
    " job { id } mediaUserErrors { code field message } } }"
)
RECORD_MEDIA = (
    "mutation RecordMedia($metafields: [MetafieldsSetInput!]!) { metafieldsSet(metafields: $metafields) {"
    " metafields { id } userErrors { code field message } } }"
)
DETACH_FILES = (
    "mutation DetachFiles($files: [FileUpdateInput!]!) { fileUpdate(files: $files) {"
    " files { id } userErrors { code field message } } }"
)

_MAX_ALT = 512  # Shopify's limit for media alt text
_PRODUCT_ID_FOLDER = re.compile(r"^product-([0-9]+)$")
_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def content_token(data: bytes) -> str:
    """What our file names carry: 16 hex of the approved image's SHA-256 (before marking: C2PA differs per signing)."""
    return hashlib.sha256(data).hexdigest()[:16]


def media_file_name(product_handle: str, item: ReviewItem, data: bytes) -> str:
    """`<handle>-<kind>-cip<hash><ext>`: readable in the admin, and how a retry recognises the image."""
    suffix = PurePosixPath(item.generated).suffix.lower() or ".png"
    return f"{safe_name(product_handle)[:80]}-{item.job_kind}-cip{content_token(data)}{suffix}"


def _recorded(product: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The metafield's `{hash: {id, kind}}`, for the media still on the product; a damaged value counts as none."""
    present = {media["id"] for media in product["media"]["nodes"]}
    try:
        record = json.loads((product.get("metafield") or {}).get("value") or "{}")
        entries = {token: (entry["id"], entry["kind"]) for token, entry in record.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}
    return {token: found for token, found in entries.items() if found[0] in present}


def _ours(media: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, token) when the media is one of ours, recognised by its file name; None for the merchant's."""
    url = ((media.get("image") or {}).get("url")) or ""
    match = _OURS.search(url)
    return (match.group(1), match.group(2)) if match else None


def find_product(admin: AdminGraphQL, folder: str) -> dict[str, Any] | None:
    """The product behind a SKU folder: by handle, else by variant SKU, else by `product-<id>`; None when gone."""
    product = admin.execute(PRODUCT_BY_HANDLE, {"handle": folder})["productByIdentifier"]
    if product is None:
        nodes = admin.execute(PRODUCT_BY_SKU, {"query": f'sku:"{folder}"'})["products"]["nodes"]
        product = nodes[0] if nodes else None
    if product is None and (match := _PRODUCT_ID_FOLDER.match(folder)):
        product = admin.execute(PRODUCT_BY_ID, {"id": f"gid://shopify/Product/{match.group(1)}"})["product"]
    return product


def _messages(errors: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    return tuple(
        f"{'.'.join(error.get('field') or ()) or '(input)'}: {error.get('message')}".strip() for error in errors
    )


def _order_moves(
    media: Sequence[Mapping[str, Any]], kinds: Mapping[str, str], profile: PublishingProfile
) -> list[dict[str, str]]:
    """Moves that put the merchant's media (in their order) and ours (by the brand's kind order) where they belong."""
    rank = {kind: index for index, kind in enumerate(profile.media_order)}
    merchant = [m["id"] for m in media if m["id"] not in kinds]
    ours = sorted(
        (m["id"] for m in media if m["id"] in kinds),
        key=lambda media_id: (rank.get(kinds[media_id], len(rank)), kinds[media_id]),
    )
    wanted = ours + merchant if profile.ours_first else merchant + ours
    current = [m["id"] for m in media]
    moves = []
    for position, media_id in enumerate(wanted):
        if current.index(media_id) != position:  # moves run in order: each puts one medium at its final place
            current.remove(media_id)
            current.insert(position, media_id)
            moves.append({"id": media_id, "newPosition": str(position)})
    return moves


def _result(
    item: ReviewItem, product: str, status: ShopifyMediaStatus, media_id: str | None = None, errors: Iterable[str] = ()
) -> ShopifyMediaResult:
    return ShopifyMediaResult(
        item_id=item.item_id, product=product, status=status, media_id=media_id, errors=tuple(errors)
    )


class _ProductGoneError(Exception):
    pass


def _attach(
    admin: AdminGraphQL,
    product: dict[str, Any],
    item: ReviewItem,
    decision: ReviewDecision,
    original: bytes,
    profile: PublishingProfile,
    c2pa_signing: C2paSigning | None,
) -> tuple[ShopifyMediaResult, dict[str, Any]]:
    """Upload and attach one image; returns its result and the product as Shopify now has it."""
    name = media_file_name(product["handle"], item, original)
    content_type = _CONTENT_TYPES.get(PurePosixPath(name).suffix, "image/png")
    data = published_bytes(item, decision, original, content_type, c2pa_signing)
    staged = admin.execute(
        STAGED_UPLOADS_CREATE,
        {
            "input": [
                {
                    "filename": name,
                    "mimeType": content_type,
                    "resource": "IMAGE",
                    "httpMethod": "POST",
                    "fileSize": str(len(data)),
                }
            ]
        },
    )["stagedUploadsCreate"]
    problems = _messages(staged["userErrors"]) or (() if staged["stagedTargets"] else ("no staged upload target",))
    if problems:
        return _result(item, product["handle"], ShopifyMediaStatus.REJECTED, errors=problems), product
    target = staged["stagedTargets"][0]
    try:
        admin.upload(target, data, name, content_type)
    except ShopifyUnavailableError:
        raise
    except ShopifyRefusedError as refused:  # this file's upload (e.g. an expired target): the others may go on
        return _result(item, product["handle"], ShopifyMediaStatus.REJECTED, errors=[str(refused)]), product
    alt = alt_text(product["title"], item.job_kind, profile.ai_disclosure, profile.ai_disclosure_text)[:_MAX_ALT]
    before = {m["id"] for m in product["media"]["nodes"]}
    updated = admin.execute(
        ATTACH_MEDIA,
        {
            "product": {"id": product["id"]},
            "media": [{"originalSource": target["resourceUrl"], "alt": alt, "mediaContentType": "IMAGE"}],
        },
    )["productUpdate"]
    if updated["product"] is None:  # deleted since we looked it up
        raise _ProductGoneError(_messages(updated["userErrors"]))
    if updated["userErrors"]:
        return _result(
            item, product["handle"], ShopifyMediaStatus.REJECTED, errors=_messages(updated["userErrors"])
        ), updated["product"]
    new = [m["id"] for m in updated["product"]["media"]["nodes"] if m["id"] not in before]
    return _result(item, product["handle"], ShopifyMediaStatus.ATTACHED, new[0] if new else None), updated["product"]


def _publish_product(
    admin: AdminGraphQL,
    folder: str,
    pairs: Sequence[tuple[ReviewItem, ReviewDecision]],
    read_bytes: ReadBytes,
    profile: PublishingProfile,
    c2pa_signing: C2paSigning | None,
    results: list[ShopifyMediaResult],
) -> list[str]:
    """Appends one result per image to `results` as it goes (so a failure half-way keeps what was done)."""
    # 1. the product, now
    product = find_product(admin, folder)
    if product is None:
        reason = f"no product {folder!r} in the store (deleted since the webhook?)"
        results += [_result(item, folder, ShopifyMediaStatus.PRODUCT_NOT_FOUND, errors=[reason]) for item, _ in pairs]
        return []
    # 2. our media already there, by content hash: the metafield's record (media still there), then file names
    ours = _recorded(product)
    for media in product["media"]["nodes"]:
        if found := _ours(media):
            ours[found[1]] = (media["id"], found[0])
    recorded = dict(ours)
    first = len(results)
    kinds: dict[str, str] = {media_id: kind for media_id, kind in ours.values()}
    # 3. each new image, uploaded and attached
    for index, (item, decision) in enumerate(pairs):
        original = read_bytes(item.generated)
        token = content_token(original)
        if token in ours:
            results.append(_result(item, product["handle"], ShopifyMediaStatus.ALREADY_ATTACHED, ours[token][0]))
            continue
        try:
            result, product = _attach(admin, product, item, decision, original, profile, c2pa_signing)
        except _ProductGoneError as gone:
            reason = f"product {folder!r} was deleted during the publish"
            results += [
                _result(later, folder, ShopifyMediaStatus.PRODUCT_NOT_FOUND, errors=[reason, *gone.args[0]])
                for later, _ in pairs[index:]
            ]
            return []
        results.append(result)
        if result.media_id:
            ours[token] = (result.media_id, item.job_kind)
            kinds[result.media_id] = item.job_kind
    # 4. the record, for a retry that comes while Shopify still processes the new images
    if ours != recorded:
        value = json.dumps({token: {"id": media_id, "kind": kind} for token, (media_id, kind) in sorted(ours.items())})
        field = {"ownerId": product["id"], "namespace": METAFIELD_NAMESPACE, "key": METAFIELD_KEY, "type": "json"}
        answer = admin.execute(RECORD_MEDIA, {"metafields": [{**field, "value": value}]})["metafieldsSet"]
        if answer["userErrors"]:  # the file names still recognise the images once Shopify has processed them
            problems = _messages(answer["userErrors"])
            results[first:] = [r.model_copy(update={"errors": (*r.errors, *problems)}) for r in results[first:]]
    # 5. the order
    media = product["media"]["nodes"]
    moves = _order_moves(media, kinds, profile)
    if moves:
        reordered = admin.execute(REORDER_MEDIA, {"id": product["id"], "moves": moves})["productReorderMedia"]
        if reordered["mediaUserErrors"]:
            problems = _messages(reordered["mediaUserErrors"])
            results[first:] = [r.model_copy(update={"errors": (*r.errors, *problems)}) for r in results[first:]]
    # 6. replacement, only when the brand asks and all of ours are there
    detached: list[str] = []
    succeeded = (ShopifyMediaStatus.ATTACHED, ShopifyMediaStatus.ALREADY_ATTACHED)
    complete = all(r.status in succeeded for r in results[first:])
    if profile.replace_merchant_media and complete:
        merchant = [m["id"] for m in media if m["id"] not in kinds]
        if merchant:
            files = [{"id": media_id, "referencesToRemove": [product["id"]]} for media_id in merchant]
            answer = admin.execute(DETACH_FILES, {"files": files})["fileUpdate"]
            if answer["userErrors"]:
                problems = _messages(answer["userErrors"])
                results[first:] = [r.model_copy(update={"errors": (*r.errors, *problems)}) for r in results[first:]]
            else:
                detached = merchant
    return detached


def publish_to_shopify(
    items: Sequence[ReviewItem],
    decisions: Iterable[ReviewDecision],
    *,
    read_bytes: ReadBytes,
    admin: AdminGraphQL,
    profile: PublishingProfile | None = None,
    c2pa_signing: C2paSigning | None = None,
) -> ShopifyPublishResult:
    """Every approved image onto its product (grouped by SKU folder), each with its own terminal status."""
    profile = profile or PublishingProfile()
    by_product: dict[str, list[tuple[ReviewItem, ReviewDecision]]] = {}
    for item, decision in _decided(items, decisions):
        if decision.verdict is Verdict.APPROVED:
            by_product.setdefault(item.sku, []).append((item, decision))
    results: list[ShopifyMediaResult] = []
    detached: list[str] = []
    unavailable: str | None = None
    for folder, pairs in by_product.items():
        if unavailable is None:
            try:
                detached += _publish_product(admin, folder, pairs, read_bytes, profile, c2pa_signing, results)
                continue
            except ShopifyUnavailableError as error:
                unavailable = f"Shopify was unavailable: {error}"
            except ShopifyRefusedError as error:  # the token or the request itself: every later call would fail too
                unavailable = f"Shopify refused the request: {error}"
        done = {r.item_id for r in results}
        results += [
            _result(item, folder, ShopifyMediaStatus.SHOPIFY_UNAVAILABLE, errors=[unavailable])
            for item, _ in pairs
            if item.item_id not in done
        ]
    return ShopifyPublishResult(
        shop=admin.base_url, api_version=admin.api_version, media=tuple(results), detached=tuple(detached)
    )
