"""Tests written to kill the mutants mutmut planted in the notebook front door (`_magics.py`, `_cells.py`,
`_commands.py`, `_training_commands.py`) that the rest of the suite let live (the run, the figures and the
equivalent mutants: tests/mutants-equivalent.md).

A user mistake is one `UsageError` line, and nothing is sent; what a command does is checked by its effect (the
jobs the in-process sandbox counted, rows in the history, the variable bound) and by the exact line it prints.
"""

from __future__ import annotations

import builtins
from types import SimpleNamespace

import pytest
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.utils.capture import capture_output
from traitlets import TraitError

from scenario_nb import _cells, _commands
from scenario_nb._errors import InputError
from scenario_nb._magics import ScenarioMagics, _drop_refused_settings, load, unload


@pytest.fixture(autouse=True)
def _fresh_variables(request):
    """The shell is shared by every test: the variables a test binds (-o) go when it ends."""
    if "ip" not in request.fixturenames:
        yield
        return
    ip = request.getfixturevalue("ip")
    before = set(ip.user_ns)
    yield
    for name in set(ip.user_ns) - before:
        del ip.user_ns[name]


def run(ip, cell):
    with capture_output() as out:
        result = ip.run_cell(cell)
    return result, out


def error_of(ip, cell) -> str:
    result, out = run(ip, cell)
    assert isinstance(result.error_in_exec, UsageError), (result.error_in_exec, out.stdout)
    return str(result.error_in_exec)


def magics_of(ip) -> ScenarioMagics:
    return next(c for c in ip.configurables if isinstance(c, ScenarioMagics))


# -- _magics.py: settings -----------------------------------------------------------------------------------------
def test_each_setting_refuses_what_it_cannot_use_with_its_reason():
    m = ScenarioMagics()
    for value in (64, 4096):
        m.thumbnail_size = value
        assert m.thumbnail_size == value
    for value in (63, 4097):
        with pytest.raises(TraitError, match="^thumbnail_size must be between 64 and 4096 pixels$"):
            m.thumbnail_size = value
    for value in (0.0, 2.5, None):
        m.max_cost = value
        assert m.max_cost == value
    with pytest.raises(TraitError, match=r"^max_cost must be 0 or more creative units, or None to turn the guard "
                                         r"off$"):
        m.max_cost = -0.01
    m.poll_interval_floor, m.job_timeout = 0.001, 0.001
    assert (m.poll_interval_floor, m.job_timeout) == (0.001, 0.001)
    for name in ("poll_interval_floor", "job_timeout"):
        with pytest.raises(TraitError, match=f"^{name} must be a positive number of seconds$"):
            setattr(m, name, 0.0)
    m.default_aspect = " 16:9 "
    assert m.default_aspect == "16:9"
    m.default_aspect = "  "
    assert m.default_aspect == ""
    with pytest.raises(TraitError, match=r"^default_aspect must look like 16:9 \(or be empty\)$"):
        m.default_aspect = "wide"
    assert (ScenarioMagics.wait.default_value, ScenarioMagics.reuse.default_value) == (True, True)
    fresh = ScenarioMagics()
    assert (fresh.max_cost, fresh.history_path, fresh.poll_interval_floor, fresh.job_timeout) == (None, "", 0.25, 3600)
    assert (fresh.default_model, fresh.default_aspect) == ("", "")


def test_the_usage_has_no_rest_literal_marker():
    assert ScenarioMagics.scenario.__doc__.lstrip().startswith("%scenario")
    assert "::" not in ScenarioMagics.scenario.__doc__.split("\n", 1)[0]


def test_without_a_shell_there_are_no_variables():
    with pytest.raises(UsageError, match="^scenario_nb's magics need an IPython shell$"):
        _ = ScenarioMagics().user_ns


def test_polling_settings_reach_the_running_session(ip, env):
    magics = magics_of(ip)
    client = magics.client
    ip.run_cell("%config ScenarioMagics.job_timeout = 12.5")
    assert client.polling["job_timeout"] == 12.5
    ip.run_cell("%config ScenarioMagics.poll_interval_floor = 0.75")
    assert client.polling["floor"] == 0.75 and client.polling["job_timeout"] == 12.5


def test_a_polling_setting_changed_with_no_session_starts_none(env):
    from scenario_nb import _session
    _session.reset()
    m = ScenarioMagics()
    m.job_timeout = 5.0
    assert _session.current_session() is None


def test_the_session_takes_the_polling_settings_and_announces_a_new_backend_once(ip, env, capsys):
    magics = magics_of(ip)
    session = magics.session
    magics.job_timeout = 42.0
    session.client.set_polling(floor=9.0, job_timeout=9.0)
    session.announced = False
    assert magics.session is session
    assert session.client.polling["floor"] == 0.25 and session.client.polling["job_timeout"] == 42.0
    assert capsys.readouterr().out == session.notice + "\n" and session.announced is True
    assert magics.session is session
    assert capsys.readouterr().out == ""


def test_moving_the_history_replaces_the_session_and_keeps_its_backend(ip, env, tmp_path):
    from scenario_nb import _session
    magics = magics_of(ip)
    first = magics.session
    magics.history_path = str(tmp_path / "moved.sqlite")
    moved = _session.current_session()
    assert moved is not first and moved.history_path == str(tmp_path / "moved.sqlite")
    assert moved.force_sandbox is False and moved.client.history_path == tmp_path / "moved.sqlite"
    magics.history_path = ""
    back = _session.current_session()
    assert back is not moved and back.history_path is None


def test_moving_the_history_of_a_sandbox_session_keeps_the_sandbox(ip, env, tmp_path):
    from scenario_nb import _session
    magics = magics_of(ip)
    _session.replace_session(force_sandbox=True)
    magics.history_path = str(tmp_path / "moved.sqlite")
    assert _session.current_session().force_sandbox is True


def test_a_scenario_error_is_one_usage_line_without_its_cause(ip, env, monkeypatch):
    magics = magics_of(ip)

    def broken(line):
        raise InputError("bad thing")

    monkeypatch.setattr(magics.commands, "run", broken)
    with pytest.raises(UsageError) as caught:
        magics.scenario("status")
    assert str(caught.value) == "bad thing" and caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.parametrize("answer", ["y", "yes", " Y ", "YES\n"])
def test_the_spend_guard_goes_ahead_on_yes(monkeypatch, answer):
    asked = []
    monkeypatch.setattr(builtins, "input", lambda q: asked.append(q) or answer)
    m = ScenarioMagics()
    m.max_cost = 1.5
    m._spend_guard(2.25)
    assert asked == ["This run is estimated at 2.25 CU, over max_cost 1.5. Go ahead? [y/N] "]


@pytest.mark.parametrize("answer", ["", "n", "no", "yess", "sure"])
def test_the_spend_guard_stops_on_anything_else(monkeypatch, answer):
    monkeypatch.setattr(builtins, "input", lambda q: answer)
    m = ScenarioMagics()
    m.max_cost = 1.0
    with pytest.raises(UsageError) as caught:
        m._spend_guard(2.5)
    assert str(caught.value) == "not run: estimated 2.5 CU is over max_cost 1"


@pytest.mark.parametrize("error", [StdinNotImplementedError, EOFError, OSError, RuntimeError])
def test_the_spend_guard_refuses_when_nobody_can_answer(monkeypatch, error):
    def no_one(question):
        raise error("no stdin")

    monkeypatch.setattr(builtins, "input", no_one)
    m = ScenarioMagics()
    m.max_cost = 0.0
    with pytest.raises(UsageError) as caught:
        m._spend_guard(3.0)
    assert str(caught.value) == ("refused: this run is estimated at 3 CU, over max_cost 0, and nobody can confirm "
                                 "here; raise %config ScenarioMagics.max_cost to run it")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# -- _magics.py: loading -----------------------------------------------------------------------------------------
