"""Every notebook runs top to bottom on the embedded sandbox, with images where generations are.

Each notebook is executed once per run, in the fresh virtual environment built from binder/ (tests/user_machine.py);
these checks (`problems`) and test_secrets read what it saved.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import nbformat
import pytest

from user_machine import NOTEBOOKS
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
IMAGE_LINES = re.compile(r"^%scenario\s+(workflow|job|asset)\b")  # line magics that show images too
FAILURE_TEXT = re.compile(r"Traceback|Error|✗")
SAVED_LIMIT = 300 * 1024  # issue 25 item 10: every notebook, saved after a full run, under 300 KB


def widget_state(nb) -> dict:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def has_image_buffer(model: dict) -> bool:
    return model.get("model_name") == "ImageModel" and any(
        b.get("path") == ["value"] and base64.b64decode(b.get("data") or "") for b in model.get("buffers", []))


def widget_images(nb) -> int:
    """ImageModels with a value buffer in the saved widget state."""
    return sum(1 for m in widget_state(nb).values() if has_image_buffer(m))


def view_holds_image(state: dict, model_id: str) -> bool:
    """Whether the widget `model_id`, or any widget it contains, is an image with bytes in the saved state."""
    seen, todo = set(), [model_id]
    while todo:
        mid = todo.pop()
        if mid in seen or mid not in state:
            continue
        seen.add(mid)
        model = state[mid]
        if has_image_buffer(model):
            return True
        children = model.get("state", {}).get("children") or []
        todo += [c[len("IPY_MODEL_"):] for c in children if isinstance(c, str) and c.startswith("IPY_MODEL_")]
    return False


def saved_by_jupyterlab(nb) -> int:
    """The notebook's size as JupyterLab saves it: its widget manager writes each widget's state without the
    values that are the widget's defaults (`get_state_sync({drop_defaults: true})` in jupyterlab-manager's
    `_saveState`), where nbclient keeps every key (~1 KB for each Layout). Defaults: the Python class's traits."""
    import copy

    from ipywidgets.widgets.widget import _registry
    nb = copy.deepcopy(nb)
    for model in widget_state(nb).values():
        state = model.get("state", {})
        try:
            cls = _registry.get(model["model_module"], model["model_module_version"], model["model_name"],
                                state.get("_view_module"), state.get("_view_module_version"), state.get("_view_name"))
        except (KeyError, TypeError):
            continue
        traits = cls.class_traits(sync=True)
        model["state"] = {k: v for k, v in state.items() if k not in traits or _default(traits[k]) != v}
    return len(nbformat.writes(nb).encode())


def _default(trait):
    try:
        return trait.default()
    except Exception:  # a trait whose default needs an instance: its value is kept
        return KeyError


def cell_texts(cell, name: str) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == name)


def is_generation(cell) -> bool:
    first = cell.source.lstrip().splitlines()[0] if cell.source.strip() else ""
    return (first.startswith("%%scenario") and "--dry-run" not in first) or bool(IMAGE_LINES.match(first))


def problems(nb, name: str) -> list:
    """Everything wrong with an executed notebook, as readable lines (empty when all is well)."""
    found = []
    state = widget_state(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"{name} cell {index} {cell.source.splitlines()[0][:50]!r}"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            found.append(f"{where}: error output {errors[0].ename}: {errors[0].evalue}")
        if cell.execution_count is None:
            found.append(f"{where}: never ran")
        stderr = cell_texts(cell, "stderr")
        if "raises-exception" in cell.metadata.get("tags", []):
            # The one expected refusal (the spend guard): a one-line UsageError, never a traceback.
            if "UsageError: refused" not in stderr or "Traceback" in stderr:
                found.append(f"{where}: expected a one-line refusal, got {stderr!r}")
            continue
        if FAILURE_TEXT.search(stderr):
            found.append(f"{where}: stderr {stderr.strip()[:300]!r}")
        if "✗" in cell_texts(cell, "stdout"):
            found.append(f"{where}: a job failed: {cell_texts(cell, 'stdout').strip()[:300]!r}")
        for output in cell.outputs:
            text = str(output.get("data", {}).get("text/plain", ""))
            if text.startswith("✗"):
                found.append(f"{where}: a job failed: {text[:300]!r}")
        if is_generation(cell):
            data = [o.get("data", {}) for o in cell.outputs]
            images = any(m.startswith("image/") for d in data for m in d)
            views = [d[WIDGET_VIEW]["model_id"] for d in data if WIDGET_VIEW in d]
            if not images and not any(view_holds_image(state, v) for v in views):
                found.append(f"{where}: no image in its outputs")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb.metadata, f"{path.name} carries saved widget state"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, \
                f"{path.name} has outputs or an execution count: {cell.source[:60]!r}"


def test_every_story_is_there():
    names = {p.stem for p in NOTEBOOKS}
    assert {"01-quickstart", "02-panel", "03-batch-and-variations", "04-image-inputs-loras-workflows",
            "05-cost-history-recovery", "06-train-and-evaluate"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_sandbox_in_the_binder_image(path, user_machine):
    """Each notebook as Binder runs it, with no credentials (so on the embedded sandbox): executed once for the
    run by tests/user_machine.py, in the fresh venv, through binder/start."""
    executed = user_machine["executed"] / path.name
    assert executed.is_file(), f"{path.name} was not run: {user_machine['notebook_run']}"
    nb = nbformat.read(executed, as_version=4)
    # A print is several writes: a flush between them (another thread displaying) splits it into two outputs.
    said = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    prefix = said.split("kernel prefix:")[1].strip()
    assert Path(prefix).resolve() == user_machine["bin"].parent.resolve(), f"{path.name} ran in {prefix}"
    nb.cells = nb.cells[:-1]
    saved = saved_by_jupyterlab(nbformat.read(executed, as_version=4))
    print(f"{path.name} saved after a full run: {saved / 1024:.0f} KB as JupyterLab saves it "
          f"({executed.stat().st_size / 1024:.0f} KB as nbclient does, every widget default kept)")
    assert not problems(nb, path.name), "\n".join(problems(nb, path.name))
    raw = executed.stat().st_size  # as nbclient writes it: every widget state the kernel sent, closed ones too
    assert max(saved, raw) < SAVED_LIMIT, f"{path.name} saves at {saved / 1024:.0f} KB ({raw / 1024:.0f} KB as " \
        f"nbclient writes it; light by default: under {SAVED_LIMIT // 1024} KB, previews not full images)"
    assert any(is_generation(c) for c in nb.cells if c.cell_type == "code") or path.stem.startswith("02")
    if path.stem.startswith("02"):
        assert widget_images(nb) >= 1, "the panel's gallery holds no image in the saved widget state"
