"""The panel's gallery: a tile per output, newest request first; select and save, view at full size with the
provenance, and each image's `%%scenario` cell."""

from __future__ import annotations

import html
import json
import threading
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from . import _light_widgets as w

from ._errors import ScenarioError
from ._gallery import ACCENT, TILE, TILE_BOX, TILE_INNER, Item, caption_html, code_html, image_area, other_area
from ._generation import Generation
from ._html import magic_text
from ._panel_style import error_line, quiet
from ._thumbnails import thumbnail_grid

VIEW_MAX = 1024                    # the View shows the image at its real size, up to this


class GalleryView:
    """Part of `Panel`: what it reads of the rest of the panel is declared here."""

    client: Any
    generations: list[Generation]
    items: list[Item]
    aspects_sent: dict[int, tuple[str, frozenset]]
    gallery: w.GridBox
    viewer: w.VBox
    viewer_image: w.Image
    viewer_info: w.HTML
    save_folder: w.Text
    save_note: w.HTML
    selection_note: w.HTML
    _gallery_lock: threading.Lock
    _refresh_snapshot: Callable[[], None]

    # -- Gallery -------------------------------------------------------------------------------------
    def _items_for(self, handle: Generation) -> list[Item]:
        items = []
        for index, output in enumerate(handle.outputs):
            item = Item(handle=handle, index=index, asset_id=output.asset_id,
                        kind="image" if output.is_image else output.kind, path=str(output.path))
            if output.is_image and output.path.is_file():
                image = self.client.store.open_image(output.path)
                item.thumb, item.mime, item.width, item.height = thumbnail_grid([image], TILE)
            elif output.is_image:
                item.kind = "image (not downloaded)"
            items.append(item)
        if not items and handle.text:  # text models answer with words, not files
            items.append(Item(handle=handle, index=0, asset_id="", kind="text", text=handle.text))
        return items

    def _tile(self, item: Item) -> w.VBox:
        caption = w.HTML(caption_html(item), layout=w.Layout(width=f"{TILE_INNER}px", margin="0"))
        code = w.HTML(layout=w.Layout(display="none", margin="0"))
        buttons, overlay = [], None
        if item.kind == "image":
            overlay = w.Button(description="", tooltip=item.handle.prompt,
                               style=w.ButtonStyle(button_color="transparent"))
            overlay.add_class("scenario-tile-select")
            area = image_area(item, overlay)
            overlay.on_click(lambda _, it=item: self.toggle(it))
            view = w.Button(description="View", icon="search", layout=w.Layout(width="auto"))
            view.on_click(lambda _, it=item: self.view(it))
            buttons.append(view)
        else:
            area = other_area(item)
        as_magic = w.Button(description="As %%scenario", icon="code", layout=w.Layout(width="auto"),
                            tooltip="show the %%scenario cell that makes this image")
        as_magic.on_click(lambda _, it=item: self.show_magic(it))
        buttons.append(as_magic)
        tile = w.VBox([area, caption, w.HBox(buttons, layout=w.Layout(margin="4px 0 0 0")), code],
                      layout=w.Layout(width=f"{TILE_BOX}px", padding="6px", border="1px solid #e3e3e3",
                                      align_items="flex-start"))
        tile.add_class("scenario-tile")
        item.widgets = {"tile": tile, "code": code, "caption": caption, "overlay": overlay}
        return tile

    def _add_to_gallery(self, handle: Generation) -> None:
        items = self._items_for(handle)
        tiles = [self._tile(item) for item in items]
        with self._gallery_lock:  # newest request first, whichever job finishes first
            rank = {id(g): n for n, g in enumerate(self.generations)}
            mine = rank.get(id(handle), len(rank))
            at = sum(1 for i in self.items if rank.get(id(i.handle), len(rank)) > mine)
            self.items = self.items[:at] + items + self.items[at:]
            children = list(self.gallery.children)
            self.gallery.children = tuple(children[:at] + tiles + children[at:])
        self._refresh_snapshot()

    def toggle(self, item: Item) -> None:
        """Select or unselect a tile (what clicking its image does)."""
        item.selected = not item.selected
        tile = item.widgets["tile"]
        tile.layout.border = f"2px solid {ACCENT}" if item.selected else "1px solid #e3e3e3"
        tile.layout.padding = "5px" if item.selected else "6px"
        overlay = item.widgets.get("overlay")
        if overlay is not None:
            overlay.style.button_color = "rgba(47,111,222,0.22)" if item.selected else "transparent"
        picked = sum(i.selected for i in self.items)
        self.selection_note.value = quiet(f"· {picked} selected" if picked else "· click a tile to select it")
        self.save_note.value = ""

    def view(self, item: Item) -> None:
        """Open the image above the gallery at its real size (capped), with its full provenance."""
        image = self.client.store.open_image(Path(item.path))
        data, mime, width, height = thumbnail_grid([image], VIEW_MAX)
        self.viewer_image.format = mime.split("/")[1]
        self.viewer_image.value = data
        handle = item.handle
        rows = [("Prompt", handle.prompt), ("Model", handle.model_name)]
        if handle.base_model_id:
            rows.append(("Runs through", handle.base_model_id))
        rows += [("Seed", item.seed), ("Size", f"{image.width} × {image.height}"
                                       + (f" (shown at {width} × {height})" if width != image.width else "")),
                 ("Cost", item.cost_text or "—"), ("Job", handle.job_id), ("Asset", item.asset_id),
                 ("Made", datetime.fromtimestamp(handle.finished_at or handle.submitted_at).strftime(
                     "%Y-%m-%d %H:%M")),
                 ("Inputs", json.dumps({k: v for k, v in handle.inputs.items() if k != "prompt"},
                                       sort_keys=True))]
        cells = "".join(f'<tr><th style="text-align:left;padding:2px 12px 2px 0;vertical-align:top;color:#666;'
                        f'font-weight:normal">{html.escape(k)}</th><td style="text-align:left;padding:2px 0;'
                        f'word-break:break-word">{html.escape(str(v))}</td></tr>'
                        for k, v in rows)
        self.viewer_info.value = f'<table style="font-size:12px;line-height:1.45">{cells}</table>'
        self.viewer.layout.display = "flex"

    def show_large(self, handle: Generation, asset_id: str) -> None:
        """View by job and asset id (for code)."""
        self.view(next(i for i in self.items if i.handle is handle and i.asset_id == asset_id))

    def close_view(self) -> None:
        self.viewer.layout.display = "none"

    def magic_for(self, item: Item) -> str:
        """The exact `%%scenario` cell for this one image: its own seed, one image, the aspect as the panel
        sent it (`--aspect 16:9`, which the magic maps to the same width and height)."""
        aspect, mapped = self.aspects_sent.get(id(item.handle), (None, frozenset()))
        inputs = {k: v for k, v in item.handle.inputs.items() if k != "numOutputs" and k not in mapped}
        if item.seed is not None:
            inputs["seed"] = item.seed
        one = SimpleNamespace(model_id=item.handle.model_id, base_model_id=item.handle.base_model_id,
                              inputs=inputs, seed=item.seed, prompt=item.handle.prompt)
        text = magic_text(one)
        if aspect:
            header, _, prompt = text.partition("\n")
            magic, _, rest = header.partition(" ")
            model, _, options = rest.partition(" ")  # the model is an id: no space in it
            text = " ".join(filter(None, [magic, model, f"--aspect {aspect}", options])) + "\n" + prompt
        return text

    def show_magic(self, item: Item) -> str:
        """Show the image's cell in its tile, ready to select and copy (the tile widens to hold it)."""
        text = self.magic_for(item)
        code, tile = item.widgets["code"], item.widgets["tile"]
        if code.layout.display == "none" or not code.value:
            # the tile widens before the wide cell appears in it: the other order overflowed it for a moment
            tile.layout.width = f"{2 * TILE_BOX + 12}px"
            tile.layout.max_width = "100%"
            tile.layout.grid_column = "span 2"
            code.value = code_html(text, width=2 * TILE_BOX - 2)
            code.layout.display = None
        else:
            code.layout.display = "none"
            tile.layout.width = f"{TILE_BOX}px"
            tile.layout.grid_column = None
        return text

    def copy_as_magic(self, handle: Generation) -> str:
        """The `%%scenario` cell that reproduces a whole generation."""
        return magic_text(handle)

    def save_selected(self) -> list:
        """Save the selected images (PNG with metadata + JSON sidecar) to the folder; say so by the button."""
        picked: dict[int, tuple[Generation, list]] = {}
        for item in self.items:
            if item.selected and item.kind == "image":
                picked.setdefault(id(item.handle), (item.handle, []))[1].append(item.asset_id)
        if not picked:
            self.save_note.value = error_line("Click a tile to select it first")
            return []
        paths = []
        try:
            for handle, assets in picked.values():
                paths += handle.save(self.save_folder.value, only=assets)
        except ScenarioError as exc:
            self.save_note.value = error_line(str(exc))
            return paths
        count = sum(p.suffix == ".png" for p in paths)
        self.save_note.value = f"✓ Saved {count} image{'s' * (count != 1)} to " \
                               f"<code>{html.escape(self.save_folder.value)}</code>"
        return paths
