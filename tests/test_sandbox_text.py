"""The caption and prompt tools (contract §12c, §12d.7): synchronous, deterministic, derived from the image and the
request, priced by a 269 dry run, and refused with a reason when a required field is missing or wrong."""

from __future__ import annotations

import base64
import io

import pytest
import requests
from PIL import Image

from scenario_nb import sandbox as sandbox_mod


@pytest.fixture(scope="module")
def sb():
    with sandbox_mod.start(job_seconds=0.3, seed=11, list_lag=0) as server:
        yield server


def api(sb, method, path, **kwargs):
    return requests.request(method, sb.url + path, auth=(sb.api_key, sb.api_secret), timeout=10, **kwargs)


def png(colour, size=(1024, 1024)) -> str:
    image = Image.new("RGB", size, colour)
    image.paste("white", (size[0] // 3, size[1] // 3, 2 * size[0] // 3, 2 * size[1] // 3))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def upload(sb, colour, size=(640, 640)) -> str:
    return api(sb, "POST", "/assets", json={"name": "u.png", "image": png(colour, size).split(",", 1)[1]}).json()[
        "asset"]["id"]


def test_captions_describe_each_image_in_order(sb):
    images = [png("#c01818"), upload(sb, "#1830c0", (1344, 768)), png("#20a040", (768, 1344))]
    answer = api(sb, "POST", "/generate/caption", json={"images": images})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    captions = data["captions"]
    assert len(captions) == 3 and data["detailsLevel"] == "action"
    assert "on a red background" in captions[0] and "square" in captions[0]
    assert "on a blue background" in captions[1] and "wide" in captions[1]
    assert "on a green background" in captions[2] and "tall" in captions[2]
    assert all(" of a white " in c for c in captions)  # the square in the middle
    assert data["job"]["jobType"] == "caption" and data["job"]["status"] == "success" and data["job"]["progress"] == 1
    assert api(sb, "GET", f"/jobs/{data['job']['jobId']}").json()["job"]["status"] == "success"
    assert data["creativeUnitsCost"] == 3 and data["costDetails"] == {"caption": 3}
    again = api(sb, "POST", "/generate/caption", json={"images": images}).json()["captions"]
    assert again == captions  # deterministic


def test_caption_options(sb):
    image = png("#c01818")
    plain = api(sb, "POST", "/generate/caption", json={"images": [image]}).json()["captions"][0]
    styled = api(sb, "POST", "/generate/caption", json={"images": [image], "detailsLevel": "action+style"}).json()
    assert styled["detailsLevel"] == "action+style" and styled["captions"][0] != plain
    assert "flat colours" in styled["captions"][0]
    cleaned = api(sb, "POST", "/generate/caption", json={"images": [image], "unwantedSequences": ["red"]}).json()
    assert "red" not in cleaned["captions"][0] and cleaned["captions"][0]
    copied = api(sb, "POST", "/generate/caption",
                 json={"images": [image], "modelId": "model_HeroKnightLoRA7aB3cD4eF5gH6j"})
    assert copied.json()["captions"][0].endswith("in the style of Hero Knight")


@pytest.mark.parametrize("body, status, reason", [
    ({}, 400, "images is required: an array of asset ids or data URLs"),
    ({"images": []}, 400, "images is required: an array of asset ids or data URLs"),
    ({"images": ["<red>"], "detailsLevel": "everything"}, 400, "detailsLevel must be one of action, action+style"),
    ({"images": ["<red>"], "temperature": 3}, 400, "temperature must be a number between 0 and 2"),
    ({"images": ["asset_NoSuchAsset1234567890abcd"]}, 404, "Asset asset_NoSuchAsset1234567890abcd not found"),
    ({"images": ["data:image/png;base64,bm90IGFuIGltYWdl"]}, 400, "Invalid image"),
    ({"images": ["<red>"], "modelId": "model_nope"}, 404, "Model model_nope not found"),
])
def test_caption_refusals(sb, body, status, reason):
    before = len(sb.jobs)
    body = {k: ([png("#c01818") if v == "<red>" else v for v in val] if k == "images" else val)
            for k, val in body.items()}
    answer = api(sb, "POST", "/generate/caption", json=body)
    assert (answer.status_code, answer.json()) == (status, {"reason": reason})
    assert len(sb.jobs) == before


def test_caption_dry_run(sb):
    before = len(sb.jobs)
    answer = api(sb, "POST", "/generate/caption", params={"dryRun": "true"}, json={"images": [png("red")] * 2})
    assert answer.status_code == 269
    assert answer.json() == {"creativeUnitsCost": 2, "creativeUnitsDiscount": 0, "costDetails": {"caption": 2}}
    assert len(sb.jobs) == before


def test_prompts_follow_the_request(sb):
    answer = api(sb, "POST", "/generate/prompt", json={"mode": "completion", "prompt": "a green potion",
                                                        "numResults": 3, "seed": 5})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert len(data["prompts"]) == 3 and len(set(data["prompts"])) == 3 and data["mode"] == "completion"
    assert all(p.startswith("a green potion") for p in data["prompts"])
    assert data["job"]["jobType"] == "generate-prompt" and data["job"]["status"] == "success"
    assert data["costDetails"] == {"prompt": 3} and "calls" not in data
    same = api(sb, "POST", "/generate/prompt", json={"mode": "completion", "prompt": "a green potion",
                                                      "numResults": 3, "seed": 5}).json()["prompts"]
    other = api(sb, "POST", "/generate/prompt", json={"mode": "completion", "prompt": "a green potion",
                                                       "numResults": 3, "seed": 6}).json()["prompts"]
    assert same == data["prompts"] and other != data["prompts"]
    assert len(api(sb, "POST", "/generate/prompt", json={"mode": "inventive", "prompt": "x"}).json()["prompts"]) == 1
    contextual = api(sb, "POST", "/generate/prompt", json={"mode": "contextual", "images": [png("#1830c0")]}).json()
    assert "blue" in contextual["prompts"][0]  # built on what the image shows
    spark = api(sb, "POST", "/generate/prompt", json={"mode": "structured", "prompt": "a knight",
                                                       "modelId": "model_bfl-flux-2-dev", "numResults": 2}).json()
    assert [c["parameters"]["prompt"] for c in spark["calls"]] == spark["prompts"]
    assert all(c["modelId"] == "model_bfl-flux-2-dev" for c in spark["calls"])


MODES = "mode must be one of completion, contextual, contextual-v2, image-editing, inventive, structured"


@pytest.mark.parametrize("body, reason", [
    ({"prompt": "x"}, MODES),
    ({"mode": "poetry", "prompt": "x"}, MODES),
    ({"mode": "completion"}, "prompt is required with mode completion"),
    ({"mode": "contextual"}, "images are required with mode contextual"),
    ({"mode": "image-editing", "prompt": "bluer"}, "image is required with mode image-editing"),
    ({"mode": "completion", "prompt": "x", "numResults": 0}, "numResults must be an integer between 1 and 10"),
    ({"mode": "contextual", "images": ["<red>"] * 6}, "images must be at most 5 items long"),
])
def test_prompt_refusals(sb, body, reason):
    before = len(sb.jobs)
    if "images" in body:
        body = body | {"images": [png("#c01818")] * len(body["images"])}
    answer = api(sb, "POST", "/generate/prompt", json=body)
    assert (answer.status_code, answer.json()) == (400, {"reason": reason})
    assert len(sb.jobs) == before


def test_prompt_dry_run(sb):
    before = len(sb.jobs)
    answer = api(sb, "POST", "/generate/prompt", params={"dryRun": "api"}, json={"mode": "completion", "prompt": "x",
                                                                                 "numResults": 2})
    assert answer.status_code == 269
    assert answer.json() == {"creativeUnitsCost": 2, "creativeUnitsDiscount": 0, "costDetails": {"prompt": 2}}
    assert len(sb.jobs) == before


def test_describe_style_from_images_or_a_models_training_set(sb):
    images = [png("#c01818"), png("#a01010")]
    answer = api(sb, "POST", "/generate/describe-style", json={"images": images})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert "red" in data["description"] and "2 reference images" in data["description"]
    assert data["synthesis"].startswith("flat red") and data["job"]["jobType"] == "describe-style"
    assert data["costDetails"] == {"describe-style": 1}
    model = api(sb, "POST", "/models", json={"type": "flux.2-dev-lora"}).json()["model"]["id"]
    api(sb, "POST", f"/models/{model}/training-images", json={"name": "b.png", "data": png("#1830c0")})
    trained_on = api(sb, "POST", "/generate/describe-style", json={"modelId": model}).json()
    assert "blue" in trained_on["synthesis"] and "1 reference image:" in trained_on["description"]
    assert api(sb, "POST", "/generate/describe-style", json={}).json() == {
        "reason": "One of images, assetIds or modelId is required"}
    assert api(sb, "POST", "/generate/describe-style", params={"dryRun": "true"},
               json={"images": images}).status_code == 269


@pytest.mark.parametrize("text, language, english", [
    ("un chevalier avec une épée rouge", "fr", "a knight with a sword red"),
    ("un gato azul en el bosque", "es", "a cat blue in the forest"),
    ("ein Ritter mit Schwert", "de", "a knight with sword"),
    ("a knight with a red sword", "en", "a knight with a red sword"),
])
def test_translate(sb, text, language, english):
    data = api(sb, "POST", "/generate/translate", json={"prompt": text}).json()
    assert (data["detectedLanguage"], data["translation"]) == (language, english)
    assert data["job"]["jobType"] == "translate" and data["costDetails"] == {"translate": 1}


def test_translate_needs_a_prompt(sb):
    before = len(sb.jobs)
    answer = api(sb, "POST", "/generate/translate", json={"images": []})
    assert (answer.status_code, answer.json()) == (400, {"reason": "prompt is required"})
    assert len(sb.jobs) == before
