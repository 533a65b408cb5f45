"""The GPU container reads and writes only under the roots and buckets it is given, and trusts no request.

The session's job server (conftest) may use the test session's temp folder and the `jobs` bucket; everything
here that is "elsewhere" lives outside both.
"""

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from gpu_jobs import serve, storage
from gpu_jobs.serve import JobServer
from gpu_jobs.worker import JobRunner

from .conftest import CANVAS, TEST_BUCKET, http, job_request_dict, write_cutout

LIFESTYLE_PARAMS = {"width": CANVAS, "height": CANVAS, "steps": 2}
SECRET = "Hunter2 Do-Not-Echo!"  # not a valid brand name either, so a profile holding it fails validation


@pytest.fixture
def elsewhere() -> Iterator[Path]:
    """A folder outside every root the servers and workers of these tests were given."""
    folder = Path(tempfile.mkdtemp(prefix="gpu-jobs-elsewhere-")).resolve()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _lifestyle(inputs: dict[str, str], output_prefix: Path | str, **fields: object) -> dict:
    return job_request_dict("lifestyle", inputs, output_prefix, params=dict(LIFESTYLE_PARAMS), **fields)


def _assert_refused(status: int, body: dict, field: str) -> None:
    assert status == 403, body
    assert body["error"]["code"] == "uri_refused" and body["error"]["field"] == field, body


# ---- reads -------------------------------------------------------------------------------------------------------
def test_a_system_file_is_refused_without_its_contents(invoke, tmp_path: Path) -> None:
    # Given a request whose cutout is /etc/passwd
    payload = _lifestyle({"cutout": "file:///etc/passwd"}, tmp_path / "out")
    # When it is POSTed
    status, body = invoke(payload)
    # Then it is refused naming the field, and nothing of the file comes back
    _assert_refused(status, body, "inputs.cutout")
    assert "root:" not in json.dumps(body)


def test_a_symlink_inside_a_root_pointing_outside_is_refused(invoke, tmp_path: Path, elsewhere: Path) -> None:
    # Given a valid cutout outside the roots, reached through a symlink inside them
    write_cutout(elsewhere / "cutout.png")
    (tmp_path / "link").symlink_to(elsewhere, target_is_directory=True)
    payload = _lifestyle({"cutout": (tmp_path / "link" / "cutout.png").as_uri()}, tmp_path / "out")
    # When it is POSTed
    status, body = invoke(payload)
    # Then the resolved path decides: refused
    _assert_refused(status, body, "inputs.cutout")


def test_dot_dot_cannot_climb_out_of_a_root(invoke, tmp_path: Path, elsewhere: Path) -> None:
    # Given a cutout URI that starts inside a root and climbs out with '..'
    write_cutout(elsewhere / "cutout.png")
    climbing = tmp_path.as_uri() + "/.." * len(tmp_path.parts) + str(elsewhere / "cutout.png")
    # When it is POSTed
    status, body = invoke(_lifestyle({"cutout": climbing}, tmp_path / "out"))
    # Then it is refused
    _assert_refused(status, body, "inputs.cutout")


def test_files_inside_the_roots_still_work(invoke, tmp_path: Path) -> None:
    # Given a cutout and an output prefix inside the roots
    payload = _lifestyle({"cutout": write_cutout(tmp_path / "cutout.png").as_uri()}, tmp_path / "out")
    # Then the job runs as before
    status, body = invoke(payload)
    assert status == 200, body
    assert (tmp_path / "out" / "result.json").is_file()


# ---- writes ------------------------------------------------------------------------------------------------------
def test_an_output_prefix_outside_the_roots_is_refused_and_creates_nothing(
    invoke, tmp_path: Path, elsewhere: Path
) -> None:
    # Given a valid job whose output prefix is a new folder outside the roots
    cutout = write_cutout(tmp_path / "cutout.png").as_uri()
    payload = _lifestyle({"cutout": cutout}, (elsewhere / "new" / "deeper").as_uri() + "/")
    # When it is POSTed
    status, body = invoke(payload)
    # Then it is refused and no folder was created
    _assert_refused(status, body, "output_prefix")
    assert list(elsewhere.iterdir()) == []