def test_load_registers_once_and_says_where_generations_go(ip, env, monkeypatch, capsys):
    unload(ip)
    capsys.readouterr()
    load(ip)
    assert capsys.readouterr().out == ("scenario_nb loaded: generations go to " + env.url + " and spend your "
                                       "creative units (%scenario help)\n")
    ours = [c for c in ip.configurables if isinstance(c, ScenarioMagics)]
    assert len(ours) == 1 and "scenario" in ip.magics_manager.magics["cell"]
    load(ip)  # loaded already: nothing more, nothing printed
    assert capsys.readouterr().out == "" and [c for c in ip.configurables if isinstance(c, ScenarioMagics)] == ours
    unload(ip)
    monkeypatch.delenv("SCENARIO_API_SECRET")
    load(ip)
    assert capsys.readouterr().out == ("scenario_nb loaded: no credentials set, so generations run on the embedded "
                                       "sandbox and nothing is charged (%scenario help)\n")
    unload(ip)
    monkeypatch.setenv("SCENARIO_API_SECRET", env.api_secret)
    monkeypatch.delenv("SCENARIO_API_KEY")
    load(ip)
    assert "no credentials set" in capsys.readouterr().out


def test_unload_removes_the_magics_and_closes_the_session(ip, env):
    from scenario_nb import _session
    assert magics_of(ip).session is not None
    unload(ip)
    assert "scenario" not in ip.magics_manager.magics["line"]
    assert "scenario" not in ip.magics_manager.magics["cell"]
    assert "ScenarioMagics" not in ip.magics_manager.registry
    assert not any(isinstance(c, ScenarioMagics) for c in ip.configurables)
    assert _session.current_session() is None
    unload(ip)  # unloaded already: nothing to remove, no error


class ShellConfig:
    def __init__(self, section):
        self.config = {"ScenarioMagics": section} if section is not None else {}


def test_refused_settings_in_the_config_are_dropped_one_line_each(capsys):
    section = {"thumbnail_size": 5, "max_cost": -1, "wait": False, "not_a_setting": 3, "default_aspect": "16:9"}
    _drop_refused_settings(ShellConfig(section))
    assert section == {"wait": False, "not_a_setting": 3, "default_aspect": "16:9"}
    assert capsys.readouterr().out.splitlines() == [
        "scenario_nb: ignored ScenarioMagics.thumbnail_size from your config (thumbnail_size must be between 64 and "
        "4096 pixels); using the default",
        "scenario_nb: ignored ScenarioMagics.max_cost from your config (max_cost must be 0 or more creative units, "
        "or None to turn the guard off); using the default"]
    _drop_refused_settings(ShellConfig(None))  # no section: nothing to do
    assert capsys.readouterr().out == ""


# -- _commands.py: the parsing shared with cells ---------------------------------------------------------------
def test_fill_prompt():
    ns = {"creature": "dragon", "n": 3, "_x9": "y"}
    assert _commands.fill_prompt("a {creature} ({n}) {_x9} {unknown} {{creature}} }} {{ {9x}", ns) == \
        "a dragon (3) y {unknown} {creature} } { {9x}"
    assert _commands.fill_prompt("{Creature}", {"Creature": "Z"}) == "Z"


def test_settings_pairs():
    assert _commands.settings(None) == {} and _commands.settings([]) == {}
    assert _commands.settings([" steps =20", "prompt=a=b", "empty="]) == {"steps": "20", "prompt": "a=b",
                                                                           "empty": ""}
    for bad in ("steps", "=3", "  =3"):
        with pytest.raises(InputError) as caught:
            _commands.settings(["ok=1", bad])
        assert str(caught.value) == f"--set takes NAME=VALUE, not {bad!r}"


def test_refuse_reserved():
    _commands.refuse_reserved({"seed": "1", "style": "x"}, {"modelId"})
    for name, why in (("prompt", "the cell body is the prompt"),
                      ("model", "MODEL (or %scenario use) chooses the model"), ("modelId", "MODEL sets modelId")):
        with pytest.raises(InputError) as caught:
            _commands.refuse_reserved({"seed": "1", name: "x"}, {"modelId"})
        assert str(caught.value) == f"--set {name}=: {why}; drop this --set (nothing was sent)"


def test_training_parameters_are_typed():
    assert _commands.training_parameters({
        "a": "TRUE", "b": " false ", "c": "12", "d": "1.5", "e": "word", "f": ' ["x", 2] ', "g": " 7 ",
        "samplePrompts": "a potion", "sampleSourceImages": '["img"]', "h": "1e3", "i": "trueish"}) == {
        "a": True, "b": False, "c": 12, "d": 1.5, "e": "word", "f": ["x", 2], "g": 7,
        "samplePrompts": ["a potion"], "sampleSourceImages": ["img"], "h": 1000.0, "i": "trueish"}
    assert _commands.training_parameters({"samplePrompts": " 5 "}) == {"samplePrompts": [" 5 "]}
    with pytest.raises(InputError) as caught:
        _commands.training_parameters({"samplePrompts": "[not json"})
    assert str(caught.value) == '--set samplePrompts= takes a JSON list such as ["a potion", "a sword"]'
    assert caught.value.__cause__ is None


def test_check_variable():
    _commands.check_variable(None)
    _commands.check_variable("ok_name")
    with pytest.raises(UsageError) as caught:
        _commands.check_variable("my-var.x")
    assert str(caught.value) == "-o takes a Python variable name, not 'my-var.x' (e.g. -o my_var_x)"
    with pytest.raises(UsageError) as caught:
        _commands.check_variable("class")
    assert str(caught.value) == ("-o class: 'class' is a Python keyword, not a variable name you could use; "
                                 "e.g. -o class_")


def test_check_save_folder(tmp_path):
    _commands.check_save_folder(None)
    _commands.check_save_folder("")
    _commands.check_save_folder(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError) as caught:
        _commands.check_save_folder(str(blocker / "sub"))
    assert str(caught.value) == (f"--save {blocker / 'sub'}: cannot write there (Not a directory); nothing was "
                                 f"sent. Pick a folder you can write to")
    assert caught.value.__cause__ is None


def test_check_save_folder_expands_the_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _commands.check_save_folder("~/saved")
    assert (tmp_path / "saved").is_dir()


def test_check_save_folder_without_an_os_reason(tmp_path, monkeypatch):
    import tempfile

    def refuse(dir=None):
        raise OSError("no reason")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(UsageError) as caught:
        _commands.check_save_folder(str(tmp_path))
    assert str(caught.value) == (f"--save {tmp_path}: cannot write there (no reason); nothing was sent. Pick a "
                                 f"folder you can write to")


