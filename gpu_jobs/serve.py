"""The SageMaker custom-container contract: `GET /ping` and `POST /invocations` on port 8080.

    python -m gpu_jobs.serve --models tiny --port 8080 --data-root /data   # tiny random models, CPU
    python -m gpu_jobs.serve --host 0.0.0.0 serve               # what `docker run <image> serve` runs:
                                                                # models from $GPU_JOBS_MODELS or
                                                                # /opt/ml/model/model_config.json

    curl localhost:8080/ping                                    # 503 while loading, 200 once ready
    curl -XPOST localhost:8080/invocations -d @request.json     # JobRequest JSON -> JobResult JSON

Under async inference SageMaker reads the request object from S3 and POSTs its body here; run the
endpoint with `MaxConcurrentInvocationsPerInstance=1` (one job per GPU). A second concurrent request
waits up to `--busy-wait-s` and is then refused with 429. Caller errors are 4xx with
`{"error": {"code", "field", "message"}}`; failures are 5xx with the same shape; a job that runs
past `--job-timeout-s` is stopped between denoising steps and answered with 504.

A request names its files by URI, and the server trusts none of them: a job reads and writes only under the
folders given with `--data-root DIR` and in the buckets given with `--bucket NAME` (both repeatable; or
`$GPU_JOBS_DATA_ROOTS`, paths separated by `os.pathsep` or commas, and `$GPU_JOBS_BUCKETS`, names separated by
commas, used when no flag is given). Paths are checked after resolving symlinks and `..`. Nothing configured:
nothing is readable (fail closed). A refused URI is a 403 `uri_refused` naming the field. The server listens on
127.0.0.1 unless `--host` says otherwise (the container passes `--host 0.0.0.0`: SageMaker calls it from outside).
"""

import argparse
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from schemas import JobRequest, JobResult

from . import storage
from .errors import JobInputError, JobTimeoutError, RecipeUnavailableError, WorkerBusyError
from .licences import LicenceError
from .worker import JobRunner, error_code

if TYPE_CHECKING:
    from .config import ModelConfig

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/opt/ml/model/model_config.json")
MAX_BODY_BYTES = 1 << 20  # a JobRequest is small: images travel by URI
SOCKET_TIMEOUT_S = 30.0  # a client that stops sending mid-body cannot hold a thread
MAX_JSON_DEPTH = 64  # a JobRequest nests a few levels; json.loads would recurse (and crash) on 100,000
DEFAULT_HOST = "127.0.0.1"
DATA_ROOTS_ENV = "GPU_JOBS_DATA_ROOTS"
BUCKETS_ENV = "GPU_JOBS_BUCKETS"
_DECIMAL = re.compile(r"^[0-9]{1,20}$")
_JSON_STRUCTURE = re.compile(rb'["\\\[\]{}]')


