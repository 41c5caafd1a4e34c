"""`jointdiff serve` end to end: a real server process, driven over HTTP and from headless Chromium.

The browser tests need Debian's ``chromium`` (``apt-get install chromium``) and the ``playwright``
python package; they skip with the reason where either is missing. Set
``JOINTDIFF_APP_SCREENSHOT=docs/app-screenshot.png`` to save the screenshot shown in the README.
"""

import io
import json
import os
import socket
import subprocess
import sys
import time
import types
import urllib.request
import zipfile
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import PIL.ImageDraw
import pytest
from test_app import make_tiny_run, png_bytes, png_header

from jointdiff.common.tiny import save_tiny_base
from jointdiff.jedi.convert import convert_pipeline

pytest.importorskip("gradio", reason="gradio not installed (pip install 'jointdiff[app]')")

CHROMIUM = os.environ.get("JOINTDIFF_CHROMIUM", "/usr/bin/chromium")
# A closed network makes Chromium hang on its background connections: turn them all off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status


def toy_png(path: Path) -> Path:
    """A drawn toy (body, head, eyes) on a plain floor: the reference of the tests and the screenshot."""
    im = PIL.Image.new("RGB", (96, 96), (236, 228, 210))
    d = PIL.ImageDraw.Draw(im)
    d.rectangle((0, 70, 96, 96), fill=(180, 140, 100))
    d.ellipse((28, 36, 68, 84), fill=(200, 40, 40))
    d.ellipse((34, 12, 62, 40), fill=(230, 80, 60))
    d.ellipse((40, 20, 46, 26), fill="black")
    d.ellipse((50, 20, 56, 26), fill="black")
    im.save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``jointdiff serve`` on a free localhost port with a tiny converted model; yields its URL."""
    root = tmp_path_factory.mktemp("serve")
    save_tiny_base(root / "base", seed=0)
    convert_pipeline(root / "base", root / "model")
    try:  # a real DreamBooth run for the DreamBlend tab, where this install has DreamBlend
        import jointdiff.dreamblend.blend  # noqa: F401

        run_args = ["--run", str(make_tiny_run(root / "db"))]
    except ImportError:
        run_args = []
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(root / "server.log", "w+")  # noqa: SIM115 (closed below)
    cmd = [sys.executable, "-m", "jointdiff.cli", "serve", "--model", "model", "--port", str(port), *run_args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"jointdiff serve exited with {proc.returncode}:\n{log.read()[-3000:]}")
        try:
            if _get(url) == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("jointdiff serve did not answer within 90 s")
        time.sleep(0.3)
    yield types.SimpleNamespace(url=url, proc=proc, root=root, dreamblend=bool(run_args))
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


# -- HTTP: malformed uploads -----------------------------------------------------------------------


def malformed_uploads(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` bad files cycling through random bytes, huge-dimension headers and truncated PNGs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append((f"random{i}.png", rng.bytes(int(rng.integers(0, 4096)))))
        elif kind == 1:
            w, h = [(20000, 20000), (100000, 1), (1, 65535), (4097, 4097), (2**31 - 1, 2**31 - 1)][i // 5 % 5]
            out.append((f"huge{i}.png", png_header(w, h)))
        elif kind == 2:
            data = png_bytes(48, 48, seed=i)
            out.append((f"truncated{i}.png", data[: int(rng.integers(8, len(data) - 16))]))
        elif kind == 3:
            data = bytearray(png_bytes(48, 48, seed=i))
            data[60:80] = rng.bytes(20)  # corrupt the pixel stream, keep the header
            out.append((f"corrupt{i}.jpg", bytes(data)))
        else:
            out.append((f"text{i}.png", b"not an image " * int(rng.integers(1, 100))))
    return out


def test_fifty_malformed_uploads_leave_the_server_up(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    for i, (name, data) in enumerate(malformed_uploads(50)):
        path = tmp_path / name
        path.write_bytes(data)
        gallery, files, status = client.predict(
            [handle_file(str(path))], "a toy", None, "joint", 7.5, 7.5, 2, 0, False, api_name="/generate"
        )
        assert status.startswith("**Error:**") and name in status, (name, status)
        assert gallery == [] and files is None
        if i % 5 == 0:  # the check that runs on upload in the page
            preview, check = client.predict([handle_file(str(path))], api_name="/check_references")
            assert check.startswith("**Error:**") and preview == []
    # Over the upload limit: the server refuses the file before storing it (the client would too).
    big = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("big.png", bytes(11 * 2**20))}, timeout=60)
    assert big.status_code == 413 and "maximum allowed size" in big.text, (big.status_code, big.text[:200])

    # Still up, answering, and generating.
    assert server.proc.poll() is None and _get(server.url) == 200
    ref = toy_png(tmp_path / "toy.png")
    gallery, files, status = client.predict(
        [handle_file(str(ref))], "a toy\na toy in the snow", None, "joint", 7.5, 7.5, 2, 0, False, api_name="/generate"
    )
    assert status.startswith("2 image(s), 2 steps, seed 0"), status
    assert [item["caption"] for item in gallery] == ["a toy", "a toy in the snow"]
    with PIL.Image.open(gallery[0]["image"]) as im:  # the served file keeps its settings chunk
        assert json.loads(im.text["jointdiff"])["prompt"] == "a toy"


# -- Chromium ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_api():
    """Playwright's sync API, or a skip saying what is missing (checked before the server starts)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install chromium): browser tests skipped")
    return pytest.importorskip("playwright.sync_api", reason="playwright not installed: browser tests skipped")