def test_the_subcommand_parser_and_its_required_words():
    args = _commands._parse("x", ["a", "b", "--flag", "c"], (("name",), _commands.NAME_WORDS),
                            (("--flag",), {"action": "store_true"}))
    assert args.name == ["a", "b", "c"] and args.flag is True
    assert _commands._parse("x", [], (("name",), _commands.NAME_WORDS)).name == []
    with pytest.raises(UsageError) as caught:
        _commands._parse("x", ["--nope"], (("name",), _commands.NAME_WORDS))
    assert str(caught.value) == "%scenario x: unrecognized arguments: --nope"
    with pytest.raises(UsageError) as caught:
        _commands._parse("x", ["-h"])
    assert "unrecognized arguments: -h" in str(caught.value)  # no help option: no SystemExit
    assert _commands._words(["Hero", "Knight"]) == "Hero Knight"
    assert _commands._required("  v ", "what", "where") == "v"
    with pytest.raises(UsageError) as caught:
        _commands._required(" ", "model", "use", "e.g. X")
    assert str(caught.value) == "%scenario use: no model given; e.g. X"
    with pytest.raises(UsageError) as caught:
        _commands._required(None, "job id", "job")
    assert str(caught.value) == "%scenario job: no job id given"


def test_ellipsize():
    assert _commands._ellipsize(" a\n b  c ", 10) == "a b c"
    assert _commands._ellipsize("abcdef", 6) == "abcdef"
    assert _commands._ellipsize("abcdefg", 6) == "abcde…"


# -- _cells.py: the pure parts ---------------------------------------------------------------------------------
def test_parse_vary():
    assert _cells.parse_vary([]) == {}
    assert _cells.parse_vary([" seed =1, 2,3", "model=Hero Knight,\"FLUX.2 dev\"", "prompt", "scale=0.5,x",
                              "name='a, b',c"]) == {
        "seed": [1, 2, 3], "model": ["Hero Knight", "FLUX.2 dev"], "prompt": [], "scale": [0.5, "x"],
        "name": ["'a", "b'", "c"]}
    assert _cells.parse_vary(['name="a, b",c']) == {"name": ["a, b", "c"]}
    assert _cells.parse_vary(['name=c, "a, b"']) == {"name": ["c", "a, b"]}  # quoted after a space too
    assert _cells.parse_vary(["model=1,2", "prompt=3,x"]) == {"model": ["1", "2"], "prompt": ["3", "x"]}  # names
    assert _cells.parse_vary(["prompt=one,two"]) == {"prompt": ["one", "two"]}
    for spec in ("=1,2", "seed", " =1"):
        with pytest.raises(UsageError) as caught:
            _cells.parse_vary([spec])
        assert str(caught.value) == f"--vary takes AXIS=V1,V2 (e.g. --vary seed=1,2,3), not {spec!r}"
    with pytest.raises(UsageError) as caught:
        _cells.parse_vary(["seed=1", "seed=2"])
    assert str(caught.value) == "--vary seed is given twice; put all its values in one --vary seed=..."
    for text in ("", "1,,2", "1, "):
        with pytest.raises(UsageError) as caught:
            _cells.parse_vary([f"seed={text}"])
        assert str(caught.value) == f"--vary seed: an empty value in {text!r}; give values like seed=A,B"


def test_numbers_in_vary_values():
    assert _cells._number("3") == 3 and isinstance(_cells._number("3"), int)
    assert _cells._number("2.5") == 2.5 and _cells._number("x") == "x"


class M:
    def __init__(self, id="m1", type="", privacy="private", name="M"):
        self.id, self.type, self.privacy, self.name = id, type, privacy, name


def test_model_inputs_and_type_words():
    m = M("m1")
    assert _cells.model_inputs(m, {"modelId": "m1", "loras": ["m1"], "other": "m2", "many": ["m1", "m2"]}) == \
        {"modelId", "loras"}
    assert _cells.describe_type(M(type="flux.1-composition")) == "a composition"
    assert _cells.describe_type(M(type="flux.1-lora")) == "your LoRA"
    assert _cells.describe_type(M(type="flux.1-lora", privacy="public")) == "a LoRA"
    assert _cells.describe_type(M(type="flux.1")) == "a model"
    assert _cells.describe_type(M(type=None)) == "a model"


class H:
    def __init__(self, ok=True, job_id="job_1", request_id="req_1", words="running"):
        self.ok, self.job_id, self.request_id, self._words = ok, job_id, request_id, words

    def status_words(self):
        return self._words


def test_the_lines_a_cell_prints():
    assert _cells.reuse_line(H()) == ("Shown from history: this identical request is job job_1 (already paid for), "
                                      "so nothing new is paid for; add --force to generate again.")
    assert _cells.reuse_line(H(ok=False, job_id=None)) == (
        "Shown from history: this identical request is request req_1 (running), so nothing new is paid for; add "
        "--force to generate again.")
    long = "x" * 41
    assert _cells.repeated_lines_line(["a", "b", "a", long, "b", long, "a"]) == (
        "Repeated lines are one request each, sent once: 'a' (lines 1, 3, 7); 'b' (lines 2, 5); "
        f"'{'x' * 39}…' (lines 4, 6). For more images of one request, use -n N.")
    assert _cells.repeated_lines_line(["y" * 40, "y" * 40]) == (
        f"Repeated lines are one request each, sent once: '{'y' * 40}' (lines 1, 2). For more images of one "
        "request, use -n N.")
    assert _cells.interrupted_send_line([]) == (
        "Interrupted. Already sent (and followed in the background; it is in %scenario history): nothing. Running "
        "the cell again attaches to it instead of paying again; %scenario status shows it.")
    assert _cells.interrupted_send_line([H(), H(job_id=None, request_id="req_2", words="sending")]).startswith(
        "Interrupted. Already sent (and followed in the background; it is in %scenario history): job_1, request "
        "req_2 (sending). Running")


# -- _cells.py: a %%scenario cell ---------------------------------------------------------------------------------
GEMINI = "model_google-gemini-3-1-flash"
HERO = "model_HeroKnightLoRA7aB3cD4eF5gH6j"


def jobs(env) -> int:
    return env.stats()["jobs_created"]


def sent(env) -> int:
    return env.stats()["generate_posts"]


@pytest.mark.parametrize("cell, message", [
    ('%%scenario "Gemini\nx', "%%scenario: No closing quotation (check the quotes)"),
    ("%%scenario Gemini --public\nx", "%%scenario takes one MODEL; put the prompt in the cell body"),
    ("%%scenario Gemini -o 1x\nx", "-o takes a Python variable name, not '1x' (e.g. -o 1x)"),
    ("%%scenario Gemini\n  \n ", "empty prompt: write what to generate in the cell body under %%scenario"),
    ("%%scenario Gemini --each\n  \n ", "empty prompt: write what to generate in the cell body under %%scenario"),
    ("%%scenario Gemini --seed 0 --set seed=3\nx", "--set seed= and the --seed flag both set seed; keep one"),
    ("%%scenario Gemini -n 1 --set numOutputs=2\nx", "--set numOutputs= and the -n flag both set numOutputs; keep "
                                                     "one"),
    ("%%scenario Hero Knight --set modelId=x\nx", "--set modelId=: MODEL sets modelId; drop this --set (nothing "
                                                  "was sent)"),
    ("%%scenario Gemini --set prompt=x\nx", "--set prompt=: the cell body is the prompt; drop this --set (nothing "
                                            "was sent)"),
])
def test_a_cell_refuses_before_sending(ip, env, cell, message):
    before = sent(env)
    assert error_of(ip, cell) == message
    assert sent(env) == before


def test_a_cell_with_a_folder_it_cannot_write_sends_nothing(ip, env, tmp_path):
    (tmp_path / "f").write_text("x")
    before = sent(env)
    assert error_of(ip, f"%%scenario Gemini --save {tmp_path / 'f' / 'sub'}\nx").startswith("--save ")
    assert sent(env) == before


