"""The stack as the sim deploys it: the synthesized CloudFormation template, read generically.

Synthesized once per process from the repository's `cdk/` app (10-20 s). Nothing here knows the template's logical
ids: resources are found by type, intrinsics (`Ref`, `Fn::GetAtt`, `Fn::Join`, `Fn::Sub`) resolve to the physical
names the sim gave them, and each Lambda function's handler is read from the template (`ImageConfig.Command`) or from
the CMD of the Dockerfile its image asset was built from.
"""

import contextlib
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from functions.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[3]
CDK_DIR = REPO_ROOT / "cdk"
STACK_NAME = "CatalogImageProcessor"
REGION = "us-east-1"
ACCOUNT = "123456789012"
URL_SUFFIX = "amazonaws.com"
# The jsii kernel (node) prints a banner for a node version it does not support; a `catalog run` has no use for it.
_JSII_NODE_WARNINGS = ("DEPRECATED", "END_OF_LIFE", "KNOWN_BROKEN", "UNTESTED")
_HANDLER_PREFIX = "functions."  # our handlers; the CDK's own custom-resource Lambdas are replaced by the sim


@dataclass(frozen=True)
class SynthesizedStack:
    template: dict[str, Any]
    image_dockerfiles: dict[str, str]  # container image asset hash -> its Dockerfile, relative to the repository

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.template["Resources"].items() if r["Type"] == kind}

    def properties(self, logical_id: str) -> dict[str, Any]:
        properties: dict[str, Any] = self.template["Resources"][logical_id].get("Properties", {})
        return properties


def _node_major_version() -> str:
    node = shutil.which("node")
    if node is None:
        raise ConfigurationError("--runtime aws-sim synthesizes the CDK app, which needs Node.js: install node.")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    return version.strip().lstrip("v").split(".", 1)[0]


@contextmanager
def _cdk_importable() -> Iterator[None]:
    # Each variable lists the major versions whose warning to silence.
    quiet = dict.fromkeys(
        (f"JSII_SILENCE_WARNING_{name}_NODE_VERSION" for name in _JSII_NODE_WARNINGS), _node_major_version()
    )
    saved = {name: os.environ.get(name) for name in quiet}
    os.environ.update(quiet)
    sys.path.insert(0, str(CDK_DIR))
    try:
        yield
    finally:
        sys.path.remove(str(CDK_DIR))
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@functools.cache
def synthesize() -> SynthesizedStack:
    """`cdk synth` of the repository's app, the way tests/infra does it; cached for the process."""
    if not (CDK_DIR / "catalog_infra").is_dir():
        raise ConfigurationError(f"--runtime aws-sim synthesizes the CDK app in {CDK_DIR}: run it from a checkout.")
    # The jsii kernel forwards node's output (cdk-nag's findings among it); the CLI's terminal is no place for it.
    chatter = io.StringIO()
    with (
        _cdk_importable(),
        tempfile.TemporaryDirectory(prefix="catalog-aws-sim-cdk.") as outdir,
        contextlib.redirect_stdout(chatter),
        contextlib.redirect_stderr(chatter),
    ):
        from catalog_infra.app import build_app, default_context

        app = build_app(default_context(), outdir=outdir)
        # cdk-nag findings fail synth after the template is written; tests/infra owns them, the sim runs the template.
        with contextlib.suppress(Exception):
            app.synth()
        template_file = Path(outdir) / f"{STACK_NAME}.template.json"
        if not template_file.is_file():
            raise ConfigurationError(f"cdk synth wrote no template for {STACK_NAME}:\n{chatter.getvalue()[-4000:]}")
        template = json.loads(template_file.read_text(encoding="utf-8"))
        assets = json.loads((Path(outdir) / f"{STACK_NAME}.assets.json").read_text(encoding="utf-8"))
    dockerfiles = {
        image_hash: str(image["source"].get("dockerFile", "Dockerfile"))
        for image_hash, image in assets.get("dockerImages", {}).items()
    }
    return SynthesizedStack(template, dockerfiles)


def fake_function_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical_id}"


class StackNames:
    """Physical names and ARNs of what the sim created, and the template's intrinsics resolved to them.

    `created` is filled as resources are made (moto picks some ARNs itself, e.g. a secret's suffix); anything the sim
    does not create (roles, keys, the REST API) resolves to a stable stand-in, as nothing calls it.
    """

    def __init__(self, stack: SynthesizedStack) -> None:
        self.stack = stack
        self.refs: dict[str, str] = {}
        self.arns: dict[str, str] = {}

    def physical_name(self, logical_id: str) -> str:
        # Lower case and short enough for S3 bucket rules; unique because logical ids are.
        return f"{STACK_NAME}-{logical_id}".lower()[:63]

    def created(self, logical_id: str, ref: str, arn: str) -> None:
        self.refs[logical_id], self.arns[logical_id] = ref, arn

    def ref(self, name: str) -> str:
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::StackName": STACK_NAME,
        }
        if name in pseudo:
            return pseudo[name]
        return self.refs.get(name, name)

    def get_att(self, logical_id: str, attribute: str) -> str:
        if attribute == "Arn":
            if logical_id in self.arns:
                return self.arns[logical_id]
            kind = self.stack.template["Resources"].get(logical_id, {}).get("Type", "")
            if kind == "AWS::Lambda::Function":
                return fake_function_arn(logical_id)
            return f"arn:aws:{kind.split('::')[1].lower() if '::' in kind else 'sim'}:{REGION}:{ACCOUNT}:{logical_id}"
        value = self.stack.properties(logical_id).get(attribute)  # e.g. an endpoint's EndpointName
        return str(self.resolve(value)) if value is not None else self.ref(logical_id)

    def resolve(self, value: Any) -> Any:
        """A template value with every intrinsic replaced; plain values come back as they are."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (function, argument), *_ = value.items()
            if function == "Ref":
                return self.ref(argument)
            if function == "Fn::GetAtt":
                logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.get_att(logical_id, attribute)
            if function == "Fn::Join":
                separator, parts = argument
                return separator.join(str(self.resolve(part)) for part in parts)
            if function == "Fn::Sub":
                return self._substitute(argument)
            if function == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(index)]
        return {key: self.resolve(item) for key, item in value.items()}

    def _substitute(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return self.ref(name)

        return re.sub(r"\$\{([^}!]+)\}", replace, text)


def lambda_functions(stack: SynthesizedStack) -> dict[str, dict[str, Any]]:
    return stack.resources("AWS::Lambda::Function")


def handler_of(stack: SynthesizedStack, logical_id: str) -> str | None:
    """`module.function` a Lambda runs: its ImageConfig.Command, else its image's Dockerfile CMD; None if not ours."""
    properties = stack.properties(logical_id)
    command = (properties.get("ImageConfig") or {}).get("Command")
    handler = command[0] if command else properties.get("Handler")
    if handler is None:
        # The image URI ends in the asset's hash (`...container-assets-...:<sha256>`), inside an Fn::Sub.
        image_hash = re.search(r"[0-9a-f]{64}", json.dumps((properties.get("Code") or {}).get("ImageUri", "")))
        dockerfile = stack.image_dockerfiles.get(image_hash.group(0)) if image_hash else None
        handler = dockerfile_command(REPO_ROOT / dockerfile) if dockerfile else None
    return handler if isinstance(handler, str) and handler.startswith(_HANDLER_PREFIX) else None


