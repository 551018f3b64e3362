"""The shared client against the real local sandbox over HTTP: every endpoint, error and fault."""

from __future__ import annotations

import time

import pytest
import requests
from PIL import Image

import scenario_nb
from scenario_nb import (AuthenticationError, ConfigurationError, CostEstimate, InputError, NotFoundError,
                         RateLimitError, ScenarioClient, SubmitFailedError)
from scenario_nb import sandbox as sandbox_mod

from conftest import SUITE_KEY as KEY, SUITE_SECRET as SECRET  # noqa: E402 (scanned for in every exception)
from conftest import Clock  # noqa: E402


def first_runnable(client, with_input):
    for m in client.models(public=True):
        full = client.model(m.id)
        if full.runnable and full.input(with_input) is not None:
            return full
    raise AssertionError(f"no sandbox model with {with_input}")


# -- Credentials -------------------------------------------------------------------------------------

def test_missing_credentials_name_the_variables(monkeypatch):
    for var in ("SCENARIO_API_KEY", "SCENARIO_API_SECRET", "SCENARIO_SDK_API_KEY", "SCENARIO_SDK_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigurationError, match="SCENARIO_API_KEY and SCENARIO_API_SECRET"):
        ScenarioClient()


def test_env_fallbacks_and_masking(monkeypatch, sb, tmp_path):
    for var in ("SCENARIO_API_KEY", "SCENARIO_API_SECRET", "SCENARIO_API_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", KEY)
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", SECRET)
    monkeypatch.setenv("SCENARIO_BASE_URL", sb.url)
    c = ScenarioClient(home=tmp_path)
    assert c.base_url == sb.url
    assert SECRET not in repr(c) and KEY not in repr(c)
    assert c.models()  # the SDK's names work
    monkeypatch.setenv("SCENARIO_API_KEY", "ours-wins-key")
    monkeypatch.setenv("SCENARIO_API_SECRET", "ours-wins-secret")
    with pytest.raises(AuthenticationError) as info:
        ScenarioClient(home=tmp_path).models()
    assert "ours-wins-secret" not in str(info.value) and "Unauthorized" in str(info.value)
    c.close()


def test_default_url_is_the_real_api(monkeypatch):
    for var in ("SCENARIO_API_URL", "SCENARIO_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert ScenarioClient("k" * 16, "s" * 16).base_url == "https://api.cloud.scenario.com/v1"


# -- Models ------------------------------------------------------------------------------------------

def test_one_paging_loop_follows_each_token_once():
    """Models, jobs, workflows and the lost-answer search read listings through one loop: each token asked
    once, rows that are not objects skipped, and a token handed out again an error (a -> b -> a once went
    round for ever in the search, which only compared a token with the one before)."""
    from scenario_nb._errors import APIError
    from scenario_nb._paging import paged
    pages = {None: {"jobs": [{"n": 1}, "odd", None], "nextPaginationToken": "t1"},
             "t1": {"jobs": [{"n": 2}], "nextPaginationToken": "t2"}, "t2": {"jobs": [{"n": 3}]}}
    asked: list = []

    def get(path, **params):
        asked.append(params)
        assert len(asked) < 10, "followed a token again"
        return pages[params.get("paginationToken")]
    assert [row["n"] for row in paged(get, "/jobs", "jobs", {"pageSize": 2, "createdAfter": None})] == [1, 2, 3]
    assert asked == [{"pageSize": 2}, {"pageSize": 2, "paginationToken": "t1"},
                     {"pageSize": 2, "paginationToken": "t2"}]
    pages = {None: {"jobs": [{"n": 1}], "nextPaginationToken": "a"}, "a": {"jobs": [], "nextPaginationToken": "b"},
             "b": {"jobs": [], "nextPaginationToken": "a"}}
    asked.clear()
    with pytest.raises(APIError, match="repeated pagination token"):
        list(paged(get, "/jobs", "jobs", {}))
    assert len(asked) == 3


def test_models_every_page_and_filters(client):
    own = client.models()
    assert own and all(m.privacy == "private" for m in own)
    paged = client.models(public=True, page_size=2)
    assert len(paged) > 2, "needs several pages"
    assert [m.id for m in paged] == [m.id for m in client.models(public=True)]
    assert all(not m.inputs for m in paged), "list rows carry no inputs"
    custom = client.models(public=True, types="custom")
    assert custom and all(m.type == "custom" for m in custom)
    name = own[0].name
    assert [m.name for m in client.models(query=name[:4].lower())][0].lower().startswith(name[:4].lower())


def test_model_inputs_are_typed(client):
    model = first_runnable(client, "numOutputs")
    spec = model.input("numOutputs")
    assert isinstance(spec, scenario_nb.ModelInput) and spec.type == "number" and spec.max >= 1
    assert model.prompt_input is not None and model.prompt_input.always_required


def test_find_model_by_prefix_and_did_you_mean(client):
    hero = next(m for m in client.models() if m.name == "Hero Knight")
    assert client.find_model("Hero").id == hero.id and client.find_model("hero knight").id == hero.id
    with pytest.raises(InputError, match="matches several"):
        client.find_model("Pixel")  # Pixel Forest Style and Pixel Knights
    with pytest.raises(InputError, match="did you mean 'Hero Knight'"):
        client.find_model("Hero Knigt")
    with pytest.raises(InputError, match="not found"):
        client.find_model("model_doesNotExist123")


def test_every_client_front_door_takes_a_model_by_name(client, sb):
    """Issue 25 item 8: a name is resolved as the magics resolve it (`find_model`), never sent as an id."""
    flux2, hero = "model_bfl-flux-2-dev", "model_HeroKnightLoRA7aB3cD4eF5gH6j"
    gen = client.generate("FLUX.2 dev", "a lamp", width=512, height=512).wait(timeout=30)
    assert gen.ok and gen.model_id == flux2 and sb.jobs[gen.job_id]["model"]["id"] == flux2
    assert client.estimate("flux.2 dev", "a lamp", numOutputs=2).model_id == flux2
    many = client.generate_many("FLUX.2 dev", ["a cup", "a jug"], width=512, height=512)
    assert [sb.jobs[h.job_id]["model"]["id"] for h in many] == [flux2, flux2]
    lora = client.generate("Hero Knight", "the hero", base_model="FLUX.2 dev", width=512, height=512)
    assert sb.jobs[lora.job_id]["model"]["id"] == flux2 and sb.jobs[lora.job_id]["body"]["modelId"] == hero
    assert client.previous("FLUX.2 dev", gen.inputs) is not None  # the same request, found by name
    created = sb.stats()["jobs_created"]
    with pytest.raises(InputError, match="no model named 'Flux Nine'"):
        client.generate("Flux Nine", "a lamp")
    assert sb.stats()["jobs_created"] == created
    assert not [r["path"] for r in sb.requests if "%20" in r["path"] or " " in r["path"]]


# -- Generation, dry run, jobs --------------------------------------------------------------------------

def test_generate_returns_at_once_then_images(client, sb):
    model = first_runnable(client, "aspectRatio")
    started = time.monotonic()
    gen = client.generate(model.id, "a red potion bottle, game icon", aspectRatio="16:9", numOutputs=2)
    assert time.monotonic() - started < 0.3 + 1.0 and gen.job_id and not gen.done
    gen.wait(timeout=30)
    assert gen.ok and len(gen.images) == 2 and gen.cost and gen.cost > 0
    w, h = gen.images[0].size
    assert abs(w / h - 16 / 9) < 0.05
    assert client.get_job(gen.job_id)["status"] == "success"
    assert client.history.get(gen.job_id).status == "success"
    deadline = time.monotonic() + 15  # GET /jobs lists a new job only after a few seconds, as the cloud may
    while gen.job_id not in [j["jobId"] for j in client.jobs(limit=20)]:
        assert time.monotonic() < deadline, "the job never showed up in GET /jobs"
        time.sleep(0.5)


def test_dry_run_spends_nothing(client, sb):
    model = first_runnable(client, "numOutputs")
    before = sb.stats()["jobs_created"]
    one = client.estimate(model.id, "a castle", numOutputs=1)
    four = client.estimate(model.id, "a castle", numOutputs=4)
    assert isinstance(one, CostEstimate) and one.creative_units > 0 and four.creative_units > one.creative_units
    assert sb.stats()["jobs_created"] == before


def test_local_validation_before_spending(client, sb):
    model = first_runnable(client, "numOutputs")
    posts = sb.generate_posts
    with pytest.raises(InputError, match="numOutputs"):
        client.generate(model.id, "x", numOutputs=99)
    with pytest.raises(InputError, match="no input 'bogus'"):
        client.generate(model.id, "x", bogus=1)
    with pytest.raises(InputError, match="needs a prompt"):
        client.generate(model.id, "")
    assert sb.generate_posts == posts


def test_cancel_where_the_backend_cancels(tmp_path):
    """A backend that does cancel generation jobs (not the real cloud's): the job ends canceled."""
    with sandbox_mod.start(api_key=KEY, api_secret=SECRET, job_seconds=2, cancellable_types=("custom",)) as sb:
        client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
        model = first_runnable(client, "numOutputs")
        gen = client.generate(model.id, "slow one")
        assert client.cancel(gen.job_id) == "requested" and "canceled shortly" in gen.note
        with pytest.raises(scenario_nb.JobFailedError, match="canceled"):
            gen.wait(timeout=30)
        assert gen.status == "canceled" and client.history.get(gen.job_id).status == "canceled"
        assert gen.cancel() == "finished"
        client.close()


# -- LoRAs, compositions, workflows ------------------------------------------------------------------

def test_lora_and_composition_route_through_a_base_model(client):
    own = [m for m in client.models() if m.status == "trained" and "kontext" not in m.type]  # kontext: own test
    kinds = {m.type.split("-")[-1] for m in own}
    assert {"lora", "composition"} <= kinds
    for model in own:
        gen = client.generate(model.id, "hero portrait", seed=7).wait(timeout=30)
        assert gen.ok and gen.images and gen.base_model_id and gen.base_model_id != model.id
        assert client.model(gen.base_model_id).runnable


def test_posting_a_lora_directly_is_refused_by_the_api(client):
    lora = next(m for m in client.models() if m.type.endswith("lora"))
    with pytest.raises(scenario_nb.BadRequestError, match="Custom models only"):
        client._http.request("POST", f"/generate/custom/{lora.id}", json_body={"prompt": "x"})


def test_workflow_runs_and_yields_images(client):
    flows = client.workflows()
    ready = next(w for w in flows if w.get("status") == "ready")
    workflow = client.workflow(ready["id"])
    inputs = {i.name: "a knight" for i in workflow.inputs if i.always_required and i.type == "string"}
    gen = client.run_workflow(ready["id"], **inputs).wait(timeout=30)
    assert gen.ok and gen.images and gen.kind == "workflow"


# -- Assets and uploads --------------------------------------------------------------------------------

def test_assets_download_without_authorization_and_refresh_expired(client, sb):
    model = first_runnable(client, "numOutputs")
    gen = client.generate(model.id, "a shield").wait(timeout=30)
    asset = client.asset(gen.asset_ids[0])
    assert asset["url"].startswith(sb.cdn_url.split("/assets")[0])
    assert Image.open(gen.files[0]).format == "PNG"
    assert sb.cdn_requests and not any(r["authorization"] for r in sb.cdn_requests)
    sb.inject("expired_url", count=3)  # refused thrice, renewed each time, downloaded
    again = client.generate(model.id, "a second shield").wait(timeout=30)
    assert again.ok and again.images
    sb.inject("expired_url", count=9)
    failed = scenario_nb.wait_all([client.generate(model.id, "a third shield")], timeout=30)[0]
    assert isinstance(failed.exception, scenario_nb.DownloadFailedError)
    assert "asset URL refused: Request has expired" in str(failed.exception)  # the CDN's XML reason


def test_paid_job_whose_images_cannot_be_fetched_names_the_job_and_comes_back_later(client, sb):
    model = first_runnable(client, "numOutputs")
    sb.inject("expired_url", count=50)  # every signed URL refused, however often renewed
    gen = scenario_nb.wait_all([client.generate(model.id, "a lantern")], timeout=30)[0]
    assert gen.status == "success" and isinstance(gen.exception, scenario_nb.DownloadFailedError)
    assert gen.job_id in str(gen.exception) and "%scenario job" in str(gen.exception)
    sb.state.expire_next = 0
    again = client.job(gen.job_id).wait(timeout=30)
    assert again.ok and again.images and again.images[0].size


def test_a_job_taken_by_id_in_this_kernel_is_the_handle_its_cells_show(client):
    """`client.job(id)` of a job this kernel follows returns that handle, finished or not: its `wait()` returns
    only once the views drawn from it are updated (a copy rebuilt from the history ended at once, and a
    notebook ending then lost the --no-wait cell's final image)."""
    model = first_runnable(client, "numOutputs")
    gen = client.generate(model.id, "a lighthouse")
    assert client.job(gen.job_id or gen.wait(timeout=30).job_id) is gen
    gen.wait(timeout=30)
    assert client.job(gen.job_id) is gen and client.stored_job(gen.job_id) is gen
    assert client.stored_job("job_unknown") is None


def test_upload_bytes_path_and_pil(client, tmp_path):
    img = Image.new("RGB", (64, 48), "orange")
    path = tmp_path / "ref.png"
    img.save(path)
    ids = [client.upload_image(path), client.upload_image(path.read_bytes()), client.upload_image(img)]
    assert all(i.startswith("asset_") for i in ids)
    assert client.asset(ids[0])["source"] == "uploaded"
    with pytest.raises(InputError, match="not an image"):
        client.upload_image(b"this is not an image")
    model = first_runnable(client, "referenceImages")
    gen = client.generate(model.id, "img2img", referenceImages=[ids[0]]).wait(timeout=30)
    assert gen.ok


# -- Errors and faults -----------------------------------------------------------------------------------

def test_not_found_carries_the_reason(client):
    with pytest.raises(NotFoundError, match="not found") as info:
        client.get_job("job_doesNotExist123456789012")
    assert info.value.status_code == 404 and info.value.reason


def test_reads_retry_transient_faults(client, sb):
    for kind in ("error_5xx", "drop", "malformed"):
        sb.inject(kind, path="/models")
        assert client.models(), kind


def test_rate_limit_is_honoured_before_any_other_request(client, sb):
    sb.inject("rate_limit", retry_after=1.0, path="/models")
    t0 = time.time()
    client.models()
    assert time.time() - t0 >= 0.95
    answered = [r for r in sb.requests if r["path"].endswith("/models")]
    assert answered[-1]["time"] - answered[-2]["time"] >= 0.95


def test_rate_limit_error_carries_retry_after(sb, tmp_path):
    client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path, max_retries=0)
    sb.inject("rate_limit", retry_after=2.0, path="/models")
    with pytest.raises(RateLimitError) as info:
        client.models()
    assert info.value.retry_after == pytest.approx(2.0, abs=0.01)
    assert "retried automatically" not in str(info.value)
    client.close()


def test_no_second_post_after_a_read_timeout_and_the_job_is_adopted(sb, tmp_path):
    c = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path, timeout=(5.0, 0.5))
    model = first_runnable(c, "numOutputs")
    posts = sb.generate_posts
    sb.inject("slow", seconds=1.5, path="/generate/custom")
    gen = c.generate(model.id, "uncertain but paid for")
    gen.wait(timeout=30)
    assert sb.generate_posts == posts + 1, "the generation POST was sent twice"
    assert gen.ok and gen.images
    c.close()


