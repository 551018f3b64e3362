"""Real placeholder images: deterministic for (model, prompt, seed, index, input image), a look per model, the
prompt on it. A model trained in the sandbox has its own look, taken from its training images (`look_of`)."""

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


def _drawable(text: str, font) -> str:
    """Pillow before 10.1 has only a bitmap default font, which draws Latin-1 alone (anything else raises
    UnicodeEncodeError): there, "…" is written "..." and any other such character "?"."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.replace("…", "...").encode("latin-1", "replace").decode("latin-1")


def _ellipsize(draw: ImageDraw.ImageDraw, text: str, font, room: float) -> str:
    if draw.textlength(_drawable(text, font), font=font) <= room:
        return _drawable(text, font)
    while text and draw.textlength(_drawable(text + "…", font), font=font) > room:
        text = text[:-1]
    return _drawable(text + "…", font) if text else ""


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, room: float, max_lines: int) -> list:
    """Greedy word wrap measured in pixels; the last line is cut with an ellipsis if the text goes on."""
    lines: list = []
    words = text.split()
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and draw.textlength(_drawable(line + " " + words[0], font), font=font) <= room:
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


def _rgb(colour: str) -> tuple:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _open_rgb(data: bytes, size: int) -> Image.Image:
    with Image.open(io.BytesIO(data)) as source:
        image = ImageOps.exif_transpose(source).convert("RGB")
    image.thumbnail((size, size))
    return image


def dominant_colours(image: Image.Image, count: int) -> list:
    """[(share, (r, g, b))] of the image's main colours, largest share first (median-cut, cheap on a thumbnail)."""
    quantized = image.quantize(colors=count, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    total = image.width * image.height
    counts: list = quantized.getcolors() or []  # [(pixels, palette index)]
    found = [(n / total, tuple(palette[3 * i:3 * i + 3])) for n, i in counts]
    return sorted(found, reverse=True)


def colour_shares(data: bytes) -> list:
    """One training image's main colours (computed once, when it is added)."""
    return dominant_colours(_open_rgb(data, 64), 6)


def look_of(shares_per_image: list, first_image: bytes) -> tuple:
    """A trained model's look: (palette, motif). The palette is the training set's dominant colours (hex, most
    common first, at most 5); the motif a 128 px square crop of its first image, as PNG bytes."""
    shares = [item for image in shares_per_image for item in image]
    merged: list = []  # colours closer than 40 count as one
    for share, colour in sorted(shares, reverse=True):
        near = next((m for m in merged if sum((a - b) ** 2 for a, b in zip(m[1], colour, strict=True)) < 1600), None)
        if near:
            near[0] += share
        else:
            merged.append([share, colour])
    merged.sort(key=lambda m: -m[0])
    palette = tuple("#%02x%02x%02x" % tuple(c) for _, c in merged[:5])
    motif = ImageOps.fit(_open_rgb(first_image, 512), (128, 128))
    buf = io.BytesIO()
    motif.save(buf, format="PNG")
    return palette, buf.getvalue()


def _trained(palette: tuple, size: tuple, rng: random.Random, pattern: int, strength: float,
             own: tuple) -> Image.Image:
    """Bands and shapes in the training set's colours; at a LoRA scale below 1 some stay the base model's own."""
    colours = [_rgb(c) for c in palette] or [(128, 128, 128)]
    weights = [len(colours) - i for i in range(len(colours))]  # the dominant colours cover most
    base_colours = [_rgb(c) for c in own]

    def pick() -> tuple:
        return rng.choices(colours, weights)[0] if rng.random() < strength else rng.choice(base_colours)

    width, height = size
    image = Image.new("RGB", size, colours[0] if strength >= 0.5 else base_colours[0])
    draw = ImageDraw.Draw(image)
    vertical, at = rng.random() < 0.5, 0
    while at < (width if vertical else height):
        step = rng.randrange(max(8, min(size) // 12), max(16, min(size) // 4))
        box = [at, 0, at + step, height] if vertical else [0, at, width, at + step]
        draw.rectangle(box, fill=pick())
        at += step
    unit = max(8, min(size) // 10)
    for _ in range(8):
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randrange(unit // 2, unit * 2)
        fill = pick()
        if pattern in (0, 2):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        else:
            draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    return image


def _paste_motif(image: Image.Image, motif: bytes, rng: random.Random, strength: float) -> None:
    """The training set's motif, framed, somewhere above the caption band (smaller at a low LoRA scale)."""
    width, height = image.size
    side = max(16, int(min(width, height) // 3 * (0.5 + 0.5 * min(1.0, strength))))
    with Image.open(io.BytesIO(motif)) as source:
        tile = ImageOps.expand(source.convert("RGB").resize((side - 6, side - 6)), border=3, fill="white")
    image.paste(tile, (rng.randrange(max(1, width - side)), rng.randrange(max(1, int(height * 0.6) - side))))


def render(*, style: int, model_name: str, prompt: str, seed: int, index: int, width: int, height: int,
           base: Optional[bytes] = None, look: Optional[tuple] = None) -> bytes:
    """A PNG: the model's palette and pattern (over the input image for img2img), shapes chosen by the seed,
    the prompt written across it. `look` (palette, motif, strength) is a trained LoRA's: its colours and motif
    instead, as much as its scale (`strength`, 0–1) says."""
    digest = hashlib.sha256(f"{style}|{prompt}|{seed}|{index}".encode()).digest()
    rng = random.Random(digest)
    dark, light = PALETTES[style % len(PALETTES)]
    if look is not None and not look[2]:
        look = None  # a LoRA at scale 0 changes nothing
    own = (dark, light)
    if look is not None and look[0] and look[2] >= 0.5:
        dark, light = look[0][0], look[0][-1]
    image = None
    if base is not None:
        try:
            image = _from_input(base, (width, height), dark, light)
        except (OSError, ValueError, Image.DecompressionBombError):
            image = None  # not an image: generate as if there were none
    if image is None and look is not None:
        image = _trained(look[0], (width, height), rng, style % 4, min(1.0, look[2]), own)
    elif image is None:
        gradient = Image.linear_gradient("L").rotate(rng.choice([0, 45, 90, 135]), expand=False)
        image = ImageOps.colorize(gradient.resize((width, height)), dark, light)
    draw = ImageDraw.Draw(image)
    unit = max(8, min(width, height) // 12)
    pattern = style % 4
    for _ in range(0 if look is not None else 14 if base is None else 5):
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
    if look is not None:
        _paste_motif(image, look[1], rng, look[2])
    image = Image.blend(image, _grain_layer(image.size, style), 0.1)
    _overlay(image, f"SCENARIO SANDBOX · {model_name} · seed {seed}" + (f" · #{index + 1}" if index else ""),
             prompt)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
