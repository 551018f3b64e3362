"""Tests written to kill mutants of the HTTP transport and its backoff (scenario_nb/_http.py, _backoff.py)
that the rest of the suite let live (tests/mutants-equivalent.md). Each checks by effect: the requests a
loopback server on a thread received (method, path, headers), the waits the transport asked for, the errors it
raised and the log lines it wrote. The server is reached as 127.0.0.1 (the API's origin) and as localhost
(another origin: a CDN), so where the Authorization header goes can be seen."""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from requests.structures import CaseInsensitiveDict
import urllib3
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ReadTimeoutError

from scenario_nb import _backoff, _http
from scenario_nb._env import mask
from scenario_nb._errors import (APIConnectionError, APIError, ConfigurationError, NotFoundError,
                                 RateLimitError, ServerError)
from scenario_nb._version import USER_AGENT

KEY, SECRET = "sk_HTTP_key_58c2e1f07a", "ss_HTTP_secret_d94b3a6e21"
DROP = "drop"  # an answer: the connection closed with nothing written
TLS_PEM = str(__import__("pathlib").Path(__file__).with_name("loopback-tls.pem"))


class Loopback:
    """A scripted HTTP server on a thread: each request takes the next answer of `script` (else `default`), and
    is noted as (method, path with query, headers, body)."""

    def __init__(self, tls: bool = False) -> None:
        self.seen: list[tuple[str, str, dict, bytes]] = []
        self.script: list[Any] = []
        self.default: Any = (200, {}, b"{}")
        self._lock = threading.Lock()
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with loopback._lock:
                    loopback.seen.append((self.command, self.path, dict(self.headers), body))
                    reply = loopback.script.pop(0) if loopback.script else loopback.default
                if reply == DROP:
                    self.close_connection = True
                    return
                status, headers, content = reply
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:  # a certificate for 127.0.0.1 and localhost that no system trusts (tests/loopback-tls.pem)
            import ssl
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS_PEM)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def cdn(self) -> str:
        return f"http://localhost:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loop():
    server = Loopback()
    yield server
    server.close()


@pytest.fixture
def no_proxy_env(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def waits(monkeypatch):
    """Every time.sleep of the transport and of urllib3's retries on this test's thread, noted instead of slept; no
    jitter. Other threads (one an earlier test left polling in this worker) still sleep, unnoted."""
    slept: list[float] = []
    here, real_sleep = threading.current_thread(), time.sleep

    def sleep(seconds: float) -> None:
        if threading.current_thread() is here:
            slept.append(round(seconds, 3))
        else:
            real_sleep(seconds)
    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.5)
    return slept


@pytest.fixture
def transport(loop, no_proxy_env):
    t = _http.Transport(_http.Credentials(KEY, SECRET, loop.api))
    yield t
    t.close()


def basic() -> str:
    return "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()


def test_credentials_show_the_key_masked_never_the_secret_and_sign_requests_with_both():
    creds = _http.Credentials(KEY, SECRET, "http://h/v1")
    assert repr(creds) == f"Credentials(api_key={mask(KEY)!r}, api_secret='***', base_url='http://h/v1')"
    assert SECRET not in repr(creds) and KEY not in repr(creds)
    assert creds.authorization() == basic()


def test_credentials_come_from_the_arguments_else_the_environment(monkeypatch):
    for var in ("SCENARIO_API_KEY", "SCENARIO_API_SECRET", "SCENARIO_API_URL", "SCENARIO_SDK_API_KEY",
                "SCENARIO_SDK_API_SECRET", "SCENARIO_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SCENARIO_API_KEY", "env-key")
    monkeypatch.setenv("SCENARIO_API_SECRET", "env-secret")
    monkeypatch.setenv("SCENARIO_API_URL", "http://env.example/v1/")
    assert _http.Credentials.resolve() == _http.Credentials("env-key", "env-secret", "http://env.example/v1")
    assert _http.Credentials.resolve("k", "s", "https://arg.example/v1//") == \
        _http.Credentials("k", "s", "https://arg.example/v1")
    monkeypatch.delenv("SCENARIO_API_KEY")
    with pytest.raises(ConfigurationError) as only_key:
        _http.Credentials.resolve()
    assert "set SCENARIO_API_KEY in the environment (or pass" in str(only_key.value)
    monkeypatch.delenv("SCENARIO_API_SECRET")
    with pytest.raises(ConfigurationError) as both:
        _http.Credentials.resolve()
    assert "set SCENARIO_API_KEY and SCENARIO_API_SECRET in the environment" in str(both.value)
    with pytest.raises(ConfigurationError) as only_secret:
        _http.Credentials.resolve(api_key="k")
    assert "set SCENARIO_API_SECRET in the environment" in str(only_secret.value)
    for url in ("ftp://h/v1", "h/v1"):
        with pytest.raises(ConfigurationError) as bad:
            _http.Credentials.resolve("k", "s", url)
        assert f"the API URL {url!r} is not an http(s) URL" in str(bad.value)
    assert _http.Credentials.resolve("k", "s", "HTTP://h/v1").base_url == "HTTP://h/v1"


