"""What one cell sends: identical requests in it are one job, and bad values stop before the ledger.

Checked by effect: the requests the sandbox received, the jobs it created, and the history's rows.
"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import scenario_nb
from scenario_nb import InputError
from scenario_nb._history import History

from conftest import Kernel, RemoteSandbox, kernel_env, text_of

FLUX2, GEMINI, HERO = "model_bfl-flux-2-dev", "model_google-gemini-3-1-flash", "model_HeroKnightLoRA7aB3cD4eF5gH6j"


def run(ip, cell: str):
    with capture_output() as out:
        result = ip.run_cell(cell)
    return result, out


def creation_requests(sb) -> list:
    """Every request that could create a job (dry runs excepted)."""
    return [r for r in sb.requests if r["method"] in ("POST", "PUT") and "/generate/custom" in r["path"] and
            r["query"].get("dryRun") != "true"]


def rows(client) -> int:
    return client.history.count()


# -- Identical requests in one cell are one job ------------------------------------------------------------------------

def test_a_grid_value_written_two_ways_is_one_value_and_nothing_is_paid_twice(ip, env):
    """`--vary guidance=2,2.0`: the same value twice. Refused in one line before anything is sent (as `seed=1,1`
    is), never two identical paid jobs."""
    result, out = run(ip, '%%scenario "FLUX.2 dev" --vary guidance=2,2.0 --seed 4\na lantern')
    assert isinstance(result.error_in_exec, UsageError), (result.error_in_exec, out.stdout)
    assert "guidance" in str(result.error_in_exec) and "nothing was sent" in str(result.error_in_exec)
    assert "\n" not in str(result.error_in_exec).strip()
    assert env.stats()["jobs_created"] == 0 and not creation_requests(env)


def test_a_grid_number_is_the_same_request_as_the_same_number_set_by_hand(ip, env):
    """A tile for guidance 2 and a cell with `--set guidance=2` are one request: the second is shown from the
    first, not paid again (the grid's number is typed as `--set` types it)."""
    run(ip, '%%scenario "FLUX.2 dev" --vary guidance=2,3 --seed 4 -o gg\na lantern')
    ip.user_ns["gg"].wait(timeout=60)
    assert env.stats()["jobs_created"] == 2
    result, out = run(ip, '%%scenario "FLUX.2 dev" --set guidance=2 --seed 4 -o g\na lantern')
    assert result.error_in_exec is None, result.error_in_exec
    assert env.stats()["jobs_created"] == 2, "the same request was paid again"
    assert "Shown from history" in out.stdout


def test_repeated_each_lines_are_sent_once_and_reported_in_one_line(ip, env):
    """`--each` with a line given twice (and `--force`, so no re-use hides it): one job for it, one line saying
    so and pointing at `-n`; `-o` still holds one handle per line."""
    result, out = run(ip, "%%scenario Gemini --each --force --no-wait -o gs\na red kite\na blue kite\na red kite\n"
                          "a red kite")
    assert result.error_in_exec is None, result.error_in_exec
    handles = ip.user_ns["gs"]
    assert len(handles) == 4 and handles[0] is handles[2] is handles[3] and handles[0] is not handles[1]
    assert env.generate_posts == 2 and env.stats()["jobs_created"] == 2, "a repeated line was paid again"
    said = [line for line in out.stdout.splitlines() if "a red kite" in line]
    assert len(said) == 1 and "-n" in said[0] and "once" in said[0], out.stdout
    scenario_nb.wait_all(handles, timeout=60)
    assert rows(scenario_nb.client()) == 2


# -- Bad values stop before the ledger ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", [
    '%%scenario "FLUX.2 dev" --set prompt=x\na lantern',
    '%%scenario Gemini --each --set prompt=x\na lantern\na kite',
    '%%scenario "FLUX.2 dev" --vary seed=1,2 --set prompt=x\na lantern',
    '%%scenario "Hero Knight" --set modelId=model_bfl-flux-2-dev\na lantern',
    '%%scenario "FLUX.2 dev" --set model=Gemini\na lantern',
])
def test_a_reserved_name_in_set_is_one_line_and_sends_nothing(ip, env, cell):
    """The prompt is the cell body and the model is MODEL: `--set` naming either is refused in one line that says
    nothing was sent (before: a TypeError traceback for the prompt)."""
    result, out = run(ip, cell)
    assert isinstance(result.error_in_exec, UsageError), (result.error_in_exec, out.stdout, out.stderr)
    message = str(result.error_in_exec)
    assert "nothing was sent" in message and "\n" not in message.strip() and "Traceback" not in out.stderr
    assert not creation_requests(env) and env.stats()["jobs_created"] == 0
    assert rows(scenario_nb.client()) == 0


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("how", ["set", "vary"])
def test_a_number_that_is_not_finite_is_one_line_and_leaves_no_row(ip, env, value, how):
    """`--set guidance=nan` (or inf): refused before the ledger, in one line saying nothing was sent; before, it
    was never sent yet left an 'unknown' row ('may have been charged') forever."""
    flag = f"--set guidance={value}" if how == "set" else f"--vary guidance=2,{value}"
    result, out = run(ip, f'%%scenario "FLUX.2 dev" {flag} --seed 3\na lantern')
    assert isinstance(result.error_in_exec, UsageError), (result.error_in_exec, out.stdout, out.stderr)
    message = str(result.error_in_exec)
    assert "guidance" in message and "nothing was sent" in message and "\n" not in message.strip()
    assert not creation_requests(env) and env.stats()["jobs_created"] == 0
    assert rows(scenario_nb.client()) == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1.0, float("nan")]])
def test_generate_refuses_a_number_that_is_not_finite(client, sb, value):
    """The Python door too: InputError, no row, no request (also for an input the model does not type-check)."""
    name = "guidance" if not isinstance(value, list) else "lorasScale"
    extra = {} if name == "guidance" else {"loras": [HERO]}
    with pytest.raises(InputError, match=f"{name}.*nothing was sent"):
        client.generate(FLUX2, "a lantern", **{name: value}, **extra)
    assert not creation_requests(sb) and rows(client) == 0


# -- In a real kernel -------------------------------------------------------------------------------------------------

def test_in_a_real_kernel_bad_values_and_repeats_never_reach_the_ledger(tmp_path, sandbox_process):
    """As a notebook user meets them: `--set guidance=nan`, `--set prompt=x` and `--vary guidance=2,2.0` are each one
    line (no traceback, no 'may have been charged') and leave no row; a repeated `--each` line is one job."""
    remote = RemoteSandbox(sandbox_process["url"], sandbox_process["key"], sandbox_process["secret"])
    kernel = Kernel(kernel_env(tmp_path, sandbox_process))
    try:
        kernel.run("%load_ext scenario_nb")
        for cell in ('%%scenario "FLUX.2 dev" --set guidance=nan\na lantern',
                     '%%scenario "FLUX.2 dev" --set prompt=x\na lantern',
                     '%%scenario "FLUX.2 dev" --vary guidance=2,2.0\na lantern'):
            said = text_of(kernel.run(cell, allow_errors=True)).strip()  # IPython prints a UsageError on stderr
            assert said.startswith("UsageError: ") and "nothing was sent" in said, (cell, said)
            assert "\n" not in said and "Traceback" not in said and "charged" not in said
        text = text_of(kernel.run("%%scenario Gemini --each --force\na kite\na kite"))
        assert "sent once" in text and "-n" in text
        assert remote.stats()["jobs_created"] == 1
        assert History(tmp_path / "history.sqlite").count() == 1
    finally:
        kernel.kill()
