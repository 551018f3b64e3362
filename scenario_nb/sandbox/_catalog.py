"""The sandbox account: the user's trained models, the public catalog and workflows.

Shapes follow the real API (§4 of the contract, recorded captures): list rows carry no `inputs`, LoRAs and
compositions have none at all and must run through a base model, platform models use real ids.
"""

from __future__ import annotations

import copy

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
           tags=(), capabilities=("txt2img", "img2img"), **extra) -> dict:
    row = {"id": mid, "name": name, "type": mtype, "privacy": privacy, "custom": custom, "status": status,
           "capabilities": list(capabilities), "source": "scenario" if not custom else "other",
           "tags": list(tags), "collectionIds": [], "exampleAssetIds": [],
           "trainingImagesNumber": 0 if custom else 18, "trainingProgress": {}, "parameters": {},
           "userId": AUTHOR, "authorId": AUTHOR, "ownerId": OWNER, "createdAt": CREATED, "updatedAt": UPDATED,
           "complianceMetadata": {"modelProvider": "Scenario sandbox", "maintainer": "scenario_nb"}}
    row.update(extra)
    return row


HERO = "model_HeroKnightLoRA7aB3cD4eF5gH6j"
FOREST = "model_PixeLForestStyLe2qR3sT4uV5w"
COMPOSITION = "model_KnightForestMix9xY8zW7vU6t"

MODELS = [
    _model(HERO, "Hero Knight", "flux.2-dev-lora", privacy="private", custom=False,
           shortDescription="Our hero character, trained on 18 concept sheets", style=0),
    _model(FOREST, "Pixel Forest Style", "flux.1-lora", privacy="private", custom=False,
           shortDescription="The game's pixel-art forest style", style=1),
    _model(COMPOSITION, "Knight in Pixel Forest", "flux.1-composition", privacy="private", custom=False,
           concepts=[{"modelId": FOREST, "scale": 0.8}, {"modelId": "model_PubLicPixeLKnight3n4p5q6r", "scale": 0.6}],
           style=2),
    _model("model_DragonSketchLoRA4bC5dE6fG7h", "Dragon Sketches", "flux.2-dev-lora", privacy="private",
           custom=False, status="training", trainingProgress={"stage": "running-train", "updatedAt": UPDATED,
                                                              "progress": 0.4}, style=3),
    _model("model_bfl-flux-2-dev", "FLUX.2 dev", "custom", privacy="public", custom=True,
           tags=["sc:featured", "sc:third-party"], inputs=_flux(["flux.2-dev-lora", "flux.2-dev-edit-lora"]),
           uiConfig={"resolutionComponent": RESOLUTION,
                     "lorasComponent": {"label": "LoRAs", "modelInput": "loras", "scaleInput": "lorasScale",
                                        "modelIdInput": "modelId"}}, cost=16.0, style=4),
    _model("model_bfl-flux-1-dev", "FLUX.1 dev", "custom", privacy="public", custom=True,
           tags=["sc:third-party"], inputs=_flux(["flux.1-lora", "flux.1-composition"]),
           uiConfig={"resolutionComponent": RESOLUTION}, cost=9.0, style=5),
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
           uiConfig={"selects": {"aspectRatio": {"1:1": "Square", "auto": "Auto"}}}, cost=5.0, style=6),
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
           cost=12.0, style=7),
    _model("model_imagen4-ultra", "Imagen 4 Ultra", "custom", privacy="public", custom=True,
           tags=["sc:third-party"],
           inputs=[PROMPT, {"name": "aspectRatio", "type": "string", "label": "Aspect Ratio", "default": "1:1",
                            "allowedValues": ["1:1", "4:3", "3:4", "9:16", "16:9"]},
                   _num_outputs(4), REFS | {"maxLength": 3}, SEED], cost=8.0, style=8),
    _model("model_PubLicPixeLKnight3n4p5q6r", "Pixel Knights", "flux.1-lora", privacy="public", custom=False,
           tags=["pixel-art"], style=9),
    _model("model_PubLicInkWash8k9m2n3p4q5", "Ink Wash", "flux.2-dev-lora", privacy="public", custom=False,
           tags=["illustration"], style=10),
]

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

PRIVATE_ONLY = ("style", "cost")
LIST_HIDDEN = ("inputs", "uiConfig")


def model_by_id() -> dict:
    return {m["id"]: m for m in MODELS}


def public_view(model: dict, *, listing: bool) -> dict:
    """The model as the API shows it (list rows carry no inputs or uiConfig)."""
    hidden = PRIVATE_ONLY + (LIST_HIDDEN if listing else ())
    return {k: copy.deepcopy(v) for k, v in model.items() if k not in hidden}
