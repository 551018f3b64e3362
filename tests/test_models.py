"""Model inputs: parsing, local validation and aspect mapping (shared by the magics and the panel); and the
client's model cache, which follows this kernel's changes at once."""

from __future__ import annotations

import pytest
from IPython.utils.capture import capture_output
from PIL import Image, ImageDraw

import scenario_nb
from scenario_nb import InputError, Model, ScenarioClient
from scenario_nb import sandbox as sandbox_mod
from scenario_nb._model_list import show_models
from scenario_nb._models import aspect_inputs, aspect_options, coerce_value, size_for_ratio, validate_inputs

from conftest import SUITE_KEY, SUITE_SECRET, Clock, until  # noqa: E402

# The contract's §13.2 example (real field names), trimmed.
DEMO = {
    "id": "model_demo-image-gen", "name": "Demo Image Gen", "type": "custom", "custom": True,
    "status": "trained", "privacy": "public",
    "inputs": [
        {"name": "prompt", "type": "string", "maxLength": 2048, "prompt": True, "required": {"always": True}},
        {"name": "referenceImages", "type": "file_array", "kind": "image", "maxLength": 4,
         "required": {"ifDefined": {"mask": {"message": "A reference image is required when a mask is provided."}}}},
        {"name": "mask", "type": "file", "kind": "image"},
        {"name": "aspectRatio", "type": "string", "default": "1:1",
         "allowedValues": ["21:9", "16:9", "4:3", "1:1", "3:4", "9:16"]},
        {"name": "numOutputs", "type": "number", "default": 1, "min": 1, "max": 4, "step": 1},
        {"name": "guidance", "type": "number", "default": 3.5, "min": 1, "max": 10, "step": 0.1},
        {"name": "seed", "type": "number", "min": 0, "max": 2147483647},
        {"name": "transparent", "type": "boolean", "default": False},
    ],
}
FLUX = {
    "id": "model_bfl-flux-2-dev", "name": "FLUX.2 dev", "type": "custom", "custom": True, "status": "trained",
    "inputs": [
        {"name": "prompt", "type": "string", "maxLength": 2048, "required": {"always": True}},
        {"name": "width", "type": "number", "min": 128, "max": 2048, "step": 16},
        {"name": "height", "type": "number", "min": 128, "max": 2048, "step": 16},
    ],
    "uiConfig": {"resolutionComponent": {"widthInput": "width", "heightInput": "height", "presets": [
        {"label": "Auto"}, {"label": "1:1 (1024x1024)", "width": 1024, "height": 1024},
        {"label": "16:9", "width": 1344, "height": 768}]}},
}


def test_parse_types_and_required():
    model = Model.parse(DEMO)
    assert model.runnable and model.prompt_input.always_required
    assert model.input("numOutputs").max == 4 and model.input("referenceImages").kind == "image"
    assert "one of" in model.input("aspectRatio").describe()


def test_aspect_maps_to_aspect_ratio_input():
    model = Model.parse(DEMO)
    assert aspect_inputs(model, "16:9") == {"aspectRatio": "16:9"}
    assert aspect_inputs(model, "32:18") == {"aspectRatio": "16:9"}
    with pytest.raises(InputError, match="allowed: 21:9, 16:9"):
        aspect_inputs(model, "2:3")


def test_aspect_maps_to_width_height_presets_then_computed():
    model = Model.parse(FLUX)
    assert aspect_inputs(model, "16:9") == {"width": 1344, "height": 768}
    size = aspect_inputs(model, "3:4")
    assert size["width"] % 16 == 0 and size["height"] % 16 == 0
    assert abs(size["width"] / size["height"] - 0.75) < 0.03
    assert "Auto" not in aspect_options(model)
    with pytest.raises(InputError, match="W:H"):
        aspect_inputs(model, "wide")


def test_size_for_ratio_respects_bounds():
    w, h = size_for_ratio("21:9", lo=128, hi=1024)
    assert max(w, h) <= 1024 and min(w, h) >= 128 and w % 16 == 0 and h % 16 == 0


@pytest.mark.parametrize("inputs, message", [
    ({}, "needs a prompt"),
    ({"prompt": "x", "numOutputs": 0}, "at least 1"),
    ({"prompt": "x", "numOutputs": 9}, "at most 4"),
    ({"prompt": "x", "aspectRatio": "5:4"}, "allowed"),
    ({"prompt": "x" * 2049}, "at most 2048"),
    ({"prompt": "x", "guidance": "high"}, "must be a number"),
    ({"prompt": "x", "transparent": "yes"}, "true or false"),
    ({"prompt": "x", "mask": "asset_abc"}, "A reference image is required"),
    ({"prompt": "x", "referenceImages": ["/tmp/a.png"]}, "asset ids"),
    ({"prompt": "x", "referenceImages": ["asset_a"] * 5}, "at most 4"),
    ({"prompt": "x", "steps": 3}, "no input 'steps'"),
])
def test_validation_messages(inputs, message):
    with pytest.raises(InputError, match=message):
        validate_inputs(Model.parse(DEMO), inputs)


