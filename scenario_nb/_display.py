"""How a generation looks in a notebook: light thumbnails, readable text, provenance in metadata.

Full-resolution outputs stay in the local file store; a saved notebook only carries one JPEG grid of
thumbnails (PNG when there is transparency), so it stays small and still reads well in JupyterLab,
Notebook 7, VS Code, GitHub's viewer and nbconvert. Videos play inline, 3D models and other files are a
download link, text models' answers are text. The front doors show generations only through here.
"""

from __future__ import annotations

import base64
import html
import io
import time
from typing import Any, Callable, Iterable, Optional

EMBED_LIMIT = 8 * 1024 * 1024  # larger videos and models are named by path instead of embedded

DEFAULT_THUMBNAIL_SIZE = 320  # a preview, light in a saved notebook (~15 KB); the full files stay in the store
GRID_COLUMNS = 4
GRID_MAX_WIDTH = 768  # several outputs side by side share this width (4 × 189 px), not 4 × 320
JPEG_QUALITY = 70


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


def _other_outputs_html(handle) -> str:
    """Videos inline, other files as a download link (or their path when too large), text as text."""
    parts = []
    for output in handle.outputs:
        if output.is_image or (output.kind == "text" and handle.text is not None):
            continue  # text answers are shown as text, below
        size = output.path.stat().st_size if output.path.is_file() else 0
        name = html.escape(output.path.name)
        if not size or size > EMBED_LIMIT:
            parts.append(f"<div>{html.escape(output.kind)}: <code>{html.escape(str(output.path))}</code></div>")
            continue
        uri = f"data:{output.mime_type};base64,{base64.b64encode(output.path.read_bytes()).decode()}"
        if output.kind == "video" or output.mime_type.startswith("video/"):
            parts.append(f'<video controls loop muted style="max-width:100%" src="{uri}"></video>')
        else:
            parts.append(f'<div>{html.escape(output.kind)} model: <a download="{name}" href="{uri}">download '
                         f"{name}</a> ({size / 1024:.0f} KiB, stored at <code>{html.escape(str(output.path))}"
                         f"</code>)</div>")
    if handle.text is not None:
        parts.append(f'<pre style="white-space:pre-wrap">{html.escape(handle.text)}</pre>')
    return "".join(parts)


def generation_bundle(handle, thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE) -> tuple[dict, dict]:
    """(data, metadata) for a Generation: text/plain always; thumbnails, videos, links and text once done."""
    data = {"text/plain": handle.summary() + (f"\n{handle.text}" if handle.ok and handle.text else "")}
    metadata: dict = {"scenario_nb": handle.provenance()}
    if not handle.done:
        data["text/html"] = status_html(handle)
        return data, metadata
    if handle.exception is not None:
        data["text/html"] = error_html(handle.exception)
        return data, metadata
    images = handle.images
    if images:
        raw, mime, width, height = thumbnail_grid(images, thumbnail_size)
        data[mime] = base64.b64encode(raw).decode()
        metadata[mime] = {"width": width, "height": height}
    others = _other_outputs_html(handle)
    if others:  # a renderer shows the richest type only: the HTML then carries the images too
        grid = f'<img src="data:{mime};base64,{data[mime]}" style="max-width:100%"><br>' if images else ""
        data["text/html"] = f"<code>{html.escape(handle.summary())}</code><br>{grid}{others}"
    return data, metadata


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


def _signature(handle) -> tuple:
    """What a view shows of a handle: when this is unchanged, the display is not sent again."""
    return (handle.status, round(handle.progress, 2), handle.done, handle.job_id, handle.note,
            str(handle.exception) if handle.exception else None)


