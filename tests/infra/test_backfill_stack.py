"""The backfill's state machine as synthesized: a Distributed Map over an S3 listing or an S3 Inventory manifest,
bounded, batched into the batch function, results to S3, with a role that holds exactly what the map does."""

import json
from typing import Any

from .asl import walk_states

BACKFILL_MACHINE = "BackfillObjects"
PER_IMAGE_MACHINE = "WorkflowPerImage"


def _definition(synthesized) -> dict[str, Any]:
    (_, machine) = synthesized.one_named("AWS::StepFunctions::StateMachine", BACKFILL_MACHINE)
    body = machine["Properties"]["DefinitionString"]
    # Intrinsics become their logical ids: enough to read which bucket and function each state names.
    text = "".join(
        part if isinstance(part, str) else (part.get("Ref") or part.get("Fn::GetAtt", ["?"])[0])
        for part in body["Fn::Join"][1]
    )
    definition: dict[str, Any] = json.loads(text)
    return definition


def _policy_statements(synthesized, role_part: str) -> list[dict[str, Any]]:
    role_id, _ = synthesized.one_named("AWS::IAM::Role", role_part)
    return [
        statement
        for policy in synthesized.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"].get("Roles", [])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_backfill_maps_a_listing_or_an_inventory_in_bounded_batches(synthesized):
    # Given the synthesized backfill state machine
    definition = _definition(synthesized)
    states = walk_states(definition)
    intake, _ = synthesized.one_named("AWS::S3::Bucket", "StorageIntake")
    work, _ = synthesized.one_named("AWS::S3::Bucket", "StorageWork")

    # Then the run's max_concurrency, if given, wins over the deployment's (maxInstances: 2 by default)
    assert states["Defaults"]["Result"] == {"max_concurrency": 2}
    assert states["RunSettings"]["Parameters"] == {"run.$": "States.JsonMerge($.defaults, $$.Execution.Input, false)"}
    # And it chooses the inventory manifest when one is given, else the listing of the prefix
    assert states["Source"]["Choices"][0]["Variable"] == "$.manifest_key"
    listing, inventory = states["Listing"], states["Inventory"]
    assert listing["ItemReader"]["Resource"].endswith(":states:::s3:listObjectsV2")
    assert listing["ItemReader"]["Parameters"] == {"Bucket": intake, "Prefix.$": "$.prefix"}
    assert inventory["ItemReader"]["Resource"].endswith(":states:::s3:getObject")
    assert inventory["ItemReader"]["ReaderConfig"]["InputType"] == "MANIFEST"
    for state in (listing, inventory):
        # Distributed, bounded, batched, tolerant of a share of failed batches, results recorded
        assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        assert state["MaxConcurrencyPath"] == "$.max_concurrency"
        assert state["ItemBatcher"]["MaxItemsPerBatch"] == 10
        assert state["ItemBatcher"]["BatchInput"] == {"bucket": intake, "brand.$": "$.brand"}
        assert state["ToleratedFailurePercentage"] == 5
        assert state["ResultWriter"]["Parameters"] == {"Bucket": work, "Prefix": "backfill/results/"}


def test_each_batch_starts_through_the_batch_function_then_waits_its_pace(synthesized):
    states = walk_states(_definition(synthesized))
    batch_function, function = synthesized.one_named("AWS::Lambda::Function", "BackfillBatch")
    for label in ("Listing", "Inventory"):
        start, pace = states[f"StartBatch{label}"], states[f"Pace{label}"]
        assert start["Resource"] == batch_function and start["Next"] == f"Pace{label}"
        assert any("TransientServiceError" in retry["ErrorEquals"] for retry in start["Retry"])
        assert pace == {"Type": "Wait", "SecondsPath": "$.wait_seconds", "End": True}
    # The function starts the per-image workflow, as ingest does, paced per started image
    assert function["Properties"]["ImageConfig"]["Command"] == ["functions.handlers.backfill_batch.lambda_handler"]
    variables = function["Properties"]["Environment"]["Variables"]
    per_image, _ = synthesized.one_named("AWS::StepFunctions::StateMachine", PER_IMAGE_MACHINE)
    assert variables["STATE_MACHINE_ARN"] == {"Ref": per_image}
    assert float(variables["BACKFILL_SECONDS_PER_IMAGE"]) > 0


def test_the_map_reads_only_incoming_and_inventory_and_writes_only_its_results(synthesized):
    # Given the statements of the backfill machine's role
    statements = _policy_statements(synthesized, "BackfillObjectsRole")
    by_action: dict[str, list[dict[str, Any]]] = {}
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            by_action.setdefault(action, []).append(statement)

    # Then listing is limited to incoming/, reads to inventory/ and its results, writes to backfill/results/
    (listing,) = by_action["s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["incoming/*"]}}
    object_resources = json.dumps([s["Resource"] for s in by_action["s3:GetObject"] + by_action["s3:PutObject"]])
    assert '"/inventory/*"' in object_resources and '"/backfill/results/*"' in object_resources
    assert '"/*"' not in object_resources  # never a whole bucket
    # And it may start its own children and invoke the batch function, nothing else of the stack
    assert set(by_action) <= {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListMultipartUploadParts",
        "s3:AbortMultipartUpload",
        "lambda:InvokeFunction",
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
        "states:RedriveExecution",
        *(a for a in by_action if a.startswith(("logs:", "xray:"))),
    }


def test_backfill_has_no_unacknowledged_nag_finding(synthesized):
    assert "Backfill" not in (synthesized.nag_error or "")