def test_drop_after_create_is_adopted(client, sb):
    model = first_runnable(client, "numOutputs")
    posts, created = sb.generate_posts, sb.stats()["jobs_created"]
    sb.inject("drop", after_create=True, path="/generate/custom")
    adopted = client.generate(model.id, "dropped after create").wait(timeout=60)
    assert adopted.ok and sb.stats()["jobs_created"] == created + 1 and sb.generate_posts == posts + 1
    assert client.history.get(adopted.job_id).status == "success"


def test_refused_connection_is_the_only_nothing_charged(tmp_path):
    """Nothing reached the server: the one case (with a 4xx) where "nothing was charged" is proven."""
    with sandbox_mod.start(api_key=KEY, api_secret=SECRET) as sb:
        model = first_runnable(ScenarioClient(KEY, SECRET, sb.url, home=tmp_path), "numOutputs")
    c = ScenarioClient(KEY, SECRET, "http://127.0.0.1:9/v1", home=tmp_path)  # nothing listens there
    gen = c.generate(model, "the server is gone")
    with pytest.raises(SubmitFailedError, match="nothing was charged"):
        gen.wait(timeout=30)
    assert c.history.get_request(gen.request_id).status == "not-sent"
    c.close()


def test_unreachable_url_is_one_clear_error(tmp_path):
    c = ScenarioClient(KEY, SECRET, "http://127.0.0.1:9/v1", home=tmp_path, max_retries=0)
    with pytest.raises(scenario_nb.APIConnectionError, match="could not reach"):
        c.models()


