"""`%scenario asset ID` shows an asset as what it is (a video plays, a 3D model is a download link, a text is its
text), and `%scenario?` is readable plain text. Checked on the mime bundle and the help text themselves."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from IPython.utils.capture import capture_output

import scenario_nb
from scenario_nb._display import asset_bundle
from scenario_nb._magics import ScenarioMagics
from scenario_nb._commands import SUBCOMMANDS


def shown(ip, cell: str) -> dict:
    """The one display a command made (its mime bundle)."""
    with capture_output() as out:
        result = ip.run_cell(cell)
    assert result.error_in_exec is None, result.error_in_exec
    return out.outputs[-1].data


def embedded(html_text: str, mime: str) -> bytes:
    found = re.search(rf'data:{re.escape(mime)};base64,([A-Za-z0-9+/=]+)"', html_text)
    assert found, f"no {mime} data in {html_text[:300]}"
    return base64.b64decode(found[1])


def stored(asset_id: str) -> Path:
    return scenario_nb.client().fetch_asset(asset_id)


def test_a_video_asset_is_a_player_of_its_own_bytes(ip, env):
    ip.run_cell('%%scenario "Seedance 2.0" -o v\na dragon flying')
    asset_id = ip.user_ns["v"].outputs[0].asset_id
    data = shown(ip, f"%scenario asset {asset_id}")
    assert "<video controls" in data["text/html"]
    assert embedded(data["text/html"], "video/mp4") == stored(asset_id).read_bytes()


def test_a_3d_asset_is_a_download_link_of_its_own_bytes(ip, env):
    ip.run_cell('%%scenario "Meshy 7 - Text-to-3D" -o m\na treasure chest')
    asset_id = ip.user_ns["m"].outputs[0].asset_id
    data = shown(ip, f"%scenario asset {asset_id}")
    assert '<a download="' in data["text/html"] and "3d model" in data["text/html"]
    assert embedded(data["text/html"], "model/gltf-binary") == stored(asset_id).read_bytes()


def test_a_text_asset_shows_its_text(tmp_path):
    path = tmp_path / "asset_T.txt"
    path.write_text("A knight <rides> at dawn.\nSecond line.")
    data, metadata = asset_bundle({"id": "asset_T", "kind": "text", "mimeType": "text/plain"}, path)
    assert data["text/plain"] == "A knight <rides> at dawn.\nSecond line."
    assert "A knight &lt;rides&gt; at dawn." in data["text/html"] and "<pre" in data["text/html"]
    assert metadata["scenario_nb"]["asset_id"] == "asset_T"


def test_the_help_is_plain_text_that_fits_and_names_every_subcommand(ip, env):
    for text in (ScenarioMagics.scenario.__doc__, ip.object_inspect_text("%scenario")):
        lines = text.splitlines()
        assert not [line for line in lines if "::" in line], "a reST marker in the help"
        assert not [line for line in lines if len(line.expandtabs()) > 79], "a line too wide for the pager"
    with capture_output() as out:
        ip.run_cell("%scenario help")
    assert "::" not in out.stdout
    missing = [name for name in SUBCOMMANDS if f"%scenario {name}" not in out.stdout]
    assert not missing, f"the help names no {missing}"
