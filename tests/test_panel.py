"""The panel in plain pytest: a fake comm (as ipywidgets' own tests do), the real sandbox over HTTP."""

from __future__ import annotations

import io
import re
import threading
import time
from datetime import datetime, timezone

import ipywidgets as w
import pytest
from PIL import Image

import scenario_nb
from scenario_nb._gallery import TILE
from scenario_nb._panel import DEFAULT_CHOICE, PUBLIC, VIEW_MAX

pytestmark = pytest.mark.usefixtures("fake_comm")
ERROR_COLOR = "#b00020"


@pytest.fixture
def panel(env):
    return scenario_nb.Panel().wait_ready()


def public(panel):
    panel.scope.value = PUBLIC
    return panel.wait_ready()


def wait_for(condition, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def png_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "gray").save(buf, format="PNG")
    return buf.getvalue()


def upload(control, data: bytes, name="mask.png"):
    control.value = ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
                      "last_modified": datetime.now(timezone.utc)},)


def visible_errors(panel) -> list:
    return [x.value for x in walk(panel) if isinstance(x, w.HTML) and ERROR_COLOR in x.value]


# -- Being a widget -----------------------------------------------------------------------------------

def test_the_panel_is_a_widget_that_composes_and_closes(panel):
    assert isinstance(panel, w.VBox)
    box = w.HBox([panel])
    assert box.children[0] is panel
    plain = panel._repr_mimebundle_()["text/plain"]
    assert plain.startswith("Scenario panel") and "VBox(" not in plain and "Hero Knight" in plain
    assert "application/vnd.jupyter.widget-view+json" in panel._repr_mimebundle_()
    inner = list(walk(panel))[1:]
    assert len(inner) > 20 and all(x.comm is not None for x in inner)
    panel.close()
    assert panel.comm is None
    assert all(x.comm is None for x in inner), [type(x).__name__ for x in inner if x.comm is not None]


def test_the_panel_opens_its_widgets_with_only_what_differs_from_their_defaults(env, monkeypatch):
    """A notebook saved with widget state (nbclient, nbconvert) keeps what the kernel sent at open: a Layout
    carries its own values only (before: some forty empty keys each, half of 02-panel's saved size). A form
    replaced by another model's is closed with all it held."""
    import comm

    from conftest import FakeComm
    opened: list = []
    monkeypatch.setattr(comm, "create_comm", lambda **kw: (opened.append(kw["data"]["state"]), FakeComm())[1])
    panel = scenario_nb.Panel().wait_ready()
    layouts = [s for s in opened if s["_model_name"] == "LayoutModel"]
    assert len(layouts) > 20 and not [k for s in layouts for k, v in s.items() if v is None and k[0] != "_"]
    assert any(s.get("max_width") == "1100px" for s in layouts)  # what the panel set is sent
    assert all({"_model_module", "_model_module_version", "_view_name"} <= set(s) for s in opened)
    public(panel)
    panel.select_model("Gemini")
    old = list(walk(panel.settings_box))[1:]
    panel.select_model("GPT Image")
    assert len(old) > 5 and all(x.comm is None for x in old)


# -- The model list -----------------------------------------------------------------------------------

def test_one_model_list_in_plain_words(panel, env):
    client = scenario_nb.client()
    assert [v for _, v in panel.model_menu.options] == [m.id for m in client.models()]
    labels = dict((v, label) for label, v in panel.model_menu.options)
    assert labels["model_HeroKnightLoRA7aB3cD4eF5gH6j"] == "Hero Knight — your LoRA"
    assert labels["model_KnightForestMix9xY8zW7vU6t"] == "Knight in Pixel Forest — your composition"
    public(panel)
    assert [v for _, v in panel.model_menu.options] == [m.id for m in client.models(public=True)]
    labels = [label for label, _ in panel.model_menu.options]
    assert "FLUX.2 dev — image model" in labels and "Ink Wash — LoRA" in labels
    assert "Seedance 2.0 — video model" in labels and "Prompt Writer — text model" in labels
    assert not any(re.search(r"custom|lora\b|flux\.\d-", label) for label in labels), labels


