"""The routes of training and the text tools (§12b–§12d): each finds what it acts on, then asks `Trainings`."""

from __future__ import annotations

from typing import Any, Callable

from . import _catalog
from ._common import ApiError, found
from ._routing import Handler, Request, Route
from ._text_tools import TEXT_TOOLS
from ._views import asset_view


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be an object")
    return body


def _text_tool(tool: Callable) -> Handler:
    return lambda req: tool(req.state, _object(req.body), req.query)


def update_asset(req: Request) -> tuple:
    """`PUT /assets/{id}`: its name and description."""
    state = req.state
    with state.lock:
        asset = found(state.assets, "Asset", req.params["asset_id"])
        body = _object(req.body)
        for key in ("description", "name"):
            if key in body:
                if not isinstance(body[key], str):
                    raise ApiError(400, f"{key} must be a string")
                asset[key] = body[key]
    return 200, {"asset": asset_view(state, asset, req.cdn)}  # outside the lock: it may render the image


def create_model(req: Request) -> tuple:
    with req.state.lock:
        return 200, {"model": _catalog.public_view(req.state.trainings.create(_object(req.body)), listing=False)}


def _owned(req: Request, *, array_body: bool = False) -> dict:
    """The model the path names, if this account owns it (the state's lock held)."""
    model = found(req.state.models, "Model", req.params["model_id"])
    if model["privacy"] != "private":
        raise ApiError(403, f"You do not own model {model['id']}")
    if not array_body:
        _object(req.body)
    return model


def _on_model(action: Callable[[Any, dict, Request], dict], *, array_body: bool = False) -> Handler:
    """A route on an owned model, under the lock; a model in its answer is shown as the API shows one."""
    def handle(req: Request) -> tuple:
        trainings = req.state.trainings
        with req.state.lock:
            answer = action(trainings, _owned(req, array_body=array_body), req)
            if "model" in answer:
                answer["model"] = _catalog.public_view(trainings.refresh(answer["model"], req.cdn), listing=False)
            return 200, answer
    return handle


def train(req: Request) -> tuple:
    """`PUT /models/{id}/train`: 269 for a dry run, else the training starts."""
    with req.state.lock:
        status, answer = req.state.trainings.train(_owned(req), req.body, req.query, req.cdn)
        if "model" in answer:
            answer["model"] = _catalog.public_view(answer["model"], listing=False)
        return status, answer


TRAINING_ROUTES: list[Route] = [
    *(("POST", f"generate/{name}", _text_tool(tool)) for name, tool in TEXT_TOOLS.items()),
    ("PUT", "assets/{asset_id}", update_asset),
    ("POST", "models", create_model),
    ("PUT", "models/{model_id}", _on_model(lambda t, model, req: {
        "model": t.update(t.refresh(model, req.cdn), req.body)})),
    ("DELETE", "models/{model_id}", _on_model(lambda t, model, req: t.delete(model, req.cdn))),
    ("POST", "models/{model_id}/training-images",
     _on_model(lambda t, model, req: t.images.add(model, req.body, req.cdn))),
    ("PUT", "models/{model_id}/training-images/pairs",
     _on_model(lambda t, model, req: t.images.replace_pairs(model, req.body, req.cdn), array_body=True)),
    ("PUT", "models/{model_id}/training-images/{image_id}",
     _on_model(lambda t, model, req: t.images.replace(model, req.params["image_id"], req.body, req.cdn))),
    ("DELETE", "models/{model_id}/training-images/{image_id}",
     _on_model(lambda t, model, req: t.images.delete(model, req.params["image_id"], req.cdn))),
    ("PUT", "models/{model_id}/train", train),
    ("POST", "models/{model_id}/train/action", _on_model(lambda t, model, req: t.cancel(model, req.body, req.cdn))),
    ("GET", "models/{model_id}/scores/training-dataset", _on_model(lambda t, model, req: t.dataset_score(model))),
]