def dockerfile_command(path: Path) -> str | None:
    """The first word of the last `CMD [...]` (the Lambda runtime's handler), or None."""
    commands = re.findall(r"^CMD\s+(\[.*\])\s*$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    if not commands:
        return None
    words = json.loads(commands[-1])
    return str(words[0]) if words else None


def handler_routes(stack: SynthesizedStack) -> dict[str, str]:
    """Lambda logical id -> the handler it runs, for every function of ours in the stack."""
    routes = {logical_id: handler_of(stack, logical_id) for logical_id in lambda_functions(stack)}
    return {logical_id: handler for logical_id, handler in routes.items() if handler}


def lambda_environment(stack: SynthesizedStack, names: StackNames) -> dict[str, str]:
    """Every function's environment, merged: the handlers share one process, so one name can have only one value."""
    merged: dict[str, str] = {}
    owners: dict[str, str] = {}
    for logical_id in handler_routes(stack):
        variables = (stack.properties(logical_id).get("Environment") or {}).get("Variables") or {}
        for name, value in names.resolve(variables).items():
            if name in merged and merged[name] != str(value):
                raise ConfigurationError(
                    f"--runtime aws-sim runs every Lambda in one process, but {owners[name]} and {logical_id} give "
                    f"{name} different values ({merged[name]!r}, {value!r})."
                )
            merged[name], owners[name] = str(value), logical_id
    return merged


def state_machine_definition(stack: SynthesizedStack, names: StackNames) -> tuple[str, dict[str, Any]]:
    """The per-image state machine's logical id and its definition, intrinsics resolved: the one the functions start
    (`STATE_MACHINE_ARN`). The backfill's machine is not run in moto: `catalog backfill --runtime aws-sim` drives its
    batch function itself (functions/local/backfill_sim.py says why)."""
    machines = stack.resources("AWS::StepFunctions::StateMachine")
    started = {
        reference.get("Ref")
        for function in lambda_functions(stack).values()
        for reference in [
            ((function["Properties"].get("Environment") or {}).get("Variables") or {}).get("STATE_MACHINE_ARN")
        ]
        if isinstance(reference, dict)
    }
    per_image = {logical_id: machine for logical_id, machine in machines.items() if logical_id in started}
    if len(per_image) != 1:
        raise ConfigurationError(
            f"the stack's functions start {len(per_image)} state machines; the sim runs exactly one"
        )
    logical_id, machine = next(iter(per_image.items()))
    body = names.resolve(machine["Properties"]["DefinitionString"])
    substitutions = names.resolve(machine["Properties"].get("DefinitionSubstitutions") or {})
    for name, value in substitutions.items():
        body = body.replace("${" + name + "}", str(value))
    definition: dict[str, Any] = json.loads(body)
    return logical_id, definition


def walk_states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state by name, the states of Map and Parallel branches included."""
    for name, state in definition.get("States", {}).items():
        yield name, state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from walk_states(processor)
        for branch in state.get("Branches", ()):
            yield from walk_states(branch)


def with_short_retry_waits(definition: dict[str, Any], seconds: int = 1) -> dict[str, Any]:
    """The definition with every Retry interval cut to `seconds` (and no MaxDelaySeconds), paths unchanged.

    Why: moto sleeps retry intervals for real, and in the sim a retry can only repeat the same in-process work (the
    GPU worker is deterministic), so the template's 30-60 s back-off would only make a failing photo wait.
    """
    copy: dict[str, Any] = json.loads(json.dumps(definition))
    for _, state in walk_states(copy):
        for retry in state.get("Retry", ()):
            retry["IntervalSeconds"] = seconds
            retry.pop("MaxDelaySeconds", None)
    return copy


def retry_attempts(definition: dict[str, Any], error: str) -> int:
    """How many times a task failing with `error` runs in all (1 + the Retry's MaxAttempts), at most."""
    attempts = 1
    for _, state in walk_states(definition):
        for retry in state.get("Retry", ()):
            if error in retry.get("ErrorEquals", ()):
                attempts = max(attempts, 1 + int(retry.get("MaxAttempts", 3)))
    return attempts
