"""Tests written to kill mutants of the client (scenario_nb/_client*.py) that the rest of the suite let live
(tests/mutants-equivalent.md). The client's parts are driven with a fake transport that notes every request
(method, path, parameters, body) and answers from a small catalog, and a fake engine that notes what it was
handed: each test checks by effect, the requests sent and the handles given to the engine."""

from __future__ import annotations

import gc
import io
from pathlib import Path
from typing import Any, Optional

import pytest

from scenario_nb import _client, _client_models
from scenario_nb._client import LocalState, ScenarioClient, default_home
from scenario_nb._client_generate import GenerationRequests
from scenario_nb._client_jobs import JobsAndAssets
from scenario_nb._client_models import CatalogCache, ModelCatalog, _family
from scenario_nb._client_training import TrainingFront
from scenario_nb._client_workflows import WorkflowRuns
from scenario_nb._errors import InputError, NotFoundError, PermissionDeniedError, ScenarioError, StorageError
from scenario_nb._estimate import CostEstimate
from scenario_nb._generation import Generation
from scenario_nb._history import History
from scenario_nb._models import Model

LORA = "flux.2-dev-lora"


def platform(model_id: str, name: str, inputs: Optional[list] = None, **extra: Any) -> dict:
    return {"id": model_id, "name": name, "type": "custom", "custom": True, "privacy": "public",
            "inputs": inputs if inputs is not None else [{"name": "prompt", "type": "string", "prompt": True}],
            **extra}


FLUX2 = platform("model_bfl-flux-2-dev", "FLUX.2 Dev", [
    {"name": "prompt", "type": "string", "prompt": True}, {"name": "seed", "type": "number"},
    {"name": "modelId", "type": "model", "modelTypes": [LORA]},
    {"name": "loras", "type": "model_array", "modelTypes": [LORA]},
    {"name": "lorasScale", "type": "number_array"}], uiConfig={"lorasComponent": {"scaleInput": "lorasScale"}})
OTHER = platform("model_other", "Other Painter")
MINE = {"id": "model_mine", "name": "Potion Icons", "type": LORA, "status": "trained", "privacy": "private"}


class FakeHTTP:
    """Answers GET /models (pages of the catalog), /models/{id}, and whatever a test puts in `answers` (by
    method and path: a value, or an exception to raise); notes every call."""

    def __init__(self, own: Optional[list] = None, public: Optional[list] = None) -> None:
        self.calls: list[tuple] = []
        self.own = list(own or [])
        self.public = list(public or [])
        self.answers: dict = {}
        self.downloads: list[str] = []

    def _answer(self, method: str, path: str, params: dict) -> Any:
        found = self.answers.get((method, path))
        if isinstance(found, BaseException):
            raise found
        if found is not None:
            return found(params) if callable(found) else found
        if method == "GET" and path == "/models":
            rows = self.public if params.get("privacy") == "public" else self.own
            if params.get("types"):
                rows = [r for r in rows if r.get("type") in params["types"].split(",")]
            if params.get("status"):
                rows = [r for r in rows if r.get("status") == params["status"]]
            return {"models": rows}
        if method == "GET" and path.startswith("/models/"):
            model_id = path.split("/")[2]
            for row in self.own + self.public:
                if row["id"] == model_id:
                    return {"model": row}
            raise NotFoundError(f"no model {model_id}", status_code=404)
        raise AssertionError(f"unexpected {method} {path}")

    def get(self, path: str, **params: Any) -> Any:
        self.calls.append(("GET", path, params))
        return self._answer("GET", path, params)

    def request(self, method: str, path: str, *, params: Optional[dict] = None, json_body: Any = None,
                once: bool = False) -> Any:
        self.calls.append((method, path, params, json_body))
        return self._answer(method, path, params or {})

    def download(self, url: str) -> bytes:
        self.downloads.append(url)
        return b"PNGDATA"


class FakeEngine:
    """Notes each call (name, arguments) and answers with what a test set in `returns` (an exception raises)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.returns: dict = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            value = self.returns.get(name)
            if isinstance(value, BaseException):
                raise value
            return value(*args, **kwargs) if callable(value) else value
        return call

    def named(self, name: str) -> list:
        return [(args, kwargs) for called, args, kwargs in self.calls if called == name]


class Parts(ModelCatalog, GenerationRequests, JobsAndAssets, WorkflowRuns, TrainingFront):
    """The client's parts on a fake transport and engine (what `ScenarioClient` gives them)."""

    def __init__(self, http: FakeHTTP, engine: Optional[FakeEngine] = None, history: Any = None,
                 store: Any = None) -> None:
        self._http = http  # type: ignore[assignment]
        self._engine = engine or FakeEngine()  # type: ignore[assignment]
        self._cache = CatalogCache()
        self.backend_id = "backend-1"
        self._history, self._store = history, store

    @property
    def history(self) -> Any:
        if isinstance(self._history, BaseException):
            raise self._history
        return self._history

    @property
    def store(self) -> Any:
        return self._store


@pytest.fixture
def http() -> FakeHTTP:
    return FakeHTTP(own=[MINE], public=[FLUX2, OTHER])


@pytest.fixture
def parts(http) -> Parts:
    return Parts(http)


# -- _client_models.py ------------------------------------------------------------------------------------
def test_a_lora_type_and_its_base_model_share_a_family():
    assert _family("flux.2-dev-lora") == _family("model_bfl-flux-2-dev") == "flux2dev"
    assert _family("flux.2-dev-edit-lora") == "flux2dev" and _family("flux.1-composition") == "flux1"
    assert _family("Z-Image_Turbo") == "zimageturbo" and _family("model_lora-x") == "lorax"


def test_the_cache_forgets_my_models_and_one_model_and_tells_who_listens():
    cache = CatalogCache()
    told: list = []

    class Panel:
        def changed(self) -> None:
            told.append("panel")
    panel = Panel()
    cache.on_change(panel.changed)
    cache.on_change(lambda: told.append("function"))
    cache.own = (1.0, [])
    cache.models.update({"a": "model a", "b": "model b"})
    cache.forget("a")
    assert cache.own is None and list(cache.models) == ["b"] and told == ["panel", "function"]
    cache.own = (1.0, [])
    cache.forget()
    assert cache.own is None and list(cache.models) == ["b"] and len(told) == 4
    del panel
    gc.collect()
    cache.forget()
    assert told[4:] == ["function"] and len(cache._listeners) == 1
    cache.forget("never cached")
    assert told[5:] == ["function"]  # the one left is the function's


def test_a_finished_training_is_forgotten_once():
    cache = CatalogCache()
    cache.models.update({"m1": "x", "m2": "y"})

    class Handle:
        def __init__(self, model_id: str, done: bool) -> None:
            self.model_id, self.done = model_id, done
    cache.forget_when_trained(Handle("m1", False))
    assert "m1" in cache.models
    cache.forget_when_trained(Handle("m1", True))
    assert "m1" not in cache.models
    cache.models["m1"], cache.own = "again", (1.0, [])
    cache.forget_when_trained(Handle("m1", True))
    assert cache.models["m1"] == "again" and cache.own is not None