def test_an_existing_result_json_elsewhere_is_untouched(invoke, tmp_path: Path, elsewhere: Path) -> None:
    # Given a result.json outside the roots
    (elsewhere / "result.json").write_text("keep me")
    cutout = write_cutout(tmp_path / "cutout.png").as_uri()
    # When a job names its folder as the output prefix
    status, body = invoke(_lifestyle({"cutout": cutout}, elsewhere))
    # Then it is refused, and the file is as it was, with nothing beside it
    _assert_refused(status, body, "output_prefix")
    assert (elsewhere / "result.json").read_text() == "keep me"
    assert [path.name for path in elsewhere.iterdir()] == ["result.json"]


def test_an_output_prefix_through_a_symlink_is_refused(invoke, tmp_path: Path, elsewhere: Path) -> None:
    # Given an output prefix inside a root that is a symlink to a folder outside
    (tmp_path / "out-link").symlink_to(elsewhere, target_is_directory=True)
    cutout = write_cutout(tmp_path / "cutout.png").as_uri()
    # When the job runs
    status, body = invoke(_lifestyle({"cutout": cutout}, tmp_path / "out-link" / "job"))
    # Then nothing is written outside
    _assert_refused(status, body, "output_prefix")
    assert list(elsewhere.iterdir()) == []


# ---- brand profiles ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["try_on", "lifestyle"])
def test_a_brand_profile_outside_the_roots_is_refused_without_its_values(
    invoke, tmp_path: Path, elsewhere: Path, kind: str
) -> None:
    # Given a "brand profile" that is someone's secrets file outside the roots
    secret = elsewhere / "secret.json"
    secret.write_text(json.dumps({"brand": "acme", "api_key": SECRET}))
    garment = write_cutout(tmp_path / "garment.png").as_uri()
    inputs = {"garment" if kind == "try_on" else "cutout": garment, "brand_profile": secret.as_uri()}
    payload = job_request_dict(kind, inputs, tmp_path / "out", category="tops", params=dict(LIFESTYLE_PARAMS))
    # When it is POSTed
    status, body = invoke(payload)
    # Then it is refused naming the field, with none of the file's values
    _assert_refused(status, body, "inputs.brand_profile")
    assert SECRET not in json.dumps(body)


@pytest.mark.parametrize("kind", ["try_on", "lifestyle"])
def test_an_invalid_brand_profile_reports_field_paths_not_values(invoke, tmp_path: Path, kind: str) -> None:
    # Given a brand profile inside the roots whose values are wrong (and secret)
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"brand": SECRET, "trigger_token": {"token": SECRET}}))
    garment = write_cutout(tmp_path / "garment.png").as_uri()
    inputs = {"garment" if kind == "try_on" else "cutout": garment, "brand_profile": profile.as_uri()}
    payload = job_request_dict(kind, inputs, tmp_path / "out", category="tops", params=dict(LIFESTYLE_PARAMS))
    # When it is POSTed
    status, body = invoke(payload)
    # Then the caller learns which fields are wrong, and none of their values
    assert status == 422, body
    assert body["error"]["field"].startswith("inputs.brand_profile"), body
    assert SECRET not in json.dumps(body)


def test_a_brand_profile_in_params_is_reported_without_values(invoke, tmp_path: Path) -> None:
    # Given a try-on whose brand profile object has a bad value
    garment = write_cutout(tmp_path / "garment.png").as_uri()
    params = {"brand_profile": {"brand": SECRET}}
    payload = job_request_dict("try_on", {"garment": garment}, tmp_path / "out", category="tops", params=params)
    # Then the error names the field only
    status, body = invoke(payload)
    assert status == 422 and body["error"]["field"].startswith("params.brand_profile"), body
    assert SECRET not in json.dumps(body)


def test_a_lora_outside_the_roots_is_refused(invoke, tmp_path: Path, elsewhere: Path) -> None:
    # Given a brand profile naming an adapter outside the roots
    (elsewhere / "lora.safetensors").write_bytes(b"not really")
    params = {
        **LIFESTYLE_PARAMS,
        "brand_profile": {
            "brand": "acme",
            "adapters": [{"name": "x", "uri": (elsewhere / "lora.safetensors").as_uri()}],
        },
    }
    cutout = write_cutout(tmp_path / "cutout.png").as_uri()
    status, body = invoke(job_request_dict("lifestyle", {"cutout": cutout}, tmp_path / "out", params=params))
    # Then the adapter's field is named and it is refused
    _assert_refused(status, body, "brand_profile.adapters.x.uri")