def test_the_transport_session_reads_no_netrc_follows_ten_redirects_and_pools_its_connections(loop, no_proxy_env):
    t = _http.Transport(_http.Credentials(KEY, SECRET, loop.api + "/"), pool_size=7, max_retries=2,
                        timeout=(1.5, 2.5))
    assert t.base_url == loop.api + "/" and t.timeout == (1.5, 2.5)
    assert t.session.trust_env is False and t.session.max_redirects == 10
    assert t.session.headers["User-Agent"] == USER_AGENT and t.session.headers["Accept"] == "application/json"
    assert t.session.get_adapter("http://x/") is t._adapter and t.session.get_adapter("https://x/") is t._adapter
    assert t._adapter._pool_maxsize == 7 and t._adapter._pool_connections == 4
    assert (t._timeouts.connect_timeout, t._timeouts.read_timeout) == (1.5, 2.5)
    retry = t._adapter.max_retries
    assert (retry.total, retry.connect, retry.read, retry.status, retry.other) == (2, 2, 2, 2, 0)
    assert retry.backoff_factor == 0.5 and retry.respect_retry_after_header and not retry.raise_on_status
    assert retry.allowed_methods == frozenset({"GET", "HEAD"})
    assert tuple(retry.status_forcelist) == (429, 500, 502, 503, 504)
    assert t.creation_gate._backoff is t.backoff and retry.policy is t.backoff
    assert repr(t) == f"Transport({loop.api + '/'!r}, key={mask(KEY)})" and SECRET not in repr(t)
    t.close()


def test_every_api_request_carries_the_credentials_and_the_client_headers(loop, transport):
    loop.default = (200, {}, b'{"ok": 1}')
    assert transport.get("/jobs/j") == {"ok": 1}  # a plain GET: the API's root prepared once
    assert transport.get("/models", pageSize=5, status=None) == {"ok": 1}  # with parameters
    assert transport.get_once("/jobs/k") == {"ok": 1}  # the engine's: on the pool directly
    assert transport.request("POST", "/assets", json_body={"image": "x"}) == {"ok": 1}
    assert transport.get("/models/a b") == {"ok": 1}  # a path that needs quoting: prepared in full
    assert transport.get("/jobs/j2") == {"ok": 1}
    paths = [(method, path) for method, path, _, _ in loop.seen]
    assert paths == [("GET", "/v1/jobs/j"), ("GET", "/v1/models?pageSize=5"), ("GET", "/v1/jobs/k"),
                     ("POST", "/v1/assets"), ("GET", "/v1/models/a%20b"), ("GET", "/v1/jobs/j2")]
    for _, _, headers, _ in loop.seen:
        assert headers["Authorization"] == basic() and headers["User-Agent"] == USER_AGENT
        assert headers["Accept"] == "application/json"
    assert loop.seen[3][3] == b'{"image": "x"}'


def test_a_get_once_with_a_query_keeps_it(loop, transport):
    assert transport.request("GET", "/jobs?pageSize=3", once=True) == {}
    assert loop.seen[0][1] == "/v1/jobs?pageSize=3"


def test_reads_are_retried_in_place_on_429_and_5xx_with_the_policys_waits(loop, transport, waits):
    """Five answers of 503 then one of 200: a GET is asked five times in all (four retries), waiting as the
    policy says (nothing before the second, then 1 s, 2 s, 4 s); a 501 is not retried; the server's
    Retry-After is waited first."""
    loop.script = [(503, {}, b"")] * 4 + [(200, {}, b'{"n": 5}')]
    assert transport.get("/jobs/j") == {"n": 5}
    assert len(loop.seen) == 5 and waits == [1.0, 2.0, 4.0]
    loop.seen.clear(), waits.clear()
    loop.script = [(503, {}, b'{"reason": "busy"}')] * 6
    with pytest.raises(ServerError, match="busy") as raised:
        transport.get("/jobs/j")
    assert raised.value.status_code == 503 and len(loop.seen) == 5
    for status in (429, 500, 502, 504):
        loop.seen.clear()
        loop.script = [(status, {"Retry-After": "0"}, b"")] + [(200, {}, b"{}")]
        assert transport.get("/x") == {} and len(loop.seen) == 2
    loop.seen.clear(), waits.clear()
    loop.script = [(429, {"Retry-After": "3"}, b"")] + [(200, {}, b"{}")]
    assert transport.get("/y") == {} and len(loop.seen) == 2 and waits == [3.0]
    loop.seen.clear()
    loop.script = [(501, {}, b"")]
    with pytest.raises(APIError):
        transport.get("/jobs/j")
    assert len(loop.seen) == 1


def test_the_engines_reads_and_every_other_method_are_asked_once(loop, transport, waits):
    for ask in (lambda: transport.get_once("/jobs/j"), lambda: transport.request("GET", "/jobs", params={"a": 1},
                                                                                  once=True),
                lambda: transport.request("POST", "/assets", json_body={}),
                lambda: transport.request("PUT", "/models/m", json_body={}),
                lambda: transport.request("DELETE", "/models/m")):
        loop.seen.clear()
        loop.script = [(503, {}, b"")] * 3
        with pytest.raises(ServerError):
            ask()
        assert len(loop.seen) == 1
    assert waits == []


def test_a_post_or_put_is_never_sent_again_after_a_dropped_connection(loop, transport, waits):
    """The connection closes after the request arrived: one request reached the server and nothing is sent
    again, neither by urllib3 nor by the transport's own loop; a GET is asked again in place."""
    for method in ("POST", "PUT", "DELETE"):
        loop.seen.clear()
        loop.script = [DROP] * 3
        with pytest.raises(APIConnectionError) as raised:
            transport.request(method, "/assets", json_body={"image": "x"})
        assert f"the connection dropped during {method} /assets" in str(raised.value)
        assert [m for m, *_ in loop.seen] == [method]
    for create in ("POST", "PUT"):
        loop.seen.clear()
        loop.script = [DROP] * 3
        before = time.time()
        with pytest.raises(_http.UncertainSubmit) as uncertain:
            transport.create(create, "/generate/custom/m", {"prompt": "p"})
        assert f"the connection dropped during {create} /generate/custom/m" in uncertain.value.cause
        assert str(uncertain.value) == uncertain.value.cause
        assert before <= uncertain.value.sent_at <= time.time() and len(loop.seen) == 1
    loop.seen.clear()
    loop.script = [DROP, (200, {}, b"{}")]
    assert transport.get("/jobs/j") == {} and len(loop.seen) == 2
    loop.seen.clear()
    loop.script = [DROP] * 6
    with pytest.raises(APIConnectionError, match="the connection dropped during GET /jobs/j"):
        transport.get("/jobs/j")
    assert len(loop.seen) == 5  # four retries in place, none by the transport's loop
    loop.seen.clear()
    loop.script = [DROP] * 3
    with pytest.raises(APIConnectionError):
        transport.get_once("/jobs/j")
    assert len(loop.seen) == 1


