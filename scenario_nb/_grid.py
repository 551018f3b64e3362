"""`grid()`: one prompt across seeds, models, prompts or any model input, as a labelled sheet of live tiles.

Every tile is its own job, all sent at once (the engine holds what the account's parallel limit refuses and
sends it as slots free). A tile identical to a request already sent from this machine is that request again
(`client.previous`, the magic's re-run rule), so re-running a grid pays only for tiles never paid for. The
sheet is one light JPEG with the row and column labels in a band outside the pictures; full-resolution tiles
stay in the file store.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Union

from ._errors import InputError, StorageError
from ._generation import Generation, call_safely, wait_all
from ._history import History
from ._models import Model, coerce_value, typed_number
from ._thumbnails import shrink

if TYPE_CHECKING:
    from PIL.Image import Image

    from ._client import ScenarioClient

MAX_AXES = 3
SPECIAL_AXES = ("seed", "model", "prompt")
SEND_THREADS = 8  # tiles with different inputs are sent side by side (the engine has four senders)


def grid(prompt: str, *, model: Union[str, Model, None] = None, vary: Mapping[str, Iterable[Any]],
         client: Optional["ScenarioClient"] = None, reuse: bool = True, max_cost: Optional[float] = None,
         **inputs: Any) -> "Grid":
    """Generate one tile per combination of the `vary` axes and return a live `Grid` at once.

    `vary` maps an axis to its values: "seed", "model" (names or ids), "prompt", or any input of the model
    (e.g. "lorasScale": [0.4, 0.7, 1.0]). The first axis is the rows, the second the columns (a single
    axis: the columns), a third the pages. `model` is every tile's model unless a "model" axis varies it;
    `inputs` are fixed model inputs for every tile. With `reuse`, a tile identical to a request already
    sent from this machine is shown from it, not paid again. `max_cost` (CU): the new tiles are priced
    first (dry runs) and the grid is refused, nothing sent, when they would cost more.
    """
    if client is None:
        from ._session import get_session
        session = get_session()  # the shared client behind the magics and the panel
        client = session.client
        if model is None and "model" not in (vary or {}):
            model = session.current_model or None
    plan = GridPlan(client, prompt, model=model, vary=vary, reuse=reuse, inputs=inputs)
    if max_cost is not None and plan.fresh:
        total = plan.estimate()
        if total > max_cost:
            raise InputError(f"refused: the {len(plan.fresh)} new tile(s) are estimated at {total:g} CU, over "
                             f"max_cost {max_cost:g}; nothing was sent")
    return plan.start()


class _Cell:
    """One tile of the plan: where it sits, its axis values, and the request it makes."""

    def __init__(self, index: int, page: int, row: int, col: int, values: dict, model: Model, prompt: str,
                 inputs: dict, body: dict) -> None:
        self.index, self.page, self.row, self.col = index, page, row, col
        self.values, self.model, self.prompt, self.inputs, self.body = values, model, prompt, inputs, body
        self.key = History.request_key(model.id, prompt, body)


class GridPlan:
    """A grid resolved and validated locally, with the tiles already paid for found: nothing sent yet.

    The magic prices it (`estimate`) and asks before `start`; `grid()` does the same with `max_cost`.
    """

    def __init__(self, client: "ScenarioClient", prompt: str, *, model: Union[str, Model, None],
                 vary: Mapping[str, Iterable[Any]], reuse: bool = True, inputs: Optional[dict] = None,
                 source: str = "grid", inputs_by_model: Optional[Mapping[str, dict]] = None) -> None:
        """`inputs_by_model` (model id: inputs) replaces `inputs` for the tiles of those models: the magic maps
        `--aspect`, `-n`, `--seed` and `--set` for each model of a model axis, as each takes them."""
        self.client, self.source = client, source
        inputs = dict(inputs or {})
        self._inputs_by_model = {k: dict(v) for k, v in (inputs_by_model or {}).items()}
        every_input = set(inputs).union(*self._inputs_by_model.values())
        if not isinstance(vary, Mapping) or not vary:
            raise InputError("vary: give at least one axis, e.g. vary={'seed': [1, 2, 3]}")
        if len(vary) > MAX_AXES:
            raise InputError(f"vary: at most {MAX_AXES} axes (rows, columns, pages), not {len(vary)} "
                             f"({', '.join(map(str, vary))})")
        clash = sorted(set(vary) & every_input) if isinstance(vary, Mapping) else []
        if clash:
            raise InputError(f"vary: {clash[0]} is both an axis and a fixed input; keep one")
        models = {}
        raw_models = list(vary["model"]) if "model" in vary and _is_list(vary["model"]) else []
        for value in raw_models:
            if not isinstance(value, (str, Model)) or (isinstance(value, str) and not value.strip()):
                raise InputError(f"vary model: {value!r} is not a model name or id")
            found = value if isinstance(value, Model) else client.find_model(value)
            models[id(value)] = found
        default = None
        if "model" not in vary:
            if model is None:
                raise InputError("no model given: grid(prompt, model=...) or a 'model' axis in vary")
            default = model if isinstance(model, Model) else client.find_model(model)
        self.axes: dict[str, list] = {}
        for name, values in vary.items():
            self.axes[name] = self._axis(str(name), values, models)
        tile_models = self.axes.get("model") or [default]
        scaled = "lorasScale" in self.axes or "lorasScale" in every_input
        runnables = {m.id: client.route(m, scaled=scaled and not m.runnable)[0] for m in tile_models}
        for name in self.axes:
            if name not in SPECIAL_AXES:
                for m in tile_models:
                    self._check_input(name, runnables[m.id], m)
        names = list(self.axes)
        self.rows: Optional[str] = names[0] if len(names) >= 2 else None
        self.columns: str = names[1] if len(names) >= 2 else names[0]
        self.pages: Optional[str] = names[2] if len(names) == 3 else None
        self.cells: list[_Cell] = []
        for page in range(len(self.axes[self.pages]) if self.pages else 1):
            for row in range(len(self.axes[self.rows]) if self.rows else 1):
                for col in range(len(self.axes[self.columns])):
                    values = {self.columns: self.axes[self.columns][col]}
                    if self.rows:
                        values[self.rows] = self.axes[self.rows][row]
                    if self.pages:
                        values[self.pages] = self.axes[self.pages][page]
                    values = {n: values[n] for n in names}  # in the axes' order
                    self.cells.append(self._cell(len(self.cells), page, row, col, values, default, prompt,
                                                 inputs, runnables))
        # One request per distinct body: identical tiles (e.g. a scale on a model without a LoRA) share a job.
        self.handles: dict[str, Optional[Generation]] = {}
        for cell in self.cells:
            if cell.key not in self.handles:
                self.handles[cell.key] = client.previous(cell.model, cell.body) if reuse else None
        self.reused = [k for k, h in self.handles.items() if h is not None]
        self.fresh = [k for k, h in self.handles.items() if h is None]

    # -- Axes ----------------------------------------------------------------------------------------
    def _axis(self, name: str, values: Any, models: dict) -> list:
        if not _is_list(values):
            raise InputError(f"vary {name}: give a list of values, e.g. {{{name!r}: [..., ...]}}")
        values = list(values)
        if not values:
            raise InputError(f"vary {name}: the axis is empty; give at least one value")
        out: list
        if name == "seed":
            out = [_int(name, v) for v in values]
        elif name == "model":
            out = [models[id(v)] for v in values]
        elif name == "prompt":
            out = [str(v).strip() for v in values]
            if not all(out):
                raise InputError("vary prompt: an empty prompt; write what to generate in each")
        else:
            out = values
        labels = [_label(v) for v in out]
        seen = {_key(v) for v in out}
        if len(seen) != len(out):
            dup = next(label for i, label in enumerate(labels) if labels.index(label) != i)
            raise InputError(f"vary {name}: {dup} appears twice; give each value once (nothing was sent)")
        return out

    def _check_input(self, name: str, runnable: Model, model: Model) -> None:
        if runnable.input(name) is None:
            takes = ", ".join(i.name for i in runnable.inputs if i.name != "prompt")
            raise InputError(f"vary {name}: not an axis ({', '.join(SPECIAL_AXES)}) nor an input of "
                             f"{model.name}" + (f" (it takes: {takes})" if takes else ""))

    def _cell(self, index: int, page: int, row: int, col: int, values: dict, default: Optional[Model],
              prompt: str, inputs: dict, runnables: dict) -> _Cell:
        model = values.get("model", default)
        assert model is not None
        runnable = runnables[model.id]
        text = values.get("prompt", prompt)
        tile_inputs = dict(self._inputs_by_model.get(model.id, inputs))
        for name, value in values.items():
            if name in ("model", "prompt"):
                continue
            if name == "lorasScale" and model.runnable and not tile_inputs.get("loras"):
                continue  # no LoRA on this tile: the scale means nothing (the tile is shared, not paid twice)
            spec = runnable.input(name)
            if spec is not None and isinstance(value, str) and spec.type != "string":
                value = coerce_value(spec, value)
            elif spec is not None and spec.type == "number" and _is_number(value):
                value = typed_number(spec, value)  # as `--set` types it: the same request either way
            if spec is not None and spec.is_array and not isinstance(value, (list, tuple)):
                value = [value]
            tile_inputs[name] = value
        if "lorasScale" in tile_inputs and model.runnable and not tile_inputs.get("loras"):
            tile_inputs.pop("lorasScale")
        _, _, body = self.client.prepare(model, text, **tile_inputs)
        return _Cell(index, page, row, col, values, model, text, tile_inputs, body)

    # -- Cost and sending ----------------------------------------------------------------------------
    def _first(self, key: str) -> _Cell:
        return next(c for c in self.cells if c.key == key)

    def estimate(self) -> float:
        """CU the new tiles would cost (dry runs side by side; nothing created or spent)."""
        cells = [self._first(k) for k in self.fresh]
        if not cells:
            return 0.0
        with ThreadPoolExecutor(min(SEND_THREADS, len(cells))) as pool:
            costs = pool.map(lambda c: self.client.estimate(c.model, c.prompt, **c.inputs).creative_units, cells)
            return float(sum(costs))

    def start(self) -> "Grid":
        """Send every new tile at once (one batch per model and inputs, batches side by side); the live Grid."""
        groups: dict[tuple, list[_Cell]] = {}
        for key in self.fresh:
            cell = self._first(key)
            groups.setdefault((cell.model.id, json.dumps(cell.inputs, sort_keys=True, default=str)), []).append(cell)

        def send(cells: list[_Cell]) -> list[Generation]:
            return self.client.generate_many(cells[0].model, [c.prompt for c in cells], source=self.source,
                                             **cells[0].inputs)

        if groups:
            with ThreadPoolExecutor(min(SEND_THREADS, len(groups))) as pool:
                for cells, sent in zip(groups.values(), pool.map(send, groups.values()), strict=True):
                    for cell, handle in zip(cells, sent, strict=True):
                        self.handles[cell.key] = handle
        tiles = [self.handles[c.key] for c in self.cells]
        assert all(t is not None for t in tiles)
        return Grid(self, [t for t in tiles if t is not None], reused=len(self.reused))


class Grid:
    """A live grid of generations: `axes`, `tiles` (row-major, page after page), `wait()`, `save()`,
    `pick(row, col)`, and a sheet that fills in as tiles finish. The engine keeps every tile current."""

    def __init__(self, plan: GridPlan, tiles: list[Generation], *, reused: int = 0) -> None:
        self.axes: dict[str, list] = dict(plan.axes)
        self.rows, self.columns, self.pages = plan.rows, plan.columns, plan.pages
        self.tiles = tiles
        self.reused = reused  # distinct requests shown from earlier ones, not paid again
        self._cells = plan.cells
        self._lock = threading.Lock()
        self._callbacks: list[Callable[["Grid"], None]] = []
        self._thumbs: dict[tuple, "Image"] = {}
        for tile in {id(t): t for t in tiles}.values():
            tile.on_update(self._tile_changed)

    # -- What users read -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """(pages, rows, columns)."""
        return (len(self.axes[self.pages]) if self.pages else 1, len(self.axes[self.rows]) if self.rows else 1,
                len(self.axes[self.columns]))

    @property
    def done(self) -> bool:
        return all(t.done for t in self.tiles)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tiles)

    def values(self, row: int, col: int, page: int = 0) -> dict:
        """The axis values of one tile."""
        return dict(self._cells[self._index(row, col, page)].values)

    def labels(self, axis: str) -> list[str]:
        """How an axis's values are written on the sheet."""
        return [_label(v) for v in self.axes[axis]]

    def __repr__(self) -> str:
        pages, rows, cols = self.shape
        finished = sum(t.done for t in self.tiles)
        return f"<Grid {rows}×{cols}" + (f"×{pages}" if self.pages else "") + f" {finished}/{len(self.tiles)} done>"

    def summary(self) -> str:
        """A few lines: the layout, how many tiles are done, failed or reused, and each failure's reason."""
        pages, rows, cols = self.shape
        layout = [f"rows: {self.rows}" if self.rows else "", f"columns: {self.columns}",
                  f"pages: {self.pages}" if self.pages else ""]
        counts = {"done": sum(t.ok for t in self.tiles), "failed": sum(t.done and not t.ok for t in self.tiles)}
        running = len(self.tiles) - counts["done"] - counts["failed"]
        shape = f"{rows} × {cols}" + (f" × {pages} pages" if self.pages else "")
        text = (f"Grid {shape} ({', '.join(p for p in layout if p)}): {counts['done']} of {len(self.tiles)} tiles "
                f"done" + (f", {counts['failed']} failed" if counts["failed"] else "") +
                (f", {running} running" if running else "") +
                (f"; {self.reused} shown from earlier requests, not paid again" if self.reused else ""))
        for cell, tile in zip(self._cells, self.tiles, strict=True):
            if tile.done and not tile.ok:
                where = ", ".join(f"{k} {_label(v)}" for k, v in cell.values.items())
                text += f"\n  {where}: {_tile_status(tile)} ({tile.job_id or 'no job was created'})"
        return text

    def provenance(self) -> list[dict]:
        """Per tile: where it sits, its axis values, and how it was made (job, model, seed, inputs, files)."""
        out = []
        for cell, tile in zip(self._cells, self.tiles, strict=True):
            out.append({"row": cell.row, "col": cell.col, "page": cell.page,
                        "values": {k: _json_value(v) for k, v in cell.values.items()},
                        "labels": {k: _label(v) for k, v in cell.values.items()},
                        "job_id": tile.job_id, "model_id": tile.model_id, "model_name": tile.model_name,
                        "base_model_id": tile.base_model_id, "prompt": tile.prompt, "seed": tile.seed,
                        "inputs": tile.inputs, "status": tile.status, "ok": tile.ok,
                        "files": [str(p) for p in tile.files]})
        return out

    # -- What users do -----------------------------------------------------------------------------------
    def pick(self, row: int, col: int, page: int = 0) -> Generation:
        """That tile's Generation (to save it, or re-run its request at full settings)."""
        return self.tiles[self._index(row, col, page)]

    def wait(self, timeout: Optional[float] = None) -> "Grid":
        """Block until every tile is done; returns self. A failed tile keeps its error on `.exception`."""
        wait_all(self.tiles, timeout)
        return self

    def on_update(self, callback: Callable[["Grid"], None]) -> "Grid":
        """Call `callback(self)` whenever a tile changes, from the engine's thread (as Generation.on_update:
        widgets may be set, nothing printed). Called once right away."""
        with self._lock:
            self._callbacks.append(callback)
        self._call(callback)
        return self

    def sheet(self, tile_size: Optional[int] = None) -> "Image":
        """The contact sheet as a PIL image: tiles (placeholders until done), labels in a band outside them."""
        return self._render(tile_size)[0]

    def save(self, directory: Union[str, Path]) -> list[Path]:
        """Write the sheet (`sheet.jpg`), every finished tile at full resolution with its metadata (PNG and JSON
        sidecar, as Generation.save), and `grid.json` (axes and each tile's provenance and files). Returns the
        paths, `grid.json` last."""
        directory = Path(directory).expanduser()
        if directory.suffix.lower() in (".png", ".jpg", ".jpeg", ".json"):
            raise InputError(f"save() takes a folder, not a file name ({directory.name})")
        if not self.done:
            running = sum(not t.done for t in self.tiles)
            raise StorageError(f"{running} tile(s) still running; grid.wait() first, then save")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {directory}: {exc.strerror or exc}") from None
        image, _ = self._render(None)
        sheet = directory / "sheet.jpg"
        try:
            image.convert("RGB").save(sheet, format="JPEG", quality=90)
        except OSError as exc:
            raise StorageError(f"cannot write {sheet}: {exc.strerror or exc}") from None
        written, saved, files = [sheet], {}, []
        for tile in self.tiles:
            if tile.ok and id(tile) not in saved:
                paths = tile.save(directory)
                saved[id(tile)] = [p.name for p in paths]
                written += paths
            files.append(saved.get(id(tile), []))
        document = {"axes": {k: [_json_value(v) for v in vs] for k, vs in self.axes.items()},
                    "rows": self.rows, "columns": self.columns, "pages": self.pages, "sheet": sheet.name,
                    "tiles": [{**p, "saved": f} for p, f in zip(self.provenance(), files, strict=True)]}
        meta = directory / "grid.json"
        try:
            meta.write_text(json.dumps(document, indent=2, default=str))
        except OSError as exc:
            raise StorageError(f"cannot write {meta}: {exc.strerror or exc}") from None
        return written + [meta]

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ._display import grid_bundle
        return grid_bundle(self)

    def _ipython_display_(self) -> None:
        """Shown in a notebook: a live sheet while tiles run (filled in from the engine's updates), the
        finished sheet once every tile is done."""
        from IPython.display import display

        from ._display import show_grid
        if self.done:
            data, metadata = self._repr_mimebundle_()
            display(data, raw=True, metadata=metadata)
        else:
            show_grid(self, wait=False)

    # -- Inside ------------------------------------------------------------------------------------------
    def _index(self, row: int, col: int, page: int) -> int:
        pages, rows, cols = self.shape
        for what, value, size in (("row", row, rows), ("col", col, cols), ("page", page, pages)):
            if not isinstance(value, int) or not 0 <= value < size:
                raise InputError(f"pick: {what} {value!r} is outside the grid (0 to {size - 1})")
        return (page * rows + row) * cols + col

    def _render(self, tile_size: Optional[int]) -> tuple["Image", dict]:
        from ._sheet import render_sheet, sheet_tile_size
        pages, rows, cols = self.shape
        size = tile_size or sheet_tile_size(cols)
        cells = [(self._thumb(t, size), _tile_status(t), t.done and not t.ok) for t in self.tiles]
        return render_sheet(cells, rows=self._band_labels(self.rows) if self.rows else [""],
                            columns=self._band_labels(self.columns),
                            pages=[f"{self.pages}: {v}" for v in self.labels(self.pages)] if self.pages else [""],
                            corner=(f"rows: {self.rows}" if self.rows else "", f"columns: {self.columns}"),
                            tile=size)

    def _band_labels(self, axis: str) -> list[str]:
        """Numbers say which axis they are ("seed 3", "lorasScale 0.4"); names and prompts speak for themselves."""
        numeric = all(_is_number(v) for v in self.axes[axis])
        return [f"{axis} {label}" if numeric else label for label in self.labels(axis)]

    def _thumb(self, tile: Generation, size: int) -> Optional["Image"]:
        if not tile.ok:
            return None
        key = (tile.job_id, size)
        with self._lock:
            cached = self._thumbs.get(key)
        if cached is None:
            images = tile.images
            if not images:
                return None
            cached = shrink(images[0], size, "RGB")
            with self._lock:
                self._thumbs[key] = cached
        return cached

    def _tile_changed(self, _tile: Generation) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            self._call(callback)

    def _call(self, callback: Callable[["Grid"], None]) -> None:
        call_safely(callback, self, "a grid")


