"""The text tools (§12c, §12d.7): caption, prompt, describe-style and translate, answered synchronously."""

from __future__ import annotations

import copy
from typing import Any, Optional

from . import _catalog, _text
from ._common import ApiError, iso
from ._training_rules import data_url_bytes, decode_image


def _text_job(state, job_kind: str) -> dict:
    now = state.clock()
    job_id = state.new_id("job")
    view = {"jobId": job_id, "jobType": job_kind, "status": "success", "progress": 1,
            "statusHistory": [{"status": "success", "date": iso(now)}], "metadata": {}, "authorId": _catalog.AUTHOR,
            "ownerId": _catalog.OWNER, "createdAt": iso(now), "updatedAt": iso(now)}
    state.jobs[job_id] = {"id": job_id, "type": job_kind, "created": now, "workflow": None, "view": view}
    return copy.deepcopy(view)


def _sampling(body: dict) -> int:
    for key, hi in (("temperature", 2), ("topP", 1)):
        value = body.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not 0 <= value <= hi):
            raise ApiError(400, f"{key} must be a number between 0 and {hi}")
    seed = body.get("seed", 0)
    if not isinstance(seed, (int, float)) or isinstance(seed, bool):
        raise ApiError(400, "seed must be a number")
    return int(seed)


def _image_bytes(state, ref: Any, field: str) -> bytes:
    if isinstance(ref, str) and ref.startswith("data:"):
        data = data_url_bytes(ref, field)
        decode_image(data)
        return data
    asset = state.assets.get(ref) if isinstance(ref, str) else None
    if asset is None:
        raise ApiError(404, f"Asset {ref} not found")
    if asset.get("kind", "image") != "image":
        raise ApiError(400, f"Asset {ref} is not an image")
    return state.image_bytes(asset)


def _style_model(state, model_id: Any) -> Optional[dict]:
    if model_id is None:
        return None
    model = state.models.get(model_id) if isinstance(model_id, str) else None
    if model is None:
        raise ApiError(404, f"Model {model_id} not found")
    return model


def caption(state, body: dict, query: dict) -> tuple:
    """`POST /generate/caption`: one caption per image, same order, synchronous."""
    images = body.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise ApiError(400, "images is required: an array of asset ids or data URLs")
    details = body.get("detailsLevel", "action")
    if details not in ("action", "action+style"):
        raise ApiError(400, "detailsLevel must be one of action, action+style")
    unwanted = body.get("unwantedSequences") or []
    if not isinstance(unwanted, list) or not all(isinstance(u, str) for u in unwanted):
        raise ApiError(400, "unwantedSequences must be an array of strings")
    seed = _sampling(body)
    model = _style_model(state, body.get("modelId"))
    cost = len(images)
    estimate = {"creativeUnitsCost": cost, "creativeUnitsDiscount": 0, "costDetails": {"caption": cost}}
    data = [_image_bytes(state, ref, "images") for ref in images]
    if query.get("dryRun") in ("true", "api"):
        return 269, estimate
    style_of = (model.get("name") or model["id"]) if model else None
    captions = [_text.caption(d, seed=seed, details=details, unwanted=unwanted, style_of=style_of) for d in data]
    with state.lock:
        job = _text_job(state, "caption")
    return 200, {"captions": captions, "detailsLevel": details, "job": job, **estimate}