def test_the_picked_model_is_named_and_the_base_only_in_a_quiet_hint(panel, env):
    panel.select_model("Hero Knight")
    assert "runs through FLUX.2 dev" in panel.model_hint.value
    assert "Hero Knight" in panel.summary()
    created = env.stats()["jobs_created"]
    panel.prompt.value = "  "
    assert panel.generate() is None
    assert "Hero Knight needs a prompt" in panel.message.value and "FLUX" not in panel.message.value
    assert env.stats()["jobs_created"] == created


# -- The form -----------------------------------------------------------------------------------------

def test_a_fresh_panel_shows_no_error_and_every_dropdown_a_value(panel):
    def check():
        dropdowns = [x for x in walk(panel) if isinstance(x, w.Dropdown)]
        assert len(dropdowns) >= 3
        for dropdown in dropdowns:
            assert dropdown.value not in (None, ""), dropdown.options
            assert dropdown.label, dropdown.options
        assert not visible_errors(panel)
    time.sleep(0.8)  # past the cost preview's delay: it must not complain about the empty prompt
    check()
    assert panel.aspect.label == DEFAULT_CHOICE
    public(panel)
    panel.select_model("GPT Image")
    time.sleep(0.8)
    check()
    assert panel._controls["quality"].label == "auto (default)"
    panel.prompt.value = "defaults"
    assert panel.request()[2] == {}  # defaults shown are not sent


def test_switching_models_rebuilds_the_form(panel):
    public(panel)
    panel.select_model("Gemini")
    assert {"resolution", "thinkingLevel", "useGoogleSearch", "referenceImages"} <= set(panel._controls)
    assert isinstance(panel._controls["resolution"], w.Dropdown)
    assert isinstance(panel._controls["useGoogleSearch"], w.Checkbox)
    assert isinstance(panel._controls["referenceImages"], w.FileUpload)
    assert [v for _, v in panel.count.options] == [1, 2, 3, 4] and not panel.count.disabled
    panel.select_model("GPT Image")
    assert "quality" in panel._controls and "resolution" not in panel._controls
    assert max(v for _, v in panel.count.options) == 10


def test_the_chosen_aspect_survives_a_model_change_or_the_panel_says_why(panel):
    public(panel)
    panel.select_model("Gemini")
    panel.prompt.value = "x"
    panel.aspect.value = "16:9"
    assert panel.request()[2] == {"aspectRatio": "16:9"}
    panel.select_model("FLUX.2 dev")
    assert panel.aspect.value == "16:9" and panel.aspect_note.value == ""
    assert panel.request()[2] == {"width": 1344, "height": 768}
    panel.aspect.value = "21:9"
    panel.select_model("Imagen 4")  # 1:1, 4:3, 3:4, 9:16, 16:9 only
    assert panel.aspect.value == DEFAULT_CHOICE
    assert "Imagen 4 Ultra has no 21:9" in panel.aspect_note.value
    panel.select_model("FLUX.1 Dev")
    assert panel.aspect.value == "21:9" and panel.aspect_note.value == ""


def test_a_model_change_sends_the_kept_aspect_with_the_new_choices_in_one_message(panel):
    """The browser draws each message it gets: options first and the value after would show the model default
    for a moment (a user, or a browser test, reading it then sees the pick lost)."""
    public(panel)
    panel.select_model("Gemini")
    panel.aspect.value = "16:9"
    sent = panel.aspect.comm.messages
    before = len(sent)
    panel.select_model("FLUX.2 dev")
    states = [kw["data"]["state"] for _, kw in sent[before:] if kw.get("data", {}).get("method") == "update"]
    with_options = [state for state in states if "_options_labels" in state]
    assert with_options and all(state.get("index") == with_options[0]["_options_labels"].index("16:9")
                                for state in with_options), states
    assert panel.aspect.value == "16:9"


def test_a_pick_made_while_the_panel_rebuilds_on_another_thread_counts(panel):
    """Widget messages run on a kernel subshell beside the thread rebuilding the form: the user's aspect pick
    arriving meanwhile is the user's, and survives the next model change (it was dropped as the panel's own)."""
    public(panel)
    panel.select_model("Gemini")
    panel._building = True  # this thread is setting controls itself
    try:
        user = threading.Thread(target=lambda: setattr(panel.aspect, "value", "16:9"))  # the subshell's message
        user.start()
        user.join()
    finally:
        panel._building = False
    panel.select_model("FLUX.2 dev")
    assert panel.aspect.value == "16:9" and panel.aspect_note.value == ""