@pytest.fixture(scope="module")
def page(sync_api, server, tmp_path_factory):
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh profile every run
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto(server.url)
        page.wait_for_selector("#generate")
        yield page
        context.close()


def _upload(page, path: Path) -> None:
    """Replace the reference uploads with ``path`` (the file list otherwise appends)."""
    clear = page.locator("#references button[aria-label='Clear']")
    if clear.count():
        clear.click()
        page.wait_for_function("!document.querySelector('#references tr.file')")
    page.locator("#references input[type=file]").set_input_files(str(path))


def _status(page) -> str:
    return page.inner_text("#status").strip()


def _wait_status(page, needle: str) -> str:
    """The status text at the first moment it contains ``needle``."""
    handle = page.wait_for_function(
        "needle => { const t = document.querySelector('#status')?.innerText || ''; return t.includes(needle) && t }",
        arg=needle,
    )
    return handle.json_value().strip()


def test_browser_opens_with_a_held_out_toy_subject_and_the_first_click_personalises(page):
    """First contact (issue 31): the page opens with held-out toy subject 0 as the reference, prompts naming it and a
    status that says to press Generate; one click generates with that reference."""
    pytest.importorskip("jointdiff.data.toyworld.generator", reason="the toy world is not in this install")
    assert page.locator("#reference-preview img").count() == 1
    caption = page.input_value("#reference-caption textarea")
    assert page.input_value("#prompts textarea") == f"{caption} on the beach\n{caption} in the snow"
    assert _status(page).endswith("press Generate") and caption in _status(page)
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 2")
    assert _wait_status(page, "seed 0") == "2 image(s), 30 steps, seed 0"


def test_browser_upload_a_reference_generate_and_see_the_images(page, tmp_path):
    _upload(page, toy_png(tmp_path / "toy.png"))
    assert _wait_status(page, "ready") == "1 reference image(s) ready (96x96 px)"
    page.fill("#prompts textarea", "a toy on the beach\na toy in the snow\na toy in the jungle")
    page.fill("#steps input[type=number]", "40")
    page.fill("#seed input", "3")
    page.click("#generate")
    assert "denoising" in _wait_status(page, "denoising")  # the progress bar over the outputs
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 3")
    assert _wait_status(page, "40 steps") == "3 image(s), 40 steps, seed 3"
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth)")
    sizes = page.eval_on_selector_all("#gallery img", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[16, 16]] * 3  # the tiny model's 16x16 px outputs, decoded by the browser
    captions = page.locator("#gallery").inner_text()
    assert all(p in captions for p in ("a toy on the beach", "a toy in the snow", "a toy in the jungle"))
    # The download list holds the zip; fetch it from the page's link and read the settings back.
    link = page.locator("#download a[download='jointdiff-images.zip']")
    body = page.request.get(link.get_attribute("href")).body()
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        settings = json.loads(z.read("settings.json"))
    assert settings["seed"] == 3 and settings["steps"] == 40 and settings["references"] == ["toy.png"]


