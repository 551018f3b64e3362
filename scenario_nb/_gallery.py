"""The panel's gallery: fixed-size tiles that keep each image's aspect ratio, and a static HTML snapshot.

Tiles are built from core ipywidgets only (no custom JavaScript), so they work wherever ipywidgets does.
The snapshot is plain HTML with inline styles and `data:` images: it is what GitHub, nbviewer and
nbconvert show for the panel's output, where no widget can be drawn.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Any, Optional

from . import _light_widgets as w

TILE = 200          # the square every thumbnail fits in (never upscaled past its own size)
TILE_BOX = 236      # a tile's outer width: room for the thumbnail, two lines of caption and two buttons
TILE_INNER = TILE_BOX - 14  # inside its padding and border
SNAPSHOT_TILES = 12  # newest tiles kept in the saved snapshot (a notebook stays light)
ACCENT = "#2f6fde"


@dataclass
class Item:
    """One output in the gallery: an image (with its thumbnail) or a plain tile for other kinds."""

    handle: Any
    index: int
    asset_id: str
    kind: str = "image"
    thumb: bytes = b""
    mime: str = "image/jpeg"
    width: int = 0
    height: int = 0
    path: str = ""
    text: str = ""
    selected: bool = False
    widgets: dict = field(default_factory=dict, repr=False)

    @property
    def seed(self) -> Any:
        seeds = self.handle.seeds
        return seeds[self.index] if self.index < len(seeds) and seeds[self.index] is not None else self.handle.seed

    @property
    def cost_text(self) -> str:
        cost = self.handle.cost
        if cost is None:
            return ""
        count = max(1, len(self.handle.asset_ids))
        return f"{cost:g} CU" if count == 1 else f"{cost:g} CU for {count}"


def caption_html(item: Item, width: int = TILE_INNER) -> str:
    """Prompt on one ellipsized line (full prompt on hover), then model · seed · cost, tightly spaced."""
    prompt = item.handle.prompt or "(no prompt)"
    facts = []
    if item.seed is not None:
        facts.append(f"seed {item.seed}")
    if item.cost_text:
        facts.append(item.cost_text)
    model = item.handle.model_name
    line = "white-space:nowrap;overflow:hidden;text-overflow:ellipsis"
    return (f'<div style="width:{width}px;line-height:1.35;font-size:12px;padding-top:4px">'
            f'<div class="scenario-prompt" title="{html.escape(prompt)}" style="{line}">{html.escape(prompt)}</div>'
            f'<div title="{html.escape(model)}" style="{line};color:#444">{html.escape(model)}</div>'
            f'<div class="scenario-facts" style="{line};color:#777">'
            f'{" · ".join(html.escape(str(f)) for f in facts)}</div></div>')


def code_html(text: str, width: Optional[int] = None) -> str:
    """The exact cell, selectable in one click (user-select: all), wrapped to the tile."""
    size = f"width:{width}px;max-width:100%;" if width else ""  # a narrow screen: the box shrinks, lines wrap
    # lines wrap between words ("--set" stays whole); a word longer than the box wraps inside it
    word = '<span style="display:inline-block;max-width:100%;overflow-wrap:anywhere">{}</span>'
    body = "\n".join(" ".join(word.format(html.escape(t)) for t in line.split(" ")) for line in text.split("\n"))
    return (f'<div style="{size}line-height:1.3;font-size:11px;padding-top:4px">'
            '<div style="color:#666">Select, copy, paste into a cell:</div>'
            '<pre class="scenario-magic" style="user-select:all;-webkit-user-select:all;white-space:pre-wrap;'
            'overflow-wrap:anywhere;max-width:100%;box-sizing:border-box;margin:2px 0 0;padding:6px;'
            'background:#f4f5f7;border:1px solid #dde;'
            f'border-radius:4px;font-size:11px;line-height:1.35">{body}</pre></div>')


def image_area(item: Item, overlay: w.Button) -> w.GridBox:
    """The thumbnail centred in a TILE square, under a transparent button that makes the tile clickable."""
    image = w.Image(value=item.thumb, format=item.mime.split("/")[1], width=str(item.width),
                    height=str(item.height),
                    layout=w.Layout(grid_area="1 / 1 / 2 / 2", object_fit="contain", max_width=f"{TILE}px",
                                    max_height=f"{TILE}px"))
    overlay.layout = w.Layout(grid_area="1 / 1 / 2 / 2", width=f"{TILE_INNER}px", height=f"{TILE}px", margin="0")
    return w.GridBox([image, overlay], layout=w.Layout(
        grid_template_columns=f"{TILE_INNER}px", grid_template_rows=f"{TILE}px", justify_items="center",
        align_items="center", width=f"{TILE_INNER}px", height=f"{TILE}px", overflow="hidden"))


KIND_WORDS = {"video": "🎬 video", "3d": "🧊 3D model", "text": "📝 text", "audio": "🔊 audio"}


def other_body(item: Item) -> str:
    """What a tile shows for an output that is not an image: its kind, and the text or where the file is."""
    words = html.escape(KIND_WORDS.get(item.kind, item.kind))
    if item.text:
        return (f'<b>{words}</b><div style="margin-top:6px;font-size:12px;line-height:1.35;text-align:left;'
                f'overflow:hidden;max-height:{TILE - 40}px">{html.escape(item.text)}</div>')
    name = item.path.rsplit("/", 1)[-1] if item.path else item.asset_id
    return (f'<b>{words}</b><div title="{html.escape(item.path)}" style="margin-top:6px;font-size:11px;'
            f'color:#666;word-break:break-all">saved as {html.escape(name)}</div>')


def other_area(item: Item) -> w.HTML:
    """A plain tile for outputs that are not images (video, 3D, text): the kind, the text or the file."""
    return w.HTML(f'<div style="width:{TILE_INNER}px;height:{TILE}px;box-sizing:border-box;padding:10px;'
                  f'display:flex;flex-direction:column;align-items:center;justify-content:center;'
                  f'background:#eef0f3;line-height:1.5">{other_body(item)}</div>', layout=w.Layout(margin="0"))


def snapshot_html(items: list[Item], total: int) -> str:
    """The gallery as static HTML (inline styles, `data:` thumbnails) for renders without widgets."""
    tiles = []
    for item in items[:SNAPSHOT_TILES]:
        if item.kind == "image" and item.thumb:
            data = base64.b64encode(item.thumb).decode()
            body = (f'<img src="data:{item.mime};base64,{data}" width="{item.width}" height="{item.height}" '
                    f'alt="{html.escape(item.handle.prompt)}" style="max-width:{TILE}px;max-height:{TILE}px">')
        else:
            body = f'<div style="padding:10px;text-align:center">{other_body(item)}</div>'
        tiles.append(f'<div style="width:{TILE_INNER}px;margin:0 12px 12px 0">'
                     f'<div style="width:{TILE_INNER}px;height:{TILE}px;display:flex;align-items:center;'
                     f'justify-content:center;background:#f4f5f7">{body}</div>{caption_html(item)}</div>')
    more = f" (newest {SNAPSHOT_TILES} shown)" if total > SNAPSHOT_TILES else ""
    return (f'<div class="scenario-gallery-snapshot"><div style="margin-bottom:6px"><b>Scenario gallery</b> · '
            f'{total} image{"s" * (total != 1)}, newest first{more}</div>'
            f'<div style="display:flex;flex-wrap:wrap">{"".join(tiles)}</div></div>')
