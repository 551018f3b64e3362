"""The client against a sandbox that answers as the real cloud does where it costs money (contract §6.5, §10,
§10b): refused cancels, lost answers and a lagging job list, outputs that are not PNGs, proxies, 429s
without Retry-After, refused list filters and LoRA routing at catalog scale. Judged by effect: jobs the
sandbox created, POSTs it received, files stored, history rows."""

from __future__ import annotations

import html
import http.server
import json
import socketserver
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import scenario_nb
from scenario_nb import InputError, OutcomeUnknownError, ScenarioClient, wait_all
from scenario_nb import sandbox as sandbox_mod
from scenario_nb._display import generation_bundle

from conftest import SUITE_KEY as KEY, SUITE_SECRET as SECRET  # noqa: E402

HERO = "model_HeroKnightLoRA7aB3cD4eF5gH6j"           # a flux.2-dev-lora
KONTEXT_LORA = "model_PotionEditKontext8mN2pQ4rS"     # a flux.1-kontext-lora: its base is last in the catalog
VIDEO, MESH, TEXT = "model_bytedance-seedance-2-0", "model_meshy-7-txt23d", "model_scenario-prompt-writer"
GEMINI = "model_google-gemini-3-1-flash"


def start(**options):
    options = {"api_key": KEY, "api_secret": SECRET, "job_seconds": 0.5, "seed": 7, **options}
    return sandbox_mod.start(**options)


def posts(sb) -> list:
    return [r for r in sb.requests if r["method"] == "POST" and "/generate/custom/" in r["path"]]


# -- Lost answers ----------------------------------------------------------------------------------------

def test_lost_answer_on_a_lora_route_is_adopted(client, sb):
    """The echo's modelId is the LoRA's id (the body as sent), not the base model in the URL."""
    created = sb.stats()["jobs_created"]
    sb.inject("drop", after_create=True, path="/generate/custom")
    gen = client.generate(HERO, "the hero, lost answer", seed=3)
    assert gen.status == "unknown" and not gen.job_id
    assert client.history.get_request(gen.request_id).status == "unknown"  # in the ledger before any search
    gen.wait(timeout=60)
    assert gen.ok and gen.images and "adopted" in gen.note
    assert sb.stats()["jobs_created"] == created + 1 and len(posts(sb)) == 1
    assert client.history.get(gen.job_id).request_id == gen.request_id  # the same row, now with its job


def test_lost_answer_found_despite_a_30_second_list_lag(tmp_path, clock):
    """The job list shows a new job only 30 s late: the search goes on past an empty list, and finds it once
    the lag is over (the sandbox's clock is moved past it when the search has seen the list empty)."""
    with start(list_lag=30, clock=clock) as sb:
        client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
        assert client.polling["search_seconds"] > 30, "the search gives up before the list can show the job"
        sb.inject("drop", after_create=True, path="/generate/custom")
        gen = client.generate(GEMINI, "found late", seed=4)
        deadline = time.monotonic() + 30
        while not [r for r in sb.requests if r["method"] == "GET" and r["path"] == "/v1/jobs"]:
            assert time.monotonic() < deadline, "the lost answer's job was never looked for"
            time.sleep(0.05)
        assert gen.status == "unknown" and not gen.job_id  # the list was empty: nothing adopted yet
        clock.now += 30
        gen.wait(timeout=60)
        assert gen.ok and gen.images and sb.stats()["jobs_created"] == 1 and len(posts(sb)) == 1
        client.close()


def test_a_lost_answer_never_found_is_unknown_not_free(client, sb):
    """Nobody proved nothing was created: the user hears "unknown", and the request stays in the ledger."""
    client.set_polling(search_seconds=4)
    sb.inject("drop", after_create=False, path="/generate/custom")
    gen = client.generate(GEMINI, "lost before the job existed")
    with pytest.raises(OutcomeUnknownError) as info:
        gen.wait(timeout=60)
    text = str(info.value)
    assert "nothing was charged" not in text and "may or may not" in text and gen.request_id in text
    assert client.history.get_request(gen.request_id).status == "unknown"
    assert sb.stats()["jobs_created"] == 0


