"""`catalog backfill --runtime aws-sim`: the bulk backfill on this machine, in the world `catalog run --runtime
aws-sim` builds (moto, the synthesized stack, the real handlers in-process, the in-process GPU worker).

moto 5.2's Step Functions engine cannot run the backfill's own state machine: its ASL grammar has no `ItemBatcher`,
its ItemReader reads one ListObjectsV2 page (at most 1,000 keys, no continuation) and has no `MANIFEST` input. So
the sim does what the Distributed Map does, with the template's own settings: it lists the prefix with a paginator,
cuts the listing into batches of the map's `MaxItemsPerBatch` (items shaped as the ItemReader's: Key, ETag, Size,
...), runs at most the map's `MaxConcurrency` batches at once through the real `backfill_batch` function, and waits
what each batch asks (`wait_seconds`). Everything after that is the real flow: the per-image executions run the
synthesized per-image state machine in moto.

The world lives in memory, so it cannot outlive the command: what `--resume` does on AWS (a new run over what the
ledger holds) is shown in one command with `stop_after_batches`: the backfill stops after that many batches (its
started executions go on, as on AWS), then a second run over the same listing skips what the ledger holds.
"""

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import boto3

from functions.adapters.aws import settings as aws_settings
from functions.adapters.aws.settings.gpu_jobs import GpuJobSettings
from functions.adapters.aws.settings.ingest import IngestSettings
from functions.adapters.aws.settings.prepare import PrepareSettings
from functions.adapters.aws.settings.publish import PublishSettings
from functions.adapters.aws.settings.review import ReviewSettings
from functions.errors import ConfigurationError
from functions.local.aws_sim import SIM_STATE_DIR, _enter_sim_process, check_aws_sim_installed, run_overrides, sandbox
from functions.local.aws_sim.deployment import Deployment, deploy
from functions.local.aws_sim.driver import (
    TERMINAL,
    Execution,
    FlowDriver,
    bucket_and_prefix,
    upload_brand_store,
    upload_photos,
)
from functions.local.aws_sim.endpoint import GpuEndpoint
from functions.local.aws_sim.lambdas import LambdaFunctions
from functions.local.aws_sim.review import decide
from functions.local.aws_sim.stack import REGION, StackNames, SynthesizedStack, synthesize, walk_states
from functions.local.discovery import InputPhoto
from functions.local.runner import RunSettings
from functions.review.local_flow import ReviewMode, ReviewOptions
from schemas import ExecutionInput, JobResult, ManifestEntry

BATCH_HANDLER = "functions.handlers.backfill_batch.lambda_handler"
INTAKE_ALIAS = "intake"  # s3://intake/... names the stack's intake bucket (its physical name is the stack's choice)
POLL_SECONDS = 0.05


@dataclass
class BackfillCounts:
    """What the CLI shows: every listed object is skipped, started, dropped or failed; `done` counts the started
    images whose execution ended (published, rejected or failed)."""

    listed: int = 0
    skipped: int = 0
    started: int = 0
    dropped: int = 0
    failed: int = 0
    done: int = 0
    batches: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, result: dict[str, Any]) -> None:
        self.batches += 1
        for name in ("listed", "skipped", "started", "dropped", "failed"):
            setattr(self, name, getattr(self, name) + int(result[name]))
        self.failures.extend((str(f["key"]), str(f["reason"])) for f in result.get("failures", ()))


@dataclass(frozen=True)
class MapSettings:
    """The backfill map's own settings, read from the synthesized template."""

    max_concurrency: int
    items_per_batch: int
    batch_function: str  # the batch function's logical id


@dataclass
class BackfillRun:
    """One pass over the listing, and what the per-image flow made of it."""

    counts: BackfillCounts
    stopped: bool
    seconds: float
    state_transitions: int = 0  # of the per-image executions this pass started, from moto's execution history


ShowCounts = Callable[[BackfillCounts], None]


