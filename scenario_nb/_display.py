"""How a generation, a training or a grid looks in a notebook, live while it runs: light thumbnails,
readable text, provenance in metadata.

Full-resolution outputs stay in the local file store; a saved notebook only carries one JPEG grid of
thumbnails (PNG when there is transparency), so it stays small and still reads well in JupyterLab,
Notebook 7, VS Code, GitHub's viewer and nbconvert. Videos play inline, 3D models and other files are a
download link, text models' answers are text. The front doors show generations only through here; the pieces
are in `_thumbnails`, `_html` and `_sheet`.
"""

from __future__ import annotations

import base64
import html
import io
import time
from typing import Any, Callable, Optional

from ._html import error_html, file_html, image_html, media_html, status_html, training_strip
from ._late_outputs import LateOutputs, late_outputs
from ._sheet import SHEET_FAILED as SHEET_FAILED  # the sheet's names, still importable from here
from ._sheet import SHEET_PENDING as SHEET_PENDING
from ._sheet import render_sheet as render_sheet
from ._thumbnails import DEFAULT_THUMBNAIL_SIZE, JPEG_QUALITY, thumbnail_grid


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
    others = media_html(handle)
    if others:  # a renderer shows the richest type only: the HTML then carries the images too
        grid = f'<img src="data:{mime};base64,{data[mime]}" style="max-width:100%"><br>' if images else ""
        data["text/html"] = f"<code>{html.escape(handle.summary())}</code><br>{grid}{others}"
    return data, metadata


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
    """One widget in this cell that the engine's thread updates in place, even while other cells run."""
    _live_widget(handle, _signature, status_html, lambda h: generation_bundle(h, thumbnail_size), after)


def _live_widget(thing, signature: Callable[[Any], tuple], running_html: Callable[[Any], str],
                 final_bundle: Callable[[Any], tuple[dict, dict]], after: Optional[Callable[[Any], None]]) -> None:
    """A widget in this cell that `thing`'s updates redraw when its signature changed. When it is done the
    display also gets the final bundle, so a saved notebook shows the outcome (or the error) without widget
    state."""
    from . import _light_widgets as widgets
    from IPython.display import display
    view = widgets.HTML(running_html(thing))
    shown = display(view, display_id=True)
    late = late_outputs()
    last: list = [None]

    def update(t) -> None:
        now = signature(t)
        if now == last[0]:
            return
        last[0] = now
        if not t.done:
            view.value = running_html(t)
            return
        data, metadata = final_bundle(t)
        _end_live(view, shown, data, metadata, late)
        if after is not None:
            after(t)
    thing.on_update(update)


def _end_live(view, shown, data: dict, metadata: dict, late: Optional[LateOutputs]) -> None:
    """A live view's last state: the display shows the final bundle itself (so it is saved once, in the
    output); the widget, no longer shown, keeps no copy of its images in the saved widget state. Sent again
    under the next cell when no cell runs now (`_late_outputs`)."""
    value = f"<code>{html.escape(data['text/plain'].splitlines()[0])}</code>"

    def show() -> None:
        shown.update(data, raw=True, metadata=metadata)
        view.value = value

    def show_again() -> None:
        shown.update(data, raw=True, metadata=metadata)
        view.send_state("value")

    if late is None:
        show()
    else:
        late.send(show, show_again)


def asset_bundle(asset: dict, path, thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE) -> tuple[dict, dict]:
    """Any stored asset as what it is: a light JPEG thumbnail for an image, a player for a video, the text of a
    text, a download link for a 3D model or another file; with its metadata."""
    from PIL import Image
    meta = asset.get("metadata") or {}
    data: dict = {"text/plain": f"{asset.get('id')} · {asset.get('kind')} · {meta.get('prompt', '')}".rstrip(" ·")}
    metadata = {"scenario_nb": {"asset_id": asset.get("id"), "metadata": meta}}
    mime_type, kind = str(asset.get("mimeType", "")), str(asset.get("kind") or "")
    if mime_type.startswith("image/"):
        with Image.open(path) as image:
            image.load()
            raw, mime, width, height = thumbnail_grid([image], thumbnail_size)
        data[mime] = base64.b64encode(raw).decode()
        metadata[mime] = {"width": width, "height": height}
    elif kind == "text" or mime_type.startswith("text/"):  # the text itself, not a line about it
        data["text/plain"] = path.read_text(errors="replace")
        data["text/html"] = file_html(kind, mime_type, path)
    else:  # a video plays; a 3D model or another file is a download link (its path when large)
        data["text/html"] = f"<code>{html.escape(data['text/plain'])}</code><br>" + file_html(kind, mime_type, path)
    return data, metadata


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
    data["text/html"] = (f'<div class="scenario-training">{head}<br>{body}{training_strip(training)}</div>')
    return data, metadata


def _training_signature(training) -> tuple:
    return (training.status, training.stage, round(training.progress, 2), training.position, training.done,
            training.note, None if training.remaining is None else int(training.remaining))


def show_training(training, *, wait: bool) -> None:
    """Show a training in the running cell: updated in place until it ends when waiting (Ctrl-C stops the
    waiting, never the training), else as a widget the engine's thread keeps current."""
    if not wait:
        _live_widget(training, _training_signature, lambda t: training_bundle(t)[0]["text/html"],
                     lambda t: training_bundle(t), None)
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

    from . import _light_widgets as widgets
    from IPython.display import display
    data, metadata = grid_bundle(grid)
    view = widgets.HTML(image_html(data))
    shown = display(view, display_id=True)
    late = late_outputs()
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
                _end_live(view, shown, data, metadata, late)
                if after is not None:
                    after(grid)
                return
            view.value = image_html(data)
            time.sleep(0.2)  # at most five redraws a second, however many tiles finish

    threading.Thread(target=draw, name="scenario-grid-view", daemon=True).start()
    grid.on_update(lambda g: dirty.set())
