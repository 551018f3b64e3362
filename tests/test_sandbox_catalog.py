"""The sandbox's public catalog is the real one's size and mix (contract §4, §10b, §12b.6), and every output
kind comes back with its real mimeType, kind and playable bytes."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
from typing import Optional

import pytest
import requests
from PIL import Image

from scenario_nb import sandbox as sandbox_mod
from scenario_nb.sandbox import _catalog

FLUX1, FLUX2, KONTEXT = "model_bfl-flux-1-dev", "model_bfl-flux-2-dev", "model_flux-kontext-editing"
VIDEO, MESH, TEXT = "model_bytedance-seedance-2-0", "model_meshy-7-txt23d", "model_scenario-prompt-writer"
FOREST, HERO = "model_PixeLForestStyLe2qR3sT4uV5w", "model_HeroKnightLoRA7aB3cD4eF5gH6j"
COMPOSITION, KONTEXT_LORA = "model_KnightForestMix9xY8zW7vU6t", "model_PotionEditKontext8mN2pQ4rS"


@pytest.fixture(scope="module")
def sb():
    with sandbox_mod.start(job_seconds=0.3, seed=8, list_lag=0) as server:
        yield server


def api(sb, method, path, **kwargs):
    return requests.request(method, sb.url + path, auth=(sb.api_key, sb.api_secret), timeout=10, **kwargs)


def run(sb, model, body, status=200):
    answer = api(sb, "POST", f"/generate/custom/{model}", json=body)
    assert answer.status_code == status, answer.text
    if status != 200:
        return answer.json()
    job_id = answer.json()["job"]["jobId"]
    for _ in range(200):
        job = api(sb, "GET", f"/jobs/{job_id}").json()["job"]
        if job["status"] in ("success", "failure", "canceled"):
            assert job["status"] == "success", job
            return job
        time.sleep(0.05)
    raise AssertionError("job never ended")


def output(sb, job):
    """(asset, response of its signed URL) for the job's only output."""
    (asset_id,) = job["metadata"]["assetIds"]
    asset = api(sb, "GET", f"/assets/{asset_id}").json()["asset"]
    return asset, requests.get(asset["url"], timeout=10)


def all_rows(sb, **params):
    rows, token = [], None
    while True:
        page = api(sb, "GET", "/models", params={**params, **({"paginationToken": token} if token else {})}).json()
        rows += page["models"]
        token = page.get("nextPaginationToken")
        if not token:
            return rows


def upload(sb, fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buf, format=fmt)
    answer = api(sb, "POST", "/assets", json={"name": f"ref.{fmt.lower()}",
                                              "image": base64.b64encode(buf.getvalue()).decode()})
    return answer.json()["asset"]


# -- Output kinds -------------------------------------------------------------------------------------------

def mp4_boxes(data: bytes, start: int = 0, end: Optional[int] = None) -> list:
    """[(type, payload start, payload end)] of the ISO-BMFF boxes in data[start:end]."""
    boxes, at, end = [], start, len(data) if end is None else end
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        assert size >= 8 and at + size <= end, f"box {kind!r} overruns the file"
        boxes.append((kind.decode("latin-1"), at + 8, at + size))
        at += size
    assert at == end, "trailing bytes after the last box"
    return boxes


def test_video_model_serves_a_playable_mp4(sb):
    job = run(sb, VIDEO, {"prompt": "a potion bubbling", "duration": "5"})
    asset, served = output(sb, job)
    assert (asset["kind"], asset["mimeType"], asset["metadata"]["kind"]) == ("video", "video/mp4", "video")
    assert asset["source"] == "txt2video" and asset["properties"]["size"] == len(served.content)
    assert served.headers["Content-Type"] == "video/mp4" and asset["url"].split("?")[0].endswith(".mp4")
    data = served.content
    assert len(data) < 60_000
    top = mp4_boxes(data)
    kinds = [k for k, _, _ in top]
    assert kinds[0] == "ftyp" and kinds.index("moov") < kinds.index("mdat")  # faststart: plays while loading
    assert b"avc1" in data[top[0][1]:top[0][2]] or b"isom" in data[top[0][1]:top[0][2]]
    _, moov_start, moov_end = top[kinds.index("moov")]
    traks = [b for b in mp4_boxes(data, moov_start, moov_end) if b[0] == "trak"]
    assert len(traks) == 1
    tkhd = next(b for b in mp4_boxes(data, traks[0][1], traks[0][2]) if b[0] == "tkhd")
    width, height = struct.unpack(">II", data[tkhd[2] - 8:tkhd[2]])
    assert (width >> 16, height >> 16) == (asset["properties"]["width"], asset["properties"]["height"])
    assert b"avc1" in data[moov_start:moov_end]  # H.264: every browser plays it


