"""The state machine definition out of the synthesized template, ready for moto's Step Functions engine."""

import json
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"


def fake_function_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical_id}"


def _resolve(part: Any) -> str:
    if isinstance(part, str):
        return part
    if "Fn::GetAtt" in part:
        logical_id, attribute = part["Fn::GetAtt"]
        assert attribute == "Arn", part
        return fake_function_arn(logical_id)
    if "Ref" in part:
        return {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}.get(part["Ref"], part["Ref"])
    raise AssertionError(f"unexpected intrinsic in the definition: {part}")


def definition_from_template(template: dict[str, Any]) -> dict[str, Any]:
    # The per-image workflow (the backfill's state machine, cdk/catalog_infra/backfill.py, is tested on its own).
    machines = [
        r
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::StepFunctions::StateMachine" and name.startswith("WorkflowPerImage")
    ]
    assert len(machines) == 1
    body = machines[0]["Properties"]["DefinitionString"]
    text = body if isinstance(body, str) else "".join(_resolve(p) for p in body["Fn::Join"][1])
    definition: dict[str, Any] = json.loads(text)
    return definition


def walk_states(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every state by name, nested Map processors included."""
    found: dict[str, dict[str, Any]] = {}
    for name, state in definition["States"].items():
        found[name] = state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            found.update(walk_states(processor))
    return found


def shorten_waits(definition: dict[str, Any], seconds: int = 1) -> dict[str, Any]:
    """Retry intervals of a second: moto sleeps them for real. Only the timing changes, never the paths."""
    copy = json.loads(json.dumps(definition))
    for state in walk_states(copy).values():
        for retry in state.get("Retry", []):
            retry["IntervalSeconds"] = seconds
            retry.pop("MaxDelaySeconds", None)
    return copy
