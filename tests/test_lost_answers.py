"""A lost answer adopts its own job, found by time as well as by content: only a job the server created after the
request's intent was recorded (allowing for the difference between this machine's clock and the server's), the
earliest such, never an older identical one.

The sandbox's clock is driven (conftest `Clock`): moved on, a job made moments ago is a minute old; started back, the
server's clock is behind this machine's. Checked by effect: the jobs the sandbox made and the history's rows.
"""

from __future__ import annotations

import re
import time

import requests

from scenario_nb import OutcomeUnknownError, ScenarioClient, ScenarioError
from scenario_nb import sandbox as sandbox_mod
from scenario_nb._history import History

from conftest import SUITE_KEY, SUITE_SECRET, Clock, Kernel, RemoteSandbox, kernel_env, text_of, until

GEMINI = "model_google-gemini-3-1-flash"


def start_sandbox(clock: Clock, **options):
    return sandbox_mod.start(job_seconds=0.3, seed=5, api_key=SUITE_KEY, api_secret=SUITE_SECRET, clock=clock,
                             list_lag=2.0, **options)


def new_client(sb, home) -> ScenarioClient:
    return ScenarioClient(SUITE_KEY, SUITE_SECRET, sb.url, home=home)


def ended(handle, timeout: float = 60):
    try:
        handle.wait(timeout=timeout)
    except ScenarioError as exc:
        return exc
    return None


def generation_jobs(sb) -> list:
    """The sandbox's generation jobs in the order they were made (its demo training has a job too)."""
    return [job_id for job_id, job in sb.jobs.items() if not job.get("training")]


def listed(sb, job_id: str) -> bool:
    jobs = requests.get(f"{sb.url}/jobs", auth=(SUITE_KEY, SUITE_SECRET), timeout=10).json()["jobs"]
    return any(j["jobId"] == job_id for j in jobs)


def test_a_lost_answer_in_a_new_process_adopts_its_own_job_not_an_older_identical_one(tmp_path):
    """A minute earlier, the identical request was sent from elsewhere (another machine, the SDK): its job J1 is on
    the account and in no history here. A new process sends the request (a plain generate, as --force does) and its
    answer is lost. J1 is listed at once, J2 (its own) only after the list lag: it must wait for J2, never take J1,
    which the server made before this request's intent (before: it took J1)."""
    clock = Clock(time.time() - 60)  # the server's clock a minute back while J1 is made: J1 is a minute old
    with start_sandbox(clock) as sb:
        old_job = requests.post(f"{sb.url}/generate/custom/{GEMINI}", json={"prompt": "the same lantern", "seed": 7},
                                auth=(SUITE_KEY, SUITE_SECRET), timeout=10).json()["job"]["jobId"]
        clock.now = time.time()
        until(lambda: listed(sb, old_job), what="the older job listed")
        client = new_client(sb, tmp_path / "home")
        client.set_polling(search_seconds=20)
        sb.inject("drop", after_create=True, path="/generate/custom")
        lost = client.generate(GEMINI, "the same lantern", seed=7)
        assert ended(lost) is None, lost.summary()
        created = generation_jobs(sb)
        assert len(created) == 2 and sb.generate_posts == 2  # the older one, and this request once
        assert lost.job_id == created[1] != old_job, "the lost answer adopted an older identical job"
        assert client.history.get_request(lost.request_id).job_id == created[1]
        client.close()


def test_two_lost_answers_of_one_request_each_adopt_their_own_job(tmp_path):
    """A request's answer is lost and its search gives up: 'unknown', its job J1 on the server. A new process (which
    has learned from an answer that the clocks agree) sends the identical request on purpose, and its answer is lost
    too. J1 is made before its intent: it waits for J2 (before: it took J1). Recovered, the first request adopts
    J1: two rows, two jobs, each with its own, and neither write refused."""
    home = tmp_path / "home"
    with start_sandbox(Clock()) as sb:
        first_client = new_client(sb, home)
        first_client.set_polling(search_seconds=0.3)
        sb.inject("drop", after_create=True, path="/generate/custom")
        first = first_client.generate(GEMINI, "the same lantern", seed=7)
        assert isinstance(ended(first), OutcomeUnknownError) and first.job_id is None
        first_client.close()
        old_job = generation_jobs(sb)[0]
        until(lambda: listed(sb, old_job), what="the first job listed")

        client = new_client(sb, home)
        client.set_polling(search_seconds=20)
        assert ended(client.generate(GEMINI, "another lantern")) is None  # an answer: the clocks agree
        sb.inject("drop", after_create=True, path="/generate/custom")
        second = client.generate(GEMINI, "the same lantern", seed=7)
        assert ended(second) is None, second.summary()
        created = generation_jobs(sb)
        assert len(created) == 3 and sb.generate_posts == 3
        assert second.job_id == created[2] != old_job, "the lost answer adopted an older identical job"

        recovered = {h.request_id: h for h in client.recover()}
        assert ended(recovered[first.request_id]) is None
        assert recovered[first.request_id].job_id == old_job
        client.close()
    rows = {r.request_id: r for r in History(home / "history.sqlite").recent()}
    assert rows[first.request_id].job_id == old_job and rows[second.request_id].job_id == created[2]
    assert rows[first.request_id].status == rows[second.request_id].status == "success"
    assert not any("not recorded" in (h.note or "") for h in (second, recovered[first.request_id]))


