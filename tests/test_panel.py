"""The panel in plain pytest: a fake comm (as ipywidgets' own tests do), the real sandbox over HTTP."""

from __future__ import annotations

import time

import ipywidgets as w
import pytest
from PIL import Image

import scenario_nb


pytestmark = pytest.mark.usefixtures("fake_comm")


@pytest.fixture
def panel(env):
    return scenario_nb.Panel().wait_ready()


def pick(panel, text):
    value = next(v for label, v in panel.model_menu.options if v and text in label)
    panel.model_menu.value = value
    return value


def wait_for(condition, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_dropdown_is_filled_in_the_background(panel):
    labels = [label for label, _ in panel.model_menu.options]
    assert any("Hero Knight" in label and "lora" in label for label in labels)
    assert panel.model_menu.value is not None and not panel.generate_button.disabled
    panel.scope.value = "Public catalog"
    panel.wait_ready()
    assert any("Gemini" in label for label, _ in panel.model_menu.options)


def test_switching_models_rebuilds_the_form(panel):
    panel.scope.value = "Public catalog"
    panel.wait_ready()
    pick(panel, "Gemini")
    assert {"resolution", "thinkingLevel", "useGoogleSearch", "numOutputs", "referenceImages"} <= set(panel._controls)
    assert isinstance(panel._controls["resolution"], w.Dropdown)
    assert isinstance(panel._controls["useGoogleSearch"], w.Checkbox)
    assert isinstance(panel._controls["numOutputs"], w.IntSlider)
    assert isinstance(panel._controls["referenceImages"], w.FileUpload)
    pick(panel, "GPT Image")
    assert "quality" in panel._controls and "resolution" not in panel._controls


def test_aspect_maps_for_both_kinds_of_model(panel):
    panel.scope.value = "Public catalog"
    panel.wait_ready()
    pick(panel, "Gemini")
    assert "16:9" in [v for _, v in panel.aspect.options]
    panel.prompt.value = "x"
    panel.aspect.value = "16:9"
    assert panel.request()[2] == {"aspectRatio": "16:9"}
    pick(panel, "FLUX.2")
    panel.aspect.value = "16:9"
    assert panel.request()[2] == {"width": 1344, "height": 768}


def test_validation_messages_are_shown_inline(panel, env):
    panel.scope.value = "Public catalog"
    panel.wait_ready()
    pick(panel, "Gemini")
    created = env.stats()["jobs_created"]
    panel.prompt.value = "   "
    assert panel.generate() is None and "needs a prompt" in panel.message.value
    pick(panel, "GPT Image")
    panel.prompt.value = "a mask without reference"
    panel._controls["mask"].value = ()  # nothing uploaded
    panel._controls["quality"].value = "high"
    assert env.stats()["jobs_created"] == created


def test_prompt_max_length_is_enforced(panel):
    panel.scope.value = "Public catalog"
    panel.wait_ready()
    pick(panel, "FLUX.2")
    panel.prompt.value = "x" * 3000
    assert len(panel.prompt.value) == 2048 and "limited to 2048" in panel.prompt_info.value


def test_generate_progress_gallery_save_and_history(panel, env, tmp_path, ip):
    pick(panel, "Hero Knight")
    panel.prompt.value = "the hero in a tavern"
    panel.aspect.value = "16:9"
    panel.generate_button.click()
    assert panel.generations and len(panel.jobs.children) == 1
    job = panel.generations[-1].wait(timeout=30)
    row = panel.jobs.children[0]
    assert row.children[0].value == 1.0 and row.children[0].bar_style == "success"
    assert wait_for(lambda: len(panel.gallery.children) == 1)
    thumb = panel.gallery.children[0].children[0]
    size = Image.open(__import__("io").BytesIO(thumb.value)).size
    assert abs(size[0] / size[1] - 16 / 9) < 0.05
    card_checkbox = panel.gallery.children[0].children[2].children[0]
    card_checkbox.value = True
    panel.save_folder.value = str(tmp_path / "saved")
    panel.save_button.click()
    assert sorted(p.suffix for p in (tmp_path / "saved").iterdir()) == [".json", ".png"]
    assert "Saved 1 image" in panel.message.value
    text = panel.copy_as_magic(job)
    assert text.startswith("%%scenario " + job.model_id) and text.endswith("the hero in a tavern")
    record = scenario_nb.client().history.get(job.job_id)
    assert record.source == "panel"
    from IPython.utils.capture import capture_output
    with capture_output() as out:
        ip.run_line_magic("scenario", "history 5")
    assert job.job_id in out.outputs[0].data["text/plain"]


def test_cancel_from_the_row(env, tmp_path, monkeypatch):
    env.state.options["job_seconds"] = 5.0
    panel = scenario_nb.Panel().wait_ready()
    pick(panel, "Hero Knight")
    panel.prompt.value = "to be canceled"
    panel.generate_button.click()
    row = panel.jobs.children[0]
    row.children[2].click()
    job = panel.generations[-1]
    assert wait_for(lambda: "will finish and be charged" in row.children[1].value)  # refused, as on the cloud
    assert wait_for(lambda: job.done, 30) and job.ok and job.images  # followed on and delivered
    assert row.children[2].disabled


def test_cost_estimate_refreshes(panel, env):
    pick(panel, "Hero Knight")
    panel.prompt.value = "a price check"
    assert wait_for(lambda: "CU" in panel.cost.value, 10)
    created = env.stats()["jobs_created"]
    assert env.stats()["jobs_created"] == created


def test_wrong_credentials_show_a_clear_message(env, monkeypatch):
    monkeypatch.setenv("SCENARIO_API_SECRET", "wrong-secret")
    from conftest import reset_session
    reset_session()
    panel = scenario_nb.Panel().wait_ready()
    assert "Unauthorized" in panel.message.value and "wrong-secret" not in panel.message.value
    assert panel.model_menu.options == (("(no models)", None),)


def test_no_widget_holds_a_secret(panel, env):
    def walk(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)
    for widget in walk(panel.widget):
        assert not isinstance(widget, w.Password)
        for name in widget.keys:
            value = getattr(widget, name, None)
            assert not (isinstance(value, str) and env.api_secret in value)
