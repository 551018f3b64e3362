"""The training set, read and checked here before anything is sent or paid: a folder, a list of paths or Pillow
images, each a real image at least `MIN_SIDE` pixels a side, `MIN_IMAGES`–`MAX_IMAGES` of them, no two alike."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Union

from ._errors import InputError

if TYPE_CHECKING:
    from PIL.Image import Image

MIN_IMAGES, MAX_IMAGES = 5, 50  # the guide recommends 5–15 images; 50 at most
MIN_SIDE = 1024  # px per side; the dataset score warns "Width and height must be larger than 1024" below it
ImageSource = Union[str, os.PathLike, "Image"]


@dataclass
class LocalImage:
    """One training image read and checked here: its file name, bytes (PNG/JPEG/WebP) and size."""

    name: str
    data: bytes = field(repr=False)
    mime: str
    width: int
    height: int

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


def _encode(image: "Image") -> tuple[bytes, str]:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue(), "image/png"


def _read_one(source: Any, index: int) -> LocalImage:
    from PIL import Image, UnidentifiedImageError
    if isinstance(source, Image.Image):
        name = Path(getattr(source, "filename", "") or "").name or f"image-{index + 1:02d}.png"
        if not name.lower().endswith(".png"):
            name = Path(name).stem + ".png"
        data, mime = _encode(source)
        return LocalImage(name, data, mime, source.width, source.height)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"training images are a folder, a list of file paths or Pillow images, not "
                         f"{type(source).__name__}")
    path = Path(source).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read training image {path}: {exc.strerror or exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                probe.load()
                fmt, size = (probe.format or "").upper(), probe.size
                if fmt not in ("PNG", "JPEG", "WEBP"):
                    data, mime = _encode(probe)
                else:
                    mime = Image.MIME[fmt]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path.name} is too large: {too_large_words(data)}; resize it (training images "
                         f"need only 1024 px or so) or remove it from the training set") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(f"{path.name} is not an image (training images must be PNG, JPEG or WebP files); "
                         f"remove it from the training set") from None
    return LocalImage(path.name, data, mime, size[0], size[1])


def too_large_words(data: bytes) -> str:
    """Why Pillow refuses an image as a decompression bomb, in numbers, read from its header alone."""
    from PIL import Image, UnidentifiedImageError
    limit = f"Pillow opens at most {(Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
        except Image.DecompressionBombError as exc:  # over twice the limit: refused before its size is known
            pixels = re.search(r"\((\d+) pixels\)", str(exc))
            return (f"{int(pixels[1]) / 1e6:.0f} megapixels" if pixels else "too many pixels") + f"; {limit}"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return f"too many pixels; {limit}"
    return f"{width} × {height} pixels ({width * height / 1e6:.0f} megapixels; {limit})"


def load_images(images: Union[ImageSource, Iterable[ImageSource]]) -> list[LocalImage]:
    """Read and check a training set: a folder (its files, hidden ones skipped), paths or Pillow images.

    Raises one `InputError` line for an empty or missing folder, a file that is not an image (named), too few
    or too many images, an image smaller than `MIN_SIDE` a side, two images with one name or the same pixels.
    """
    from PIL import Image
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images).expanduser()
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder of training images" +
                             (" (it is a file: pass a folder, or a list of paths)" if folder.is_file() else ""))
        sources: list = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not sources:
            raise InputError(f"the folder {folder} holds no images; put {MIN_IMAGES}–15 images of at least "
                             f"{MIN_SIDE}×{MIN_SIDE} px in it")
    elif isinstance(images, Image.Image):
        sources = [images]
    else:
        try:
            sources = list(images)
        except TypeError:
            raise InputError("training images are a folder, a list of file paths or Pillow images") from None
        if not sources:
            raise InputError(f"no training images given; pass a folder or {MIN_IMAGES}–15 images")
    if len(sources) > MAX_IMAGES:
        raise InputError(f"too many training images: {len(sources)}, the most a training takes is {MAX_IMAGES} "
                         f"(5–15 is what Scenario recommends)")
    loaded = [_read_one(source, index) for index, source in enumerate(sources)]
    if len(loaded) < MIN_IMAGES:
        raise InputError(f"too few training images: {len(loaded)}; a LoRA needs at least {MIN_IMAGES} "
                         f"(5–15 is what Scenario recommends)")
    small = [i for i in loaded if min(i.width, i.height) < MIN_SIDE]
    if small:
        first = small[0]
        more = f" and {len(small) - 1} more" if len(small) > 1 else ""
        raise InputError(f"{first.name}{more} too small: {first.width}×{first.height} px; training images need at "
                         f"least {MIN_SIDE} px on each side")
    names: dict = {}
    digests: dict = {}
    for image in loaded:
        if image.name in names:
            raise InputError(f"two training images are named {image.name}; give them different names")
        names[image.name] = image
        digest = hashlib.sha256(image.data).hexdigest()
        if digest in digests:
            raise InputError(f"{image.name} and {digests[digest]} are the same image; keep one")
        digests[digest] = image.name
    return loaded
