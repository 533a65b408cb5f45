"""The stack's Lambda functions, run in this process: the state machine's tasks arrive through moto's Lambda invoke,
the sim's own deliveries (SQS batches, SNS notifications, schedules, API requests) are direct calls.

Each call gets a Lambda-like context; an exception becomes Lambda's error payload (`errorType` = the class name,
`errorMessage` = str(error)), so Step Functions sees exactly what it would on AWS. Every call is recorded, in order,
for the driver (which photo was prepared, which review was stored).
"""

import contextlib
import importlib
import json
import queue
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from unittest import mock

from functions.local.aws_sim.stack import REGION, fake_function_arn

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """The attributes Powertools reads from the Lambda context."""

    function_name: str
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "aws-sim"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass(frozen=True)
class Invocation:
    """One finished call: which handler, with what, and what came of it (a result or an error)."""

    handler: str
    event: dict[str, Any]
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None

    @property
    def failed(self) -> bool:
        return self.error_type is not None


class LambdaFunctionError(Exception):
    """A direct call's handler raised; `invocation` holds Lambda's view of the error."""

    def __init__(self, invocation: Invocation) -> None:
        super().__init__(f"{invocation.handler}: {invocation.error_type}: {invocation.error_message}")
        self.invocation = invocation


class LambdaFunctions:
    """Logical id -> handler (from the template), called in-process, at most `concurrency` task calls at once."""

    def __init__(self, routes: dict[str, str], memory: dict[str, int], concurrency: int) -> None:
        self.routes, self.memory = routes, memory
        self.invocations: queue.Queue[Invocation] = queue.Queue()
        # Real Lambda runs hundreds at once; this machine has a few cores, and each prepare holds a decoded photo.
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._busy = 0
        self._busy_lock = threading.Lock()

    def modules(self) -> list[ModuleType]:
        """The handler modules, imported. A Powertools logger keeps the stdout it was created with: bind it to the
        process's own, not to whatever stands in for it now (a progress display, a test runner's capture)."""
        with contextlib.redirect_stdout(sys.__stdout__ or sys.stdout):
            return [importlib.import_module(handler.rsplit(".", 1)[0]) for handler in sorted(set(self.routes.values()))]

    def logical_id_of(self, handler: str) -> str:
        """The function that runs `handler` (e.g. `functions.handlers.review_schedule.lambda_handler`)."""
        return next(logical_id for logical_id, routed in sorted(self.routes.items()) if routed == handler)

    @property
    def busy(self) -> bool:
        """Some handler is running now (the flow is making progress even if nothing has finished)."""
        with self._busy_lock:
            return self._busy > 0

    def _run(self, logical_id: str, event: dict[str, Any]) -> Invocation:
        handler_path = self.routes[logical_id]
        module_name, function_name = handler_path.rsplit(".", 1)
        handler: Handler = getattr(importlib.import_module(module_name), function_name)
        context = LambdaContext(logical_id, self.memory.get(logical_id, 1024), fake_function_arn(logical_id))
        with self._busy_lock:
            self._busy += 1
        try:
            invocation = Invocation(handler_path, event, result=handler(event, context))
        except Exception as error:
            invocation = Invocation(handler_path, event, error_type=type(error).__name__, error_message=str(error))
            # The Lambda runtime logs the error with its stack trace (CloudWatch; here the sim's log).
            print(json.dumps({"function": logical_id, "error": invocation.error_type, "trace": traceback.format_exc()}))
        finally:
            with self._busy_lock:
                self._busy -= 1
        self.invocations.put(invocation)
        return invocation

    def call(self, logical_id: str, event: dict[str, Any]) -> Any:
        """A direct call (the sim delivering an event); the handler's exception is raised as LambdaFunctionError."""
        invocation = self._run(logical_id, event)
        if invocation.failed:
            raise LambdaFunctionError(invocation)
        return invocation.result

    def invoke_from_state_machine(self, function_name: str, body: Any, response_headers: dict[str, str]) -> bytes:
        """What moto's Lambda `Invoke` returns to the Step Functions engine for a task."""
        logical_id = str(function_name).rsplit(":", 1)[-1]
        if logical_id not in self.routes:
            return _function_error(response_headers, "ResourceNotFoundException", f"no function {function_name}")
        event = json.loads(body or b"{}")
        with self._slots:
            invocation = self._run(logical_id, event)
        if invocation.failed:
            return _function_error(response_headers, str(invocation.error_type), str(invocation.error_message))
        return json.dumps(invocation.result).encode()

    @contextmanager
    def attached_to_moto(self) -> Iterator[None]:
        """Route moto's Lambda invokes (the state machine's tasks) here for the duration."""
        from moto.awslambda_simple.models import LambdaSimpleBackend

        functions = self

        def invoke(backend: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response: Any) -> bytes:
            return functions.invoke_from_state_machine(function_name, body, response)

        with mock.patch.object(LambdaSimpleBackend, "invoke", invoke):
            yield


def _function_error(response_headers: dict[str, str], error_type: str, message: str) -> bytes:
    """Lambda's answer for an unhandled error: the header Step Functions reads, and the error as the payload."""
    response_headers["x-amz-function-error"] = "Unhandled"
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping delivers for received messages."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for message in messages
        ]
    }


def sns_event(topic_arn: str, message: str, subscription_arn: str, message_id: str) -> dict[str, Any]:
    """The event SNS delivers to a subscribed Lambda function."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": "Notification",
                    "MessageId": message_id,
                    "TopicArn": topic_arn,
                    "Subject": None,
                    "Message": message,
                    "Timestamp": _now_iso(),
                    "SignatureVersion": "1",
                    "Signature": "aws-sim",
                    "SigningCertUrl": "",
                    "UnsubscribeUrl": "",
                    "MessageAttributes": {},
                },
            }
        ]
    }


def _now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
