"""Messages that say what happened and what to do (issue 25 item 13), each checked before anything is paid
for where it can be: judged by what the sandbox received (POSTs, jobs created) as well as by the words."""

from __future__ import annotations

import io

import pytest
from IPython.utils.capture import capture_output
from PIL import Image

import scenario_nb
from scenario_nb import APIConnectionError, InputError, ScenarioClient, StorageError

from conftest import SUITE_KEY as KEY, SUITE_SECRET as SECRET, free_port  # noqa: E402


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


def test_a_dead_proxy_is_named(sb, tmp_path, monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the proxy is down
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, dead)
    seen = len(sb.requests)
    client = ScenarioClient(KEY, SECRET, sb.url, home=tmp_path, max_retries=0)
    try:
        with pytest.raises(APIConnectionError) as error:
            client.models()
    finally:
        client.close()
    assert "proxy" in str(error.value) and "HTTPS_PROXY" in str(error.value) and dead not in str(error.value)
    assert len(sb.requests) == seen  # it went to the proxy, never to the API
    assert scenario_nb  # the package's own errors, as users catch them
