"""Real placeholder images: deterministic for (model, prompt, seed, index), a look per model, the prompt on it."""

from __future__ import annotations

import hashlib
import io
import random
import textwrap

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


def render(*, style: int, model_name: str, prompt: str, seed: int, index: int, width: int, height: int) -> bytes:
    """A PNG: the model's palette and pattern, shapes chosen by the seed, the prompt written across it."""
    digest = hashlib.sha256(f"{style}|{prompt}|{seed}|{index}".encode()).digest()
    rng = random.Random(digest)
    dark, light = PALETTES[style % len(PALETTES)]
    gradient = Image.linear_gradient("L").rotate(rng.choice([0, 45, 90, 135]), expand=False)
    image = ImageOps.colorize(gradient.resize((width, height)), dark, light)
    draw = ImageDraw.Draw(image)
    unit = max(8, min(width, height) // 12)
    pattern = style % 4
    for _ in range(14):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(unit // 2, unit * 3)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if pattern == 0:
            draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=max(2, unit // 6))
        elif pattern == 1:
            draw.rectangle([x, y, x + r, y + r], fill=colour)
        elif pattern == 2:
            draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], outline=colour, width=max(2, unit // 6))
        else:
            draw.line([x - r, y, x + r, y + rng.randrange(-r, r)], fill=colour, width=max(2, unit // 5))
    band = max(24, height // 5)
    draw.rectangle([0, height - band, width, height], fill=(0, 0, 0))
    title = _font(max(10, band // 6))
    draw.text((unit // 2, height - band + band // 12), f"SCENARIO SANDBOX · {model_name} · seed {seed}"
              + (f" · #{index + 1}" if index else ""), fill=(255, 220, 120), font=title)
    body = _font(max(10, band // 5))
    chars = max(12, int(width / (band // 5 * 0.55 + 1)))
    lines = textwrap.wrap(prompt, chars)[:3] or [""]
    for n, line in enumerate(lines):
        draw.text((unit // 2, height - band + band // 3 + n * (band // 5 + 2)), line, fill="white", font=body)
    image = Image.blend(image, _grain_layer(image.size, style), 0.1)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