# -- Outputs that are not PNG images ---------------------------------------------------------------------------

def test_video_and_3d_outputs_are_stored_as_they_came_and_shown(client, sb):
    video = client.generate(VIDEO, "a knight walking, loop")
    mesh = client.generate(MESH, "a wooden treasure chest")
    wait_all([video, mesh], timeout=60)
    assert video.ok and mesh.ok, (video.summary(), mesh.summary())
    (clip,) = video.outputs
    assert clip.kind == "video" and clip.mime_type == "video/mp4" and clip.path.suffix == ".mp4"
    assert clip.path.read_bytes()[4:8] == b"ftyp" and video.images == []
    (model,) = mesh.outputs
    assert model.mime_type == "model/gltf-binary" and model.path.read_bytes()[:4] == b"glTF"
    data, _ = generation_bundle(video)
    assert "<video" in data["text/html"] and "data:video/mp4;base64," in data["text/html"]
    data, _ = generation_bundle(mesh)
    assert 'download="' in data["text/html"] and "data:model/gltf-binary;base64," in data["text/html"]
    record = client.history.get(video.job_id)
    assert record.mime_types == ["video/mp4"] and Path(record.files[0]) == clip.path
    saved = video.save(client.home / "out")
    assert any(p.suffix == ".mp4" and p.read_bytes() == clip.path.read_bytes() for p in saved)


def test_a_text_model_answers_in_text(client, sb):
    gen = client.generate(TEXT, "write a prompt for a potion icon").wait(timeout=30)
    answer = client.get_job(gen.job_id)["metadata"]["output"]["text"]
    assert gen.ok and gen.outputs == [] and gen.text == answer and "potion" in answer.lower()
    assert gen.text in generation_bundle(gen)[0]["text/plain"]
    assert client.history.get(gen.job_id).text == gen.text


LLM = "model_scenario-llm"


def test_scenario_llm_gets_its_prompt_in_instruction_and_answers_in_gen_text(client, sb):
    """Contract §4.4: the prompt goes to the input flagged `prompt: true`; §10b: the answer is text assets."""
    gen = client.generate(LLM, "name a potion", numOutputs=2).wait(timeout=30)
    body = sb.jobs[gen.job_id]["body"]
    assert body == {"instruction": "name a potion", "numOutputs": 2}  # what the sandbox received
    assert gen.ok and [o.kind for o in gen.outputs] == ["text", "text"] and gen.images == []
    stored = [o.path.read_text() for o in gen.outputs]
    assert gen.text == "\n\n".join(stored) and "name a potion" in stored[0] and len(stored[0]) > 1000
    assert gen.prompt == "name a potion" and client.history.get(gen.job_id).text == gen.text
    assert client.history.get(gen.job_id).prompt == "name a potion"
    html_view = generation_bundle(gen)[0]["text/html"]
    assert html.escape(stored[1][-40:]) in html_view and "download" not in html_view
    saved = gen.save(client.home / "out")
    assert [p.read_text() for p in saved if p.suffix == ".txt"] == stored


def test_scenario_llm_from_the_magic(ip, env):
    ip.run_cell('%%scenario "Scenario LLM" -o answer\nname a sword')
    gen = ip.user_ns["answer"].wait(timeout=30)
    assert env.jobs[gen.job_id]["body"]["instruction"] == "name a sword" and "name a sword" in gen.text


# -- Cancel ------------------------------------------------------------------------------------------------

def test_cancel_all_reports_each_job_and_carries_on(ip, env):
    from IPython.utils.capture import capture_output
    for i in range(3):
        ip.run_cell(f"%%scenario Gemini --no-wait -o g{i}\nbarrel number {i}")
    with capture_output() as out:
        ip.run_line_magic("scenario", "cancel all")
    assert out.stdout.count("will finish and be charged") == 3 and "3 refused" in out.stdout
    handles = [ip.user_ns[f"g{i}"] for i in range(3)]
    wait_all(handles, timeout=60)
    assert all(h.ok and h.images for h in handles)  # paid for, so delivered
    assert env.stats()["jobs_created"] == 3


