"""The licence gate: a commercial deployment (or brand) refuses non-commercial weights, clearly."""

from pathlib import Path

import pytest

from gpu_jobs.config import ModelConfig, ModelSpec
from gpu_jobs.licences import LicenceError, check_licence
from gpu_jobs.models import ModelRegistry
from gpu_jobs.worker import JobRunner
from schemas import JobRequest

from .conftest import CANVAS, job_request_dict, write_cutout

CATVTON = ModelSpec(name="catvton", source="/opt/ml/model/catvton", licence="cc-by-nc-sa-4.0", commercial_use=False)
SDXL = ModelSpec(name="sdxl", source="tiny", licence="openrail++", commercial_use=True)


def test_check_licence_refuses_non_commercial_weights_only_when_commercial() -> None:
    with pytest.raises(LicenceError, match=r"catvton.*cc-by-nc-sa-4.0.*commercial"):
        check_licence(CATVTON, commercial=True)
    check_licence(CATVTON, commercial=False)
    check_licence(SDXL, commercial=True)
    # A spec that claims commercial use under a known non-commercial licence is refused too
    mislabelled = CATVTON.model_copy(update={"commercial_use": True})
    with pytest.raises(LicenceError):
        check_licence(mislabelled, commercial=True)


def test_a_commercial_registry_refuses_a_non_commercial_base() -> None:
    base = {"name": "nc-base", "source": "tiny", "licence": "cc-by-nc-4.0", "commercial_use": False}
    with pytest.raises(LicenceError, match="nc-base"):
        ModelRegistry(ModelConfig.tiny(base=base))
    assert ModelRegistry(ModelConfig.tiny(base=base, commercial=False)).is_tiny


def _lifestyle(tmp_path: Path, **params) -> JobRequest:
    return JobRequest.model_validate(
        job_request_dict(
            "lifestyle",
            {"cutout": write_cutout(tmp_path / "c.png").as_uri()},
            tmp_path / "o",
            params={"width": CANVAS, "height": CANVAS, "steps": 2, **params},
        )
    )


def test_a_non_commercial_controlnet_is_refused_at_use_with_a_clear_error(tmp_path) -> None:
    # Given a commercial deployment configured with a non-commercial depth ControlNet
    nc_depth = {"name": "nc-depth", "source": "tiny", "licence": "cc-by-nc-4.0", "commercial_use": False}
    runner = JobRunner(ModelRegistry(ModelConfig.tiny(controlnets={"depth": nc_depth})))
    # Then a job that asks for it fails with licence_refused, and one that does not still runs
    result = runner.run(_lifestyle(tmp_path, controlnet="depth"))
    assert result.status == "failed" and result.error is not None
    assert result.error.code == "licence_refused" and "nc-depth" in result.error.message
    assert runner.run(_lifestyle(tmp_path)).status == "succeeded"


def test_a_commercial_brand_on_a_non_commercial_deployment_is_refused(tmp_path) -> None:
    base = {"name": "nc-base", "source": "tiny", "licence": "cc-by-nc-4.0", "commercial_use": False}
    runner = JobRunner(ModelRegistry(ModelConfig.tiny(base=base, commercial=False)))
    refused = runner.run(_lifestyle(tmp_path, brand_profile={"brand": "acme", "commercial": True}))
    assert refused.error is not None and refused.error.code == "licence_refused"
    allowed = runner.run(_lifestyle(tmp_path, brand_profile={"brand": "acme", "commercial": False}))
    assert allowed.status == "succeeded"


def test_licence_refusal_over_http_is_403(tmp_path) -> None:
    from gpu_jobs import storage
    from gpu_jobs.serve import JobServer

    from .conftest import http

    nc_canny = {"name": "nc-canny", "source": "tiny", "licence": "cc-by-nc-4.0", "commercial_use": False}
    registry = ModelRegistry(ModelConfig.tiny(controlnets={"canny": nc_canny}))
    server = JobServer(lambda: JobRunner(registry), host="127.0.0.1", port=0, scope=storage.current_scope()).start()
    try:
        assert server.ready.wait(10)
        body = _lifestyle(tmp_path, controlnet="canny").model_dump_json().encode()
        status, answer = http(server.port, "POST", "/invocations", body)
        assert status == 403 and answer["error"]["code"] == "licence_refused"
    finally:
        server.stop()


def test_the_stack_commercial_flag_overrides_a_lenient_model_config(tmp_path, monkeypatch):
    # Given a model artefact whose config allows non-commercial weights
    from gpu_jobs.config import ModelConfig
    from gpu_jobs.serve import COMMERCIAL_ENV, load_config

    path = tmp_path / "model_config.json"
    path.write_text(ModelConfig.tiny(commercial=False).model_dump_json())
    assert load_config(str(path)).commercial is False
    # When the stack marks the deployment commercial
    monkeypatch.setenv(COMMERCIAL_ENV, "true")
    # Then the licence gate is on, whatever the artefact says
    assert load_config(str(path)).commercial is True
