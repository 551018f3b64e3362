"""The sandbox account: the user's trained models, the public catalog and workflows.

Shapes follow the real API (§4 of the contract, recorded captures): list rows carry no `inputs`, LoRAs and
compositions have none at all and must run through a base model, platform models use real ids.
"""

from __future__ import annotations

import copy
import random

OWNER = "proj_SandboxPrjct5FgH6jK7mN8pQ9r"
AUTHOR = "apiu_SandboxUser7hGk2mNpQ4rS8t"
CREATED = "2026-05-02T10:11:12.000Z"
UPDATED = "2026-09-20T08:00:00.000Z"

PROMPT = {"name": "prompt", "type": "string", "label": "Prompt", "description": "What to generate",
          "maxLength": 2048, "prompt": True, "promptSpark": True, "required": {"always": True}}
SEED = {"name": "seed", "type": "number", "label": "Seed", "group": "Settings", "min": 0, "max": 2147483647,
        "step": 1}
REFS = {"name": "referenceImages", "type": "file_array", "kind": "image", "label": "Reference images",
        "description": "Images to guide the result (img2img)", "maxLength": 5, "parent": True, "costImpact": True}


def _num_outputs(maximum: int) -> dict:
    return {"name": "numOutputs", "type": "number", "label": "Image Count", "group": "Settings", "default": 1,
            "min": 1, "max": maximum, "step": 1, "costImpact": True}


def _size(name: str, lo: int, hi: int) -> dict:
    return {"name": name, "type": "number", "label": name.title(), "group": "Settings", "min": lo, "max": hi,
            "step": 16}


RESOLUTION = {"label": "Dimensions", "widthInput": "width", "heightInput": "height", "presets": [
    {"label": "Auto"}, {"label": "1:1 (1024x1024)", "width": 1024, "height": 1024},
    {"label": "16:9 (1344x768)", "width": 1344, "height": 768},
    {"label": "9:16 (768x1344)", "width": 768, "height": 1344},
    {"label": "4:3 (1152x864)", "width": 1152, "height": 864},
    {"label": "3:4 (864x1152)", "width": 864, "height": 1152}]}


def _flux(model_types: list) -> list:
    return [
        {"name": "modelId", "type": "model", "label": "LoRA", "modelTypes": model_types, "default": ""},
        {"name": "loras", "type": "model_array", "label": "LoRAs", "modelTypes": model_types, "maxLength": 6,
         "default": []},
        {"name": "lorasScale", "type": "number_array", "label": "LoRA scales", "min": 0, "max": 2, "step": 0.05},
        PROMPT, REFS, _num_outputs(4),
        {"name": "numInferenceSteps", "type": "number", "label": "Inference Steps", "group": "Settings",
         "default": 28, "min": 1, "max": 100, "step": 1, "costImpact": True},
        _size("width", 128, 2048), _size("height", 128, 2048),
        {"name": "guidance", "type": "number", "label": "Guidance", "group": "Settings", "default": 4, "min": 1,
         "max": 10, "step": 0.1},
        SEED,
    ]


def _model(mid: str, name: str, mtype: str, *, privacy: str, custom: bool, status: str = "trained",
           tags=(), capabilities=("txt2img", "img2img"), created: str = CREATED, **extra) -> dict:
    row = {"id": mid, "name": name, "type": mtype, "privacy": privacy, "custom": custom, "status": status,
           "capabilities": list(capabilities), "source": "scenario" if not custom else "other",
           "tags": list(tags), "collectionIds": [], "exampleAssetIds": [],
           "trainingImagesNumber": 0 if custom else 18, "trainingProgress": {}, "parameters": {},
           "userId": AUTHOR, "authorId": AUTHOR, "ownerId": OWNER, "createdAt": created, "updatedAt": UPDATED,
           "complianceMetadata": {"modelProvider": "Scenario sandbox", "maintainer": "scenario_nb"}}
    row.update(extra)
    return row


def _file(name: str, label: str, kind: str = "image", **extra) -> dict:
    return {"name": name, "type": "file", "kind": kind, "label": label, "parent": True, **extra}


def _choice(name: str, label: str, values: list, default, **extra) -> dict:
    return {"name": name, "type": "string", "label": label, "group": "Settings", "allowedValues": values,
            "default": default, **extra}


def _number(name: str, label: str, lo: float, hi: float, step: float, default=None, group: str = "Settings") -> dict:
    spec = {"name": name, "type": "number", "label": label, "group": group, "min": lo, "max": hi, "step": step}
    return spec if default is None else spec | {"default": default}


