"""How the sandbox answers: a job, an asset, a page of a list (with its pagination token), as the cloud shapes them."""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import json
from typing import Any, Optional

from . import _catalog, _media
from ._common import ApiError, iso


def parse_iso(text: str) -> Optional[float]:
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None



def encode_token(offset: int, limit: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset, "limit": limit}).encode()).decode()


def decode_token(token: str) -> int:
    try:
        return int(json.loads(base64.b64decode(token, validate=True))["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError(400, "Invalid pagination token") from None


def paginate(items: list, query: dict, key: str, default: int, maximum: int) -> dict:
    try:
        size = int(query.get("pageSize", default))
    except ValueError:
        raise ApiError(400, "pageSize must be a number") from None
    if not 1 <= size <= maximum:
        raise ApiError(400, f"pageSize must be between 1 and {maximum}")
    offset = decode_token(query["paginationToken"]) if query.get("paginationToken") else 0
    page = items[offset:offset + size]
    out: dict = {key: page}
    if offset + size < len(items):
        out["nextPaginationToken"] = encode_token(offset + size, size)
    return out


def job_view(state: Any, job: dict, cdn: str, now: float) -> dict:
    if "view" in job:
        return copy.deepcopy(job["view"])
    if "training" in job:
        with state.lock:
            return state.trainings.job_view(job)
    status, progress, history = state.status_of(job, now)
    body = job["body"]
    # The body as sent (a LoRA run through its base keeps the LoRA's id); the URL's model only when absent.
    meta: dict = {"input": copy.deepcopy(body)}
    if job["workflow"]:
        meta["workflowId"] = job["workflow"]["id"]
    elif "modelId" not in body:
        meta["input"]["modelId"] = job["model"]["id"]
    if job["failure"] and status == "failure":
        meta["error"], meta["hint"] = job["failure"]
    cost = job_cost(job["model"], body)
    view = {"jobId": job["id"], "jobType": job["type"],
            "status": status, "progress": round(progress, 3), "statusHistory": history, "metadata": meta,
            "billing": {"cuCost": cost, "cuDiscount": 0}, "authorId": _catalog.AUTHOR, "ownerId": _catalog.OWNER,
            "createdAt": iso(job["created"]),
            "updatedAt": history[-1]["date"] if history else iso(job["created"])}
    if status == "success":
        assets = state.ensure_assets(job)
        if job["model"].get("output") == "metadata-text":  # answers in metadata.output, with no asset
            meta["output"] = {"text": _media.text_answer(body)}
        else:
            meta["assetIds"] = list(assets)
        if job["workflow"]:
            meta["flow"] = [{"id": "node_generate", "type": "custom-model", "status": "success",
                             "modelId": _catalog.HERO, "assets": [{"assetId": a, "url": state.signed_url(a, cdn)}
                                                                 for a in assets]}]
    elif job["workflow"]:
        meta["flow"] = [{"id": "node_generate", "type": "custom-model", "modelId": _catalog.HERO,
                         "status": {"failure": "failure", "canceled": "failure"}.get(status, "processing")}]
    if state.options["legacy"]:  # the quick-start guide's shapes (contract §11 rows 1 and 3)
        view["id"] = view.pop("jobId")
        if "assetIds" in meta:
            view["result"] = {"images": [{"url": state.signed_url(a, cdn)} for a in meta.pop("assetIds")]}
    return view


def job_cost(model: dict, body: dict) -> float:
    count = int(body.get("numOutputs", 1) or 1)
    lora = 5.0 if body.get("modelId") or body.get("loras") else 0.0
    return round((model.get("cost", 9.0) + lora) * count + 1.75, 2)


def asset_view(state: Any, asset: dict, cdn: str) -> dict:
    if asset.get("size") is None:
        state.image_bytes(asset)
    kind = asset.get("kind", "image")
    uploaded = asset["source"] == "uploaded"
    meta = {"kind": kind, "type": asset["source"]}
    if not uploaded:
        meta.update({"prompt": asset["prompt"], "seed": str(asset["seed"]), "modelId": asset["model_id"],
                     "parentJobId": asset["job_id"], "outputIndex": asset["index"]})
        if asset.get("aspect"):
            meta["aspectRatio"] = asset["aspect"]
    if asset.get("training_of"):
        meta.update({"trainingImage": True, "name": asset["name"]})
    properties: dict = {"size": asset["size"]}
    if kind == "image":
        meta.update({"width": asset["width"], "height": asset["height"]} if not uploaded else {})
        properties.update({"width": asset["width"], "height": asset["height"], "format": asset.get("format", "png")})
    elif kind == "video":
        properties.update(_media.VIDEO_PROPERTIES)
    elif kind == "3d":
        properties.update(_media.CUBE_PROPERTIES)
    elif kind == "text":
        properties.update(_media.text_properties(state.image_bytes(asset).decode()))
        meta["preview"] = properties["preview"]
    edits = ["PROMPT_EDITING", "REMOVE_BACKGROUND", "UPSCALE", "VECTORIZATION"] if kind == "image" else []
    view = {"id": asset["id"], "kind": kind, "mimeType": asset.get("mime") or _media.MIME[kind], "status": "success",
            "privacy": "private", "source": asset["source"], "url": state.signed_url(asset["id"], cdn),
            "authorId": _catalog.AUTHOR, "ownerId": _catalog.OWNER, "collectionIds": [], "tags": [],
            "editCapabilities": edits, "metadata": meta, "properties": properties,
            "createdAt": iso(asset["created"]), "updatedAt": iso(asset["created"])}
    if asset.get("caption"):
        view["automaticCaptioning"] = asset["caption"]
    if asset.get("description") is not None:
        view["description"] = asset["description"]  # the manual one, else the automatic one (contract §12b.2)
        if not asset["description"] and asset.get("caption"):
            view["description"] = asset["caption"]
    return view
