"""Each benchmark runs end to end in its quickest mode, so a refactor that breaks one is caught here.

No timing assertions (figures belong in the benchmarks' own tables): only that each one measured what it
says it measures, from outside the package (the sandbox's log, the public handles, our own clocks).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _measure  # noqa: E402
import bench_grid  # noqa: E402
import bench_notebook  # noqa: E402
import bench_poller  # noqa: E402
import bench_suite  # noqa: E402
import soak  # noqa: E402

POST = "/v1/generate/custom/model_x"


def _post(t):
    return {"time": t, "method": "POST", "path": POST}


def test_early_posts_follows_the_clients_own_backoff():
    """A POST 0.3 s after a header-less 429 is early, one after 0.8 s is not; two 429s in a row double it."""
    once = [{"time": 0.001, "header": False, "retry_after": 0.0}]  # answers the POST at 0.0
    assert _measure.early_posts([_post(0.0), _post(0.3)], once) == {"early": 1, "post_429s": 1, "posts": 2,
                                                                     "ambiguous_429s": 0,
                                                                     "early_gaps": [(0.299, 0.75)]}
    assert _measure.early_posts([_post(0.0), _post(0.8)], once)["early"] == 0
    twice = once + [{"time": 1.001, "header": False, "retry_after": 0.0}]  # answers the POST at 1.0: streak 2
    log = [_post(0.0), _post(1.0), _post(1.9), _post(2.6)]  # 1.9 < 1.0 + 1.5; 2.6 is not
    assert _measure.early_posts(log, twice)["early"] == 1
    # A 429 that may have answered another request just before is left out, not guessed.
    rival = [{"time": 0.0, "method": "GET", "path": "/v1/jobs/j"}, _post(0.0005), _post(0.3)]
    assert _measure.early_posts(rival, once)["ambiguous_429s"] == 1
    assert _measure.early_posts(rival, once)["early"] == 0
    # A sandbox that names the request a 429 answered is taken at its word.
    named = [{**once[0], "method": "POST", "path": POST}]
    assert _measure.early_posts(rival, named)["early"] == 1
    # A Retry-After promises exactly that long; a 429 on a GET closes nothing for POSTs.
    log = [_post(0.0), _post(0.6), {"time": 0.7, "method": "GET", "path": "/v1/jobs/j"}, _post(0.8)]
    limited = [{"time": 0.001, "header": True, "retry_after": 0.5},
               {"time": 0.701, "header": False, "retry_after": 0.0}]
    assert _measure.early_posts(log, limited)["early"] == 0
    assert _measure.early_posts(log, limited)["post_429s"] == 1


def test_bench_poller_quick_measures_every_row(capsys):
    result = bench_poller.main(["--quick", "--json"])
    rows = result["rows"]
    assert [(r["n"], r["kind"], r["cap"]) for r in rows] == [(1, "first", None), (4, "warm", None),
                                                             (8, "cold", None), (8, "warm", 4)]
    for row in rows:
        ours = row["ours"]
        assert ours["lost"] == 0, ours
        assert ours["polls_per_job"] >= 1 and ours["gets_per_job"] > ours["polls_per_job"], ours  # from the log
        assert ours["engine_cpu"] > 0 and ours["slowest"] > 0, ours
        assert ours["seen_median"] == ours["seen_median"], "no poll found after a success in the sandbox log"
    assert rows[-1]["ours"]["rate_limited"] >= 1, "the capped run met no 429"
    table = bench_poller.table(result)
    assert "cold" in table and "engine CPU" in table
    assert '"rows"' in capsys.readouterr().out


def test_soak_quick_counts_from_the_sandbox(capsys):
    result = soak.main(["--quick", "--json"])
    ours, sdk = result["ours"], result["sdk"]
    assert ours["submitted"] == 12 and sdk["submitted"] == 6
    assert ours["posts"] >= ours["submitted"] - ours["clean_failures"], ours
    assert ours["paid"] >= ours["succeeded"] > 0, ours
    assert sum(ours["faults_injected"].values()) > 0, ours
    assert "official SDK" in soak.table(result)


def test_bench_notebook_quick_runs(capsys):
    result = bench_notebook.main(["--quick", "--json"])
    assert result["bytes"]["ours_bytes"] > 0 and result["bytes"]["naive_bytes"] > result["bytes"]["ours_bytes"]
    assert result["kernel"]["images"] > 0
    assert "kernel blocked" in bench_notebook.table(result)


def test_bench_grid_quick_measures_every_row(capsys):
    result = bench_grid.main(["--quick", "--json"])
    assert result["jobs"] == 9 and result["ideal"] > 0
    for who in ("ours", "batches"):
        row = result[who]
        assert row["ok"] == 9 and row["jobs"] == 9 and row["posts"] >= 9, (who, row)  # from the sandbox's log
        assert row["posts"] - row["rate_limited"] == 9, (who, row)  # every POST not refused made one job
    assert result["guide"]["wall"] > 0
    assert result["bytes"]["separate_bytes"] > result["bytes"]["sheet_bytes"] > 0
    assert "wall ÷ ideal" in bench_grid.table(result)
    assert '"bytes"' in capsys.readouterr().out


def test_bench_suite_runs_both_commits_from_their_own_clones(capsys):
    """One test of each commit (it exists in both), alternating: each from its own clone, summary read."""
    result = bench_suite.main(["--runs", "1", "--json", "--select",
                               "tests/test_readme.py::test_readme_has_exactly_the_two_setup_commands -n 0"])
    assert set(result["runs"]) == {result["head"], result["baseline"]}
    for runs in result["runs"].values():
        assert len(runs) == 1 and runs[0]["wall"] > 0 and runs[0]["cpu"] > 0, runs
        assert runs[0]["summary"].startswith("1 passed") and runs[0]["returncode"] == 0, runs
    assert "| HEAD `" in bench_suite.table(result)


def test_bench_suite_keeps_the_names_of_the_tests_that_failed(tmp_path):
    """A failing run is worth reading afterwards: the failed tests' names are kept beside the summary."""
    (tmp_path / "test_two.py").write_text("def test_passes():\n    pass\n\n\ndef test_breaks():\n    assert 0\n")
    run = bench_suite.run_suite(tmp_path, 120, ["test_two.py", "-p", "no:randomly", "-p", "no:xdist"])
    assert run["returncode"] == 1 and run["failed"] == ["test_two.py::test_breaks"], run
    table = bench_suite.table({"head": "h", "baseline": "b", "runs": {"h": [run], "b": [run]}})
    assert "test_two.py::test_breaks" in table
