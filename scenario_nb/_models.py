"""Models and their `inputs`: typed objects, local validation and aspect-ratio mapping.

Every model declares its own form (`inputs`, §4.4 of the API contract). The magics and the panel both
check a request here before anything is sent or spent, and both map an aspect ratio the same way: to
the model's `aspectRatio` input when it has one, otherwise to a `width`/`height` pair.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from ._errors import InputError

COMMON_ASPECTS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9")


@dataclass
class ModelInput:
    """One entry of a model's (or workflow's) `inputs`: one key of the generation body."""

    name: str
    type: str
    label: str = ""
    description: str = ""
    hint: str = ""
    group: str = ""
    default: Any = None
    has_default: bool = False
    allowed_values: Optional[list] = None
    min: Optional[float] = None
    max: Optional[float] = None
    step: Optional[float] = None
    min_length: Optional[int] = None
    max_length: Optional[int] = None
    kind: str = ""
    model_types: list = field(default_factory=list)
    required: dict = field(default_factory=dict)
    prompt: bool = False
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, raw: dict) -> "ModelInput":
        required = raw.get("required")
        return cls(
            name=str(raw.get("name", "")), type=str(raw.get("type", "string")),
            label=raw.get("label") or "", description=raw.get("description") or "",
            hint=raw.get("hint") or "", group=raw.get("group") or "",
            default=raw.get("default"), has_default="default" in raw,
            allowed_values=raw.get("allowedValues"), min=raw.get("min"), max=raw.get("max"),
            step=raw.get("step"), min_length=raw.get("minLength"), max_length=raw.get("maxLength"),
            kind=raw.get("kind") or ("image" if raw.get("type") in ("file", "file_array") else ""),
            model_types=list(raw.get("modelTypes") or []),
            required=required if isinstance(required, dict) else {},
            prompt=bool(raw.get("prompt")), raw=raw)

    @property
    def always_required(self) -> bool:
        return bool(self.required.get("always"))

    @property
    def is_array(self) -> bool:
        return self.type.endswith("_array")

    def describe(self) -> str:
        """One line for `%scenario model ID`: type and constraints."""
        parts = [self.type]
        if self.allowed_values:
            parts.append("one of " + ", ".join(map(str, self.allowed_values)))
        if self.min is not None or self.max is not None:
            parts.append(f"{_fmt(self.min)}–{_fmt(self.max)}" + (f" step {_fmt(self.step)}" if self.step else ""))
        if self.max_length is not None:
            parts.append(f"max {self.max_length} {'items' if self.is_array else 'chars'}")
        if self.model_types:
            parts.append("model types " + ", ".join(self.model_types))
        if self.has_default and self.default not in (None, "", []):
            parts.append(f"default {self.default!r}")
        if self.always_required:
            parts.append("required")
        return "; ".join(parts)


@dataclass
class Model:
    """A Scenario model. `inputs` are only present on runnable (`custom`) models fetched by id."""

    id: str
    name: str
    type: str
    status: str
    privacy: str
    custom: bool
    capabilities: list
    inputs: list
    ui_config: dict
    raw: dict = field(repr=False)

    @classmethod
    def parse(cls, raw: dict) -> "Model":
        return cls(
            id=str(raw.get("id", "")), name=raw.get("name") or raw.get("id", ""),
            type=raw.get("type") or "custom", status=raw.get("status") or "",
            privacy=raw.get("privacy") or "", custom=bool(raw.get("custom", raw.get("type") == "custom")),
            capabilities=list(raw.get("capabilities") or []),
            inputs=[ModelInput.parse(i) for i in raw.get("inputs") or [] if isinstance(i, dict)],
            ui_config=raw.get("uiConfig") or {}, raw=raw)

    @property
    def runnable(self) -> bool:
        """Runs directly through POST /generate/custom (platform models); LoRAs need a base model."""
        return self.custom and self.type == "custom"

    @property
    def trained(self) -> bool:
        """Ready to generate (platform models carry no status)."""
        return self.status in ("trained", "")

    def input(self, name: str) -> Optional[ModelInput]:
        return next((i for i in self.inputs if i.name == name), None)

    @property
    def prompt_input(self) -> Optional[ModelInput]:
        """The input flagged `prompt: true` (Scenario's LLM calls it `instruction`), else one named `prompt`."""
        return next((i for i in self.inputs if i.prompt), None) or self.input("prompt")

    @property
    def prompt_name(self) -> str:
        """The body key the prompt goes in (`prompt` when the schema flags none)."""
        spec = self.prompt_input
        return spec.name if spec is not None else "prompt"


MODEL_KINDS = ("image", "video", "3d", "text", "audio", "lora", "composition")
_MADE = (("video", "video"), ("3d", "3d"), ("txt", "text"), ("audio", "audio"))


def model_kind(model: Model) -> str:
    """What a model is for, from its API `type` and `capabilities`: one of MODEL_KINDS.

    Platform models are all of type `custom` (contract §4.3); what they make is in their capabilities."""
    kind = model.type.lower()
    for word in ("lora", "composition"):
        if word in kind:
            return word
    outputs = {c.split("2", 1)[1] for c in model.capabilities if "2" in c}
    if outputs and "img" not in outputs:
        return next((name for made, name in _MADE if made in outputs), "image")
    return "image"


def output_noun(model: Model) -> str:
    """What one output of this model is called: an image, an answer (text), a video, a 3D model, a clip."""
    return {"text": "answer", "video": "video", "3d": "3D model", "audio": "audio clip"}.get(model_kind(model), "image")


def kind_words(model: Model) -> str:
    """The kind column of `%scenario models`: "image model", "video model", "LoRA (flux.2-dev-lora)"..."""
    kind = model_kind(model)
    if kind in ("lora", "composition"):
        return f"{'LoRA' if kind == 'lora' else 'composition'} ({model.type})"
    return {"3d": "3D", "text": "text"}.get(kind, kind) + " model"


def type_words(model: Model) -> str:
    """A model's kind in plain words for menus ("your LoRA", "composition", "image model"), not its API type."""
    kind = model.type.lower()
    yours = "your " if model.privacy == "private" else ""
    if "lora" in kind:
        return yours + "LoRA"
    if "composition" in kind:
        return yours + "composition"
    outputs = {c.split("2", 1)[1] for c in model.capabilities if "2" in c}
    if outputs and "img" not in outputs:
        for made, words in (("video", "video model"), ("3d", "3D model"), ("txt", "text model")):
            if made in outputs:
                return words
    if model.runnable or kind == "custom":
        return "image model"
    return yours + "model"


# -- Aspect ratios -------------------------------------------------------------------------------------

def _ratio(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in str(text).replace("x", ":").split(":"))
        if w <= 0 or h <= 0:
            raise ValueError
        return w, h
    except ValueError:
        raise InputError(f"aspect ratio {text!r} is not of the form W:H, e.g. 16:9") from None


def _round16(x: float) -> int:
    return max(16, int(round(x / 16)) * 16)


def size_for_ratio(ratio: str, *, megapixels: float = 1.0, lo: float = 16, hi: float = 8192,
                   step: int = 16) -> tuple[int, int]:
    """Width and height (multiples of 16) near `megapixels` with the given ratio, within [lo, hi]."""
    w, h = _ratio(ratio)
    area = megapixels * 1024 * 1024
    width, height = math.sqrt(area * w / h), math.sqrt(area * h / w)
    scale = min(1.0, hi / max(width, height))
    scale = max(scale, lo / min(width, height))
    step = max(16, int(step or 16))
    width = max(lo, min(hi, round(width * scale / step) * step))
    height = max(lo, min(hi, round(height * scale / step) * step))
    return int(width), int(height)


def aspect_options(model: Model) -> dict[str, dict]:
    """Every aspect choice this model allows, each mapped to the inputs it sets."""
    aspect = model.input("aspectRatio")
    if aspect is not None:
        values = aspect.allowed_values or list(COMMON_ASPECTS)
        return {str(v): {"aspectRatio": v} for v in values}
    res = model.ui_config.get("resolutionComponent") or {}
    w_name, h_name = res.get("widthInput", "width"), res.get("heightInput", "height")
    w_in, h_in = model.input(w_name), model.input(h_name)
    if w_in is None or h_in is None:
        return {}
    options: dict[str, dict] = {}
    for preset in res.get("presets") or []:
        pw, ph = preset.get("width"), preset.get("height")
        if pw and ph:
            named = re.search(r"(\d+)\s*:\s*(\d+)", str(preset.get("label") or ""))
            g = math.gcd(int(pw), int(ph))
            label = f"{named[1]}:{named[2]}" if named else f"{int(pw) // g}:{int(ph) // g}"
            options.setdefault(label, {w_name: int(pw), h_name: int(ph)})
    lo = max(w_in.min or 16, h_in.min or 16)
    hi = min(w_in.max or 8192, h_in.max or 8192)
    for ratio in COMMON_ASPECTS:
        if ratio not in options:
            width, height = size_for_ratio(ratio, lo=lo, hi=hi, step=int(w_in.step or 16))
            options[ratio] = {w_name: width, h_name: height}
    return options


def normalise_ratio(text: str) -> str:
    text = str(text).strip().lower()
    if text == "auto":
        return text
    w, h = _ratio(text)
    g = math.gcd(w, h)
    return f"{w // g}:{h // g}"


def is_aspect(text: str) -> bool:
    """Whether `text` reads as an aspect ratio (16:9, 16x9, auto), as `aspect_inputs` reads it."""
    try:
        normalise_ratio(text)
        return True
    except InputError:
        return False


def aspect_inputs(model: Model, ratio: str) -> dict:
    """The inputs that give `ratio` on this model, or an InputError listing the allowed ratios."""
    options = aspect_options(model)
    if not options:
        raise InputError(f"model {model.name} has no aspect ratio or width/height input; "
                         f"leave out --aspect")
    wanted = normalise_ratio(ratio)
    ratios = {label: _label_value(label) for label in options}
    for label, values in options.items():
        if label.lower() == wanted or (ratios[label] and normalise_ratio(label) == wanted):
            return dict(values)
    if wanted != "auto":  # presets are approximate (1344x768 is sold as 16:9)
        w, h = _ratio(wanted)
        for label, values in options.items():
            ratio_of = ratios[label]
            if ratio_of and abs(ratio_of / (w / h) - 1) < 0.03:
                return dict(values)
    raise InputError(f"aspect {ratio} is not allowed for {model.name}; allowed: {', '.join(options)}")


def _label_value(label: str) -> Optional[float]:
    """W/H of a ratio label, or None for labels such as 'auto'."""
    try:
        w, h = _ratio(label)
    except InputError:
        return None
    return w / h


# -- Validation ------------------------------------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(x: Any) -> str:
    return "" if x is None else (f"{x:g}" if isinstance(x, float) else str(x))


def typed_number(spec: ModelInput, value: float) -> Any:
    """A number as the input takes it: whole numbers as ints where its step is whole, else a float. So 2, 2.0
    and "2" are one value, and one request whichever way they were written."""
    value = float(value)
    whole_step = spec.step is None or float(spec.step).is_integer()
    return int(value) if math.isfinite(value) and value.is_integer() and whole_step else value


def coerce_value(spec: ModelInput, text: str) -> Any:
    """Turn a `--set NAME=VALUE` string into the JSON value the input expects."""
    t = spec.type
    raw = text.strip()
    try:
        if t == "number":
            return typed_number(spec, float(raw))
        if t == "boolean":
            if raw.lower() in ("true", "1", "yes", "on"):
                return True
            if raw.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if t.endswith("_array"):
            items = [x.strip() for x in raw.strip("[]").split(",") if x.strip()]
            if t == "number_array":
                return [float(x) if not float(x).is_integer() else int(float(x)) for x in items]
            return items
    except ValueError:
        raise InputError(f"--set {spec.name}={text}: expected a {t}") from None
    return raw


def _check_value(spec: ModelInput, value: Any) -> None:
    name, t = spec.name, spec.type
    if value is None:
        return
    if t == "number":
        if not _is_number(value):
            raise InputError(f"input {name} must be a number, not {value!r}")
        items = [value]
    elif t == "boolean":
        if not isinstance(value, bool):
            raise InputError(f"input {name} must be true or false, not {value!r}")
        return
    elif t in ("string", "model", "file"):
        if not isinstance(value, str):
            raise InputError(f"input {name} must be a string, not {value!r}")
        items = [value]
        if spec.max_length is not None and len(value) > spec.max_length:
            raise InputError(f"input {name} is {len(value)} characters long; the model allows at most "
                             f"{spec.max_length}")
        if spec.min_length is not None and len(value) < spec.min_length:
            raise InputError(f"input {name} must be at least {spec.min_length} characters long")
    elif t.endswith("_array"):
        if not isinstance(value, list):
            raise InputError(f"input {name} must be a list")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise InputError(f"input {name} has {len(value)} items; the model allows at most {spec.max_length}")
        if spec.min_length is not None and len(value) < spec.min_length:
            raise InputError(f"input {name} needs at least {spec.min_length} items")
        items = value
        if t == "number_array" and not all(_is_number(v) for v in items):
            raise InputError(f"input {name} must be a list of numbers")
    else:
        return
    for item in items:
        if spec.allowed_values and item not in spec.allowed_values:
            raise InputError(f"input {name} cannot be {item!r}; allowed: "
                             f"{', '.join(map(str, spec.allowed_values))}")
        if _is_number(item):
            if spec.min is not None and item < spec.min:
                raise InputError(f"input {name} must be at least {_fmt(spec.min)} (got {_fmt(item)})")
            if spec.max is not None and item > spec.max:
                raise InputError(f"input {name} must be at most {_fmt(spec.max)} (got {_fmt(item)})")
        if t in ("file", "file_array") and isinstance(item, str) and not (
                item.startswith("asset_") or item.startswith("data:")):
            raise InputError(f"input {name} takes asset ids (upload the image first), not {item!r}")


def _message(rule: Any, fallback: str) -> str:
    if isinstance(rule, dict) and isinstance(rule.get("message"), str):
        return rule["message"]
    return rule if isinstance(rule, str) and rule else fallback


def _not_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_not_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_not_finite(v) for v in value.values())
    return False


