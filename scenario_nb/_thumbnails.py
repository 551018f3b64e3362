"""Thumbnails: what a notebook carries instead of the full outputs (which stay in the local store). Every
thumbnail in the package is made by `shrink`: the grid of a generation's images, a grid's tiles, the small data
URIs of training images."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Union

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_THUMBNAIL_SIZE = 320  # a preview, light in a saved notebook (~15 KB); the full files stay in the store
GRID_COLUMNS = 4
GRID_MAX_WIDTH = 768  # several outputs side by side share this width (4 × 189 px), not 4 × 320
JPEG_QUALITY = 70  # previews and sheets: every notebook here saves under 300 KB after a full run


def shrink(image: "Image", size: int, mode: Optional[str] = None) -> "Image":
    """A copy whose longest side is at most `size` (never enlarged), in `mode`: by default RGB, or RGBA when
    the image has transparency."""
    from PIL import Image
    if mode is None:
        has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
        mode = "RGBA" if has_alpha else "RGB"
    thumb = image.convert(mode)
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    return thumb


def thumbnail_uri(source: Union[bytes, Path, None], size: int = 96) -> Optional[str]:
    """A small JPEG data URI of an image (bytes or a file), or None when it cannot be read."""
    from PIL import Image
    if source is None:
        return None
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            buf = io.BytesIO()
            shrink(image, size, "RGB").save(buf, format="JPEG", quality=75)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def thumbnail_grid(images: Iterable, size: int = DEFAULT_THUMBNAIL_SIZE, gap: int = 4) -> tuple[bytes, str, int, int]:
    """One image holding every thumbnail (longest side of each ≤ size): (bytes, mime, width, height)."""
    from PIL import Image
    images = list(images)
    cols = max(1, min(GRID_COLUMNS, len(images)))
    if cols > 1:  # several outputs share GRID_MAX_WIDTH
        size = min(size, (GRID_MAX_WIDTH - (cols - 1) * gap) // cols)
    thumbs: list = [shrink(image, size) for image in images]  # Any: getextrema is typed for every band count
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
