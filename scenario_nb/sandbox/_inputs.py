"""A generation's body checked against its model's inputs, as the real API answers it, and what it asks for."""

from __future__ import annotations

from typing import Any

from ._common import ApiError, found

SIZES = {"21:9": (1568, 672), "16:9": (1344, 768), "3:2": (1248, 832), "4:3": (1152, 864), "5:4": (1136, 912),
         "1:1": (1024, 1024), "4:5": (912, 1136), "3:4": (864, 1152), "2:3": (832, 1248), "9:16": (768, 1344)}


def validate_body(inputs: list, body: dict, state: Any) -> None:
    specs = {i["name"]: i for i in inputs}
    for name in body:
        if name not in specs:
            raise ApiError(400, f"Input {name} is not supported")
    for spec in inputs:
        name, kind = spec["name"], spec["type"]
        value = body.get(name)
        defined = lambda other: body.get(other) not in (None, "", [])  # noqa: E731
        if value in (None, "", []):
            required = spec.get("required") or {}
            if required.get("always"):
                raise ApiError(400, f"Input {name} is required")
            for other, rule in (required.get("ifDefined") or {}).items():
                if defined(other):
                    message = rule.get("message") if isinstance(rule, dict) else rule
                    raise ApiError(400, message or f"Input {name} is required when {other} is defined")
            continue
        items = value if kind.endswith("_array") else [value]
        if kind.endswith("_array"):
            if not isinstance(value, list):
                raise ApiError(400, f"Input {name} must be an array")
            if spec.get("maxLength") is not None and len(value) > spec["maxLength"]:
                raise ApiError(400, f"Input {name} must be at most {spec['maxLength']} items long")
        base = kind.replace("_array", "")
        for item in items:
            if base == "number":
                if not isinstance(item, (int, float)) or isinstance(item, bool):
                    raise ApiError(400, f"Input {name} must be a number")
                if spec.get("min") is not None and item < spec["min"]:
                    raise ApiError(400, f"Input {name} must be at least {spec['min']}")
                if spec.get("max") is not None and item > spec["max"]:
                    raise ApiError(400, f"Input {name} must be at most {spec['max']}")
            elif base == "boolean":
                if not isinstance(item, bool):
                    raise ApiError(400, f"Input {name} must be a boolean")
            elif not isinstance(item, str):
                raise ApiError(400, f"Input {name} must be a string")
            if base == "string" and spec.get("maxLength") is not None and len(item) > spec["maxLength"] \
                    and kind == "string":
                raise ApiError(400, f"Input {name} must be at most {spec['maxLength']} characters long")
            if spec.get("allowedValues") and item not in spec["allowedValues"]:
                raise ApiError(400, f"Input {name} must be one of {', '.join(map(str, spec['allowedValues']))}")
            if base == "file" and not item.startswith("data:") and item not in state.assets:
                raise ApiError(400, f"Input {name} references unknown asset {item}")
            if base == "model" and item:
                lora = found(state.models, "Model", item)
                if lora.get("type") not in spec.get("modelTypes", []):
                    raise ApiError(400, f"Invalid model(s): {item}.\nAllowed model types: "
                                        f"{', '.join(spec.get('modelTypes', []))}")
                with state.lock:
                    status = state.trainings.refresh(lora, "")["status"]
                if status != "trained":  # a LoRA in training (or failed, canceled) has nothing to run yet
                    raise ApiError(400, f"Model {item} is not trained (status {status})")


def output_size(body: dict, model: dict) -> tuple[int, int]:
    """The body's width/height, else the model's defaults for them (FLUX.1 dev: 1104x832), else the ratio's."""
    defaults = {i["name"]: i.get("default") for i in model.get("inputs", [])}
    width, height = body.get("width") or defaults.get("width"), body.get("height") or defaults.get("height")
    if width and height:
        return int(width), int(height)
    ratio = body.get("aspectRatio") or defaults.get("aspectRatio")
    return SIZES.get(str(ratio), (1024, 1024))


def image_inputs(body: dict) -> list:
    """Asset ids (or data URLs) the body passes as images, first the img2img source."""
    found = [body.get("image")] + list(body.get("referenceImages") or [])
    return [x for x in found if isinstance(x, str) and x]