def test_a_model_named_in_several_words_and_the_cell_binds_its_generation(ip, env, shown):
    result, out = run(ip, "%%scenario Hero Knight -o h -a 16:9\nthe hero")
    h = ip.user_ns["h"]
    assert h.model_id == HERO and shown[0][1] == [h]
    assert out.stdout == "Hero Knight is your LoRA: it runs through FLUX.2 dev\n"
    assert h.inputs["width"] == 1344 and h.inputs["modelId"] == HERO
    result, out = run(ip, "%%scenario Hero Knight -o h2 -a 16:9\nthe hero again")
    assert out.stdout == ""  # said once per session and model
    assert ip.user_ns["h2"].wait(30).ok and h.wait(30).ok


def test_a_runnable_model_says_nothing_about_routing(ip, env, shown):
    result, out = run(ip, "%%scenario Gemini -o g\na key")
    assert out.stdout == "" and ip.user_ns["g"].model_id == GEMINI


def test_each_line_once_and_the_variable_in_line_order(ip, env, shown):
    before = jobs(env)
    result, out = run(ip, "%%scenario Gemini --each -o batch\nan apple\n\n a pear \nan apple\n")
    batch = ip.user_ns["batch"]
    assert [g.prompt for g in batch] == ["an apple", "a pear", "an apple"] and batch[0] is batch[2]
    assert out.stdout == ("Repeated lines are one request each, sent once: 'an apple' (lines 1, 3). For more images "
                          "of one request, use -n N.\n")
    assert len(shown[0][1]) == 2
    for g in batch:
        g.wait(30)
    assert jobs(env) == before + 2


def test_without_each_the_body_is_one_prompt(ip, env, shown):
    run(ip, "%%scenario Gemini -o g\n  line one\nline two  \n")
    assert ip.user_ns["g"].prompt == "line one\nline two"


def test_dry_run_shows_one_estimate_per_prompt_and_sends_nothing(ip, env, shown):
    before = jobs(env)
    result, out = run(ip, "%%scenario Gemini --dry-run --each -o g\na\nb")
    assert jobs(env) == before and len(out.outputs) == 2 and "g" not in ip.user_ns and shown == []
    assert all("CU" in str(o.data) for o in out.outputs)


def test_an_identical_request_is_shown_from_history_unless_forced_or_reuse_is_off(ip, env, shown):
    run(ip, "%%scenario Gemini -o a --seed 4\nthe same")
    first = ip.user_ns["a"]
    first.wait(30)
    before = jobs(env)
    result, out = run(ip, "%%scenario Gemini -o b --seed 4\nthe same")
    assert ip.user_ns["b"].job_id == first.job_id and jobs(env) == before
    assert out.stdout == (f"Shown from history: this identical request is job {first.job_id} (already paid for), "
                          "so nothing new is paid for; add --force to generate again.\n")
    run(ip, "%%scenario Gemini -o c --seed 4 --force\nthe same")
    assert ip.user_ns["c"].job_id != first.job_id
    ip.run_cell("%config ScenarioMagics.reuse = False")
    run(ip, "%%scenario Gemini -o d --seed 4\nthe same")
    assert ip.user_ns["d"].request_id not in (first.request_id, ip.user_ns["c"].request_id)
    for name in "cd":
        ip.user_ns[name].wait(30)
    assert jobs(env) == before + 2


def test_the_spend_guard_prices_only_the_new_requests(ip, env, shown, monkeypatch):
    magics = magics_of(ip)
    asked: list = []
    monkeypatch.setattr(magics, "_spend_guard", lambda total: asked.append(total))
    run(ip, "%%scenario Gemini -o a --seed 8\nfirst")
    assert asked == []  # no max_cost: never asked
    ip.user_ns["a"].wait(30)
    magics.max_cost = 0.0
    price = magics.client.estimate(magics.client.find_model("Gemini"), "x", seed=8).creative_units
    run(ip, "%%scenario Gemini --each --seed 8 -o b\nfirst\nsecond\nthird")
    assert asked == [pytest.approx(2 * price)]
    run(ip, "%%scenario Gemini --seed 8 -o c\nfirst")
    assert len(asked) == 1  # all shown from history: nothing to guard
    for g in ip.user_ns["b"]:
        g.wait(30)


def test_the_spend_guard_refusing_sends_nothing(ip, env, shown):
    ip.run_cell("%config ScenarioMagics.max_cost = 0")
    before = jobs(env)
    assert error_of(ip, "%%scenario Gemini\nx").startswith("refused: this run is estimated at ")
    assert jobs(env) == before


def test_ctrl_c_while_sending_says_what_was_sent(ip, env, shown, monkeypatch):
    magics = magics_of(ip)

    class Sent:
        job_id, request_id = "job_77", "req_1"

    def interrupted(*args, **kwargs):
        exc = KeyboardInterrupt()
        exc.handles = [Sent()]
        raise exc

    monkeypatch.setattr(magics.client, "generate_many", interrupted)
    result, out = run(ip, "%%scenario Gemini -o g\nx")
    assert result.error_in_exec is None and "g" not in ip.user_ns and shown == []
    assert out.stdout == _cells.interrupted_send_line([Sent()]) + "\n"

    def bare(*args, **kwargs):
        raise KeyboardInterrupt()

    monkeypatch.setattr(magics.client, "generate_many", bare)
    result, out = run(ip, "%%scenario Gemini\ny")
    assert out.stdout == _cells.interrupted_send_line([]) + "\n"


def test_waiting_thumbnails_and_saving(ip, env, shown, tmp_path, capsys):
    magics = magics_of(ip)
    magics.thumbnail_size = 100
    run(ip, f"%%scenario Gemini -o g --save {tmp_path / 's'}\nx")
    kind, handles, kw = shown[-1]
    assert kw["wait"] is True and kw["thumbnail_size"] == 100 and kw["after"] is not None
    g = ip.user_ns["g"].wait(30)
    capsys.readouterr()
    kw["after"](g)
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert len(names) == 2 and capsys.readouterr().out == f"Saved 1 file(s) and {names[0]} to {tmp_path / 's'}\n"
    run(ip, "%%scenario Gemini --no-wait\ny")
    assert shown[-1][2]["wait"] is False and shown[-1][2]["after"] is None
    magics.wait = False
    run(ip, "%%scenario Gemini\nz")
    assert shown[-1][2]["wait"] is False


def test_a_failed_generation_saves_nothing(ip, env, shown, tmp_path, capsys):
    env.inject("job_failure", error="no")
    run(ip, f"%%scenario Gemini -o g --save {tmp_path / 's'}\nx")
    g = ip.user_ns["g"]
    g._done.wait(30)
    capsys.readouterr()
    shown[-1][2]["after"](g)
    assert capsys.readouterr().out == "" and list((tmp_path / "s").iterdir()) == []


