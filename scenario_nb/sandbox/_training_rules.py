"""What a training accepts and costs (contract §12b.3, §12d.3): trainable types, parameter checks, image bytes."""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from typing import Any

from PIL import Image

from ._common import ApiError

STANDARD = ("flux.2-dev-lora", "flux.2-klein-4b-lora", "flux.2-klein-9b-lora", "flux.2-klein-base-4b-lora",
            "flux.2-klein-base-9b-lora", "qwen-image-lora", "qwen-image-2512-lora", "zimage-lora",
            "zimage-turbo-lora", "zimage-de-turbo-lora", "flux.1-lora", "flux.1-krea-lora", "flux.1-kontext-lora")
EDIT = ("flux.2-dev-edit-lora", "flux.2-klein-4b-edit-lora", "flux.2-klein-9b-edit-lora",
        "flux.2-klein-base-4b-edit-lora", "flux.2-klein-base-9b-edit-lora", "qwen-image-edit-lora",
        "qwen-image-edit-2509-lora", "qwen-image-edit-2511-lora")
TRAINABLE = STANDARD + EDIT
COMPOSITION = "flux.1-composition"
CREATE_FIELDS = {"type", "name", "shortDescription", "baseModelId", "classSlug", "collectionIds", "concepts"}
TRAINING_JOB_TYPES = ("flux-model-training", "musubi-model-training", "model-training")
# With `train_seconds` the stages take these shares of it; otherwise the contract's real durations (§12d.4).
CU_PER_IMAGE_EPOCH = 10 / 3  # 12 images × 4 epochs = 160 CU, as in §12e.3
FAILURE = ("Training failed: the trainer ran out of GPU memory",
           "Train again with a smaller rank or batchSize, or with fewer training images.")

# The SDK's `parameters` (train_trigger_params.py): numbers with their ranges (None: unbounded), and the rest.
NUMBERS = {"learningRate": (0, None), "learningRateTextEncoder": (1e-6, 1e-3), "maxTrainSteps": (0, 10000),
           "nbEpochs": (1, None), "nbRepeats": (1, 100), "batchSize": (1, 4), "rank": (2, None),
           **{k: (None, None) for k in ("learningRateUnet", "numTextTrainSteps", "numUNetTrainSteps",
                                        "priorLossWeight", "randomCropRatio", "randomCropScale", "seed",
                                        "textEncoderTrainingRatio", "validationFrequency")}}
STRINGS = ("conceptPrompt", "classPrompt", "validationPrompt", "wandbKey")
BOOLEANS = ("randomCrop", "scaleLr")
CHOICES = {"optimizeFor": ("likeness",), "lrScheduler": ("constant", "constant-with-warmup", "cosine",
                                                          "cosine-with-restarts", "linear", "polynomial")}
LISTS = ("samplePrompts", "sampleSourceImages")
VOICE_ONLY = ("age", "cloneType", "gender", "language", "voiceDescription", "removeBackgroundNoise")


def is_flux1(model_type: str) -> bool:
    return model_type.startswith("flux.1")


def epoch_cap(model_type: str) -> int:
    """8 epochs at most for Flux.1 LoRAs, 4 for FLUX.2 / Qwen / Z-Image [TOOLING]."""
    return 8 if is_flux1(model_type) else 4


def job_type(model_type: str) -> str:
    return "flux-model-training" if is_flux1(model_type) else "musubi-model-training"


def training_cost(images: int, epochs: int) -> int:
    """Linear in images × epochs (§12d.3)."""
    return math.ceil(images * epochs * CU_PER_IMAGE_EPOCH)


def check_parameters(model_type: str, params: Any, state) -> None:
    """400 for anything outside the SDK's types and ranges, or the epoch caps (§12b.3, §12d.3)."""
    if not isinstance(params, dict):
        raise ApiError(400, "parameters must be an object")
    for name, value in params.items():
        if name in VOICE_ONLY:
            raise ApiError(400, f"Parameter {name} is only available for ElevenLabs voice training")
        if name in NUMBERS:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ApiError(400, f"Parameter {name} must be a number")
            lo, hi = NUMBERS[name]
            if name == "nbEpochs":
                hi = epoch_cap(model_type)
            elif name == "rank":
                hi = 64 if is_flux1(model_type) else 128
            if name == "learningRate" and value <= 0:
                raise ApiError(400, "Parameter learningRate must be greater than 0")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ApiError(400, f"Parameter {name} must be between {lo:g} and {hi:g} for {model_type} models"
                               if hi is not None else f"Parameter {name} must be at least {lo:g}")
            if name in ("nbEpochs", "nbRepeats", "batchSize", "rank", "maxTrainSteps") and value != int(value):
                raise ApiError(400, f"Parameter {name} must be an integer")
        elif name in STRINGS:
            if not isinstance(value, str):
                raise ApiError(400, f"Parameter {name} must be a string")
            if name == "wandbKey" and len(value) > 40:
                raise ApiError(400, "Parameter wandbKey must be at most 40 characters long")
        elif name in BOOLEANS:
            if not isinstance(value, bool):
                raise ApiError(400, f"Parameter {name} must be a boolean")
        elif name in CHOICES:
            if value not in CHOICES[name]:
                raise ApiError(400, f"Parameter {name} must be one of {', '.join(CHOICES[name])}")
        elif name in LISTS:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ApiError(400, f"Parameter {name} must be an array of strings")
        else:
            raise ApiError(400, f"Parameter {name} is not supported")
    prompts = params.get("samplePrompts") or []
    if len(prompts) > 4:
        raise ApiError(400, "Parameter samplePrompts must be at most 4 items long")
    sources = params.get("sampleSourceImages")
    if sources is not None:
        if model_type not in EDIT:
            raise ApiError(400, "Parameter sampleSourceImages is only available for edit models")
        if len(sources) != len(prompts):
            raise ApiError(400, "Parameter sampleSourceImages must be the same length as samplePrompts")
        for asset_id in sources:
            if asset_id not in state.assets:
                raise ApiError(400, f"Parameter sampleSourceImages references unknown asset {asset_id}")


def decode_image(data: bytes) -> tuple:
    """(width, height, format) of real image bytes, else 400."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                size, fmt = probe.size, probe.format or "PNG"
                probe.verify()
    except Exception:
        raise ApiError(400, "Invalid image") from None
    return size[0], size[1], fmt


def data_url_bytes(text: Any, field: str) -> bytes:
    if not isinstance(text, str) or not text.startswith("data:") or ";base64," not in text:
        raise ApiError(400, f"{field} must be a data URL (data:image/png;base64,...)")
    try:
        return base64.b64decode(text.split(",", 1)[1], validate=True)
    except (ValueError, binascii.Error):
        raise ApiError(400, f"{field} is not valid base64") from None
