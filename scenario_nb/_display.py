"""How a generation looks in a notebook: light thumbnails, readable text, provenance in metadata.

Full-resolution images stay in the local file store; a saved notebook only carries one JPEG grid of
thumbnails (PNG when there is transparency), so it stays small and still reads well in JupyterLab,
Notebook 7, VS Code, GitHub's viewer and nbconvert.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Iterable

DEFAULT_THUMBNAIL_SIZE = 512
GRID_COLUMNS = 4


def thumbnail_grid(images: Iterable, size: int = DEFAULT_THUMBNAIL_SIZE, gap: int = 4) -> tuple[bytes, str, int, int]:
    """One image holding every thumbnail (longest side of each ≤ size): (bytes, mime, width, height)."""
    from PIL import Image
    thumbs = []
    for image in images:
        has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
        thumb = image.convert("RGBA" if has_alpha else "RGB")
        thumb.thumbnail((size, size), Image.LANCZOS)
        thumbs.append(thumb)
    if not thumbs:
        raise ValueError("no images")
    alpha = any(t.mode == "RGBA" and t.getchannel("A").getextrema()[0] < 255 for t in thumbs)
    cols = min(GRID_COLUMNS, len(thumbs))
    rows = (len(thumbs) + cols - 1) // cols
    cell_w, cell_h = max(t.width for t in thumbs), max(t.height for t in thumbs)
    width, height = cols * cell_w + (cols - 1) * gap, rows * cell_h + (rows - 1) * gap
    if len(thumbs) == 1:
        grid, (width, height) = thumbs[0], thumbs[0].size
    else:
        grid = Image.new("RGBA" if alpha else "RGB", (width, height), (255, 255, 255, 0) if alpha else "white")
        for index, thumb in enumerate(thumbs):
            r, c = divmod(index, cols)
            grid.paste(thumb, (c * (cell_w + gap), r * (cell_h + gap)))
    buf = io.BytesIO()
    if alpha:
        grid.convert("RGBA").save(buf, format="PNG", optimize=True)
        return buf.getvalue(), "image/png", width, height
    grid.convert("RGB").save(buf, format="JPEG", quality=85, optimize=True)
    return buf.getvalue(), "image/jpeg", width, height


def generation_bundle(handle, thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE) -> tuple[dict, dict]:
    """(data, metadata) for a Generation: text/plain always, the thumbnail grid once images exist."""
    data = {"text/plain": handle.summary()}
    metadata: dict = {"scenario_nb": handle.provenance()}
    images = handle.images if handle.ok else []
    if images:
        raw, mime, width, height = thumbnail_grid(images, thumbnail_size)
        data[mime] = base64.b64encode(raw).decode()
        metadata[mime] = {"width": width, "height": height}
    elif not handle.done:
        data["text/html"] = status_html(handle)
    return data, metadata


def status_html(handle) -> str:
    """A small live status line with a progress bar (no JavaScript, so it renders anywhere)."""
    pct = int(round(handle.progress * 100))
    label = html.escape(handle.summary().splitlines()[0])
    return (f'<div class="scenario-status"><progress value="{pct}" max="100" style="width:12em"></progress> '
            f"<code>{label}</code></div>")


def error_line(handle) -> str:
    """The one line shown for a failed job: reason and hint, never a traceback."""
    return str(handle.exception) if handle.exception is not None else ""


def magic_text(handle) -> str:
    """The `%%scenario` cell that reproduces a generation (used by the panel's "copy as %%scenario")."""
    parts = ["%%scenario", handle.model_id]
    for name, value in sorted(handle.inputs.items()):
        if name == "prompt" or (handle.base_model_id and name in ("modelId", "loras", "lorasScale")):
            continue
        if name == "numOutputs":
            parts += ["-n", str(value)]
        elif name == "seed":
            parts += ["--seed", str(value)]
        else:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value).lower() \
                if isinstance(value, bool) else str(value)
            parts.append(f"--set {name}={text}" if " " not in text else f'--set "{name}={text}"')
    if handle.seed is not None and "seed" not in handle.inputs:
        parts += ["--seed", str(handle.seed)]
    return " ".join(parts) + "\n" + handle.prompt
