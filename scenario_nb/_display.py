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

DEFAULT_THUMBNAIL_SIZE = 512
GRID_COLUMNS = 4


def thumbnail_grid(images: Iterable, size: int = DEFAULT_THUMBNAIL_SIZE, gap: int = 4) -> tuple[bytes, str, int, int]:
    """One image holding every thumbnail (longest side of each ≤ size): (bytes, mime, width, height)."""
    from PIL import Image
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
    grid.convert("RGB").save(buf, format="JPEG", quality=80, optimize=True)
    return buf.getvalue(), "image/jpeg", width, height


def _other_outputs_html(handle) -> str:
    """Videos inline, other files as a download link (or their path when too large), text as text."""
    parts = []
    for output in handle.outputs:
        if output.is_image:
            continue
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
    for handle in handles:
        data, metadata = generation_bundle(handle, thumbnail_size)
        shown[id(handle)] = display(data, raw=True, metadata=metadata, display_id=True)
        seen[id(handle)] = _signature(handle)
    try:
        pending = list(handles)
        while pending:
            time.sleep(0.1)
            for handle in list(pending):
                signature = _signature(handle)  # read before drawing: it may finish while the bundle is made
                if signature != seen[id(handle)]:
                    data, metadata = generation_bundle(handle, thumbnail_size)
                    shown[id(handle)].update(data, raw=True, metadata=metadata)
                    seen[id(handle)] = signature
                if handle.done:
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
        view.value = data.get("text/html") or _image_html(data) or html.escape(data["text/plain"])
        data["application/vnd.jupyter.widget-view+json"] = {
            "version_major": 2, "version_minor": 0, "model_id": view.model_id}
        shown.update(data, raw=True, metadata=metadata)
        if after is not None:
            after(h)
    handle.on_update(update)


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
    parts = ["%%scenario", handle.model_id]
    for name, value in sorted(handle.inputs.items()):
        if name == "prompt" or (handle.base_model_id and name in ("modelId", "loras", "lorasScale")):
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
    state = [training.stage_words()]
    if training.stage == "running-train" and not training.done:
        state.append(f"{pct}%")
    left = training.remaining
    if left is not None:
        from ._training import eta_words
        state.append(f"ETA {eta_words(left)}")
    if training.cost is not None:
        state.append(f"{training.cost:g} CU")
    bar = f'<progress value="{pct}" max="100" style="width:16em"></progress>'
    body = f"{bar} <code>{html.escape(' · '.join(state))}</code>"
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
    from IPython.display import display
    data, metadata = training_bundle(training)
    if not wait:
        import ipywidgets as widgets
        view = widgets.HTML(data["text/html"])
        shown = display(view, display_id=True)
        last: list = [None]

        def update(t) -> None:
            signature = _training_signature(t)
            if signature == last[0]:
                return
            last[0] = signature
            fresh, meta = training_bundle(t)
            view.value = fresh["text/html"]
            if t.done:  # a saved notebook shows the outcome without widget state
                fresh["application/vnd.jupyter.widget-view+json"] = {
                    "version_major": 2, "version_minor": 0, "model_id": view.model_id}
                shown.update(fresh, raw=True, metadata=meta)
        training.on_update(update)
        return
    shown = display(data, raw=True, metadata=metadata, display_id=True)
    seen = _training_signature(training)
    try:
        while True:
            done = training.done
            signature = _training_signature(training)
            if signature != seen:
                data, metadata = training_bundle(training)
                shown.update(data, raw=True, metadata=metadata)
                seen = signature
            if done:
                return
            time.sleep(0.2)
    except KeyboardInterrupt:
        print(f"Stopped waiting (the training goes on on the server); %scenario training {training.model_id} "
              f"shows it again")