def test_a_model_library_photo_outside_the_roots_is_refused(invoke, tmp_path: Path, elsewhere: Path) -> None:
    # Given a brand model library photo outside the roots
    write_cutout(elsewhere / "model.png")
    profile = {
        "brand": "acme",
        "model_library": [{"model_id": "m1", "uri": (elsewhere / "model.png").as_uri(), "body_regions": ["tops"]}],
    }
    garment = write_cutout(tmp_path / "garment.png").as_uri()
    payload = job_request_dict(
        "try_on", {"garment": garment}, tmp_path / "out", category="tops", params={"brand_profile": profile}
    )
    status, body = invoke(payload)
    _assert_refused(status, body, "brand_profile.model_library.m1")


# ---- S3 -----------------------------------------------------------------------------------------------------------
def test_only_the_configured_buckets_are_used(invoke, tmp_path: Path) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        cutout = write_cutout(tmp_path / "cutout.png").read_bytes()
        for bucket in (TEST_BUCKET, "someone-elses"):
            s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket=bucket, Key="in/cutout.png", Body=cutout)
        # Given requests reading from, or writing to, a bucket the server was not given
        read_status, read_body = invoke(_lifestyle({"cutout": "s3://someone-elses/in/cutout.png"}, tmp_path / "a"))
        write_status, write_body = invoke(
            _lifestyle({"cutout": f"s3://{TEST_BUCKET}/in/cutout.png"}, "s3://someone-elses/out/")
        )
        # And one that stays in the configured bucket
        ok_status, ok_body = invoke(
            _lifestyle({"cutout": f"s3://{TEST_BUCKET}/in/cutout.png"}, f"s3://{TEST_BUCKET}/out/")
        )
        written_elsewhere = s3.list_objects_v2(Bucket="someone-elses", Prefix="out/").get("KeyCount", 0)
        written_ours = s3.list_objects_v2(Bucket=TEST_BUCKET, Prefix="out/").get("KeyCount", 0)
    # Then the other bucket is refused both ways, and nothing was written there
    _assert_refused(read_status, read_body, "inputs.cutout")
    _assert_refused(write_status, write_body, "output_prefix")
    assert written_elsewhere == 0
    # And the configured bucket works
    assert ok_status == 200, ok_body
    assert written_ours > 0


# ---- the HTTP layer ------------------------------------------------------------------------------------------------
def test_the_server_binds_loopback_by_default(tiny_registry) -> None:
    # Given a server and a CLI started without --host
    server = JobServer(lambda: JobRunner(tiny_registry), port=0).start()
    try:
        # Then both listen on loopback only
        assert server._httpd.server_address[0] == "127.0.0.1"
    finally:
        server.stop()
    assert serve.build_parser().parse_args([]).host == "127.0.0.1"
    # And the container passes 0.0.0.0 explicitly (SageMaker calls it on its interface)
    dockerfile = (Path(serve.__file__).parent / "Dockerfile").read_text()
    assert '"--host", "0.0.0.0"' in dockerfile


def test_roots_and_buckets_come_from_flags_or_the_environment(tmp_path: Path) -> None:
    parser = serve.build_parser()
    # Given nothing configured, nothing is allowed
    empty = serve.storage_scope(parser.parse_args([]), environ={})
    assert empty.roots == () and empty.buckets == frozenset()
    # Given the environment
    environ = {
        "GPU_JOBS_DATA_ROOTS": f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}",
        "GPU_JOBS_BUCKETS": "work-bucket, brands-bucket",
    }
    scope = serve.storage_scope(parser.parse_args([]), environ=environ)
    assert scope.roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert scope.buckets == {"work-bucket", "brands-bucket"}
    # Given flags, they are used (repeatable)
    args = parser.parse_args(["--data-root", str(tmp_path / "c"), "--bucket", "x-bucket", "--bucket", "y-bucket"])
    scope = serve.storage_scope(args, environ={})
    assert scope.roots == ((tmp_path / "c").resolve(),) and scope.buckets == {"x-bucket", "y-bucket"}


def test_a_deeply_nested_document_is_a_400(job_server: JobServer) -> None:
    # Given a JSON document nested 100,000 deep (json's recursion would blow up)
    deep = b"[" * 100_000 + b"]" * 100_000
    # When it is POSTed
    status, body = http(job_server.port, "POST", "/invocations", deep, timeout=30)
    # Then the answer is a 400 saying so, and the server still answers
    assert status == 400 and body["error"]["code"] == "too_deep" and body["error"]["field"] == "body"
    assert http(job_server.port, "GET", "/ping")[0] == 200


