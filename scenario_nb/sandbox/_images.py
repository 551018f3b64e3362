"""Real placeholder images: deterministic for (model, prompt, seed, index, input image), a look per model, the
prompt on it."""

from __future__ import annotations

import hashlib
import io
import random
from typing import Optional

from PIL import Image, ImageDraw, ImageFont, ImageOps

PALETTES = [
    ("#1b2a49", "#f2a541"), ("#0f3d3e", "#9be564"), ("#3b1f4a", "#ff7aa2"), ("#2d2d2d", "#e0e0e0"),
    ("#102a43", "#62b0e8"), ("#3e2723", "#ffb74d"), ("#0d1b2a", "#48cae4"), ("#2b2d42", "#ef233c"),
    ("#1a1a2e", "#e2b714"), ("#264653", "#e9c46a"), ("#222831", "#00adb5"),
]

_fonts: dict = {}
_grain: dict = {}


def _grain_layer(size: tuple, style: int) -> Image.Image:
    """Fine texture, as real generations have: it makes files as large as real outputs (~1.3 MB at 1 MP)."""
    if style not in _grain:
        _grain[style] = Image.effect_noise((256, 256), 48 + 4 * style).convert("RGB")
    layer = Image.new("RGB", size)
    for x in range(0, size[0], 256):
        for y in range(0, size[1], 256):
            layer.paste(_grain[style], (x, y))
    return layer


def _font(size: int):
    if size not in _fonts:
        try:
            _fonts[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1
            _fonts[size] = ImageFont.load_default()
    return _fonts[size]


def _ellipsize(draw: ImageDraw.ImageDraw, text: str, font, room: float) -> str:
    if draw.textlength(text, font=font) <= room:
        return text
    while text and draw.textlength(text + "…", font=font) > room:
        text = text[:-1]
    return text + "…" if text else ""


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, room: float, max_lines: int) -> list:
    """Greedy word wrap measured in pixels; the last line is cut with an ellipsis if the text goes on."""
    lines: list = []
    words = text.split()
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and draw.textlength(line + " " + words[0], font=font) <= room:
            line += " " + words.pop(0)
        lines.append(line)
    if words and lines:
        lines[-1] = _ellipsize(draw, lines[-1] + " " + " ".join(words), font, room)
    return [_ellipsize(draw, line, font, room) for line in lines]


def _overlay(image: Image.Image, title: str, prompt: str) -> None:
    """The caption band: sized from measured text so it fits any aspect ratio (never cut at the bottom or
    the right), at most 40% of the height; no caption at all on images too small to hold one."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    margin = max(3, min(width, height) // 40)
    room = width - 2 * margin
    for size in range(max(10, min(width, height) // 22), 5, -1):
        title_font, body_font = _font(size), _font(max(6, size * 6 // 5))
        lines = _wrap(draw, prompt, body_font, room, 3)
        title_line = _ellipsize(draw, title, title_font, room)
        line_height = body_font.getbbox("Ag")[3] + max(2, size // 4)
        title_height = title_font.getbbox("Ag")[3] + max(2, size // 3)
        band = 2 * margin + title_height + line_height * len(lines)
        if band <= height * 0.4 and title_line:
            break
    else:
        return
    top = height - band
    draw.rectangle([0, top, width, height], fill=(0, 0, 0))
    draw.text((margin, top + margin), title_line, fill=(255, 220, 120), font=title_font)
    for n, line in enumerate(lines):
        draw.text((margin, top + margin + title_height + n * line_height), line, fill="white", font=body_font)


def _from_input(base: bytes, size: tuple, dark: str, light: str) -> Image.Image:
    """img2img: the input image, cropped to the output's size, posterised and tinted with the model's palette,
    so the result visibly comes from it."""
    with Image.open(io.BytesIO(base)) as source:
        fitted = ImageOps.fit(ImageOps.exif_transpose(source).convert("RGB"), size)
    tint = ImageOps.colorize(ImageOps.grayscale(fitted), dark, light)
    return Image.blend(ImageOps.posterize(fitted, 3), tint, 0.35)


def render(*, style: int, model_name: str, prompt: str, seed: int, index: int, width: int, height: int,
           base: Optional[bytes] = None) -> bytes:
    """A PNG: the model's palette and pattern (over the input image for img2img), shapes chosen by the seed,
    the prompt written across it."""
    digest = hashlib.sha256(f"{style}|{prompt}|{seed}|{index}".encode()).digest()
    rng = random.Random(digest)
    dark, light = PALETTES[style % len(PALETTES)]
    image = None
    if base is not None:
        try:
            image = _from_input(base, (width, height), dark, light)
        except (OSError, ValueError, Image.DecompressionBombError):
            image = None  # not an image: generate as if there were none
    if image is None:
        gradient = Image.linear_gradient("L").rotate(rng.choice([0, 45, 90, 135]), expand=False)
        image = ImageOps.colorize(gradient.resize((width, height)), dark, light)
    draw = ImageDraw.Draw(image)
    unit = max(8, min(width, height) // 12)
    pattern = style % 4
    for _ in range(14 if base is None else 5):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(unit // 2, unit * 3)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if pattern == 0:
            draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=max(2, unit // 6))
        elif pattern == 1 and base is None:
            draw.rectangle([x, y, x + r, y + r], fill=colour)
        elif pattern in (1, 2):
            draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], outline=colour, width=max(2, unit // 6))
        else:
            draw.line([x - r, y, x + r, y + rng.randrange(-r, r)], fill=colour, width=max(2, unit // 5))
    image = Image.blend(image, _grain_layer(image.size, style), 0.1)
    _overlay(image, f"SCENARIO SANDBOX · {model_name} · seed {seed}" + (f" · #{index + 1}" if index else ""),
             prompt)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
