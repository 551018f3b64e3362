"""`scenario_nb.grid` and `%%scenario --vary` over real HTTP against the sandbox: tiles, reuse, sheet, labels."""

from __future__ import annotations

import base64
import io
import json

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from PIL import Image

import scenario_nb
from scenario_nb import sandbox as sandbox_mod
from scenario_nb import Grid, InputError, ScenarioClient
from scenario_nb._display import SHEET_FAILED, SHEET_PENDING, render_sheet

from conftest import SUITE_KEY, SUITE_SECRET

HERO = "model_HeroKnightLoRA7aB3cD4eF5gH6j"  # the user's flux.2-dev LoRA
INK = "model_PubLicInkWash8k9m2n3p4q5"  # a public flux.2-dev LoRA
FLUX2 = "model_bfl-flux-2-dev"  # their base
SEEDS = [11, 22, 33]
MODELS = [HERO, INK, FLUX2]
SMALL = {"width": 256, "height": 256}


def make(client, seeds=SEEDS, **extra) -> Grid:
    return scenario_nb.grid("a knight at dawn", vary={"seed": seeds, "model": MODELS}, client=client,
                            **SMALL, **extra)


def bundle_of(grid: Grid) -> tuple[dict, dict]:
    return grid._repr_mimebundle_()


def sheet_pixels(data: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data["image/jpeg"]))).convert("RGB")


def luminance(rgb) -> float:
    def channel(c):
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a, b) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def overlaps(a, b) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def rgb_pixels(image: Image.Image) -> list:
    raw = image.convert("RGB").tobytes()
    return [tuple(raw[i:i + 3]) for i in range(0, len(raw), 3)]


def mean(image: Image.Image, box) -> tuple:
    x, y, w, h = box
    crop = image.crop((x + 2, y + 2, x + w - 2, y + h - 2))
    pixels = rgb_pixels(crop)
    return tuple(sum(p[i] for p in pixels) / len(pixels) for i in range(3))


# -- Tiles -------------------------------------------------------------------------------------------------------

def test_3x3_grid_of_seeds_by_models_every_tile_its_own_job_in_the_right_place(client, sb):
    grid = make(client).wait(timeout=60)
    assert grid.ok and len(grid.tiles) == 9 and sb.stats()["jobs_created"] == 9
    assert (grid.rows, grid.columns, grid.pages) == ("seed", "model", None) and grid.shape == (1, 3, 3)
    assert grid.axes["seed"] == SEEDS and [m.id for m in grid.axes["model"]] == MODELS
    data, metadata = bundle_of(grid)
    tiles = metadata["scenario_nb"]["grid"]["tiles"]
    assert len({t["job_id"] for t in tiles}) == 9
    for tile in tiles:  # each tile's provenance names its place and values, and the job really asked for them
        seed, model = SEEDS[tile["row"]], MODELS[tile["col"]]
        assert tile["values"]["seed"] == seed and tile["values"]["model"]["id"] == model
        assert tile["model_id"] == model and tile["seed"] == seed and tile["files"]
        sent = sb.jobs[tile["job_id"]]["body"]  # what the server received
        assert sent["seed"] == seed and sent["prompt"] == "a knight at dawn"
        if model == FLUX2:
            assert "modelId" not in sent and sb.jobs[tile["job_id"]]["model"]["id"] == FLUX2
        else:
            assert sent["modelId"] == model, "a LoRA tile did not run its LoRA"
    jobs = [sb.jobs[t.job_id] for t in grid.tiles]
    created = max(j["created"] for j in jobs)
    assert all(created < j["created"] + j["duration"] for j in jobs), "tiles ran one after another"


