"""The sandbox's images: rendered ahead while their jobs run, kept for their next requests, never rendered twice.

A real job makes its images while it runs, so they exist the moment it succeeds. The sandbox does the same: two
background threads render each job's images ahead, so a burst of successes is not a burst of rendering on the
request threads. At most RENDER_AHEAD images wait there (~85 MB at 1024²).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict

from . import _images

RENDER_AHEAD = 64  # images rendered before their job succeeds, at most
RENDER_THREADS = 2  # images rendered at once while jobs run (a 1 MP PNG takes ~90 ms)
# render's arguments; `look` is a trained LoRA's (palette, motif)
RENDER_FIELDS = ("style", "model_name", "prompt", "seed", "index", "width", "height", "base", "look")


def render_key(params: dict) -> tuple:
    return tuple(params[k] for k in RENDER_FIELDS)


class Renderer:
    """Image bytes by asset, behind the state's lock (`lock`)."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self.images: "OrderedDict[str, bytes]" = OrderedDict()
        self.rendered_ahead: dict[tuple, tuple[bytes, float]] = {}
        self.rendering: dict[tuple, threading.Event] = {}  # renders under way (ahead or asked for): never twice
        self.served: set = set()  # render keys already rendered for a request: the render-ahead skips them
        self.render_queue: "queue.SimpleQueue" = queue.SimpleQueue()
        for n in range(RENDER_THREADS):  # Pillow's PNG encoder lets go of the GIL: two encode side by side
            threading.Thread(target=self._render_worker, name=f"scenario-sandbox-render-{n}", daemon=True).start()

    def render_ahead(self, outputs: list[dict]) -> None:
        """Queue a job's images (their `_images.render` arguments) for the background threads."""
        for params in outputs:
            self.render_queue.put(params)

    def _render_worker(self) -> None:
        while (params := self.render_queue.get()) is not None:
            key = render_key(params)
            with self.lock:
                stale = [k for k, (_, at) in self.rendered_ahead.items() if at < time.time() - 120]
                for k in stale:  # rendered for a job nobody downloaded
                    del self.rendered_ahead[k]
                if len(self.rendered_ahead) >= RENDER_AHEAD or key in self.rendered_ahead or \
                        key in self.rendering or key in self.served:
                    continue  # a request already rendered it (the render-ahead fell behind): not twice
                done = self.rendering[key] = threading.Event()
            try:
                data = _images.render(**params)
                with self.lock:
                    self.rendered_ahead[key] = (data, time.time())
            finally:
                with self.lock:
                    self.rendering.pop(key, None)
                done.set()

    def close(self) -> None:
        for _ in range(RENDER_THREADS):
            self.render_queue.put(None)

    def forget(self, asset_id: str) -> None:
        """Drop an asset's kept bytes (its image was replaced)."""
        with self.lock:
            self.images.pop(asset_id, None)

    def image_bytes(self, asset: dict) -> bytes:
        if asset["data"] is not None:
            return asset["data"]
        params = {k: asset[k] for k in RENDER_FIELDS}
        key = render_key(params)
        while True:
            with self.lock:
                cached = self.images.get(asset["id"])
                if cached is not None:
                    self.images.move_to_end(asset["id"])
                    return cached
                ahead = self.rendered_ahead.pop(key, None)
                if ahead is not None:
                    return self._keep(asset, key, ahead[0])
                pending = self.rendering.get(key)
                if pending is None:  # nobody renders it: this request does
                    done = self.rendering[key] = threading.Event()
                    break
            pending.wait()  # being rendered (ahead, or for another request): wait for it, not a second render
        try:
            data = _images.render(**params)
            with self.lock:
                return self._keep(asset, key, data)
        finally:
            with self.lock:
                self.rendering.pop(key, None)
            done.set()

    def _keep(self, asset: dict, key: tuple, data: bytes) -> bytes:
        """The asset's bytes, kept for its next requests (the lock held)."""
        self.images[asset["id"]] = data
        while len(self.images) > 64:
            self.images.popitem(last=False)
        asset["size"] = len(data)
        if len(self.served) > 10_000:
            self.served.clear()
        self.served.add(key)
        return data
