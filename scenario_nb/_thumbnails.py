"""Thumbnails: what a notebook carries instead of the full outputs (which stay in the local store)."""

from __future__ import annotations

import io
from typing import Iterable

DEFAULT_THUMBNAIL_SIZE = 320  # a preview, light in a saved notebook (~15 KB); the full files stay in the store
GRID_COLUMNS = 4
GRID_MAX_WIDTH = 768  # several outputs side by side share this width (4 × 189 px), not 4 × 320
JPEG_QUALITY = 70  # previews and sheets: every notebook here saves under 300 KB after a full run


def thumbnail_grid(images: Iterable, size: int = DEFAULT_THUMBNAIL_SIZE, gap: int = 4) -> tuple[bytes, str, int, int]:
    """One image holding every thumbnail (longest side of each ≤ size): (bytes, mime, width, height)."""
    from PIL import Image
    images = list(images)
    cols = max(1, min(GRID_COLUMNS, len(images)))
    if cols > 1:
        size = min(size, (GRID_MAX_WIDTH - (cols - 1) * gap) // cols)
    thumbs = []
    for image in images:
        has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
        thumb = image.convert("RGBA" if has_alpha else "RGB")
        thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
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
    grid.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue(), "image/jpeg", width, height
