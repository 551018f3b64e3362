"""Scenario's official SDK (generated from their OpenAPI spec) referees the sandbox's answers, strictly.

The SDK parses leniently, so every raw answer is also checked field by field against the SDK's own
response types: required fields present, `Literal` enums respected, nested objects and lists too. The
only exceptions are the ones the API contract records from real captures.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import re
import time
import types
import typing

import pydantic
import pytest
from PIL import Image

from conftest import Clock, require

scenario_sdk = require("scenario_sdk")  # under CI a missing SDK fails the run
from scenario_sdk.types import (AssetRetrieveResponse, AssetUpdateResponse, AssetUploadResponse,  # noqa: E402
                                GenerateCaptionResponse, GenerateDescribeStyleResponse, GeneratePromptResponse,
                                GenerateRunModelResponse, GenerateTranslateResponse,
                                JobListResponse, JobRetrieveResponse, JobTriggerActionResponse, ModelCreateResponse,
                                ModelListResponse, ModelRetrieveResponse, ModelUpdateResponse, WorkflowListResponse,
                                WorkflowRetrieveResponse, WorkflowRunResponse)
from scenario_sdk.types.models import (ScoreRetrieveTrainingDatasetResponse, TrainActionResponse,  # noqa: E402
                                       TrainingImageAddResponse, TrainingImageReplacePairsResponse,
                                       TrainTriggerResponse)

from scenario_nb import sandbox as sandbox_mod  # noqa: E402


def _empty(obj: dict) -> bool:
    return obj == {}


def _label_only(obj: dict) -> bool:
    return set(obj) == {"label"}


def _cost_only(obj: dict) -> bool:
    return set(obj) == {"creativeUnitsCost", "creativeUnitsDiscount", "costDetails"}


# Recorded from the real API (contract §4.1, §4.5, §5), and nothing else: a model's `trainingProgress` can be
# the empty object `{}` (no stage, no updatedAt), an "Auto" resolution preset is only a label, and a dry run
# (HTTP 269) has no `job` — although the SDK types all of these as required. Exact paths (list indices as
# `[]`), each exempt only when the object holding it is exactly the recorded shape. A dry run carries the cost
# and nothing else (§5, §12b.3, §12d.3, §12d.7): no `model` for a training, no `captions` / `prompts`.
KNOWN_DEVIATIONS = {
    **{f"{where}trainingProgress.{key}": _empty for where in ("models[].", "model.")
       for key in ("stage", "updatedAt")},
    **{f"model.uiConfig.resolutionComponent.presets[].{key}": _label_only for key in ("width", "height")},
    "<dry-run>.job": lambda obj: True,
    **{f"<dry-run>.{key}": _cost_only for key in ("model", "captions", "prompts", "description", "synthesis",
                                                  "translation", "detectedLanguage")},
}


def problems(model: type, data, path: str = "") -> list[str]:
    """Every way `data` breaks the SDK's declared type `model` (empty when it conforms)."""
    found = []
    if not isinstance(data, dict):
        return [f"{path or '<root>'}: expected an object, got {type(data).__name__}"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        here = f"{path}.{key}" if path else key
        if key not in data:
            exempt = KNOWN_DEVIATIONS.get(re.sub(r"\[\d+\]", "[]", here))
            if field.is_required() and not (exempt and exempt(data)):
                found.append(f"{here}: required field missing")
            continue
        found += check_type(field.annotation, data[key], here)
    return found


def check_type(annotation, value, path: str) -> list[str]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return check_type(args[0], value, path)
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
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        return [p for k, v in value.items() for p in check_type(args[1] if args else typing.Any, v, f"{path}.{k}")]
    if annotation in (object, typing.Any):
        return []
    if annotation is dict:
        return [] if isinstance(value, dict) else [f"{path}: expected an object"]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return problems(annotation, value, path)
    if annotation is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r}"]
    if annotation is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    if annotation in (int, float):
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{path}: expected a number"]
    if annotation is datetime.datetime:
        ok = isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value)
        return [] if ok else [f"{path}: expected an ISO date like 2026-09-01T10:00:00.120Z, got {value!r}"]
    return [f"{path}: the referee cannot check {annotation!r}"]


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
    with sandbox_mod.start(job_seconds=0.3, seed=21, list_lag=0, max_parallel_jobs=8) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(sb):
    return scenario_sdk.Scenario(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.url, max_retries=0)