def parse_glb(data: bytes) -> tuple[dict, bytes]:
    magic, version, total = struct.unpack("<4sII", data[:12])
    assert (magic, version, total) == (b"glTF", 2, len(data))
    json_len, json_type = struct.unpack("<I4s", data[12:20])
    assert json_type == b"JSON" and json_len % 4 == 0
    gltf = json.loads(data[20:20 + json_len])
    bin_len, bin_type = struct.unpack("<I4s", data[20 + json_len:28 + json_len])
    assert bin_type == b"BIN\0" and bin_len % 4 == 0 and 28 + json_len + bin_len == len(data)
    return gltf, data[28 + json_len:]


def test_3d_model_serves_a_valid_glb(sb):
    job = run(sb, MESH, {"prompt": "a treasure chest"})
    asset, served = output(sb, job)
    assert (asset["kind"], asset["mimeType"], asset["metadata"]["kind"]) == ("3d", "model/gltf-binary", "3d")
    assert served.headers["Content-Type"] == "model/gltf-binary" and asset["properties"]["size"] == len(served.content)
    gltf, binary = parse_glb(served.content)
    assert gltf["asset"]["version"] == "2.0" and gltf["buffers"][0]["byteLength"] == len(binary)
    sizes = {5126: 4, 5123: 2}
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}
    for accessor in gltf["accessors"]:
        view = gltf["bufferViews"][accessor["bufferView"]]
        assert view["byteOffset"] + view["byteLength"] <= len(binary)
        assert accessor["count"] * sizes[accessor["componentType"]] * width[accessor["type"]] == view["byteLength"]
    primitive = gltf["meshes"][0]["primitives"][0]
    positions = gltf["accessors"][primitive["attributes"]["POSITION"]]
    index_accessor = gltf["accessors"][primitive["indices"]]
    view = gltf["bufferViews"][index_accessor["bufferView"]]
    indices = struct.unpack(f"<{index_accessor['count']}H", binary[view["byteOffset"]:view["byteOffset"] +
                                                                     view["byteLength"]])
    assert max(indices) < positions["count"] and len(indices) // 3 == asset["properties"]["faceCount"]
    view = gltf["bufferViews"][positions["bufferView"]]
    coords = struct.unpack(f"<{positions['count'] * 3}f", binary[view["byteOffset"]:view["byteOffset"] +
                                                                 view["byteLength"]])
    assert [min(coords[i::3]) for i in range(3)] == positions["min"]
    assert [max(coords[i::3]) for i in range(3)] == positions["max"]
    assert "COLOR_0" in primitive["attributes"]


def test_text_model_answers_in_metadata_output_without_assets(sb):
    before = set(sb.state.assets)
    job = run(sb, TEXT, {"prompt": "a knight's banner", "maxWords": 12})
    assert "assetIds" not in job["metadata"] and set(sb.state.assets) == before
    text = job["metadata"]["output"]["text"]
    assert "knight's banner" in text and len(text.split()) <= 12