def test_models_are_listed_with_the_apis_filters_and_my_query(parts, http):
    assert [m.id for m in parts.models()] == ["model_mine"]
    assert http.calls[-1] == ("GET", "/models", {"privacy": "private"})
    found = parts.models(public=True, status="ready", types=["custom", "x"], tags="t", page_size=10)
    assert http.calls[-1] == ("GET", "/models", {"privacy": "public", "status": "ready", "pageSize": 10,
                                                 "types": "custom,x", "tags": "t"})
    assert found == []
    assert [m.id for m in parts.models(public=True, query="PAINTER")] == ["model_other"]
    assert [m.id for m in parts.models(public=True, query="BFL-flux")] == ["model_bfl-flux-2-dev"]


def test_a_model_that_can_run_is_read_once_one_not_trained_each_time(parts, http):
    draft = {"id": "model_draft", "name": "Draft", "type": LORA, "status": "new"}
    http.own.append(draft)
    for _ in range(2):
        assert parts.model("model_bfl-flux-2-dev").id == "model_bfl-flux-2-dev"
        assert parts.model("model_mine").trained
        assert parts.model("model_draft").status == "new"
    reads = [c[1] for c in http.calls]
    assert reads.count("/models/model_bfl-flux-2-dev") == 1 and reads.count("/models/model_mine") == 1
    assert reads.count("/models/model_draft") == 2
    parts.model("model_mine", refresh=True)
    assert [c[1] for c in http.calls].count("/models/model_mine") == 2
    assert parts._cache.models["model_draft"].id == "model_draft"


def test_a_model_is_found_by_id_exact_name_or_unique_prefix(parts, http):
    assert parts.find_model("  model_mine ").id == "model_mine"
    with pytest.raises(InputError, match="^model model_gone not found; list your models with %scenario models$"):
        parts.find_model("model_gone")
    assert parts.find_model(" flux.2 dev ").id == "model_bfl-flux-2-dev"
    assert parts.find_model("potion").id == "model_mine"
    http.public.append(platform("model_flux2b", "FLUX.2 Dev Fast"))
    parts._cache.public = None
    assert parts.find_model("FLUX.2 dev").id == "model_bfl-flux-2-dev"  # exact beats the longer name
    with pytest.raises(InputError) as several:
        parts.find_model("flux")
    assert str(several.value) == ("'flux' matches several models: FLUX.2 Dev (model_bfl-flux-2-dev), FLUX.2 Dev Fast "
                                  "(model_flux2b); use more of the name or the id")
    http.public.append(dict(OTHER))  # the same model listed twice is one model
    parts._cache.public = None
    assert parts.find_model("other painter").id == "model_other" and parts.find_model("other").id == "model_other"
    with pytest.raises(InputError) as close:
        parts.find_model("Potion Icon5")
    assert str(close.value) == "no model named 'Potion Icon5'; did you mean 'Potion Icons'?"
    with pytest.raises(InputError) as none:
        parts.find_model("zzzz")
    assert str(none.value) == "no model named 'zzzz'; list them with %scenario models"


def test_a_name_listed_twice_for_one_model_wins_over_longer_names(parts, http):
    http.public += [dict(OTHER), platform("model_pro", "Other Painter Pro")]
    assert parts.find_model("Other Painter").id == "model_other"


def test_close_names_are_suggested_from_a_likeness_of_one_half(parts, http):
    http.public = [platform("model_q", "Qwen Image")]
    with pytest.raises(InputError) as close:
        parts.find_model("Qxyn Imbzz")  # a likeness of exactly 0.5
    assert str(close.value) == "no model named 'Qxyn Imbzz'; did you mean 'Qwen Image'?"


def test_a_model_name_shared_by_two_models_is_ambiguous(parts, http):
    http.own.append({**MINE, "id": "model_mine2"})
    with pytest.raises(InputError, match="matches several models: Potion Icons \\(model_mine\\), Potion Icons"):
        parts.find_model("Potion Icons")


def test_at_most_six_candidates_are_named_and_three_close_names(parts, http):
    http.public = [platform(f"model_p{n}", f"Painter {n}") for n in range(8)]
    with pytest.raises(InputError) as several:
        parts.find_model("painter")
    assert str(several.value).count("Painter ") == 6
    http.public = [platform(f"model_q{n}", f"Sketchy{n}") for n in range(5)]
    parts._cache.public = None
    with pytest.raises(InputError) as close:
        parts.find_model("Sketchy")
    assert "matches several" in str(close.value)
    with pytest.raises(InputError) as tips:
        parts.find_model("Sketchx1")
    assert str(tips.value).startswith("no model named 'Sketchx1'; did you mean 'Sketchy1' or ")
    assert str(tips.value).count(" or ") == 2