def test_a_server_clock_behind_this_machine_still_lets_a_lost_answer_adopt_its_own_job(tmp_path):
    """The server's clock is 30 s behind this machine's: the job a lost answer created is stamped 30 s before the
    request was sent, by this machine's clock. The engine learned the difference from an earlier answer, so the job is
    still adopted (a bound that ignored it would call the request unknown)."""
    with start_sandbox(Clock(time.time() - 30)) as sb:
        client = new_client(sb, tmp_path / "home")
        client.set_polling(search_seconds=10)
        assert ended(client.generate(GEMINI, "a first lantern")) is None
        sb.inject("drop", after_create=True, path="/generate/custom")
        lost = client.generate(GEMINI, "a second lantern")
        assert ended(lost) is None, lost.summary()
        assert lost.job_id == generation_jobs(sb)[1] and sb.generate_posts == 2
        assert client.history.get_request(lost.request_id).job_id == lost.job_id
        client.close()


def test_in_a_real_kernel_a_forced_request_whose_answer_was_lost_takes_its_own_job(tmp_path, sandbox_process):
    """A notebook: a first cell's answer taught the kernel that its clock and the server's agree. An identical
    request was sent a moment ago from elsewhere (its job J1 listed, in no history here); a `--force` cell's answer
    is lost. The cell ends with its own job J2, never J1, and its history row says so."""
    url, auth = sandbox_process["url"], (sandbox_process["key"], sandbox_process["secret"])
    remote = RemoteSandbox(url, *auth)
    kernel = Kernel(kernel_env(tmp_path, sandbox_process))
    try:
        kernel.run("%load_ext scenario_nb")
        kernel.run("%%scenario Gemini -o warm\na warm-up lantern")
        elsewhere = requests.post(f"{url}/generate/custom/{GEMINI}", json={"prompt": "the same lantern", "seed": 7},
                                  auth=auth, timeout=10).json()["job"]["jobId"]
        until(lambda: any(j["jobId"] == elsewhere for j in requests.get(f"{url}/jobs", auth=auth,
                                                                        timeout=10).json()["jobs"]),
              what="the job made elsewhere listed")
        remote.inject("drop", after_create=True, path="/generate/custom")
        kernel.run("%%scenario Gemini --force --seed 7 -o g\nthe same lantern")
        said = text_of(kernel.run("print('JOB', g.job_id, g.status)"))
        job_id = re.search(r"JOB (\S+) (\S+)", said)
        assert job_id and job_id[2] == "success", said
        assert job_id[1] != elsewhere, "the lost answer adopted the identical job made elsewhere"
        assert remote.stats()["jobs_created"] == 3
        rows = [r for r in History(tmp_path / "history.sqlite").recent() if r.prompt == "the same lantern"]
        assert [r.job_id for r in rows] == [job_id[1]]
    finally:
        kernel.kill()


def test_only_a_creation_answer_says_how_far_ahead_this_clock_is_and_old_stamps_never_widen_the_window():
    """A poll of a job made yesterday says only that this clock is at most a day ahead: the window stays the assumed
    one. A creation answer says how far (30 s here), and a fresher stamp can only narrow that."""
    from scenario_nb._engine._timing import SKEW_ASSUMED, SKEW_MARGIN, ServerClock

    def job(created: float, *dates: float) -> dict:
        iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))  # noqa: E731
        return {"createdAt": iso(created), "statusHistory": [{"status": "queued", "date": iso(d)} for d in dates]}

    now = 1_800_000_000.0
    server = ServerClock()
    assert server.earliest_job(now) == now - SKEW_ASSUMED
    server.saw(job(now - 86_400, now - 86_400), now)  # yesterday's job, polled now
    assert server.ahead_at_most() == SKEW_ASSUMED, "an old stamp widened the window"
    server.created(job(now - 30), now)  # a job our request made, answered now: this clock is 30 s ahead
    assert server.ahead_at_most() == 30 + SKEW_MARGIN
    server.saw(job(now - 40, now - 29), now)
    assert server.ahead_at_most() == 29 + SKEW_MARGIN
