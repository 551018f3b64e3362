"""The local file store: every output once, by asset id, as the bytes it came as, written atomically.

A notebook only carries thumbnails; the full outputs (images, videos, 3D models, documents) live here so a
restarted kernel can show them again. Files are written to a temp file, synced and renamed, so a crash or a
full disk never leaves a truncated file behind; they get the permissions the user's umask gives.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Union

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from ._errors import StorageError

EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
              "video/mp4": ".mp4", "video/webm": ".webm", "model/gltf-binary": ".glb", "model/gltf+json": ".gltf",
              "text/plain": ".txt", "application/json": ".json", "audio/mpeg": ".mp3", "audio/wav": ".wav"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file


def atomic_write(path: Path, write: Callable[[IO[bytes]], object], what: str) -> Path:
    """Write through a temp file in the same folder, fsync, then rename over `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {path.parent} ({exc.strerror or exc}); "
                           f"point SCENARIO_NB_HOME at a writable folder") from None
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as handle:
            tmp = Path(handle.name)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        return path
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise StorageError(f"disk full while saving {what} to {path}; free space or point "
                               f"SCENARIO_NB_HOME elsewhere") from None
        raise StorageError(f"cannot write {what} to {path} ({exc.strerror or exc}); point SCENARIO_NB_HOME "
                           f"at a writable folder") from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextlib.contextmanager
def _image_errors(what: str):
    """Corrupt files and decompression bombs become one clear line."""
    try:
        yield
    except Image.DecompressionBombError:
        raise StorageError(f"refused {what}: image is too large (decompression bomb)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise StorageError(f"the downloaded file for {what} is not a valid image; fetch it again with "
                           f"%scenario asset or %scenario job") from None


def verify_image(data: bytes, what: str) -> None:
    """Check an image is whole without decoding it (for a PNG: every chunk's CRC, through IEND)."""
    with _image_errors(what), Image.open(io.BytesIO(data)) as probe:
        probe.verify()


def decode_image(data: bytes, what: str) -> Image.Image:
    """Fully decode image bytes."""
    verify_image(data, what)
    with _image_errors(what):
        image = Image.open(io.BytesIO(data))
        image.load()
        return image


class FileStore:
    """Outputs by asset id under `root/assets/` (thumbnails are made from them when shown: `_thumbnails`)."""

    def __init__(self, root: Union[str, os.PathLike]) -> None:
        self.root = Path(root)
        self.assets = self.root / "assets"
        self.clean_partials()

    def clean_partials(self) -> None:
        """Remove temp files a crash may have left."""
        if self.assets.is_dir():
            for leftover in self.assets.glob("*.part"):
                leftover.unlink(missing_ok=True)

    def path_for(self, asset_id: str, mime_type: str = "image/png") -> Path:
        """Where an output of this type is stored (the extension comes from its MIME type)."""
        if not asset_id or any(c in asset_id for c in "/\\") or ".." in asset_id:
            raise StorageError(f"{asset_id!r} is not a valid asset id")
        return self.assets / f"{asset_id}{EXTENSIONS.get(mime_type, '.bin')}"

    def has(self, asset_id: str, mime_type: str = "image/png") -> bool:
        return self.path_for(asset_id, mime_type).is_file()

    def find(self, asset_id: str) -> Path:
        """The stored file of an asset, whatever its type."""
        self.path_for(asset_id)  # validates the id
        found = sorted(p for p in self.assets.glob(f"{asset_id}.*") if p.suffix != ".part")
        if not found:
            raise StorageError(f"asset {asset_id} is not in the local store; fetch it with %scenario asset")
        return found[0]

    def put(self, asset_id: str, data: bytes, mime_type: str = "image/png") -> Path:
        """Store an output as it came, after checking an image is whole; idempotent.

        A PNG is checked chunk by chunk (every CRC, up to IEND), which catches truncated and corrupted
        downloads in well under a millisecond; other images are decoded once. Other outputs are kept as they
        are (a video or a 3D model is never judged as an image).
        """
        path = self.path_for(asset_id, mime_type)
        if path.is_file():
            return path
        if not data:
            raise StorageError(f"the download of asset {asset_id} was empty; fetch it again with %scenario job")
        if mime_type.startswith("image/"):
            decode_image(data, f"asset {asset_id}") if not data.startswith(PNG_SIGNATURE) \
                else verify_image(data, f"asset {asset_id}")
        return atomic_write(path, lambda f: f.write(data), f"asset {asset_id}")

    def open_image(self, asset: Union[str, Path]) -> Image.Image:
        """A stored image, fully loaded (by path, or by asset id)."""
        path = asset if isinstance(asset, Path) else self.find(asset)
        with _image_errors(str(path.name)), Image.open(path) as image:
            image.load()
            return image.copy()

    def copy(self, source: Path, dest: Union[str, os.PathLike]) -> Path:
        """Copy a stored output as it is."""
        data = source.read_bytes()
        return atomic_write(Path(dest), lambda f: f.write(data), source.name)

    def write_text(self, dest: Union[str, os.PathLike], text: str) -> Path:
        return atomic_write(Path(dest), lambda f: f.write(text.encode()), Path(dest).name)

    def save_png_with_metadata(self, source: Union[str, Path], dest: Union[str, os.PathLike], text: dict) -> Path:
        """Copy a stored image (by path or asset id) to `dest` as PNG with `text` in its iTXt chunks."""
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_itxt(str(key), str(value))
        image = self.open_image(source)
        return atomic_write(Path(dest), lambda f: image.save(f, format="PNG", pnginfo=info), Path(dest).name)