def error_body(exc) -> dict:
    """Error answers are `{"reason": str}` plus, on 429s, the recorded extras; nothing else."""
    body = exc.body
    assert isinstance(body, dict) and isinstance(body.get("reason"), str) and body["reason"], body
    assert set(body) <= {"reason", "actionName", "actionLimit", "remainingSeconds"}, body
    return body


def every_page(call, items: str, model: type, **params) -> list:
    rows, token = [], None
    while True:
        data = conforms(model, call(**params, **({"pagination_token": token} if token else {})), items)
        rows += data[items]
        token = data.get("nextPaginationToken")
        if not token:
            return rows


def test_every_model_listed_and_detailed(sdk):
    private = every_page(sdk.models.with_raw_response.list, "models", ModelListResponse, privacy="private",
                         page_size=3)
    public = every_page(sdk.models.with_raw_response.list, "models", ModelListResponse, privacy="public",
                        page_size=500)
    assert len(public) > 500 and any(m["status"] == "training" for m in private)
    for row in private + public:
        data = conforms(ModelRetrieveResponse, sdk.models.with_raw_response.retrieve(row["id"]))
        if data["model"]["custom"]:
            assert data["model"]["inputs"]


def wait_success(sdk, job_id: str, clock=None) -> dict:
    """Read the job until it ends: on the sandbox's own time, or by moving the test's frozen `clock`."""
    seen = set()
    for _ in range(200):
        data = conforms(JobRetrieveResponse, sdk.jobs.with_raw_response.retrieve(job_id))  # every state on the way
        seen.add(data["job"]["status"])
        if data["job"]["status"] in ("success", "failure", "canceled"):
            return data["job"]
        if clock is None:
            time.sleep(0.03)
        else:
            clock.now += 0.03
    raise AssertionError(f"job never ended (saw {seen})")


def upload(sdk) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buf, format="PNG")
    data = conforms(AssetUploadResponse, sdk.assets.with_raw_response.upload(
        name="ref.png", image=base64.b64encode(buf.getvalue()).decode()))
    assert data["asset"]["source"] == "uploaded"
    conforms(AssetRetrieveResponse, sdk.assets.with_raw_response.retrieve(data["asset"]["id"]))
    return data["asset"]["id"]


@pytest.mark.parametrize("model, body, kinds", [
    ("model_google-gemini-3-1-flash", {"prompt": "a cat", "aspectRatio": "16:9", "numOutputs": 2}, ["image"] * 2),
    ("model_bytedance-seedance-2-0", {"prompt": "a cat running"}, ["video"]),
    ("model_meshy-7-txt23d", {"prompt": "a cat statue"}, ["3d"]),
    ("model_scenario-prompt-writer", {"prompt": "a cat"}, []),
    ("model_bfl-flux-1-dev", {"prompt": "a cat", "image": "<upload>", "loras": ["model_PixeLForestStyLe2qR3sT4uV5w"],
                              "lorasScale": [0.7]}, ["image"]),
    ("model_flux-kontext-editing", {"prompt": "make the cat blue", "referenceImages": ["<upload>"],
                                    "loras": ["model_PotionEditKontext8mN2pQ4rS"]}, ["image"]),
])
def test_every_output_kind(sdk, model, body, kinds):
    reference = upload(sdk) if "<upload>" in json.dumps(body) else None
    body = json.loads(json.dumps(body).replace("<upload>", reference or ""))
    dry = sdk.generate.with_raw_response.run_model(model, body=body, dry_run="true")
    assert dry.http_response.status_code == 269
    data = json.loads(dry.http_response.content)
    assert "job" not in data and data["creativeUnitsCost"] > 0 and not problems(GenerateRunModelResponse, data,
                                                                                 "<dry-run>")
    created = conforms(GenerateRunModelResponse, sdk.generate.with_raw_response.run_model(model, body=body))
    job = wait_success(sdk, created["job"]["jobId"])
    assert job["status"] == "success"
    assets = [conforms(AssetRetrieveResponse, sdk.assets.with_raw_response.retrieve(a))["asset"]
              for a in job["metadata"].get("assetIds", [])]
    assert [a["kind"] for a in assets] == kinds
    if not kinds:
        assert job["metadata"]["output"]["text"]
    every_page(sdk.jobs.with_raw_response.list, "jobs", JobListResponse, page_size=5)