def _loras(model_types: list, max_items: int, **extra) -> list:
    return [{"name": "loras", "type": "model_array", "label": "LoRAs", "modelTypes": model_types,
             "maxLength": max_items, "default": [], **extra},
            {"name": "lorasScale", "type": "number_array", "label": "LoRA Scale", "min": 0, "max": 2, "step": 0.05}]


HERO = "model_HeroKnightLoRA7aB3cD4eF5gH6j"
FOREST = "model_PixeLForestStyLe2qR3sT4uV5w"
COMPOSITION = "model_KnightForestMix9xY8zW7vU6t"
KONTEXT_LORA = "model_PotionEditKontext8mN2pQ4rS"
FLUX1 = "model_bfl-flux-1-dev"
KONTEXT = "model_flux-kontext-editing"
VIDEO = "model_bytedance-seedance-2-0"
MESH = "model_meshy-7-txt23d"
TEXT = "model_scenario-prompt-writer"
LLM = "model_scenario-llm"

# FLUX.1 dev as recorded (blender-plugin bases fixture): `image` + `strength` for img2img, ControlNet inputs,
# a `modelId` slot for a LoRA or composition, `loras` for flux.1-lora only, width/height defaulting to 1104x832.
FLUX1_INPUTS = [
    {"name": "modelId", "type": "model", "label": "LoRA or Composition Model", "default": "",
     "modelTypes": ["flux.1-lora", "flux.1-composition"]},
    *_loras(["flux.1-lora"], 6),
    PROMPT,
    _file("image", "Reference Image", group="Reference Image", description="Input image for img2img"),
    _number("strength", "Strength", 0.01, 1, 0.01, 0.8, group="Reference Image"),
    _file("controlImage", "Control Image", group="ControlNet"),
    {"name": "controlModality", "type": "string", "label": "Control Modality", "group": "ControlNet",
     "default": "canny", "allowedValues": ["canny", "tile", "depth", "blur", "pose", "gray", "low-quality"]},
    _number("controlStrength", "Control Strength", 0, 1, 0.01, 0.7, group="ControlNet"),
    _number("controlStart", "Control Start", 0, 1, 0.01, 0, group="ControlNet"),
    _number("controlEnd", "Control End", 0, 1, 0.01, 1, group="ControlNet"),
    _num_outputs(4),
    _number("numInferenceSteps", "Inference Steps", 1, 50, 1, 28) | {"costImpact": True},
    _size("width", 128, 2048) | {"default": 1104}, _size("height", 128, 2048) | {"default": 832},
    _number("guidance", "Guidance", 0, 10, 0.1, 3.5),
    SEED,
]

# Flux Kontext as recorded: an editor (reference images required), one flux.1-kontext-lora at most.
KONTEXT_INPUTS = [
    *_loras(["flux.1-kontext-lora"], 1, costImpact=True),
    REFS | {"maxLength": 10, "required": {"always": True}},
    PROMPT | {"label": "Instructions", "maxLength": 4096},
    _num_outputs(4),
    _choice("aspectRatio", "Aspect Ratio", ["21:9", "16:9", "3:2", "4:3", "1:1", "2:3", "3:4", "9:16", "9:21",
                                            "auto"], "auto"),
    _choice("quality", "Quality", ["high", "medium"], "high", costImpact=True),
    _number("guidanceScale", "Guidance", 1, 10, 0.1, 3.5),
]