# -- Networks -----------------------------------------------------------------------------------------------

class _Proxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy for plain-HTTP URLs that remembers what passed through it."""

    seen: list = []

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        type(self).seen.append({"url": self.path, "authorization": "Authorization" in self.headers})
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        request = urllib.request.Request(self.path, data=body, method=self.command, headers=headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            response = opener.open(request, timeout=30)
            status, data, reply = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, data, reply = exc.code, exc.read(), exc.headers
        self.send_response(status)
        for key in ("Content-Type", "Retry-After"):
            if reply.get(key):
                self.send_header(key, reply[key])
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _forward

    def log_message(self, *args) -> None:
        pass


def test_proxies_from_the_environment_carry_every_call_and_no_netrc(client, sb, monkeypatch, tmp_path):
    proxy = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    _Proxy.seen = []
    address = f"http://127.0.0.1:{proxy.server_address[1]}"
    cdn_host = sb.cdn_url.split("//")[1].split(":")[0]
    (tmp_path / ".netrc").write_text(f"machine {cdn_host} login netrc-user password netrc-password\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, address)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    try:
        proxied = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path / "home")
        gen = proxied.generate(GEMINI, "through the proxy").wait(timeout=30)
        assert gen.ok and gen.images
        api_calls = [r for r in sb.requests if r["path"].startswith("/v1/")]
        through = [s for s in _Proxy.seen if "/v1/" in s["url"]]
        assert api_calls and len(through) == len(api_calls), "an API call went around the proxy"
        assert all(s["authorization"] for s in through)
        downloads = [s for s in _Proxy.seen if s["url"].startswith(sb.cdn_url)]
        assert downloads and not any(s["authorization"] for s in downloads), "credentials sent to the CDN"
        assert sb.cdn_requests and not any(r["authorization"] for r in sb.cdn_requests)
        proxied.close()
    finally:
        proxy.shutdown()
        proxy.server_close()



# -- Polls: one GET each, on a kept-alive connection of the session's pool --------------------------------------

def test_a_poll_on_a_connection_the_server_closed_is_asked_on_a_new_one(client, sb):
    """A kept-alive connection the server closed while it sat idle costs no error: nothing was asked on it."""
    from scenario_nb._http import Credentials, Transport
    gen = client.generate(GEMINI, "a crate").wait(timeout=30)
    transport = Transport(Credentials(KEY, SECRET, sb.url))
    path = f"/jobs/{gen.job_id}"
    assert transport.get_once(path)["job"]["status"] == "success"
    pools = transport.session.get_adapter(sb.url).poolmanager.pools
    kept = [c for key in pools.keys() for c in pools[key].pool.queue if c is not None and c.sock is not None]
    assert len(kept) == 1, "the poll's connection was not kept alive"
    kept[0].sock.shutdown(2)  # as a server closing an idle connection leaves it
    before = len([r for r in sb.requests if r["path"].endswith(path)])
    assert transport.get_once(path)["job"]["jobId"] == gen.job_id
    assert len([r for r in sb.requests if r["path"].endswith(path)]) == before + 1  # asked once, answered once
    transport.close()


def test_a_poll_refused_with_retry_after_waits_as_long_as_the_server_said(tmp_path):
    with start(job_seconds=4) as sb:
        client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
        gen = client.generate(GEMINI, "patience")
        sb.inject("rate_limit", path=f"/jobs/{gen.job_id}", method="GET", retry_after=2.5)
        assert gen.wait(timeout=30).ok and gen.images
        refused = [r["time"] for r in sb.stats()["rate_limited"]]
        assert len(refused) == 1
        polls = [r["time"] for r in sb.requests if r["method"] == "GET" and r["path"].endswith(gen.job_id)]
        following = [t for t in polls if t > refused[0]]
        assert following and following[0] - refused[0] >= 2.4, "asked again before the Retry-After"
        client.close()


def test_no_url_refused_with_retry_after_is_asked_again_sooner(tmp_path):
    """Polls, asset reads and downloads refused with 429 and `Retry-After: 1` (as a proxy or CDN throttling
    does): the engine asks that URL again no sooner than the server said, judged by the sandbox's own log."""
    with start(job_seconds=1) as sb:
        client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
        sb.inject("rate_limit", count=8, path="/v1/jobs/", method="GET", retry_after=1)
        sb.inject("rate_limit", count=5, path="/v1/assets/", method="GET", retry_after=1)
        sb.inject("cdn_rate_limit", count=5, path="/assets/", retry_after=1)
        gens = [client.generate(GEMINI, f"throttled {i}") for i in range(12)]
        wait_all(gens, timeout=60)
        assert all(g.ok and g.images for g in gens)
        refused = sb.stats()["rate_limited"]
        assert {r["path"].split("/")[1 if r["path"].startswith("/assets") else 2] for r in refused} == \
            {"jobs", "assets"} and len(refused) == 18, refused  # every fault met: polls, reads, downloads
        asked = [(r["time"], r["path"]) for r in sb.requests + sb.cdn_requests if r["method"] == "GET"]
        for refusal in refused:
            again = sorted(t for t, path in asked if path == refusal["path"] and t > refusal["time"])
            assert again, refusal
            assert again[0] - refusal["time"] >= 0.98, f"{refusal['path']} asked again after " \
                f"{again[0] - refusal['time']:.2f} s, before the server's Retry-After of 1 s"
        client.close()