def map_settings(stack: SynthesizedStack, names: StackNames, routes: dict[str, str]) -> MapSettings:
    """MaxConcurrency and MaxItemsPerBatch of the backfill's Distributed Map (the listing one), and its function."""
    found = []
    for machine in stack.resources("AWS::StepFunctions::StateMachine").values():
        states = dict(walk_states(json.loads(str(names.resolve(machine["Properties"]["DefinitionString"])))))
        for state in states.values():
            if state.get("Type") == "Map" and state.get("ItemReader", {}).get("Resource", "").endswith("listObjectsV2"):
                found.append((state, states))
    functions = [logical_id for logical_id, handler in routes.items() if handler == BATCH_HANDLER]
    if len(found) != 1 or len(functions) != 1:
        raise ConfigurationError(
            f"the stack has {len(found)} backfill listing maps and {len(functions)} backfill batch functions; "
            "expected one of each (cdk/catalog_infra/backfill.py)"
        )
    ((listing, states),) = found
    # MaxConcurrencyPath reads the run's input merged over the deployment's default (the `Defaults` state's Result).
    max_concurrency = listing.get("MaxConcurrency") or states["Defaults"]["Result"]["max_concurrency"]
    return MapSettings(
        max_concurrency=int(max_concurrency),
        items_per_batch=int(listing["ItemBatcher"]["MaxItemsPerBatch"]),
        batch_function=functions[0],
    )