def refuse_non_finite(inputs: dict) -> None:
    """NaN and infinities are no JSON: such a body can never be sent, so it is refused before the ledger."""
    for name, value in inputs.items():
        if _not_finite(value):
            shown = _fmt(value) if isinstance(value, float) else repr(value)
            raise InputError(f"input {name} must be a finite number, not {shown}; nothing was sent")


def validate_inputs(model: Model, inputs: dict) -> dict:
    """Check a generation body against the model's `inputs`; returns it without empty values.

    Raises InputError with one line naming the input, what is wrong and what is allowed.
    """
    refuse_non_finite(inputs)
    if not model.inputs:
        return dict(inputs)
    body = {k: v for k, v in inputs.items() if v is not None and v != ""}
    known = {i.name: i for i in model.inputs}
    for name in body:
        if name not in known:
            raise InputError(f"{model.name} has no input {name!r}; it takes: {', '.join(known)}")
    for spec in model.inputs:
        value = body.get(spec.name)
        defined = lambda other: body.get(other) not in (None, "", [])  # noqa: E731
        if value in (None, "", []):
            if spec.always_required:
                what = "a prompt" if spec.prompt or spec.name == "prompt" else f"input {spec.name}"
                raise InputError(f"{model.name} needs {what}")
            for other, rule in (spec.required.get("ifDefined") or {}).items():
                if defined(other):
                    raise InputError(_message(rule, f"input {spec.name} is required when {other} is set"))
            for other, rule in (spec.required.get("ifNotDefined") or {}).items():
                if not defined(other):
                    raise InputError(_message(rule, f"input {spec.name} is required unless {other} is set"))
            continue
        _check_value(spec, value)
    return body


def request_inputs(model: Model, *, aspect: Optional[str] = None, num: Optional[int] = None,
                   seed: Optional[int] = None, settings: Optional[dict] = None) -> dict:
    """The model inputs for the common choices (aspect, count, seed) plus raw `NAME=VALUE` settings.

    Shared by the magics and the panel so both map and check a request the same way.
    """
    inputs: dict = {}
    if aspect:
        inputs.update(aspect_inputs(model, aspect))
    if num is not None:
        if model.input("numOutputs") is None:
            raise InputError(f"{model.name} makes one {output_noun(model)} per job (no numOutputs input); "
                             f"leave out -n")
        inputs["numOutputs"] = num
    if seed is not None:
        if model.input("seed") is None:
            raise InputError(f"{model.name} takes no seed; leave out --seed")
        inputs["seed"] = seed
    for name, text in (settings or {}).items():
        spec = model.input(name)
        if spec is None:
            raise InputError(f"{model.name} has no input {name!r}; it takes: "
                             f"{', '.join(i.name for i in model.inputs)}")
        inputs[name] = coerce_value(spec, text) if isinstance(text, str) else text
    return inputs