def test_my_models_are_listed_again_after_a_minute_and_the_public_ones_once(parts, http, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(_client_models.time, "monotonic", lambda: now[0])
    parts.find_model("Potion Icons")
    parts.find_model("Potion Icons")
    now[0] += 60
    parts.find_model("Potion Icons")
    lists = [c[2]["privacy"] for c in http.calls if c[1] == "/models"]
    assert lists == ["private", "public"]
    now[0] += 0.5
    parts.find_model("Potion Icons")
    assert [c[2]["privacy"] for c in http.calls if c[1] == "/models"] == ["private", "public", "private"]
    assert parts._cache.own[0] == 1060.5
    assert parts._own_models(max_age=0.1) is not None
    assert parts.public_models() is parts.public_models()
    assert [c[2]["privacy"] for c in http.calls if c[1] == "/models"].count("public") == 1


def test_the_runnable_catalog_is_the_public_custom_models_listed_once(parts, http):
    http.public.append({"id": "model_pub_lora", "name": "Public LoRA", "type": "custom", "custom": False})
    assert [m.id for m in parts._runnable_catalog()] == ["model_bfl-flux-2-dev", "model_other"]
    assert parts._runnable_catalog() is parts._runnable_catalog()
    assert [c for c in http.calls if c[1] == "/models"] == [
        ("GET", "/models", {"privacy": "public", "types": "custom"})]


def test_a_lora_runs_through_its_recorded_base_first_else_a_base_of_its_family(parts, http):
    mine = Model.parse(MINE)
    assert parts.base_model_for(mine).id == "model_bfl-flux-2-dev"
    assert parts.base_model_for(mine).id == "model_bfl-flux-2-dev"  # cached per type: no read
    assert [c[1] for c in http.calls].count("/models/model_bfl-flux-2-dev") == 1
    odd = Model.parse({"id": "model_odd", "name": "Odd", "type": "odd-lora", "status": "trained",
                       "compliantModelIds": ["model_base-x"]})
    taker = platform("model_base-x", "Base X", [{"name": "loras", "type": "model_array",
                                                 "modelTypes": ["odd-lora"]}])
    by_name = platform("model_b2", "Odd Maker", [{"name": "loras", "type": "model_array",
                                                  "modelTypes": ["odd-lora"]}])
    http.public = [FLUX2, OTHER, platform("model_zzz", "Zzz"), taker]
    parts._cache.runnable = None
    assert parts.base_model_for(odd).id == "model_base-x"
    reads = [c[1] for c in http.calls if c[1].startswith("/models/")]
    assert reads[-1] == "/models/model_base-x" and "/models/model_zzz" not in reads  # the hint first
    http.public = [FLUX2, OTHER, platform("model_zzz", "Zzz"), by_name]
    parts._cache.runnable, parts._cache.base_for_type = None, {}
    assert parts.base_model_for(odd).id == "model_b2"  # named for the type's family ("odd")
    reads = [c[1] for c in http.calls if c[1].startswith("/models/")]
    assert "/models/model_zzz" not in reads


def test_a_base_of_no_family_is_looked_for_among_the_first_60_and_a_refusal_skipped(parts, http):
    lora = Model.parse({"id": "model_l", "name": "Lx", "type": "weird-lora", "status": "trained"})
    takes = [{"name": "m", "type": "model", "modelTypes": ["weird-lora"]}]
    http.public = [platform(f"model_n{n}", f"N{n}") for n in range(60)] + [platform("model_late", "Late", takes)]
    with pytest.raises(InputError) as none:
        parts.base_model_for(lora)
    assert str(none.value) == ("no public base model accepts weird-lora models like Lx; pass base_model= with a "
                               "model that does")
    assert len([c for c in http.calls if c[1].startswith("/models/")]) == 60
    wrong_type = [{"name": "loras", "type": "model_array", "modelTypes": ["other-lora"]},
                  {"name": "prompt", "type": "string", "modelTypes": ["weird-lora"]}]
    http.public = [platform("model_a", "A", wrong_type), platform("model_b", "B", takes),
                   platform("model_c", "C", takes)]
    parts._cache.runnable = None
    http.answers[("GET", "/models/model_b")] = PermissionDeniedError("private", status_code=403)
    assert parts.base_model_for(lora).id == "model_c"
    assert parts._cache.base_for_type["weird-lora"].id == "model_c"


def test_a_known_base_that_is_gone_is_skipped(parts, http):
    zlora = Model.parse({"id": "model_z", "name": "Z", "type": "zimage-lora", "status": "trained"})
    takes = [{"name": "loras", "type": "model_array", "modelTypes": ["zimage-lora"]}]
    http.public = [platform("model_zz", "Zz", takes)]
    assert parts.base_model_for(zlora).id == "model_zz"
    assert [c[1] for c in http.calls if c[1].startswith("/models/")] == ["/models/model_z-image", "/models/model_zz"]
    refused = Model.parse({"id": "model_y", "name": "Y", "type": "zimage-turbo-lora", "status": "trained"})
    http.public = [platform("model_z-image", "Z Image"), platform("model_yy", "Yy", [
        {"name": "loras", "type": "model_array", "modelTypes": ["zimage-turbo-lora"]}])]
    http.answers[("GET", "/models/model_z-image")] = PermissionDeniedError("private", status_code=403)
    parts._cache.runnable = None
    http.calls.clear()
    assert parts.base_model_for(refused).id == "model_yy"
    assert [c[1] for c in http.calls if c[1].startswith("/models/")] == ["/models/model_z-image", "/models/model_yy"]


def test_a_lora_goes_in_the_single_slot_or_with_a_scale_in_the_list(parts, http):
    mine = Model.parse(MINE)
    flux = Model.parse(FLUX2)
    assert parts.route(flux) == (flux, {})
    base, extra = parts.route(mine)
    assert base.id == "model_bfl-flux-2-dev" and extra == {"modelId": "model_mine"}
    base, extra = parts.route(mine, scaled=True)
    assert extra == {"loras": ["model_mine"], "lorasScale": [1.0]}
    base, extra = parts.route(mine, "FLUX.2 Dev")
    assert base.id == "model_bfl-flux-2-dev" and extra == {"modelId": "model_mine"}
    with pytest.raises(InputError, match="^model Draft is new, not trained yet; it cannot generate$"):
        parts.route(Model.parse({"id": "model_d", "name": "Draft", "type": LORA, "status": "new"}))
    with pytest.raises(InputError, match=f"^base model Other Painter takes no LoRA input for {LORA}$"):
        parts.route(mine, "Other Painter")


def test_a_lora_list_of_any_type_and_its_own_scale_input(parts, http):
    any_list = platform("model_any", "Any", [{"name": "prompt", "type": "string"},
                                             {"name": "adapters", "type": "model_array"},
                                             {"name": "adapterWeights", "type": "number_array"},
                                             {"name": "one", "type": "model", "modelTypes": ["other-lora"]}],
                        uiConfig={"lorasComponent": {"scaleInput": "adapterWeights"}})
    plain = platform("model_plain", "Plain", [{"name": "prompt", "type": "string"},
                                              {"name": "loras", "type": "model_array", "modelTypes": [LORA]},
                                              {"name": "lorasScale", "type": "number_array"}])
    noscale = platform("model_noscale", "Noscale", [{"name": "loras", "type": "model_array"},
                                                    {"name": "x", "type": "model_array", "modelTypes": ["y"]}])
    wrong = platform("model_wrong", "Wrong", [{"name": "loras", "type": "model_array", "modelTypes": ["y"]}])
    http.public = [any_list, plain, noscale, wrong]
    mine = Model.parse(MINE)
    assert parts.route(mine, "Any")[1] == {"adapters": ["model_mine"], "adapterWeights": [1.0]}
    assert parts.route(mine, "Plain")[1] == {"loras": ["model_mine"], "lorasScale": [1.0]}
    assert parts.route(mine, "Noscale")[1] == {"loras": ["model_mine"]}
    with pytest.raises(InputError):
        parts.route(mine, "Wrong")


# -- _client_generate.py ------------------------------------------------------------------------------------
def test_a_request_is_routed_and_validated_with_the_prompt_in_the_runnable_models_input(parts, http):
    requested, runnable, body = parts.prepare("Potion Icons", "a potion", seed=3)
    assert (requested.id, runnable.id) == ("model_mine", "model_bfl-flux-2-dev")
    assert body == {"seed": 3, "prompt": "a potion", "modelId": "model_mine"}
    _, _, scaled = parts.prepare("Potion Icons", "a potion", lorasScale=[0.6])
    assert scaled == {"lorasScale": [0.6], "prompt": "a potion", "loras": ["model_mine"]}
    _, _, bare = parts.prepare(Model.parse(FLUX2), None, lorasScale=[0.5])
    assert bare == {"lorasScale": [0.5]}
    http.public.append(platform("model_instr", "Instr", [{"name": "instruction", "type": "string", "prompt": True}]))
    parts._cache.public = None
    assert parts.prepare("Instr", "do it")[2] == {"instruction": "do it"}
    with pytest.raises(InputError, match="has no input 'bogus'"):
        parts.prepare("FLUX.2 Dev", "p", bogus=1)


def test_a_dry_run_prices_the_body_sent_to_the_runnable_model(parts, http):
    http.answers[("POST", "/generate/custom/model_bfl-flux-2-dev")] = {"creativeUnitsCost": 7.5}
    estimate = parts.estimate("Potion Icons", "a potion", seed=1)
    assert http.calls[-1] == ("POST", "/generate/custom/model_bfl-flux-2-dev", {"dryRun": "true"},
                              {"seed": 1, "prompt": "a potion", "modelId": "model_mine"})
    assert isinstance(estimate, CostEstimate) and estimate.creative_units == 7.5
    assert estimate.model_id == "model_mine" and estimate.inputs == http.calls[-1][3]


def test_generations_hand_the_engine_handles_of_what_was_asked(parts, http):
    engine = parts._engine
    engine.returns["submit"] = lambda handle: handle
    engine.returns["submit_many"] = lambda handles: handles
    lora = parts.generate("Potion Icons", "a potion", source="magic", seed=2)
    assert (lora.model_id, lora.run_model_id, lora.base_model_id) == ("model_mine", "model_bfl-flux-2-dev",
                                                                      "model_bfl-flux-2-dev")
    assert lora.inputs == {"seed": 2, "prompt": "a potion", "modelId": "model_mine"} and lora.source == "magic"
    assert lora.model_name == "Potion Icons" and lora.prompt_name == "prompt" and lora._engine is engine
    plain = parts.generate("FLUX.2 Dev", "p")
    assert plain.base_model_id is None and plain.run_model_id == "model_bfl-flux-2-dev" and plain.source == "api"
    many = parts.generate_many("Other Painter", ["a", "b"], source="grid")
    assert [h.inputs for h in many] == [{"prompt": "a"}, {"prompt": "b"}] and {h.source for h in many} == {"grid"}
    assert len(engine.named("submit")) == 2 and len(engine.named("submit_many")) == 1
    with_base = parts.generate_many("Potion Icons", ["x"], base_model="FLUX.2 Dev")[0]
    assert with_base.inputs == {"prompt": "x", "modelId": "model_mine"}
    assert parts.generate("Potion Icons", "y", base_model="FLUX.2 Dev").run_model_id == "model_bfl-flux-2-dev"


class Rows:
    """A stand-in for the history's reads of re-run safety and jobs."""

    def __init__(self, reusable: Any = None, row: Any = None) -> None:
        self.reusable, self.row, self.asked = reusable, row, []

    def find_reusable(self, key: str, backend_id: str) -> Any:
        self.asked.append((key, backend_id))
        return self.reusable

    def get(self, job_id: str) -> Any:
        self.asked.append(job_id)
        if isinstance(self.row, BaseException):
            raise self.row
        return self.row


def test_the_same_request_is_found_live_stored_or_followed(http):
    engine = FakeEngine()
    rows = Rows()
    parts = Parts(http, engine, history=rows)
    body = {"prompt": "p"}
    key = History.request_key("model_other", "p", body)
    engine.returns["live_handle"] = "live"
    assert parts.previous("Other Painter", body) == "live"
    assert engine.named("live_handle") == [((), {"request_key": key})] and rows.asked == []
    engine.returns["live_handle"] = None
    assert parts.previous(Model.parse(OTHER), body) is None and rows.asked == [(key, "backend-1")]
    rows.reusable = "row"
    engine.returns.update(outputs_stored=True, finished_handle="stored", follow_record="followed")
    assert parts.previous("Other Painter", body) == "stored"
    engine.returns["outputs_stored"] = False
    assert parts.previous("Other Painter", body) == "followed"
    assert engine.named("follow_record") == [(("row",), {})] and engine.named("finished_handle") == [(("row",), {})]
    engine.returns["follow_record"] = NotFoundError("gone", status_code=404)
    assert parts.previous("Other Painter", body) is None


# -- _client_workflows.py ------------------------------------------------------------------------------------
WORKFLOW = {"id": "wf1", "name": "Flow", "status": "ready", "inputs": [{"name": "image", "type": "string"},
                                                                        {"name": "strength", "type": "number"}]}


def test_workflows_are_listed_read_priced_and_run(parts, http):
    http.answers[("GET", "/workflows")] = {"workflows": [{"id": "wf1"}, {"id": "wf2"}]}
    assert parts.workflows() == [{"id": "wf1"}, {"id": "wf2"}]
    assert http.calls[-1] == ("GET", "/workflows", {"pageSize": 50})
    http.answers[("GET", "/workflows/wf1")] = {"workflow": WORKFLOW}
    flow = parts.workflow("wf1")
    assert (flow.id, flow.type, flow.custom, flow.status, flow.name) == ("wf1", "workflow", True, "ready", "Flow")
    http.answers[("PUT", "/workflows/wf1/run")] = {"creativeUnitsCost": 3}
    estimate = parts.estimate_workflow("wf1", image="asset_1", strength=None)
    assert http.calls[-1] == ("PUT", "/workflows/wf1/run", {"dryRun": "true"}, {"image": "asset_1"})
    assert estimate.creative_units == 3 and estimate.model_id == "wf1" and estimate.inputs == {"image": "asset_1"}
    parts._engine.returns["submit"] = lambda handle: handle
    run = parts.run_workflow("wf1", source="panel", image="asset_2")
    assert isinstance(run, Generation) and run.kind == "workflow" and run.model_id == run.run_model_id == "wf1"
    assert run.inputs == {"image": "asset_2"} and run.source == "panel" and run.model_name == "Flow"
    assert parts.run_workflow("wf1", image="a").source == "api"
    with pytest.raises(InputError, match="has no input 'bogus'"):
        parts.run_workflow("wf1", bogus=1)


def test_only_a_ready_workflow_runs(parts, http):
    http.answers[("GET", "/workflows/wf1")] = {"workflow": {**WORKFLOW, "status": "draft"}}
    with pytest.raises(InputError, match="^workflow Flow is draft; only ready workflows can run$"):
        parts.estimate_workflow("wf1")
    http.answers[("GET", "/workflows/wf1")] = {"workflow": {k: v for k, v in WORKFLOW.items() if k != "status"}}
    assert parts.workflow("wf1").status == ""
    parts._engine.returns["submit"] = "sent"
    assert parts.run_workflow("wf1") == "sent"
    assert not [c for c in http.calls if c[0] == "PUT"]


# -- _client_jobs.py ------------------------------------------------------------------------------------
def test_jobs_are_listed_with_the_apis_filters_up_to_a_limit(parts, http):
    pages = {None: {"jobs": [{"id": "j1"}, {"id": "j2"}], "nextPaginationToken": "t"},
             "t": {"jobs": [{"id": "j3"}]}}
    http.answers[("GET", "/jobs")] = lambda params: pages[params.get("paginationToken")]
    assert [j["id"] for j in parts.jobs()] == ["j1", "j2", "j3"]
    assert http.calls[0] == ("GET", "/jobs", {"pageSize": 100})
    http.calls.clear()
    assert [j["id"] for j in parts.jobs(status="success", types=["a", "b"], workflow_id="w", limit=2)] == ["j1", "j2"]
    assert http.calls == [("GET", "/jobs", {"status": "success", "types": "a,b", "workflowId": "w", "pageSize": 2})]
    http.calls.clear()
    assert len(parts.jobs(created_after="2026-01-01", limit=250)) == 3
    assert http.calls[0][2] == {"createdAfter": "2026-01-01", "pageSize": 100}
    for bad in ({"status": "x"}, {"types": "t"}, {"workflow_id": "w"}):
        with pytest.raises(InputError) as refused:
            parts.jobs(created_after="2026-01-01", **bad)
        assert str(refused.value) == ("jobs(): the API takes created_after only without status, types and "
                                      "workflow_id; filter the results yourself, or drop created_after")


def test_a_job_is_read_from_the_store_else_reattached(http):
    engine, rows = FakeEngine(), Rows(row="row")
    parts = Parts(http, engine, history=rows)
    http.answers[("GET", "/jobs/j1")] = {"job": {"jobId": "j1"}}
    assert parts.get_job("j1") == {"jobId": "j1"}
    with pytest.raises(InputError, match="^no job id given; %scenario history lists them$"):
        parts.job("  ")
    engine.returns.update(live_handle=None, outputs_stored=True, finished_handle="stored", reattach="reattached")
    assert parts.job(" j1 ") == "stored" and rows.asked == ["j1"]
    assert engine.named("live_handle") == [((), {"job_id": "j1"})]
    assert engine.named("outputs_stored") == [(("row",), {})] and engine.named("finished_handle") == [(("row",), {})]
    engine.returns["outputs_stored"] = False
    assert parts.job("j1") == "reattached" and engine.named("reattach")[-1] == (("j1",), {})

    class Live:
        ok = False
    live = Live()
    engine.returns.update(outputs_stored=True, live_handle=live)
    asked = len(rows.asked)
    assert parts.stored_job("j1") is None
    Live.ok = True
    assert parts.stored_job("j1") is live and len(rows.asked) == asked  # this kernel's own handle, no history read
    engine.returns["live_handle"] = None
    rows.row = None
    assert parts.stored_job("j1") is None
    rows.row = StorageError("locked")
    assert parts.stored_job("j1") is None
    engine.returns["reattach"] = lambda job_id: type("H", (), {"cancel": lambda self: "canceled " + job_id})()
    assert parts.cancel("j9") == "canceled j9"


class Store:
    def __init__(self, held: bool = False) -> None:
        self.held, self.put_calls, self.asked = held, [], []

    def has(self, asset_id: str, mime: str) -> bool:
        self.asked.append((asset_id, mime))
        return self.held

    def put(self, asset_id: str, data: bytes, mime: str) -> None:
        self.put_calls.append((asset_id, data, mime))

    def path_for(self, asset_id: str, mime: str) -> Path:
        return Path("/store") / f"{asset_id}.{mime.split('/')[1]}"


def test_an_asset_is_downloaded_once_into_the_store(http):
    store = Store()
    parts = Parts(http, store=store)
    http.answers[("GET", "/assets/asset_1")] = {"asset": {"id": "asset_1", "url": "https://cdn/a?sig"}}
    assert parts.asset("asset_1") == {"id": "asset_1", "url": "https://cdn/a?sig"}
    assert parts.fetch_asset(" asset_1 ") == Path("/store/asset_1.png")
    assert store.put_calls == [("asset_1", b"PNGDATA", "image/png")] and http.downloads == ["https://cdn/a?sig"]
    http.answers[("GET", "/assets/asset_2")] = {"asset": {"url": "u2", "mimeType": "image/webp"}}
    store.held = True
    assert parts.fetch_asset("asset_2") == Path("/store/asset_2.webp")
    assert store.asked[-1] == ("asset_2", "image/webp") and len(store.put_calls) == 1 and len(http.downloads) == 1
    with pytest.raises(InputError, match="^no asset id given$"):
        parts.fetch_asset(" ")


def png(size: tuple = (4, 4), fmt: str = "PNG", shade: int = 10) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", size, (200, shade, 10)).save(buf, format=fmt)
    return buf.getvalue()


def test_an_image_is_uploaded_from_bytes_a_path_or_pillow(parts, http, tmp_path):
    import base64

    from PIL import Image
    http.answers[("POST", "/assets")] = {"asset": {"id": "asset_up"}}
    data = png()
    assert parts.upload_image(data) == "asset_up"
    assert http.calls[-1] == ("POST", "/assets", None, {"name": "upload.png", "image": base64.b64encode(data).decode()})
    parts.upload_image(bytearray(png(fmt="JPEG")), name="mine.jpg")
    assert http.calls[-1][3]["name"] == "mine.jpg"
    parts.upload_image(png(fmt="JPEG"))
    assert http.calls[-1][3]["name"] == "upload.jpeg"
    path = tmp_path / "cat.png"
    path.write_bytes(data)
    parts.upload_image(path)
    assert http.calls[-1][3] == {"name": "cat.png", "image": base64.b64encode(data).decode()}
    parts.upload_image(str(path), name="renamed.png")
    assert http.calls[-1][3]["name"] == "renamed.png"
    parts.upload_image(Image.new("RGB", (3, 3)))
    sent = base64.b64decode(http.calls[-1][3]["image"])
    assert sent.startswith(b"\x89PNG") and http.calls[-1][3]["name"] == "upload.png"
    with pytest.raises(InputError, match="^cannot read .*missing.png: No such file or directory$"):
        parts.upload_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="^upload_image takes bytes, a file path or a PIL image$"):
        parts.upload_image(12)
    with pytest.raises(InputError, match="^the upload is not an image Pillow can read; upload a PNG, JPEG or WebP$"):
        parts.upload_image(b"not an image")
    (tmp_path / "notes.png").write_bytes(b"text")
    with pytest.raises(InputError, match="^notes.png is not an image Pillow can read"):
        parts.upload_image(tmp_path / "notes.png")
    assert len([c for c in http.calls if c[0] == "POST"]) == 6