def _status_for(error: BaseException) -> HTTPStatus:
    if error_code(error) == "uri_refused":
        return HTTPStatus.FORBIDDEN
    if isinstance(error, JobInputError):
        return HTTPStatus.UNPROCESSABLE_ENTITY
    if isinstance(error, LicenceError):
        return HTTPStatus.FORBIDDEN
    if isinstance(error, WorkerBusyError):
        return HTTPStatus.TOO_MANY_REQUESTS
    if isinstance(error, RecipeUnavailableError):
        return HTTPStatus.NOT_IMPLEMENTED
    if isinstance(error, JobTimeoutError):
        return HTTPStatus.GATEWAY_TIMEOUT
    return HTTPStatus.INTERNAL_SERVER_ERROR


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "body"


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays/objects nest deeper than `limit`, counted outside strings, without parsing."""
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _JSON_STRUCTURE.finditer(body):
        position, char = match.start(), match.group()
        if in_string:
            if position == escaped_at:
                continue
            if char == b"\\":
                escaped_at = position + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
    return False


class JobServer:
    """Loads the models in the background and answers the contract on (host, port); port 0 picks one."""

    def __init__(
        self,
        load_runner: Callable[[], JobRunner],
        *,
        host: str = DEFAULT_HOST,
        port: int = 8080,
        busy_wait_s: float = 0.0,
        job_timeout_s: float = 900.0,
        scope: storage.StorageScope | None = None,
    ) -> None:
        # Where jobs may read and write; none given: nowhere (every file-touching request is refused).
        self.scope = scope or storage.StorageScope()
        self.busy_wait_s = busy_wait_s
        self.job_timeout_s = job_timeout_s
        self.runner: JobRunner | None = None
        self.load_error: str | None = None
        self.ready = threading.Event()
        self._load_runner = load_runner
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> "JobServer":
        """Serve now (so /ping answers 503 while loading) and load the models on another thread."""
        for target, name in ((self._httpd.serve_forever, "http"), (self._load, "model-loader")):
            thread = threading.Thread(target=target, name=f"gpu-jobs-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _load(self) -> None:
        try:
            self.runner = self._load_runner()
            self.ready.set()
            logger.info("models ready; serving on port %d", self.port)
        except Exception as error:
            logger.exception("model loading failed")
            self.load_error = f"{type(error).__name__}: {error}"

    def serve_forever(self) -> None:
        """Block until interrupted (the CLI)."""
        self.start()
        try:
            self._threads[0].join()
        except KeyboardInterrupt:
            self.stop()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def invoke(self, request: JobRequest) -> JobResult:
        """Run one job on a worker thread and wait for it, never longer than the wait plus the job limit."""
        assert self.runner is not None
        runner = self.runner
        future: Future[JobResult] = Future()

        def work() -> None:
            try:
                # The scope lives in this thread's context: one job's scope never leaks into another's.
                with storage.confined(self.scope):
                    future.set_result(runner.execute(request, wait_s=self.busy_wait_s))
            except BaseException as error:
                future.set_exception(error)

        threading.Thread(target=work, name=f"job-{request.job_id}", daemon=True).start()
        # The registry stops the job between denoising steps at its deadline; this bound is the backstop
        # for anything that does not check it (a slow VAE decode, an S3 upload).
        try:
            return future.result(timeout=self.busy_wait_s + self.job_timeout_s + 30.0)
        except FutureTimeout as error:
            raise JobTimeoutError(
                f"the job did not finish within {self.job_timeout_s:g} s; it is being stopped"
            ) from error


def _make_handler(server: JobServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_S
        protocol_version = "HTTP/1.1"
        server_version = "gpu-jobs"

        def log_message(self, format: str, *args: Any) -> None:
            logger.info("%s %s", self.address_string(), format % args)

        def _send(self, status: HTTPStatus, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def _error(self, status: HTTPStatus, code: str, message: str, field: str | None = None, **extra: Any) -> None:
            headers = (
                {"Retry-After": "30"}
                if status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE)
                else None
            )
            self._send(status, {"error": {"code": code, "field": field, "message": message}, **extra}, headers)

        def do_GET(self) -> None:
            if self.path != "/ping":
                self._error(HTTPStatus.NOT_FOUND, "not_found", f"no route GET {self.path}; use /ping")
            elif server.ready.is_set() and server.runner is not None:
                self._send(HTTPStatus.OK, {"status": "ready", "model_version": server.runner.registry.model_version})
            elif server.load_error is not None:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "model_load_failed", server.load_error)
            else:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "loading"}, {"Retry-After": "10"})

        def do_POST(self) -> None:
            if self.path != "/invocations":
                self._error(HTTPStatus.NOT_FOUND, "not_found", f"no route POST {self.path}; use /invocations")
                return
            body = self._read_body()
            if body is None:
                return
            if not server.ready.is_set():
                self._error(HTTPStatus.SERVICE_UNAVAILABLE, "not_ready", server.load_error or "models are loading")
                return
            if json_too_deep(body):
                message = f"the JSON nests deeper than {MAX_JSON_DEPTH} levels; a JobRequest needs a few"
                self._error(HTTPStatus.BAD_REQUEST, "too_deep", message, field="body")
                return
            try:
                document = json.loads(body)
            except ValueError as error:  # bad JSON, bad UTF-8, an integer past Python's digit limit
                self._error(HTTPStatus.BAD_REQUEST, "bad_json", f"the body is not JSON: {_json_problem(error)}", "body")
                return
            except RecursionError:  # the depth check above should make this unreachable
                self._error(HTTPStatus.BAD_REQUEST, "too_deep", "the JSON nests too deeply", field="body")
                return
            try:
                request = JobRequest.model_validate(document)
            except ValidationError as error:
                problems = [
                    {"field": _field_path(item["loc"]), "message": item["msg"]}
                    for item in error.errors(include_url=False, include_input=False, include_context=False)
                ]
                first = problems[0]
                self._error(
                    HTTPStatus.UNPROCESSABLE_ENTITY, "bad_request", first["message"], first["field"], errors=problems
                )
                return
            try:
                result = server.invoke(request)
            except Exception as error:
                status = _status_for(error)
                if status == HTTPStatus.INTERNAL_SERVER_ERROR:
                    logger.exception("job %s failed", request.job_id)
                    # The details stay in the log: an unexpected error's text may carry what the job read.
                    message = f"{type(error).__name__} (the server log has the details)"
                else:
                    message = getattr(error, "message", None) or str(error)
                self._error(status, error_code(error), message, getattr(error, "field", None), job_id=request.job_id)
                return
            self._send(HTTPStatus.OK, result.model_dump(mode="json"))

        def _read_body(self) -> bytes | None:
            length_header = self.headers.get("Content-Length")
            if length_header is None:
                self._error(HTTPStatus.LENGTH_REQUIRED, "length_required", "send a Content-Length", field="body")
                return None
            if not _DECIMAL.match(length_header.strip()):
                # Unread, the body would be taken for the next request: answer and close.
                self.close_connection = True
                message = "Content-Length must be a non-negative decimal number of bytes"
                self._error(HTTPStatus.BAD_REQUEST, "bad_length", message, field="body")
                return None
            length = int(length_header)
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                self._error(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    "too_large",
                    f"the body is {length} bytes; at most {MAX_BODY_BYTES}",
                    field="body",
                )
                return None
            try:
                return self.rfile.read(length)
            except TimeoutError:
                self.close_connection = True
                self._error(HTTPStatus.REQUEST_TIMEOUT, "timeout", "the body did not arrive in time", field="body")
                return None

    return Handler


def _json_problem(error: ValueError) -> str:
    """Where the JSON broke, never the text around it."""
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    if isinstance(error, UnicodeDecodeError):
        return "it is not UTF-8 text"
    return str(error)


COMMERCIAL_ENV = "GPU_JOBS_COMMERCIAL"


def load_config(models: str) -> "ModelConfig":
    """'tiny' or a ModelConfig JSON; `$GPU_JOBS_COMMERCIAL=true` (set by the stack) makes the deployment commercial.

    The stricter setting wins: a model artefact cannot switch a commercial deployment's licence gate off.
    """
    from .config import ModelConfig

    config = ModelConfig.tiny() if models == "tiny" else ModelConfig.from_file(models)
    if os.environ.get(COMMERCIAL_ENV, "").strip().lower() == "true" and not config.commercial:
        logger.info("%s=true: refusing non-commercial weights although the model config allows them", COMMERCIAL_ENV)
        config = config.model_copy(update={"commercial": True})
    return config


def runner_factory(models: str, *, wait_s: float = 0.0) -> Callable[[], JobRunner]:
    """'tiny' or a path to a ModelConfig JSON -> a function that builds the registry and runner."""
    config = load_config(models)

    def load() -> JobRunner:
        from .models import ModelRegistry  # torch/diffusers import here, after the socket is up

        return JobRunner(ModelRegistry(config), wait_s=wait_s)

    return load


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gpu_jobs.serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", nargs="?", choices=["serve", "train"], help="SageMaker passes 'serve' (endpoint) or 'train' (job)"
    )
    parser.add_argument(
        "--models",
        default=os.environ.get("GPU_JOBS_MODELS", str(DEFAULT_CONFIG)),
        help="'tiny' or a ModelConfig JSON file (default: $GPU_JOBS_MODELS or %(default)s)",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="interface to listen on (default: %(default)s; the container: 0.0.0.0)"
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    parser.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DIR",
        help=f"a folder jobs may read and write under (repeatable; default: ${DATA_ROOTS_ENV})",
    )
    parser.add_argument(
        "--bucket",
        action="append",
        default=[],
        metavar="NAME",
        help=f"an S3 bucket jobs may read and write (repeatable; default: ${BUCKETS_ENV})",
    )
    parser.add_argument("--busy-wait-s", type=float, default=0.0, help="how long a second request may wait")
    parser.add_argument("--job-timeout-s", type=float, default=None, help="default: the config's job_timeout_s")
    return parser


def _env_list(value: str, separators: str) -> list[str]:
    return [item.strip() for item in re.split(f"[{re.escape(separators)}]", value) if item.strip()]


def storage_scope(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> storage.StorageScope:
    """The flags' roots and buckets, or the environment's where no flag of that kind is given."""
    env = os.environ if environ is None else environ
    roots = args.data_root or _env_list(env.get(DATA_ROOTS_ENV, ""), os.pathsep + ",")
    buckets = args.bucket or _env_list(env.get(BUCKETS_ENV, ""), ",")
    return storage.StorageScope.of(roots=roots, buckets=buckets)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":  # a SageMaker training job runs the same image with `train`
        from .training.sagemaker_train import main as train_main

        return train_main([])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.models != "tiny" and not Path(args.models).is_file():
        parser.error(f"model config not found: {args.models} (pass --models tiny or a ModelConfig JSON)")
    try:
        scope = storage_scope(args)
    except storage.StorageError as error:
        parser.error(str(error))
    config = load_config(args.models)
    server = JobServer(
        runner_factory(args.models, wait_s=args.busy_wait_s),
        host=args.host,
        port=args.port,
        busy_wait_s=args.busy_wait_s,
        job_timeout_s=args.job_timeout_s or config.job_timeout_s,
        scope=scope,
    )
    logger.info("listening on %s:%d; loading models (%s)", args.host, server.port, args.models)
    if not scope.roots and not scope.buckets:
        logger.warning(
            "no --data-root or --bucket (nor $%s / $%s): every job's files are refused", DATA_ROOTS_ENV, BUCKETS_ENV
        )
    else:
        logger.info("jobs may use %s", scope.describe())
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
