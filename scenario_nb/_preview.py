"""Full-resolution images that show as light previews, so a notebook that displays one stays small.

`gen.images[0]` is the whole image (every pixel, for saving or editing), but a notebook that shows it would
embed a 1–2 MB PNG. A `PreviewImage` is that same PIL image; only its notebook display is a JPEG (a PNG when
it has transparency) at most PREVIEW_SIDE pixels on its longest side. The full file is `gen.files[i]`.
"""

from __future__ import annotations

import io
from typing import Optional

from PIL import Image

PREVIEW_SIDE = 512
PREVIEW_QUALITY = 82


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        low = image.convert("RGBA").getchannel("A").getextrema()[0]
        return isinstance(low, (int, float)) and low < 255
    return False


class PreviewImage(Image.Image):
    """A PIL image shown in notebooks as a small preview (JPEG, or PNG with transparency); all else is PIL's."""

    def _preview(self, alpha: bool) -> Optional[bytes]:
        if _has_alpha(self) != alpha:
            return None
        small = self.convert("RGBA" if alpha else "RGB")
        small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        if alpha:
            small.save(buf, format="PNG", optimize=True)
        else:
            small.save(buf, format="JPEG", quality=PREVIEW_QUALITY, optimize=True)
        return buf.getvalue()

    def _repr_png_(self) -> Optional[bytes]:
        return self._preview(alpha=True)

    def _repr_jpeg_(self) -> Optional[bytes]:
        return self._preview(alpha=False)

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(f"<image {self.width}x{self.height} {self.mode}: shown as a preview of at most {PREVIEW_SIDE} px; "
               f"the full image is this object (.save(path)), and its file is the generation's .files>")


def as_preview(image: Image.Image) -> PreviewImage:
    """The same image (no copy), displayed as a preview. `image` must be a plain `Image.Image` (not a file)."""
    image.__class__ = PreviewImage
    return image  # type: ignore[return-value]
