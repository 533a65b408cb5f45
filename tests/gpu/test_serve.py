"""The SageMaker contract over HTTP: /ping readiness, JSON errors naming the field, one job at a time."""

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gpu_jobs import storage, worker
from gpu_jobs.config import ModelConfig
from gpu_jobs.models import ModelRegistry
from gpu_jobs.serve import JobServer
from gpu_jobs.worker import JobRunner
from schemas import JobRequest, JobResult

from .conftest import CANVAS, http, job_request_dict, write_cutout

LIFESTYLE_PARAMS = {"width": CANVAS, "height": CANVAS, "steps": 2}


def test_ping_is_503_while_loading_and_200_once_ready(tiny_registry: ModelRegistry) -> None:
    # Given a server whose models are still loading
    release = threading.Event()

    def slow_load() -> JobRunner:
        release.wait(30)
        return JobRunner(tiny_registry)

    server = JobServer(slow_load, host="127.0.0.1", port=0).start()
    try:
        # Then /ping and /invocations say "not ready" instead of hanging
        assert http(server.port, "GET", "/ping")[0] == 503
        status, body = http(server.port, "POST", "/invocations", b"{}")
        assert status == 503 and body["error"]["code"] == "not_ready"
        # When loading finishes, /ping turns 200 and names the model
        release.set()
        assert server.ready.wait(10)
        status, body = http(server.port, "GET", "/ping")
        assert status == 200 and body["model_version"] == tiny_registry.model_version
    finally:
        release.set()
        server.stop()


def test_ping_reports_a_failed_load_as_500() -> None:
    # Given model loading that fails
    def broken_load() -> JobRunner:
        raise FileNotFoundError("model 'sdxl': local weights not found at /nowhere")

    server = JobServer(broken_load, host="127.0.0.1", port=0).start()
    try:
        deadline = time.monotonic() + 10
        while server.load_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        # Then /ping fails with the reason, so the deployment's health check shows it
        status, body = http(server.port, "GET", "/ping")
        assert status == 500 and "/nowhere" in body["error"]["message"]
    finally:
        server.stop()


def test_lifestyle_request_round_trips_and_writes_result_json(invoke, tmp_path: Path) -> None:
    # Given a lifestyle request with a file:// cutout
    cutout = write_cutout(tmp_path / "in" / "cutout.png")
    payload = job_request_dict(
        "lifestyle", {"cutout": cutout.as_uri()}, tmp_path / "out", seed=11, variations=2, params=LIFESTYLE_PARAMS
    )
    # When it is POSTed to /invocations
    status, body = invoke(payload)
    # Then the answer is the JobResult: outputs with seeds, model version, timings
    assert status == 200, body
    result = JobResult.model_validate(body)
    assert result.status == "succeeded" and result.job_id == payload["job_id"]
    assert [output.seed for output in result.outputs] == [11, 12]
    assert result.model_version == "tiny-random-sdxl@seed0"
    assert result.timings_s["total"] > 0 and "generate" in result.timings_s
    assert "noise" in result.outputs[0].details["note"]
    # And result.json under the output prefix holds the same record
    assert JobResult.model_validate_json((tmp_path / "out" / "result.json").read_text()) == result


