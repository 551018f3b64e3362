"""Non-image outputs with real bytes: a playable MP4, a valid GLB (a coloured cube), text.

The real catalog mixes image, video, 3D and text models (contract §10b); a client must store and show
whatever comes back, so the sandbox serves files a browser or a glTF viewer really opens.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import json
import struct
import textwrap
from importlib import resources

# data/sample.mp4: made once with ffmpeg (testsrc2, 320x180, 12 fps, 2 s, H.264 Constrained Baseline, yuv420p,
# faststart, no audio) so every browser plays it.
VIDEO_PROPERTIES = {"width": 320, "height": 180, "duration": 2, "frameRate": 12, "nbFrames": 24,
                    "codecName": "h264", "format": "mp4"}
CUBE_PROPERTIES = {"format": "glb", "vertexCount": 24, "faceCount": 12, "hasAnimations": False}

MIME = {"image": "image/png", "video": "video/mp4", "3d": "model/gltf-binary", "text": "text/plain"}
EXTENSION = {"image": "png", "video": "mp4", "3d": "glb", "text": "txt"}
TEXT_PREVIEW = 1000  # characters of a text asset shown in its `properties.preview` (≈1 KB, contract §10b)


@functools.lru_cache(maxsize=1)
def sample_mp4() -> bytes:
    return resources.files(__package__).joinpath("data/sample.mp4").read_bytes()


# A unit cube, 4 vertices per face so each face has its own colour (and normal).
_FACES = (  # (normal, four corners counter-clockwise seen from outside)
    ((1, 0, 0), ((1, -1, -1), (1, 1, -1), (1, 1, 1), (1, -1, 1))),
    ((-1, 0, 0), ((-1, -1, 1), (-1, 1, 1), (-1, 1, -1), (-1, -1, -1))),
    ((0, 1, 0), ((-1, 1, -1), (-1, 1, 1), (1, 1, 1), (1, 1, -1))),
    ((0, -1, 0), ((-1, -1, 1), (-1, -1, -1), (1, -1, -1), (1, -1, 1))),
    ((0, 0, 1), ((-1, -1, 1), (1, -1, 1), (1, 1, 1), (-1, 1, 1))),
    ((0, 0, -1), ((1, -1, -1), (-1, -1, -1), (-1, 1, -1), (1, 1, -1))),
)


def _pad(data: bytes, filler: bytes) -> bytes:
    return data + filler * (-len(data) % 4)


@functools.lru_cache(maxsize=64)
def glb_cube(seed: int) -> bytes:
    """A glTF 2.0 binary: one cube mesh with per-face vertex colours (hues chosen by the seed)."""
    base_hue = int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:2], "big") / 65535
    positions: list[float] = []
    normals: list[float] = []
    colours: list[float] = []
    indices: list[int] = []
    for face, (normal, corners) in enumerate(_FACES):
        red, green, blue = colorsys.hsv_to_rgb((base_hue + face / 6) % 1.0, 0.65, 0.95)
        for corner in corners:
            positions += [c * 0.5 for c in corner]
            normals += normal
            colours += [red, green, blue, 1.0]
        first = face * 4
        indices += [first, first + 1, first + 2, first, first + 2, first + 3]
    chunks = [struct.pack(f"<{len(positions)}f", *positions), struct.pack(f"<{len(normals)}f", *normals),
              struct.pack(f"<{len(colours)}f", *colours), struct.pack(f"<{len(indices)}H", *indices)]
    views, offset = [], 0
    for n, chunk in enumerate(chunks):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(chunk),
                      "target": 34963 if n == 3 else 34962})
        offset += len(_pad(chunk, b"\0"))
    binary = b"".join(_pad(chunk, b"\0") for chunk in chunks)
    gltf = {
        "asset": {"version": "2.0", "generator": "scenario_nb sandbox"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "cube"}],
        "meshes": [{"name": "cube", "primitives": [{"attributes": {"POSITION": 0, "NORMAL": 1, "COLOR_0": 2},
                                                    "indices": 3, "material": 0, "mode": 4}]}],
        "materials": [{"name": "vertex colours", "pbrMetallicRoughness": {
            "baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0, "roughnessFactor": 0.8}}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views,
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 24, "type": "VEC3", "min": [-0.5] * 3, "max": [0.5] * 3},
            {"bufferView": 1, "componentType": 5126, "count": 24, "type": "VEC3"},
            {"bufferView": 2, "componentType": 5126, "count": 24, "type": "VEC4"},
            {"bufferView": 3, "componentType": 5123, "count": 36, "type": "SCALAR"},
        ],
    }
    json_chunk = _pad(json.dumps(gltf, separators=(",", ":")).encode(), b" ")
    total = 12 + 8 + len(json_chunk) + 8 + len(binary)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(json_chunk), b"JSON") + json_chunk
            + struct.pack("<I4s", len(binary), b"BIN\0") + binary)


def text_answer(body: dict) -> str:
    """What the text model 'writes': deterministic, shaped by the request, within maxWords."""
    prompt = " ".join(str(body.get("prompt", "")).split())
    tone = body.get("tone", "neutral")
    words = (f"({tone}) {prompt}: seen in soft morning light, rich texture, clear silhouette, a strong focal "
             f"point and a restrained palette, framed for a game asset sheet.").split()
    return textwrap.fill(" ".join(words[:int(body.get("maxWords", 60))]), 100)


def llm_answer(body: dict, index: int) -> str:
    """What Scenario's LLM 'writes' for answer `index`: deterministic, shaped by the instruction and inputs.

    Long enough (~1.5 KB) that the asset's preview is cut, as the real one's is for long answers."""
    instruction = " ".join(str(body.get("instruction", "")).split())
    texts, images = body.get("textInputs") or [], body.get("images") or []
    seen = f" Working from {len(texts)} text(s) and {len(images)} image(s)." if texts or images else ""
    lines = [f"Answer {index + 1}: {instruction}.{seen}"]
    lines += [f"{n}. A take on {instruction!r}: soft morning light, rich texture, a clear silhouette, a strong "
              f"focal point and a restrained palette (variation {index + 1}.{n})." for n in range(1, 11)]
    return "\n".join(lines)


def text_properties(text: str) -> dict:
    """A text asset's `properties` (contract §10b): a ≈1 KB preview and the counts."""
    return {"preview": text[:TEXT_PREVIEW], "hasFullPreview": len(text) <= TEXT_PREVIEW, "charCount": len(text),
            "wordCount": len(text.split())}
