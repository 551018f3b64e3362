"""A saved 02-panel notebook reads well where no widget can be drawn (GitHub, nbviewer, nbconvert).

The panel's output carries a static snapshot of its gallery (`text/html` with `data:` thumbnails) and a
meaningful `text/plain` line, kept current through its display id while jobs finish in later cells.
"""

from __future__ import annotations

import copy
import json
import re

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from conftest import ROOT, kernel_env, kernel_manager

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def test_saved_panel_notebook_shows_the_gallery_in_html(tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / "02-panel.ipynb", as_version=4)
    NotebookClient(nb, km=kernel_manager(), timeout=180, store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=kernel_env(tmp_path / "home"))
    saved = len(nbformat.writes(nb).encode())  # as nbclient saves it: every state the kernel sent
    print(f"02-panel.ipynb after a full run, with widget state, as nbclient saves it: {saved / 1024:.0f} KB")
    assert saved < 300 * 1024, f"{saved / 1024:.0f} KB: the panel's widgets send their default values"
    cell = next(c for c in nb.cells if c.cell_type == "code" and "Panel()" in c.source)
    widget, snapshot = cell.outputs
    assert WIDGET_VIEW in widget.data and "VBox(" not in widget.data["text/plain"]
    # a saved notebook shows final states only: nothing that was true only while the cells ran
    assert "0 images" not in widget.data["text/plain"] and "no model picked" not in widget.data["text/plain"]
    assert "text/html" not in widget.data, "a gallery snapshot from display time"
    saved = json.dumps(nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"])
    assert "Loading models" not in saved and "not found" not in saved and "#b00020" not in saved
    assert snapshot.data["text/plain"].startswith("Scenario panel · FLUX.2 dev · 2 images"), snapshot.data
    assert snapshot.data["text/html"].count("data:image/jpeg;base64,") == 2

    # Where the widget state is not saved or not used (GitHub, nbviewer, a plain Lab save)
    stateless = copy.deepcopy(nb)
    stateless.metadata.pop("widgets", None)
    page, _ = HTMLExporter().from_notebook_node(stateless)
    assert "VBox(" not in page
    snapshot = page[page.index("scenario-gallery-snapshot"):]
    tags = [dict(re.findall(r'(\w+)="([^"]*)"', tag)) for tag in re.findall(r"<img [^>]+>", snapshot)]
    assert len(tags) == 2 and all(t["src"].startswith("data:image/jpeg;base64,") for t in tags)
    assert all(abs(int(t["width"]) / int(t["height"]) - 16 / 9) < 0.05 for t in tags), tags
    assert "a floating island with a waterfall" in snapshot

    # With the saved widget state, nbconvert draws the widgets; never the VBox(...) text either
    page, _ = HTMLExporter().from_notebook_node(nb)
    assert "VBox(" not in page and WIDGET_VIEW in page
