"""A pytest plugin for mutmut runs on the front door (tests/mutants-equivalent.md): the selected tests that need no
IPython shell or sandbox run first. mutmut stops a mutant at its first failing test (`-x`), and hands pytest the
tests that reach the function in no useful order, so a mutant of a pure function such as `check_save_folder`
waited behind a dozen shell tests (~10 s) for the millisecond test that kills it. Order only: every selected
test still runs, and a survivor still runs them all. Not loaded by default; for one run:

    PYTHONPATH=.:$PWD/tests PYTEST_ADDOPTS="-p mutants_order" python -m mutmut run --max-children 1 "..."
"""

import pytest

NEEDS_A_SHELL_OR_SERVER = {"ip", "env", "sandbox", "sb", "client"}


@pytest.hookimpl(trylast=True)  # after conftest's own order (the longest first), which it keeps within each group
def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: bool(NEEDS_A_SHELL_OR_SERVER & set(getattr(item, "fixturenames", ()))))
