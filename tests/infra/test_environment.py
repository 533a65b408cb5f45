"""The stack and the runtime share only environment variable names: each Lambda handler module declares its
`SETTINGS` (a pydantic model read from the environment, field names = variable names in lower case), and the
function the stack deploys with that handler sets exactly those variables: none missing, none unread.
"""

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_NAME = "CatalogImageProcessor"
HANDLERS_PACKAGE = "functions.handlers"
# Read by Powertools, the logging setup and pydantic themselves, not by a handler's settings.
NOT_SETTINGS = ("POWERTOOLS_", "LOG_LEVEL", "PYDANTIC_DISABLE_PLUGINS")
CDK_OWN_FUNCTIONS = ("BucketNotificationsHandler",)  # CDK's custom resource (inline code, no environment)


def _image_hash(function: dict[str, Any]) -> str:
    uri = function["Properties"]["Code"]["ImageUri"]
    text = uri if isinstance(uri, str) else uri["Fn::Sub"]
    return str(text.rpartition(":")[2])


def _dockerfile_cmd(dockerfile: Path) -> str:
    """The handler an image runs when the function sets no command: its Dockerfile's `CMD ["module.function"]`."""
    commands = [line for line in dockerfile.read_text(encoding="utf-8").splitlines() if line.startswith("CMD ")]
    assert len(commands) == 1, f"{dockerfile}: expected one CMD line, found {commands}"
    cmd = json.loads(commands[0].removeprefix("CMD "))
    return str(cmd[0])


def handlers_by_function(synthesized) -> dict[str, str]:
    """Logical id -> handler (`functions.handlers.<name>.lambda_handler`) of every image function of ours."""
    assets = json.loads((synthesized.outdir / f"{STACK_NAME}.assets.json").read_text())
    dockerfiles = {digest: image["source"]["dockerFile"] for digest, image in assets["dockerImages"].items()}
    handlers = {}
    for logical_id, function in synthesized.resources("AWS::Lambda::Function").items():
        if function["Properties"].get("PackageType") != "Image":
            assert logical_id.startswith(CDK_OWN_FUNCTIONS), f"{logical_id}: a function of ours that is not an image"
            continue
        command = function["Properties"].get("ImageConfig", {}).get("Command")
        if command:
            handlers[logical_id] = command[0]
        else:  # the prepare image: its handler is the Dockerfile's CMD
            handlers[logical_id] = _dockerfile_cmd(REPO_ROOT / dockerfiles[_image_hash(function)])
    return handlers


def settings_of(handler: str) -> Any:
    module_name = handler.rpartition(".")[0]
    assert module_name.startswith(f"{HANDLERS_PACKAGE}."), f"{handler}: not a module of {HANDLERS_PACKAGE}"
    return getattr(importlib.import_module(module_name), "SETTINGS", None)


def variables_set(function: dict[str, Any]) -> dict[str, Any]:
    variables = function["Properties"].get("Environment", {}).get("Variables", {})
    return {name: value for name, value in variables.items() if not name.startswith(NOT_SETTINGS)}


def test_every_function_sets_exactly_the_variables_its_handler_reads(synthesized):
    # Given every Lambda function the stack deploys, and the handler each one runs
    handlers = handlers_by_function(synthesized)
    functions = synthesized.resources("AWS::Lambda::Function")
    assert len(handlers) == 13, sorted(handlers)

    # When the stack's variables (Powertools' and logging's aside) are compared with the handler's SETTINGS fields
    mismatches = {}
    for logical_id, handler in sorted(handlers.items()):
        settings = settings_of(handler)
        if settings is None:
            mismatches[logical_id] = f"{handler.rpartition('.')[0]} declares no module-level SETTINGS"
            continue
        read = {field.upper() for field in settings.model_fields}
        set_by_stack = set(variables_set(functions[logical_id]))
        if read != set_by_stack:
            mismatches[logical_id] = {
                "read, not set": sorted(read - set_by_stack),
                "set, not read": sorted(set_by_stack - read),
            }

    # Then every variable a handler reads is set (defaults included, so the deployed value shows in the template)
    # and every variable the stack sets is read
    assert mismatches == {}


def test_every_function_starts_without_pydantic_scanning_for_plugins(synthesized):
    # Given every Lambda function the stack deploys
    functions = synthesized.resources("AWS::Lambda::Function")
    ours = handlers_by_function(synthesized)

    # When their environments are read
    plugins = {
        logical_id: functions[logical_id]["Properties"]["Environment"]["Variables"].get("PYDANTIC_DISABLE_PLUGINS")
        for logical_id in ours
    }

    # Then each one turns pydantic's plugin lookup off (a scan of every installed package at its first model build)
    assert set(plugins.values()) == {"__all__"}, plugins


def _placeholder(value: Any) -> str:
    """A stand-in for a value CloudFormation resolves at deploy time, shaped like the real one."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_placeholder(part) for part in parts)
    if "Ref" in value:
        pseudo = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}
        return pseudo.get(value["Ref"], value["Ref"].replace("AWS::", "").lower())
    if "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return f"arn:aws:service:us-east-1:123456789012:{logical_id.lower()}/{attribute.lower()}"
    raise AssertionError(f"unexpected intrinsic in an environment variable: {value}")


def test_the_values_the_stack_sets_are_valid_settings(synthesized):
    # Given each function's variables, with deploy-time references replaced by values of the same shape
    handlers = handlers_by_function(synthesized)
    functions = synthesized.resources("AWS::Lambda::Function")
    for logical_id, handler in sorted(handlers.items()):
        settings = settings_of(handler)
        if settings is None:
            pytest.fail(f"{handler.rpartition('.')[0]} declares no module-level SETTINGS")
        values = {name.lower(): _placeholder(value) for name, value in variables_set(functions[logical_id]).items()}

        # When the handler's settings are built from them
        # Then they validate (ranges, patterns, booleans): a deployed function does not fail on its first call
        settings(**values)


def test_cdk_shares_names_with_the_runtime_and_imports_none_of_it():
    # Given the CDK app's modules (not cdk.out, whose image assets are copies of the repository)
    cdk = REPO_ROOT / "cdk"
    paths = [cdk / "app.py", *(cdk / "catalog_infra").glob("*.py")]
    sources = {str(path.relative_to(cdk)): path.read_text(encoding="utf-8") for path in paths}

    # Then none imports runtime code: the handlers are named as strings, the variables by their names
    runtime_import = re.compile(r"^\s*(from|import)\s+(functions|gpu_jobs|schemas)\b", re.MULTILINE)
    assert {name for name, text in sources.items() if runtime_import.search(text)} == set()


def test_the_stack_names_the_same_jobs_and_presets_as_the_runtime(synthesized):
    # Given the deployment context's allowed values, kept in cdk/ because it imports no runtime code
    from catalog_infra.config import JOB_KINDS, PACKSHOT_PRESETS

    from functions.stages.packshot import PackshotPreset
    from schemas import JobKind

    # Then they are exactly the runtime's: a job or preset the stack accepts is one prepare can make
    assert set(JOB_KINDS) == {kind.value for kind in JobKind}
    assert set(PACKSHOT_PRESETS) == {preset.value for preset in PackshotPreset}
