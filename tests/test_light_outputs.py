"""Light by default (issue 25 item 10): what a notebook embeds for a result is a preview, never the full PNG.
Judged by the bytes IPython would save in the notebook, for a 1024 × 1024 image."""

from __future__ import annotations

import base64
import io
import time

from IPython.core.formatters import DisplayFormatter
from IPython.utils.capture import capture_output
from PIL import Image

from scenario_nb._display import generation_bundle

FLUX2 = "model_bfl-flux-2-dev"
PREVIEW_LIMIT = 100 * 1024


def embedded(data: dict) -> dict:
    """mime → decoded size of each image a display bundle embeds."""
    return {k: len(base64.b64decode(v) if isinstance(v, str) else v) for k, v in data.items() if k.startswith("image/")}


def test_a_result_image_shows_as_a_light_preview_and_keeps_every_pixel(client):
    gen = client.generate(FLUX2, "a lamp", width=1024, height=1024).wait(timeout=30)
    full = gen.files[0].read_bytes()
    assert len(full) > 4 * PREVIEW_LIMIT  # the stored PNG is heavy: what must not land in the notebook
    image = gen.images[0]
    assert image.size == (1024, 1024) and image.tobytes() == Image.open(io.BytesIO(full)).convert(image.mode).tobytes()
    data, _ = DisplayFormatter().format(image)  # what a notebook saves for `gen.images[0]`
    sizes = embedded(data)
    assert "image/png" not in sizes and sizes and all(n <= PREVIEW_LIMIT for n in sizes.values()), sizes
    data, _ = generation_bundle(gen)
    sizes = embedded(data)
    assert sizes and all(n <= PREVIEW_LIMIT for n in sizes.values()), sizes
    transparent = Image.new("RGBA", (1024, 1024), (0, 0, 0, 0))
    from scenario_nb._preview import as_preview
    data, _ = DisplayFormatter().format(as_preview(transparent))
    assert set(embedded(data)) == {"image/png"}  # transparency kept, still small
    assert max(Image.open(io.BytesIO(data["image/png"])).size) <= 512


def test_o_var_then_images_0_embeds_no_full_png(ip, env):
    result = ip.run_cell('%%scenario "FLUX.2 dev" --set width=1024 --set height=1024 -o var\na big lamp')
    assert result.error_in_exec is None, result.error_in_exec
    active = ip.display_formatter.active_types
    ip.display_formatter.active_types = list(ip.display_formatter.formatters)  # as a notebook kernel has them
    try:
        with capture_output() as out:
            ip.run_cell("display(var.images[0])")
    finally:
        ip.display_formatter.active_types = active
    sizes = {k: n for o in out.outputs for k, n in embedded(o.data).items()}
    assert sizes and "image/png" not in sizes and max(sizes.values()) <= PREVIEW_LIMIT, sizes


def test_a_finished_live_view_keeps_no_image_in_widget_state(ip, env):
    import ipywidgets as widgets
    with capture_output() as out:
        ip.run_cell('%%scenario "FLUX.2 dev" --set width=1024 --set height=1024 --no-wait -o late\na late lamp')
    views = [o.data["application/vnd.jupyter.widget-view+json"]["model_id"] for o in out.outputs
             if "application/vnd.jupyter.widget-view+json" in o.data]
    assert views
    ip.user_ns["late"].wait(timeout=30)
    view = widgets.Widget.widgets[views[0]]  # noqa
    deadline = time.time() + 10
    while "success" not in view.value and time.time() < deadline:
        time.sleep(0.05)
    assert "success" in view.value and "data:image" not in view.value  # the saved widget state stays small
