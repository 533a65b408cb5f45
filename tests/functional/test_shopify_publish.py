"""Publishing approved images to a Shopify product, against the loopback fake Admin API (tests/fakes/shopify_admin.py).

Each test runs the real httpx client against a store that validates every GraphQL operation against Shopify's
documented types, throttles by query cost and can answer 429/5xx.
"""

import datetime
import io
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from functions.adapters.shopify.admin import ShopifyAdminClient, ShopifyRefusedError, admin_base_url
from functions.stages.provenance import ALGORITHMICALLY_ENHANCED, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
from functions.stages.shopify_publish import publish_to_shopify
from schemas import RejectionReason, ReviewDecision, ReviewItem, Verdict
from schemas.publishing import PublishingProfile, ShopifyMediaStatus
from tests.fakes.shopify_admin import FakeShopifyStore

KINDS = ("try_on", "lifestyle", "packshot", "ghost_mannequin")  # not in publishing order, on purpose
IPTC_SOURCE_TYPE = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType"


def image(colour: tuple[int, int, int], size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class Run:
    """One review's approved items for one SKU folder, and their bytes."""

    def __init__(self, sku: str, kinds=KINDS, size: int = 64) -> None:
        self.files: dict[str, bytes] = {}
        self.items: list[ReviewItem] = []
        for index, kind in enumerate(kinds):
            uri = f"mem://{sku}/{kind}.jpg"
            self.files[uri] = image((30 * index, 120, 200 - 30 * index), size)
            self.items.append(ReviewItem(item_id=f"{sku}-{kind}", sku=sku, original="x", generated=uri, job_kind=kind))
        self.decisions = [self.decide(item) for item in self.items]

    @staticmethod
    def decide(item: ReviewItem, verdict: Verdict = Verdict.APPROVED) -> ReviewDecision:
        reason = RejectionReason.ARTEFACTS if verdict is Verdict.REJECTED else None
        when = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC)
        return ReviewDecision(item_id=item.item_id, verdict=verdict, reason=reason, reviewer="r@x.com", decided_at=when)

    def publish(self, admin, **options):
        return publish_to_shopify(self.items, self.decisions, read_bytes=self.files.__getitem__, admin=admin, **options)


@pytest.fixture
def store():
    with FakeShopifyStore() as fake:
        yield fake


def client(store, **options) -> ShopifyAdminClient:
    options.setdefault("backoff_seconds", 0.01)
    return ShopifyAdminClient(store.url, store.token, **options)


def ours(store, product) -> list[dict]:
    return [m for m in product.media if "-cip" in m["image"]["url"]]


def test_a_retried_publish_adds_nothing_and_the_order_and_alt_text_follow_the_rules(store):
    # Given a product with two photos of the merchant's, and four approved images of ours
    product = store.add_product("linen-shirt", "Linen shirt", merchant_images=2)
    merchant = [m["id"] for m in product.media]
    run = Run("linen-shirt")

    # When the publish runs, and then runs again (a retried task)
    first = run.publish(client(store), profile=PublishingProfile(ai_disclosure=True))
    again = run.publish(client(store), profile=PublishingProfile(ai_disclosure=True))

    # Then each image is on the product exactly once
    assert first.count(ShopifyMediaStatus.ATTACHED) == 4
    assert again.count(ShopifyMediaStatus.ALREADY_ATTACHED) == 4 and again.count(ShopifyMediaStatus.ATTACHED) == 0
    assert len(product.media) == 6 and len({m["id"] for m in product.media}) == 6
    # And the merchant's photos stay first, in their order; ours follow packshot, ghost, lifestyle, try-on
    assert [m["id"] for m in product.media[:2]] == merchant
    assert [m["image"]["url"].split("-cip")[0].rsplit("-", 1)[1] for m in ours(store, product)] == [
        "packshot",
        "ghost_mannequin",
        "lifestyle",
        "try_on",
    ]
    # And the alt text is the product's title; generated images say so, as the brand configured
    assert [m["alt"] for m in ours(store, product)] == [
        "Linen shirt",
        "Linen shirt (AI-generated image)",
        "Linen shirt (AI-generated image)",
        "Linen shirt (AI-generated image)",
    ]
    # And the second run only looked (no upload, no attach, no reorder)
    assert store.requests.count("productUpdate") == 4 and store.requests.count("productReorderMedia") == 1


