"""Every notebook runs top to bottom on the embedded sandbox, with images where generations are."""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, kernel_env

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def execute(path: Path, home: Path, cwd: Path, extra_cells: list = ()) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nb.cells += [nbformat.v4.new_code_cell(c) for c in extra_cells]
    client = NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(cwd)}})
    client.km_env = kernel_env(home)  # no credentials: the embedded sandbox
    client.execute(env=client.km_env)
    return nb


def widget_images(nb) -> int:
    """ImageModels with a value buffer in the saved widget state."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return sum(1 for m in state.values() if m.get("model_name") == "ImageModel" and
               any(b.get("path") == ["value"] and base64.b64decode(b["data"]) for b in m.get("buffers", [])))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_sandbox(path, tmp_path):
    nb = execute(path, tmp_path / "home", tmp_path)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if "raises-exception" in cell.metadata.get("tags", []):
            continue
        assert not errors, f"{path.name}: {cell.source[:60]!r} -> {errors[0].get('evalue') if errors else ''}"
        first = cell.source.lstrip().splitlines()[0] if cell.source.strip() else ""
        if first.startswith("%%scenario") and "--dry-run" not in first:
            mimes = [k for o in cell.outputs for k in o.get("data", {})]
            assert any(m.startswith("image/") for m in mimes) or WIDGET_VIEW in mimes, \
                f"{path.name}: no image from {first!r}"
    if path.stem.startswith("02"):
        assert widget_images(nb) >= 1, "the panel's gallery holds no image in the saved widget state"