def test_failure_refusals_and_limits(sb, sdk):
    sb.inject("job_failure", error="The provider rejected the request", hint="Try another prompt")
    failed = sdk.generate.run_model("model_google-gemini-3-1-flash", body={"prompt": "fails"}).job.job_id
    assert wait_success(sdk, failed)["status"] == "failure"

    running = sdk.generate.run_model("model_google-gemini-3-1-flash", body={"prompt": "to cancel"}).job.job_id
    with pytest.raises(scenario_sdk.BadRequestError) as refused:  # §6.5: generation jobs refuse cancel
        sdk.jobs.trigger_action(running, action="cancel")
    assert error_body(refused.value) == {"reason": "Cannot cancel this type of job. Action not permitted."}
    assert wait_success(sdk, running)["status"] == "success"
    with pytest.raises(scenario_sdk.BadRequestError) as terminal:
        sdk.jobs.trigger_action(running, action="cancel")
    assert error_body(terminal.value) == {"reason": "Cannot cancel this type of job"}

    with pytest.raises(scenario_sdk.BadRequestError) as lora:
        sdk.generate.run_model("model_HeroKnightLoRA7aB3cD4eF5gH6j", body={"prompt": "x"})
    assert error_body(lora.value) == {"reason": "Custom models only are supported for this endpoint"}
    with pytest.raises(scenario_sdk.NotFoundError) as missing:
        sdk.models.retrieve("model_doesNotExist123")
    error_body(missing.value)

    with sandbox_mod.start(job_seconds=5, max_parallel_jobs=1) as busy:
        client = scenario_sdk.Scenario(api_key=busy.api_key, api_secret=busy.api_secret, base_url=busy.url,
                                       max_retries=0)
        client.generate.run_model("model_google-gemini-3-1-flash", body={"prompt": "one"})
        with pytest.raises(scenario_sdk.RateLimitError) as limited:
            client.generate.run_model("model_google-gemini-3-1-flash", body={"prompt": "two"})
        assert set(error_body(limited.value)) == {"reason", "actionName", "actionLimit"}
        assert "retry-after" not in limited.value.response.headers


def test_cancel_where_allowed():
    with sandbox_mod.start(job_seconds=5, cancellable_types=("custom",)) as cancellable:
        sdk = scenario_sdk.Scenario(api_key=cancellable.api_key, api_secret=cancellable.api_secret,
                                    base_url=cancellable.url, max_retries=0)
        job_id = sdk.generate.run_model("model_google-gemini-3-1-flash", body={"prompt": "x"}).job.job_id
        canceled = conforms(JobTriggerActionResponse, sdk.jobs.with_raw_response.trigger_action(job_id,
                                                                                                 action="cancel"))
        assert canceled["job"]["status"] == "canceled"
        assert wait_success(sdk, job_id)["status"] == "canceled"


def test_workflows(sdk):
    flows = every_page(sdk.workflows.with_raw_response.list, "workflows", WorkflowListResponse)
    for flow in flows:
        conforms(WorkflowRetrieveResponse, sdk.workflows.with_raw_response.retrieve(flow["id"]))
    ready = next(f for f in flows if f["status"] == "ready")
    run = conforms(WorkflowRunResponse, sdk.workflows.with_raw_response.run(ready["id"], body={"prompt": "a mage"}))
    assert wait_success(sdk, run["job"]["jobId"])["metadata"]["assetIds"]


