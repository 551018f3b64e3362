"""The sandbox trains LoRAs as the real API does (contract §12b, §12d): models, training images, the 269 dry run,
the stage machine, cancel, failures, and trained LoRAs that run through their base and look like their training set.

Most tests drive the trainings with an injected clock, so every stage is seen at a known time, with no sleeps.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import time

import pytest
import requests
from PIL import Image, ImageChops, ImageDraw, ImageStat

from scenario_nb import sandbox as sandbox_mod

from conftest import Clock

FLUX2, FLUX1 = "model_bfl-flux-2-dev", "model_bfl-flux-1-dev"
RED = ("#c01818", "#e03030", "#901010")
BLUE = ("#1830c0", "#3050e0", "#102090")


@pytest.fixture
def clock():
    return Clock(1_795_000_000.0, frozen=True)


@pytest.fixture
def sb(clock):
    with sandbox_mod.start(job_seconds=0.3, seed=7, list_lag=0, train_seconds=100, clock=clock) as server:
        yield server


def api(sb, method, path, **kwargs):
    return requests.request(method, sb.url + path, auth=(sb.api_key, sb.api_secret), timeout=10, **kwargs)


def ok(answer, status=200):
    assert answer.status_code == status, answer.text
    return answer.json()


def refused(answer, status, reason):
    assert answer.status_code == status, answer.text
    assert answer.json()["reason"] == reason, answer.json()
    return answer.json()


def png(colour, size=(1024, 1024), accent="white", mark=None) -> bytes:
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse([w // 3, h // 3, 2 * w // 3, 2 * h // 3], fill=accent)
    if mark:
        draw.rectangle([0, 0, w // 3, h // 3], fill=mark)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def new_model(sb, mtype="flux.2-dev-lora", name="Potion Icons"):
    return ok(api(sb, "POST", "/models", json={"name": name, "type": mtype}))["model"]


def add_images(sb, model_id, colours, **png_args):
    for n, colour in enumerate(colours):
        ok(api(sb, "POST", f"/models/{model_id}/training-images",
               json={"name": f"img-{n}.png", "data": data_url(png(colour, **png_args))}))


def get_model(sb, model_id):
    return ok(api(sb, "GET", f"/models/{model_id}"))["model"]


def training_jobs(sb):
    return [j for j in sb.jobs.values() if "training" in j]


def trained(sb, clock, colours, mtype="flux.2-dev-lora", name="Set", **png_args):
    """A model trained on images of these colours (the clock moved past the end)."""
    model = new_model(sb, mtype, name)
    add_images(sb, model["id"], colours, **png_args)
    ok(api(sb, "PUT", f"/models/{model['id']}/train", json={}))
    clock.now += 1000
    assert get_model(sb, model["id"])["status"] == "trained"
    return model["id"]


# -- POST /models --------------------------------------------------------------------------------------------

def test_create_answers_a_new_private_model(sb):
    model = new_model(sb)
    assert model["id"].startswith("model_") and re.fullmatch(r"model_[1-9A-HJ-NP-Za-km-z]{24}", model["id"])
    expected = {"name": "Potion Icons", "type": "flux.2-dev-lora", "status": "new", "privacy": "private",
                "source": "scenario", "custom": False, "trainingImagesNumber": 0, "trainingImages": [],
                "trainingImagePairs": [], "trainingProgress": {}, "parameters": {}}
    assert {k: model[k] for k in expected} == expected and "style" not in model
    own = ok(api(sb, "GET", "/models"))["models"]
    assert own[0]["id"] == model["id"]  # private list, newest first
    assert [m["id"] for m in ok(api(sb, "GET", "/models", params={"status": "new"}))["models"]] == [model["id"]]
    untyped = ok(api(sb, "POST", "/models", json={}))["model"]
    assert untyped["type"] == "flux.2-dev-lora" and untyped["status"] == "new"  # `type` is required on a Model [SDK]


@pytest.mark.parametrize("body, reason", [
    ({"type": "flux.3-ultra-lora"}, "Invalid model type: flux.3-ultra-lora"),
    ({"type": "custom"}, "Invalid model type: custom"),
    ({"type": "flux.2-dev-lora", "name": "x" * 65}, "name must be a string of at most 64 characters"),
    ({"type": "flux.2-dev-lora", "parameters": {"nbEpochs": 2}},
     "Unknown field parameters; parameters go in PUT /models/{id} or the train call"),
])
def test_create_refusals_make_no_model(sb, body, reason):
    before = len(sb.state.models)
    refused(api(sb, "POST", "/models", json=body), 400, reason)
    assert len(sb.state.models) == before


def test_type_changes_only_while_new(sb, clock):
    model = new_model(sb)
    assert ok(api(sb, "PUT", f"/models/{model['id']}", json={"type": "zimage-lora"}))["model"]["type"] == "zimage-lora"
    add_images(sb, model["id"], RED)
    ok(api(sb, "PUT", f"/models/{model['id']}/train", json={}))
    refused(api(sb, "PUT", f"/models/{model['id']}", json={"type": "flux.2-dev-lora"}), 400,
            "The model type can only be changed while the model is new")
    assert get_model(sb, model["id"])["type"] == "zimage-lora"


# -- Training images -----------------------------------------------------------------------------------------

def test_training_image_is_an_asset_captioned_at_once(sb):
    model = new_model(sb)
    image = ok(api(sb, "POST", f"/models/{model['id']}/training-images",
                   json={"name": "potion-01.png", "data": data_url(png(RED[0]))}))["trainingImage"]
    assert set(image) == {"id", "name", "createdAt", "description", "automaticCaptioning", "downloadUrl"}
    assert image["name"] == "potion-01.png" and image["description"] == ""
    assert "red" in image["automaticCaptioning"]  # it describes the picture
    asset = ok(api(sb, "GET", f"/assets/{image['id']}"))["asset"]
    assert asset["metadata"]["trainingImage"] is True and asset["automaticCaptioning"] == image["automaticCaptioning"]
    assert requests.get(image["downloadUrl"], timeout=5).content == png(RED[0])
    detail = get_model(sb, model["id"])
    assert detail["trainingImagesNumber"] == 1 and [i["id"] for i in detail["trainingImages"]] == [image["id"]]

    ok(api(sb, "PUT", f"/assets/{image['id']}", json={"description": "a red potion, hand-written caption"}))
    assert get_model(sb, model["id"])["trainingImages"][0]["description"] == "a red potion, hand-written caption"


def test_training_image_refusals_add_nothing(sb):
    model = new_model(sb)
    path = f"/models/{model['id']}/training-images"
    uploads = [ok(api(sb, "POST", "/assets", json={"name": f"u{n}.png", "image": base64.b64encode(
        png("#%02x4040" % (40 + 10 * n))).decode()}))["asset"]["id"] for n in range(12)]
    ok(api(sb, "POST", path, json={"assetId": uploads[0]}))
    refused(api(sb, "POST", path, json={"assetId": uploads[0]}), 400,
            "The provided assetId is already a training image of this model")
    refused(api(sb, "POST", path, json={"data": data_url(png(RED[0]))}), 400, "name is required with data")
    ok(api(sb, "POST", path, json={"name": "a.png", "data": data_url(png(RED[0]))}))
    refused(api(sb, "POST", path, json={"name": "b.png", "data": data_url(png(RED[0]))}), 400,
            "The provided image is already a training image of this model")
    refused(api(sb, "POST", path, json={"assetIds": uploads[1:12]}), 400,
            "Too many assetIds provided in a single request")
    refused(api(sb, "POST", path, json={"assetId": uploads[1], "data": data_url(png(BLUE[0])), "name": "c.png"}),
            400, "Use exactly one of data (with name), assetId or assetIds")
    refused(api(sb, "POST", path, json={"assetIds": uploads[1:3], "assetId": uploads[3]}), 400,
            "Use exactly one of data (with name), assetId or assetIds")
    refused(api(sb, "POST", path, json={"name": "raw.png", "data": base64.b64encode(png(BLUE[0])).decode()}), 400,
            "data must be a data URL (data:image/png;base64,...)")
    refused(api(sb, "POST", path, json={"name": "x.png", "data": "data:image/png;base64,"
                                        + base64.b64encode(b"not an image").decode()}), 400, "Invalid image")
    refused(api(sb, "POST", path, json={"assetIds": [uploads[1], "asset_NoSuchAsset1234567890abcd"]}), 404,
            "Asset asset_NoSuchAsset1234567890abcd not found")
    assert get_model(sb, model["id"])["trainingImagesNumber"] == 2  # a refused batch adds none of its images
    ok(api(sb, "POST", path, json={"assetIds": uploads[1:11]}))  # ten at once is the most
    assert get_model(sb, model["id"])["trainingImagesNumber"] == 12


def test_dataset_ceiling_is_a_429_naming_the_action(clock):
    with sandbox_mod.start(train_seconds=10, clock=clock, max_training_images=2) as sb:
        model = new_model(sb)
        add_images(sb, model["id"], RED[:2])
        answer = api(sb, "POST", f"/models/{model['id']}/training-images",
                     json={"name": "third.png", "data": data_url(png(RED[2]))})
        assert answer.status_code == 429
        assert answer.json() == {"reason": "Too many training images: the limit is 2",
                                 "actionName": "add-training-image", "actionLimit": 2}
        assert get_model(sb, model["id"])["trainingImagesNumber"] == 2


def test_pairs_only_take_this_models_training_images(sb):
    edit, other = new_model(sb, "flux.2-dev-edit-lora"), new_model(sb, "flux.2-dev-lora")
    add_images(sb, edit["id"], RED + BLUE[:1])
    add_images(sb, other["id"], BLUE[1:])
    ids = [i["id"] for i in get_model(sb, edit["id"])["trainingImages"]]
    foreign = get_model(sb, other["id"])["trainingImages"][0]["id"]
    path = f"/models/{edit['id']}/training-images/pairs"
    refused(api(sb, "PUT", path, json=[{"sourceId": ids[0], "targetId": foreign, "instruction": "x"}]), 400,
            f"targetId {foreign} is not a training image of this model")
    assert get_model(sb, edit["id"])["trainingImagePairs"] == []
    pairs = [{"sourceId": ids[0], "targetId": ids[1], "instruction": "make it glow"},
             {"sourceId": ids[2], "targetId": ids[3], "instruction": "make it blue"}]
    assert ok(api(sb, "PUT", path, json=pairs)) == {"count": 2, "pairs": pairs}
    assert get_model(sb, edit["id"])["trainingImagePairs"] == pairs
    refused(api(sb, "PUT", f"/models/{other['id']}/training-images/pairs", json=pairs[:1]), 400,
            "Training image pairs are only for edit models")


def test_no_image_changes_while_training(sb):
    model = new_model(sb)
    add_images(sb, model["id"], RED)
    ok(api(sb, "PUT", f"/models/{model['id']}/train", json={}))
    refused(api(sb, "POST", f"/models/{model['id']}/training-images",
                json={"name": "late.png", "data": data_url(png(BLUE[0]))}), 400,
            "Cannot change the training images of a model that is training")
    assert get_model(sb, model["id"])["trainingImagesNumber"] == 3


# -- PUT /models/{id}/train: refusals and the dry run --------------------------------------------------------

@pytest.mark.parametrize("mtype, parameters, reason", [
    ("flux.2-dev-lora", {"nbEpochs": 5}, "Parameter nbEpochs must be between 1 and 4 for flux.2-dev-lora models"),
    ("flux.1-lora", {"nbEpochs": 9}, "Parameter nbEpochs must be between 1 and 8 for flux.1-lora models"),
    ("flux.1-lora", {"rank": 65}, "Parameter rank must be between 2 and 64 for flux.1-lora models"),
    ("zimage-lora", {"rank": 129}, "Parameter rank must be between 2 and 128 for zimage-lora models"),
    ("flux.2-dev-lora", {"batchSize": 5}, "Parameter batchSize must be between 1 and 4 for flux.2-dev-lora models"),
    ("flux.2-dev-lora", {"learningRate": 0}, "Parameter learningRate must be greater than 0"),
    ("flux.2-dev-lora", {"nbRepeats": "ten"}, "Parameter nbRepeats must be a number"),
    ("flux.2-dev-lora", {"optimizeFor": "speed"}, "Parameter optimizeFor must be one of likeness"),
    ("flux.2-dev-lora", {"samplePrompts": ["a", "b", "c", "d", "e"]},
     "Parameter samplePrompts must be at most 4 items long"),
    ("flux.2-dev-lora", {"samplePrompts": ["a"], "sampleSourceImages": ["asset_x"]},
     "Parameter sampleSourceImages is only available for edit models"),
    ("flux.2-dev-lora", {"cloneType": "instant"},
     "Parameter cloneType is only available for ElevenLabs voice training"),
    ("flux.2-dev-lora", {"epochsPlease": 3}, "Parameter epochsPlease is not supported"),
])
def test_parameters_out_of_range_are_refused(sb, mtype, parameters, reason):
    model = new_model(sb, mtype)
    add_images(sb, model["id"], RED)
    for dry in ({"dryRun": "true"}, {}):
        refused(api(sb, "PUT", f"/models/{model['id']}/train", params=dry, json={"parameters": parameters}), 400,
                reason)
    assert get_model(sb, model["id"])["status"] == "new" and training_jobs(sb) == []


def test_train_refusals(sb):
    refused(api(sb, "PUT", "/models/model_NoSuchModeL1234567890abcd/train", json={}), 404,
            "Model model_NoSuchModeL1234567890abcd not found")
    empty = new_model(sb)
    refused(api(sb, "PUT", f"/models/{empty['id']}/train", json={}), 400, "The model has no training images")
    edit = new_model(sb, "qwen-image-edit-2511-lora")
    add_images(sb, edit["id"], RED)
    refused(api(sb, "PUT", f"/models/{edit['id']}/train", json={}), 400,
            "Edit models need at least 2 training image pairs (sourceId and targetId)")
    model = new_model(sb)
    add_images(sb, model["id"], RED)
    ok(api(sb, "PUT", f"/models/{model['id']}/train", json={}))
    refused(api(sb, "PUT", f"/models/{model['id']}/train", json={}), 400, "Model is already training")
    assert len(training_jobs(sb)) == 1 and get_model(sb, empty["id"])["status"] == "new"


def test_dry_run_is_269_linear_in_images_and_epochs_and_changes_nothing(sb):
    model = new_model(sb)
    path = f"/models/{model['id']}/train"
    simulated = api(sb, "PUT", path, params={"dryRun": "true", "trainingImagesCount": 12},
                    json={"parameters": {"nbEpochs": 4}})
    assert simulated.status_code == 269
    assert simulated.json() == {"creativeUnitsCost": 160, "creativeUnitsDiscount": 0,
                                "costDetails": {"train-model": 160}}  # §12e.3's figures
    add_images(sb, model["id"], RED)
    prices = {}
    for epochs in (1, 2, 4):
        answer = api(sb, "PUT", path, params={"dryRun": "api", "trainingImagesCount": 12},
                     json={"parameters": {"nbEpochs": epochs}})
        assert answer.status_code == 269 and set(answer.json()) == {"creativeUnitsCost", "creativeUnitsDiscount",
                                                                    "costDetails"}
        prices[epochs] = answer.json()["creativeUnitsCost"]  # the real images count (3), not the simulated 12
    assert prices == {1: 10, 2: 20, 4: 40}
    assert get_model(sb, model["id"])["status"] == "new" and training_jobs(sb) == []
    assert sb.stats()["trainings_started"] == 0
    started = ok(api(sb, "PUT", path, json={"parameters": {"nbEpochs": 4}}))
    assert started["creativeUnitsCost"] == 40 and started["costDetails"] == {"train-model": 40}
    assert sb.stats()["trainings_started"] == 1 and len(training_jobs(sb)) == 1


# -- The stage machine ---------------------------------------------------------------------------------------

def test_stages_progress_and_remaining_time_follow_the_clock(sb, clock):
    model = new_model(sb)
    add_images(sb, model["id"], RED)
    start = clock.now
    answer = ok(api(sb, "PUT", f"/models/{model['id']}/train",
                    json={"parameters": {"nbEpochs": 3, "samplePrompts": ["a red potion", "a red sword"]}}))
    job_id = answer["job"]["jobId"]
    assert answer["job"]["jobType"] == "musubi-model-training" and answer["job"]["status"] == "queued"
    assert answer["model"]["status"] == "training" and answer["model"]["jobId"] == job_id
    assert answer["model"]["trainingProgress"]["stage"] == "pending"
    # train_seconds=100: pending 0–10 s, queued-for-train 10–30, starting-train 30–45, running-train 45–100.
    seen = []
    for at in (1, 5, 11, 20, 29, 31, 44, 46, 60, 72.5, 99):
        clock.now = start + at
        progress = get_model(sb, model["id"])["trainingProgress"]
        job = ok(api(sb, "GET", f"/jobs/{job_id}"))["job"]
        seen.append((at, progress, job["status"], job["progress"]))
        assert progress["updatedAt"] == int(clock.now * 1000)  # ms, refreshed on every read
    stages = [p["stage"] for _, p, _, _ in seen]
    assert stages == ["pending"] * 2 + ["queued-for-train"] * 3 + ["starting-train"] * 2 + ["running-train"] * 4
    positions = [p["position"] for _, p, _, _ in seen]
    assert positions[0] >= 1 and positions == sorted(positions, reverse=True) and positions[4] == 0
    assert all(p["startedAt"] == int((start + 30) * 1000) for _, p, _, _ in seen[5:])
    running = [p for _, p, _, _ in seen[7:]]
    assert [p["progress"] for p in running] == [round(1 / 55, 3), round(15 / 55, 3), 0.5, round(54 / 55, 3)]
    assert [p["remainingTimeMs"] for p in running] == [54000, 40000, 27500, 1000]
    assert [s for _, _, s, _ in seen] == ["queued"] * 5 + ["in-progress"] * 6
    assert [round(p, 3) for *_, p in seen[7:]] == [p["progress"] for p in running]

    clock.now = start + 100
    done = get_model(sb, model["id"])
    assert done["status"] == "trained" and done["trainingProgress"] == {}
    assert done["trainingStats"] == {"startedAt": _iso(start + 30), "endedAt": _iso(start + 100),
                                     "queueDuration": 30, "trainDuration": 70}
    assert [e["epoch"] for e in done["epochs"]] == ["000001", "000002", "000003"]
    assert all(len(e["assets"]) == 2 for e in done["epochs"])
    sample = requests.get(done["epochs"][-1]["assets"][0]["url"], timeout=10)
    assert sample.headers["Content-Type"] == "image/png" and Image.open(io.BytesIO(sample.content)).size == (1024,
                                                                                                           1024)
    assert done["thumbnail"]["assetId"] == done["epochs"][-1]["assets"][0]["assetId"]
    assert done["concepts"] == [{"modelId": model["id"], "scale": 0.8}]
    job = ok(api(sb, "GET", f"/jobs/{job_id}"))["job"]
    assert job["status"] == "success" and job["progress"] == 1
    assert [h["status"] for h in job["statusHistory"]] == ["queued", "in-progress", "success"]
    listed = ok(api(sb, "GET", "/jobs", params={"types": "musubi-model-training,flux-model-training"}))["jobs"]
    assert [j["jobId"] for j in listed] == [job_id]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def test_without_sample_prompts_only_the_last_epoch_is_kept(sb, clock):
    model_id = trained(sb, clock, RED, mtype="flux.1-lora")
    model = get_model(sb, model_id)
    assert model["epochs"] == [{"epoch": "000008"}]  # flux.1: 8 epochs by default, no sample images
    assert model["compliantModelIds"] == ["flux.1-dev", "flux.1-schnell"]
    job = ok(api(sb, "GET", f"/jobs/{model['jobId']}"))["job"]
    assert job["jobType"] == "flux-model-training"


def test_list_filters_on_training_status(sb, clock):
    model = new_model(sb)
    add_images(sb, model["id"], RED)
    ok(api(sb, "PUT", f"/models/{model['id']}/train", json={}))
    training = [m["id"] for m in ok(api(sb, "GET", "/models", params={"status": "training"}))["models"]]
    assert model["id"] in training
    refused(api(sb, "GET", "/models", params={"status": "training-canceled"}), 400,
            "status must be one of new, training, trained, failed, deleted")
    clock.now += 1000
    assert model["id"] in [m["id"] for m in ok(api(sb, "GET", "/models", params={"status": "trained"}))["models"]]


def test_real_durations_without_train_seconds(clock):
    with sandbox_mod.start(clock=clock, seed=3) as sb:
        model = new_model(sb)
        add_images(sb, model["id"], RED)
        ok(api(sb, "PUT", f"/models/{model['id']}/train", json={"parameters": {"nbEpochs": 2}}))
        start = clock.now
        clock.now = start + 1.9
        assert get_model(sb, model["id"])["trainingProgress"]["stage"] == "pending"  # 2 s
        clock.now = start + 11.9
        assert get_model(sb, model["id"])["trainingProgress"]["stage"] == "queued-for-train"  # 10–60 s
        clock.now = start + 2 + 10 + 30 + 119  # the shortest queue and start, then ~1 min per epoch
        assert get_model(sb, model["id"])["status"] == "training"
        clock.now = start + 2 + 60 + 90 + 120.1  # the longest
        assert get_model(sb, model["id"])["status"] == "trained"


# -- Cancel, failures, limits --------------------------------------------------------------------------------

def test_cancel_through_the_training_route_only(sb, clock):
    model = new_model(sb)
    add_images(sb, model["id"], RED)
    job_id = ok(api(sb, "PUT", f"/models/{model['id']}/train", json={}))["job"]["jobId"]
    clock.now += 50
    refused(api(sb, "POST", f"/jobs/{job_id}/action", json={"action": "cancel"}), 400,
            "Cannot cancel this type of job")
    assert get_model(sb, model["id"])["status"] == "training"
    answer = ok(api(sb, "POST", f"/models/{model['id']}/train/action", json={"action": "cancel"}))
    assert set(answer) == {"model"} and answer["model"]["status"] == "training-canceled"
    assert answer["model"]["trainingProgress"] == {}
    clock.now += 1000
    assert get_model(sb, model["id"])["status"] == "training-canceled"  # never trained after all
    job = ok(api(sb, "GET", f"/jobs/{job_id}"))["job"]
    assert job["status"] == "canceled" and [h["status"] for h in job["statusHistory"]] == ["queued", "in-progress",
                                                                                            "canceled"]
    refused(api(sb, "POST", f"/models/{model['id']}/train/action", json={"action": "cancel"}), 400,
            "Model is not training (status training-canceled)")
    refused(api(sb, "POST", f"/generate/custom/{FLUX2}", json={"prompt": "x", "modelId": model["id"]}), 400,
            f"Model {model['id']} is not trained (status training-canceled)")


def test_generation_jobs_still_refuse_cancel(sb):
    job = ok(api(sb, "POST", "/generate/custom/model_google-gemini-3-1-flash", json={"prompt": "x"}))["job"]
    refused(api(sb, "POST", f"/jobs/{job['jobId']}/action", json={"action": "cancel"}), 400,
            "Cannot cancel this type of job. Action not permitted.")


def test_cancel_refused_when_trainings_are_not_cancellable(clock):
    with sandbox_mod.start(train_seconds=10, clock=clock, cancellable_types=("inference",)) as sb:
        model = new_model(sb)
        add_images(sb, model["id"], RED)
        ok(api(sb, "PUT", f"/models/{model['id']}/train", json={}))
        refused(api(sb, "POST", f"/models/{model['id']}/train/action", json={"action": "cancel"}), 400,
                "Cannot cancel this type of job. Action not permitted.")
        assert get_model(sb, model["id"])["status"] == "training"


def test_an_injected_failure_fails_the_model_and_its_job_with_a_reason(sb, clock):
    sb.inject("training_failure", error="Training diverged", hint="Lower the learning rate")
    model = new_model(sb)
    add_images(sb, model["id"], RED)
    job_id = ok(api(sb, "PUT", f"/models/{model['id']}/train", json={}))["job"]["jobId"]
    clock.now += 60
    assert get_model(sb, model["id"])["status"] == "training"
    clock.now += 20  # halfway through running-train (45–100 s)
    failed = get_model(sb, model["id"])
    assert failed["status"] == "failed" and failed["trainingProgress"] == {}
    assert not {"error", "hint", "epochs", "trainingStats"} & set(failed)  # the model has no error field
    job = ok(api(sb, "GET", f"/jobs/{job_id}"))["job"]
    assert job["status"] == "failure" and job["metadata"] == {"error": "Training diverged",
                                                              "hint": "Lower the learning rate"}
    refused(api(sb, "PUT", f"/models/{model['id']}/train", json={}), 400,
            "Only a new model can be trained; this one is failed")
    assert trained(sb, clock, BLUE)  # only the next training failed
    assert sb.stats()["faults"] == {}  # an injected failure is not a seeded one


def test_parallel_trainings_429(sb, clock):
    first, second = new_model(sb), new_model(sb)
    add_images(sb, first["id"], RED)
    add_images(sb, second["id"], BLUE)
    ok(api(sb, "PUT", f"/models/{first['id']}/train", json={}))
    answer = api(sb, "PUT", f"/models/{second['id']}/train", json={})
    assert answer.status_code == 429 and "retry-after" not in answer.headers
    assert answer.json() == {"reason": "Too many parallel trainings: the limit is 1", "actionName": "parallel-training",
                             "actionLimit": 1}
    assert get_model(sb, second["id"])["status"] == "new" and len(training_jobs(sb)) == 1
    clock.now += 1000
    ok(api(sb, "PUT", f"/models/{second['id']}/train", json={}))  # the first one is done: a slot is free


# -- The trained LoRA ----------------------------------------------------------------------------------------

def render(sb, body, model=FLUX2) -> Image.Image:
    job_id = ok(api(sb, "POST", f"/generate/custom/{model}", json=body))["job"]["jobId"]
    for _ in range(200):
        job = ok(api(sb, "GET", f"/jobs/{job_id}"))["job"]
        if job["status"] == "success":
            asset = ok(api(sb, "GET", f"/assets/{job['metadata']['assetIds'][0]}"))["asset"]
            return Image.open(io.BytesIO(requests.get(asset["url"], timeout=10).content)).convert("RGB")
        assert job["status"] not in ("failure", "canceled")
        sb.state.clock.now += 0.05  # the test's frozen clock: the job ends when the test moves it
    raise AssertionError("job never ended")


def share_near(image: Image.Image, colours, distance=60) -> float:
    """The share of the picture (above its caption band) within `distance` of one of the colours."""
    top = image.crop((0, 0, image.width, int(image.height * 0.6))).resize((96, 64))
    targets = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in colours]
    raw = top.tobytes()
    pixels = [tuple(raw[i:i + 3]) for i in range(0, len(raw), 3)]
    return sum(1 for p in pixels if min(sum((a - b) ** 2 for a, b in zip(p, t, strict=True))
                                        for t in targets) < distance ** 2) / len(pixels)


def find_motif(image: Image.Image, training_image: bytes) -> float:
    """The best (lowest) mean difference between the output and the training image's motif, anywhere in it."""
    side = min(image.size) // 3 - 6
    motif = Image.open(io.BytesIO(training_image)).convert("RGB")
    left, top = (motif.width - min(motif.size)) // 2, (motif.height - min(motif.size)) // 2
    motif = motif.crop((left, top, left + min(motif.size), top + min(motif.size))).resize((side // 4, side // 4))
    small = image.resize((image.width // 4, image.height // 4))
    best = 255.0
    for y in range(0, small.height - motif.height):
        for x in range(0, small.width - motif.width):
            diff = ImageChops.difference(small.crop((x, y, x + motif.width, y + motif.height)), motif)
            best = min(best, ImageStat.Stat(diff.convert("L")).mean[0])
    return best


def test_a_trained_lora_routes_through_its_base_and_looks_like_its_training_set(sb, clock):
    red = trained(sb, clock, RED, name="Red set", mark="#20c020")
    blue = trained(sb, clock, BLUE, name="Blue set", accent="#f0d020")
    refused(api(sb, "POST", f"/generate/custom/{red}", json={"prompt": "a knight"}), 400,
            "Custom models only are supported for this endpoint")
    refused(api(sb, "POST", f"/generate/custom/{FLUX1}", json={"prompt": "a knight", "modelId": red}), 400,
            f"Invalid model(s): {red}.\nAllowed model types: flux.1-lora, flux.1-composition")
    body = {"prompt": "a knight", "width": 512, "height": 512, "seed": 4}
    plain = render(sb, body)
    with_red = render(sb, body | {"modelId": red})
    with_blue = render(sb, body | {"loras": [blue], "lorasScale": [0.8]})
    palette_red = RED + ("#ffffff", "#20c020")  # the training images' colours: ground, disc, corner mark
    palette_blue = BLUE + ("#f0d020",)
    assert share_near(with_red, palette_red) > 0.85 and share_near(with_blue, palette_blue) > 0.85
    assert share_near(with_red, palette_blue) < 0.3 and share_near(with_blue, palette_red) < 0.3
    assert share_near(plain, palette_red) < 0.3 and share_near(plain, palette_blue) < 0.3
    first_red = png(RED[0], mark="#20c020")
    assert find_motif(with_red, first_red) < 25  # the first training image, framed in the picture
    assert find_motif(plain, first_red) > 60
    job = next(j for j in sb.jobs.values() if j.get("body", {}).get("modelId") == red)
    assert ok(api(sb, "GET", f"/jobs/{job['id']}"))["job"]["metadata"]["input"]["modelId"] == red


def test_a_lora_in_training_cannot_run_yet(sb, clock):
    model = new_model(sb)
    add_images(sb, model["id"], RED)
    ok(api(sb, "PUT", f"/models/{model['id']}/train", json={}))
    refused(api(sb, "POST", f"/generate/custom/{FLUX2}", json={"prompt": "x", "modelId": model["id"]}), 400,
            f"Model {model['id']} is not trained (status training)")
    clock.now += 1000
    ok(api(sb, "POST", f"/generate/custom/{FLUX2}", json={"prompt": "x", "modelId": model["id"]}))


# -- The CLI -------------------------------------------------------------------------------------------------

def test_cli_train_seconds():
    proc = subprocess.Popen([sys.executable, "-m", "scenario_nb.sandbox", "--train-seconds", "1.5",
                             "--max-parallel-trainings", "2"], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+/v1)", proc.stdout.readline())[1]
        call = lambda method, path, **kw: requests.request(method, url + path, auth=("sandbox-key", "sandbox-secret"),  # noqa: E731
                                                            timeout=5, **kw)
        ids = []
        for colours in (RED, BLUE):  # two at once: --max-parallel-trainings 2
            model_id = call("POST", "/models", json={"type": "flux.2-dev-lora"}).json()["model"]["id"]
            for n, colour in enumerate(colours):
                call("POST", f"/models/{model_id}/training-images", json={"name": f"{n}.png",
                                                                          "data": data_url(png(colour))})
            assert call("PUT", f"/models/{model_id}/train", json={}).status_code == 200
            ids.append(model_id)
        for _ in range(300):
            statuses = {call("GET", f"/models/{i}").json()["model"]["status"] for i in ids}
            if statuses == {"trained"}:
                break
            assert statuses <= {"training", "trained"}
            time.sleep(0.05)
        assert statuses == {"trained"}  # 1.5 s, not the real ~6 minutes
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_the_lora_scale_sets_how_much_of_the_training_set_shows(sb, clock):
    red = trained(sb, clock, RED, name="Red set")
    body = {"prompt": "a knight", "width": 384, "height": 384, "seed": 9, "loras": [red]}
    shares = [share_near(render(sb, body | {"lorasScale": [scale]}), RED + ("#ffffff",))
              for scale in (0, 0.3, 0.7, 1.0)]
    assert shares[0] < 0.2 and shares[-1] > 0.85
    assert shares == sorted(shares) and len(set(shares)) == 4, shares
    with_slot = share_near(render(sb, {"prompt": "a knight", "width": 384, "height": 384, "seed": 9,
                                       "modelId": red}), RED + ("#ffffff",))
    assert with_slot > 0.85  # the modelId slot has no scale: the LoRA at full strength


def test_seeded_training_failures_and_injected_429s(clock):
    with sandbox_mod.start(train_seconds=10, clock=clock, faults={"training_failure": 1.0}) as sb:
        model = new_model(sb)
        add_images(sb, model["id"], RED)
        job_id = ok(api(sb, "PUT", f"/models/{model['id']}/train", json={}))["job"]["jobId"]
        clock.now += 100
        assert get_model(sb, model["id"])["status"] == "failed"
        assert ok(api(sb, "GET", f"/jobs/{job_id}"))["job"]["metadata"]["error"]
        assert sb.stats()["faults"] == {"training_failure": 1}

        other = new_model(sb)
        add_images(sb, other["id"], BLUE)
        sb.inject("rate_limit", path="/train", remaining_seconds=42)  # a cooldown
        cooldown = api(sb, "PUT", f"/models/{other['id']}/train", json={})
        assert (cooldown.status_code, cooldown.json()) == (429, {"reason": "Too many requests", "remainingSeconds": 42})
        sb.inject("rate_limit", path="/train")
        busy = api(sb, "PUT", f"/models/{other['id']}/train", json={})
        assert busy.json() == {"reason": "Too many requests", "actionName": "parallel-training", "actionLimit": 1}
        assert get_model(sb, other["id"])["status"] == "new" and sb.stats()["trainings_started"] == 1


def test_renaming_a_catalog_model_stays_in_its_sandbox(sb):
    hero = "model_HeroKnightLoRA7aB3cD4eF5gH6j"
    assert ok(api(sb, "PUT", f"/models/{hero}", json={"name": "Hero Knight v2"}))["model"]["name"] == "Hero Knight v2"
    with sandbox_mod.start() as fresh:
        assert ok(api(fresh, "GET", f"/models/{hero}"))["model"]["name"] == "Hero Knight"


def test_dataset_score_warns_before_paying(sb):
    model = new_model(sb)
    add_images(sb, model["id"], RED[:2])
    ok(api(sb, "POST", f"/models/{model['id']}/training-images", json={"name": "small.png", "data": data_url(
        png(BLUE[0], size=(640, 900)))}))
    images = [i["id"] for i in get_model(sb, model["id"])["trainingImages"]]
    score = ok(api(sb, "GET", f"/models/{model['id']}/scores/training-dataset"))
    assert score["modelId"] == model["id"] and score["status"] == "incomplete" and 0 <= score["score"] <= 1
    assert score["assetsWarnings"] == [{"assetId": images[2], "message": ["Width and height must be larger than 1024"]}]
    assert len(score["details"]["assetCouplesSimilarity"]) == 3
    similarity = {tuple(c["couple"]): c["similarity"] for c in score["details"]["assetCouplesSimilarity"]}
    assert similarity[(images[0], images[1])] > similarity[(images[0], images[2])]  # two reds are closer than red-blue
    ok(api(sb, "PUT", f"/assets/{images[0]}", json={"description": "a red disc"}))
    ok(api(sb, "PUT", f"/assets/{images[1]}", json={"description": "a red disc"}))
    again = ok(api(sb, "GET", f"/models/{model['id']}/scores/training-dataset"))
    assert {"couple": images[:2], "message": ["Captions are identical"]} in again["assetCouplesWarnings"]
    empty = new_model(sb)
    assert ok(api(sb, "GET", f"/models/{empty['id']}/scores/training-dataset"))["status"] == "unknown"


def test_deleted_models_are_gone_but_listed_as_deleted(sb, clock):
    lora = trained(sb, clock, RED)
    busy = new_model(sb)
    add_images(sb, busy["id"], BLUE)
    ok(api(sb, "PUT", f"/models/{busy['id']}/train", json={}))
    refused(api(sb, "DELETE", f"/models/{busy['id']}"), 400,
            "Cannot delete a model that is training; cancel its training first")
    assert ok(api(sb, "DELETE", f"/models/{lora}")) == {}
    refused(api(sb, "GET", f"/models/{lora}"), 404, f"Model {lora} not found")
    refused(api(sb, "POST", f"/generate/custom/{FLUX2}", json={"prompt": "x", "modelId": lora}), 404,
            f"Model {lora} not found")
    assert lora not in [m["id"] for m in ok(api(sb, "GET", "/models"))["models"]]
    deleted = ok(api(sb, "GET", "/models", params={"status": "deleted"}))["models"]
    assert [m["id"] for m in deleted] == [lora] and deleted[0]["deletedAt"]
    assert busy["id"] in [m["id"] for m in ok(api(sb, "GET", "/models"))["models"]]
