"""The sandbox answers as the real API does (contract §12): routes, errors, paging, jobs, assets, faults."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import time

import pytest
import requests
from PIL import Image

from scenario_nb import sandbox as sandbox_mod
from scenario_nb.sandbox import _images

GEMINI, FLUX2 = "model_google-gemini-3-1-flash", "model_bfl-flux-2-dev"


@pytest.fixture
def sb():
    with sandbox_mod.start(job_seconds=0.4, seed=5, max_parallel_jobs=3) as server:
        yield server


def api(sb, method, path, **kwargs):
    return requests.request(method, sb.url + path, auth=(sb.api_key, sb.api_secret), timeout=10, **kwargs)


def wait_done(sb, job_id):
    for _ in range(200):
        job = api(sb, "GET", f"/jobs/{job_id}").json()["job"]
        if job["status"] in ("success", "failure", "canceled"):
            return job
        time.sleep(0.05)
    raise AssertionError("job never ended")


def test_auth_and_public_token(sb):
    assert requests.get(sb.url + "/models", timeout=5).json() == {"reason": "Unauthorized"}
    assert requests.get(sb.url + "/models", auth=("x", "y"), timeout=5).status_code == 401
    public = requests.get(sb.url + "/models", params={"privacy": "public"}, timeout=5,
                          headers={"Authorization": "public-auth-token"})
    assert public.status_code == 200
    assert api(sb, "GET", "/nowhere").status_code == 404 and "reason" in api(sb, "GET", "/nowhere").json()


def test_models_paging_filters_and_shapes(sb):
    seen, token = [], None
    while True:
        page = api(sb, "GET", "/models", params={"privacy": "public", "pageSize": 2,
                                                  **({"paginationToken": token} if token else {})}).json()
        seen += page["models"]
        token = page.get("nextPaginationToken")
        if not token:
            break
    assert len(seen) >= 5 and all("inputs" not in m for m in seen)
    assert api(sb, "GET", "/models", params={"pageSize": 0}).status_code == 400
    assert api(sb, "GET", "/models", params={"paginationToken": "garbage!"}).status_code == 400
    assert api(sb, "GET", "/models", params={"type": "custom", "types": "custom"}).status_code == 400
    own = api(sb, "GET", "/models").json()["models"]
    assert {m["type"] for m in own} >= {"flux.2-dev-lora", "flux.1-lora", "flux.1-composition"}
    detail = api(sb, "GET", f"/models/{FLUX2}").json()["model"]
    assert detail["inputs"] and detail["uiConfig"]["resolutionComponent"]["presets"][0] == {"label": "Auto"}
    assert api(sb, "GET", "/models/model_nope").json() == {"reason": "Model model_nope not found"}


@pytest.mark.parametrize("body, status, reason", [
    ({}, 400, "Input prompt is required"),
    ({"prompt": "x", "numOutputs": 5}, 400, "Input numOutputs must be at most 4"),
    ({"prompt": "x", "aspectRatio": "7:1"}, 400, "Input aspectRatio must be one of"),
    ({"prompt": "x", "foo": 1}, 400, "Input foo is not supported"),
    ({"prompt": "x", "referenceImages": ["asset_missing"]}, 400, "unknown asset"),
])
def test_generation_validation(sb, body, status, reason):
    answer = api(sb, "POST", f"/generate/custom/{GEMINI}", json=body)
    assert answer.status_code == status and reason in answer.json()["reason"]


def test_lora_rules(sb):
    hero = "model_HeroKnightLoRA7aB3cD4eF5gH6j"
    assert api(sb, "POST", f"/generate/custom/{hero}", json={"prompt": "x"}).json() == \
        {"reason": "Custom models only are supported for this endpoint"}
    wrong = api(sb, "POST", "/generate/custom/model_bfl-flux-1-dev", json={"prompt": "x", "modelId": hero})
    assert wrong.status_code == 400 and wrong.json()["reason"].startswith("Invalid model(s)")
    assert api(sb, "POST", f"/generate/custom/{FLUX2}", json={"prompt": "x", "modelId": "model_zz"}).status_code == 404


def test_dry_run_is_269_without_a_job(sb):
    answer = api(sb, "POST", f"/generate/custom/{GEMINI}", params={"dryRun": "true"}, json={"prompt": "x"})
    assert answer.status_code == 269 and "job" not in answer.json() and sb.stats()["jobs_created"] == 0


def test_state_machine_assets_and_signed_urls(sb):
    created = api(sb, "POST", f"/generate/custom/{FLUX2}", json={"prompt": "a ship", "width": 1344,
                                                                 "height": 768, "numOutputs": 2, "seed": 4}).json()
    assert created["job"]["status"] == "queued" and created["creativeUnitsCost"] > 0
    job = wait_done(sb, created["job"]["jobId"])
    assert [h["status"] for h in job["statusHistory"]] == ["queued", "warming-up", "in-progress", "finalizing",
                                                           "success"]
    assert job["progress"] == 1 and len(job["metadata"]["assetIds"]) == 2 and job["result"]["images"]
    asset = api(sb, "GET", f"/assets/{job['metadata']['assetIds'][0]}").json()["asset"]
    assert asset["metadata"]["seed"] == "4" and asset["url"].startswith(sb.cdn_url)
    image = Image.open(io.BytesIO(requests.get(asset["url"], timeout=10).content))
    assert image.size == (1344, 768)
    assert requests.get(asset["url"].replace("Signature=", "Signature=0"), timeout=5).status_code == 403
    expired = re.sub(r"Expires=\d+", "Expires=1", asset["url"])
    assert requests.get(expired, timeout=5).status_code == 403
    assert not any(r["authorization"] for r in sb.cdn_requests)


def test_images_are_deterministic_and_differ_by_model(sb):
    def image(model, seed):
        job = api(sb, "POST", f"/generate/custom/{model}", json={"prompt": "same prompt", "seed": seed}).json()["job"]
        asset_id = wait_done(sb, job["jobId"])["metadata"]["assetIds"][0]
        return requests.get(api(sb, "GET", f"/assets/{asset_id}").json()["asset"]["url"], timeout=10).content
    assert image(GEMINI, 1) == image(GEMINI, 1)
    assert image(GEMINI, 1) != image("model_imagen4-ultra", 1)


def test_images_are_made_while_the_job_runs(sb):
    """At success the images already exist (as on the real service); serving them renders nothing new."""
    job = api(sb, "POST", f"/generate/custom/{GEMINI}", json={"prompt": "a ready image", "numOutputs": 2}).json()
    done = wait_done(sb, job["job"]["jobId"])
    assert len(sb.state.rendered_ahead) == 2, "the job's images were not rendered while it ran"
    asset = api(sb, "GET", f"/assets/{done['metadata']['assetIds'][0]}").json()["asset"]
    data = requests.get(asset["url"], timeout=10).content
    assert len(sb.state.rendered_ahead) == 1  # handed over, not kept twice
    assert Image.open(io.BytesIO(data)).size == (1024, 1024)
    assert data == _images.render(**sb.state.render_params(sb.jobs[done["jobId"]])[0])  # same bytes as on demand


def test_cancel_and_parallel_cap(sb):
    jobs = [api(sb, "POST", f"/generate/custom/{GEMINI}", json={"prompt": f"p{i}"}).json()["job"] for i in range(3)]
    limited = api(sb, "POST", f"/generate/custom/{GEMINI}", json={"prompt": "one too many"})
    assert limited.status_code == 429 and float(limited.headers["Retry-After"]) >= 1
    assert limited.json()["actionName"] == "parallelCustomJobs" and limited.json()["actionLimit"] == 3
    canceled = api(sb, "POST", f"/jobs/{jobs[0]['jobId']}/action", json={"action": "cancel"}).json()["job"]
    assert canceled["status"] == "canceled"
    assert api(sb, "POST", f"/jobs/{jobs[0]['jobId']}/action", json={"action": "cancel"}).json() == \
        {"reason": "Cannot cancel this type of job"}
    assert api(sb, "POST", f"/jobs/{jobs[1]['jobId']}/action", json={"action": "pause"}).status_code == 400
    listed = api(sb, "GET", "/jobs", params={"pageSize": 2}).json()
    assert len(listed["jobs"]) == 2 and listed["nextPaginationToken"]
    assert api(sb, "GET", "/jobs/job_nope").status_code == 404


def test_uploads(sb):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "blue").save(buf, format="PNG")
    ok = api(sb, "POST", "/assets", json={"name": "a.png", "image": base64.b64encode(buf.getvalue()).decode()})
    assert ok.json()["asset"]["source"] == "uploaded"
    data_url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert api(sb, "POST", "/assets", json={"name": "b.png", "image": data_url}).status_code == 200
    assert api(sb, "POST", "/assets", json={"name": "c"}).status_code == 400
    bad = api(sb, "POST", "/assets", json={"name": "c.png", "image": base64.b64encode(b"not an image").decode()})
    assert bad.json() == {"reason": "Invalid image"}
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")
    assert "too many pixels" in api(sb, "POST", "/assets", json={
        "name": "bomb.png", "image": base64.b64encode(bomb.getvalue()).decode()}).json()["reason"]


def test_workflows(sb):
    flows = api(sb, "GET", "/workflows").json()["workflows"]
    ready = next(f for f in flows if f["status"] == "ready")
    draft = next(f for f in flows if f["status"] == "draft")
    assert api(sb, "PUT", f"/workflows/{draft['id']}/run", json={"prompt": "x"}).status_code == 400
    run = api(sb, "PUT", f"/workflows/{ready['id']}/run", json={"prompt": "a mage"}).json()
    assert run["job"]["jobType"] == "workflow" and run["workflow"]["id"] == ready["id"]
    job = wait_done(sb, run["job"]["jobId"])
    assert job["metadata"]["assetIds"] and job["metadata"]["flow"][0]["assets"]


@pytest.mark.parametrize("kind, params, check", [
    ("rate_limit", {"retry_after": 2}, lambda r: r.status_code == 429 and r.headers["Retry-After"] == "2"),
    ("error_5xx", {}, lambda r: r.status_code >= 500 and "reason" in r.json()),
    ("malformed", {}, lambda r: r.status_code == 200 and not _is_json(r)),
])
def test_injected_faults(sb, kind, params, check):
    sb.inject(kind, path="/models", **params)
    assert check(api(sb, "GET", "/models"))
    assert api(sb, "GET", "/models").status_code == 200


def _is_json(response) -> bool:
    try:
        response.json()
        return True
    except ValueError:
        return False


def test_drop_and_job_failure(sb):
    sb.inject("drop", path="/models")
    with pytest.raises(requests.ConnectionError):
        api(sb, "GET", "/models")
    sb.inject("job_failure", error="boom", hint="try later")
    job = api(sb, "POST", f"/generate/custom/{GEMINI}", json={"prompt": "x"}).json()["job"]
    done = wait_done(sb, job["jobId"])
    assert done["status"] == "failure" and done["metadata"]["error"] == "boom" and "assetIds" not in done["metadata"]


def test_cli_serves_until_stopped():
    proc = subprocess.Popen([sys.executable, "-m", "scenario_nb.sandbox", "--port", "0", "--api-key", "k1",
                             "--api-secret", "s1"], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+/v1)", proc.stdout.readline())[1]
        assert requests.get(url + "/models", auth=("k1", "s1"), timeout=5).status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_render_speed_sanity():
    from scenario_nb.sandbox._images import render
    times = []
    for seed in range(5):
        start = time.perf_counter()
        render(style=1, model_name="m", prompt="speed", seed=seed, index=0, width=1024, height=1024)
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.5  # generous: these machines are shared; the figure is ~70 ms