def test_referee_catches_what_the_contract_does_not_exempt():
    """The exemptions cover the recorded shapes only: a half-filled trainingProgress or a string date fails."""
    assert problems(ModelRetrieveResponse, {"model": {}}) != []
    base = {"id": "model_x", "capabilities": [], "collectionIds": [], "createdAt": "2026-01-01T00:00:00.000Z",
            "updatedAt": "2026-01-01T00:00:00.000Z", "custom": False, "exampleAssetIds": [], "privacy": "private",
            "source": "other", "status": "trained", "tags": [], "trainingImagesNumber": 0, "type": "custom"}
    assert problems(ModelRetrieveResponse, {"model": base | {"trainingProgress": {}}}) == []
    assert problems(ModelRetrieveResponse, {"model": base | {"trainingProgress": {"stage": "pending"}}}) == \
        ["model.trainingProgress.updatedAt: required field missing"]
    assert problems(ModelRetrieveResponse, {"model": base | {"trainingProgress": {
        "stage": "pending", "updatedAt": "2026-01-01T00:00:00.000Z"}}}) == \
        ["model.trainingProgress.updatedAt: expected a number"]


def test_sdk_reads_the_base_url_from_the_environment(sb, monkeypatch):
    monkeypatch.setenv("SCENARIO_BASE_URL", sb.url)
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", sb.api_key)
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", sb.api_secret)
    assert scenario_sdk.Scenario().models.list().models


# -- Training and the text tools (contract §12b–§12e) ------------------------------------------------------------


def data_url(colour: str, size=(1024, 1024)) -> str:  # 1024 px: no dataset warning
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def dry_run_conforms(model: type, response) -> dict:
    assert response.http_response.status_code == 269
    data = json.loads(response.http_response.content)
    assert _cost_only(data) and not problems(model, data, "<dry-run>"), data
    response.parse()
    return data


def test_training_answers_conform():
    clock = Clock(1_795_000_000.0, frozen=True)
    with sandbox_mod.start(job_seconds=0.3, seed=4, list_lag=0, train_seconds=100, clock=clock) as sb:
        sdk = scenario_sdk.Scenario(api_key=sb.api_key, api_secret=sb.api_secret, base_url=sb.url, max_retries=0)
        model_id = conforms(ModelCreateResponse, sdk.models.with_raw_response.create(
            name="Potion Icons", type="flux.1-lora"))["model"]["id"]
        conforms(ModelUpdateResponse, sdk.models.with_raw_response.update(model_id, type="flux.2-dev-lora"))
        images = [conforms(TrainingImageAddResponse, sdk.models.training_images.with_raw_response.add(
            model_id, data=data_url(colour), name=f"{n}.png"))["trainingImage"]["id"]
            for n, colour in enumerate(("#c01818", "#e03030", "#901010"))]
        conforms(AssetRetrieveResponse, sdk.assets.with_raw_response.retrieve(images[0]))
        conforms(AssetUpdateResponse, sdk.assets.with_raw_response.update(images[0], description="a red potion"))
        score = conforms(ScoreRetrieveTrainingDatasetResponse,
                         sdk.models.scores.with_raw_response.retrieve_training_dataset(model_id))
        assert "assetsWarnings" not in score  # 1024 px images with captions: nothing to warn about
        parameters = {"nbEpochs": 2, "samplePrompts": ["a red potion"], "conceptPrompt": "rdptn"}
        dry = dry_run_conforms(TrainTriggerResponse, sdk.models.train.with_raw_response.trigger(
            model_id, dry_run="true", parameters=parameters))
        assert dry["costDetails"] == {"train-model": dry["creativeUnitsCost"]}
        started = conforms(TrainTriggerResponse, sdk.models.train.with_raw_response.trigger(
            model_id, parameters=parameters))
        job_id = started["job"]["jobId"]
        stages, statuses = set(), set()
        for _ in range(12):  # every stage on the way, then trained
            model = conforms(ModelRetrieveResponse, sdk.models.with_raw_response.retrieve(model_id))["model"]
            stages.add(model["trainingProgress"].get("stage", model["status"]))
            statuses.add(conforms(JobRetrieveResponse, sdk.jobs.with_raw_response.retrieve(job_id))["job"]["status"])
            every_page(sdk.models.with_raw_response.list, "models", ModelListResponse, page_size=5)
            clock.now += 9.5
        assert stages == {"pending", "queued-for-train", "starting-train", "running-train", "trained"}
        assert statuses == {"queued", "in-progress", "success"}
        assert model["epochs"] and model["trainingStats"] and model["thumbnail"]
        every_page(sdk.jobs.with_raw_response.list, "jobs", JobListResponse, page_size=5)
        run = conforms(GenerateRunModelResponse, sdk.generate.with_raw_response.run_model(
            "model_bfl-flux-2-dev", body={"prompt": "rdptn potion", "modelId": model_id}))
        assert wait_success(sdk, run["job"]["jobId"], clock)["status"] == "success"

        edit_id = sdk.models.create(name="Potion Edits", type="flux.2-dev-edit-lora").model.id
        pair_ids = [sdk.models.training_images.add(edit_id, data=data_url(c), name=f"{c}.png").training_image.id
                    for c in ("#102090", "#3050e0")]
        conforms(TrainingImageReplacePairsResponse, sdk.models.training_images.with_raw_response.replace_pairs(
            edit_id, body=[{"sourceId": pair_ids[0], "targetId": pair_ids[1], "instruction": "brighter"}]))
        with pytest.raises(scenario_sdk.BadRequestError) as one_pair:
            sdk.models.train.trigger(edit_id)
        error_body(one_pair.value)

        sb.inject("training_failure")
        failing = sdk.models.create(name="Doomed", type="zimage-lora").model.id
        sdk.models.training_images.add(failing, data=data_url("#20a040"), name="g.png")
        failed_job = conforms(TrainTriggerResponse, sdk.models.train.with_raw_response.trigger(failing))["job"]
        clock.now += 1000
        job = conforms(JobRetrieveResponse, sdk.jobs.with_raw_response.retrieve(failed_job["jobId"]))["job"]
        assert job["status"] == "failure" and job["metadata"]["error"]
        conforms(ModelRetrieveResponse, sdk.models.with_raw_response.retrieve(failing))

        canceled = sdk.models.create(name="Stopped", type="flux.2-dev-lora").model.id
        sdk.models.training_images.add(canceled, data=data_url("#e0c030"), name="y.png")
        sdk.models.train.trigger(canceled)
        clock.now += 50
        answer = conforms(TrainActionResponse, sdk.models.train.with_raw_response.action(canceled, action="cancel"))
        assert answer["model"]["status"] == "training-canceled"
        with pytest.raises(scenario_sdk.BadRequestError) as again:
            sdk.models.train.action(canceled, action="cancel")
        error_body(again.value)
        with pytest.raises(scenario_sdk.BadRequestError) as listed:
            sdk.models.list(status="training-canceled")  # the list filter has no such status (§4.1)
        error_body(listed.value)