@pytest.mark.parametrize(
    ("mutate", "status", "field"),
    [
        (lambda p: p.pop("job_id"), 422, "job_id"),
        (lambda p: p.update(kind="teleport"), 422, "kind"),
        (lambda p: p.update(inputs={"cutout": "http://example.com/a.png"}), 422, "inputs.cutout"),
        (lambda p: p.update(variations=99), 422, "variations"),
        (lambda p: p.update(extra_field=1), 422, "extra_field"),
        # outside the server's data roots: refused (403) before it is even looked for
        (lambda p: p.update(inputs={"cutout": "file:///no/such/cutout.png"}), 403, "inputs.cutout"),
        (lambda p: p.update(inputs={}), 422, "inputs.cutout"),
        (lambda p: p["params"].update(steps=0), 422, "params.steps"),
        (lambda p: p["params"].update(mode="video"), 422, "params.mode"),
        (lambda p: p["params"].update(layout={"anchor": "sky"}), 422, "params.layout.anchor"),
        (lambda p: p["params"].update(brand_profile={"brand": "Not Valid!"}), 422, "params.brand_profile.brand"),
        (lambda p: p.update(kind="packshot"), 501, None),
    ],
)
def test_bad_requests_get_a_json_error_naming_the_field(invoke, tmp_path: Path, mutate, status, field) -> None:
    # Given a valid lifestyle request, spoiled in one way
    payload = job_request_dict(
        "lifestyle",
        {"cutout": write_cutout(tmp_path / "cutout.png").as_uri()},
        tmp_path / "out",
        params=dict(LIFESTYLE_PARAMS),
    )
    mutate(payload)
    # When it is POSTed
    got_status, body = invoke(payload)
    # Then the status is a 4xx/5xx with a JSON error that names the field
    assert got_status == status, body
    assert body["error"]["field"] == field
    assert body["error"]["message"]


def test_unreadable_input_file_is_a_422_on_that_input(invoke, tmp_path: Path) -> None:
    # Given a "cutout" that is not an image
    not_an_image = tmp_path / "cutout.png"
    not_an_image.write_bytes(b"this is not a PNG")
    payload = job_request_dict(
        "lifestyle", {"cutout": not_an_image.as_uri()}, tmp_path / "out", params=LIFESTYLE_PARAMS
    )
    # Then the error names inputs.cutout, and a failed result.json is left for the caller
    status, body = invoke(payload)
    assert status == 422 and body["error"]["field"] == "inputs.cutout"
    # And a missing file inside the roots is the caller's error too (422, not a refusal)
    payload["inputs"] = {"cutout": (tmp_path / "missing.png").as_uri()}
    status, body = invoke(payload)
    assert status == 422 and body["error"]["field"] == "inputs.cutout", body


def test_bad_json_and_bad_routes(job_server: JobServer) -> None:
    status, body = http(job_server.port, "POST", "/invocations", b"{not json")
    assert status == 400 and body["error"]["field"] == "body"
    status, body = http(job_server.port, "POST", "/invocations", b"[1, 2]")
    assert status == 422
    assert http(job_server.port, "GET", "/nope")[0] == 404
    assert http(job_server.port, "POST", "/ping", b"{}")[0] == 404


def test_oversized_body_is_refused_without_reading_it(job_server: JobServer) -> None:
    import http.client
    import json

    # Given a request that announces a 2 MiB body (a JobRequest is a few hundred bytes)
    connection = http.client.HTTPConnection("127.0.0.1", job_server.port, timeout=10)
    connection.putrequest("POST", "/invocations")
    connection.putheader("Content-Length", str(2 << 20))
    connection.endheaders()
    # Then it is refused at once with 413, before the body is sent
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["field"] == "body"
    connection.close()


def _blocking_recipe(entered: threading.Event, release: threading.Event):
    def recipe(request: JobRequest, registry: ModelRegistry) -> JobResult:
        entered.set()
        release.wait(30)
        return JobResult(job_id=request.job_id, kind=request.kind, status="succeeded")

    return recipe


def test_a_second_concurrent_job_is_refused_with_429(tiny_registry, monkeypatch, tmp_path: Path) -> None:
    # Given a server with no waiting allowed, and a first job that holds the GPU
    entered, release = threading.Event(), threading.Event()
    monkeypatch.setattr(worker, "load_recipe", lambda kind: _blocking_recipe(entered, release))
    server = JobServer(
        lambda: JobRunner(tiny_registry), host="127.0.0.1", port=0, busy_wait_s=0, scope=storage.current_scope()
    ).start()
    assert server.ready.wait(10)
    payload = job_request_dict("lifestyle", {}, tmp_path / "a")
    first: list[int] = []
    thread = threading.Thread(target=lambda: first.append(http(server.port, "POST", "/invocations", _json(payload))[0]))
    try:
        thread.start()
        assert entered.wait(10)
        # When a second job arrives meanwhile
        status, body = http(
            server.port, "POST", "/invocations", _json(job_request_dict("lifestyle", {}, tmp_path / "b"))
        )
        # Then it is refused at once, clearly, and /ping still answers
        assert status == 429 and body["error"]["code"] == "busy" and "one at a time" in body["error"]["message"]
        assert http(server.port, "GET", "/ping")[0] == 200
    finally:
        release.set()
        thread.join(30)
        server.stop()
    # And the first job completes normally
    assert first == [200]