def test_save_expands_the_home(ip, env, shown, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    run(ip, "%%scenario Gemini -o g --save ~/out\nx")
    g = ip.user_ns["g"].wait(30)
    shown[-1][2]["after"](g)
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_the_model_a_cell_uses(ip, env, shown, monkeypatch):
    magics = magics_of(ip)
    magics.default_model = "Gemini"
    run(ip, "%%scenario -o a\nx")
    assert ip.user_ns["a"].model_id == GEMINI
    magics.session.current_model = "FLUX.2 dev"
    run(ip, "%%scenario -o b\nx")
    assert ip.user_ns["b"].model_id == "model_bfl-flux-2-dev"
    run(ip, "%%scenario Gemini -o c\nx")
    assert ip.user_ns["c"].model_id == GEMINI
    magics.session.current_model, magics.default_model = None, ""
    names = ", ".join(m.name for m in magics.client.models()[:3])
    assert error_of(ip, "%%scenario\nx") == (f"no model given: write %%scenario MODEL (e.g. {names}) or pick one "
                                             "with %scenario use MODEL")
    monkeypatch.setattr(type(magics.client), "models", lambda self, **kw: [])
    assert error_of(ip, "%%scenario\nx") == ("no model given: write %%scenario MODEL (e.g. see %scenario models "
                                             "--public) or pick one with %scenario use MODEL")


def test_the_default_aspect_when_the_model_has_it(ip, env, shown):
    magics = magics_of(ip)
    magics.default_aspect = "16:9"
    run(ip, "%%scenario Gemini -o a\nx")
    assert ip.user_ns["a"].inputs.get("aspectRatio") == "16:9"
    run(ip, "%%scenario Gemini -o b -a 1:1\nx")
    assert ip.user_ns["b"].inputs.get("aspectRatio") == "1:1"
    magics.default_aspect = "21:9"
    run(ip, "%%scenario FLUX.2 dev -o c\nx")
    assert ip.user_ns["c"].inputs.get("width") == 1568
    magics.default_aspect = ""
    run(ip, "%%scenario Gemini -o d\nx")
    assert "aspectRatio" not in ip.user_ns["d"].inputs
    assert magics.cells._default_aspect(magics.client.find_model("Gemini")) is None
    magics.default_aspect = "5:1"
    assert magics.cells._default_aspect(magics.client.find_model("Gemini")) is None
    magics.default_aspect = "32:18"
    assert magics.cells._default_aspect(magics.client.find_model("Gemini")) == "32:18"
    run(ip, "%%scenario Gemini -o e\nx")
    assert ip.user_ns["e"].inputs.get("aspectRatio") == "16:9"


# -- _cells.py: a grid --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell, message", [
    ("%%scenario Gemini --vary seed=1,2 --public\nx", "%%scenario --vary: give one MODEL (or a model axis) and no "
                                                      "--each; each --vary is one axis"),
    ("%%scenario Gemini --vary seed=1,2 --each\nx", "%%scenario --vary: give one MODEL (or a model axis) and no "
                                                    "--each; each --vary is one axis"),
    ("%%scenario Gemini --vary seed=1,2 -o 1x\nx", "-o takes a Python variable name, not '1x' (e.g. -o 1x)"),
    ("%%scenario Gemini --vary prompt\n \n", "--vary prompt: write one prompt per line in the cell body"),
    ("%%scenario Gemini --vary seed=1,2\n  ", "empty prompt: write what to generate in the cell body under "
                                              "%%scenario"),
    ("%%scenario Gemini --vary seed=1,2 --seed 0\nx", "--seed and --vary seed both set the seed; keep one"),
    ("%%scenario Gemini --vary 'model=Gemini,FLUX.2 dev'\nx", "MODEL (Gemini) and --vary model both choose the model; "
                                                            "keep one"),
    ("%%scenario Gemini --vary seed=1,2 --set seed=3\nx", "--set seed= and --vary seed both set seed; keep one"),
    ("%%scenario --vary 'model=Gemini,Hero Knight' --set modelId=x\nx", "--set modelId=: MODEL sets modelId; drop "
                                                                       "this --set (nothing was sent)"),
    ("%%scenario Gemini --vary resolution=1K --vary seed=1,2 --set seed=1 --set resolution=2K\nx",
     "--set resolution= and --vary resolution both set resolution; keep one"),
])
def test_a_grid_refuses_before_sending(ip, env, cell, message):
    before = sent(env)
    assert error_of(ip, cell) == message
    assert sent(env) == before


def test_a_grid_with_a_folder_it_cannot_write_sends_nothing(ip, env, tmp_path):
    (tmp_path / "f").write_text("x")
    assert error_of(ip, f"%%scenario Gemini --vary seed=1,2 --save {tmp_path / 'f' / 's'}\nx").startswith("--save ")


def test_a_grid_of_prompts_and_its_dry_run(ip, env, shown):
    before = jobs(env)
    result, out = run(ip, "%%scenario Gemini --vary prompt --dry-run -o g\n a cat \n\na dog")
    assert jobs(env) == before and shown == [] and "g" not in ip.user_ns
    line = out.outputs[0].data["text/plain"]
    assert out.outputs[0].data["text/markdown"] == line
    assert line.startswith("Estimated cost: ") and line.endswith(" CU for 2 new tile(s) of 2 — dry run, nothing was "
                                                                 "spent.")
    run(ip, "%%scenario Gemini --vary prompt -o g\n a cat \n\na dog")
    grid = ip.user_ns["g"]
    assert [t.prompt for t in grid.tiles] == ["a cat", "a dog"]
    assert shown[-1][0] == "grid" and shown[-1][1] is grid and shown[-1][2]["wait"] is True
    assert shown[-1][2]["after"] is None
    grid.wait(30)
    result, out = run(ip, "%%scenario Gemini --vary prompt --dry-run\na cat\na bird")
    assert out.outputs[0].data["text/plain"].endswith(" CU for 1 new tile(s) of 2 (1 already paid for) — dry run, "
                                                      "nothing was spent.")


def test_a_grid_shown_from_history_in_part_and_in_whole(ip, env, shown):
    run(ip, "%%scenario Gemini --vary seed=1,2 -o g\nx")
    ip.user_ns["g"].wait(30)
    result, out = run(ip, "%%scenario Gemini --vary seed=1,2,3\nx")
    assert out.stdout == ("Shown from history: 2 of the grid's 3 requests were already sent (identical), so nothing "
                          "new is paid for them; add --force to generate again.\n")
    result, out = run(ip, "%%scenario Gemini --vary seed=1,4 --no-wait\nx")
    assert out.stdout == ("Shown from history: 1 of the grid's 2 requests was already sent (identical), so nothing "
                          "new is paid for it; add --force to generate again.\n")
    assert shown[-1][2]["wait"] is False
    before = sent(env)
    result, out = run(ip, "%%scenario Gemini --vary seed=1,4 --force\nx")
    assert out.stdout == "" and sent(env) == before + 2


def test_a_grid_through_a_lora_says_so_once_and_the_guard_prices_it(ip, env, shown, monkeypatch):
    magics = magics_of(ip)
    asked: list = []
    monkeypatch.setattr(magics, "_spend_guard", lambda total: asked.append(total))
    result, out = run(ip, "%%scenario --vary 'model=Hero Knight,Gemini' --vary seed=1,2\nx")
    assert out.stdout == "Hero Knight is your LoRA: it runs through FLUX.2 dev\n" and asked == []
    magics.max_cost = 0.0
    result, out = run(ip, "%%scenario --vary 'model=Hero Knight,Gemini' --vary seed=3,4\nx")
    assert out.stdout == "" and len(asked) == 1 and asked[0] > 0
    result, out = run(ip, "%%scenario --vary 'model=Hero Knight,Gemini' --vary seed=3,4\nx")
    assert len(asked) == 1  # nothing new: no guard


def test_ctrl_c_while_a_grid_is_sent(ip, env, shown, monkeypatch):
    from scenario_nb import _grid

    def interrupted(self):
        raise KeyboardInterrupt()

    monkeypatch.setattr(_grid.GridPlan, "start", interrupted)
    result, out = run(ip, "%%scenario Gemini --vary seed=1,2 -o g\nx")
    assert result.error_in_exec is None and shown == [] and "g" not in ip.user_ns
    assert out.stdout == ("Interrupted while sending the grid. Tiles already sent go on in the background (they are "
                          "in %scenario history); running the cell again attaches to them instead of paying again.\n")