def test_a_retry_while_shopify_still_processes_the_images_adds_nothing(store):
    # Given a store that takes its time to process new images (no URL, hence no file name, for a while)
    product = store.add_product("tee", "Tee", merchant_images=1)
    store.processing = True
    run = Run("tee", kinds=("packshot", "lifestyle"))

    # When the publish runs, and is retried before Shopify has finished
    first = run.publish(client(store))
    again = run.publish(client(store))
    store.finish_processing()
    later = run.publish(client(store))

    # Then the record in the product's metafield recognised them: each image is there once, in order
    assert first.count(ShopifyMediaStatus.ATTACHED) == 2
    assert (
        again.count(ShopifyMediaStatus.ALREADY_ATTACHED) == 2 and later.count(ShopifyMediaStatus.ALREADY_ATTACHED) == 2
    )
    assert len(product.media) == 3
    assert [m["image"]["url"].split("-cip")[0].rsplit("-", 1)[1] for m in product.media[1:]] == [
        "packshot",
        "lifestyle",
    ]


def test_the_file_in_the_store_carries_its_iptc_source_type(store):
    # Given a product and an approved packshot and lifestyle image
    product = store.add_product("dress", "Sage dress", merchant_images=0)
    Run("dress", kinds=("packshot", "lifestyle")).publish(client(store))

    # When the store's CDN serves them
    found = {}
    for media in product.media:
        with Image.open(io.BytesIO(urllib.request.urlopen(media["image"]["url"], timeout=10).read())) as shown:
            packet = ET.fromstring(shown.info["xmp"])
        found[media["image"]["url"].split("-cip")[0].rsplit("-", 1)[1]] = next(
            e.attrib[IPTC_SOURCE_TYPE] for e in packet.iter() if IPTC_SOURCE_TYPE in e.attrib
        )

    # Then each says how it was made
    assert found == {"packshot": ALGORITHMICALLY_ENHANCED, "lifestyle": COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA}


def test_ours_first_and_replacement_when_the_brand_configures_them(store):
    # Given a brand that wants its images first, replacing the merchant's
    product = store.add_product("tee", "Tee", merchant_images=2)
    merchant = [m["id"] for m in product.media]

    # When its images are published
    result = Run("tee", kinds=("lifestyle", "packshot")).publish(
        client(store), profile=PublishingProfile(ours_first=True, replace_merchant_media=True)
    )

    # Then only ours remain on the product, packshot first, and the merchant's files were detached, not deleted
    assert [m["image"]["url"].split("-cip")[0].rsplit("-", 1)[1] for m in product.media] == ["packshot", "lifestyle"]
    assert result.detached == tuple(merchant) and store.detached == merchant
    assert all(f"tee-merchant-{n}.jpg" in store.files for n in (1, 2))


def test_a_429_is_waited_out_and_the_publish_succeeds(store):
    # Given a store that answers the first two requests with 429 Too Many Requests
    product = store.add_product("tee", "Tee", merchant_images=1)
    store.fail_next(429, 429)
    waits: list[float] = []

    # When the images are published
    result = Run("tee", kinds=("packshot",)).publish(client(store, sleep=waits.append))

    # Then the client backed off twice and the image is on the product once
    assert len(waits) == 2 and result.count(ShopifyMediaStatus.ATTACHED) == 1 and len(product.media) == 2


def test_a_throttled_bucket_is_waited_for_from_the_reported_cost(store):
    # Given a store whose query-cost bucket other apps have just emptied
    product = store.add_product("tee", "Tee", merchant_images=0)
    store.drain()
    admin = client(store)

    # When an image is published
    result = Run("tee", kinds=("packshot",)).publish(admin)

    # Then the THROTTLED answer was waited out from extensions.cost, and the image is attached
    assert result.count(ShopifyMediaStatus.ATTACHED) == 1 and len(product.media) == 1
    assert admin.available is not None and admin.restore_rate == store.restore_rate


def test_5xx_past_every_retry_ends_terminal_and_a_later_publish_adds_everything_once(store):
    # Given a store that is down for longer than the client retries
    product = store.add_product("tee", "Tee", merchant_images=1)
    other = store.add_product("dress", "Dress", merchant_images=0)
    run = Run("tee", kinds=("packshot", "lifestyle"))
    store.fail_next(*[503] * 3)

    # When the publish runs
    failed = run.publish(client(store, max_attempts=3))

    # Then every image is `shopify_unavailable` with the reason, and nothing was attached
    assert {m.status for m in failed.media} == {ShopifyMediaStatus.SHOPIFY_UNAVAILABLE}
    assert "HTTP 503, 3 attempts" in failed.media[0].errors[0]
    assert len(product.media) == 1 and not other.media
    # And once the store is back, the publish attaches each image once
    later = run.publish(client(store))
    assert later.count(ShopifyMediaStatus.ATTACHED) == 2 and len(product.media) == 3