def test_validation_blocks_the_job_and_says_why_once(panel, env):
    public(panel)
    panel.select_model("GPT Image")
    panel.prompt.value = "a mask without a reference image"
    upload(panel._controls["mask"], png_bytes())
    panel._controls["quality"].value = "high"
    created = env.stats()["jobs_created"]
    assert panel.generate() is None
    (error,) = visible_errors(panel)  # once, next to the input it names
    assert "reference image is required when a mask is provided" in error
    assert env.stats()["jobs_created"] == created
    upload(panel._controls["referenceImages"], png_bytes(), "ref.png")
    job = panel.generate()
    assert job is not None and env.stats()["jobs_created"] == created + 1
    assert job.inputs["quality"] == "high" and job.inputs["mask"].startswith("asset_")


def test_prompt_max_length_is_enforced(panel):
    public(panel)
    panel.select_model("FLUX.2 dev")
    panel.prompt.value = "a short prompt"
    assert panel.prompt_info.value == ""  # no counter while far from the limit
    panel.prompt.value = "x" * 3000
    assert len(panel.prompt.value) == 2048 and "limited to 2048" in panel.prompt_info.value


def test_cost_estimate_refreshes_without_creating_a_job(panel, env):
    panel.select_model("Hero Knight")
    created = env.stats()["jobs_created"]
    panel.prompt.value = "a price check"
    assert wait_for(lambda: "CU" in panel.cost.value, 10)
    panel.count.value = 3
    assert wait_for(lambda: "CU" in panel.cost.value and panel._cost_timer.finished.is_set(), 10)
    assert env.stats()["jobs_created"] == created


# -- Jobs and the gallery -----------------------------------------------------------------------------

def test_two_jobs_of_two_fill_a_gallery_of_tiles_newest_first(panel, env, tmp_path, ip):
    public(panel)
    panel.select_model("FLUX.2 dev")
    panel.aspect.value = "9:16"
    panel.count.value = 2
    panel.prompt.value = "a knight in a tall tower"
    panel.generate_button.click()
    panel.prompt.value = "a dragon over the tower"
    panel.generate_button.click()
    first, second = panel.generations
    first.wait(30), second.wait(30)
    assert wait_for(lambda: len(panel.gallery.children) == 4)
    assert [i.handle for i in panel.items] == [second, second, first, first]
    seeds = [i.seed for i in panel.items]
    assert seeds == second.seeds + first.seeds and len(set(seeds)) == 4
    for item, tile in zip(panel.items, panel.gallery.children, strict=True):
        area, caption = tile.children[0], tile.children[1]
        image = area.children[0]
        natural = Image.open(io.BytesIO(image.value)).size
        assert max(natural) <= TILE and abs(natural[0] / natural[1] - 9 / 16) < 0.05
        assert (int(image.width), int(image.height)) == natural  # drawn at its own size, never stretched
        assert f"seed {item.seed}" in caption.value and item.handle.prompt in caption.value
    # finished rows lose their Cancel, and the columns are the same for every row
    for handle in panel.generations:
        row = panel.job_rows[id(handle)]
        assert row.action.children == () and row.bar.bar_style == "success" and "✓" in row.icon.value
    assert len({r.row.children[0].layout.grid_template_columns for r in panel.job_rows.values()}) == 1

    # select by clicking the tile, save: the feedback sits next to the Save button
    panel.items[1].widgets["overlay"].click()
    assert panel.items[1].selected and "1 selected" in panel.selection_note.value
    panel.save_folder.value = str(tmp_path / "saved")
    paths = panel.save_selected()
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [f"{second.job_id}.json",
                                                                      f"{second.job_id}_1.png"]
    assert len(paths) == 2 and "Saved 1 image" in panel.save_note.value
    siblings = next(x.children for x in walk(panel) if panel.save_button in getattr(x, "children", ()))
    assert siblings[siblings.index(panel.save_button) + 1] is panel.save_note

    # View: above the gallery, real size (capped), full provenance
    panel.view(panel.items[1])
    assert panel.viewer.layout.display == "flex"
    assert panel.children.index(panel.viewer) < panel.children.index(panel.gallery)
    big = Image.open(io.BytesIO(panel.viewer_image.value)).size
    full = Image.open(second.files[1]).size
    assert max(big) == min(VIEW_MAX, max(full)) and abs(big[0] / big[1] - full[0] / full[1]) < 0.01
    assert panel.viewer_image.width == "" and panel.viewer_image.layout.max_height  # natural size, capped
    for fact in (second.prompt, str(second.seeds[1]), second.job_id, second.asset_ids[1]):
        assert fact in panel.viewer_info.value

    # As %%scenario: that image's own cell, shown in its tile
    text = panel.show_magic(panel.items[1])
    code = panel.items[1].widgets["code"]
    assert code.layout.display is None and code in panel.gallery.children[1].children
    assert f"--seed {second.seeds[1]}" in text and " -n " not in text and text.endswith(second.prompt)
    ip.run_cell_magic("scenario", text.splitlines()[0][len("%%scenario "):], second.prompt)
    record = scenario_nb.client().history.recent(1)[0]
    assert record.inputs["seed"] == second.seeds[1] and record.inputs.get("numOutputs") in (None, 1)

    assert scenario_nb.client().history.get(first.job_id).source == "panel"
    bundle = panel._repr_mimebundle_()
    assert bundle["text/html"].count("data:image/jpeg;base64,") == 4 and "4 images" in bundle["text/plain"]


