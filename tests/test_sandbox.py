"""The sandbox answers as the real API does (contract §12): routes, errors, paging, jobs, assets, faults."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import threading
import time

import pytest
import requests
from PIL import Image

from scenario_nb import sandbox as sandbox_mod
from scenario_nb.sandbox import _images

from conftest import Clock, RemoteSandbox

GEMINI, FLUX2 = "model_google-gemini-3-1-flash", "model_bfl-flux-2-dev"


@pytest.fixture
def sb():
    with sandbox_mod.start(job_seconds=0.4, seed=5, max_parallel_jobs=3, list_lag=0) as server:
        yield server


def generate(sb, body, model=GEMINI):
    answer = api(sb, "POST", f"/generate/custom/{model}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["job"]


def api(sb, method, path, **kwargs):
    return requests.request(method, sb.url + path, auth=(sb.api_key, sb.api_secret), timeout=10, **kwargs)


def wait_done(sb, job_id):
    for _ in range(400):
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


def test_a_path_no_route_names_is_404_even_under_a_known_one(sb):
    """Only the routes of the table answer: a path under a model, a job or a workflow that no route names is 404
    (it once answered with the model), as is a known path with another method."""
    job = generate(sb, {"prompt": "x"})
    for method, path in (("GET", f"/models/{GEMINI}/examples"), ("GET", f"/models/{GEMINI}/x/y"),
                         ("DELETE", f"/jobs/{job['jobId']}"), ("GET", f"/jobs/{job['jobId']}/action"),
                         ("POST", "/generate/nonsense"), ("DELETE", "/workflows")):
        answer = api(sb, method, path)
        assert answer.status_code == 404 and "model" not in answer.json(), (method, path, answer.text)


def test_every_row_of_the_route_table_is_reachable():
    """No route stands behind an earlier one that takes its paths (`training-images/pairs` before
    `training-images/{image_id}`, say)."""
    from scenario_nb.sandbox._routes import ROUTES
    for method, segments, handler in ROUTES._rows:
        parts = [s[1:-1] if s.startswith("{") else "anything" if s == "*" else s for s in segments]
        assert ROUTES.find(method, parts) == (handler, {s[1:-1]: s[1:-1] for s in segments if s.startswith("{")}), \
            (method, "/".join(segments))


def test_models_paging_filters_and_shapes(sb):
    seen, token = [], None
    while True:
        page = api(sb, "GET", "/models", params={"privacy": "public", "pageSize": 50,
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
    assert job["progress"] == 1 and len(job["metadata"]["assetIds"]) == 2
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


def test_images_are_made_while_the_job_runs(monkeypatch):
    """At success the images already exist (as on the real service); serving them renders nothing new."""
    with sandbox_mod.start(job_seconds=3, seed=5) as sb:  # rendering two images takes ~0.2 s of those 3
        job = generate(sb, {"prompt": "a ready image", "numOutputs": 2})
        done = wait_done(sb, job["jobId"])
        check_served_from_ahead(sb, done, monkeypatch)


def check_served_from_ahead(sb, done, monkeypatch):
    assert len(sb.state.renderer.rendered_ahead) == 2, "the job's images were not rendered while it ran"
    ahead = {data for data, _ in sb.state.renderer.rendered_ahead.values()}
    renders = []
    real_render = _images.render
    monkeypatch.setattr(_images, "render", lambda **params: renders.append(params) or real_render(**params))
    asset = api(sb, "GET", f"/assets/{done['metadata']['assetIds'][0]}").json()["asset"]
    data = requests.get(asset["url"], timeout=10).content
    assert renders == [], "serving the asset rendered it again"
    assert data in ahead  # the very bytes rendered while the job ran
    assert len(sb.state.renderer.rendered_ahead) == 1  # handed over, not kept twice
    assert Image.open(io.BytesIO(data)).size == (1024, 1024)


def cancel(sb, job_id):
    return api(sb, "POST", f"/jobs/{job_id}/action", json={"action": "cancel"})


def test_cancel_is_refused_on_generation_jobs_which_run_on():
    """§6.5: a running `custom` job refuses cancel; it succeeds and its (paid) images exist. The clock stands
    still until the test moves it, so the job is still running when the cancel comes, however busy the machine."""
    clock = Clock(frozen=True)
    with sandbox_mod.start(job_seconds=0.4, seed=5, max_parallel_jobs=3, list_lag=0, clock=clock) as sb:
        cancel_a_running_generation_then_after_its_end(sb, clock)


def cancel_a_running_generation_then_after_its_end(sb, clock):
    job = generate(sb, {"prompt": "keep going", "numOutputs": 2})
    refused = cancel(sb, job["jobId"])
    assert refused.status_code == 400
    assert refused.json() == {"reason": "Cannot cancel this type of job. Action not permitted."}
    clock.now += 1
    done = wait_done(sb, job["jobId"])
    assert done["status"] == "success" and "canceled" not in [h["status"] for h in done["statusHistory"]]
    for asset_id in done["metadata"]["assetIds"]:
        url = api(sb, "GET", f"/assets/{asset_id}").json()["asset"]["url"]
        assert Image.open(io.BytesIO(requests.get(url, timeout=10).content)).size == (1024, 1024)
    assert cancel(sb, job["jobId"]).json() == {"reason": "Cannot cancel this type of job"}  # terminal
    assert api(sb, "POST", f"/jobs/{job['jobId']}/action", json={"action": "pause"}).status_code == 400
    assert cancel(sb, "job_nope").status_code == 404


def test_cancel_where_the_job_type_allows_it():
    with sandbox_mod.start(job_seconds=5, cancellable_types=("custom",), list_lag=0) as sb:
        job = generate(sb, {"prompt": "stop me"})
        canceled = cancel(sb, job["jobId"])
        assert canceled.status_code == 200 and canceled.json()["job"]["status"] == "canceled"
        assert wait_done(sb, job["jobId"])["status"] == "canceled"
        assert cancel(sb, job["jobId"]).json() == {"reason": "Cannot cancel this type of job"}
        assert not sb.state.assets


def test_parallel_cap_429_names_the_limit_without_retry_after():
    """Three jobs fill the cap (the sandbox's clock stands still, so none can end first on a slow machine)."""
    with sandbox_mod.start(job_seconds=0.4, seed=5, max_parallel_jobs=3, list_lag=0,
                           clock=Clock(frozen=True)) as sb:
        jobs = [generate(sb, {"prompt": f"p{i}"}) for i in range(3)]
        limited = api(sb, "POST", f"/generate/custom/{GEMINI}", json={"prompt": "one too many"})
        assert limited.status_code == 429 and "Retry-After" not in limited.headers
        assert limited.json() == {"reason": "Too many parallel jobs: the limit is 3",
                                  "actionName": "parallelCustomJobs", "actionLimit": 3}
        assert len(sb.jobs) == 3
        listed = api(sb, "GET", "/jobs", params={"pageSize": 2}).json()
        assert len(listed["jobs"]) == 2 and listed["nextPaginationToken"]
        assert {j["jobId"] for j in listed["jobs"]} <= {j["jobId"] for j in jobs}
        assert api(sb, "GET", "/jobs/job_nope").status_code == 404


def test_retry_after_header_is_an_option():
    with sandbox_mod.start(job_seconds=5, max_parallel_jobs=1, retry_after_header=True) as sb:
        generate(sb, {"prompt": "one"})
        limited = api(sb, "POST", f"/generate/custom/{GEMINI}", json={"prompt": "two"})
        assert limited.status_code == 429 and float(limited.headers["Retry-After"]) >= 1
        sb.inject("rate_limit", path="/models")
        assert float(api(sb, "GET", "/models").headers["Retry-After"]) > 0


def test_injected_rate_limits_carry_no_header_unless_asked(sb):
    sb.inject("rate_limit", path="/models")
    plain = api(sb, "GET", "/models")
    assert plain.status_code == 429 and "Retry-After" not in plain.headers
    assert plain.json()["actionName"] and plain.json()["actionLimit"] == 3
    sb.inject("rate_limit", path="/models", remaining_seconds=7)
    cooldown = api(sb, "GET", "/models")
    assert cooldown.json()["remainingSeconds"] == 7 and "Retry-After" not in cooldown.headers
    sb.set_faults(rate_limit=1.0)
    seeded = api(sb, "GET", "/models")
    sb.set_faults(rate_limit=0.0)
    assert seeded.status_code == 429 and "Retry-After" not in seeded.headers
    assert [r["header"] for r in sb.stats()["rate_limited"]] == [False, False, False]


def test_job_list_lags_behind_job_reads():
    """§10b: GET /jobs shows a new job only after a delay; GET /jobs/{id} sees it at once."""
    with sandbox_mod.start(job_seconds=0.2, list_lag=30) as sb:
        job = generate(sb, {"prompt": "hidden for a while"})
        assert wait_done(sb, job["jobId"])["status"] == "success"
        for params in ({}, {"types": "custom"}, {"status": "success"}):
            assert api(sb, "GET", "/jobs", params=params).json()["jobs"] == []
    with sandbox_mod.start(job_seconds=0.2, list_lag=0.5) as sb:
        job = generate(sb, {"prompt": "shows soon"})
        assert api(sb, "GET", "/jobs").json()["jobs"] == []
        for _ in range(100):
            listed = api(sb, "GET", "/jobs").json()["jobs"]
            if listed:
                break
            time.sleep(0.05)
        assert [j["jobId"] for j in listed] == [job["jobId"]]


def test_default_list_lag_is_a_few_seconds():
    with sandbox_mod.start(job_seconds=0.2) as sb:
        generate(sb, {"prompt": "new"})
        assert api(sb, "GET", "/jobs").json()["jobs"] == []


FOREST = "model_PixeLForestStyLe2qR3sT4uV5w"


@pytest.mark.parametrize("body, added", [
    ({"prompt": "a LoRA through its base", "modelId": FOREST, "numOutputs": 1}, {}),
    ({"prompt": "loras list", "loras": [FOREST], "lorasScale": [0.8]}, {"modelId": "model_bfl-flux-1-dev"}),
    ({"prompt": "empty LoRA slot", "modelId": ""}, {}),
    ({"prompt": "plain"}, {"modelId": "model_bfl-flux-1-dev"}),
])
def test_metadata_input_echoes_the_body_as_sent(sb, body, added):
    """§10b: a lost answer is found by matching `metadata.input`, which is the body as sent (+ modelId if absent)."""
    job = generate(sb, body, model="model_bfl-flux-1-dev")
    assert job["metadata"]["input"] == {**body, **added}
    assert api(sb, "GET", f"/jobs/{job['jobId']}").json()["job"]["metadata"]["input"] == {**body, **added}
    listed = api(sb, "GET", "/jobs").json()["jobs"]
    assert [j["metadata"]["input"] for j in listed if j["jobId"] == job["jobId"]] == [{**body, **added}]


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
    ("rate_limit", {}, lambda r: r.status_code == 429 and "Retry-After" not in r.headers),
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


def test_hold_creates_the_job_and_keeps_the_answer_until_released(sb):
    """`hold`: the job exists on the server while its creator still waits for the answer (a named point to
    interrupt a client at); `release()` sends it. Other requests are answered meanwhile."""
    sb.inject("hold", path="/generate/custom", method="POST")
    answers: list = []
    poster = threading.Thread(target=lambda: answers.append(
        api(sb, "POST", f"/generate/custom/{GEMINI}", json={"prompt": "held"})))
    poster.start()
    held = sb.wait_held("POST", "/generate/custom", timeout=10)
    assert held["path"] == f"/v1/generate/custom/{GEMINI}" and sb.stats()["jobs_created"] == 1 and not answers
    assert api(sb, "GET", "/models").status_code == 200
    sb.release()
    poster.join(timeout=10)
    assert answers[0].json()["job"]["jobId"] in sb.jobs and sb.state.holding() == []
    with pytest.raises(TimeoutError):
        sb.wait_held(timeout=0.1)


def test_faults_and_held_requests_through_the_sandbox_routes(sb):
    """Another process (a kernel's sandbox, `python -m scenario_nb.sandbox`) is driven the same way."""
    remote = RemoteSandbox(sb.url, sb.api_key, sb.api_secret)
    remote.inject("hold", method="GET", seconds=5)  # any GET but the sandbox's own routes
    assert remote.stats()["faults"] == {}
    getter = threading.Thread(target=api, args=(sb, "GET", "/models"))
    getter.start()
    assert remote.wait_held("GET", "/models", timeout=5)["path"] == "/v1/models"
    remote.release()
    getter.join(timeout=10)
    assert not getter.is_alive() and remote.stats()["faults"] == {"hold": 1}
    assert api(sb, "POST", "/_sandbox/faults", json={"kind": "bogus"}).status_code == 400
    assert requests.post(f"{sb.url}/_sandbox/release", timeout=10).status_code == 401


def test_cli_serves_until_stopped():
    proc = subprocess.Popen([sys.executable, "-m", "scenario_nb.sandbox", "--port", "0", "--api-key", "k1",
                             "--api-secret", "s1", "--job-seconds", "5", "--max-parallel", "1", "--list-lag", "0",
                             "--cancellable-types", "custom,inference", "--retry-after-header"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+/v1)", proc.stdout.readline())[1]
        assert requests.get(url + "/models", auth=("k1", "s1"), timeout=5).status_code == 200
        post = lambda: requests.post(f"{url}/generate/custom/{GEMINI}", json={"prompt": "x"},  # noqa: E731
                                     auth=("k1", "s1"), timeout=5)
        job_id = post().json()["job"]["jobId"]
        assert "Retry-After" in post().headers  # --max-parallel 1 and --retry-after-header
        assert [j["jobId"] for j in requests.get(url + "/jobs", auth=("k1", "s1"), timeout=5).json()["jobs"]] \
            == [job_id]  # --list-lag 0
        assert requests.post(f"{url}/jobs/{job_id}/action", json={"action": "cancel"}, auth=("k1", "s1"),
                             timeout=5).json()["job"]["status"] == "canceled"  # --cancellable-types custom
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_cli_legacy_shapes():
    proc = subprocess.Popen([sys.executable, "-m", "scenario_nb.sandbox", "--legacy-shapes"], stdout=subprocess.PIPE,
                            text=True)
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+/v1)", proc.stdout.readline())[1]
        job = requests.post(f"{url}/generate/custom/{GEMINI}", json={"prompt": "x"}, auth=("sandbox-key",
                            "sandbox-secret"), timeout=5).json()["job"]
        assert job["id"].startswith("job_") and "jobId" not in job
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_a_restarted_sandbox_never_hands_out_an_id_again():
    """Two sandboxes of one seed (the stand-alone one restarted with its default `--seed 0`) give different job,
    asset and model ids, as the cloud never reuses one, while the seeded draws behind them stay the same."""
    made = []
    for _ in range(2):
        with sandbox_mod.start(job_seconds=0.05, seed=0, list_lag=0) as server:
            job = generate(server, {"prompt": "the same first request", "seed": 1})["jobId"]
            model = api(server, "POST", "/models", json={"name": "Set", "type": "flux.1-lora"}).json()["model"]
            made.append((job, model["id"], server.state.jobs[job]["duration"]))
    (first, first_model, first_duration), (second, second_model, second_duration) = made
    assert first != second and first_model != second_model
    assert first_duration == second_duration  # the seed still decides what it decided


def test_pictures_draw_any_text_with_the_bitmap_font_of_old_pillow(monkeypatch):
    """Pillow before 10.1 (the declared floor is 9.2) has only a bitmap default font, which raises on anything
    outside Latin-1: a long name (cut with "…"), a prompt in Japanese or with an emoji must still draw."""
    from PIL import Image, ImageFont

    from scenario_nb.sandbox import _images
    bitmap = ImageFont.load_default_imagefont()
    monkeypatch.setattr(_images, "_font", lambda size: bitmap)
    data = _images.render(style=3, model_name="Dragon Sketches of a very long name that cannot fit " * 3,
                          prompt="a lantern 灯籠 🏮 … in the rain", seed=1, index=0, width=128, height=128)
    assert Image.open(io.BytesIO(data)).size == (128, 128)
