"""What the stack promises, read from the synthesized template; cdk-nag and cfn-lint on the same synth."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk.assertions import Match, Template

from .asl import definition_from_template, walk_states


@pytest.fixture(scope="module")
def template(synthesized) -> Template:
    return Template.from_json(synthesized.template)


def test_no_unacknowledged_nag_findings_and_every_acknowledgement_has_a_reason(synthesized):
    # Given the app synthesized with AwsSolutionsChecks as a validation plugin
    # Then nothing failed validation
    assert synthesized.nag_error is None, synthesized.nag_error
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cdk"))
    from catalog_infra.nag import acknowledgements

    for path, findings in acknowledgements(synthesized.stack).items():
        for finding, reason in findings.items():
            assert finding.startswith("AwsSolutions-") and len(reason) > 40, (path, finding)


def test_cfn_lint_is_clean(synthesized):
    cfn_lint = shutil.which("cfn-lint") or str(Path(sys.executable).with_name("cfn-lint"))
    template_file = synthesized.outdir / "CatalogImageProcessor.template.json"
    # W3005 only: CDK adds a DependsOn on each function's role that a GetAtt already implies (harmless).
    result = subprocess.run(
        [cfn_lint, "--ignore-checks", "W3005", "--", str(template_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buckets_are_versioned_encrypted_private_and_tls_only(synthesized, template):
    buckets = synthesized.resources("AWS::S3::Bucket")
    assert len(buckets) == 5  # intake, work, output, brands, access logs
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert all(props["PublicAccessBlockConfiguration"].values())
    policies = json.dumps(synthesized.resources("AWS::S3::BucketPolicy"))
    assert policies.count('"aws:SecureTransport": "false"') == 5


def test_originals_are_write_once(synthesized):
    statements = [
        s
        for p in synthesized.resources("AWS::S3::BucketPolicy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    write_once = next(s for s in statements if s.get("Sid") == "OriginalsAreWriteOnce")
    assert write_once["Effect"] == "Deny" and write_once["Action"] == "s3:PutObject"
    assert write_once["Condition"] == {"Null": {"s3:if-none-match": "true"}}
    assert "/incoming/*" in json.dumps(write_once["Resource"])


def test_intermediates_expire(template):
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": Match.array_with([Match.object_like({"Id": "IntermediatesExpire", "ExpirationInDays": 30})])
            }
        },
    )


def test_only_the_incoming_prefix_notifies_intake(synthesized):
    (_, notifications) = synthesized.one("Custom::S3BucketNotifications")
    queues = notifications["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert len(queues) == 1
    assert queues[0]["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "incoming/"}]


def test_queue_has_a_dlq_and_a_long_enough_visibility(synthesized):
    queues = synthesized.resources("AWS::SQS::Queue")
    main = next(q["Properties"] for n, q in queues.items() if n.startswith("IntakeEvents"))
    assert main["RedrivePolicy"]["maxReceiveCount"] >= 5
    ingest = next(
        f["Properties"]
        for n, f in synthesized.resources("AWS::Lambda::Function").items()
        if n.startswith("IntakeIngest")
    )
    assert main["VisibilityTimeout"] >= 6 * ingest["Timeout"]
    (_, mapping) = synthesized.one_named("AWS::Lambda::EventSourceMapping", "IntakeIngest")
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_ledger_and_token_tables(synthesized):
    tables = {name: t["Properties"] for name, t in synthesized.resources("AWS::DynamoDB::Table").items()}
    ledger = next(t for n, t in tables.items() if n.startswith("IntakeLedger"))
    assert ledger["KeySchema"] == [{"AttributeName": "object_version", "KeyType": "HASH"}]
    for prefix in ("GpuJobs", "ReviewReviews"):  # both hold task tokens
        table = next(t for n, t in tables.items() if n.startswith(prefix))
        assert table["SSESpecification"]["SSEType"] == "KMS" and "KMSMasterKeyId" in table["SSESpecification"]


def test_state_machine_is_standard_jsonpath_with_timeouts_retries_and_catches(synthesized):
    (_, machine) = synthesized.one_named("AWS::StepFunctions::StateMachine", "WorkflowPerImage")
    assert machine["Properties"]["StateMachineType"] == "STANDARD"
    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"
    definition = definition_from_template(synthesized.template)
    assert definition.get("QueryLanguage", "JSONPath") == "JSONPath"
    states = walk_states(definition)
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}
    assert set(tasks) == {"PrepareImage", "RunGpuJob", "AutomaticChecks", "HumanReview", "PublishDecisions"}
    for name, task in tasks.items():
        assert task.get("TimeoutSeconds", 0) > 0, name
        transient = next(r for r in task["Retry"] if "Lambda.TooManyRequestsException" in r["ErrorEquals"])
        assert transient["JitterStrategy"] == "FULL", name
    for name in ("RunGpuJob", "HumanReview"):
        assert tasks[name]["Resource"].endswith("lambda:invoke.waitForTaskToken")
        assert tasks[name]["Parameters"]["Payload"]["task_token.$"] == "$$.Task.Token"
    assert states["GpuJobs"]["Type"] == "Map" and states["GpuJobs"]["MaxConcurrency"] >= 1
    for name in ("PrepareImage", "GpuJobs", "AutomaticChecks", "HumanReview", "PublishDecisions"):
        assert any("States.ALL" in c["ErrorEquals"] for c in states[name]["Catch"]), name
    # The submit task outlives the reconciler's deadline (RequestTTL + invocation timeout + grace).
    function = next(f for n, f in synthesized.resources("AWS::Lambda::Function").items() if n.startswith("GpuSubmit"))
    env = function["Properties"]["Environment"]["Variables"]
    deadline = sum(
        int(env[k]) for k in ("REQUEST_TTL_SECONDS", "INVOCATION_TIMEOUT_SECONDS", "RECONCILE_GRACE_SECONDS")
    )
    assert tasks["RunGpuJob"]["TimeoutSeconds"] > deadline


def test_async_endpoint_config(synthesized):
    (_, config) = synthesized.one("AWS::SageMaker::EndpointConfig")
    props = config["Properties"]
    async_config = props["AsyncInferenceConfig"]
    assert async_config["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 1}
    output = async_config["OutputConfig"]
    assert "gpu/results" in json.dumps(output["S3OutputPath"]) and "gpu/failures" in json.dumps(output["S3FailurePath"])
    assert set(output["NotificationConfig"]) == {"SuccessTopic", "ErrorTopic"}
    assert props["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"
    (_, model) = synthesized.one("AWS::SageMaker::Model")
    assert "Image" in model["Properties"]["PrimaryContainer"]
    # The container may touch only the work bucket and the brand store (gpu_jobs.storage refuses anything else)
    buckets = json.dumps(model["Properties"]["PrimaryContainer"]["Environment"]["GPU_JOBS_BUCKETS"])
    work, _ = synthesized.one_named("AWS::S3::Bucket", "Work")
    brands, _ = synthesized.one_named("AWS::S3::Bucket", "Brands")
    assert work in buckets and brands in buckets


def test_endpoint_scales_from_zero_on_backlog(synthesized):
    (_, target) = synthesized.one("AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["Properties"]["MinCapacity"] == 0 and target["Properties"]["MaxCapacity"] >= 1
    policies = [p["Properties"] for p in synthesized.resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()]
    tracking = next(p for p in policies if p["PolicyType"] == "TargetTrackingScaling")
    metric = tracking["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    assert metric["MetricName"] == "ApproximateBacklogSizePerInstance"
    assert any(p["PolicyType"] == "StepScaling" for p in policies)
    alarms = [a["Properties"] for a in synthesized.resources("AWS::CloudWatch::Alarm").values()]
    wake = next(a for a in alarms if a.get("MetricName") == "HasBacklogWithoutCapacity" and a.get("AlarmActions"))
    assert "StepScaling" in json.dumps(synthesized.template["Resources"]) and wake["Threshold"] >= 0


def test_outcome_handler_listens_to_both_topics(synthesized):
    subscriptions = synthesized.resources("AWS::SNS::Subscription")
    endpoints = {
        json.dumps(s["Properties"]["Endpoint"])
        for s in subscriptions.values()
        if s["Properties"]["Protocol"] == "lambda"
    }
    assert len([e for e in endpoints if "GpuOutcome" in e]) == 1
    assert len([s for s in subscriptions.values() if "GpuOutcome" in json.dumps(s["Properties"]["Endpoint"])]) == 2


def test_every_function_has_its_own_role_and_tracing(synthesized):
    functions = {
        n: f["Properties"]
        for n, f in synthesized.resources("AWS::Lambda::Function").items()
        if not n.startswith("BucketNotificationsHandler")
    }
    roles = [json.dumps(f["Role"]) for f in functions.values()]
    assert len(set(roles)) == len(roles) == 13
    for name, function in functions.items():
        assert function["TracingConfig"] == {"Mode": "Active"}, name
        assert function["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == "CatalogImages"
        assert function["PackageType"] == "Image"


def test_review_pieces(synthesized):
    synthesized.one("AWS::SES::EmailIdentity")
    synthesized.one_named("AWS::SecretsManager::Secret", "Review")
    synthesized.one_named("AWS::ApiGateway::RestApi", "Review")
    rules = [r["Properties"] for r in synthesized.resources("AWS::Events::Rule").values()]
    assert len(rules) == 2  # the review digest + sweep, and the GPU job reconciler
    assert "rate(5 minutes)" in {rule["ScheduleExpression"] for rule in rules}  # review emails wait <= 5 minutes


def test_only_the_digest_sends_review_email(synthesized):
    # Given each review function's role policies
    functions = synthesized.resources("AWS::Lambda::Function")
    policies = synthesized.resources("AWS::IAM::Policy").values()

    def actions_of(description_start: str) -> set[str]:
        role = next(
            f["Properties"]["Role"]["Fn::GetAtt"][0]
            for f in functions.values()
            if f["Properties"].get("Description", "").startswith(description_start)
        )
        return {
            action
            for p in policies
            if {"Ref": role} in p["Properties"]["Roles"]
            for statement in p["Properties"]["PolicyDocument"]["Statement"]
            for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
        }

    # Then the notify task (one call per image) cannot email or read images; the scheduled digest can send mail
    notify, digest = actions_of("Review .waitForTaskToken"), actions_of("Emails one digest")
    assert not {a for a in notify if a.startswith(("ses:", "s3:"))}
    assert "ses:SendRawEmail" in digest and "dynamodb:Query" in digest
    # And nothing scans a whole table: the digest and sweep read the sparse index page by page
    assert "dynamodb:Scan" not in digest


def test_dashboard_and_alarms(synthesized):
    synthesized.one("AWS::CloudWatch::Dashboard")
    alarms = [a["Properties"] for a in synthesized.resources("AWS::CloudWatch::Alarm").values()]
    names = {a.get("MetricName") for a in alarms}
    assert {
        "ApproximateNumberOfMessagesVisible",
        "ExecutionsFailed",
        "InvocationFailures",
        "ApproximateAgeOfOldestRequest",
    } <= names
    # And both dead-letter queues wake someone: intake's and the Shopify product events'
    dead_letter_alarms = [a for a in alarms if a.get("MetricName") == "ApproximateNumberOfMessagesVisible"]
    queues = {json.dumps(a["Dimensions"]) for a in dead_letter_alarms if a.get("AlarmActions")}
    assert len(queues) == 2 and any("ShopifyDeadLetters" in queue for queue in queues)


def _statements_of_role(synthesized, role_logical_id: str) -> list[dict]:
    return [
        statement
        for policy in synthesized.resources("AWS::IAM::Policy").values()
        if {"Ref": role_logical_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _grants_on(statements: list[dict], bucket_logical_id: str) -> list[dict]:
    return [s for s in statements if bucket_logical_id in json.dumps(s["Resource"])]


def test_the_brand_store_is_kept_and_read_only_to_prepare_and_the_gpu_model(synthesized):
    # Given the brands bucket
    (brands_id,) = [n for n in synthesized.resources("AWS::S3::Bucket") if n.startswith("StorageBrands")]
    brands = synthesized.template["Resources"][brands_id]["Properties"]

    # Then nothing in it expires (the ML owner curates it) and its access logs go to the log bucket under brands/
    rules = brands["LifecycleConfiguration"]["Rules"]
    assert not [r for r in rules if "ExpirationInDays" in r or "NoncurrentVersionExpiration" in r], rules
    assert brands["LoggingConfiguration"]["LogFilePrefix"] == "brands/"

    # And prepare is told where the brand store is
    functions = synthesized.resources("AWS::Lambda::Function")
    prepare = next(f["Properties"] for n, f in functions.items() if n.startswith("WorkflowPrepare"))
    uri = prepare["Environment"]["Variables"]["BRANDS_URI"]
    assert uri == {"Fn::Join": ["", ["s3://", {"Ref": brands_id}, "/brands/"]]}
    assert synthesized.template["Outputs"]["BrandsUri"]["Value"] == uri
    assert "<brand>/profile.json" in synthesized.template["Outputs"]["BrandsUri"]["Description"]

    # And only prepare and the GPU model may touch it, read-only and only under brands/ (listing too, so that a
    # missing profile or adapter is a 404)
    roles = set(synthesized.resources("AWS::IAM::Role"))
    readers = {role for role in roles if _grants_on(_statements_of_role(synthesized, role), brands_id)}
    # (the training jobs' role also writes under brands/*/training/: asserted in tests/infra/test_training_stack.py)
    readers = {role for role in readers if not role.startswith("TrainingRole")}
    # (and Shopify intake, for <brand>/shopify.json; publish, for <brand>/publishing.json alone)
    expected = {"WorkflowPrepareRole", "GpuModelRole", "ShopifyIngestRole", "WorkflowPublishRole"}
    assert {role[:-8] for role in readers} == expected, readers
    for role in readers:
        under = "brands/*/publishing.json" if role.startswith("WorkflowPublishRole") else "brands/*"
        for statement in _grants_on(_statements_of_role(synthesized, role), brands_id):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            ours = [r for r in resources if brands_id in json.dumps(r)]
            if actions == ["s3:ListBucket"]:
                assert ours == [{"Fn::GetAtt": [brands_id, "Arn"]}], (role, statement)
                assert statement["Condition"] == {"StringLike": {"s3:prefix": [under]}}, (role, statement)
            else:
                assert actions == ["s3:GetObject"], (role, actions)
                assert ours == [{"Fn::Join": ["", [{"Fn::GetAtt": [brands_id, "Arn"]}, f"/{under}"]]}], (role, ours)


def test_prepare_gets_the_packshot_settings_from_context(synthesized):
    # Given the default context (cdk.json)
    functions = synthesized.resources("AWS::Lambda::Function")
    prepare = next(f["Properties"] for n, f in functions.items() if n.startswith("WorkflowPrepare"))

    # Then the packshot preset and size are set explicitly, so the deployed values show in the template
    variables = prepare["Environment"]["Variables"]
    assert (variables["PACKSHOT_PRESET"], variables["PACKSHOT_SIZE"]) == ("white-square", "2000")


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ({"packshotPreset": "black-square"}, "packshotPreset"),
        ({"packshotSize": 63}, "packshotSize"),
        ({"packshotSize": 10001}, "packshotSize"),
    ],
)
def test_bad_packshot_context_is_refused_before_anything_is_built(synthesized, context, problem):
    # (`synthesized` puts cdk/ on the path)
    # Given cdk.json's context with one bad packshot value
    import aws_cdk as cdk
    from catalog_infra.app import default_context
    from catalog_infra.config import DeployConfig

    app = cdk.App(context={**default_context(), **context})

    # When the deployment config is read, Then it names the bad value
    with pytest.raises(ValueError, match=problem):
        DeployConfig.from_context(app.node)


def test_intake_via_eventbridge_routes_object_created_under_incoming_to_the_same_queue(synthesized, tmp_path):
    # (`synthesized` puts cdk/ on the path)
    # Given the app synthesized with intakeViaEventBridge=true
    from catalog_infra.app import STACK_NAME, build_app, default_context

    app = build_app({**default_context(), "intakeViaEventBridge": True}, outdir=str(tmp_path))
    app.synth()  # cdk-nag findings would fail here
    template = json.loads((tmp_path / f"{STACK_NAME}.template.json").read_text())
    resources = template["Resources"]

    # Then the intake bucket sends its events to EventBridge and no longer notifies the queue directly
    (notifications,) = [r for r in resources.values() if r["Type"] == "Custom::S3BucketNotifications"]
    configuration = notifications["Properties"]["NotificationConfiguration"]
    assert configuration.get("EventBridgeConfiguration") == {}
    assert "QueueConfigurations" not in configuration

    # And one rule sends only "Object Created" under incoming/ of the intake bucket to the intake queue
    rules = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Events::Rule" and "EventPattern" in r["Properties"]
    ]
    (rule,) = rules
    (intake_id,) = [n for n, r in resources.items() if r["Type"] == "AWS::S3::Bucket" and n.startswith("StorageIntake")]
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [{"Ref": intake_id}]}, "object": {"key": [{"prefix": "incoming/"}]}},
    }
    (queue_id,) = [
        n
        for n, r in resources.items()
        if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in r["Properties"] and n.startswith("IntakeEvents")
    ]
    assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": [queue_id, "Arn"]}]

    # And the queue lets EventBridge send from that rule only
    policies = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::SQS::QueuePolicy"]
    sends = [
        s
        for p in policies
        for s in p["PolicyDocument"]["Statement"]
        if s.get("Principal") == {"Service": "events.amazonaws.com"} and "sqs:SendMessage" in json.dumps(s["Action"])
    ]
    assert len(sends) == 1 and "aws:SourceArn" in json.dumps(sends[0]["Condition"])
