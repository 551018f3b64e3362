"""Scenario's official SDK (generated from their OpenAPI spec) referees the sandbox's answers, strictly.

The SDK parses leniently, so every raw answer is also checked field by field against the SDK's own
response types: required fields present, `Literal` enums respected, nested objects and lists too. The
only exceptions are the ones the API contract records from real captures.
"""

from __future__ import annotations

import base64
import io
import json
import types
import typing

import pydantic
import pytest
from PIL import Image

scenario_sdk = pytest.importorskip("scenario_sdk")
from scenario_sdk.types import (AssetRetrieveResponse, AssetUploadResponse, GenerateRunModelResponse,  # noqa: E402
                                JobListResponse, JobRetrieveResponse, JobTriggerActionResponse,
                                ModelListResponse, ModelRetrieveResponse)

from scenario_nb import sandbox as sandbox_mod  # noqa: E402

# Recorded from the real API (contract §4.1, §4.5, §5): list rows carry `trainingProgress: {}`, "Auto"
# resolution presets have no width/height, and a dry run (HTTP 269) has no `job`, although the SDK types
# all of these as required.
KNOWN_DEVIATIONS = (".trainingProgress.", "<dry-run>.job", ".resolutionComponent.presets[")


def problems(model: type, data, path: str = "") -> list[str]:
    """Every way `data` breaks the SDK's declared type `model` (empty when it conforms)."""
    found = []
    if not isinstance(data, dict):
        return [f"{path or '<root>'}: expected an object, got {type(data).__name__}"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        here = f"{path}.{key}" if path else key
        if key not in data:
            if field.is_required() and not any(d in here for d in KNOWN_DEVIATIONS):
                found.append(f"{here}: required field missing")
            continue
        found += check_type(field.annotation, data[key], here)
    return found


def check_type(annotation, value, path: str) -> list[str]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None:
        return [] if (type(None) in args or annotation is typing.Any) else [f"{path}: null not allowed"]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} not one of {args}"]
    if origin in (typing.Union, types.UnionType):
        results = [check_type(a, value, path) for a in args if a is not type(None)]
        return [] if any(not r for r in results) else min(results, key=len)
    if origin in (list, typing.List):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in check_type(args[0] if args else typing.Any, item,
                                                                     f"{path}[{i}]")]
    if origin in (dict, typing.Dict) or annotation in (dict, object, typing.Any):
        return []
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return problems(annotation, value, path)
    if annotation is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r}"]
    if annotation is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    if annotation in (int, float):
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{path}: expected a number"]
    return []


def conforms(model: type, response, items: str = "") -> dict:
    """Check a raw answer; for paged lists the SDK's type describes each item under `items`."""
    data = json.loads(response.http_response.content)
    issues = [p for i, row in enumerate(data[items]) for p in problems(model, row, f"{items}[{i}]")] if items \
        else problems(model, data)
    assert not issues, "\n".join(issues)
    response.parse()  # and the SDK itself accepts it
    return data


@pytest.fixture(scope="module")
def sb():
    with sandbox_mod.start(job_seconds=0.3, seed=21, list_lag=0) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(sb):
    return scenario_sdk.Scenario(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.url, max_retries=0)


def test_models_list_and_get(sdk):
    for privacy in ("private", "public"):
        data = conforms(ModelListResponse, sdk.models.with_raw_response.list(privacy=privacy, page_size=3), "models")
        assert data["models"] and "nextPaginationToken" in data
    page = sdk.models.list(privacy="public")
    for model in page.models:
        data = conforms(ModelRetrieveResponse, sdk.models.with_raw_response.retrieve(model.id))
        if data["model"]["custom"]:
            assert data["model"]["inputs"]


def test_generate_dry_run_jobs_cancel(sdk):
    model = "model_google-gemini-3-1-flash"
    dry = sdk.generate.with_raw_response.run_model(model, body={"prompt": "a cat", "numOutputs": 2}, dry_run="true")
    assert dry.http_response.status_code == 269
    data = json.loads(dry.http_response.content)
    assert "job" not in data and data["creativeUnitsCost"] > 0
    assert not [p for p in problems(GenerateRunModelResponse, data, "<dry-run>") if "<dry-run>.job" not in p]

    created = conforms(GenerateRunModelResponse, sdk.generate.with_raw_response.run_model(
        model, body={"prompt": "a cat", "aspectRatio": "16:9"}))
    job_id = created["job"]["jobId"]
    conforms(JobRetrieveResponse, sdk.jobs.with_raw_response.retrieve(job_id))
    conforms(JobListResponse, sdk.jobs.with_raw_response.list(page_size=5), "jobs")
    other = sdk.generate.run_model(model, body={"prompt": "to cancel"}).job.job_id
    with pytest.raises(scenario_sdk.BadRequestError) as refused:  # §6.5: generation jobs refuse cancel
        sdk.jobs.trigger_action(other, action="cancel")
    assert refused.value.body == {"reason": "Cannot cancel this type of job. Action not permitted."}
    import time
    for _ in range(100):
        job = sdk.jobs.retrieve(job_id).job
        if job.status == "success":
            break
        time.sleep(0.05)
    done = conforms(JobRetrieveResponse, sdk.jobs.with_raw_response.retrieve(job_id))
    asset_id = done["job"]["metadata"]["assetIds"][0]
    conforms(AssetRetrieveResponse, sdk.assets.with_raw_response.retrieve(asset_id))


def test_cancel_where_allowed(sb):
    with sandbox_mod.start(job_seconds=5, cancellable_types=("custom",)) as cancellable:
        sdk = scenario_sdk.Scenario(api_key=cancellable.api_key, api_secret=cancellable.api_secret,
                                    base_url=cancellable.url, max_retries=0)
        job_id = sdk.generate.run_model("model_google-gemini-3-1-flash", body={"prompt": "x"}).job.job_id
        canceled = conforms(JobTriggerActionResponse, sdk.jobs.with_raw_response.trigger_action(job_id,
                                                                                                 action="cancel"))
        assert canceled["job"]["status"] == "canceled"


def test_upload(sdk):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buf, format="PNG")
    data = conforms(AssetUploadResponse, sdk.assets.with_raw_response.upload(
        name="ref.png", image=base64.b64encode(buf.getvalue()).decode()))
    assert data["asset"]["source"] == "uploaded"


def test_lora_is_refused_as_the_real_api_does(sdk):
    with pytest.raises(scenario_sdk.BadRequestError) as info:
        sdk.generate.run_model("model_HeroKnightLoRA7aB3cD4eF5gH6j", body={"prompt": "x"})
    assert info.value.body == {"reason": "Custom models only are supported for this endpoint"}


def test_sdk_reads_the_base_url_from_the_environment(sb, monkeypatch):
    monkeypatch.setenv("SCENARIO_BASE_URL", sb.url)
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", sb.api_key)
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", sb.api_secret)
    assert scenario_sdk.Scenario().models.list().models
