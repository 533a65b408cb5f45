"""The Shopify intake as deployed: a throttled webhook API with no auth but the HMAC, its queue and DLQ, the intake
consumer, the event table, the app's secrets, and the optional rule on Shopify's partner event bus."""

import json

import pytest

EVENT_SOURCE = "aws.partner/shopify.com/1234567/catalog-images"


def _props(synthesized, kind: str, part: str) -> dict:
    return synthesized.one_named(kind, part)[1]["Properties"]


def test_the_webhook_api_is_throttled_binary_safe_and_open_only_to_the_hmac_check(synthesized):
    # Given the Shopify API as synthesized
    api_id, api = synthesized.one_named("AWS::ApiGateway::RestApi", "Shopify")
    stage = _props(synthesized, "AWS::ApiGateway::Stage", "Shopify")

    # Then the body reaches the function as the exact bytes Shopify signed (base64 for every content type)
    assert api["Properties"]["BinaryMediaTypes"] == ["*/*"]

    # And the stage throttles every method and logs without the request data (the signature, the product)
    (settings,) = stage["MethodSettings"]
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (50, 100)
    assert settings["DataTraceEnabled"] is False and "AccessLogSetting" in stage

    # And the one method is POST /webhooks/shopify, with no authorizer (Shopify signs, it cannot log in)
    methods = [
        m["Properties"]
        for m in synthesized.resources("AWS::ApiGateway::Method").values()
        if m["Properties"]["RestApiId"] == {"Ref": api_id}
    ]
    assert [(m["HttpMethod"], m["AuthorizationType"]) for m in methods] == [("POST", "NONE")]
    paths = {
        r["Properties"]["PathPart"]
        for r in synthesized.resources("AWS::ApiGateway::Resource").values()
        if r["Properties"]["RestApiId"] == {"Ref": api_id}
    }
    assert paths == {"webhooks", "shopify"}


def test_the_operator_is_told_the_endpoint_and_where_the_secrets_go(synthesized):
    outputs = synthesized.template["Outputs"]
    url = next(o for name, o in outputs.items() if name.startswith("ShopifyWebhookUrl"))
    assert "/webhooks/shopify" in json.dumps(url["Value"])
    secrets = {name for name in synthesized.resources("AWS::SecretsManager::Secret") if name.startswith("Shopify")}
    assert {name[:-8] for name in secrets} == {"ShopifyWebhookSecret", "ShopifyAdminToken"}
    for prefix in ("ShopifyWebhookSecretArn", "ShopifyAdminTokenSecretArn"):
        assert any(name.startswith(prefix) for name in outputs), prefix

    # And the webhook secret starts as a random placeholder in the document the function reads
    generated = _props(synthesized, "AWS::SecretsManager::Secret", "ShopifyWebhookSecret")["GenerateSecretString"]
    assert generated["GenerateStringKey"] == "current"
    assert json.loads(generated["SecretStringTemplate"]) == {"previous": "", "previous_until": ""}


def test_work_goes_through_a_queue_with_a_dlq_to_the_intake_consumer(synthesized):
    queue = _props(synthesized, "AWS::SQS::Queue", "ShopifyWork")
    ingest = _props(synthesized, "AWS::Lambda::Function", "ShopifyIngest")
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    assert queue["VisibilityTimeout"] >= 6 * ingest["Timeout"]
    mapping = _props(synthesized, "AWS::Lambda::EventSourceMapping", "ShopifyIngest")
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

    # And the consumer writes where the normal flow picks up: incoming/ of the intake bucket
    variables = ingest["Environment"]["Variables"]
    assert variables["INTAKE_PREFIX"] == "incoming/" and variables["SHOPIFY_BRAND"] == "demo"

    # And the event table expires old event claims and can be restored
    table = _props(synthesized, "AWS::DynamoDB::Table", "ShopifyEvents")
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_the_table_ttl_is_the_attribute_the_store_writes(synthesized):
    from functions.adapters.aws import shopify_store

    table = _props(synthesized, "AWS::DynamoDB::Table", "ShopifyEvents")
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": shopify_store.TTL_ATTRIBUTE, "Enabled": True}


def test_no_partner_event_bus_without_an_event_source(synthesized):
    assert synthesized.resources("AWS::Events::EventBus") == {}


def test_a_partner_event_source_gets_its_bus_and_a_rule_to_the_same_queue(synthesized):
    # (`synthesized` puts cdk/ on the path.) Given the Shopify construct alone, with a partner event source
    import aws_cdk as cdk
    from aws_cdk.assertions import Match, Template
    from catalog_infra.app import default_context
    from catalog_infra.config import DeployConfig
    from catalog_infra.shopify import Shopify
    from catalog_infra.storage import Storage

    stack = cdk.Stack(cdk.App(context=default_context()), "ShopifyOnly")  # cdk.json's feature flags
    Shopify(stack, "Shopify", storage=Storage(stack, "Storage"), config=DeployConfig(shopify_event_source=EVENT_SOURCE))
    template = Template.from_stack(stack)

    # Then the partner bus is named like the source, and its rule sends Shopify's events to the work queue
    template.has_resource_properties("AWS::Events::EventBus", {"Name": EVENT_SOURCE, "EventSourceName": EVENT_SOURCE})
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventBusName": Match.any_value(),
            "EventPattern": {"source": [{"prefix": "aws.partner/shopify.com"}]},
            "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [Match.string_like_regexp("ShopifyWork"), "Arn"]}})],
        },
    )


def test_a_malformed_event_source_is_refused_before_anything_is_built(synthesized):
    from catalog_infra.config import DeployConfig

    with pytest.raises(ValueError, match="shopifyEventSource"):
        DeployConfig(shopify_event_source="shopify-events")