def show_generations(handles: list, *, wait: bool, thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE,
                     after: Optional[Callable[[Any], None]] = None) -> None:
    """Show each generation in the running cell: live until done when waiting, else as a live widget.

    Waiting, the display is updated only when what it shows changed. Ctrl-C stops the waiting, never the
    jobs, and says which are still running and which are still queued here.
    """
    from IPython.display import display
    if not wait:
        for handle in handles:
            live_view(handle, thumbnail_size, after)
        return
    shown, seen = {}, {}
    try:  # the first draw too: a Ctrl-C while it is made ends the waiting like any later one
        for handle in handles:
            seen[id(handle)] = _signature(handle)  # what the bundle shows at least: read before it is made
            data, metadata = generation_bundle(handle, thumbnail_size)
            shown[id(handle)] = display(data, raw=True, metadata=metadata, display_id=True)
        pending = list(handles)
        while pending:
            time.sleep(0.1)
            for handle in list(pending):
                done = handle.done  # read before drawing: it may finish while the bundle is made, and then the
                signature = _signature(handle)  # bundle drawn may not show its outputs: one more round does
                if signature != seen[id(handle)]:
                    data, metadata = generation_bundle(handle, thumbnail_size)
                    shown[id(handle)].update(data, raw=True, metadata=metadata)
                    seen[id(handle)] = signature
                if done:
                    pending.remove(handle)
    except KeyboardInterrupt:
        print(interrupted_line(handles))
        return
    for handle in handles:
        if after is not None:
            after(handle)


def interrupted_line(handles: list) -> str:
    """What a Ctrl-C left behind: jobs still running (and charged) and requests still queued here."""
    running = [h.job_id for h in handles if not h.done and h.job_id]
    queued = [h for h in handles if not h.done and not h.job_id and h.status == "waiting"]
    unknown = [h for h in handles if not h.done and not h.job_id and h.status != "waiting"]
    parts = ["Stopped waiting (the jobs were not stopped)."]
    if running:
        parts.append(f"Still running on the server: {', '.join(running)}; re-attach with %scenario job ID.")
    if queued:
        parts.append(f"{len(queued)} request(s) still queued here behind the rate limit will be sent (and "
                     f"charged) when a slot frees; %scenario cancel all drops them.")
    if unknown:
        parts.append(f"{len(unknown)} request(s) sent but not yet answered are still followed; see "
                     f"%scenario status.")
    return " ".join(parts)


def live_view(handle, thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE,
              after: Optional[Callable[[Any], None]] = None) -> None:
    """One widget in this cell that the engine's thread updates in place, even while other cells run.

    When the job ends the display is also updated with the final bundle, so a saved notebook shows the
    result (or the error) without widget state.
    """
    import ipywidgets as widgets
    from IPython.display import display
    view = widgets.HTML(status_html(handle))
    shown = display(view, display_id=True)
    last: list = [None]

    def update(h) -> None:
        signature = _signature(h)
        if signature == last[0]:
            return
        last[0] = signature
        if not h.done:
            view.value = status_html(h)
            return
        data, metadata = generation_bundle(h, thumbnail_size)
        _end_live(view, shown, data, metadata)
        if after is not None:
            after(h)
    handle.on_update(update)


def _end_live(view, shown, data: dict, metadata: dict) -> None:
    """A live view's last state: the display shows the final bundle itself (so it is saved once, in the
    output); the widget, no longer shown, keeps no copy of its images in the saved widget state."""
    shown.update(data, raw=True, metadata=metadata)
    view.value = f"<code>{html.escape(data['text/plain'].splitlines()[0])}</code>"


def _image_html(data: dict) -> str:
    mime = next((k for k in data if k.startswith("image/")), None)
    if mime is None:
        return ""
    return (f"<code>{html.escape(data['text/plain'])}</code><br>"
            f'<img src="data:{mime};base64,{data[mime]}" style="max-width:100%">')


def asset_bundle(asset: dict, path, thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE) -> tuple[dict, dict]:
    """Any stored asset: a light JPEG thumbnail for an image, else a video or a link, with its metadata."""
    from PIL import Image
    meta = asset.get("metadata") or {}
    data: dict = {"text/plain": f"{asset.get('id')} · {asset.get('kind')} · {meta.get('prompt', '')}".rstrip(" ·")}
    metadata = {"scenario_nb": {"asset_id": asset.get("id"), "metadata": meta}}
    if str(asset.get("mimeType", "")).startswith("image/"):
        with Image.open(path) as image:
            image.load()
            raw, mime, width, height = thumbnail_grid([image], thumbnail_size)
        data[mime] = base64.b64encode(raw).decode()
        metadata[mime] = {"width": width, "height": height}
    return data, metadata