def prompt(state, body: dict, query: dict) -> tuple:
    """`POST /generate/prompt`: `numResults` prompts for the mode, synchronous; `calls` when a model is given."""
    mode = body.get("mode")
    if mode not in _text.MODES:
        raise ApiError(400, f"mode must be one of {', '.join(_text.MODES)}")
    count = body.get("numResults", 1)
    if not isinstance(count, (int, float)) or isinstance(count, bool) or count != int(count) or not 1 <= count <= 10:
        raise ApiError(400, "numResults must be an integer between 1 and 10")
    text = body.get("prompt")
    if text is not None and not isinstance(text, str):
        raise ApiError(400, "prompt must be a string")
    if mode in ("completion", "inventive", "structured") and not text:
        raise ApiError(400, f"prompt is required with mode {mode}")
    for key in ("images", "assetIds"):
        if body.get(key) is not None and (not isinstance(body[key], list)
                                          or not all(isinstance(i, str) for i in body[key])):
            raise ApiError(400, f"{key} must be an array of asset ids or data URLs")
    images = list(body.get("images") or []) + list(body.get("assetIds") or [])
    if len(images) > (15 if mode == "contextual-v2" else 5):
        raise ApiError(400, f"images must be at most {15 if mode == 'contextual-v2' else 5} items long")
    if mode in ("contextual", "contextual-v2") and not images:
        raise ApiError(400, f"images are required with mode {mode}")
    if mode == "image-editing":
        if not body.get("image"):
            raise ApiError(400, "image is required with mode image-editing")
        images = [body["image"]] + images
    seed = _sampling(body)
    model = _style_model(state, body.get("modelId"))
    data = [_image_bytes(state, ref, "images") for ref in images]
    cost = int(count)
    estimate = {"creativeUnitsCost": cost, "creativeUnitsDiscount": 0, "costDetails": {"prompt": cost}}
    if query.get("dryRun") in ("true", "api"):
        return 269, estimate
    concept = ((model or {}).get("parameters") or {}).get("conceptPrompt", "")
    texts = _text.prompts(mode=mode, prompt=text or "", count=int(count), seed=seed,
                          captions=[_text.caption(d, seed=seed) for d in data], concept=concept)
    answer: dict = {"prompts": texts, "mode": mode}
    if model is not None and model.get("custom"):
        answer["calls"] = [{"modelId": model["id"], "parameters": {"prompt": t}} for t in texts]
    with state.lock:
        answer["job"] = _text_job(state, "generate-prompt")
    return 200, {**answer, **estimate}


def describe_style(state, body: dict, query: dict) -> tuple:
    """`POST /generate/describe-style`: the style of images, asset ids, or a model's training images."""
    for key in ("images", "assetIds"):
        if body.get(key) is not None and (not isinstance(body[key], list)
                                          or not all(isinstance(i, str) for i in body[key])):
            raise ApiError(400, f"{key} must be an array of asset ids or data URLs")
    refs = list(body.get("images") or []) + list(body.get("assetIds") or [])
    model = _style_model(state, body.get("modelId"))
    if model is not None and not refs:
        record = state.trainings.records.get(model["id"])
        refs = list(record["images"]) if record else []
        if not refs:
            raise ApiError(400, f"Model {model['id']} has no training images to describe")
    if not refs:
        raise ApiError(400, "One of images, assetIds or modelId is required")
    unwanted = body.get("unwantedSequences") or []
    if not isinstance(unwanted, list) or not all(isinstance(u, str) for u in unwanted):
        raise ApiError(400, "unwantedSequences must be an array of strings")
    _sampling(body)
    data = [_image_bytes(state, ref, "images") for ref in refs]
    estimate = {"creativeUnitsCost": 1, "creativeUnitsDiscount": 0, "costDetails": {"describe-style": 1}}
    if query.get("dryRun") in ("true", "api"):
        return 269, estimate
    description, synthesis = _text.describe_style(data, unwanted=unwanted)
    with state.lock:
        job = _text_job(state, "describe-style")
    return 200, {"description": description, "synthesis": synthesis, "job": job, **estimate}


def translate(state, body: dict, query: dict) -> tuple:
    """`POST /generate/translate`: the prompt in English and the language it was in."""
    text = body.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "prompt is required")
    _sampling(body)
    for ref in body.get("images") or []:
        _image_bytes(state, ref, "images")
    estimate = {"creativeUnitsCost": 1, "creativeUnitsDiscount": 0, "costDetails": {"translate": 1}}
    if query.get("dryRun") in ("true", "api"):
        return 269, estimate
    translation, language = _text.translate(text)
    with state.lock:
        job = _text_job(state, "translate")
    return 200, {"translation": translation, "detectedLanguage": language, "job": job, **estimate}


TEXT_TOOLS = {"caption": caption, "prompt": prompt, "describe-style": describe_style, "translate": translate}