def test_a_cut_short_answer_to_a_read_is_read_again_three_times_in_all(loop, transport, waits):
    loop.script = [(200, {}, b'{"cut')] * 2 + [(200, {}, b'{"whole": 1}')]
    assert transport.get("/jobs/j") == {"whole": 1} and len(loop.seen) == 3
    assert waits == [0.5, 1.0]
    loop.seen.clear(), waits.clear()
    loop.script = [(200, {}, b'{"cut')] * 4
    with pytest.raises(_http.MalformedAnswer):
        transport.get("/jobs/j")
    assert len(loop.seen) == 3 and waits == [0.5, 1.0]
    for ask in (lambda: transport.get_once("/jobs/j"), lambda: transport.request("POST", "/assets", json_body={})):
        loop.seen.clear(), waits.clear()
        loop.script = [(200, {}, b'{"cut')] * 3
        with pytest.raises(_http.MalformedAnswer):
            ask()
        assert len(loop.seen) == 1 and waits == []


def test_a_429_holds_its_url_for_every_later_request(loop, transport, waits):
    """The engine's GET answered 429 with Retry-After: the URL (without its query) is not asked again before
    then; a GET of the client waits it out, then asks."""
    loop.script = [(429, {"Retry-After": "30"}, b"")]
    with pytest.raises(RateLimitError):
        transport.get_once("/jobs/j")
    assert 29 < transport.backoff.held(loop.api + "/jobs/j") <= 30
    with pytest.raises(RateLimitError) as held:
        transport.get_once("/jobs/j")
    assert 29 < held.value.retry_after <= 30 and held.value.status_code == 429 and len(loop.seen) == 1
    assert "the server asked for 30.0 s more before this URL is asked again" in str(held.value)
    assert transport.get("/jobs/j") == {} and len(loop.seen) == 2
    assert len(waits) == 1 and 29 < waits[0] <= 30
    assert transport.get_once("/jobs/other") == {}


def test_a_request_to_a_held_url_is_waited_for_then_sent(loop, transport, waits):
    transport.backoff.hold(loop.api + "/assets", 5.0)
    assert transport.request("POST", "/assets", json_body={}) == {}
    assert len(waits) == 1 and 4 < waits[0] <= 5 and len(loop.seen) == 1


def test_creating_sends_once_and_says_what_may_have_been_made(loop, transport, waits, monkeypatch):
    refused = []
    real_refused = transport.creation_gate.refused
    monkeypatch.setattr(transport.creation_gate, "refused", lambda after, sent: refused.append((after, sent)) or
                        real_refused(after, sent))
    loop.script = [(200, {}, b'{"job": {"jobId": "j1"}}')]
    assert transport.create("POST", "/generate/custom/m", {"prompt": "p"}) == {"job": {"jobId": "j1"}}
    assert loop.seen[0][:2] == ("POST", "/v1/generate/custom/m") and loop.seen[0][3] == b'{"prompt": "p"}'
    assert loop.seen[0][2]["Authorization"] == basic()
    before = time.time()
    loop.script = [(429, {"Retry-After": "7"}, b"")]
    with pytest.raises(RateLimitError) as limited:
        transport.create("POST", "/generate/custom/m", {})
    assert limited.value.retry_after == 7.0 and refused[-1][0] == 7.0 and before <= refused[-1][1] <= time.time()
    assert 6 < transport.creation_gate.remaining() <= 7 and len(loop.seen) == 2
    loop.script = [(500, {}, b'{"reason": "boom"}')]
    with pytest.raises(_http.UncertainSubmit) as uncertain:
        transport.create("PUT", "/workflows/w/run", {})
    assert "boom" in uncertain.value.cause and before <= uncertain.value.sent_at and len(loop.seen) == 3
    loop.script = [(200, {}, b"{cut")]
    with pytest.raises(_http.UncertainSubmit, match="malformed JSON"):
        transport.create("POST", "/generate/custom/m", {})
    loop.script = [(400, {}, b'{"reason": "bad input"}')]
    with pytest.raises(APIError, match="bad input") as bad:
        transport.create("POST", "/generate/custom/m", {})
    assert not isinstance(bad.value, (_http.UncertainSubmit, RateLimitError)) and len(loop.seen) == 5
    assert len(refused) == 1 and waits == []


def test_the_first_job_created_resets_the_creation_backoff(loop, transport, waits):
    loop.script = [(429, {}, b""), (429, {}, b"")]
    for _ in range(2):
        with pytest.raises(RateLimitError):
            transport.create("POST", "/generate/custom/m", {})
    assert transport.creation_gate._streak == 2
    transport.create("POST", "/generate/custom/m", {})
    assert transport.creation_gate._streak == 0


def test_a_creation_that_never_connected_is_not_uncertain(no_proxy_env, refused_port, waits):
    t = _http.Transport(_http.Credentials(KEY, SECRET, "http://127.0.0.1:9/v1"))
    with pytest.raises(APIConnectionError, match="could not reach the API") as raised:
        t.create("POST", "/generate/custom/m", {})
    assert not isinstance(raised.value, _http.UncertainSubmit)
    t.close()