def test_user_errors_are_reported_for_the_image_they_concern(store):
    # Given a store that refuses images over 5,000 pixels, a small approved packshot and a large lifestyle image
    with FakeShopifyStore(max_megapixels=0.005) as strict:
        product = strict.add_product("tee", "Tee", merchant_images=0)
        run = Run("tee", kinds=("packshot",))
        large = Run("tee", kinds=("lifestyle",), size=96)
        run.items += large.items
        run.decisions += large.decisions
        run.files.update(large.files)

        # When they are published
        result = run.publish(client(strict))

    # Then the small one is attached and the large one carries Shopify's userError, naming the field
    by_item = {m.item_id: m for m in result.media}
    assert by_item["tee-packshot"].status is ShopifyMediaStatus.ATTACHED
    refused = by_item["tee-lifestyle"]
    assert refused.status is ShopifyMediaStatus.REJECTED
    assert refused.errors == ("media.0.originalSource: Image 96x96 exceeds the maximum of 5000 pixels",)
    assert len(product.media) == 1


def test_a_refused_upload_rejects_that_image_and_the_next_one_goes_on(store):
    # Given a store whose first staged upload is refused (an expired upload policy)
    product = store.add_product("tee", "Tee", merchant_images=0)
    store.refuse_uploads = 1

    # When two images are published
    result = Run("tee", kinds=("packshot", "lifestyle")).publish(client(store))

    # Then the first is rejected with the reason, naming its file, and the second is attached
    assert [m.status for m in result.media] == [ShopifyMediaStatus.REJECTED, ShopifyMediaStatus.ATTACHED]
    (reason,) = result.media[0].errors
    assert reason.startswith("the staged upload of tee-packshot-cip") and reason.endswith("refused (HTTP 403)")
    assert len(product.media) == 1


def test_a_product_deleted_since_the_webhook_is_a_terminal_state_and_the_rest_goes_on(store):
    # Given two products, one of which the merchant deleted after its webhook
    gone = store.add_product("old-tee", "Old tee", merchant_images=1)
    kept = store.add_product("new-tee", "New tee", merchant_images=0)
    store.delete_product(gone)
    run = Run("old-tee", kinds=("packshot",))
    other = Run("new-tee", kinds=("packshot",))

    # When both are published in one batch
    result = publish_to_shopify(
        run.items + other.items,
        run.decisions + other.decisions,
        read_bytes={**run.files, **other.files}.__getitem__,
        admin=client(store),
    )

    # Then the deleted one is `product_not_found` with the reason, and the other product got its image
    statuses = {m.item_id: (m.status, m.errors) for m in result.media}
    assert statuses["old-tee-packshot"][0] is ShopifyMediaStatus.PRODUCT_NOT_FOUND
    assert "no product 'old-tee' in the store" in statuses["old-tee-packshot"][1][0]
    assert statuses["new-tee-packshot"][0] is ShopifyMediaStatus.ATTACHED and len(kept.media) == 1


def test_rejected_images_are_never_published(store):
    product = store.add_product("tee", "Tee", merchant_images=0)
    run = Run("tee", kinds=("packshot", "lifestyle"))
    run.decisions[1] = Run.decide(run.items[1], Verdict.REJECTED)
    result = run.publish(client(store))
    assert [m.item_id for m in result.media] == ["tee-packshot"] and len(product.media) == 1


def test_a_wrong_token_is_refused_without_the_token_in_the_error(store):
    # Given a token the store does not know
    admin = ShopifyAdminClient(store.url, "shpat_wrong_secret")
    with pytest.raises(ShopifyRefusedError, match="HTTP 401") as refused:
        admin.execute("query { products(first: 1) { nodes { id } } }")
    # When a publish uses it
    result = Run("tee", kinds=("packshot",)).publish(admin)
    # Then each image ends `shopify_unavailable`, saying why, and the token appears nowhere
    assert [m.status for m in result.media] == [ShopifyMediaStatus.SHOPIFY_UNAVAILABLE]
    assert "refused the Admin access token (HTTP 401)" in result.media[0].errors[0]
    assert "shpat_wrong_secret" not in str(refused.value) + result.model_dump_json()