def test_nesting_inside_strings_does_not_count(invoke, tmp_path: Path) -> None:
    # Given a valid request with many brackets and escaped quotes inside a string value
    payload = _lifestyle({"cutout": write_cutout(tmp_path / "cutout.png").as_uri()}, tmp_path / "out")
    payload["params"]["prompt"] = '[{"\\' * 200
    status, body = invoke(payload)
    assert status == 200, body


@pytest.mark.parametrize("length", ["-1", "abc", "1_0", "0x10", "+2"])
def test_a_bad_content_length_is_a_400(job_server: JobServer, length: str) -> None:
    # Given a request with a Content-Length that is not a non-negative decimal number
    connection = HTTPConnection("127.0.0.1", job_server.port, timeout=10)
    try:
        connection.putrequest("POST", "/invocations", skip_accept_encoding=True)
        connection.putheader("Content-Length", length)
        connection.endheaders(b"{}")
        # Then the answer is 400 naming the body, at once
        response = connection.getresponse()
        assert response.status == 400
        assert json.loads(response.read())["error"]["code"] == "bad_length"
    finally:
        connection.close()


# ---- the in-process worker -----------------------------------------------------------------------------------------
def test_the_in_process_worker_is_confined_to_its_roots(tmp_path: Path, elsewhere: Path) -> None:
    from functions.adapters.local.gpu_worker import InProcessGpuWorker
    from schemas import JobRequest

    root = tmp_path / "run"
    cutout = write_cutout(root / "cutout.png").as_uri()
    write_cutout(elsewhere / "cutout.png")
    worker = InProcessGpuWorker("tiny", data_roots=(root,))

    def run(inputs: dict[str, str], prefix: Path) -> object:
        return worker.run(JobRequest.model_validate(_lifestyle(inputs, prefix)))

    # Given the worker's own root: the job runs
    assert run({"cutout": cutout}, root / "out").status == "succeeded"  # type: ignore[attr-defined]
    # Given a file outside it: a failed result naming the field, no contents
    outside = run({"cutout": (elsewhere / "cutout.png").as_uri()}, root / "out2")
    assert outside.status == "failed" and outside.error.code == "uri_refused"  # type: ignore[attr-defined]
    assert "inputs.cutout" in outside.error.message  # type: ignore[attr-defined]
    # Given an output prefix outside it: failed, and nothing is written there
    refused = run({"cutout": cutout}, elsewhere / "out")
    assert refused.status == "failed" and refused.error.code == "uri_refused"  # type: ignore[attr-defined]
    assert [path.name for path in elsewhere.iterdir()] == ["cutout.png"]


def test_the_in_process_worker_without_roots_reads_nothing(tmp_path: Path) -> None:
    from functions.adapters.local.gpu_worker import InProcessGpuWorker
    from schemas import JobRequest

    # Given a worker given no roots (fail closed)
    worker = InProcessGpuWorker("tiny")
    request = JobRequest.model_validate(
        _lifestyle({"cutout": write_cutout(tmp_path / "cutout.png").as_uri()}, tmp_path / "out")
    )
    # Then even a plain file is refused, and nothing is written
    result = worker.run(request)
    assert result.status == "failed" and result.error is not None and result.error.code == "uri_refused"
    assert not (tmp_path / "out").exists()


# ---- storage itself ------------------------------------------------------------------------------------------------
def test_a_scope_belongs_to_the_thread_that_installed_it(tmp_path: Path) -> None:
    # Given a file readable in this thread's scope
    (tmp_path / "a.txt").write_bytes(b"a")
    uri = (tmp_path / "a.txt").as_uri()
    assert storage.read_bytes(uri) == b"a"
    # When another thread reads it without installing a scope of its own
    errors: list[BaseException] = []

    def read() -> None:
        try:
            storage.read_bytes(uri)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(10)
    # Then it is refused: scopes do not leak between threads (the server runs one job per thread)
    assert len(errors) == 1 and isinstance(errors[0], storage.UriRefusedError)


def test_a_nul_byte_or_a_bad_bucket_is_refused_cleanly(tmp_path: Path) -> None:
    with pytest.raises(storage.StorageError):
        storage.read_bytes(tmp_path.as_uri() + "/a%00b")
    with storage.confined(storage.StorageScope.of(roots=[tmp_path], buckets=["jobs"])):
        with pytest.raises(storage.UriRefusedError):
            storage.read_bytes("s3://other/key")
        with pytest.raises(storage.UriRefusedError):
            storage.write_bytes("file:///tmp/x-should-not-exist/a.bin", b"x")
    assert not Path("/tmp/x-should-not-exist").exists()