def magic_text(handle) -> str:
    """The `%%scenario` cell that reproduces a generation (used by the panel's "copy as %%scenario")."""
    from ._generation import prompt_key
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


# -- Trainings (added for the custom-model workbench) --------------------------------------------------------

TRAINING_THUMB = 96


def _training_strip(training, limit: int = 15) -> str:
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


def training_bundle(training) -> tuple[dict, dict]:
    """(data, metadata) for a Training: its stage, a progress bar, the ETA and cost, then the training set."""
    data = {"text/plain": training.summary()}
    metadata = {"scenario_nb": {"training": training.provenance()}}
    lines = training.summary().splitlines()
    pct = int(round(training.progress * 100))
    head = f"<b>{html.escape(training.name)}</b> <small>{html.escape(training.model_id)} · " \
           f"{html.escape(training.type)}</small>"
    bar = f'<progress value="{pct}" max="100" style="width:16em"></progress>'
    body = f"{bar} <code>{html.escape(' · '.join(training.state_words()))}</code>"
    if training.exception is not None and not training.ok:
        body += "<br>" + error_html(training.exception, inline=True)
    elif len(lines) > 1:
        body += f"<br><small>{html.escape(lines[1])}</small>"
    data["text/html"] = (f'<div class="scenario-training">{head}<br>{body}{_training_strip(training)}</div>')
    return data, metadata


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


def _training_signature(training) -> tuple:
    return (training.status, training.stage, round(training.progress, 2), training.position, training.done,
            training.note, None if training.remaining is None else int(training.remaining))


def show_training(training, *, wait: bool) -> None:
    """Show a training in the running cell: updated in place until it ends when waiting (Ctrl-C stops the
    waiting, never the training), else as a widget the engine's thread keeps current."""
    if not wait:
        import ipywidgets as widgets
        from IPython.display import display
        view = widgets.HTML(training_bundle(training)[0]["text/html"])
        shown = display(view, display_id=True)
        last: list = [None]

        def update(t) -> None:
            signature = _training_signature(t)
            if signature == last[0]:
                return
            last[0] = signature
            fresh, meta = training_bundle(t)
            if t.done:  # a saved notebook shows the outcome without widget state
                _end_live(view, shown, fresh, meta)
            else:
                view.value = fresh["text/html"]
        training.on_update(update)
        return
    if not _redraw_until_done(training, training_bundle, _training_signature, every=0.2):
        print(f"Stopped waiting (the training goes on on the server); %scenario training {training.model_id} "
              f"shows it again")


def _redraw_until_done(thing, bundle: Callable[[Any], tuple[dict, dict]], signature: Callable[[Any], tuple], *,
                       every: float) -> bool:
    """Show `thing` in the running cell and redraw it whenever its signature changes, until it is done.
    Returns False when Ctrl-C stopped the waiting (never the work: it goes on, and the history knows it)."""
    from IPython.display import display
    try:  # the first draw too: a Ctrl-C while it is made ends the waiting like any later one
        seen = signature(thing)  # read before the bundle is made: it may change meanwhile
        data, metadata = bundle(thing)
        shown = display(data, raw=True, metadata=metadata, display_id=True)
        while True:
            done = thing.done  # read before drawing: it may finish while the bundle is made
            now = signature(thing)
            if now != seen:
                data, metadata = bundle(thing)
                shown.update(data, raw=True, metadata=metadata)
                seen = now
            if done:
                return True
            time.sleep(every)
    except KeyboardInterrupt:
        return False


# -- Grid sheets -----------------------------------------------------------------------------------------------
# Labels sit in a light band outside the pictures, dark on light (contrast ~17:1), so they read on any image.
SHEET_BAND = (246, 246, 243)
SHEET_TEXT = (20, 20, 20)
SHEET_PENDING = (222, 222, 218)
SHEET_FAILED = (252, 228, 228)
SHEET_FAILED_TEXT = (150, 0, 0)
SHEET_GAP = 4
SHEET_PAD = 8
SHEET_MAX_WIDTH = 1000  # the tiles' width in all; the row labels' band comes on top
SHEET_TILE = 176  # a saved sheet of 3 × 3 tiles stays near 50 KB


