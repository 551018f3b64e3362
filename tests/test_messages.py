"""Messages that say what happened and what to do (issue 25 item 13), each checked before anything is paid
for where it can be: judged by what the sandbox received (POSTs, jobs created) as well as by the words."""

from __future__ import annotations

import http.server
import io
import socketserver
import threading
import urllib.request

import pytest
from IPython.utils.capture import capture_output
from PIL import Image

import scenario_nb
from scenario_nb import APIConnectionError, InputError, ScenarioClient, StorageError

from conftest import SUITE_KEY as KEY, SUITE_SECRET as SECRET, free_port  # noqa: E402

GEMINI = "model_google-gemini-3-1-flash"


def posts(server) -> list:
    return [r for r in server.requests if r["method"] in ("POST", "PUT")]


def huge_png(path) -> None:
    """A 13000 × 13000 PNG (169 megapixels, over Pillow's 89): 20 KB on disk, all black."""
    buf = io.BytesIO()
    Image.new("1", (13000, 13000)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def test_a_huge_png_is_too_large_not_not_an_image(client, sb, tmp_path):
    big = tmp_path / "set" / "huge.png"
    big.parent.mkdir()
    huge_png(big)
    for n in range(5):
        Image.new("RGB", (1024, 1024), (40 * n, 90, 160)).save(big.parent / f"ok-{n}.png")
    before = len(posts(sb))
    with pytest.raises(InputError) as upload:
        client.upload_image(big)
    with pytest.raises(InputError) as train:
        client.train("Huge", big.parent, captions=None)
    for error in (upload.value, train.value):
        assert "huge.png is too large: 13000 × 13000 pixels" in str(error) and "not an image" not in str(error)
    assert len(posts(sb)) == before  # refused here: nothing uploaded, no model created


def test_o_with_a_keyword_is_refused_before_sending(ip, env):
    created = env.stats()["jobs_created"]
    result = ip.run_cell("%%scenario Gemini -o class\na lamp")
    assert "keyword" in str(result.error_in_exec) and "-o class_" in str(result.error_in_exec)
    assert env.stats()["jobs_created"] == created and "class" not in ip.user_ns


def test_save_to_an_unwritable_folder_is_refused_before_paying(ip, env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    created = env.stats()["jobs_created"]
    for cell in (f"%%scenario Gemini --save {blocker}/out\na lamp",
                 f"%%scenario Gemini --vary seed=1,2 --save {blocker}/out\na lamp"):
        result = ip.run_cell(cell)
        assert "cannot write there" in str(result.error_in_exec) and "nothing was sent" in str(result.error_in_exec)
    assert env.stats()["jobs_created"] == created


def test_a_full_disk_says_so(client, sb):
    conn = client.history._connection()
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")  # as full as a disk
    sent = sb.generate_posts
    with pytest.raises(StorageError) as full:
        client.generate("model_bfl-flux-2-dev", "a lamp " * 290, width=512, height=512)
    assert "the disk is full" in str(full.value) and "rollback" not in str(full.value)
    assert sb.generate_posts == sent  # not recorded, so not sent


def test_a_text_models_count_speaks_of_answers(ip, env):
    created = env.stats()["jobs_created"]
    with capture_output():
        result = ip.run_cell('%%scenario "Prompt Writer" -n 2\nname a potion')
    assert "one answer per job" in str(result.error_in_exec) and "image" not in str(result.error_in_exec)
    assert env.stats()["jobs_created"] == created


PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")


def no_proxy_set(monkeypatch) -> None:
    """No proxy in the environment, and whatever a test sets restored after it."""
    for name in PROXY_VARIABLES + ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "")  # so that monkeypatch puts back what was there (or nothing)
        monkeypatch.delenv(name)


def test_a_dead_proxy_is_named(sb, tmp_path, monkeypatch):
    no_proxy_set(monkeypatch)
    port = free_port()  # nothing listens there: the proxy is down
    seen = len(sb.requests)
    client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path, max_retries=0)
    try:
        client.models()  # before the proxy is set: straight to the API
        assert len(sb.requests) == seen + 1
        for name in PROXY_VARIABLES:  # set mid-session, with credentials in it
            monkeypatch.setenv(name, f"http://someone:hunter2@127.0.0.1:{port}")
        with pytest.raises(APIConnectionError) as error:
            client.models()
    finally:
        client.close()
    message = str(error.value)
    assert f"proxy 127.0.0.1:{port} set in the environment" in message and "HTTPS_PROXY" in message
    assert "hunter2" not in message and "someone" not in message
    assert len(sb.requests) == seen + 1  # it went to the proxy, never to the API


class _CountingProxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy for plain-HTTP URLs (the sandbox's) that counts what passes through it."""

    seen: list = []

    def _forward(self) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        request = urllib.request.Request(self.path, data=self.rfile.read(length) if length else None,
                                         method=self.command, headers=headers)
        try:
            response = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30)
            status, data, reply = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, data, reply = exc.code, exc.read(), exc.headers
        self.send_response(status)
        self.send_header("Content-Type", reply.get("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_CONNECT = _forward

    def log_message(self, *args) -> None:
        pass


def test_a_proxy_set_or_unset_mid_session_carries_the_next_request(client, sb, monkeypatch):
    """`os.environ[...] = ...` or `%env` after the first requests: the next one goes through the proxy (polls
    and downloads too), and once it is unset, straight to the API again."""
    no_proxy_set(monkeypatch)
    proxy = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _CountingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    _CountingProxy.seen = []
    try:
        assert client.generate(GEMINI, "before the proxy").wait(timeout=30).ok  # every cache warm, no proxy
        client.models()
        assert _CountingProxy.seen == []
        for name in PROXY_VARIABLES:
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.server_address[1]}")
        client.models()
        assert [s.split("?")[0] for s in _CountingProxy.seen] == [f"GET {sb.url}/models"]
        gen = client.generate(GEMINI, "through the proxy").wait(timeout=30)
        assert gen.ok and gen.images
        through = " ".join(_CountingProxy.seen)
        assert f"POST {sb.url}/generate/" in through and f"GET {sb.url}/jobs/" in through  # sent, polled
        assert f"GET {sb.cdn_url}" in through  # and downloaded, through the proxy
        for name in PROXY_VARIABLES:
            monkeypatch.delenv(name)
        count, asked = len(_CountingProxy.seen), len(sb.requests)
        client.models()
        assert len(_CountingProxy.seen) == count and len(sb.requests) == asked + 1  # straight to the API
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert scenario_nb  # the package's own errors, as users catch them