@pytest.mark.parametrize("cloud", ["refuses", "accepts"])
def test_cancel_from_the_row_says_what_happened(env, cloud):
    env.state.options["job_seconds"] = 5.0
    if cloud == "accepts":  # as Scenario does for some job types; generation jobs are refused
        env.state.options["cancellable_types"] = ("custom",)
    panel = scenario_nb.Panel().wait_ready()
    panel.select_model("Hero Knight")
    panel.prompt.value = "to be canceled"
    panel.generate_button.click()
    job = panel.generations[-1]
    row = panel.job_rows[id(job)]
    assert wait_for(lambda: job.job_id is not None, 10)
    row.cancel.click()
    if cloud == "refuses":
        assert "will finish and be charged" in row.note.value and row.action.children == ()
        assert wait_for(lambda: job.done, 30) and job.ok
        assert wait_for(lambda: panel.items and panel.items[0].handle is job)  # its images still arrive
        assert "will finish and be charged" in row.note.value and row.bar.bar_style == "success"
    else:
        assert "cancel requested" in row.note.value.lower() and row.cancel.disabled
        assert wait_for(lambda: job.done, 30) and job.status == "canceled"
        assert wait_for(lambda: row.action.children == ())  # no Cancel left once it ended
        assert row.bar.bar_style == "warning" and "⊘" in row.icon.value and not panel.items
        assert wait_for(lambda: "Canceled: it made no images" in row.note.value)
    assert "job_" not in row.note.value and ERROR_COLOR not in row.note.value


def test_wrong_credentials_show_a_clear_message(env, monkeypatch):
    monkeypatch.setenv("SCENARIO_API_SECRET", "wrong-secret")
    from conftest import reset_session
    reset_session()
    panel = scenario_nb.Panel().wait_ready()
    assert "Unauthorized" in panel.model_message.value and "wrong-secret" not in panel.model_message.value
    assert panel.model_menu.options == (("(no models)", ""),) and panel.generate_button.disabled


def test_no_widget_holds_a_secret(panel, env):
    for widget in walk(panel):
        assert not isinstance(widget, w.Password)
        for name in widget.keys:
            value = getattr(widget, name, None)
            assert not (isinstance(value, str) and env.api_secret in value)