def test_a_grid_saved(ip, env, shown, tmp_path, capsys):
    magics_of(ip).wait = False
    run(ip, f"%%scenario Gemini --vary seed=1,2 -o g --save {tmp_path / 's'}\nx")
    kind, grid, kw = shown[-1]
    assert kw["wait"] is False and kw["after"] is not None
    grid.wait(30)
    capsys.readouterr()
    kw["after"](grid)
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    out = capsys.readouterr().out
    assert out == f"Saved the sheet, 4 tile file(s) and grid.json to {tmp_path / 's'}\n"
    assert len(files) == 6 and "grid.json" in files


# -- _commands.py: %scenario SUBCOMMAND ---------------------------------------------------------------------------
def test_dispatch_and_what_a_line_cannot_be(ip, env, monkeypatch):
    magics = magics_of(ip)
    assert error_of(ip, '%scenario use "Gemini') == "%scenario: No closing quotation (check the quotes)"
    assert error_of(ip, "%scenario frobnicate x") == (
        "unknown %scenario command 'frobnicate'; one of: models, model, use, status, history, job, cancel, wait, "
        "asset, workflows, workflow, train, training, panel, sandbox, use-credentials, help (a generation is a "
        "%%scenario cell)")
    called: list = []
    monkeypatch.setattr(magics.commands, "cmd_status", lambda rest: called.append(("status", rest)))
    monkeypatch.setattr(magics.commands, "cmd_use_credentials", lambda rest: called.append(("creds", rest)))
    monkeypatch.setattr(magics.training_commands, "cmd_train", lambda rest: called.append(("train", rest)) or 5)
    monkeypatch.setattr(magics.training_commands, "cmd_training", lambda rest: called.append(("training", rest)))
    assert magics.commands.run("") is None and magics.commands.run("use-credentials a") is None
    assert magics.commands.run("train x 'y z'") == 5
    magics.commands.run("training")
    assert called == [("status", []), ("creds", ["a"]), ("train", ["x", "y z"]), ("training", [])]


def test_help_prints_the_usage_then_the_training_help(ip, env, capsys):
    magics = magics_of(ip)
    magics.commands.cmd_help([])
    assert capsys.readouterr().out == magics.scenario.__doc__ + "\n" + _commands.TRAINING_HELP + "\n"


def test_models_passes_its_options_or_goes_to_drafts(ip, env, monkeypatch):
    from scenario_nb import _model_list
    magics = magics_of(ip)
    asked: list = []
    monkeypatch.setattr(_model_list, "show_models", lambda client, **kw: asked.append((client, kw)))
    monkeypatch.setattr(magics.training_commands, "delete_draft", lambda name: asked.append(("delete", name)))
    monkeypatch.setattr(magics.training_commands, "drafts", lambda: asked.append(("drafts",)))
    c = magics.commands
    c.cmd_models([])
    c.cmd_models(["Hero", "Knight", "--type", "lora"])
    c.cmd_models(["--search", "flux", "dev", "--public", "--all"])
    c.cmd_models(["--search", "a", "other", "words"])
    c.cmd_models(["delete", "Potion", "Icons"])
    c.cmd_models(["--drafts"])
    assert [a[1] for a in asked[:4]] == [
        {"search": "", "kind": "", "public": False, "everything": False},
        {"search": "Hero Knight", "kind": "lora", "public": False, "everything": False},
        {"search": "flux dev", "kind": "", "public": True, "everything": True},
        {"search": "a other words", "kind": "", "public": False, "everything": False}]
    assert all(a[0] is magics.client for a in asked[:4])
    assert asked[4:] == [("delete", "Potion Icons"), ("drafts",)]


def test_model_prints_its_line_and_its_inputs(ip, env):
    result, out = run(ip, "%scenario model Gemini")
    model = magics_of(ip).client.find_model("Gemini")
    assert out.stdout == f"{model.name} ({model.id}) · {model.type} · {model.status} · {model.privacy}\n"
    table = out.outputs[0].data["text/plain"].splitlines()
    assert table[0].split() == ["input", "label", "type", "and", "limits"]
    assert [row.split()[0] for row in table[1:]] == [i.name for i in model.inputs]
    result, out = run(ip, "%scenario model Hero Knight")
    lines = out.stdout.splitlines()
    assert lines[1] == f"Runs through FLUX.2 dev (model_bfl-flux-2-dev) with {{'modelId': '{HERO}'}}"
    base = magics_of(ip).client.find_model("FLUX.2 dev")
    assert [row.split()[0] for row in out.outputs[0].data["text/plain"].splitlines()[1:]] == \
        [i.name for i in base.inputs]
    assert error_of(ip, "%scenario model") == "%scenario model: no model given; e.g. %scenario model FLUX.2 dev"


def test_use_sets_the_sessions_model(ip, env):
    result, out = run(ip, "%scenario use Hero Knight")
    assert magics_of(ip).session.current_model == HERO
    assert out.stdout == f"%%scenario cells now use Hero Knight ({HERO}) when they name no model\n"
    assert error_of(ip, "%scenario use") == "%scenario use: no model given; e.g. %scenario use Hero Knight"


def test_status_says_where_and_what_is_in_flight(ip, env, monkeypatch):
    magics = magics_of(ip)
    client = magics.client
    recovered: list = []
    monkeypatch.setattr(client, "recover", lambda: recovered.append(1))
    flying = [SimpleNamespace(status="waiting", job_id=None), SimpleNamespace(status="unknown", job_id=None),
              SimpleNamespace(status="sending", job_id=None), SimpleNamespace(status="unknown", job_id="job_1"),
              SimpleNamespace(status="in-progress", job_id="job_2")]
    monkeypatch.setattr(client, "in_flight", lambda: flying)
    monkeypatch.setattr(client, "trainings_in_flight", lambda: [SimpleNamespace(name="Cats"),
                                                                SimpleNamespace(name="Dogs")])
    result, out = run(ip, "%scenario status")
    assert recovered == [1]
    assert out.stdout.splitlines() == [
        magics.session.notice,
        f"backend: custom · URL: {env.url} · key: {client.api_key_masked} · credentials in the environment: set",
        f"in flight: 5 (1 queued here, not sent yet; 2 sent, answer lost, being looked for) · history: "
        f"{client.history_path}",
        "trainings in flight: 2 (Cats, Dogs); %scenario training shows them"]
    monkeypatch.setattr(client, "trainings_in_flight", lambda: [])
    monkeypatch.setattr(client, "in_flight", lambda: [])
    from scenario_nb import _env
    monkeypatch.setattr(_env, "credentials_from_env", lambda: (env.api_key, "", env.url))
    result, out = run(ip, "%scenario status")
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and lines[1].endswith("credentials in the environment: not set")
    assert lines[2].startswith("in flight: 0 (0 queued here, not sent yet; 0 sent, answer lost, being looked for)")


def test_status_on_the_sandbox_with_credentials_set(ip, env, monkeypatch):
    magics = magics_of(ip)
    monkeypatch.setattr(magics.session, "backend", "sandbox")
    monkeypatch.setattr(magics.client, "recover", lambda: None)
    result, out = run(ip, "%scenario status")
    assert "credentials in the environment: set (not used: %scenario use-credentials switches to them)" in out.stdout
    from scenario_nb import _env
    monkeypatch.setattr(_env, "credentials_from_env", lambda: ("", env.api_secret, env.url))
    result, out = run(ip, "%scenario status")
    assert out.stdout.splitlines()[1].endswith("credentials in the environment: not set")