def test_a_connection_that_never_opened_is_tried_again_only_for_a_method_that_is_not_a_get(no_proxy_env, refused_port,
                                                                                          waits):
    """The transport's own loop tries again what never left (three times in all), never a GET (urllib3 retries
    those) nor the engine's once-only reads."""
    attempts, slept = refused_port, waits
    t = _http.Transport(_http.Credentials(KEY, SECRET, "http://127.0.0.1:9/v1"), max_retries=1)
    with pytest.raises(APIConnectionError):
        t.request("PUT", "/models/m", json_body={})
    assert len(attempts) == 3 and slept == [0.5, 1.0]
    attempts.clear(), slept.clear()
    with pytest.raises(APIConnectionError):
        t.get("/jobs/j")
    assert len(attempts) == 2  # urllib3's one retry, not the loop's
    attempts.clear()
    with pytest.raises(APIConnectionError):
        t.get_once("/jobs/j")
    with pytest.raises(APIConnectionError):
        t.request("POST", "/assets", json_body={}, once=True)
    assert len(attempts) == 2
    t.close()


def test_the_log_says_method_path_status_and_time_never_the_secret(loop, transport, log_lines):
    transport.get("/jobs/j")
    transport.request("POST", "/assets", json_body={"image": "x"})
    transport.download(loop.cdn + "/assets/a.png?Signature=SIG")
    assert len(log_lines) == 3
    assert log_lines[0].startswith("GET /jobs/j -> 200 in ") and log_lines[0].endswith(" ms")
    assert log_lines[1].startswith("POST /assets -> 200 in ")
    assert log_lines[2] == f"asset download from localhost:{loop.port} -> 200"
    assert not any(SECRET in line or "Signature" in line for line in log_lines)


def test_assets_carry_credentials_to_the_apis_origin_only(loop, transport):
    """Downloads, the engine's and the client's, redirected or not: Authorization goes to the API's own origin
    (127.0.0.1 here) and never to another (localhost), the User-Agent to both."""
    loop.default = (200, {}, b"PNG")
    assert transport.download_once(loop.cdn + "/a.png?X-Sig=1") == b"PNG"
    assert transport.download(loop.cdn + "/b.png") == b"PNG"
    assert transport.download_once(loop.api + "/assets/c/file") == b"PNG"
    assert transport.download(loop.api + "/assets/d/file") == b"PNG"
    seen = [(path, headers.get("Authorization"), headers.get("User-Agent")) for _, path, headers, _ in loop.seen]
    assert seen == [("/a.png?X-Sig=1", None, USER_AGENT), ("/b.png", None, USER_AGENT),
                    ("/v1/assets/c/file", basic(), USER_AGENT), ("/v1/assets/d/file", basic(), USER_AGENT)]


@pytest.mark.parametrize("once", [True, False])
def test_a_redirect_to_another_host_drops_the_credentials(loop, transport, once):
    loop.script = [(302, {"Location": loop.cdn + "/signed/a.png"}, b""), (307, {"Location": "/other/a.png"}, b""),
                   (200, {}, b"PNG")]
    assert transport.download(loop.api + "/assets/a", once=once) == b"PNG"
    hops = [(path, "Authorization" in headers) for _, path, headers, _ in loop.seen]
    assert hops == [("/v1/assets/a", True), ("/signed/a.png", False), ("/other/a.png", False)]


def test_ten_redirects_are_followed_and_the_eleventh_refused(loop, transport):
    loop.script = [(302, {"Location": f"/hop/{n}"}, b"") for n in range(10)] + [(200, {}, b"PNG")]
    assert transport.download_once(loop.cdn + "/start") == b"PNG" and len(loop.seen) == 11
    loop.seen.clear()
    loop.script = [(302, {"Location": f"/hop/{n}"}, b"") for n in range(11)] + [(200, {}, b"PNG")]
    with pytest.raises(APIConnectionError, match=r"asset download failed \(more than 10 redirects\)"):
        transport.download_once(loop.cdn + "/start")
    assert len(loop.seen) == 11
    loop.seen.clear()
    loop.script = [(302, {"Location": f"/hop/{n}"}, b"") for n in range(11)] + [(200, {}, b"PNG")]
    with pytest.raises(APIConnectionError, match=r"more than 10 redirects"):
        transport.download(loop.cdn + "/start")
    assert len(loop.seen) == 11


def test_a_redirect_without_a_location_is_a_refusal(loop, transport):
    loop.script = [(302, {}, b"moved")]
    with pytest.raises(APIError) as raised:
        transport.download_once(loop.cdn + "/a.png")
    assert raised.value.status_code == 302 and len(loop.seen) == 1


def test_a_refused_or_lost_download_says_so(loop, transport, waits):
    loop.script = [(404, {}, b"<Error><Message>gone</Message></Error>")]
    with pytest.raises(NotFoundError, match="asset URL refused: gone"):
        transport.download_once(loop.cdn + "/a.png")
    loop.script = [DROP]
    with pytest.raises(APIConnectionError, match=r"^asset download failed \(remotedisconnected\)$"):
        transport.download_once(loop.cdn + "/a.png")
    loop.script = [DROP]
    with pytest.raises(APIConnectionError, match=r"^asset download failed \("):
        transport.download(loop.cdn + "/b.png", once=True)
    with pytest.raises(APIConnectionError, match=r"^asset download failed \(InvalidSchema\)$"):
        transport.download("ftp://localhost/a.png", once=True)


