"""A model's training images (§12b.2, §12d.2): added, replaced, deleted and paired while the model is `new`."""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Optional

from PIL import Image

from . import _images, _text
from ._common import ApiError, found, iso
from ._training_rules import EDIT, data_url_bytes, decode_image


class TrainingImages:
    """Edits to the training set of a model the sandbox made; every method runs under the state's lock."""

    def __init__(self, state, trainings) -> None:
        self.state = state
        self.trainings = trainings

    def editable(self, model: dict, cdn: str) -> dict:
        self.trainings.refresh(model, cdn)
        if model["status"] == "training":
            raise ApiError(400, "Cannot change the training images of a model that is training")
        if model["status"] != "new" or model["id"] not in self.trainings.records:
            raise ApiError(400, f"Cannot change the training images of a model whose status is {model['status']}")
        return self.trainings.records[model["id"]]

    def add(self, model: dict, body: dict, cdn: str) -> dict:
        """`POST /models/{id}/training-images` (§12b.2): data URL + name, or assetId, or up to 10 assetIds."""
        record = self.editable(model, cdn)
        forms = [k for k in ("data", "assetId", "assetIds") if body.get(k) is not None]
        if len(forms) > 1 or (forms == ["assetIds"] and body.get("name") is not None):
            raise ApiError(400, "Use exactly one of data (with name), assetId or assetIds")
        if not forms:
            raise ApiError(400, "One of data (with name), assetId or assetIds is required")
        if body.get("preset") is not None and body["preset"] not in ("default", "style", "subject"):
            raise ApiError(400, "preset must be one of default, style, subject")
        if forms == ["data"]:
            if not isinstance(body.get("name"), str) or not body["name"]:
                raise ApiError(400, "name is required with data")
            sources = [(body["name"], data_url_bytes(body["data"], "data"), None)]
        else:
            ids = body["assetIds"] if forms == ["assetIds"] else [body["assetId"]]
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise ApiError(400, "assetIds must be a non-empty array of asset ids")
            if len(ids) > 10:
                raise ApiError(400, "Too many assetIds provided in a single request")
            sources = []
            for asset_id in ids:
                asset = found(self.state.assets, "Asset", asset_id)
                if asset.get("kind", "image") != "image":
                    raise ApiError(400, f"Asset {asset_id} is not an image")
                sources.append((asset.get("name") or f"{asset_id}.png", self.state.image_bytes(asset), asset_id))
        known = {self.state.assets[a]["sha"] for a in record["images"]}
        known_sources = {self.state.assets[a].get("from_asset") for a in record["images"]}
        for _, data, origin in sources:
            digest = hashlib.sha256(data).hexdigest()
            if origin is not None and (origin in known_sources or origin in record["images"]):
                raise ApiError(400, "The provided assetId is already a training image of this model")
            if digest in known:
                raise ApiError(400, "The provided image is already a training image of this model")
            known.add(digest)
            known_sources.add(origin)
            decode_image(data)
        limit = self.state.options["max_training_images"]
        if len(record["images"]) + len(sources) > limit:
            raise ApiError(429, f"Too many training images: the limit is {limit}", actionName="add-training-image",
                           actionLimit=limit)
        added = [self._image_asset(model, name, data, origin) for name, data, origin in sources]
        record["images"] += added
        model["updatedAt"] = iso(self.state.clock())
        return {"trainingImage": self.trainings.image_view(self.state.assets[added[0]], cdn)}

    def _image_asset(self, model: dict, name: str, data: bytes, origin: Optional[str]) -> str:
        """A training image is an asset of its own (metadata.trainingImage), captioned at once (§12d.2)."""
        state = self.state
        width, height, fmt = decode_image(data)
        asset_id = state.new_id("asset")
        state.assets[asset_id] = {
            "id": asset_id, "job_id": None, "model_id": None, "source": "uploaded", "kind": "image",
            "width": width, "height": height, "created": state.clock(), "data": data, "size": len(data),
            "prompt": "", "name": name, "format": fmt.lower(), "mime": Image.MIME.get(fmt, "image/png"),
            "training_of": model["id"], "from_asset": origin, "sha": hashlib.sha256(data).hexdigest(),
            "caption": _text.caption(data), "description": "", "colours": _images.colour_shares(data)}
        return asset_id

    def replace(self, model: dict, image_id: str, body: dict, cdn: str) -> dict:
        """`PUT /models/{id}/training-images/{trainingImageId}`: new bytes under the same id."""
        record = self.editable(model, cdn)
        if image_id not in record["images"]:
            raise ApiError(404, f"Training image {image_id} not found")
        if (body.get("data") is None) == (body.get("assetId") is None) or body.get("assetIds") is not None:
            raise ApiError(400, "Use exactly one of data (with name) or assetId")
        if body.get("data") is not None:
            data, name = data_url_bytes(body["data"], "data"), body.get("name")
            if not isinstance(name, str) or not name:
                raise ApiError(400, "name is required with data")
        else:
            source = found(self.state.assets, "Asset", body["assetId"])
            data, name = self.state.image_bytes(source), source.get("name") or f"{body['assetId']}.png"
        width, height, fmt = decode_image(data)
        asset = self.state.assets[image_id]
        asset.update({"data": data, "size": len(data), "name": name, "width": width, "height": height,
                      "format": fmt.lower(), "sha": hashlib.sha256(data).hexdigest(), "caption": _text.caption(data),
                      "colours": _images.colour_shares(data),
                      "from_asset": body.get("assetId")})
        self.state.renderer.forget(image_id)
        return {"trainingImage": self.trainings.image_view(asset, cdn)}

    def delete(self, model: dict, image_id: str, cdn: str) -> dict:
        record = self.editable(model, cdn)
        if image_id not in record["images"]:
            raise ApiError(404, f"Training image {image_id} not found")
        record["images"].remove(image_id)
        record["pairs"] = [p for p in record["pairs"] if image_id not in (p.get("sourceId"), p.get("targetId"))]
        return {}

    def replace_pairs(self, model: dict, body: Any, cdn: str) -> dict:
        """`PUT /models/{id}/training-images/pairs`: a bare array that replaces every pair; ids must be this
        model's training images."""
        record = self.editable(model, cdn)
        if model.get("type") not in EDIT + ("flux.1-kontext-lora",):
            raise ApiError(400, "Training image pairs are only for edit models")
        if not isinstance(body, list):
            raise ApiError(400, "The body must be an array of training image pairs")
        pairs = []
        for item in body:
            if not isinstance(item, dict) or set(item) - {"sourceId", "targetId", "instruction"}:
                raise ApiError(400, "Each pair is an object with sourceId, targetId and instruction")
            for key in ("sourceId", "targetId"):
                if item.get(key) is not None and item[key] not in record["images"]:
                    raise ApiError(400, f"{key} {item[key]} is not a training image of this model")
            pairs.append(copy.deepcopy(item))
        record["pairs"] = pairs
        return {"count": len(pairs), "pairs": copy.deepcopy(pairs)}