def test_an_image_too_large_to_decode_safely_is_refused_before_upload(parts, http, monkeypatch):
    from PIL import Image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InputError) as big:
        parts.upload_image(png((12, 12)), name="big.png")  # 144 pixels: over the limit, a warning
    assert str(big.value) == ("big.png is too large: 12 × 12 pixels (0 megapixels; Pillow opens at most 0 megapixels); "
                              "resize it (e.g. to 2048 px) and upload it again")
    with pytest.raises(InputError, match="^the upload is too large: "):
        parts.upload_image(png((30, 30)))  # over twice the limit: an error
    assert not [c for c in http.calls if c[0] == "POST"]


# -- _client_training.py ------------------------------------------------------------------------------------
def test_the_training_types_most_common_in_the_catalog_come_first(parts, http):
    from scenario_nb._training import STANDARD_TYPES
    assert parts.training_types()[0] == LORA  # MINE
    http.own = [{"id": "model_z", "name": "Z", "type": "zimage-lora"}]
    parts._cache.own = None
    assert parts.training_types()[0] == "zimage-lora"  # counted once: before every type counted none
    http.own = [{"id": f"model_z{n}", "name": f"Z{n}", "type": "zimage-lora"} for n in range(2)]
    http.public = [FLUX2, {"id": "model_e", "name": "E", "type": "flux.2-dev-edit-lora"}]
    parts._cache.own = parts._cache.public = None
    ordered = parts.training_types()
    assert ordered[0] == "zimage-lora" and sorted(ordered) == sorted(STANDARD_TYPES)
    assert ordered[1:] == [t for t in STANDARD_TYPES if t != "zimage-lora"]
    http.answers[("GET", "/models")] = ScenarioError("offline")
    parts._cache.own = parts._cache.public = None
    assert parts.training_types() == list(STANDARD_TYPES)