def sheet_tile_size(columns: int) -> int:
    """A tile's side on the sheet: 176 px, smaller beyond five columns so the sheet stays light (~1000 px)."""
    return max(128, min(SHEET_TILE, SHEET_MAX_WIDTH // max(1, columns)))


def _font(size: int):
    """A scalable font when Pillow has one built in (10.1+), else its bitmap font (drawn scaled up)."""
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError):  # older Pillow, or no FreeType
        return None


def _text_size(draw, text: str, font, size: int) -> tuple[int, int]:
    if font is None:
        scale = max(1, size // 10)
        box = draw.textbbox((0, 0), text)
        return (box[2] - box[0]) * scale, (box[3] - box[1] + 3) * scale
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0], int(size * 1.25)


def _draw_text(image, xy: tuple[int, int], text: str, font, size: int, fill) -> None:
    from PIL import Image, ImageDraw
    if font is not None:
        ImageDraw.Draw(image).text(xy, text, font=font, fill=fill)
        return
    scale = max(1, size // 10)  # the bitmap font, drawn once and scaled up without blurring
    probe = ImageDraw.Draw(image)
    box = probe.textbbox((0, 0), text)
    stamp = Image.new("L", (int(box[2]) + 1, int(box[3]) + 3), 0)
    ImageDraw.Draw(stamp).text((0, 0), text, fill=255)
    stamp = stamp.resize((stamp.width * scale, stamp.height * scale), Image.Resampling.NEAREST)
    image.paste(Image.new("RGB", stamp.size, fill), xy, stamp)


def _wrap(draw, text: str, font, size: int, width: int, max_lines: int) -> list[str]:
    """Words on as many lines as fit `width` (at most `max_lines`; the last cut with an ellipsis)."""
    lines: list[str] = []
    for word in text.split() or [""]:
        if lines and _text_size(draw, f"{lines[-1]} {word}", font, size)[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += "…"
    out = []
    for line in lines:
        while line and _text_size(draw, line, font, size)[0] > width:
            line = line[:-2] + "…"
        out.append(line)
    return out


def render_sheet(cells: list, *, rows: list[str], columns: list[str], pages: list[str], corner: tuple[str, str],
                 tile: int = 256) -> tuple[Any, dict]:
    """A contact sheet: `cells` (image or None, status line, failed) page after page, row-major; column labels
    in a band above, row labels in a band on the left, page titles above each page; unfinished tiles drawn
    as placeholders with their status. Returns (PIL image, layout: every rectangle as [x, y, w, h])."""
    from PIL import Image, ImageDraw
    size = 20 if tile >= 192 else 16
    font, small = _font(size), _font(size - 4)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(probe, "Hg", font, size)[1]
    left_texts = list(rows) + list(corner)
    left = min(max(_text_size(probe, t, font, size)[0] for t in left_texts) + 2 * SHEET_PAD, 240)
    left = max(left, 60)
    col_lines = [_wrap(probe, c, font, size, tile - 2 * SHEET_PAD, 4) for c in columns]  # prompts need room
    top = max(len(lines) for lines in col_lines) * line_h + 2 * SHEET_PAD
    top = max(top, 2 * line_h + 2 * SHEET_PAD)  # the corner's two lines
    title = line_h + 2 * SHEET_PAD if any(pages) else 0
    page_h = title + top + len(rows) * (tile + SHEET_GAP)
    width = left + len(columns) * (tile + SHEET_GAP)
    sheet = Image.new("RGB", (width, page_h * len(pages)), SHEET_BAND)
    draw = ImageDraw.Draw(sheet)
    layout: dict = {"tiles": [], "row_labels": [], "column_labels": [], "page_titles": [], "bands": []}
    index = 0
    for p, page_title in enumerate(pages):
        y0 = p * page_h
        if title:
            _draw_text(sheet, (SHEET_PAD, y0 + SHEET_PAD), page_title, font, size, SHEET_TEXT)
            layout["page_titles"].append([0, y0, width, title])
        band_y = y0 + title
        layout["bands"] += [[0, band_y, width, top], [0, band_y + top, left, page_h - title - top]]
        for i, text in enumerate(corner):
            if text:
                cut = _wrap(probe, text, small, size - 4, left - 2 * SHEET_PAD, 1)[0]
                _draw_text(sheet, (SHEET_PAD, band_y + SHEET_PAD + i * line_h), cut, small, size - 4, SHEET_TEXT)
        for c, lines in enumerate(col_lines):
            x = left + c * (tile + SHEET_GAP)
            for n, line in enumerate(lines):
                _draw_text(sheet, (x + SHEET_PAD, band_y + SHEET_PAD + n * line_h), line, font, size, SHEET_TEXT)
            layout["column_labels"].append([x, band_y, tile, top])
        for r, text in enumerate(rows):
            y = band_y + top + r * (tile + SHEET_GAP)
            for n, line in enumerate(_wrap(probe, text, font, size, left - 2 * SHEET_PAD,
                                           max(1, (tile - 2 * SHEET_PAD) // line_h))):
                _draw_text(sheet, (SHEET_PAD, y + SHEET_PAD + n * line_h), line, font, size, SHEET_TEXT)
            layout["row_labels"].append([0, y, left, tile])
            for c in range(len(columns)):
                x = left + c * (tile + SHEET_GAP)
                image, status, failed = cells[index]
                index += 1
                layout["tiles"].append([x, y, tile, tile])
                if image is not None:
                    sheet.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
                    continue
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=SHEET_FAILED if failed else SHEET_PENDING)
                ink = SHEET_FAILED_TEXT if failed else SHEET_TEXT
                for n, line in enumerate(_wrap(probe, status, small, size - 4, tile - 2 * SHEET_PAD, 6)):
                    _draw_text(sheet, (x + SHEET_PAD, y + SHEET_PAD + n * line_h), line, small, size - 4, ink)
    return sheet, layout


def grid_bundle(grid, tile_size: Optional[int] = None) -> tuple[dict, dict]:
    """(data, metadata) for a Grid: one JPEG sheet, a text summary, and each tile's provenance in metadata."""
    image, layout = grid._render(tile_size)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    data = {"text/plain": grid.summary(), "image/jpeg": base64.b64encode(buf.getvalue()).decode()}
    metadata = {"image/jpeg": {"width": image.width, "height": image.height},
                "scenario_nb": {"grid": {"axes": {k: grid.labels(k) for k in grid.axes}, "rows": grid.rows,
                                         "columns": grid.columns, "pages": grid.pages, "layout": layout,
                                         "tiles": grid.provenance()}}}
    return data, metadata


def _grid_signature(grid) -> tuple:
    """What the sheet shows: each tile's status (not its progress, which the sheet does not draw)."""
    return tuple((t.status, t.done, t.job_id, str(t.exception) if t.exception else None) for t in grid.tiles)


def show_grid(grid, *, wait: bool, after: Optional[Callable[[Any], None]] = None) -> None:
    """Show a grid's sheet in the running cell, filling in as tiles finish.

    Waiting, the display is redrawn from this thread when a tile's status changed. Not waiting, a widget
    is redrawn from a drawing thread of its own (never the engine's: a sheet takes tens of ms), and the
    display gets the final sheet when every tile is done, so a saved notebook shows it without widget state.
    """
    if not wait:
        _live_grid(grid, after)
        return
    if not _redraw_until_done(grid, grid_bundle, _grid_signature, every=0.1):
        print(interrupted_line(grid.tiles))
        return
    if after is not None:
        after(grid)


def _live_grid(grid, after: Optional[Callable[[Any], None]]) -> None:
    import threading

    import ipywidgets as widgets
    from IPython.display import display
    data, metadata = grid_bundle(grid)
    view = widgets.HTML(_image_html(data))
    shown = display(view, display_id=True)
    dirty = threading.Event()

    def draw() -> None:
        seen = _grid_signature(grid)
        while True:
            dirty.wait()
            dirty.clear()
            finished = grid.done
            signature = _grid_signature(grid)
            if signature == seen and not finished:
                continue
            seen = signature
            data, metadata = grid_bundle(grid)
            if finished:
                _end_live(view, shown, data, metadata)
                if after is not None:
                    after(grid)
                return
            view.value = _image_html(data)
            time.sleep(0.2)  # at most five redraws a second, however many tiles finish

    threading.Thread(target=draw, name="scenario-grid-view", daemon=True).start()
    grid.on_update(lambda g: dirty.set())