VIDEO_INPUTS = [
    PROMPT | {"maxLength": 4000},
    _file("image", "First frame", description="Start the video from this image (img2video)"),
    _choice("duration", "Duration", ["4", "5", "8", "10"], "5", costImpact=True),
    _choice("aspectRatio", "Aspect Ratio", ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9"], "16:9"),
    _choice("resolution", "Resolution", ["480p", "720p", "1080p"], "720p", costImpact=True),
    {"name": "generateAudio", "type": "boolean", "label": "Generate audio", "default": False},
    SEED,
]

MESH_INPUTS = [
    PROMPT | {"maxLength": 600},
    {"name": "ultraMode", "type": "boolean", "label": "Ultra Mode", "default": False, "costImpact": True},
    _file("textureImage", "Style Image"),
    _choice("topology", "Topology", ["triangle", "quad"], "triangle"),
    _choice("textureResolution", "Texture Resolution", ["2k", "4k", "8k"], "2k", costImpact=True),
    _number("targetPolycount", "Target Polycount", 100, 300000, 1, 30000),
]

TEXT_INPUTS = [
    PROMPT | {"maxLength": 8000, "label": "Request"},
    _choice("tone", "Tone", ["neutral", "playful", "epic"], "neutral"),
    _number("maxWords", "Max words", 10, 400, 1, 60),
]

# Scenario's LLM as recorded (contract §4.4): no `prompt` input; the prompt is `instruction` (`prompt: true`).
# It answers with text assets (kind text, text/plain), one per output (§10b).
LLM_INPUTS = [
    {"name": "instruction", "type": "string", "label": "Instruction", "description": "What to write",
     "maxLength": 32000, "prompt": True, "required": {"always": True}},
    {"name": "textInputs", "type": "string_array", "label": "Texts", "description": "Texts to work from",
     "maxLength": 10},
    REFS | {"name": "images", "label": "Images", "description": "Images to read (img2txt)", "maxLength": 10,
            "parent": False},
    _num_outputs(5) | {"label": "Answers"},
    _choice("model", "Model", ["default", "fast", "smart"], "default", costImpact=True),
    _choice("thinkingLevel", "Thinking", ["MINIMAL", "LOW", "MEDIUM", "HIGH"], "MEDIUM"),
]

PRIVATE = [
    _model(HERO, "Hero Knight", "flux.2-dev-lora", privacy="private", custom=False,
           shortDescription="Our hero character, trained on 18 concept sheets", style=0),
    _model(FOREST, "Pixel Forest Style", "flux.1-lora", privacy="private", custom=False,
           shortDescription="The game's pixel-art forest style", compliantModelIds=["flux.1-dev", "flux.1-schnell"],
           parentModelId="model_Rq7sT2uV9wX4yZ3aB6cD8eFg", style=1),  # parentModelId is not the base [CAPTURE]
    _model(COMPOSITION, "Knight in Pixel Forest", "flux.1-composition", privacy="private", custom=False,
           concepts=[{"modelId": FOREST, "scale": 0.8}, {"modelId": "model_PubLicPixeLKnight3n4p5q6r", "scale": 0.6}],
           style=2),
    _model("model_DragonSketchLoRA4bC5dE6fG7h", "Dragon Sketches", "flux.2-dev-lora", privacy="private",
           custom=False, status="training", trainingProgress={"stage": "running-train", "updatedAt": 1790496000000,
                                                              "progress": 0.4}, style=3),  # updatedAt: ms epoch
    _model(KONTEXT_LORA, "Potion Edits", "flux.1-kontext-lora", privacy="private", custom=False,
           capabilities=["img2img"], shortDescription="Turns any bottle into one of our potions",
           parentModelId="model_Hj3kL5mN7pQ9rS2tU4vW6xYz", style=11),
]

# The public catalog's named models; `score` orders the listing (higher first) and is never shown.
FEATURED = [
    _model("model_bfl-flux-2-dev", "FLUX.2 dev", "custom", privacy="public", custom=True,
           tags=["sc:featured", "sc:third-party"], inputs=_flux(["flux.2-dev-lora", "flux.2-dev-edit-lora"]),
           uiConfig={"resolutionComponent": RESOLUTION,
                     "lorasComponent": {"label": "LoRAs", "modelInput": "loras", "scaleInput": "lorasScale",
                                        "modelIdInput": "modelId"}}, cost=16.0, style=4),
    _model(FLUX1, "FLUX.1 Dev", "custom", privacy="public", custom=True, created="2024-09-20T12:01:00.000Z",
           tags=["Black Forest Labs", "Flux", "Image to Image", "Text to Image", "sc:third-party"],
           capabilities=["txt2img", "img2img", "controlnet", "outpaint"], inputs=FLUX1_INPUTS,
           uiConfig={"resolutionComponent": RESOLUTION, "lorasComponent": {
               "label": "Model", "modelInput": "loras", "scaleInput": "lorasScale", "modelIdInput": "modelId"},
               "selects": {"controlModality": {"canny": "Canny", "depth": "Depth", "pose": "Pose"}}},
           cost=9.0, style=5, score=230),
    _model(KONTEXT, "Flux Kontext", "custom", privacy="public", custom=True, created="2025-11-05T14:37:11.459Z",
           tags=["Black Forest Labs", "Flux", "editing", "sc:third-party"], capabilities=["img2img"],
           inputs=KONTEXT_INPUTS, accessRestrictions=25, cost=11.0, style=12, score=80,
           uiConfig={"lorasComponent": {"label": "Loras", "modelInput": "loras", "scaleInput": "lorasScale"},
                     "selects": {"quality": {"high": "High", "medium": "Medium"}, "aspectRatio": {"auto": "Auto"}}}),
    _model(VIDEO, "Seedance 2.0", "custom", privacy="public", custom=True, created="2026-04-09T10:02:53.122Z",
           tags=["Bytedance", "Video", "sc:third-party"], capabilities=["txt2video", "img2video"],
           inputs=VIDEO_INPUTS, accessRestrictions=50, output="video", cost=40.0, style=13, score=990),
    _model(MESH, "Meshy 7 - Text-to-3D", "custom", privacy="public", custom=True, created="2026-08-25T07:05:52.801Z",
           tags=["3d", "Meshy", "sc:third-party", "text-to-3d"], capabilities=["txt23d"], inputs=MESH_INPUTS,
           accessRestrictions=50, output="3d", cost=30.0, style=14, score=980),
    _model(TEXT, "Prompt Writer", "custom", privacy="public", custom=True, capabilities=["txt2txt"],
           tags=["text", "sc:third-party"], inputs=TEXT_INPUTS, output="metadata-text", cost=1.0, style=15, score=970,
           shortDescription="Writes and rewrites prompts; answers in text, no asset"),
    _model(LLM, "Scenario LLM", "custom", privacy="public", custom=True, capabilities=["txt2txt", "img2txt"],
           tags=["text", "sc:featured"], inputs=LLM_INPUTS, output="text", cost=1.0, style=15, score=975,
           shortDescription="Writes, rewrites and describes; answers with text assets"),
    _model("model_google-gemini-3-1-flash", "Gemini 3.1 Flash", "custom", privacy="public", custom=True,
           tags=["editing", "sc:featured", "sc:third-party"], capabilities=["txt2img", "img2img", "video2img"],
           inputs=[PROMPT | {"maxLength": 250000}, REFS | {"maxLength": 14},
                   {"name": "aspectRatio", "type": "string", "label": "Aspect Ratio", "group": "Settings",
                    "default": "auto", "allowedValues": ["21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4",
                                                         "2:3", "9:16", "auto"]},
                   {"name": "resolution", "type": "string", "label": "Resolution", "group": "Settings",
                    "default": "1K", "allowedValues": ["512", "1K", "2K", "4K"], "costImpact": True},
                   {"name": "thinkingLevel", "type": "string", "label": "Thinking", "group": "Settings",
                    "default": "HIGH", "allowedValues": ["MINIMAL", "LOW", "MEDIUM", "HIGH"]},
                   {"name": "useGoogleSearch", "type": "boolean", "label": "Use Google Search", "default": False},
                   _num_outputs(4), SEED],
           uiConfig={"selects": {"aspectRatio": {"1:1": "Square", "auto": "Auto"}}}, cost=5.0, style=6, score=995),
    _model("model_openai-gpt-image-2", "GPT Image 2", "custom", privacy="public", custom=True,
           tags=["sc:third-party"],
           inputs=[PROMPT | {"maxLength": 32000},
                   REFS | {"maxLength": 10, "required": {"ifDefined": {"mask": {
                       "message": "A reference image is required when a mask is provided."}}}},
                   {"name": "mask", "type": "file", "kind": "image", "label": "Mask", "maskFrom": "referenceImages",
                    "backgroundBehavior": "opaque"},
                   _num_outputs(10), _size("width", 16, 3840), _size("height", 16, 3840),
                   {"name": "quality", "type": "string", "label": "Quality", "default": "auto",
                    "allowedValues": ["auto", "high", "medium", "low"], "costImpact": True},
                   {"name": "background", "type": "string", "label": "Background", "default": "auto",
                    "allowedValues": ["auto", "opaque", "transparent"]}, SEED],
           uiConfig={"resolutionComponent": RESOLUTION | {"presets": RESOLUTION["presets"][:3]}},
           cost=12.0, style=7, score=1000),
    _model("model_imagen4-ultra", "Imagen 4 Ultra", "custom", privacy="public", custom=True,
           tags=["sc:third-party"],
           inputs=[PROMPT, {"name": "aspectRatio", "type": "string", "label": "Aspect Ratio", "default": "1:1",
                            "allowedValues": ["1:1", "4:3", "3:4", "9:16", "16:9"]},
                   _num_outputs(4), REFS | {"maxLength": 3}, SEED], cost=8.0, style=8, score=960),
    _model("model_z-image", "Z-Image", "custom", privacy="public", custom=True, tags=["sc:third-party"],
           inputs=_flux(["zimage-lora", "zimage-turbo-lora", "zimage-de-turbo-lora"]), cost=6.0, style=16,
           score=400),
    _model("model_qwen-image-edit-2511", "Qwen Image Edit 2511", "custom", privacy="public", custom=True,
           tags=["editing", "sc:third-party"], inputs=_flux(["qwen-image-edit-2511-lora"]), cost=8.0, style=17,
           score=300),
    _model("model_PubLicPixeLKnight3n4p5q6r", "Pixel Knights", "flux.1-lora", privacy="public", custom=False,
           tags=["pixel-art"], compliantModelIds=["flux.1-dev", "flux.1-schnell"], style=9, score=950),
    _model("model_PubLicInkWash8k9m2n3p4q5", "Ink Wash", "flux.2-dev-lora", privacy="public", custom=False,
           tags=["illustration"], style=10, score=700),
]
FEATURED[0]["score"] = 985  # FLUX.2 dev

FILLER_COUNT = 540
_SUBJECTS = ("Anime", "Sketch", "Clay", "Isometric", "Watercolor", "Comic", "Photo", "Low Poly", "Neon", "Vintage",
             "Cartoon", "Painterly", "Voxel", "Ink", "Chibi", "Realistic", "Game Icon", "Portrait", "Landscape",
             "Sci-Fi")
_MAKERS = ("Studio", "Forge", "Lab", "Pro", "XL", "Turbo", "Lite", "Max", "Flow", "Vision")


def _fillers() -> list:
    """The long tail of the public catalog (~550 runnable models in all, like the real one), deterministic.

    Mostly image models, with a video or 3D one now and then; simple inputs, no LoRA slots.
    """
    rng = random.Random(550)
    rows = []
    for n in range(FILLER_COUNT):
        model_id = "model_" + "".join(rng.choice(BASE58) for _ in range(24))
        output = "video" if n % 9 == 4 else "3d" if n % 13 == 7 else "image"
        capabilities = {"video": ["txt2video"], "3d": ["txt23d"], "image": ["txt2img", "img2img"]}[output]
        inputs = [PROMPT, _choice("aspectRatio", "Aspect Ratio", ["16:9", "4:3", "1:1", "3:4", "9:16"], "1:1"),
                  *([_num_outputs(4), REFS | {"maxLength": 2}] if output == "image" else []), SEED]
        rows.append(_model(model_id, f"{_SUBJECTS[n % len(_SUBJECTS)]} {_MAKERS[n // len(_SUBJECTS) % 10]} {n + 1}",
                           "custom", privacy="public", custom=True, capabilities=capabilities,
                           tags=["sc:third-party"] if n % 3 else ["community"], inputs=inputs, output=output,
                           created=f"20{24 + n % 3}-{1 + n % 12:02d}-{1 + n % 28:02d}T10:00:00.000Z",
                           cost=float(4 + n % 8), style=n % 11, score=900 - n * 1.5))
    return rows


BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
MODELS = PRIVATE + sorted(FEATURED + _fillers(), key=lambda m: -m["score"])

WORKFLOWS = [
    {"id": "workflow_CharacterSheet5tU6vW7xY8z", "name": "Character sheet",
     "description": "Front, side and back views of the Hero Knight", "shortDescription": "Hero Knight turnaround",
     "inputs": [PROMPT, _num_outputs(4) | {"default": 2}],
     "flow": [{"id": "node_generate", "type": "custom-model", "modelId": HERO}], "editorInfo": {},
     "hasFlow": True, "privacy": "private", "status": "ready", "tagSet": ["character"], "authorId": AUTHOR,
     "ownerId": OWNER, "createdAt": CREATED, "updatedAt": UPDATED, "outputAssetKinds": ["image"]},
    {"id": "workflow_DraftTurnaround2aB3cD4eF", "name": "Turnaround (draft)", "description": "Work in progress",
     "shortDescription": "", "inputs": [PROMPT], "flow": [], "editorInfo": {}, "hasFlow": False,
     "privacy": "private", "status": "draft", "tagSet": [], "authorId": AUTHOR, "ownerId": OWNER,
     "createdAt": CREATED, "updatedAt": UPDATED},
]

PRIVATE_ONLY = ("style", "cost", "score", "output")
LIST_HIDDEN = ("inputs", "uiConfig")


def model_by_id() -> dict:
    return {m["id"]: m for m in MODELS}


def public_view(model: dict, *, listing: bool) -> dict:
    """The model as the API shows it (list rows carry no inputs or uiConfig)."""
    hidden = PRIVATE_ONLY + (LIST_HIDDEN if listing else ())
    return {k: copy.deepcopy(v) for k, v in model.items() if k not in hidden}