def test_a_training_type_is_checked_by_name(parts):
    assert parts._training_type(None) == LORA and parts._training_type(f" {LORA} ") == LORA
    with pytest.raises(InputError) as edit:
        parts._training_type("flux.2-dev-edit-lora")
    assert str(edit.value).startswith("flux.2-dev-edit-lora is an edit LoRA: it trains on before/after pairs")
    assert str(edit.value).endswith(f"train a standard LoRA such as {LORA}")
    with pytest.raises(InputError, match=r"^unknown training type 'flux.2-dev-lor'; did you mean flux.2-dev-lora"):
        parts._training_type("flux.2-dev-lor")
    from scenario_nb._training import STANDARD_TYPES
    with pytest.raises(InputError) as unknown:
        parts._training_type("qqq")
    assert str(unknown.value) == f"unknown training type 'qqq'; one of {', '.join(STANDARD_TYPES)}"


def test_a_caption_plan_is_auto_none_or_a_table_of_the_training_images():
    plan = TrainingFront._caption_plan
    assert plan(None, []) is None and plan(" NONE ", []) is None and plan(" Auto ", []) == "auto"
    with pytest.raises(InputError, match="^captions is \"auto\", None or a dict {filename: caption}, not 'x'$"):
        plan("x", [])
    with pytest.raises(InputError, match=r"^captions is \"auto\", None or a dict {filename: caption} \(e.g. from "):
        plan(["a"], [])