def test_browser_upload_a_non_image_and_see_the_error(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("these are my notes, not a picture")
    _upload(page, notes)
    status = _wait_status(page, "Error")
    assert status == "Error: notes.txt is not an image (accepted: PNG, JPEG, WEBP, BMP, GIF)"
    assert page.locator("#reference-preview img").count() == 0
    page.click("#generate")  # generating with it clears the gallery and shows the same message
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 0")
    assert _status(page) == status
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(png_bytes(48, 48, seed=0)[:200])
    _upload(page, truncated)
    assert "cannot read reference image cut.png" in _wait_status(page, "cut.png")


def test_browser_pick_a_toy_world_subject_and_generate(page, tmp_path):
    pytest.importorskip("jointdiff.data.toyworld.generator", reason="the toy world is not in this install")
    clear = page.locator("#references button[aria-label='Clear']")
    if clear.count():
        clear.click()
    page.fill("#toy-index input", "3")
    page.fill("#toy-count input[type=number]", "2")
    page.click("#toy")
    assert _wait_status(page, "ready") == "2 reference image(s) ready (64x64, 64x64 px)"
    page.wait_for_function("document.querySelectorAll('#reference-preview img').length === 2")
    caption = page.input_value("#reference-caption textarea")
    assert caption.split()[0] in ("a", "an")
    page.fill("#prompts textarea", f"{caption} on the beach\n{caption} in the snow")
    page.fill("#steps input[type=number]", "20")
    page.fill("#seed input", "0")
    page.click("#generate")
    assert _wait_status(page, "seed 0") == "2 image(s), 20 steps, seed 0"
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth)")
    assert page.locator("#gallery img").count() == 2
    shot = Path(os.environ.get("JOINTDIFF_APP_SCREENSHOT") or tmp_path / "app.png")
    page.screenshot(path=str(shot), full_page=True)  # the README's docs/app-screenshot.png
    assert PIL.Image.open(shot).width == 1280


def test_browser_two_toy_subjects_one_caption_line_each(page, tmp_path):
    """Issue 33: "Two toy subjects" loads subjects i and i + 1 as the references, one caption line each, prompts
    naming both; Generate makes them."""
    pytest.importorskip("jointdiff.data.toyworld.pairs", reason="the toy world is not in this install")
    page.fill("#toy-index input", "5")
    page.click("#toy-pair")
    assert "one caption line per reference" in _wait_status(page, "caption line")
    page.wait_for_function("document.querySelectorAll('#reference-preview img').length === 2")
    captions = page.input_value("#reference-caption textarea").splitlines()
    prompts = page.input_value("#prompts textarea").splitlines()
    assert len(captions) == 2 and all(c.split()[-1] in p for c in captions for p in prompts)
    assert page.is_checked("#one-subject-per-reference input")  # two subjects: each reference its own column
    page.fill("#steps input[type=number]", "3")
    page.fill("#seed input", "1")
    page.click("#generate")
    assert _wait_status(page, "seed 1") == "2 image(s), 3 steps, seed 1"
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 2")


def test_browser_dreamblend_on_a_fine_tuned_run(server, page):
    if not server.dreamblend:
        pytest.skip("DreamBlend is not in this install (the tab says so; tested in test_app.py)")
    page.get_by_role("tab", name="DreamBlend").click()
    page.locator("#overfit input").click()
    page.get_by_role("option", name="step 6").click()
    page.fill("#blend-steps input[type=number]", "3")
    page.click("#blend")
    page.wait_for_function("(document.querySelector('#blend-status')?.innerText || '').includes('done')")
    assert page.inner_text("#blend-status").strip() == "DreamBlend done, seed 0"
    page.wait_for_function("document.querySelectorAll('#blend-gallery img').length === 2")
    captions = page.locator("#blend-gallery").inner_text()
    assert "underfit checkpoint, step 2" in captions and "DreamBlend, overfit step 6" in captions
    page.get_by_role("tab", name="JeDi").click()