class FakeSession:
    notice = "the new notice"
    announced = False


def test_sandbox_and_use_credentials_switch_the_session(ip, env, monkeypatch, capsys):
    from scenario_nb import _session
    magics = magics_of(ip)
    old = magics.session
    switched: list = []
    new = FakeSession()
    monkeypatch.setattr(_session, "replace_session", lambda **kw: switched.append(kw) or new)
    monkeypatch.setattr(old.client, "in_flight", lambda: [])
    capsys.readouterr()
    magics.commands.cmd_sandbox([])
    assert switched == [{"history_path": None, "force_sandbox": True}] and new.announced is True
    assert capsys.readouterr().out == "the new notice\n"
    monkeypatch.setattr(magics, "history_path", "/tmp/somewhere.sqlite")
    monkeypatch.setattr(old.client, "in_flight", lambda: [1, 2])
    magics.commands.cmd_use_credentials([])
    assert switched[-1] == {"history_path": "/tmp/somewhere.sqlite", "force_sandbox": False}
    assert capsys.readouterr().out == (f"the new notice\n2 request(s) on {env.url} keep running there and are still "
                                       f"followed to the end (and charged there if that backend charges).\n")


def test_a_switch_with_no_session_before(ip, env, monkeypatch, capsys):
    from scenario_nb import _session
    magics = magics_of(ip)
    _session.reset()
    monkeypatch.setattr(_session, "replace_session", lambda **kw: FakeSession())
    magics.commands._switch(force_sandbox=True)
    assert capsys.readouterr().out == "the new notice\n"


def test_sandbox_takes_nothing_or_reset_and_credentials_must_be_set(ip, env, monkeypatch):
    from scenario_nb import _session
    monkeypatch.setattr(_session, "reset_sandbox_world", lambda: "emptied")
    result, out = run(ip, "%scenario sandbox reset")
    assert out.stdout == "emptied\n"
    assert error_of(ip, "%scenario sandbox now please") == ("%scenario sandbox takes nothing, or reset (not 'now "
                                                            "please')")
    monkeypatch.delenv("SCENARIO_API_KEY")
    message = ("no SCENARIO_API_KEY and SCENARIO_API_SECRET in the environment; set them (e.g. os.environ[...] = ... "
               "in a cell that prints nothing), then run this again")
    assert error_of(ip, "%scenario use-credentials") == message
    monkeypatch.setenv("SCENARIO_API_KEY", env.api_key)
    monkeypatch.delenv("SCENARIO_API_SECRET")
    assert error_of(ip, "%scenario use-credentials") == message


def test_history_lists_the_rows(ip, env, monkeypatch):
    from scenario_nb._history import JobRecord
    magics = magics_of(ip)
    client = magics.client
    result, out = run(ip, "%scenario history")
    assert out.stdout.startswith(f"No jobs in {client.history_path} yet\n")
    lines_after: list = []
    monkeypatch.setattr(magics.training_commands, "workbench_lines", lambda: lines_after.append(1))
    h = client.history
    h.record(JobRecord("req_a", job_id="job_a", model_id="m1", model_name="Model One", status="success",
                       asset_ids=["asset_1", "asset_2"], cost=1.5, prompt="  a   red\npotion  ", created_at=86400.0))
    h.record(JobRecord("req_b", model_id="m2", status="sending", asset_ids=["asset_9"], cost=0.0,
                       prompt="x" * 70, created_at=86401.0))
    h.record(JobRecord("req_c", model_id="model_c", kind="model", status="success", created_at=86402.0))
    h.record(JobRecord("req_d", model_id="m4", status="unknown", created_at=86403.0))
    h.record(JobRecord("req_e", model_id="m5", kind="upload", status="unknown", created_at=86404.0))
    import time as _time
    result, out = run(ip, "%scenario history")
    rows = out.outputs[0].data["text/plain"].splitlines()
    assert rows[0].split() == ["when", "job", "model", "status", "outputs", "cost", "prompt"]
    stamp = _time.strftime("%m-%d %H:%M", _time.localtime(86400.0))
    by_id = {r.split()[2]: r for r in rows[1:]}
    assert set(by_id) == {"job_a", "asset_9", "model_c", "(req_d)", "(req_e)"}
    assert by_id["job_a"].split() == stamp.split() + ["job_a", "Model", "One", "success", "2", "1.5", "a", "red",
                                                      "potion"]
    assert by_id["asset_9"].split()[3:7] == ["m2", "sending", "1", "0"]
    assert by_id["asset_9"].split()[-1] == "x" * 59 + "…"
    assert by_id["(req_d)"].split()[3:6] == ["m4", "unknown", "0"] and len(by_id["(req_d)"].split()) == 6
    assert lines_after == [1]
    result, out = run(ip, "%scenario history 2")
    assert len(out.outputs[0].data["text/plain"].splitlines()) == 3
    for i in range(25):
        h.record(JobRecord(f"req_{i:02d}", model_id="m", status="success", created_at=90000.0 + i))
    result, out = run(ip, "%scenario history")
    assert len(out.outputs[0].data["text/plain"].splitlines()) == 21
    assert "invalid int value" in error_of(ip, "%scenario history many")


def test_a_row_without_a_date_is_dated_the_epoch(ip, env, monkeypatch):
    from scenario_nb._history import JobRecord
    magics = magics_of(ip)
    monkeypatch.setattr(magics.training_commands, "workbench_lines", lambda: None)
    magics.client.history.record(JobRecord("req_z", job_id="job_z", model_id="m", status="success", created_at=0.0))
    import time as _time
    monkeypatch.setattr(magics.client.history, "recent", lambda n: [
        JobRecord("req_z", job_id="job_z", model_id="m", status="success", created_at=None)])
    result, out = run(ip, "%scenario history")
    assert out.outputs[0].data["text/plain"].splitlines()[1].startswith(
        _time.strftime("%m-%d %H:%M", _time.localtime(0)))


def test_job_shows_a_stored_job_reattaches_and_refuses_what_is_not_there(ip, env, monkeypatch):
    magics = magics_of(ip)
    calls: list = []
    monkeypatch.setattr(_commands, "show_generations", lambda handles, **kw: calls.append((handles, kw)))
    assert error_of(ip, "%scenario job") == "%scenario job: no job id given; %scenario history lists them"
    assert error_of(ip, "%scenario job job_nope") == (f"job job_nope not found on {env.url}; check the id with "
                                                      "%scenario history")
    run(ip, "%%scenario Gemini -o g\nx")
    g = ip.user_ns["g"].wait(30)
    calls.clear()
    magics.thumbnail_size = 99
    run(ip, f"%scenario job {g.job_id}")
    (handles, kw), = calls
    assert [h.job_id for h in handles] == [g.job_id] and kw == {"wait": True, "thumbnail_size": 99}
    monkeypatch.setattr(magics.client, "stored_job", lambda job_id: None)
    reattached: list = []
    monkeypatch.setattr(magics.client, "job", lambda job_id: reattached.append(job_id) or "the handle")
    run(ip, f"%scenario job {g.job_id}")
    assert reattached == [g.job_id] and calls[-1] == (["the handle"], {"wait": True, "thumbnail_size": 99})