def test_a_caption_table_names_only_training_images_with_text(monkeypatch):
    class Image:
        def __init__(self, name: str) -> None:
            self.name = name
    images = [Image(f"i{n}.png") for n in range(7)]
    plan = TrainingFront._caption_plan
    assert plan({"i1.png": "  a cat "}, images[:3]) == {"i0.png": "", "i1.png": "a cat", "i2.png": ""}
    with pytest.raises(InputError) as unknown:
        plan({"x.png": "a"}, images)
    assert str(unknown.value) == ("captions names 'x.png', which is not one of the training images (i0.png, i1.png, "
                                  "i2.png, i3.png, i4.png, ...)")
    with pytest.raises(InputError) as few:
        plan({"x.png": "a"}, images[:5])
    assert str(few.value).endswith("(i0.png, i1.png, i2.png, i3.png, i4.png)")
    with pytest.raises(InputError, match="^the caption of i0.png must be text, not int$"):
        plan({"i0.png": 3}, images)


@pytest.fixture
def folder(tmp_path) -> Path:
    for n in range(5):
        (tmp_path / f"img{n}.png").write_bytes(png((1024, 1024), shade=n))
    return tmp_path


def test_a_training_is_checked_then_handed_to_the_engine_and_the_catalog_forgotten(parts, folder):
    engine = parts._engine
    engine.returns["train"] = "estimate"
    parts._cache.own = (1.0, [])
    assert parts.train(" Cats ", folder, type=LORA, captions=None, parameters={"nbEpochs": 2}, dry_run=True,
                       max_cost=5.0, confirm=print, force=1) == "estimate"
    (plan,), kwargs = engine.named("train")[0]
    assert (plan.name, plan.type, plan.captions, plan.parameters, plan.force) == (
        "Cats", LORA, None, {"nbEpochs": 2}, True)
    assert [i.name for i in plan.images] == [f"img{n}.png" for n in range(5)]
    assert kwargs == {"dry_run": True, "max_cost": 5.0, "confirm": print} and parts._cache.own is None
    parts.train("Dogs", folder)
    (plan,), kwargs = engine.named("train")[1]
    assert plan.captions == "auto" and plan.parameters == {} and plan.force is False and plan.type == LORA
    assert kwargs == {"dry_run": False, "max_cost": None, "confirm": None}
    parts._cache.own = (1.0, [])
    engine.returns["train"] = RuntimeError("stopped")
    with pytest.raises(RuntimeError):
        parts.train("Dogs", folder)
    assert parts._cache.own is None
    engine.returns["train"] = "ok"
    with pytest.raises(InputError) as nameless:
        parts.train("", folder)
    assert str(nameless.value) == "a training needs a name for its model, e.g. client.train(\"Potion Icons\", folder)"
    for name, message in ((None, "a training needs a name"), ("  ", "a training needs a name"), (5, "needs a name"),
                          ("x" * 65, "the model name is 65 characters; Scenario takes at most 64")):
        with pytest.raises(InputError, match=message):
            parts.train(name, folder)
    parts.train("x" * 64, folder)
    with pytest.raises(InputError, match=r"^parameters is a dict such as {\"nbEpochs\": 4}$"):
        parts.train("Dogs", folder, parameters=[1])
    assert len(engine.named("train")) == 4


def test_captions_are_asked_of_the_engine_for_the_loaded_images(parts, folder):
    parts._engine.returns["caption_images"] = "table"
    assert parts.caption_images(folder, details_level="detailed", max_cost=2.0) == "table"
    (images, level, cost), _ = parts._engine.named("caption_images")[0]
    assert [i.name for i in images] == [f"img{n}.png" for n in range(5)] and (level, cost) == ("detailed", 2.0)
    parts.caption_images(folder)
    assert parts._engine.named("caption_images")[1][0][1:] == ("action", None)


def test_a_training_handle_from_the_engine_tells_the_catalog_when_it_ends(parts, folder):
    from scenario_nb._training import Training

    class Handle(Training):
        def __init__(self) -> None:
            self.told: list = []

        def on_update(self, callback: Any) -> None:
            self.told.append(callback)
    handle = Handle()
    parts._engine.returns["train"] = handle
    assert parts.train("Cats", folder) is handle
    assert handle.told == [parts._cache.forget_when_trained]


class TrainingRows:
    def __init__(self, rows: list) -> None:
        self.rows, self.asked = rows, []

    def trainings(self, backend_id: str) -> list:
        self.asked.append(backend_id)
        return self.rows

    def captions(self, backend_id: str) -> list:
        return ["caption of " + backend_id]