def listed_items(bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object under the prefix, as the Distributed Map's ItemReader hands them over (JSON values)."""
    paginator = boto3.client("s3", region_name=REGION).get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", ()):
            yield {
                "Key": entry["Key"],
                "ETag": entry["ETag"],
                "Size": entry["Size"],
                "LastModified": entry["LastModified"].isoformat(),
                "StorageClass": entry.get("StorageClass", "STANDARD"),
            }


def batches_of(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextmanager
def serialized_asl_parsing() -> Iterator[None]:
    """One state machine definition parsed at a time. moto 5.2's ASL Preprocessor keeps its query-language scope
    stack in a class attribute (`_query_language_per_scope = []`), shared by every execution thread: two executions
    starting at once (the map's concurrent batches do that) can pop each other's scope, and the loser's thread dies
    with an IndexError, leaving its execution RUNNING for ever."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    parse = AmazonStateLanguageParser.parse
    lock = threading.Lock()

    def parse_alone(definition: str) -> Any:
        with lock:
            return parse(definition)

    with mock.patch.object(AmazonStateLanguageParser, "parse", staticmethod(parse_alone)):
        yield


@contextmanager
def serialized_dynamodb_requests() -> Iterator[None]:
    """One DynamoDB request at a time in moto. Its TransactWriteItems deep-copies the table to roll back, while another
    thread's write may change it: `RuntimeError: dictionary changed size during iteration` (seen with 200 images, the
    review notify task's transaction). DynamoDB itself serializes per item; the sim's handlers run in parallel."""
    from moto.dynamodb.responses import DynamoHandler

    call_action = DynamoHandler.call_action
    lock = threading.RLock()

    def call_alone(handler: Any) -> Any:
        with lock:
            return call_action(handler)

    with mock.patch.object(DynamoHandler, "call_action", call_alone):
        yield


@contextmanager
def listings_between_starts() -> Iterator[None]:
    """ListExecutions never sees an execution half started. moto 5.2 adds a new execution to its state machine's list
    before starting it, and lists its status as `None.value` until then: a listing that falls between the two (the
    sim lists while the map's batches start executions) raised AttributeError."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    start, listing = StepFunctionsParserBackend.start_execution, StepFunctionResponse.list_executions
    lock = threading.Lock()

    def start_whole(backend: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return start(backend, *args, **kwargs)

    def list_started(response: Any) -> Any:
        with lock:
            return listing(response)

    with (
        mock.patch.object(StepFunctionsParserBackend, "start_execution", start_whole),
        mock.patch.object(StepFunctionResponse, "list_executions", list_started),
    ):
        yield


class _OnePartition:
    """A table seen as one of its partitions: what a Query on the table's own key reads."""

    def __init__(self, table: Any, hash_key: Any) -> None:
        self._table, self._hash_key = table, hash_key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def all_items(self) -> list[Any]:
        partition = self._table.items.get(self._hash_key)
        if partition is None:
            return []
        return list(partition.values()) if self._table.range_key_attr else [partition]


@contextmanager
def partition_queries() -> Iterator[None]:
    """A Query on a table's own key reads that key's partition, as DynamoDB does. moto 5.2 walks (and sorts) every
    item of the table for each Query and keeps those with the key: O(table) a query, so the review and ledger tables
    made a 1,000-image backfill quadratic. Same items, same order, same pages; index queries are left as they are."""
    from moto.dynamodb.models.table import Table

    query: Any = Table.query

    def query_partition(table: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name or hash_key is None:
            return query(table, hash_key, *args, **kwargs)
        return query(_OnePartition(table, hash_key), hash_key, *args, **kwargs)

    with mock.patch.object(Table, "query", query_partition):
        yield


@contextmanager
def item_level_transaction_rollback() -> Iterator[None]:
    """TransactWriteItems stays all-or-nothing, backing up only the items it writes. moto 5.2 deep-copies the whole
    table once per item of the transaction before writing (its rollback): the review digest's transactions (a batch
    and up to 50 claims) copied the review table 51 times each, quadratic over a backfill. Here each written item's
    previous version (or its absence) is kept, and put back if the transaction is cancelled. moto's `copy` is swapped
    for the transaction's duration: the sim sends DynamoDB one request at a time (`serialized_dynamodb_requests`)."""
    import copy

    import moto.dynamodb.models as dynamodb_models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    transact = DynamoDBBackend.transact_write_items

    class _TablesUncopied:
        """moto's `copy` module for the duration of one transaction: tables are not copied, anything else is."""

        @staticmethod
        def deepcopy(value: Any) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value)

    def key_of(table: Any, op_type: str, op: dict[str, Any]) -> tuple[Any, Any]:
        attrs = op["Item"] if op_type == "Put" else op["Key"]
        range_value = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
        return DynamoType(attrs[table.hash_key_attr]), range_value

    def restore(table: Any, hash_value: Any, range_value: Any, previous: Any) -> None:
        if table.range_key_attr:
            partition = table.items[hash_value]
            if previous is None:
                partition.pop(range_value, None)
            else:
                partition[range_value] = previous
        elif previous is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = previous

    def transact_backing_up_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
        backups = []
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            if table is None or op_type == "ConditionCheck":
                continue
            try:
                hash_value, range_value = key_of(table, op_type, op)
            except (KeyError, TypeError):
                continue  # malformed: moto refuses it before writing anything for it
            backups.append((table, hash_value, range_value, copy.deepcopy(table.get_item(hash_value, range_value))))
        with mock.patch.object(dynamodb_models, "copy", _TablesUncopied):
            try:
                transact(backend, transact_items)
            except Exception:
                for table, hash_value, range_value, previous in reversed(backups):
                    restore(table, hash_value, range_value, previous)
                raise

    with mock.patch.object(DynamoDBBackend, "transact_write_items", transact_backing_up_items):
        yield


class _QuietProgress:
    """The flow driver's progress hooks; the backfill shows its own counts."""

    def photo_done(self, entry: ManifestEntry) -> None:
        return None

    def start_jobs(self, count: int) -> None:
        return None

    def job_done(self, result: JobResult) -> None:
        return None


class _BackfillDriver(FlowDriver):
    """The flow driver, polling at most a fifth of its time: each status read lists every execution of the pass
    (1,000 here) through moto's serializer, and each look for a GPU job in flight makes a client and queries the jobs
    table; at the driver's 50 ms poll those took most of a core from the executions they watch. A status or a job is
    seen a few hundred ms later at most; nothing else changes."""

    READ_SHARE = 0.2  # of the main thread's time, at most, spent polling

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_read = self._next_job_look = 0.0

    def refresh_statuses(self) -> None:
        started = time.monotonic()
        if started < self._next_read:
            return
        super().refresh_statuses()
        self._next_read = started + (time.monotonic() - started) / self.READ_SHARE

    def run_gpu_job(self) -> bool:
        started = time.monotonic()
        if started < self._next_job_look:
            return False
        ran = super().run_gpu_job()
        if not ran:  # nothing in flight: look again later; while jobs come, one after the other
            self._next_job_look = started + (time.monotonic() - started) / self.READ_SHARE
        return ran


class SimBackfill:
    """The sim's world for a backfill: enter it, seed the intake bucket, then `run` one or more passes."""

    def __init__(self, out_dir: Path, settings: RunSettings, max_concurrency: int | None = None) -> None:
        self.out_dir, self.settings, self._max_concurrency = out_dir, settings, max_concurrency
        self._cleanup = ExitStack()

    def __enter__(self) -> "SimBackfill":
        check_aws_sim_installed()
        stack = synthesize()
        try:
            self._enter(stack)
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._cleanup.close()

    def _enter(self, stack: SynthesizedStack) -> None:
        cleanup = self._cleanup
        _enter_sim_process(cleanup)
        cleanup.enter_context(serialized_asl_parsing())
        cleanup.enter_context(serialized_dynamodb_requests())
        cleanup.enter_context(listings_between_starts())
        cleanup.enter_context(partition_queries())
        cleanup.enter_context(item_level_transaction_rollback())
        self.deployment: Deployment = deploy(stack)
        self.functions = LambdaFunctions(
            self.deployment.routes, self.deployment.memory, concurrency=self.settings.workers
        )
        self.map = map_settings(stack, self.deployment.names, self.deployment.routes)
        if self._max_concurrency is not None:
            self.map = MapSettings(self._max_concurrency, self.map.items_per_batch, self.map.batch_function)
        self.review_options = ReviewOptions(mode=ReviewMode.AUTO, timeout=timedelta(minutes=10))
        # No pacing here: one in-process worker runs the GPU jobs, and the sim has no endpoint backlog to protect.
        os.environ.update(
            self.deployment.environment
            | run_overrides(self.settings, self.review_options, None)
            | {"BACKFILL_SECONDS_PER_IMAGE": "0"}
        )
        self.intake = aws_settings.load(IngestSettings)
        self.prepare = aws_settings.load(PrepareSettings)
        gpu = aws_settings.load(GpuJobSettings)
        self.review = aws_settings.load(ReviewSettings)
        cleanup.enter_context(
            sandbox.lambda_logs(self.out_dir / SIM_STATE_DIR / "lambda.log", self.functions.modules())
        )
        job_buckets = (gpu.work_bucket, bucket_and_prefix(self.prepare.brands_uri)[0])
        endpoint = GpuEndpoint(self.deployment.endpoint, self.settings.models, gpu.jobs_table_name, job_buckets)
        cleanup.enter_context(self.functions.attached_to_moto())
        cleanup.enter_context(endpoint.attached_to_moto())
        self.driver = _BackfillDriver(self.deployment, self.functions, endpoint, _QuietProgress())
        self.driver.gpu_jobs_running = True
        cleanup.callback(self.driver.stop_running_executions)

    @property
    def bucket(self) -> str:
        return self.deployment.intake.bucket

    def resolve_source(self, source: str, brand: str) -> str:
        """The prefix to list, from `s3://intake/<prefix>` (or the bucket's own name); it must lie under the brand's
        intake folder, as intake reads brand and SKU from the key."""
        bucket, prefix = bucket_and_prefix(source)
        if bucket not in (INTAKE_ALIAS, self.bucket):
            raise ConfigurationError(
                f"{source}: the sim backfills the stack's intake bucket; write s3://{INTAKE_ALIAS}/<prefix>"
            )
        brand_folder = f"{self.intake.intake_prefix}{brand}/"
        prefix = prefix or brand_folder
        if not prefix.startswith(brand_folder):
            raise ConfigurationError(f"{source}: the prefix must lie under {brand_folder} (intake's layout)")
        return prefix

    def seed(self, photos: list[InputPhoto], brand: str) -> int:
        """Photos that were in the bucket before intake existed: uploaded with the bucket's notifications off."""
        s3 = boto3.client("s3", region_name=REGION)
        s3.put_bucket_notification_configuration(Bucket=self.bucket, NotificationConfiguration={})
        upload_brand_store(self.settings, self.prepare.brands_uri)
        return len(upload_photos(photos, self.bucket, self.intake.intake_prefix, brand))

    def run(self, prefix: str, brand: str, show: ShowCounts, stop_after_batches: int | None = None) -> BackfillRun:
        """One pass: the map over the listing (bounded, batched), then the started images through the flow."""
        started_at = time.monotonic()
        before = set(self.driver.executions)
        counts, stopped = BackfillCounts(), False
        lock = threading.Lock()

        def one_batch(items: list[dict[str, Any]]) -> None:
            event = {"BatchInput": {"bucket": self.bucket, "brand": brand}, "Items": items}
            result = self.functions.call(self.map.batch_function, event)
            with lock:
                counts.add(result)
            time.sleep(int(result["wait_seconds"]))  # the child's Pace state

        # 1. The Distributed Map: at most MaxConcurrency batches at once, while the flow runs in moto.
        with ThreadPoolExecutor(max_workers=self.map.max_concurrency, thread_name_prefix="backfill-map") as pool:
            running: set[Future[None]] = set()
            for number, batch in enumerate(batches_of(listed_items(self.bucket, prefix), self.map.items_per_batch)):
                if stop_after_batches is not None and number >= stop_after_batches:
                    stopped = True
                    break
                while len(running) >= self.map.max_concurrency:
                    finished, running = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                    self._note(finished, counts, show, before)
                running.add(pool.submit(one_batch, batch))
            while running:
                finished, running = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                self._note(finished, counts, show, before)

        # 2. The started images: prepare, GPU jobs, checks, review (approved here: no person), publish.
        self._discover_new_executions()
        self.driver.advance(until=self.driver.all_awaiting_review)
        decide(self.driver, self.functions, self.review_options, self.out_dir, self.review.review_base_url, _no_link)
        self.driver.advance(until=self.driver.all_finished)
        self._count_done(counts, before)
        show(counts)
        new = [arn for arn in self.driver.executions if arn not in before]
        return BackfillRun(counts, stopped, time.monotonic() - started_at, self.state_transitions(new))

    def _note(self, finished: set[Future[None]], counts: BackfillCounts, show: ShowCounts, before: set[str]) -> None:
        for future in finished:
            future.result()  # a batch that raised stops the backfill, as a failed child beyond the tolerance does
        self.driver.drain_invocations()
        self._discover_new_executions()
        if self.driver.gpu_jobs_running:
            self.driver.run_gpu_job()
        self._count_done(counts, before)
        show(counts)

    def _discover_new_executions(self) -> None:
        """The driver's discovery, for new executions only (it describes every one each time: O(n^2) at 1,000), and
        every status from the same listing."""
        kwargs: dict[str, Any] = {"stateMachineArn": self.deployment.state_machine_arn, "maxResults": 1000}
        while True:
            page = self.driver.sfn.list_executions(**kwargs)
            for listed in page["executions"]:
                arn = listed["executionArn"]
                if arn not in self.driver.executions:
                    described = self.driver.sfn.describe_execution(executionArn=arn)
                    request = ExecutionInput.model_validate_json(described["input"])
                    self.driver.executions[arn] = Execution(arn, request)
                self.driver.executions[arn].status = listed["status"]
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]

    def _count_done(self, counts: BackfillCounts, before: set[str]) -> None:
        counts.done = sum(e.status in TERMINAL for arn, e in self.driver.executions.items() if arn not in before)

    def state_transitions(self, execution_arns: list[str]) -> int:
        """State transitions of these executions as Step Functions bills them: one per state entered."""
        sfn = boto3.client("stepfunctions", region_name=REGION)
        total = 0
        for arn in execution_arns:
            kwargs: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
            while True:
                page = sfn.get_execution_history(**kwargs)
                total += sum(event["type"].endswith("StateEntered") for event in page["events"])
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        return total

    def published_keys(self) -> list[str]:
        """What the flow published to the output bucket (approved images)."""
        publish = aws_settings.load(PublishSettings)
        s3 = boto3.client("s3", region_name=REGION)
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=publish.output_bucket, Prefix=publish.approved_prefix
        ):
            keys.extend(entry["Key"] for entry in page.get("Contents", ()))
        return keys


def _no_link(link: str, email: str, timeout: timedelta) -> None:
    return None