def test_video_and_text_outputs_get_plain_tiles(panel):
    public(panel)
    panel.select_model("Seedance 2.0")
    panel.prompt.value = "a knight walks into the mist"
    video = panel.generate()
    video.wait(60)
    panel.select_model("Prompt Writer")
    panel.prompt.value = "a knight"
    words = panel.generate()
    words.wait(60)
    assert wait_for(lambda: len(panel.gallery.children) == 2)
    text_tile, video_tile = panel.gallery.children
    for tile in (text_tile, video_tile):
        assert not any(isinstance(x, w.Image) for x in walk(tile))
        assert [b.description for b in walk(tile) if isinstance(b, w.Button)] == ["As %%scenario"]
    assert words.text[:40] in text_tile.children[0].value
    assert "video" in video_tile.children[0].value and video.outputs[0].path.name in video_tile.children[0].value
    assert "Seedance 2.0" in video_tile.children[1].value
    assert panel.show_magic(panel.items[1]).startswith("%%scenario model_bytedance-seedance-2-0")
    assert "video" in panel._repr_mimebundle_()["text/html"]


def test_a_failed_job_says_why_in_its_row(panel, env):
    env.inject("job_failure", error="content policy violation", hint="Rephrase the prompt")
    panel.select_model("Hero Knight")
    panel.prompt.value = "something the provider refuses"
    job = panel.generate()
    assert wait_for(lambda: job.done, 30) and job.status == "failure"
    row = panel.job_rows[id(job)]
    assert wait_for(lambda: "Failed: content policy violation (Rephrase the prompt)" in row.note.value)
    assert row.action.children == () and row.bar.bar_style == "danger" and "✕" in row.icon.value
    assert "job_" not in row.note.value and not panel.items
    model_cell = row.row.children[0].children[1].value  # the picked model's name, not its base model
    assert "Hero Knight" in model_cell and "FLUX" not in model_cell


def test_the_filter_narrows_the_same_list_and_keeps_the_form(panel, env):
    client = scenario_nb.client()
    public(panel)
    panel.select_model("GPT Image")
    panel._controls["quality"].value = "high"
    panel.model_filter.value = "image"
    assert [v for _, v in panel.model_menu.options] == [m.id for m in client.models(public=True, query="image")]
    assert panel.model_menu.value == "model_openai-gpt-image-2" and panel._controls["quality"].value == "high"
    assert f"of {len(client.models(public=True))}" in panel.model_filter_note.value
    panel.model_filter.value = "seedance"
    assert panel.model_menu.value == "model_bytedance-seedance-2-0" and "quality" not in panel._controls
    panel.model_filter.value = "no such model anywhere"
    assert "no model matches" in panel.model_filter_note.value
    assert panel.model_menu.value == "model_bytedance-seedance-2-0"
    panel.model_filter.value = ""
    assert len(panel.model_menu.options) == len(client.models(public=True))


# -- Models in training ----------------------------------------------------------------------------------------

def test_a_model_in_training_shows_its_progress_and_can_generate_once_trained(tmp_path, monkeypatch):
    """The panel lists your trainings with live progress, refuses to generate with a model still training,
    and lets it generate once the engine has seen it trained (the list is read again)."""
    from scenario_nb import sandbox as sandbox_mod

    from conftest import SUITE_KEY, SUITE_SECRET, point_session_at, reset_session
    from test_training import make_set
    with sandbox_mod.start(job_seconds=0.3, seed=5, train_seconds=4.0, api_key=SUITE_KEY,
                           api_secret=SUITE_SECRET) as server:
        point_session_at(server, tmp_path / "home", monkeypatch)
        try:
            client = scenario_nb.client()
            client.set_polling(floor=0.1)
            training = client.train("Lantern Style", make_set(tmp_path / "set"), captions=None)
            panel = scenario_nb.Panel().wait_ready()
            assert wait_for(lambda: training.model_id in panel.training_rows)
            row = panel.training_rows[training.model_id]
            assert "Lantern Style" in row.row.children[1].value

            panel.select_model("Lantern Style")
            assert panel.generate_button.disabled, "a model still training must not be sent"
            created = server.stats()["jobs_created"]
            assert panel.generate() is None or server.stats()["jobs_created"] == created
            assert "not trained yet" in panel.model_message.value

            assert wait_for(lambda: 0 < row.bar.value < 1 and "left" in row.words.value, timeout=15), \
                "the training's progress never showed"
            training.wait(timeout=30)
            assert wait_for(lambda: row.bar.value == 1 and row.bar.bar_style == "success")
            assert wait_for(lambda: any(v == training.model_id and "(training)" not in label
                                        for label, v in panel.model_menu.options), timeout=15), \
                "the trained model was never listed as ready"
            panel.select_model("Lantern Style")
            panel.wait_ready()
            assert wait_for(lambda: not panel.generate_button.disabled)
            panel.prompt.value = "a lantern on a shelf"
            handle = panel.generate()
            assert handle is not None and handle.wait(timeout=30).ok
            assert server.stats()["jobs_created"] == created + 1
        finally:
            reset_session()