class Row:
    def __init__(self, model_id: str, name: str, status: str = "training", in_flight: bool = True,
                 owner: str = "host:1") -> None:
        self.model_id, self.name, self.status, self.in_flight, self.owner = model_id, name, status, in_flight, owner


class Handle:
    def __init__(self, model_id: str) -> None:
        self.model_id, self.updates = model_id, []

    def on_update(self, callback: Any) -> None:
        self.updates.append(callback)


def test_a_training_is_reattached_by_id_or_by_the_name_of_a_training_here(http):
    engine = FakeEngine()
    rows = TrainingRows([Row("model_t1", "Cats"), Row("model_t0", "cats")])
    parts = Parts(http, engine, history=rows)
    engine.returns["reattach_training"] = Handle
    handle = parts.training(" model_x ")
    assert handle.model_id == "model_x" and handle.updates == [parts._cache.forget_when_trained] and rows.asked == []
    assert parts.training("CATS").model_id == "model_t1" and rows.asked == ["backend-1"]
    assert parts.training("Potion Icons").model_id == "model_mine"  # no row: a model of the name
    with pytest.raises(InputError, match="^no model given; client.trainings\\(\\) lists them$"):
        parts.training(" ")
    with pytest.raises(InputError, match="^no model given"):
        parts.training(None)
    rows.rows = [Row("claim_1", "Cats", status="preparing", owner="otherhost:7")]
    with pytest.raises(InputError) as preparing:
        parts.training("cats")
    assert str(preparing.value).startswith("Cats is being prepared by otherhost:7 (captions, uploads): its training "
                                           "starts there")
    engine.returns["resume_training"] = None
    rows.rows = []
    resumed = parts.resume_training("model_r")
    assert resumed.model_id == "model_r" and engine.named("resume_training") == [((resumed,), {})]


def test_drafts_are_listed_and_removed_through_the_engine(http):
    engine = FakeEngine()
    parts = Parts(http, engine, history=TrainingRows([]))
    engine.returns["drafts"] = [{"id": "model_d1", "name": "D1"}, {"id": "model_d2", "name": "D2"}]
    assert [(m.id, m.name) for m in parts.drafts()] == [("model_d1", "D1"), ("model_d2", "D2")]
    engine.returns["delete_draft"] = {"id": "model_d1", "name": "D1"}
    parts._cache.models["model_d1"] = "cached"
    parts._cache.models["model_d2"] = "cached"
    removed = parts.delete_draft("D1")
    assert removed.id == "model_d1" and engine.named("delete_draft") == [(("D1",), {})]
    assert list(parts._cache.models) == ["model_d2"]
    assert parts.recorded_captions() == ["caption of backend-1"]
    engine.returns["trainings_in_flight"] = ["t"]
    assert parts.trainings_in_flight() == ["t"]


def test_every_training_of_this_backend_is_listed_newest_first(http):
    engine = FakeEngine()
    rows = TrainingRows([Row("model_live", "A"), Row("claim_x", "B", status="preparing"),
                         Row("model_done", "C", status="trained", in_flight=False), Row("model_run", "D"),
                         Row("model_lost", "E"), Row("model_after", "H")])
    parts = Parts(http, engine, history=rows)
    http.own = [{"id": "model_run", "name": "D", "type": LORA, "status": "training"},
                {"id": "model_far", "name": "F", "type": LORA, "status": "training"},
                {"id": "model_idle", "name": "G", "type": LORA, "status": "trained"}]
    engine.returns.update(live_training=lambda model_id: "live" if model_id == "model_live" else None,
                          finished_training=lambda row: "finished " + row.model_id)

    def reattach(model_id: str) -> str:
        if model_id == "model_lost":
            raise NotFoundError("gone", status_code=404)
        return "followed " + model_id
    engine.returns["reattach_training"] = reattach
    assert parts.trainings() == ["live", "finished model_done", "followed model_run", "followed model_after",
                                 "followed model_far"]
    assert len(engine.named("recover_trainings")) == 1 and rows.asked == ["backend-1"]
    http.answers[("GET", "/models")] = ScenarioError("offline")
    assert parts.trainings() == ["live", "finished model_done", "followed model_run", "followed model_after"]


# -- _client.py ------------------------------------------------------------------------------------
def test_the_home_is_the_environments_else_a_folder_in_the_users_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SCENARIO_NB_HOME", str(tmp_path / "h"))
    assert default_home() == tmp_path / "h"
    monkeypatch.setenv("SCENARIO_NB_HOME", "")
    assert default_home() == Path.home() / ".scenario_nb"
    monkeypatch.delenv("SCENARIO_NB_HOME")
    assert default_home() == Path.home() / ".scenario_nb"


def test_the_local_state_opens_the_store_and_history_once_on_first_use(tmp_path):
    state = LocalState(tmp_path / "home", tmp_path / "h.sqlite")
    assert not (tmp_path / "h.sqlite").exists()
    history = state.history()
    assert state.history() is history and history.path == tmp_path / "h.sqlite"
    store = state.store()
    assert state.store() is store and Path(store.root) == tmp_path / "home"
    history.close()


def test_a_client_names_its_backend_by_url_and_key_digest_and_sizes_its_pool(tmp_path, monkeypatch):
    import hashlib
    monkeypatch.setenv("SCENARIO_NB_HOME", str(tmp_path / "envhome"))
    client = ScenarioClient("key-1234567890", "secret-x", "http://127.0.0.1:9/v1/")
    try:
        assert client.base_url == "http://127.0.0.1:9/v1" and client.home == tmp_path / "envhome"
        assert client.history_path == tmp_path / "envhome" / "history.sqlite"
        assert client.backend_id == "http://127.0.0.1:9/v1#" + hashlib.sha256(b"key-1234567890").hexdigest()[:12]
        assert client._http._adapter._pool_maxsize == sum(_client.lane_sizes().values()) + 16
        assert client._http._adapter.max_retries.total == 4 and client._http.timeout == _client.TIMEOUT
        assert repr(client) == "ScenarioClient(base_url='http://127.0.0.1:9/v1', api_key='key-…90')"
        assert client.api_key_masked == "key-…90" and "secret" not in repr(client)
        assert client.store is client.store and client.history is client.history
        assert client.history.path == client.history_path
        engine = client._engine  # the engine writes to this client's history and store, as this backend
        assert engine.history is client.history and engine.store is client.store
        assert engine.backend_id == client.backend_id
    finally:
        client.close()
    assert client.closed
    other = ScenarioClient("k" * 12, "s", "http://127.0.0.1:9/v1", home="~/x", history_path="~/h.sqlite",
                           backend_id="mine", max_retries=1, timeout=(1.0, 2.0))
    try:
        assert other.home == Path.home() / "x" and other.history_path == Path.home() / "h.sqlite"
        assert other.backend_id == "mine" and other._http._adapter.max_retries.total == 1
        assert other._http.timeout == (1.0, 2.0) and not other.closed
    finally:
        other.close()