def test_the_client_download_is_retried_in_place_the_engines_is_not(loop, transport, waits):
    loop.script = [(503, {}, b""), (200, {}, b"PNG")]
    assert transport.download(loop.cdn + "/a.png") == b"PNG" and len(loop.seen) == 2
    loop.seen.clear()
    loop.script = [(503, {}, b""), (200, {}, b"PNG")]
    with pytest.raises(ServerError):
        transport.download_once(loop.cdn + "/a.png")
    assert len(loop.seen) == 1


def test_a_download_answered_429_holds_the_url_asked_without_its_query(loop, transport, waits):
    loop.script = [(302, {"Location": "/signed/a.png"}, b""), (429, {"Retry-After": "20"}, b"")]
    with pytest.raises(RateLimitError):
        transport.download_once(loop.cdn + "/a.png?Signature=1")
    assert 19 < transport.backoff.held(loop.cdn + "/a.png") <= 20
    assert transport.backoff.held(loop.cdn + "/signed/a.png") == 0.0
    with pytest.raises(RateLimitError):
        transport.download_once(loop.cdn + "/a.png?Signature=2")  # a renewed signature: the same URL
    assert len(loop.seen) == 2
    loop.script = [(503, {"Retry-After": "9"}, b"")]
    with pytest.raises(ServerError):
        transport.download_once(loop.cdn + "/b.png")
    assert transport.backoff.held(loop.cdn + "/b.png") == 0.0


def test_a_proxy_in_the_environment_serves_requests_and_is_named_when_it_fails(loop, transport, waits, monkeypatch):
    """With HTTP_PROXY set the engine's reads and downloads go through requests (which speaks to the proxy),
    and a proxy that does not answer is named (host:port) in the error."""
    closed = socket_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://user:pw@127.0.0.1:{closed}")
    with pytest.raises(APIConnectionError) as raised:
        transport.get_once("/jobs/j")
    text = str(raised.value)
    assert f"could not reach the API through the proxy 127.0.0.1:{closed} set in the environment" in text
    assert "during GET /jobs/j" in text and "pw" not in text
    with pytest.raises(APIConnectionError) as lost:
        transport.download_once(loop.cdn + "/a.png")
    assert str(lost.value).startswith(f"asset download failed through the proxy 127.0.0.1:{closed} (")
    assert loop.seen == []
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{loop.port}")  # the loopback as the proxy: it answers
    assert transport.download_once("http://example.invalid/a.png") == b"{}"
    assert loop.seen[-1][1] == "http://example.invalid/a.png"


def socket_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_urllib3_errors_are_worded_as_requests_words_them():
    timeout = _http._requests_error(MaxRetryError(None, "/x", reason=ConnectTimeoutError("slow")))
    assert type(timeout) is requests.ConnectTimeout and _http._never_sent(timeout)
    late = _http._requests_error(MaxRetryError(None, "/x", reason=ReadTimeoutError(None, "/x", "late")))
    assert type(late) is requests.ReadTimeout and not _http._never_sent(late)
    assert type(_http._requests_error(ReadTimeoutError(None, "/x", "late"))) is requests.ReadTimeout
    assert type(_http._requests_error(ConnectTimeoutError("slow"))) is requests.ConnectTimeout
    refused = _http._requests_error(NewConnectionError(None, "refused"))
    assert type(refused) is requests.ConnectionError and _http._never_sent(refused)
    wrapped = _http._requests_error(MaxRetryError(None, "/x", reason=NewConnectionError(None, "refused")))
    assert type(wrapped) is requests.ConnectionError and _http._never_sent(wrapped)
    dropped = _http._requests_error(urllib3.exceptions.ProtocolError("dropped"))
    assert type(dropped) is requests.ConnectionError and not _http._never_sent(dropped)


def test_the_proxy_wording_names_the_proxy_when_known():
    error = requests.exceptions.ProxyError("no")
    named = str(_http._connection_error(error, "GET", "/jobs", "proxy.corp:3128"))
    assert named.startswith("could not reach the API through the proxy proxy.corp:3128 set in the environment "
                            "(HTTPS_PROXY / HTTP_PROXY) during GET /jobs (ProxyError); check that the proxy runs")
    assert str(_http._connection_error(error, "GET", "/jobs")).startswith(
        "could not reach the API through the proxy set in the environment")


def test_an_empty_answer_is_an_empty_object_and_json_is_parsed():
    assert _http._parse_json(b"") == ({}, True)
    assert _http._parse_json(b"[1]") == ([1], True)
    assert _http._parse_json(b"nope") == (None, False)
    assert _http._key("http://h/a?b=1?c") == "http://h/a"


def test_the_backoff_forgets_the_waits_that_passed_once_it_holds_a_thousand(monkeypatch):
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.5)
    now = [1000.0]
    monkeypatch.setattr(_backoff.time, "monotonic", lambda: now[0])
    policy = _backoff.Backoff()
    for n in range(1001):
        policy.hold(f"u{n}", 1.0)
    policy.hold("late", 100.0)
    assert len(policy._held) == 1002
    now[0] += 10
    policy.hold("new", 1.0)
    assert set(policy._held) == {"late", "new"}
    assert policy.held("late") == 90.0 and policy.held("u1") == 0.0
    now[0] += 90
    assert policy.held("late") == 0.0
    assert policy.delay(-3) == 0.5 and policy.delay(500, cap=1e12) == 0.5 * 2 ** 30


def test_the_engines_read_of_a_refused_port_says_refused_not_timed_out(no_proxy_env):
    """A refused connection on the engine's own pool is worded as requests words it (urllib3's
    NewConnectionError is a ConnectTimeoutError too): 'could not reach the API (connection refused)', not a
    timeout."""
    t = _http.Transport(_http.Credentials(KEY, SECRET, f"http://127.0.0.1:{socket_port()}/v1"))
    with pytest.raises(APIConnectionError) as raised:
        t.get_once("/jobs/j")
    assert type(raised.value) is APIConnectionError
    assert str(raised.value).startswith("could not reach the API (connection refused)")
    t.close()