def test_scenario_llm_takes_its_prompt_in_instruction_and_answers_with_text_assets(sb):
    """Contract §4.4 (`instruction`, flagged `prompt: true`, no `prompt` input) and §10b (text assets)."""
    model = api(sb, "GET", "/models/model_scenario-llm").json()["model"]
    flagged = [i["name"] for i in model["inputs"] if i.get("prompt")]
    assert flagged == ["instruction"] and "prompt" not in {i["name"] for i in model["inputs"]}
    assert {"textInputs", "images", "numOutputs", "model", "thinkingLevel"} <= {i["name"] for i in model["inputs"]}
    refused = run(sb, "model_scenario-llm", {"prompt": "a knight's banner"}, status=400)
    assert "prompt" in refused["reason"]
    job = run(sb, "model_scenario-llm", {"instruction": "name a knight's banner", "numOutputs": 2})
    assert "output" not in job["metadata"] and len(job["metadata"]["assetIds"]) == 2
    texts = []
    for asset_id in job["metadata"]["assetIds"]:
        asset = api(sb, "GET", f"/assets/{asset_id}").json()["asset"]
        served = requests.get(asset["url"], timeout=10)
        assert (asset["kind"], asset["mimeType"]) == ("text", "text/plain")
        assert served.headers["Content-Type"].startswith("text/plain")
        text = served.content.decode()
        props = asset["properties"]
        assert props["charCount"] == len(text) and props["wordCount"] == len(text.split())
        assert props["preview"] == text[:len(props["preview"])] and not props["hasFullPreview"]
        assert asset["metadata"]["preview"] == props["preview"] and "knight's banner" in text
        texts.append(text)
    assert texts[0] != texts[1]


def test_image_and_upload_assets_carry_their_real_type(sb):
    job = run(sb, FLUX2, {"prompt": "a lamp", "width": 512, "height": 512})
    asset, served = output(sb, job)
    assert (asset["kind"], asset["mimeType"]) == ("image", "image/png")
    assert served.headers["Content-Type"] == "image/png" and Image.open(io.BytesIO(served.content)).format == "PNG"
    jpeg = upload(sb, "JPEG")
    assert (jpeg["kind"], jpeg["mimeType"], jpeg["properties"]["format"]) == ("image", "image/jpeg", "jpeg")
    served = requests.get(jpeg["url"], timeout=10)
    assert served.headers["Content-Type"] == "image/jpeg" and Image.open(io.BytesIO(served.content)).format == "JPEG"


# -- Catalog ------------------------------------------------------------------------------------------------

def test_public_catalog_has_hundreds_of_runnable_models_in_score_order(sb):
    rows = all_rows(sb, privacy="public", pageSize=100)
    custom = [r for r in rows if r["custom"]]
    assert len(custom) >= 500 and len({r["id"] for r in rows}) == len(rows)
    assert all("inputs" not in r and "uiConfig" not in r and "score" not in r for r in rows)
    first_page = [r["id"] for r in rows[:10]]
    assert {VIDEO, MESH, TEXT, FLUX2} <= set(first_page)  # the first page mixes output kinds
    ids = [r["id"] for r in rows]
    assert ids.index(FLUX1) > 400 and ids.index(KONTEXT) > 400
    assert all_rows(sb, privacy="public", pageSize=500) == rows  # same order whatever the page size
    assert api(sb, "GET", "/models", params={"privacy": "public", "pageSize": 501}).status_code == 400
    ascending = all_rows(sb, privacy="public", pageSize=500, sortBy="createdAt", sortDirection="asc")
    dates = [r["createdAt"] for r in ascending]
    assert dates == sorted(dates) and dates != [r["createdAt"] for r in rows]
    assert api(sb, "GET", "/models", params={"privacy": "public", "sortBy": "name"}).status_code == 400


def base_for(sb, rows, lora_type, limit=None):
    """The naive scan: details one by one until a model's inputs accept the LoRA type."""
    for row in rows[:limit]:
        if row["custom"]:
            model = api(sb, "GET", f"/models/{row['id']}").json()["model"]
            if any(lora_type in i.get("modelTypes", []) for i in model["inputs"]):
                return model["id"]
    return None


def test_a_naive_base_scan_fails_for_bases_far_down_the_list(sb):
    rows = all_rows(sb, privacy="public", pageSize=100)
    assert base_for(sb, rows, "flux.2-dev-lora", limit=40) == FLUX2
    assert base_for(sb, rows, "flux.1-lora", limit=40) is None
    assert base_for(sb, rows, "flux.1-kontext-lora", limit=40) is None
    assert base_for(sb, rows, "flux.1-lora") == FLUX1  # found only by scanning ~460 details
    assert base_for(sb, rows, "flux.1-kontext-lora") == KONTEXT


