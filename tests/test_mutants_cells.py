"""Tests written to kill the mutants of the `%%scenario` cell's methods (`_cells.Cells`) that
tests/test_mutants_magics.py let live (the run, the figures and the equivalent mutants: tests/mutants-equivalent.md).

In-process, on the `ip` shell and `env` sandbox of conftest.py; checked by effect: the requests the sandbox
received, what a generation was sent with, the files written, the lines the cell prints.
"""

from __future__ import annotations

import pytest
from IPython.utils.capture import capture_output

from scenario_nb._magics import load, unload

from test_mutants_magics import error_of, magics_of, run  # the magics' own helpers: one copy


def sent(env) -> int:
    return env.stats()["generate_posts"]


def test_the_prompt_is_filled_from_the_users_variables(ip, env, shown):
    ip.user_ns["subject"] = "a red fox"
    run(ip, "%%scenario Gemini -o g\n{subject} at dawn")
    assert ip.user_ns["g"].prompt == "a red fox at dawn"
    run(ip, "%%scenario Gemini --vary seed=1,2 -o grid\n{subject} at dusk")
    assert [t.prompt for t in ip.user_ns["grid"].tiles] == ["a red fox at dusk"] * 2


def test_an_empty_model_name_before_more_words_is_refused(ip, env):
    before = sent(env)
    assert error_of(ip, '%%scenario "" Gemini\nx') == "%%scenario takes one MODEL; put the prompt in the cell body"
    assert sent(env) == before


def test_saving_a_generation_of_two_images_names_its_sidecar(ip, env, shown, tmp_path, capsys):
    run(ip, f"%%scenario Gemini -n 2 -o g --save {tmp_path / 's'}\nx")
    g = ip.user_ns["g"].wait(30)
    capsys.readouterr()
    shown[-1][2]["after"](g)
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    sidecar = next(n for n in names if n.endswith(".json"))
    assert len(names) == 3 and capsys.readouterr().out == f"Saved 2 file(s) and {sidecar} to {tmp_path / 's'}\n"


def test_a_model_axis_takes_the_aspect_each_model_offers(ip, env, shown):
    """`-a` (and the default aspect) is mapped for each model of the axis, as `%%scenario MODEL -a` maps it."""
    before = sent(env)
    result, out = run(ip, "%%scenario --vary 'model=Gemini,FLUX.2 dev' -a 16:9 -n 1 --seed 3 -o g\nx")
    assert result.error_in_exec is None
    gemini, flux = ip.user_ns["g"].tiles
    assert gemini.inputs["aspectRatio"] == "16:9" and "width" not in gemini.inputs
    assert (flux.inputs["width"], flux.inputs["height"]) == (1344, 768) and "aspectRatio" not in flux.inputs
    assert gemini.inputs["seed"] == flux.inputs["seed"] == 3 and gemini.inputs["numOutputs"] == 1
    assert sent(env) == before + 2
    magics_of(ip).default_aspect = "21:9"
    run(ip, "%%scenario --vary 'model=FLUX.2 dev,Gemini' -o h\nx")
    flux, gemini = ip.user_ns["h"].tiles
    assert flux.inputs["width"] == 1568 and gemini.inputs["aspectRatio"] == "21:9"


def test_a_cell_sends_its_seed_count_and_settings_and_is_recorded_as_the_magics(ip, env, shown):
    run(ip, "%%scenario Gemini -n 2 --seed 7 --set resolution=2K -o g\nx")
    g = ip.user_ns["g"].wait(30)
    body = env.jobs[g.job_id]["body"]
    assert (body["seed"], body["numOutputs"], body["resolution"]) == (7, 2, "2K")
    history = magics_of(ip).client.history
    assert history.get(g.job_id).source == "magic"
    run(ip, "%%scenario Gemini --vary prompt -o grid\na\nb")
    tiles = ip.user_ns["grid"].tiles
    assert [history.get(t.wait(30).job_id).source for t in tiles] == ["magic", "magic"]


def reloaded(ip) -> None:
    """The extension loaded afresh, as in a new kernel: a new session on the same history."""
    with capture_output():
        unload(ip)
        load(ip)


def test_a_cell_shown_wholly_from_history_says_nothing_of_its_routing(ip, env, shown):
    run(ip, "%%scenario Hero Knight -o h\nthe hero")
    job = ip.user_ns["h"].wait(30).job_id
    reloaded(ip)
    result, out = run(ip, "%%scenario Hero Knight\nthe hero")
    assert out.stdout == (f"Shown from history: this identical request is job {job} (already paid for), so nothing "
                          "new is paid for; add --force to generate again.\n")
    run(ip, "%%scenario --vary 'model=Hero Knight,Gemini' -o g\nx")
    ip.user_ns["g"].wait(30)
    reloaded(ip)
    result, out = run(ip, "%%scenario --vary 'model=Hero Knight,Gemini'\nx")
    assert out.stdout == ("Shown from history: 2 of the grid's 2 requests were already sent (identical), so nothing "
                          "new is paid for them; add --force to generate again.\n")


def test_a_grid_sends_its_seed_count_and_settings_with_prompts_from_an_axis(ip, env, shown):
    before = sent(env)
    ip.user_ns["nothing"] = ""  # a body that is empty once filled in: the prompt axis is every prompt
    result, out = run(ip, "%%scenario Gemini --vary 'prompt=a cat,a dog' --seed 5 -n 1 --set resolution=2K -o g\n"
                          "{nothing}")
    assert result.error_in_exec is None and out.stdout == ""
    tiles = ip.user_ns["g"].tiles
    assert [t.prompt for t in tiles] == ["a cat", "a dog"]
    for tile in tiles:
        body = env.jobs[tile.wait(30).job_id]["body"]
        assert (body["seed"], body["numOutputs"], body["resolution"]) == (5, 1, "2K")
    assert sent(env) == before + 2


def test_a_dry_run_prices_the_request_with_its_inputs(ip, env, shown):
    client = magics_of(ip).client
    gemini = client.find_model("Gemini")
    four, one = (client.estimate(gemini, "a", numOutputs=n, resolution="2K").creative_units for n in (4, 1))
    assert four != one  # the count changes the price
    result, out = run(ip, "%%scenario Gemini --dry-run -n 4 --set resolution=2K\na")
    assert [o.data["text/plain"] for o in out.outputs] == [
        repr(client.estimate(gemini, "a", numOutputs=4, resolution="2K"))]
    assert env.stats()["jobs_created"] == 0


def test_the_spend_guard_prices_the_requests_with_their_inputs(ip, env, shown, monkeypatch):
    magics = magics_of(ip)
    asked: list = []
    monkeypatch.setattr(magics, "_spend_guard", lambda total: asked.append(total))
    magics.max_cost = 0.0
    gemini = magics.client.find_model("Gemini")
    price = magics.client.estimate(gemini, "a", numOutputs=4, resolution="2K").creative_units
    assert price != magics.client.estimate(gemini, "a").creative_units
    run(ip, "%%scenario Gemini -n 4 --set resolution=2K -o g\na")
    assert asked == [pytest.approx(price)]
    ip.user_ns["g"].wait(30)