def test_a_refused_downloads_words_are_read_whatever_their_bytes_and_its_wait_kept():
    broken = _http._download_error(500, b"\xff\xfe broken \xc3")
    assert broken.reason == "\ufffd\ufffd broken \ufffd" and broken.status_code == 500
    gone = _http._download_error(403, b"<Message>\xffexpired</Message>")
    assert gone.reason == "asset URL refused: \ufffdexpired"
    assert gone.hint == "signed asset URLs expire; asking the API for the asset again gives a fresh one"
    limited = _http._download_error(429, b"slow down", CaseInsensitiveDict({"Retry-After": "5"}))
    assert isinstance(limited, RateLimitError) and limited.retry_after == 5.0 and limited.body is None
    assert getattr(_http._download_error(503, b"busy"), "retry_after", None) is None


def test_a_url_ending_in_a_letter_keeps_it():
    assert _http.Credentials.resolve("k", "s", "http://h/X/").base_url == "http://h/X"


def test_the_backoff_forgets_passed_waits_past_exactly_a_thousand_and_the_one_ending_now(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(_backoff.time, "monotonic", lambda: now[0])
    policy = _backoff.Backoff()
    for n in range(1000):
        policy.hold(f"u{n}", 1.0)
    now[0] += 5
    policy.hold("a", 1.0)  # 1000 held: none forgotten yet
    assert len(policy._held) == 1001
    policy.hold("b", 1.0)  # 1001 held: the passed ones go
    assert set(policy._held) == {"a", "b"}
    fresh = _backoff.Backoff()
    for n in range(1001):
        fresh.hold(f"u{n}", 5.0 if n == 0 else 1.0)  # u0 ends exactly at the next hold
    now[0] += 5
    fresh.hold("c", 1.0)
    assert set(fresh._held) == {"c"}
    now[0] = 0.0  # a clock at zero (a fresh boot): a hold of half a second is half a second
    zero = _backoff.Backoff()
    zero.hold("z", 0.5)
    assert zero._held["z"] == 0.5


def test_a_429_answering_a_request_sent_the_very_moment_the_last_came_back_grows_the_wait(monkeypatch):
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.5)
    monkeypatch.setattr(_backoff.time, "time", lambda: 5000.0)
    gate = _backoff.CreationGate()
    assert gate.refused(None, sent_at=4000.0) == 1.0
    assert gate.refused(None, sent_at=5000.0) == 2.0  # sent when the last 429 came back: not side by side
    assert gate.refused(None, sent_at=4999.0) == 2.0


