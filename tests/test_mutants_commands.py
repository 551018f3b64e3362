"""Tests written to kill the mutants mutmut planted in the `%scenario` line commands (`_commands.py`) that
tests/test_mutants_magics.py let live (the run, the figures and the equivalent mutants: tests/mutants-equivalent.md).

A user mistake is one `UsageError` line, and nothing is done; what a command does is checked by its effect (files
left or removed, the session replaced, what the sandbox counted) and by the exact line it prints.
"""

from __future__ import annotations

import tempfile

from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from scenario_nb import _commands
from scenario_nb._magics import ScenarioMagics


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


# -- %scenario sandbox ----------------------------------------------------------------------------------------------
def test_sandbox_reset_with_more_words_is_refused_and_resets_nothing(ip, env, tmp_path):
    blob = tmp_path / "home" / "sandbox" / "blobs" / "asset_kept"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"an image of the saved world")
    assert error_of(ip, "%scenario sandbox reset now") == (
        "%scenario sandbox reset takes nothing more (not 'now'); nothing was reset")
    assert blob.read_bytes() == b"an image of the saved world"
    result, out = run(ip, "%scenario sandbox reset")
    assert result.error_in_exec is None and not blob.exists()
    assert out.stdout.startswith(f"sandbox world of {tmp_path / 'home'}: ")


# -- --save DIR -------------------------------------------------------------------------------------------------------
def test_the_save_folder_is_tried_where_the_images_go_not_in_the_temp_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-temp-folder"))  # the system's: unusable
    _commands.check_save_folder(str(tmp_path / "saved"))
    assert (tmp_path / "saved").is_dir() and list((tmp_path / "saved").iterdir()) == []