def test_guide_shape_is_read_too(tmp_path):
    with sandbox_mod.start(api_key=KEY, api_secret=SECRET, job_seconds=0.3, legacy=True) as sb:
        c = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
        model = first_runnable(c, "aspectRatio")
        gen = c.generate(model.id, "a warrior character in a forest", aspectRatio="1:1").wait(timeout=30)
        assert gen.ok and gen.images
        c.close()


def test_plain_requests_cannot_read_assets_with_wrong_signature(client, sb):
    model = first_runnable(client, "numOutputs")
    gen = client.generate(model.id, "tamper").wait(timeout=30)
    url = client.asset(gen.asset_ids[0])["url"]
    assert requests.get(url.replace("Signature=", "Signature=x"), timeout=5).status_code == 403


# -- The run-time path is one way ---------------------------------------------------------------------------

def test_nothing_below_the_client_holds_the_client(tmp_path):
    """By effect: with a generation and a training in flight (the engine's threads following both), dropping the
    last reference to the client frees it; the handles still end, and the finished training still drops the
    catalog's stale copy of its model (the handle holds the catalog's cache, not the client)."""
    import gc
    import weakref
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (1024, 1024), (40 * i, 90, 200)).save(folder / f"img-{i}.png")
    clock = Clock(frozen=True)  # nothing ends before the clock is moved, however slow the machine
    with sandbox_mod.start(api_key=KEY, api_secret=SECRET, job_seconds=1.0, train_seconds=2.0, clock=clock) as sb:
        client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path / "home")
        client.set_polling(floor=0.1)
        training = client.train("Potions", folder, captions=None)
        assert not client.model(training.model_id).trained  # cached while it trains
        generation = client.generate(first_runnable(client, "numOutputs").id, "a lantern")
        engine, http, cache = client._engine, client._http, client._cache
        gone = weakref.ref(client)
        del client
        gc.collect()
        assert gone() is None and not generation.done and not training.done
        clock.now += 10
        assert generation.wait(30).ok and training.wait(60).ok
        assert training.model_id not in cache.models  # forgotten once trained
        engine.close()
        http.close()