def test_polling_settings_reach_the_engine_only_when_given(tmp_path):
    client = ScenarioClient("key-1234567890", "secret-x", "http://127.0.0.1:9/v1", home=tmp_path)
    try:
        engine = client._engine
        before = (engine.floor, engine.job_timeout, engine.search_seconds, engine.start_grace)
        client.set_polling()
        assert (engine.floor, engine.job_timeout, engine.search_seconds, engine.start_grace) == before
        client.set_polling(floor=0.25, job_timeout=99.0, search_seconds=61.0, start_grace=7.0)
        assert (engine.floor, engine.job_timeout, engine.search_seconds, engine.start_grace) == (0.25, 99.0, 61.0, 7.0)
        assert client.polling == {"floor": 0.25, "job_timeout": 99.0, "search_seconds": 61.0}
        assert client.in_flight() == [] and client.waiting() == []
    finally:
        client.close()


def test_recovered_trainings_tell_the_catalog_when_they_end(tmp_path, monkeypatch):
    client = ScenarioClient("key-1234567890", "secret-x", "http://127.0.0.1:9/v1", home=tmp_path)
    handles = [Handle("model_a"), Handle("model_b")]
    monkeypatch.setattr(client._engine, "recover", lambda: ["generation"])
    monkeypatch.setattr(client._engine, "recover_trainings", lambda: handles)
    try:
        assert client.recover() == ["generation"]
        assert [h.updates for h in handles] == [[client._cache.forget_when_trained]] * 2
    finally:
        client.close()


ALT = platform("model_alt", "Alt Base", [{"name": "prompt", "type": "string", "prompt": True},
                                         {"name": "lora", "type": "model", "modelTypes": [LORA]}])
PLAIN = platform("model_plain", "Plain List", [{"name": "prompt", "type": "string", "prompt": True},
                                               {"name": "loras", "type": "model_array", "modelTypes": [LORA]},
                                               {"name": "lorasScale", "type": "number_array"}])


def test_the_base_model_asked_for_is_the_one_that_runs(http):
    http.public += [ALT, PLAIN]
    engine = FakeEngine()
    engine.returns.update(submit=lambda handle: handle, submit_many=lambda handles: handles)
    parts = Parts(http, engine)
    assert parts.prepare("Potion Icons", "p", base_model="Alt Base")[2] == {"prompt": "p", "lora": "model_mine"}
    assert parts.prepare("Potion Icons", "p", base_model="Plain List")[2] == {
        "prompt": "p", "loras": ["model_mine"], "lorasScale": [1.0]}  # the list's own scale, 1, when none given
    http.answers[("POST", "/generate/custom/model_alt")] = {"creativeUnitsCost": 2}
    assert parts.estimate("Potion Icons", "p", base_model="Alt Base").creative_units == 2.0
    one = parts.generate("Potion Icons", "p", base_model="Alt Base")
    assert one.run_model_id == one.base_model_id == "model_alt" and one.inputs == {"prompt": "p", "lora": "model_mine"}
    many = parts.generate_many("Potion Icons", ["a"], base_model="Alt Base")
    assert many[0].run_model_id == "model_alt" and many[0].source == "api"


def test_a_handle_knows_which_input_holds_its_prompt(http):
    http.public.append(platform("model_text", "Texty", [{"name": "text", "type": "string", "prompt": True}]))
    engine = FakeEngine()
    engine.returns["submit"] = lambda handle: handle
    handle = Parts(http, engine).generate("Texty", "hello")
    assert handle.prompt_name == "text" and handle.inputs == {"text": "hello"}


def test_the_stored_outputs_asked_about_are_the_rows(http):
    engine = FakeEngine()
    parts = Parts(http, engine, history=Rows(reusable="the row"))
    engine.returns.update(live_handle=None, outputs_stored=False, follow_record="followed")
    parts.previous("Other Painter", {"prompt": "p"})
    assert engine.named("outputs_stored") == [(("the row",), {})]


def test_a_workflow_run_is_the_engines_to_follow(parts, http):
    http.answers[("GET", "/workflows/wf1")] = {"workflow": WORKFLOW}
    parts._engine.returns["submit"] = lambda handle: handle
    assert parts.run_workflow("wf1", image="a")._engine is parts._engine


def test_whoever_shows_models_hears_of_a_change(parts):
    heard = []
    parts.on_models_changed(lambda: heard.append("changed"))
    parts._cache.forget("model_x")
    assert heard == ["changed"]


def test_the_most_counted_training_type_comes_first(parts, http):
    http.own = [{"id": f"model_z{n}", "name": f"Z{n}", "type": "zimage-lora"} for n in range(2)] + [MINE]
    assert parts.training_types()[:2] == ["zimage-lora", LORA]


def test_an_unknown_training_type_suggests_the_two_closest(parts):
    with pytest.raises(InputError) as unknown:
        parts._training_type("flux.2-klein-4b-lor")
    assert str(unknown.value) == ("unknown training type 'flux.2-klein-4b-lor'; did you mean flux.2-klein-4b-lora or "
                                  "flux.2-klein-9b-lora?")


def test_a_caption_plan_that_is_no_table_is_refused_in_full(monkeypatch):
    with pytest.raises(InputError) as refused:
        TrainingFront._caption_plan(["a"], [])
    assert str(refused.value) == ("captions is \"auto\", None or a dict {filename: caption} (e.g. from "
                                  "client.caption_images)")

    class Image:
        def __init__(self, name: str) -> None:
            self.name = name
    with pytest.raises(InputError) as six:
        TrainingFront._caption_plan({"x.png": "a"}, [Image(f"i{n}.png") for n in range(6)])
    assert str(six.value).endswith("(i0.png, i1.png, i2.png, i3.png, i4.png, ...)")


def test_a_training_keeps_its_type_and_caption_table(parts, folder):
    parts._engine.returns["train"] = "ok"
    parts.train("Cats", folder, type="zimage-lora", captions={"img1.png": "a cat"})
    (plan,), _ = parts._engine.named("train")[0]
    assert plan.type == "zimage-lora"
    assert plan.captions == {"img0.png": "", "img1.png": "a cat", "img2.png": "", "img3.png": "", "img4.png": ""}


def test_an_image_pillow_only_warns_about_is_uploaded(parts, http, monkeypatch):
    """Only the decompression-bomb warning refuses an upload; another warning Pillow gives while reading an
    image (a corrupt EXIF block, say) does not."""
    import warnings

    from PIL import Image
    real_open = Image.open

    def open_warning(*args, **kwargs):
        warnings.warn("Possibly corrupt EXIF data", UserWarning, stacklevel=2)
        return real_open(*args, **kwargs)
    monkeypatch.setattr(Image, "open", open_warning)
    http.answers[("POST", "/assets")] = {"asset": {"id": "asset_w"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert parts.upload_image(png()) == "asset_w"