def test_the_creation_gate_caps_its_own_wait_at_30_s_whatever_the_policys_cap(monkeypatch):
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.5)
    gate = _backoff.CreationGate(_backoff.Backoff(cap=4.0))
    assert [gate.refused(None) for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    wide = _backoff.CreationGate(_backoff.Backoff(cap=100.0, base=9.0))
    assert [wide.refused(None) for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_reads_retried_in_place_scale_the_policy_by_their_own_base(monkeypatch):
    """urllib3's waits are the policy's rule at the retry's own pace (0.5 s), whatever base the policy has."""
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.5)
    retry = _http._read_retry(8)
    retry.policy = _backoff.Backoff(base=3.0)
    waits = []
    for _ in range(4):
        retry = retry.increment(method="GET", url="/v1/jobs/j", error=ConnectTimeoutError("slow"))
        waits.append(retry.get_backoff_time())
    assert waits == [0.0, 1.0, 2.0, 4.0]


def test_a_creations_cut_short_answer_names_the_request(loop, transport):
    loop.script = [(200, {}, b"{cut")]
    with pytest.raises(_http.UncertainSubmit) as uncertain:
        transport.create("PUT", "/workflows/w/run", {})
    assert uncertain.value.cause == "malformed JSON in the answer to PUT /workflows/w/run (HTTP 200)"


def test_timeouts_on_the_engines_pool_keep_their_cause():
    connect = _http._requests_error(MaxRetryError(None, "/x", reason=ConnectTimeoutError("connect timed out")))
    read = _http._requests_error(MaxRetryError(None, "/x", reason=ReadTimeoutError(None, "/x", "read timed out")))
    assert _http._short(connect) == _http._short(read) == "timed out"


def test_a_wait_of_a_day_or_more_counts_as_no_wait_in_any_form():
    """Seconds at or past a day, as a whole number (which urllib3's parser would take) or a date, count as no
    header: the body's own wait is then read."""
    def wait(value, body=None):
        return _http._retry_after(CaseInsensitiveDict({"Retry-After": value}), body)
    import email.utils
    assert wait("86399") == 86399.0 and wait("86399.5") == 86399.5
    assert wait("86400") is None and wait("100000") is None and wait("86400.5") is None
    assert wait(email.utils.formatdate(time.time() + 2 * 86400, usegmt=True)) is None
    assert wait(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert wait("Mon, 99 Foo 2026 99:99:99 GMT") is None
    assert wait("100000", {"remainingSeconds": 4}) == 4.0 and wait("nan") is None and wait("inf") is None


def test_the_engines_download_goes_straight_to_the_pool_for_http_and_https(loop, transport, monkeypatch):
    pooled = []
    real = transport._pooled_get
    monkeypatch.setattr(transport, "_pooled_get", lambda url, headers: pooled.append(url) or real(url, headers))
    assert transport.download_once(loop.cdn + "/a.png") == b"{}"
    with pytest.raises(APIConnectionError):  # a TLS handshake with a plain HTTP server
        transport.download_once(f"https://localhost:{loop.port}/b.png")
    assert pooled == [loop.cdn + "/a.png", f"https://localhost:{loop.port}/b.png"]
    transport.download(loop.cdn + "/c.png")
    assert len(pooled) == 2


def test_the_engines_download_through_a_proxy_is_asked_once_and_a_drop_there_is_not_the_proxys(
        loop, transport, monkeypatch, waits):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{loop.port}")
    loop.script = [(503, {}, b"")] * 5
    with pytest.raises(ServerError):
        transport.download_once("http://example.invalid/a.png")
    assert len(loop.seen) == 1
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{loop.port}")
    with pytest.raises(APIConnectionError) as odd:  # not the proxy's failure: the proxy is not named
        transport.download_once("ftp://example.invalid/a.png")
    assert str(odd.value) == "asset download failed (InvalidSchema)"


@contextlib.contextmanager
def answering_late(loop, *methods: str):
    """A transport with a 0.2 s read timeout, on a loop server that answers `methods` only once it is closed."""
    release = threading.Event()
    t = _http.Transport(_http.Credentials(KEY, SECRET, loop.api), timeout=(2.0, 0.2), max_retries=0)
    original = loop.server.RequestHandlerClass.answer

    def slow(handler):
        release.wait(5)
        original(handler)
    for method in methods:
        setattr(loop.server.RequestHandlerClass, f"do_{method}", slow)
    try:
        yield t
    finally:
        release.set()
        t.close()


def test_a_download_is_abandoned_after_the_read_timeout(loop, no_proxy_env, waits):
    with answering_late(loop, "GET") as t:
        for once in (False, True):
            with pytest.raises(APIConnectionError, match="timed out"):
                t.download(loop.cdn + "/slow.png", once=once)


def test_a_compressed_asset_is_decoded_on_either_path(loop, transport):
    import gzip
    loop.default = (200, {"Content-Encoding": "gzip"}, gzip.compress(b"PNG" * 100))
    assert transport.download(loop.cdn + "/a.png") == b"PNG" * 100
    assert transport.download_once(loop.cdn + "/a.png") == b"PNG" * 100


def test_the_clients_download_answered_429_holds_the_url_and_says_how_long(loop, transport, waits):
    loop.default = (429, {"Retry-After": "7"}, b"")
    with pytest.raises(RateLimitError) as limited:
        transport.download(loop.cdn + "/a.png?sig=1")
    assert limited.value.retry_after == 7.0 and 6 < transport.backoff.held(loop.cdn + "/a.png") <= 7
    assert len(loop.seen) == 5 and waits == [7.0] * 4  # waited out in place four times first
    loop.default = (429, {"Retry-After": "9"}, b"")
    with pytest.raises(RateLimitError) as once:
        transport.download_once(loop.cdn + "/b.png")
    assert once.value.retry_after == 9.0


def test_an_api_answer_is_read_in_the_servers_words_whatever_its_bytes():
    with pytest.raises(ServerError) as broken:
        _http._answer(500, {}, b"\xff broken", "GET", "/jobs/j")
    assert broken.value.reason == "\ufffd broken"
    with pytest.raises(NotFoundError) as gone:
        _http._answer(404, {}, b'{"reason": "no such job"}', "GET", "/jobs/x")
    assert gone.value.reason == "no such job"
    with pytest.raises(RateLimitError) as cooling:
        _http._answer(429, CaseInsensitiveDict(), b'{"remainingSeconds": 5}', "POST", "/generate")
    assert cooling.value.retry_after == 5.0
    with pytest.raises(_http.MalformedAnswer) as cut:
        _http._answer(201, {}, b"{cut", "POST", "/assets")
    assert cut.value.status_code == 201


def test_a_cut_short_answer_to_a_read_names_the_request(loop, transport, waits):
    loop.default = (200, {}, b"{cut")
    with pytest.raises(_http.MalformedAnswer) as cut:
        transport.get("/jobs/j")
    assert str(cut.value) == "malformed JSON in the answer to GET /jobs/j (HTTP 200)"


def test_an_api_whose_url_ends_in_a_letter_is_asked_there(loop, no_proxy_env):
    t = _http.Transport(_http.Credentials(KEY, SECRET, f"http://127.0.0.1:{loop.port}/X"))
    assert t.get("/jobs/j") == {} and loop.seen[-1][1] == "/X/jobs/j"
    t.close()


def test_a_cdn_message_is_read_within_its_first_2000_bytes_only():
    tail = b"<Message>late</Message>"
    assert _http._download_error(500, b"x" * (2000 - len(tail)) + tail).reason == "late"
    assert "late" not in _http._download_error(500, b"x" * (2001 - len(tail)) + tail).reason


def test_the_engines_reads_over_https_trust_the_ca_bundle_the_environment_names(no_proxy_env, monkeypatch):
    """REQUESTS_CA_BUNDLE reaches the engine's own pool: a server whose certificate only that bundle vouches for
    is read; without it the same read is refused (no system trusts the test's certificate)."""
    server = Loopback(tls=True)
    t = _http.Transport(_http.Credentials(KEY, SECRET, f"https://127.0.0.1:{server.port}/v1"))
    try:
        with pytest.raises(APIConnectionError):
            t.download_once(f"https://localhost:{server.port}/a.png")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", TLS_PEM)
        assert t.download_once(f"https://localhost:{server.port}/a.png") == b"{}"
        assert t.get_once("/jobs/j") == {}
        assert [path for _, path, _, _ in server.seen] == ["/a.png", "/v1/jobs/j"]
    finally:
        t.close()
        server.close()


def test_the_engines_pool_key_is_worked_out_once_per_origin(loop, transport, monkeypatch):
    built = []
    real = transport._adapter.build_connection_pool_key_attributes
    monkeypatch.setattr(transport._adapter, "build_connection_pool_key_attributes",
                        lambda request, verify, cert=None: built.append(request.url) or real(request, verify, cert))
    transport.download_once(loop.cdn + "/a.png")
    transport.download_once(loop.cdn + "/b/c.png?x=1")
    transport.get_once("/jobs/j")
    transport.get_once("/jobs/k")
    assert built == [loop.cdn + "/", f"http://127.0.0.1:{loop.port}/"]


def test_each_read_takes_its_fast_path(loop, transport, monkeypatch):
    """The engine's plain GETs go straight to the pool; the client's plain GETs reuse the prepared root; a GET
    with parameters or a body, and every other method, is prepared by requests in full."""
    taken = []
    for name in ("_pooled_get", "_prepared_get"):
        real = getattr(transport, name)
        monkeypatch.setattr(transport, name, lambda *args, _name=name, _real=real: taken.append(_name) or
                            _real(*args))
    transport.get_once("/jobs/j")
    assert taken == ["_pooled_get"]
    transport.get("/jobs/j")
    assert taken[1:] == ["_prepared_get"]
    transport.get("/models", pageSize=5)
    transport.request("GET", "/models", json_body={"a": 1})
    transport.request("GET", "/jobs", params={"a": 1}, once=True)
    transport.request("POST", "/assets", json_body={})
    transport.request("DELETE", "/models/m")
    transport.create("POST", "/generate/custom/m", {})
    assert taken[2:] == [] and len(loop.seen) == 8


def test_a_call_site_may_set_its_own_jitter(monkeypatch):
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.0)
    policy = _backoff.Backoff(jitter=0.5)
    assert policy.delay(1) == 0.75 and policy.delay(1, jitter=0.0) == 1.0 and policy.delay(1, jitter=1.0) == 0.5


def test_a_connection_too_slow_to_open_is_worded_exactly():
    slow = _http._connection_error(requests.ConnectTimeout("x"), "POST", "/generate")
    assert str(slow) == "could not connect to the API in time; check your network or proxy"


def test_the_policys_defaults_and_a_fresh_gates(monkeypatch):
    monkeypatch.setattr(_backoff.random, "random", lambda: 0.5)
    policy = _backoff.Backoff()
    assert (policy.base, policy.cap, policy.jitter) == (0.5, 30.0, 0.5) and policy.delay(10) == 30.0
    monkeypatch.setattr(_backoff.time, "monotonic", lambda: 0.0)  # a clock at zero: a fresh gate is open
    assert _backoff.CreationGate().remaining() == 0.0
    gate = _backoff.CreationGate()
    assert gate.refused(None, sent_at=0.5) == 1.0  # a 429 to a request sent before any other came back
    assert gate.refused(None, sent_at=time.time() + 1) == 2.0
    t = _http.Transport(_http.Credentials(KEY, SECRET, "http://127.0.0.1:9/v1"))
    assert t._adapter._pool_maxsize == 16 and t.timeout == (5.0, 60.0)
    t.close()


def test_api_calls_never_follow_a_redirect(loop, transport):
    """The API does not redirect: a 3xx is an answer (an error), and nothing is asked of where it points."""
    for ask in (lambda: transport.get("/jobs/j"), lambda: transport.get("/models", pageSize=1),
                lambda: transport.request("POST", "/assets", json_body={})):
        loop.seen.clear()
        loop.script = [(302, {"Location": loop.cdn + "/elsewhere"}, b""), (200, {}, b"{}")]
        with pytest.raises(APIError) as raised:
            ask()
        assert raised.value.status_code == 302 and len(loop.seen) == 1


def test_api_calls_give_up_after_the_read_timeout(loop, no_proxy_env, waits):
    with answering_late(loop, "GET", "POST") as t:
        with pytest.raises(APIConnectionError, match=r"^the connection dropped during GET /jobs/j \(timed out\)$"):
            t.get("/jobs/j")  # urllib3's retries (none left) hand requests a MaxRetryError: worded as a drop
        with pytest.raises(APIConnectionError, match="^POST /assets got no answer in time$"):
            t.request("POST", "/assets", json_body={})


def test_every_api_call_goes_through_the_proxy_the_environment_names(loop, transport, monkeypatch, waits):
    closed = socket_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed}")
    for ask in (lambda: transport.get("/jobs/j"), lambda: transport.request("POST", "/assets", json_body={})):
        with pytest.raises(APIConnectionError, match=f"through the proxy 127.0.0.1:{closed} set in the environment"):
            ask()
    assert loop.seen == []


def test_the_log_gives_the_answers_time_in_milliseconds(loop, transport, log_lines, monkeypatch):
    clock = iter([100.0, 102.5])

    class Clock:
        sleep, time = staticmethod(time.sleep), staticmethod(time.time)

        @staticmethod
        def monotonic() -> float:
            return next(clock)
    monkeypatch.setattr(_http, "time", Clock)
    transport.get_once("/jobs/j")
    assert log_lines == ["GET /jobs/j -> 200 in 2500 ms"]


def test_a_date_past_what_the_clock_can_say_is_no_wait():
    def wait(value, body=None):
        return _http._retry_after(CaseInsensitiveDict({"Retry-After": value}), body)
    assert wait("Mon, 01 Jan 99999 00:00:00 GMT") is None
    assert wait("Mon, 01 Jan 9999999999 00:00:00 GMT", {"remainingSeconds": 3}) == 3.0