def test_types_filter(sb):
    custom = all_rows(sb, privacy="public", types="custom", pageSize=500)
    assert len(custom) >= 500 and {r["type"] for r in custom} == {"custom"}
    loras = all_rows(sb, privacy="public", types="flux.1-lora,flux.2-dev-lora")
    assert loras and {r["type"] for r in loras} == {"flux.1-lora", "flux.2-dev-lora"}
    assert {r["type"] for r in all_rows(sb, privacy="public", type="flux.2-dev-lora")} == {"flux.2-dev-lora"}


def test_trained_models_as_recorded(sb):
    own = {m["id"]: m for m in all_rows(sb)}
    assert own[KONTEXT_LORA]["type"] == "flux.1-kontext-lora" and own[KONTEXT_LORA]["capabilities"] == ["img2img"]
    assert "compliantModelIds" not in own[KONTEXT_LORA]
    assert own[FOREST]["compliantModelIds"] == ["flux.1-dev", "flux.1-schnell"]  # slugs, not ids
    assert own[FOREST]["parentModelId"] != FLUX1 and own[FOREST]["parentModelId"] not in own
    training = next(m for m in own.values() if m["status"] == "training")
    assert isinstance(training["trainingProgress"]["updatedAt"], (int, float))  # ms epoch, as the SDK types it
    assert all(m["trainingProgress"] == {} for m in own.values() if m["status"] == "trained")


def test_flux1_dev_has_its_real_inputs(sb):
    model = api(sb, "GET", f"/models/{FLUX1}").json()["model"]
    inputs = {i["name"]: i for i in model["inputs"]}
    assert {"image", "strength", "controlImage", "controlModality", "controlStrength", "loras", "lorasScale",
            "modelId"} <= set(inputs) and "referenceImages" not in inputs
    assert inputs["loras"]["modelTypes"] == ["flux.1-lora"]
    assert inputs["modelId"]["modelTypes"] == ["flux.1-lora", "flux.1-composition"]
    reference = upload(sb)
    job = run(sb, FLUX1, {"prompt": "a castle", "image": reference["id"], "strength": 0.6, "loras": [FOREST],
                          "lorasScale": [0.8]})
    asset, served = output(sb, job)
    assert asset["source"] == "img2img" and Image.open(io.BytesIO(served.content)).size == (1104, 832)
    assert job["metadata"]["input"]["loras"] == [FOREST]
    assert "Invalid model(s)" in run(sb, FLUX1, {"prompt": "x", "loras": [COMPOSITION]}, 400)["reason"]
    assert run(sb, FLUX1, {"prompt": "x", "referenceImages": [reference["id"]]}, 400) == \
        {"reason": "Input referenceImages is not supported"}
    assert run(sb, FLUX1, {"prompt": "x", "strength": 1.5}, 400) == {"reason": "Input strength must be at most 1"}


def test_kontext_runs_its_one_lora(sb):
    reference = upload(sb)
    body = {"prompt": "make it a potion", "referenceImages": [reference["id"]], "loras": [KONTEXT_LORA],
            "lorasScale": [1]}
    priced = api(sb, "POST", f"/generate/custom/{KONTEXT}", params={"dryRun": "true"}, json=body)
    assert priced.status_code == 269 and priced.json()["creativeUnitsCost"] == 17.75
    plain = api(sb, "POST", f"/generate/custom/{KONTEXT}", params={"dryRun": "true"},
                json={"prompt": "x", "referenceImages": [reference["id"]]})
    assert plain.json()["creativeUnitsCost"] == 12.75
    job = run(sb, KONTEXT, body)
    assert job["metadata"]["input"] == {**body, "modelId": KONTEXT} and len(job["metadata"]["assetIds"]) == 1
    assert "at most 1 items" in run(sb, KONTEXT, {**body, "loras": [KONTEXT_LORA, KONTEXT_LORA]}, 400)["reason"]
    assert "Invalid model(s)" in run(sb, KONTEXT, {**body, "loras": [HERO]}, 400)["reason"]
    assert run(sb, KONTEXT, {"prompt": "x"}, 400) == {"reason": "Input referenceImages is required"}
    assert run(sb, KONTEXT_LORA, {"prompt": "x"}, 400) == {"reason": "Custom models only are supported for this "
                                                                     "endpoint"}


def test_catalog_is_cheap_and_deterministic():
    assert [m["id"] for m in _catalog._fillers()] == [m["id"] for m in _catalog._fillers()]
    assert len(_catalog.MODELS) > 550