# -- Handlers beside the main thread (ipykernel 7 runs widget callbacks on subshell threads) --------------

def test_a_scope_change_while_the_first_list_loads_keeps_the_newer_list(env, monkeypatch):
    import threading

    from scenario_nb._session import get_session
    client = get_session().client
    real, gate = client.models, threading.Event()

    def models(public=False):
        found = real(public=public)
        if not public:
            gate.wait(20)  # My models answers late, after the switch to the public catalog
        return found

    monkeypatch.setattr(client, "models", models)
    failures = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    panel = scenario_nb.Panel()
    first = panel._loader
    public(panel)
    publics = [label for label, _ in panel.model_menu.options]
    gate.set()
    first.join(20)
    assert [label for label, _ in panel.model_menu.options] == publics
    assert not any("Hero Knight" in label for label in publics) and panel.model_menu.value
    assert not failures, failures


def test_the_as_scenario_cell_sends_what_the_panel_sent_aspect_included(panel, env, ip):
    public(panel)
    panel.select_model("FLUX.2 dev")  # width/height inputs: the panel's aspect maps to them
    panel.aspect.value = "16:9"
    panel.prompt.value = "a lighthouse on a cliff at dusk"
    panel.generate_button.click()
    (handle,) = panel.generations
    handle.wait(30)
    assert wait_for(lambda: len(panel.items) == handle_count(handle))
    item = panel.items[0]
    text = panel.magic_for(item)
    assert "--aspect 16:9" in text and "width" not in text and "height" not in text, text
    assert ip.run_cell(text).error_in_exec is None
    jobs = [job for job in env.state.jobs.values() if job.get("body", {}).get("prompt") == handle.prompt]
    assert len(jobs) == 2
    sent, again = (dict(job["body"]) for job in sorted(jobs, key=lambda j: j["created"]))
    sent["seed"] = item.seed  # one image, its own seed: otherwise the very same request
    sent.pop("numOutputs", None), again.pop("numOutputs", None)
    assert again == sent
    code = item.widgets["code"]
    changes = []  # widgets send each change as it is made: this is the order the browser applies them in
    item.widgets["tile"].layout.observe(lambda change: changes.append("tile widened"), "width")
    code.layout.observe(lambda change: changes.append("cell shown"), "display")
    panel.show_magic(item)
    assert changes == ["tile widened", "cell shown"]  # never the wide cell in a narrow tile, even for a moment
    assert "nowrap" not in code.value and "anywhere" in code.value  # long words wrap inside the box


def handle_count(handle) -> int:
    return max(1, len(handle.outputs))


def test_an_input_error_shows_once_in_the_forms_words_next_to_the_input_and_clears_when_fixed(panel, env):
    public(panel)
    panel.select_model("Flux Kontext")  # an editor: reference images are required
    panel.prompt.value = "make it night"
    created = env.stats()["jobs_created"]
    assert panel.generate() is None
    time.sleep(1)  # past the estimate, which checks the form too
    errors = visible_errors(panel)
    assert len(errors) == 1, errors
    assert "reference images" in errors[0].lower() and "referenceImages" not in errors[0]
    row = next(x for x in walk(panel) if isinstance(x, w.HBox) and panel._controls["referenceImages"] in x.children)
    assert any(isinstance(x, w.HTML) and x.value == errors[0] for x in row.children), "not next to the input"
    assert panel.settings.selected_index == 0  # More settings opens on it
    upload(panel._controls["referenceImages"], png_bytes(), "ref.png")
    assert wait_for(lambda: not visible_errors(panel), 5), visible_errors(panel)
    assert panel.generate() is not None and env.stats()["jobs_created"] == created + 1
    assert not visible_errors(panel)