def test_the_connection_pool_holds_every_engine_thread_and_every_caller_thread(tmp_path, caplog):
    """One session per client, its pool sized to the engine's threads plus the most calls a client makes side
    by side: a batch whose jobs end together (every fetch thread downloading at once) never finds the pool full
    (urllib3 would open a connection, use it once and throw it away, and say so)."""
    import logging
    caplog.set_level(logging.WARNING, logger="urllib3")
    with start(job_seconds=0.5) as sb:
        client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
        gens = client.generate_many(GEMINI, [f"together {i}" for i in range(24)])
        wait_all(gens, timeout=60)
        assert all(g.ok and g.images for g in gens)
        assert len(client.caption_images([g.outputs[0].path for g in gens[:16]])) == 16  # 16 side by side
        client.close()
    full = [r for r in caplog.records if "pool is full" in r.getMessage()]
    assert not full, f"{len(full)} connections thrown away: the pool is smaller than the threads using it"


class _TLSJob(http.server.BaseHTTPRequestHandler):
    """An HTTPS API answering any job poll, remembering whether credentials came with it."""

    seen: list = []

    def do_GET(self) -> None:
        type(self).seen.append("Authorization" in self.headers)
        body = json.dumps({"job": {"jobId": self.path.rsplit("/", 1)[-1], "status": "in-progress"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_polls_over_https_trust_the_ca_bundle_requests_would_and_nothing_else(tmp_path, monkeypatch):
    import ssl

    import trustme
    from scenario_nb import APIConnectionError
    from scenario_nb._http import Credentials, Transport
    ca = trustme.CA()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TLSJob)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/v1"
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    _TLSJob.seen = []
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        trusting = Transport(Credentials(KEY, SECRET, url))
        assert trusting.get_once("/jobs/job_tls")["job"]["status"] == "in-progress"
        assert _TLSJob.seen == [True]
        trusting.close()
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        stranger = Transport(Credentials(KEY, SECRET, url))
        with pytest.raises(APIConnectionError) as info:  # a certificate no trusted CA signed: nothing is sent
            stranger.get_once("/jobs/job_tls")
        assert _TLSJob.seen == [True] and KEY not in str(info.value) and SECRET not in str(info.value)
        stranger.close()
    finally:
        server.shutdown()
        server.server_close()


class _Elsewhere(http.server.BaseHTTPRequestHandler):
    """A host that sends every GET on to `target` (as a CDN may), remembering whether credentials came."""

    target = ""
    seen: list = []

    def do_GET(self) -> None:
        type(self).seen.append("Authorization" in self.headers)
        self.send_response(302)
        self.send_header("Location", type(self).target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_engine_downloads_follow_redirects_and_carry_no_credentials_off_the_api(client, sb):
    """The engine's own downloads (one GET each, on a kept-alive connection) follow redirects as requests
    does, relative ones too, send credentials to no host but the API's, and give up on a redirect loop."""
    from scenario_nb import APIConnectionError
    from scenario_nb._http import MAX_REDIRECTS, Credentials, Transport
    gen = client.generate(GEMINI, "a crate").wait(timeout=30)
    transport = Transport(Credentials(KEY, SECRET, sb.url))
    signed = transport.get(f"/assets/{gen.outputs[0].asset_id}")["asset"]["url"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Elsewhere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    elsewhere = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _Elsewhere.target, _Elsewhere.seen = signed, []
        before = len(sb.cdn_requests)
        assert transport.download_once(f"{elsewhere}/moved.png") == gen.outputs[0].path.read_bytes()
        assert _Elsewhere.seen == [False] and len(sb.cdn_requests) == before + 1
        assert not any(r["authorization"] for r in sb.cdn_requests[before:]), "credentials sent to the CDN"
        _Elsewhere.target, _Elsewhere.seen = "/again", []  # a relative Location, back to the same host
        with pytest.raises(APIConnectionError) as info:
            transport.download_once(f"{elsewhere}/loop.png")
        assert len(_Elsewhere.seen) == MAX_REDIRECTS + 1 and not any(_Elsewhere.seen)
        assert "redirects" in str(info.value) and SECRET not in str(info.value)
    finally:
        transport.close()
        server.shutdown()
        server.server_close()


class _Recording(http.server.BaseHTTPRequestHandler):
    """A host that remembers (path, credentials?) and answers `/moved/…` with a redirect to `target`, else bytes."""

    target = ""
    seen: list = []

    def do_GET(self) -> None:
        type(self).seen.append((self.server.server_address[1], "Authorization" in self.headers))
        moved = "/moved/" in self.path
        self.send_response(302 if moved else 200)
        if moved:
            self.send_header("Location", type(self).target)
        self.send_header("Content-Length", "0" if moved else "5")
        self.end_headers()
        if not moved:
            self.wfile.write(b"asset")

    def log_message(self, *args) -> None:
        pass


def test_a_download_the_api_redirects_to_another_host_takes_no_credentials_there():
    """An asset URL on the API's own origin gets the Authorization header; the host it redirects to never does,
    through requests (`download`) and through the engine's one-try GETs (`download_once`) alike."""
    from scenario_nb._http import Credentials, Transport
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recording) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    api_port, other_port = (s.server_address[1] for s in servers)
    _Recording.target, _Recording.seen = f"http://127.0.0.1:{other_port}/asset.png", []
    transport = Transport(Credentials(KEY, SECRET, f"http://127.0.0.1:{api_port}/v1"))
    try:
        for fetch in (transport.download, transport.download_once):
            assert fetch(f"http://127.0.0.1:{api_port}/v1/moved/asset") == b"asset"
        assert _Recording.seen == [(api_port, True), (other_port, False)] * 2
    finally:
        transport.close()
        for server in servers:
            server.shutdown()
            server.server_close()


# -- 429s without Retry-After ------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [False, True], ids=["one by one", "a batch sent side by side"])
def test_429s_without_retry_after_back_off_and_polls_keep_flowing(tmp_path, batch):
    with start(max_parallel_jobs=2, job_seconds=1) as sb:
        client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
        prompts = [f"crate {i}" for i in range(12)]
        handles = client.generate_many(GEMINI, prompts) if batch else [client.generate(GEMINI, p) for p in prompts]
        assert [h.status for h in handles].count("waiting") == 10  # 429s, then the others queue behind them
        wait_all(handles, timeout=180)
        assert all(h.ok for h in handles) and sb.stats()["jobs_created"] == 12
        assert sb.stats()["rate_limited"] and not any(r["header"] for r in sb.stats()["rate_limited"])
        sent = posts(sb)
        refused = [r["time"] for r in sb.stats()["rate_limited"]]
        burst = [when for when in refused if when < refused[0] + 0.5]
        assert len(burst) <= 4, f"{len(burst)} 429s at once: requests kept going out after the first"  # 4 senders
        for when in refused:  # POSTs already on the wire when the 429 came back (side by side) arrive within ms
            following = [p["time"] for p in sent if p["time"] > when + 0.1]
            assert not following or following[0] - when >= 0.7, "a POST went out before the backoff allowed"
        first, last = refused[0], max(p["time"] for p in sent)  # from the first 429 until the last held one left
        polls = [r for r in sb.requests if r["method"] == "GET" and "/v1/jobs/" in r["path"]
                 and first < r["time"] < last]
        assert polls, "polls of running jobs stopped behind a creation 429"
        client.close()


# -- Filters and routing ---------------------------------------------------------------------------------------

def test_a_filter_combination_the_api_rejects_is_refused_locally(client, sb):
    before = len(sb.requests)
    with pytest.raises(InputError, match="created_after only without"):
        client.jobs(created_after="2026-01-01T00:00:00.000Z", status="success")
    assert len(sb.requests) == before


def test_a_kontext_lora_finds_its_base_without_scanning_the_catalog(client, sb):
    ref = client.upload_image(Image.new("RGB", (64, 64), "teal"))
    before = len(sb.requests)
    gen = client.generate(KONTEXT_LORA, "the potion, edited", referenceImages=[ref]).wait(timeout=30)
    assert gen.ok and gen.base_model_id == "model_flux-kontext-editing"
    details = [r for r in sb.requests[before:] if r["method"] == "GET" and r["path"].startswith("/v1/models/")]
    assert len(details) <= 3, f"{len(details)} model details read to route one LoRA"
    body = json.loads(json.dumps(gen.inputs))
    assert body["loras"] == [KONTEXT_LORA]
    again = client.generate(KONTEXT_LORA, "the potion, edited again", referenceImages=[ref])
    assert again.base_model_id == gen.base_model_id  # learned once, cached
    again.wait(timeout=30)


def test_sdk_and_guide_shapes_are_not_served_by_default(client, sb):
    gen = client.generate(GEMINI, "shape check").wait(timeout=30)
    job = client.get_job(gen.job_id)
    assert "id" not in job and "result" not in job and job["jobId"] == gen.job_id


def test_status_and_errors_never_say_retried_automatically(sb, tmp_path):
    c = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path, max_retries=0)
    sb.inject("rate_limit", path="/models")
    with pytest.raises(scenario_nb.RateLimitError) as info:
        c.models()
    assert "retried automatically" not in str(info.value) and info.value.retry_after is None
    c.close()
    time.sleep(0)


# -- What a waiting cell shows --------------------------------------------------------------------------------

@pytest.mark.parametrize("at", [1, 2], ids=["first drawing", "a redrawing"])
def test_a_job_ending_while_its_display_is_drawn_is_shown_with_its_images(ip, tmp_path, monkeypatch, at):
    """The race behind a rare 'no image' cell: the job ends while the waiting display draws a bundle of it
    still running (its first drawing, or a later one). The display must go round once more and show it."""
    from IPython.utils.capture import capture_output

    from scenario_nb import _display
    drawn, calls, raced = _display.generation_bundle, [], []

    def slow_draw(handle, *args, **kwargs):
        bundle = drawn(handle, *args, **kwargs)
        calls.append(handle.status)
        if len(calls) == at and not handle.done:
            raced.append(handle.status)
            handle.wait(timeout=30)  # it ends while this (running) bundle is being made
        return bundle
    monkeypatch.setattr(_display, "generation_bundle", slow_draw)
    with start(job_seconds=2) as sb:
        client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path)
        gen = client.generate(GEMINI, "a crate, seen at the last moment")
        with capture_output() as shown:
            _display.show_generations([gen], wait=True)
        client.close()
    assert raced, f"the job never ended during drawing {at} (drawn while: {calls})"
    assert gen.ok and gen.images
    last = shown.outputs[-1].data
    assert "image/png" in last or "image/jpeg" in last or "<img" in last.get("text/html", ""), \
        "the cell's last display is of a job still running"
