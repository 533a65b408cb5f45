"""The stack "deployed" into moto: resources created, every function's environment resolved, and who delivers what
to whom (the SQS event source mapping, the SNS subscriptions) read from the template."""

from dataclasses import dataclass
from typing import Any

from functions.local.aws_sim.endpoint import AsyncEndpointConfig, async_endpoint_config
from functions.local.aws_sim.resources import create_stack_resources, create_state_machine
from functions.local.aws_sim.stack import (
    StackNames,
    SynthesizedStack,
    handler_routes,
    lambda_environment,
    state_machine_definition,
)


@dataclass(frozen=True)
class IntakeWiring:
    """The bucket whose notifications go to an SQS queue, and the event source mapping that feeds a function."""

    bucket: str
    queue_url: str
    queue_arn: str
    function: str
    batch_size: int


@dataclass(frozen=True)
class Deployment:
    stack: SynthesizedStack
    names: StackNames
    environment: dict[str, str]  # every function's variables, merged (one process runs them all)
    routes: dict[str, str]  # Lambda logical id -> handler
    memory: dict[str, int]
    state_machine_arn: str
    definition: dict[str, Any]  # as in the template (the sim runs it with shorter retry waits)
    intake: IntakeWiring
    endpoint: AsyncEndpointConfig
    subscribers: dict[str, list[tuple[str, str]]]  # topic ARN -> [(function logical id, subscription ARN)]


def deploy(stack: SynthesizedStack) -> Deployment:
    """Create the stack's resources in moto (moto must be running) and read how the pieces are wired."""
    names = StackNames(stack)
    create_stack_resources(stack, names)
    machine_id, definition = state_machine_definition(stack, names)
    state_machine_arn = create_state_machine(stack, names, definition, machine_id)
    routes = handler_routes(stack)
    return Deployment(
        stack=stack,
        names=names,
        environment=lambda_environment(stack, names),
        routes=routes,
        memory={logical_id: int(stack.properties(logical_id).get("MemorySize", 128)) for logical_id in routes},
        state_machine_arn=state_machine_arn,
        definition=definition,
        intake=_intake_consumer(stack, names),
        endpoint=async_endpoint_config(stack, names),
        subscribers=_lambda_subscribers(stack, names),
    )


def _function_id(names: StackNames, reference: str) -> str:
    """A function's logical id from what the template resolved (its name, which the sim keeps as the logical id,
    or its ARN)."""
    return reference.rsplit(":", 1)[-1]


def _intake_consumer(stack: SynthesizedStack, names: StackNames) -> IntakeWiring:
    mappings = [names.resolve(r["Properties"]) for r in stack.resources("AWS::Lambda::EventSourceMapping").values()]
    queue_arns = {names.arns[logical_id]: logical_id for logical_id in stack.resources("AWS::SQS::Queue")}
    # The intake queue is the one a bucket notifies (other SQS consumers, e.g. Shopify's work queue, are not intake).
    notified = {
        str(queue.get("QueueArn")): str(properties["BucketName"])
        for properties in map(
            names.resolve, (r["Properties"] for r in stack.resources("Custom::S3BucketNotifications").values())
        )
        for queue in properties["NotificationConfiguration"].get("QueueConfigurations", ())
    }
    consumers = [m for m in mappings if m.get("EventSourceArn") in queue_arns and m["EventSourceArn"] in notified]
    if len(consumers) != 1:
        raise ValueError(f"expected one SQS event source mapping on a notified queue (intake), found {len(consumers)}")
    mapping = consumers[0]
    queue_id = queue_arns[mapping["EventSourceArn"]]
    notifying = [notified[names.arns[queue_id]]]
    return IntakeWiring(
        bucket=notifying[0],
        queue_url=names.refs[queue_id],
        queue_arn=names.arns[queue_id],
        function=_function_id(names, str(mapping["FunctionName"])),
        batch_size=int(mapping.get("BatchSize", 10)),
    )


def _lambda_subscribers(stack: SynthesizedStack, names: StackNames) -> dict[str, list[tuple[str, str]]]:
    subscribers: dict[str, list[tuple[str, str]]] = {}
    for logical_id, resource in stack.resources("AWS::SNS::Subscription").items():
        properties = names.resolve(resource["Properties"])
        if properties.get("Protocol") == "lambda":
            subscription = f"{properties['TopicArn']}:{logical_id}"
            function = _function_id(names, str(properties["Endpoint"]))
            subscribers.setdefault(str(properties["TopicArn"]), []).append((function, subscription))
    return subscribers