def test_rerun_reuses_every_tile_paid_for_and_pays_only_new_ones(client, sb, tmp_path):
    first = make(client).wait(timeout=60)
    created = sb.stats()["jobs_created"]
    again = make(client)
    assert sb.stats()["jobs_created"] == created and again.reused == 9
    assert [t.job_id for t in again.tiles] == [t.job_id for t in first.tiles]
    wider = make(client, seeds=SEEDS + [44]).wait(timeout=60)  # one new row: three new jobs, no more
    assert sb.stats()["jobs_created"] == created + 3 and wider.reused == 9
    assert [t.job_id for t in wider.tiles[:9]] == [t.job_id for t in first.tiles]
    later = ScenarioClient(SUITE_KEY, SUITE_SECRET, sb.url, home=tmp_path)
    try:  # a new kernel on the same home: the history and the file store answer, nothing is paid again
        restored = make(later, seeds=SEEDS + [44]).wait(timeout=60)
        assert sb.stats()["jobs_created"] == created + 3 and restored.ok
        assert [t.job_id for t in restored.tiles] == [t.job_id for t in wider.tiles]
    finally:
        later.close()
    fresh = make(client, reuse=False).wait(timeout=60)
    assert sb.stats()["jobs_created"] == created + 3 + 9 and fresh.ok


def test_pick_returns_that_tiles_generation(client, sb):
    grid = make(client).wait(timeout=60)
    for row in range(3):
        for col in range(3):
            tile = grid.pick(row, col)
            assert tile is grid.tiles[row * 3 + col]
            assert (tile.seed, tile.model_id) == (SEEDS[row], MODELS[col])
            assert grid.values(row, col) == {"seed": SEEDS[row], "model": grid.axes["model"][col]}
    for bad in ((3, 0), (0, 3), (-1, 0), (0, 0, 1)):
        with pytest.raises(InputError, match="outside the grid"):
            grid.pick(*bad)


