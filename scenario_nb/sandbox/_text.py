"""The text tools' answers (contract §12c): captions and prompts, deterministic for the image, the request and the
seed, and plausible (they name what is really in the picture: its colours, size and shape)."""

from __future__ import annotations

import hashlib
import io
import random
from typing import Optional

from PIL import Image, ImageOps, ImageStat

from . import _images

COLOUR_NAMES = {
    "black": (15, 15, 15), "white": (245, 245, 245), "grey": (128, 128, 128), "silver": (192, 192, 192),
    "red": (205, 35, 35), "dark red": (120, 20, 25), "orange": (240, 140, 30), "yellow": (240, 215, 40),
    "olive": (120, 120, 30), "green": (45, 160, 65), "dark green": (20, 80, 40), "teal": (20, 128, 128),
    "cyan": (60, 200, 220), "light blue": (140, 185, 240), "blue": (40, 75, 205), "navy": (20, 30, 90),
    "purple": (120, 50, 160), "magenta": (210, 50, 180), "pink": (245, 165, 195), "brown": (120, 75, 40),
    "beige": (225, 205, 170),
}
SUBJECTS = ("shape", "figure", "object", "pattern")
PICTURES = ("image", "picture", "illustration")
DETAILS = ("soft lighting", "crisp edges", "centered composition", "gentle gradient", "clean outlines",
           "subtle texture", "balanced framing", "muted shadows")
STYLE_WORDS = ("cinematic", "painterly", "flat vector", "studio lit", "storybook", "isometric", "watercolor",
               "high detail")
MODES = ("completion", "contextual", "contextual-v2", "image-editing", "inventive", "structured")


def colour_name(rgb: tuple) -> str:
    return min(COLOUR_NAMES, key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOUR_NAMES[n], rgb, strict=True)))