def test_text_tool_answers_conform(sdk):
    image = data_url("#1830c0", (1344, 768))
    captions = conforms(GenerateCaptionResponse, sdk.generate.with_raw_response.caption(
        images=[image, upload(sdk)], details_level="action+style"))
    assert len(captions["captions"]) == 2
    conforms(JobRetrieveResponse, sdk.jobs.with_raw_response.retrieve(captions["job"]["jobId"]))
    dry_run_conforms(GenerateCaptionResponse, sdk.generate.with_raw_response.caption(images=[image], dry_run="true"))
    prompts = conforms(GeneratePromptResponse, sdk.generate.with_raw_response.prompt(
        mode="structured", prompt="a knight", num_results=2, model_id="model_bfl-flux-2-dev"))
    assert len(prompts["prompts"]) == 2 and len(prompts["calls"]) == 2
    conforms(GeneratePromptResponse, sdk.generate.with_raw_response.prompt(mode="contextual", images=[image]))
    dry_run_conforms(GeneratePromptResponse, sdk.generate.with_raw_response.prompt(
        mode="completion", prompt="x", dry_run="true"))
    with pytest.raises(scenario_sdk.BadRequestError) as missing:
        sdk.generate.prompt(mode="completion")
    error_body(missing.value)
    conforms(GenerateDescribeStyleResponse, sdk.generate.with_raw_response.describe_style(images=[image]))
    dry_run_conforms(GenerateDescribeStyleResponse, sdk.generate.with_raw_response.describe_style(
        images=[image], dry_run="true"))
    conforms(GenerateTranslateResponse, sdk.generate.with_raw_response.translate(prompt="un chat rouge"))
    dry_run_conforms(GenerateTranslateResponse, sdk.generate.with_raw_response.translate(prompt="x", dry_run="api"))