def _tile_status(tile: Generation) -> str:
    """What a tile's placeholder says: its status in words, or why it failed (the API's reason and hint)."""
    if tile.ok:
        return "done"
    if tile.done:
        reason = tile.error or str(tile.exception or tile.status_words()).splitlines()[0]
        return f"failed: {reason}" + (f" ({tile.hint})" if tile.error and tile.hint else "")
    return tile.status_words()


def _is_list(values: Any) -> bool:
    return hasattr(values, "__iter__") and not isinstance(values, (str, bytes, Mapping))


def _is_number(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_is_number(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(axis: str, value: Any) -> int:
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError
        return int(number)
    except (TypeError, ValueError):
        raise InputError(f"vary {axis}: {value!r} is not a whole number") from None


def _label(value: Any) -> str:
    if isinstance(value, Model):
        return value.name
    if isinstance(value, (list, tuple)):
        return ", ".join(_label(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _key(value: Any) -> str:
    """Equal values have equal keys: 2 and 2.0 are one value."""
    if isinstance(value, Model):
        return value.id
    if isinstance(value, (list, tuple)):
        return json.dumps([_key(v) for v in value])
    if _is_number(value):
        return json.dumps(float(value))
    return json.dumps(value, sort_keys=True, default=str)


def _json_value(value: Any) -> Any:
    if isinstance(value, Model):
        return {"id": value.id, "name": value.name}
    return value