def test_validation_passes_and_drops_empty_values():
    body = validate_inputs(Model.parse(DEMO), {"prompt": "x", "seed": 3, "mask": None, "aspectRatio": "1:1"})
    assert body == {"prompt": "x", "seed": 3, "aspectRatio": "1:1"}


def test_coerce_set_values():
    model = Model.parse(DEMO)
    assert coerce_value(model.input("numOutputs"), "3") == 3
    assert coerce_value(model.input("guidance"), "4.5") == 4.5
    assert coerce_value(model.input("transparent"), "true") is True
    assert coerce_value(model.input("referenceImages"), "asset_a,asset_b") == ["asset_a", "asset_b"]
    with pytest.raises(InputError, match="expected a number"):
        coerce_value(model.input("numOutputs"), "many")


# -- The model cache follows this kernel's changes at once (issue 25 item 13) ------------------------------------

TRAIN_SECONDS = 3.0


def training_set(folder):
    folder.mkdir(parents=True)
    for i in range(5):
        image = Image.new("RGB", (1024, 1024), (60, 30 * i, 180))
        ImageDraw.Draw(image).ellipse((80 + 25 * i, 120, 560, 640), fill=(240, 200, 40 * i))
        image.save(folder / f"img-{i}.png")
    return folder


def lists_of_mine(server) -> int:
    return sum(1 for r in server.state.requests if r["method"] == "GET" and r["path"] == "/v1/models"
               and r["query"].get("privacy") == "private")


def reads_of(server, model_id) -> int:
    return sum(1 for r in server.state.requests if r["method"] == "GET" and r["path"] == f"/v1/models/{model_id}")


@pytest.fixture
def frozen():
    """A sandbox whose trainings end only when the test moves its clock."""
    clock = Clock(frozen=True)
    with sandbox_mod.start(job_seconds=0.3, seed=5, train_seconds=TRAIN_SECONDS, api_key=SUITE_KEY,
                           api_secret=SUITE_SECRET, clock=clock) as server:
        yield server, clock


def a_client(server, home) -> ScenarioClient:
    client = ScenarioClient(SUITE_KEY, SUITE_SECRET, server.url, home=home)
    client.set_polling(floor=0.1)
    return client


def test_a_model_made_here_shows_at_once_by_name_in_the_list_and_in_the_panel(frozen, fake_comm, tmp_path):
    server, clock = frozen
    client = a_client(server, tmp_path / "home")
    try:
        panel = scenario_nb.Panel(client=client).wait_ready()
        with pytest.raises(InputError):
            client.find_model("Fresh Knight")  # my models listed, and kept for a minute
        listed = lists_of_mine(server)
        training = client.train("Fresh Knight", training_set(tmp_path / "set"), captions=None)
        assert client.find_model("Fresh Knight").id == training.model_id  # by name, at once
        assert lists_of_mine(server) > listed  # my models listed afresh after the model was made
        with capture_output() as shown:
            show_models(client)  # %scenario models
        assert "Fresh Knight" in shown.stdout + "".join(str(o.data) for o in shown.outputs)  # printed or displayed
        until(lambda: training.model_id in [v for _, v in panel.model_menu.options], 10, "the panel's list has it")
        clock.now += TRAIN_SECONDS + 1
        assert training.wait(30).ok
        assert client.find_model("Fresh Knight").trained  # its copy from before was dropped

        def listed_as_trained() -> bool:
            return any(v == training.model_id and "(" not in label for label, v in panel.model_menu.options)
        until(listed_as_trained, 10, "the panel's list shows it trained")
        panel.wait_ready()
    finally:
        client.close()


def test_a_model_trained_in_another_kernel_runs_by_name_once_trained(frozen, tmp_path):
    """The name is found among my models (kept a minute), but the model itself is read afresh until it is
    trained: the moment the other kernel's training ends, it runs here."""
    server, clock = frozen
    here, there = a_client(server, tmp_path / "here"), a_client(server, tmp_path / "there")
    try:
        training = there.train("Elsewhere Knight", training_set(tmp_path / "set"), captions=None)
        with pytest.raises(InputError, match="not trained yet"):
            here.generate("Elsewhere Knight", "a knight")
        clock.now += TRAIN_SECONDS + 1
        assert training.wait(30).ok
        reads, sent = reads_of(server, training.model_id), server.generate_posts
        here.generate("Elsewhere Knight", "a knight")
        assert reads_of(server, training.model_id) > reads and server.generate_posts == sent + 1
    finally:
        here.close()
        there.close()