def test_a_job_of_another_backend(ip, env, monkeypatch):
    from scenario_nb import _session
    from scenario_nb._history import JobRecord
    magics = magics_of(ip)
    client = magics.client
    monkeypatch.setattr(_commands, "show_generations", lambda handles, **kw: None)
    client.history.record(JobRecord("req_o", job_id="job_other", backend_id="elsewhere",
                                    backend_url="https://other.example/v1", status="in-progress"))
    assert error_of(ip, "%scenario job job_other") == (
        "job job_other ran on https://other.example/v1, which this kernel no longer talks to; switch back to it "
        "(%scenario use-credentials or %scenario sandbox)")
    asked: list = []
    other = SimpleNamespace(client=SimpleNamespace(job=lambda job_id: asked.append(job_id) or "h",
                                                   base_url="https://other.example/v1"))
    monkeypatch.setattr(_session, "session_for", lambda backend_id: other if backend_id == "elsewhere" else None)
    run(ip, "%scenario job job_other")
    assert asked == ["job_other"]


def test_cancel_one_job_or_everything_queued_first(ip, env, monkeypatch):
    magics = magics_of(ip)
    client = magics.client
    assert error_of(ip, "%scenario cancel") == "%scenario cancel: no job id (or all) given"
    monkeypatch.setattr(client, "in_flight", lambda: [])
    result, out = run(ip, "%scenario cancel all")
    assert out.stdout == "Nothing in flight to cancel\n"
    order: list = []

    def handle(status, job_id, request_id, outcome, note):
        h = SimpleNamespace(status=status, job_id=job_id, request_id=request_id, model_name="Gemini", note=note)
        h.cancel = lambda: order.append(request_id) or outcome
        return h

    flying = [handle("in-progress", "job_1", "req_1", "requested", "asked"),
              handle("waiting", None, "req_2", "dropped", "dropped here"),
              handle("queued", "job_3", "req_3", "requested", "asked too")]
    monkeypatch.setattr(client, "in_flight", lambda: flying)
    result, out = run(ip, "%scenario cancel all")
    assert order == ["req_2", "req_1", "req_3"]
    assert out.stdout.splitlines() == ["req_2 (Gemini): dropped here", "job_1 (Gemini): asked",
                                       "job_3 (Gemini): asked too", "Cancel all: 1 dropped, 2 requested"]
    one = SimpleNamespace(job_id="job_9", note="cancel requested")
    one.cancel = lambda: order.append("one")
    monkeypatch.setattr(client, "job", lambda job_id: one if job_id == "job_9" else None)
    result, out = run(ip, "%scenario cancel job_9")
    assert order[-1] == "one" and out.stdout == "job_9: cancel requested\n"


def test_wait_for_what_is_in_flight(ip, env, monkeypatch):
    magics = magics_of(ip)
    client = magics.client
    monkeypatch.setattr(client, "in_flight", lambda: [])
    result, out = run(ip, "%scenario wait")
    assert out.stdout == "Nothing in flight\n"
    waited: list = []
    good = SimpleNamespace(status="in-progress", ok=True, summary=lambda: "job_1 Gemini\nline two")
    bad = SimpleNamespace(status="waiting", ok=False, summary=lambda: "job_2 Gemini failed")
    monkeypatch.setattr(client, "in_flight", lambda: [good, bad])
    monkeypatch.setattr(_commands, "wait_all", lambda handles: waited.append(handles))
    result, out = run(ip, "%scenario wait")
    assert waited == [[good, bad]]
    assert out.stdout.splitlines() == ["Waiting for 2 request(s), 1 of them queued here", "✓ job_1 Gemini — line two",
                                       "✗ job_2 Gemini failed"]
    good.status = "queued"
    bad.status = "in-progress"
    result, out = run(ip, "%scenario wait")
    assert out.stdout.splitlines()[0] == "Waiting for 2 request(s)"

    def interrupted(handles):
        raise KeyboardInterrupt()

    monkeypatch.setattr(_commands, "wait_all", interrupted)
    result, out = run(ip, "%scenario wait")
    assert out.stdout.splitlines() == ["Waiting for 2 request(s)",
                                       "Stopped waiting; the jobs were not stopped (see %scenario status)"]


def test_asset_shows_one_or_says_it_is_not_there(ip, env, monkeypatch):
    magics = magics_of(ip)
    assert error_of(ip, "%scenario asset") == "%scenario asset: no asset id given"
    assert error_of(ip, "%scenario asset asset_nope") == f"asset asset_nope not found on {env.url}"
    run(ip, "%%scenario Gemini -o g\nx")
    g = ip.user_ns["g"].wait(30)
    seen: list = []
    from scenario_nb import _display
    real = _display.asset_bundle
    monkeypatch.setattr(_commands, "asset_bundle", lambda asset, path, size: seen.append(size) or real(asset, path,
                                                                                                     size))
    magics.thumbnail_size = 77
    result, out = run(ip, f"%scenario asset {g.asset_ids[0]}")
    assert seen == [77] and "image/jpeg" in out.outputs[0].data


def test_workflows_and_running_one(ip, env, monkeypatch):
    magics = magics_of(ip)
    result, out = run(ip, "%scenario workflows")
    rows = out.outputs[0].data["text/plain"].splitlines()
    assert rows[0].split() == ["name", "id", "status"]
    assert any(r.startswith("Character sheet") and "workflow_CharacterSheet5tU6vW7xY8z" in r for r in rows)
    monkeypatch.setattr(magics.client, "workflows", lambda: [])
    result, out = run(ip, "%scenario workflows")
    assert out.stdout == "No workflows\n" and out.outputs == []
    assert error_of(ip, "%scenario workflow workflow_nope") == (f"workflow workflow_nope not found on {env.url}; "
                                                                "list them with %scenario workflows")
    assert "-o takes a Python variable name" in error_of(ip, "%scenario workflow workflow_x -o 1x")
    calls: list = []
    monkeypatch.setattr(_commands, "show_generations", lambda handles, **kw: calls.append((handles, kw)))
    ran: list = []
    monkeypatch.setattr(magics.client, "run_workflow", lambda wid, **kw: ran.append((wid, kw)) or "the run")
    monkeypatch.setattr(magics.client, "workflow", lambda wid: magics.client.find_model("Gemini"))
    magics.thumbnail_size = 88
    run(ip, "%scenario workflow wf_1 --set seed=5 -o w")
    assert ran[0][0] == "wf_1" and ran[0][1]["source"] == "magic" and ran[0][1]["seed"] == 5
    assert ip.user_ns["w"] == "the run" and calls[-1] == (["the run"], {"wait": True, "thumbnail_size": 88})
    run(ip, "%scenario workflow wf_1 --no-wait")
    assert calls[-1][1]["wait"] is False
    magics.wait = False
    run(ip, "%scenario workflow wf_1")
    assert calls[-1][1]["wait"] is False


def test_panel_opens_on_the_named_model(ip, env, monkeypatch):
    from scenario_nb import _panel
    magics = magics_of(ip)
    made: list = []
    monkeypatch.setattr(_panel, "Panel", lambda model=None: made.append(model) or "panel")
    assert magics.commands.cmd_panel(["Hero", "Knight"]) == "panel"
    assert magics.commands.cmd_panel([]) == "panel"
    assert made == [HERO, None]


def test_settings_given_when_made_are_kept():
    made = ScenarioMagics(thumbnail_size=100, max_cost=2.0)
    assert (made.thumbnail_size, made.max_cost) == (100, 2.0)


def test_the_training_commands_reach_the_session(ip, env):
    result, out = run(ip, "%scenario models --drafts")
    assert result.error_in_exec is None, result.error_in_exec
    assert "No drafts" in out.stdout or "A draft is reused" in out.stdout