def facts(data: bytes) -> dict:
    """What a captioner could see: size, shape, background and subject colours, brightness, busyness."""
    with Image.open(io.BytesIO(data)) as source:
        width, height = source.size
        image = ImageOps.exif_transpose(source).convert("RGB")
    image.thumbnail((96, 96))
    w, h = image.size
    inner = image.crop((w // 4, h // 4, w - w // 4, h - h // 4))
    background = colour_name(_images.dominant_colours(image.crop((0, 0, w, max(1, h // 8))), 2)[0][1])
    subject = []
    for _, rgb in _images.dominant_colours(inner, 4):
        name = colour_name(rgb)
        if name not in subject and name != background:
            subject.append(name)
    ratio = width / height
    shape = "square" if 0.9 <= ratio <= 1.1 else "wide" if ratio >= 1.7 else "landscape" if ratio > 1 else \
        "tall" if ratio <= 0.6 else "portrait"
    brightness = ImageStat.Stat(image.convert("L")).mean[0]
    colours = sum(1 for share, _ in _images.dominant_colours(image, 16) if share >= 0.03)
    return {"width": width, "height": height, "shape": shape, "background": background,
            "subject": subject[:2] or [background], "light": "bright" if brightness > 150 else "dark"
            if brightness < 80 else "evenly lit", "busy": colours >= 8}


def _rng(*parts) -> random.Random:
    return random.Random(hashlib.sha256("|".join(map(str, parts)).encode()).digest())


def _strip(text: str, unwanted: list) -> str:
    for sequence in unwanted or []:
        if sequence:
            while sequence.lower() in text.lower():
                at = text.lower().index(sequence.lower())
                text = text[:at] + text[at + len(sequence):]
    return " ".join(text.replace(" ,", ",").split()).strip(" ,")


def caption(data: bytes, *, seed: int = 0, details: str = "action", unwanted: Optional[list] = None,
            style_of: Optional[str] = None) -> str:
    """A one-line caption of the image; `action+style` adds a style clause, `style_of` copies a model's style."""
    f = facts(data)
    rng = _rng(hashlib.sha256(data).hexdigest(), seed, details)
    colours = " and ".join(f["subject"])
    text = (f"a {f['shape']} {rng.choice(PICTURES)} of a {colours} {rng.choice(SUBJECTS)} on a {f['background']} "
            f"background, {f['light']}")
    if details == "action+style" or style_of:
        style = "richly textured, detailed shading" if f["busy"] else "flat colours, simple shapes"
        text += f", {style}, {rng.choice(DETAILS)}"
    if style_of:
        text += f", in the style of {style_of}"
    return _strip(text, unwanted or [])


def prompts(*, mode: str, prompt: str, count: int, seed: int, captions: list, concept: str = "") -> list:
    """`count` distinct prompts for the mode, seeded from the request; image modes build on the images' captions."""
    rng = _rng(mode, prompt, seed, *captions)
    seen = captions[0] if captions else "the image"
    out = []
    for n in range(count):
        detail, style = rng.choice(DETAILS), rng.choice(STYLE_WORDS)
        if mode == "completion":
            text = f"{prompt}, {style}, {detail}"
        elif mode == "inventive":
            text = f"an unexpected {style} take on {prompt}, {detail}"
        elif mode == "structured":
            text = f"Subject: {prompt}. Style: {style}. Lighting: {detail}. Composition: variation {n + 1}."
        elif mode == "image-editing":
            text = f"Edit {seen}: {prompt or 'refine the details'}, keep the framing, {detail}"
        else:  # contextual, contextual-v2
            text = f"{seen}, {prompt + ', ' if prompt else ''}{style}, {detail}"
        if concept:
            text = f"{concept}, {text}"
        out.append(text if text not in out else f"{text}, take {n + 1}")
    return out


def describe_style(images: list, *, unwanted: Optional[list] = None) -> tuple:
    """(description, synthesis) of the images' shared style: their colours, finish and light."""
    seen = [facts(data) for data in images]
    colours: list = []
    for f in seen:
        for name in [f["background"], *f["subject"]]:
            if name not in colours:
                colours.append(name)
    finish = "richly textured with detailed shading" if sum(f["busy"] for f in seen) * 2 > len(seen) else \
        "flat colours and simple, clean shapes"
    light = max(("bright", "dark", "evenly lit"), key=lambda w: sum(f["light"] == w for f in seen))
    palette = ", ".join(colours[:4])
    description = (f"A {finish} style over {len(seen)} reference image{'s' if len(seen) > 1 else ''}: a palette of "
                   f"{palette}, {light} scenes, mostly {seen[0]['shape']} framing.")
    synthesis = f"{'textured' if 'textured' in finish else 'flat'} {' and '.join(colours[:2])} style, {light}"
    return _strip(description, unwanted or []), _strip(synthesis, unwanted or [])


WORDS = {
    "fr": {"un": "a", "une": "a", "le": "the", "la": "the", "les": "the", "de": "of", "du": "of the", "et": "and",
           "avec": "with", "sur": "on", "dans": "in", "chat": "cat", "chien": "dog", "chevalier": "knight",
           "épée": "sword", "rouge": "red", "bleu": "blue", "bleue": "blue", "vert": "green", "verte": "green",
           "forêt": "forest", "château": "castle", "dragon": "dragon", "fiole": "vial", "table": "table"},
    "es": {"un": "a", "una": "a", "el": "the", "la": "the", "los": "the", "de": "of", "y": "and", "con": "with",
           "sobre": "on", "en": "in", "gato": "cat", "perro": "dog", "caballero": "knight", "espada": "sword",
           "rojo": "red", "roja": "red", "azul": "blue", "verde": "green", "bosque": "forest", "castillo": "castle"},
    "de": {"ein": "a", "eine": "a", "der": "the", "die": "the", "das": "the", "und": "and", "mit": "with",
           "auf": "on", "im": "in the", "katze": "cat", "hund": "dog", "ritter": "knight", "schwert": "sword",
           "rot": "red", "rote": "red", "roter": "red", "blau": "blue", "grün": "green", "wald": "forest",
           "burg": "castle"},
}


def translate(prompt: str) -> tuple:
    """(English text, ISO 639-1 code): the language with the most known words, translated word by word."""
    words = prompt.split()
    scores = {lang: sum(w.lower().strip(".,!?") in table for w in words) for lang, table in WORDS.items()}
    lang = max(scores, key=lambda k: scores[k])
    if scores[lang] == 0 or scores[lang] * 3 < len(words):
        return prompt, "en"
    out = []
    for word in words:
        core = word.lower().strip(".,!?")
        english = WORDS[lang].get(core, core)
        out.append(word.lower().replace(core, english) if core else word)
    return " ".join(out), lang