def test_save_writes_the_sheet_every_tile_and_metadata(client, sb, tmp_path):
    grid = make(client).wait(timeout=60)
    paths = grid.save(tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "sheet.jpg" in names and "grid.json" in names and paths[-1].name == "grid.json"
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 9 and len([n for n in names if n.endswith(".json")]) == 10
    for tile in grid.tiles:  # full resolution, with how it was made in the file itself
        with Image.open(tmp_path / "out" / f"{tile.job_id}_0.png") as png:
            assert png.size == tile.images[0].size and png.text["job_id"] == tile.job_id
            assert png.text["seed"] == str(tile.seed) and png.text["model"] == tile.model_id
    with Image.open(tmp_path / "out" / "sheet.jpg") as sheet:
        assert sheet.format == "JPEG" and sheet.width > 3 * 128
    document = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert document["rows"] == "seed" and document["columns"] == "model"
    for entry, tile in zip(document["tiles"], grid.tiles, strict=True):
        assert entry["job_id"] == tile.job_id and entry["saved"] == [f"{tile.job_id}_0.png", f"{tile.job_id}.json"]
    with pytest.raises(InputError, match="folder"):
        grid.save(tmp_path / "sheet.png")


def test_a_lora_scale_axis_sends_the_scale_and_shares_tiles_without_a_lora(client, sb):
    grid = scenario_nb.grid("a knight", vary={"model": ["Hero Knight", "FLUX.2 dev"], "lorasScale": [0.4, 1.0]},
                            client=client, seed=5, **SMALL).wait(timeout=60)
    assert grid.ok and sb.stats()["jobs_created"] == 3  # the base has no LoRA to scale: one job, two tiles
    for col, scale in enumerate([0.4, 1.0]):
        sent = sb.jobs[grid.pick(0, col).job_id]["body"]
        assert sent["loras"] == [HERO] and sent["lorasScale"] == [scale] and "modelId" not in sent
    assert grid.pick(1, 0) is grid.pick(1, 1) and "lorasScale" not in sb.jobs[grid.pick(1, 0).job_id]["body"]


def test_three_axes_make_pages(client, sb):
    grid = scenario_nb.grid("a potion", vary={"seed": [1, 2], "prompt": ["red", "blue"], "numOutputs": [1, 2]},
                            client=client, model="Gemini").wait(timeout=60)
    assert grid.shape == (2, 2, 2) and grid.pages == "numOutputs" and sb.stats()["jobs_created"] == 8
    assert grid.pick(1, 0, page=1).inputs == {"seed": 2, "prompt": "red", "numOutputs": 2}
    data, metadata = bundle_of(grid)
    layout = metadata["scenario_nb"]["grid"]["layout"]
    assert len(layout["tiles"]) == 8 and len(layout["page_titles"]) == 2


@pytest.mark.parametrize("vary, message", [
    ({"seed": [1], "model": [FLUX2], "prompt": ["a"], "guidance": [2]}, "at most 3 axes"),
    ({"seed": []}, "the axis is empty"),
    ({}, "at least one axis"),
    ({"seed": 3}, "give a list"),
    ({"bogus": [1, 2]}, "vary bogus: not an axis"),
    ({"seed": [1, 1]}, "appears twice"),
    ({"seed": ["one"]}, "not a whole number"),
    ({"model": ["Nope Model"]}, "no model named"),
    ({"guidance": [50]}, "guidance"),
])
def test_bad_axes_are_one_clear_line_and_send_nothing(client, sb, vary, message):
    with pytest.raises(InputError) as caught:
        scenario_nb.grid("a knight", vary=vary, client=client, model=FLUX2)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert sb.stats()["jobs_created"] == 0 and sb.stats()["generate_posts"] == 0


def test_max_cost_prices_new_tiles_first_and_refuses(client, sb):
    with pytest.raises(InputError, match="refused: the 9 new tile"):
        make(client, max_cost=10)
    assert sb.stats()["jobs_created"] == 0
    assert make(client, max_cost=1000).wait(timeout=60).ok and sb.stats()["jobs_created"] == 9


# -- The sheet ---------------------------------------------------------------------------------------------------

def test_the_sheet_fills_in_live_with_placeholders_and_failures(client, sb):
    sb.inject("job_failure", error="content policy violation", hint="Rephrase the prompt")
    seen = []
    grid = make(client)
    grid.on_update(lambda g: seen.append(sum(t.done for t in g.tiles)))
    data, metadata = bundle_of(grid)
    layout = metadata["scenario_nb"]["grid"]["layout"]
    early = sheet_pixels(data)
    pending = [i for i, t in enumerate(grid.tiles) if not t.done]
    assert pending, "every tile finished before the sheet was drawn"
    for i in pending[:3]:  # an unfinished tile is a placeholder with its status, not a picture
        assert contrast(mean(early, layout["tiles"][i]), SHEET_PENDING) < 1.1
    grid.wait(timeout=60)
    assert seen[0] < 9 and seen[-1] == 9 and len(seen) > 9  # called at once, then on every tile's changes
    failed = [i for i, t in enumerate(grid.tiles) if not t.ok]
    assert len(failed) == 1 and sb.stats()["jobs_created"] == 9
    data, metadata = bundle_of(grid)
    final = sheet_pixels(data)
    assert "content policy violation" in data["text/plain"] and not data["text/plain"].startswith("✗")
    assert contrast(mean(final, layout["tiles"][failed[0]]), SHEET_FAILED) < 1.2
    for i in set(range(9)) - set(failed):  # real pictures: not a flat placeholder
        x, y, w, h = layout["tiles"][i]
        lo, hi = final.crop((x, y, x + w, y + h)).convert("L").getextrema()
        assert hi - lo > 60
    assert metadata["scenario_nb"]["grid"]["tiles"][failed[0]]["ok"] is False


def test_showing_a_running_grid_is_live_and_a_finished_one_is_the_sheet(ip, client, sb):
    grid = make(client)
    from IPython.display import display
    with capture_output() as out:  # `ip`: a real shell's display machinery, as in a notebook cell
        display(grid)
    views = [o for o in out.outputs if "application/vnd.jupyter.widget-view+json" in o.data]
    assert views and not grid.done, "a running grid was shown as a still image"
    grid.wait(timeout=60)
    with capture_output() as out:
        display(grid)
    assert "image/jpeg" in out.outputs[-1].data and out.outputs[-1].metadata["scenario_nb"]["grid"]


def test_the_saved_output_is_one_light_jpeg_with_provenance(client, sb):
    grid = make(client).wait(timeout=60)
    data, metadata = bundle_of(grid)
    assert set(data) == {"image/jpeg", "text/plain"}  # no full-resolution PNG, no per-tile images
    assert len(data["image/jpeg"]) < 400_000
    files = [f for t in metadata["scenario_nb"]["grid"]["tiles"] for f in t["files"]]
    assert len(files) == 9 and all(f.endswith(".png") for f in files)
    assert json.dumps(metadata)  # plain JSON, as a notebook stores it


def _label_contrasts(image: Image.Image, boxes: list) -> list:
    """For each label box: the WCAG contrast between its darkest ink and its background, and the ink's height."""
    out = []
    for x, y, w, h in boxes:
        crop = image.crop((x, y, x + w, y + h))
        pixels = rgb_pixels(crop)
        background = max(set(pixels), key=pixels.count)
        ink = [p for p in pixels if contrast(p, background) > 1.5]
        assert len(ink) > 20, "no label drawn in its band"
        darkest = max(ink, key=lambda p: contrast(p, background))
        mask = Image.new("L", crop.size)
        mask.putdata([255 if contrast(p, background) > 1.5 else 0 for p in pixels])
        top, bottom = mask.getbbox()[1], mask.getbbox()[3]
        out.append((contrast(darkest, background), bottom - top))
    return out


@pytest.mark.parametrize("shade", ["dark and light"])
def test_labels_are_readable_in_a_band_outside_the_pictures(shade):
    """Black and white tiles: labels drawn over pictures would vanish on one or the other; in a band they read."""
    black, white = Image.new("RGB", (256, 256), (0, 0, 0)), Image.new("RGB", (256, 256), (255, 255, 255))
    cells = [(black if (r + c) % 2 else white, "done", False) for r in range(3) for c in range(3)]
    image, layout = render_sheet(cells, rows=["seed 1", "seed 2", "seed 3"],
                                 columns=["Hero Knight", "Ink Wash", "FLUX.2 dev"], pages=[""],
                                 corner=("rows: seed", "columns: model"), tile=256)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)  # as the notebook stores it
    sheet = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    labels = layout["row_labels"] + layout["column_labels"]
    for box in labels + layout["bands"]:  # the band lies outside every tile
        assert not any(overlaps(box, tile) for tile in layout["tiles"]), (box, layout["tiles"])
    for (ratio, height) in _label_contrasts(sheet, labels):
        assert ratio >= 4.5, f"label contrast {ratio:.1f}:1 is under WCAG AA (4.5:1)"
        assert height >= 12, f"label text {height} px high is too small to read"
    for i, (x, y, w, h) in enumerate(layout["tiles"]):  # the tiles are intact: nothing drawn over them
        expected = 0 if (i // 3 + i % 3) % 2 else 255
        lo, hi = sheet.crop((x + 2, y + 2, x + w - 2, y + h - 2)).convert("L").getextrema()
        assert abs(lo - expected) < 12 and abs(hi - expected) < 12, f"tile {i} has something drawn over it"


def test_a_real_sheets_labels_read_and_sit_outside_its_tiles(client, sb):
    grid = make(client).wait(timeout=60)
    data, metadata = bundle_of(grid)
    layout = metadata["scenario_nb"]["grid"]["layout"]
    labels = layout["row_labels"] + layout["column_labels"]
    assert not any(overlaps(label, tile) for label in labels for tile in layout["tiles"])
    assert all(ratio >= 4.5 for ratio, _ in _label_contrasts(sheet_pixels(data), labels))


# -- The magic -----------------------------------------------------------------------------------------------------

def run(ip, cell):
    with capture_output() as out:
        result = ip.run_cell(cell)
    return result, out


def test_magic_vary_makes_a_grid_and_reuses_it(ip, env):
    cell = '%%scenario --vary seed=1,2,3 --vary model="Hero Knight","Ink Wash" -o g\na knight in armour'
    result, out = run(ip, cell)
    assert result.error_in_exec is None, result.error_in_exec
    grid = ip.user_ns["g"]
    assert isinstance(grid, Grid) and grid.ok and grid.shape == (1, 3, 2)
    assert env.stats()["jobs_created"] == 6
    assert [t.seed for t in grid.tiles] == [1, 1, 2, 2, 3, 3]  # numbers parsed as numbers
    assert [t.model_name for t in grid.tiles[:2]] == ["Hero Knight", "Ink Wash"]
    shown = [o for o in out.outputs if "image/jpeg" in o.data]
    assert shown and not any("image/png" in o.data for o in out.outputs)
    tiles = shown[-1].metadata["scenario_nb"]["grid"]["tiles"]
    assert [t["job_id"] for t in tiles] == [t.job_id for t in grid.tiles]
    assert "Hero Knight is your LoRA: it runs through FLUX.2 dev" in out.stdout
    result, out = run(ip, cell.replace("-o g", "-o again"))
    assert env.stats()["jobs_created"] == 6 and "Shown from history" in out.stdout
    assert [t.job_id for t in ip.user_ns["again"].tiles] == [t.job_id for t in grid.tiles]


def test_magic_vary_prompt_lines_dry_run_and_save(ip, env, tmp_path):
    ip.run_line_magic("scenario", "use Gemini")
    result, out = run(ip, "%%scenario --vary prompt --vary seed=7,8 --dry-run\na red potion\na blue potion")
    assert result.error_in_exec is None and env.stats()["jobs_created"] == 0
    assert "for 4 new tile(s)" in str(out.outputs[0].data["text/plain"])
    result, out = run(ip, f"%%scenario --vary prompt --vary seed=7,8 -o p --save {tmp_path / 's'}\n"
                          "a red potion\na blue potion")
    grid = ip.user_ns["p"]
    assert grid.ok and [t.prompt for t in grid.tiles] == ["a red potion"] * 2 + ["a blue potion"] * 2
    assert (tmp_path / "s" / "sheet.jpg").is_file() and (tmp_path / "s" / "grid.json").is_file()
    assert "Saved the sheet" in out.stdout


def test_magic_vary_no_wait_binds_at_once_and_the_output_fills_in(ip, env):
    result, out = run(ip, "%%scenario Gemini --vary seed=1,2 --no-wait -o later\na lantern")
    later = ip.user_ns["later"]
    assert result.error_in_exec is None and not later.done
    assert later.wait(timeout=60).ok and env.stats()["jobs_created"] == 2


@pytest.mark.parametrize("cell, message", [
    ("%%scenario Gemini --vary bogus=1,2\nx", "vary bogus: not an axis"),
    ("%%scenario Gemini --vary seed\nx", "--vary takes AXIS=V1,V2"),
    ("%%scenario Gemini --vary seed=1,,2\nx", "an empty value"),
    ("%%scenario Gemini --vary seed=1 --vary seed=2\nx", "given twice"),
    ("%%scenario Gemini --vary seed=1,2 --seed 3\nx", "--seed and --vary seed"),
    ("%%scenario Gemini --vary seed=1,2 --vary numOutputs=1,2 --vary aspectRatio=1:1,16:9 "
     "--vary resolution=1K,2K\nx", "at most 3 axes"),
    ("%%scenario Gemini --vary model=Gemini\nx", "both choose the model"),
    ("%%scenario --vary model=Nope,Gemini\nx", "no model named"),
    ("%%scenario Gemini --vary seed=1,2 --each\nx", "no --each"),
    ("%%scenario Gemini --vary seed=1,2\n  ", "empty prompt"),
])
def test_magic_wrong_axes_are_one_line(ip, env, cell, message):
    result, out = run(ip, cell)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert message in str(result.error_in_exec) and "\n" not in str(result.error_in_exec).strip()
    assert "Traceback" not in out.stdout + out.stderr and env.stats()["jobs_created"] == 0


def test_magic_max_cost_guards_a_grid(ip, env):
    ip.run_cell("%config ScenarioMagics.max_cost = 1")
    result, out = run(ip, "%%scenario Gemini --vary seed=1,2,3\na castle")
    assert isinstance(result.error_in_exec, UsageError) and "max_cost" in str(result.error_in_exec)
    assert env.stats()["jobs_created"] == 0
    ip.run_cell("%config ScenarioMagics.max_cost = None")


def test_magic_vary_sends_numbers_as_numbers(ip, env):
    run(ip, '%%scenario "FLUX.2 dev" --vary guidance=2,3.5 --vary lorasScale=0.5 --seed 4 -o gg\na lantern')
    grid = ip.user_ns["gg"]
    sent = [env.jobs[t.job_id]["body"] for t in grid.wait(timeout=60).tiles]
    assert [b["guidance"] for b in sent] == [2, 3.5] and all(b["seed"] == 4 for b in sent)
    assert all(isinstance(b["guidance"], (int, float)) for b in sent)


def test_help_documents_vary(ip, env):
    doc = ip.find_cell_magic("scenario").__doc__
    assert "--vary AXIS=V1,V2" in doc and "rows, columns, pages" in doc
    assert '%%scenario "Hero Knight" --vary seed=1,2,3 --vary lorasScale=0.4,0.7,1' in doc


# -- The account's parallel limit ------------------------------------------------------------------------------------

def test_a_grid_larger_than_the_parallel_limit_waits_for_slots_instead_of_hammering(tmp_path):
    """The first 429 names the limit (`actionLimit`); after it the engine holds tiles until one of its jobs ends,
    so no further request is refused (the first burst is at most the four requests sent side by side)."""
    with sandbox_mod.start(api_key=SUITE_KEY, api_secret=SUITE_SECRET, job_seconds=1.5,
                           max_parallel_jobs=2) as sb:
        client = ScenarioClient(SUITE_KEY, SUITE_SECRET, sb.url, home=tmp_path)
        try:
            grid = scenario_nb.grid("a crate", model="Gemini", vary={"seed": list(range(1, 10))}, client=client)
            assert sum(t.status == "waiting" for t in grid.tiles) == 7  # held here: nothing charged for them
            assert grid.wait(timeout=120).ok and sb.stats()["jobs_created"] == 9
            refused = sb.stats()["rate_limited"]
            assert 1 <= len(refused) <= 4, f"{len(refused)} requests refused: the engine kept asking at the limit"
            first = min(r["time"] for r in refused)
            assert all(r["time"] < first + 0.5 for r in refused), "a 429 after the first burst"
        finally:
            client.close()


def test_429s_to_requests_sent_side_by_side_are_one_refusal():
    """Four tiles sent together and refused together must not back off as if refused four times in a row (8 s
    instead of 1 s would hold a whole round of the grid)."""
    import time

    from scenario_nb._http import CreationGate
    gate = CreationGate()
    sent = time.time()
    for _ in range(4):  # all four were on the wire before the first 429 came back
        gate.refused(None, sent)
    assert gate.remaining() <= 1.25  # the first step of the backoff: 0.75–1.25 s
    gate.refused(None, time.time() + 0.001)  # sent after the refusals were known: the next step
    assert gate.remaining() >= 1.5