@pytest.mark.parametrize("store_name", ["acme", "http://evil.example.com", "acme.myshopify.com/../x"])
def test_only_myshopify_domains_or_loopback_are_stores(store_name):
    with pytest.raises(ValueError, match=r"myshopify\.com"):
        admin_base_url(store_name)
    assert admin_base_url("acme.myshopify.com") == "https://acme.myshopify.com"


# -- the publish Lambda: the output bucket first, then the store named by the Admin token secret -------------------


@pytest.fixture
def publish_lambda(monkeypatch, store):
    """The publish handler under moto, with the Admin token secret naming the fake store and a brand store."""
    import json

    import boto3

    from functions.adapters.aws import settings, shopify_admin
    from functions.handlers import publish
    from tests.functional import test_publish_handler as handler_tests

    shopify_admin._cache.clear()
    fixture = handler_tests.s3.__wrapped__(monkeypatch)  # type: ignore[attr-defined]  # the plain generator
    s3 = next(fixture)
    secrets = boto3.client("secretsmanager", region_name=handler_tests.REGION)
    secret = {"shop": store.url, "access_token": store.token}
    arn = secrets.create_secret(Name="shopify-admin", SecretString=json.dumps(secret))["ARN"]
    s3.create_bucket(Bucket="catalog-brands")
    s3.put_object(Bucket="catalog-brands", Key="brands/acme/publishing.json", Body=b'{"ai_disclosure": true}')
    monkeypatch.setenv("SHOPIFY_ADMIN_SECRET_ID", arn)
    monkeypatch.setenv("BRANDS_URI", "s3://catalog-brands/brands/")
    settings.load.cache_clear()
    publish.client.cache_clear()
    yield s3, secrets, arn, handler_tests
    shopify_admin._cache.clear()
    next(fixture, None)


def test_the_publish_lambda_puts_approved_images_on_the_product_once(publish_lambda, store):
    from functions.handlers import publish

    s3, _, _, handler_tests = publish_lambda
    # Given an approved packshot and lifestyle image of SKU-1, whose product is in the connected store
    product = store.add_product("SKU-1", "Linen shirt", merchant_images=1)
    packshot = handler_tests.packshot_item(s3, image((200, 30, 30)))
    scene = handler_tests.scene_item(s3, image((30, 200, 30)))
    payload = handler_tests.event([packshot, scene], [handler_tests.approve(packshot), handler_tests.approve(scene)])

    # When the publish task runs, and is retried
    first = publish.lambda_handler(payload, handler_tests.FakeContext())
    again = publish.lambda_handler(payload, handler_tests.FakeContext())

    # Then the bucket has the marked files, and the product shows each image once, with the brand's alt text
    assert b"algorithmicallyEnhanced" in handler_tests.body(s3, "approved/acme/SKU-1/front.packshot.jpg")
    assert [m["status"] for m in first["shopify"]["media"]] == ["attached", "attached"]
    assert [m["status"] for m in again["shopify"]["media"]] == ["already_attached", "already_attached"]
    assert len(product.media) == 3
    assert [m["alt"] for m in product.media[1:]] == ["Linen shirt", "Linen shirt (AI-generated image)"]
    assert first["published_count"] == 2 and len(again["already_published"]) == 2


def test_no_shop_in_the_secret_means_no_store_and_a_deleted_product_is_terminal(publish_lambda, store):
    from functions.adapters.aws import shopify_admin
    from functions.handlers import publish

    s3, secrets, arn, handler_tests = publish_lambda
    packshot = handler_tests.packshot_item(s3, image((200, 30, 30)))
    payload = handler_tests.event([packshot], [handler_tests.approve(packshot)])
    # Given no product SKU-1 in the store (deleted since the webhook)
    # When the task runs, Then the image is in the bucket and `product_not_found` for the store, with the reason
    answer = publish.lambda_handler(payload, handler_tests.FakeContext())
    assert answer["published_count"] == 1
    assert [(m["status"], m["product"]) for m in answer["shopify"]["media"]] == [("product_not_found", "SKU-1")]

    # Given the operator has not named a shop in the secret yet (the deploy's placeholder)
    secrets.put_secret_value(SecretId=arn, SecretString='{"shop": "", "access_token": "placeholder"}')
    shopify_admin._cache.clear()
    # Then publishing stops at the bucket, and the answer has no store part
    assert "shopify" not in publish.lambda_handler(payload, handler_tests.FakeContext())