def test_a_second_job_waits_its_turn_within_the_bounded_wait(tiny_registry, monkeypatch, tmp_path: Path) -> None:
    # Given a server that lets a second job wait up to 20 s
    entered, release = threading.Event(), threading.Event()
    monkeypatch.setattr(worker, "load_recipe", lambda kind: _blocking_recipe(entered, release))
    server = JobServer(
        lambda: JobRunner(tiny_registry), host="127.0.0.1", port=0, busy_wait_s=20, scope=storage.current_scope()
    ).start()
    assert server.ready.wait(10)
    results: list[int] = []

    def post(name: str) -> None:
        results.append(
            http(server.port, "POST", "/invocations", _json(job_request_dict("lifestyle", {}, tmp_path / name)))[0]
        )

    threads = [threading.Thread(target=post, args=(name,)) for name in ("a", "b")]
    try:
        threads[0].start()
        assert entered.wait(10)
        threads[1].start()
        time.sleep(0.3)
        # When the first job finishes
        release.set()
        for thread in threads:
            thread.join(30)
    finally:
        release.set()
        server.stop()
    # Then both succeed, one after the other
    assert results == [200, 200]


def test_a_job_past_its_deadline_is_stopped_with_504(monkeypatch, tmp_path: Path) -> None:
    # Given a registry with a very short job limit, and a recipe that keeps stepping
    registry = ModelRegistry(ModelConfig.tiny(job_timeout_s=0.2))

    def endless(request: JobRequest, registry: ModelRegistry) -> JobResult:
        while True:
            registry.step_callback(None, 0, 0, {})
            time.sleep(0.01)

    monkeypatch.setattr(worker, "load_recipe", lambda kind: endless)
    server = JobServer(lambda: JobRunner(registry), host="127.0.0.1", port=0, scope=storage.current_scope()).start()
    try:
        assert server.ready.wait(10)
        status, body = http(server.port, "POST", "/invocations", _json(job_request_dict("lifestyle", {}, tmp_path)))
        # Then the caller gets a timeout error instead of a hang, and the GPU is free again
        assert status == 504 and body["error"]["code"] == "timeout"
        assert not server.runner.busy  # type: ignore[union-attr]
    finally:
        server.stop()


def test_serve_cli_with_tiny_models_serves_lifestyle(tmp_path: Path) -> None:
    # Given the server started as a user would: python -m gpu_jobs.serve --models tiny --port N --data-root DIR
    # (no --host: it listens on 127.0.0.1 by default)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path / "server.log"  # a file, not a pipe: an unread pipe would fill and block the server
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpu_jobs.serve",
                "--models",
                "tiny",
                "--port",
                f"{port}",
                f"--data-root={tmp_path}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        status = 0
        while time.monotonic() < deadline and status != 200:
            with contextlib.suppress(OSError):
                status = http(port, "GET", "/ping", timeout=5)[0]
            if process.poll() is not None:
                pytest.fail(f"server exited: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        assert status == 200
        # When a lifestyle request is POSTed
        payload = job_request_dict(
            "lifestyle",
            {"cutout": write_cutout(tmp_path / "c.png").as_uri()},
            tmp_path / "out",
            params=LIFESTYLE_PARAMS,
        )
        status, body = http(port, "POST", "/invocations", _json(payload))
        # Then it succeeds and the image is on disk
        assert status == 200, body
        assert Path(body["outputs"][0]["uri"].removeprefix("file://")).is_file()
    finally:
        process.terminate()
        process.wait(30)


def _json(payload: dict) -> bytes:
    import json

    return json.dumps(payload).encode()
