"""The small HTML pieces views are made of: a status line, an error line, tables, media, a generation's
`%%scenario` cell, a training set's strip and its captions. Plain HTML, no JavaScript: it renders anywhere."""

from __future__ import annotations

import base64
import html
from typing import Any

from ._prompts import prompt_key

EMBED_LIMIT = 8 * 1024 * 1024  # larger videos and models are named by path instead of embedded
TRAINING_THUMB = 96


def status_html(handle) -> str:
    """A small live status line with a progress bar (no JavaScript, so it renders anywhere)."""
    pct = int(round(handle.progress * 100))
    lines = handle.summary().splitlines()
    note = f"<br><small>{html.escape(lines[1])}</small>" if len(lines) > 1 else ""
    return (f'<div class="scenario-status"><progress value="{pct}" max="100" style="width:12em"></progress> '
            f"<code>{html.escape(lines[0])}</code>{note}</div>")


def error_html(error: Any, *, inline: bool = False) -> str:
    """The one line shown for a failed job or command: reason and hint, never a traceback (inline: beside a
    control, as the panel shows it)."""
    if inline:
        return f'<span style="color:#b00020">✗ {html.escape(str(error))}</span>'
    return f'<pre style="color:#b00020;white-space:pre-wrap">✗ {html.escape(str(error))}</pre>'


def table_bundle(headers: list, rows: list) -> dict:
    """A small table as text/plain and left-aligned, unwrapped text/html."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [headers] + cells)
    style = 'style="text-align:left;white-space:nowrap"'
    head = "".join(f"<th {style}>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td {style}>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return {"text/plain": text, "text/html": f"<table><tr>{head}</tr>{body}</table>"}


def media_html(handle) -> str:
    """Videos inline, other files as a download link (or their path when too large), text as text."""
    parts = [file_html(output.kind, output.mime_type, output.path) for output in handle.outputs
             if not output.is_image and not (output.kind == "text" and handle.text is not None)]  # text: below
    if handle.text is not None:
        parts.append(text_html(handle.text))
    return "".join(parts)


def file_html(kind: str, mime_type: str, path: Any) -> str:
    """One stored non-image file as what it is: a video player, a text, or (a 3D model, anything else) a
    download link; its path when it is too large to embed."""
    size = path.stat().st_size if path.is_file() else 0
    if kind == "text" or mime_type.startswith("text/"):
        return text_html(path.read_text(errors="replace")) if size else ""
    name = html.escape(path.name)
    if not size or size > EMBED_LIMIT:
        return f"<div>{html.escape(kind)}: <code>{html.escape(str(path))}</code></div>"
    uri = f"data:{mime_type};base64,{base64.b64encode(path.read_bytes()).decode()}"
    if kind == "video" or mime_type.startswith("video/"):
        return f'<video controls loop muted style="max-width:100%" src="{uri}"></video>'
    what = f"{kind} model" if kind == "3d" else kind
    return (f'<div>{html.escape(what)}: <a download="{name}" href="{uri}">download {name}</a> ({size / 1024:.0f} '
            f"KiB, stored at <code>{html.escape(str(path))}</code>)</div>")


def text_html(text: str) -> str:
    return f'<pre style="white-space:pre-wrap">{html.escape(text)}</pre>'


def image_html(data: dict) -> str:
    mime = next((k for k in data if k.startswith("image/")), None)
    if mime is None:
        return ""
    return (f"<code>{html.escape(data['text/plain'])}</code><br>"
            f'<img src="data:{mime};base64,{data[mime]}" style="max-width:100%">')


def magic_text(handle) -> str:
    """The `%%scenario` cell that reproduces a generation (used by the panel's "copy as %%scenario")."""
    parts = ["%%scenario", handle.model_id]
    prompt_name = getattr(handle, "prompt_name", None) or prompt_key(handle.inputs)
    for name, value in sorted(handle.inputs.items()):
        if name == prompt_name or (handle.base_model_id and name in ("modelId", "loras", "lorasScale")):
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


def training_strip(training, limit: int = 15) -> str:
    """A strip of small training-image thumbnails with their file names and captions."""
    cells = []
    for image in training.images[:limit]:
        uri = image.thumbnail(TRAINING_THUMB)
        picture = (f'<img src="{uri}" width="{TRAINING_THUMB}" style="display:block;border-radius:3px">' if uri else
                   f'<div style="width:{TRAINING_THUMB}px;height:{TRAINING_THUMB}px;background:#eee"></div>')
        caption = html.escape(image.caption or "(no caption)")
        cells.append(f'<figure style="margin:0;width:{TRAINING_THUMB}px;flex:none">{picture}'
                     f'<figcaption style="font-size:10px;line-height:1.2;word-wrap:break-word">'
                     f"<b>{html.escape(image.name)}</b><br>{caption}</figcaption></figure>")
    more = len(training.images) - limit
    if more > 0:
        cells.append(f'<div style="align-self:center;font-size:11px">+{more} more</div>')
    return f'<div style="display:flex;gap:6px;overflow-x:auto;padding-top:4px">{"".join(cells)}</div>'


def captions_html(captions: dict, thumbnails: dict) -> str:
    """Editable captions as a table: thumbnail, file name, caption."""
    rows = []
    for name, text in captions.items():
        uri = thumbnails.get(name)
        picture = f'<img src="{uri}" width="64">' if uri else ""
        rows.append(f'<tr><td>{picture}</td><td style="text-align:left;white-space:nowrap">{html.escape(name)}</td>'
                    f'<td style="text-align:left">{html.escape(text or "(no caption)")}</td></tr>')
    tip = ("<small>Change any caption (<code>captions['name.png'] = '...'</code>), then pass the table: "
           "<code>client.train(name, images, captions=captions)</code></small>")
    return ('<table><tr><th></th><th style="text-align:left">file</th><th style="text-align:left">caption</th></tr>'
            + "".join(rows) + "</table>" + tip)
