"""The sandbox's images behave like generations: img2img visibly comes from its input image, and the caption
fits every aspect ratio (nothing cut at the bottom or the right)."""

from __future__ import annotations

import base64
import io
import time

import pytest
import requests
from PIL import Image, ImageStat

from scenario_nb import sandbox as sandbox_mod

GEMINI, FLUX1, GPT = "model_google-gemini-3-1-flash", "model_bfl-flux-1-dev", "model_openai-gpt-image-2"
LONG_PROMPT = ("a very long prompt about a knight in shining armour walking through an enchanted pixel forest at "
               "dawn, with fireflies, mossy stones, a distant castle, banners in the wind and a loyal dog beside")


@pytest.fixture(scope="module")
def sb():
    with sandbox_mod.start(job_seconds=0.3, seed=3, list_lag=0) as server:
        yield server


def api(sb, method, path, **kwargs):
    return requests.request(method, sb.url + path, auth=(sb.api_key, sb.api_secret), timeout=20, **kwargs)


def images(sb, model, bodies) -> list:
    """Run every body at once; the first output image of each."""
    ids = []
    for body in bodies:
        answer = api(sb, "POST", f"/generate/custom/{model}", json=body)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["job"]["jobId"])
    out = []
    for job_id in ids:
        for _ in range(400):
            job = api(sb, "GET", f"/jobs/{job_id}").json()["job"]
            if job["status"] == "success":
                break
            time.sleep(0.05)
        asset = api(sb, "GET", f"/assets/{job['metadata']['assetIds'][0]}").json()["asset"]
        out.append(Image.open(io.BytesIO(requests.get(asset["url"], timeout=20).content)).convert("RGB"))
    return out


def upload(sb, left, right) -> str:
    image = Image.new("RGB", (200, 100), left)
    image.paste(right, (100, 0, 200, 100))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return api(sb, "POST", "/assets", json={"name": "halves.png",
                                            "image": base64.b64encode(buf.getvalue()).decode()}).json()["asset"]["id"]


def redness(image: Image.Image, box) -> float:
    red, _, blue = ImageStat.Stat(image.crop(box)).mean
    return red - blue


def test_img2img_comes_from_its_input_image(sb):
    red_blue, blue_red = upload(sb, (220, 30, 30), (30, 30, 220)), upload(sb, (30, 30, 220), (220, 30, 30))
    body = {"prompt": "same prompt", "seed": 7, "width": 512, "height": 512}
    plain, first, flipped = images(sb, FLUX1, [body, {**body, "image": red_blue}, {**body, "image": blue_red}])
    left, right = (0, 0, 256, 256), (256, 0, 512, 256)  # the top half: above any caption
    assert redness(first, left) - redness(first, right) > 60  # red where the input is red
    assert redness(flipped, right) - redness(flipped, left) > 60
    assert plain.tobytes() != first.tobytes()  # same prompt and seed without the input: another image
    (through_refs,) = images(sb, GEMINI, [{"prompt": "refs", "seed": 7, "referenceImages": [red_blue],
                                           "aspectRatio": "1:1"}])
    assert redness(through_refs, (0, 0, 512, 512)) - redness(through_refs, (512, 0, 1024, 512)) > 60


def caption_band(image: Image.Image) -> int:
    """Height of the caption band: the rows at the bottom whose left edge is the band's pure black."""
    height = image.height
    pixels = image.load()
    rows = 0
    while rows < height and all(pixels[x, height - 1 - rows] == (0, 0, 0) for x in range(2)):
        rows += 1
    return rows


def check_caption_fits(image: Image.Image, label: str) -> None:
    width, height = image.size
    band = caption_band(image)
    assert 0 < band <= height * 0.4, f"{label}: no caption band (or too tall: {band} rows)"
    region = image.crop((0, height - band, width, height))
    pixels = region.load()
    text = [(x, y) for y in range(band) for x in range(width) if pixels[x, y] != (0, 0, 0)]
    assert text, f"{label}: the caption is empty"
    xs, ys = [x for x, _ in text], [y for _, y in text]
    assert min(ys) >= 2 and max(ys) <= band - 3, f"{label}: text touches the band's top or bottom edge"
    assert min(xs) >= 2 and max(xs) <= width - 3, f"{label}: text runs off the side"


@pytest.mark.parametrize("ratios", [["21:9", "16:9", "3:2", "4:3", "5:4", "1:1"], ["4:5", "3:4", "2:3", "9:16"]])
def test_caption_fits_every_aspect_ratio(sb, ratios):
    bodies = [{"prompt": LONG_PROMPT, "aspectRatio": ratio} for ratio in ratios]
    for ratio, image in zip(ratios, images(sb, GEMINI, bodies), strict=True):
        check_caption_fits(image, ratio)


def test_caption_fits_extreme_sizes(sb):
    sizes = [(256, 2048), (2048, 256), (128, 128), (16, 16)]
    bodies = [{"prompt": LONG_PROMPT, "width": w, "height": h} for w, h in sizes]
    for (w, h), image in zip(sizes, images(sb, GPT, bodies), strict=True):
        assert image.size == (w, h)
        if min(w, h) >= 128:
            check_caption_fits(image, f"{w}x{h}")
        else:
            assert caption_band(image) == 0  # too small to hold a caption: none rather than a cut one
