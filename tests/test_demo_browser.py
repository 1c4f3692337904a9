"""The demo page in a real browser: `python demo/app.py` on a free loopback port, driven by headless Chromium.

Debian's `chromium` (apt) through Playwright for Python, never a browser download (.ci/run installs both). Without
them the tests skip, unless VIQ_REQUIRE_BROWSER=1 (set by .ci/run), where they fail. Screenshots go to each test's
output folder (pytest's tmp_path).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
import torch
from PIL import Image
from test_demo_app import bad_uploads, wait_for_page

from transformers_viq import ViQCodes, ViQModel, ViQProcessor, metrics
from transformers_viq.demo import BUNDLED_MODEL
from transformers_viq.pipeline import ViQPipeline, reconstruction_numbers
from transformers_viq.testing import free_port, make_tiny_vlm, qwen_tokenizer


REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "assets" / "samples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# headless as root on a closed network: no sandbox, no GPU, and none of the background requests Chromium makes
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-dev-shm-usage"]  # fmt: skip
TIMEOUT_MS = 60_000  # one step on a loaded 2-core machine; a step normally takes a few seconds
MAX_NEW_TOKENS = 12


def _browser_or_skip():
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -r requirements-dev.txt)")
    if CHROMIUM is None:
        missing.append("Debian's chromium (apt-get install chromium)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("VIQ_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory) -> Path:
    """A tiny random VLM whose tokenizer is the bundled one, saved with its processor (the page's --vlm)."""
    folder = tmp_path_factory.mktemp("vlm")
    vlm = make_tiny_vlm(qwen_tokenizer(), viq=ViQModel.from_pretrained(REPO / BUNDLED_MODEL))
    vlm.generation_config.max_new_tokens = MAX_NEW_TOKENS
    vlm.save_pretrained(folder)
    ViQProcessor(tokenizer=qwen_tokenizer()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def app_url(vlm_folder):
    """The documented command, on a free loopback port; stopped after the module's tests."""
    _browser_or_skip()
    port = free_port()
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "demo/app.py", "--port", str(port), "--vlm", str(vlm_folder), "--device", "cpu",
               "--max-new-tokens", str(MAX_NEW_TOKENS)]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)  # fmt: skip
    try:
        wait_for_page(process, port)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
        if "Traceback" in output:  # the server's log, for whoever reads a failing run
            print(output[-5000:])


@pytest.fixture(scope="module")
def browser(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    yield page
    context.close()


@pytest.fixture(scope="module")
def pipe():
    return ViQPipeline.from_pretrained(REPO / BUNDLED_MODEL, device="cpu")


def library_numbers(pipe, sample: Path) -> dict:
    return reconstruction_numbers(next(pipe.reconstruct([sample], progress=False)), pipe.codebook_size)


def pick(page, sample: str) -> None:
    page.get_by_label(sample).check()
    page.locator("#status", has_text=f"Loaded {sample}").wait_for()


def text_of(page, selector: str, waiting_for: str) -> str:
    page.locator(selector, has_text=waiting_for).wait_for()
    return page.locator(selector).inner_text()


def number(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return match.group(1)


def shown_image(page, selector: str) -> np.ndarray:
    """The pixels of an image the page shows, fetched from the server as the browser did."""
    source = page.locator(f"{selector} img").first.get_attribute("src")
    response = page.request.get(urljoin(page.url, source))
    assert response.ok, source
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def check_encode_numbers(text: str, numbers: dict) -> None:
    assert number(text, r"patch grid\s+(\d+ x \d+) patches") == f"{numbers['grid_h']} x {numbers['grid_w']}"
    assert number(text, r"(?m)^codes\s+([\d,]+) \(") == f"{numbers['num_codes']:,}"
    assert number(text, r"bits per pixel\s+([\d.]+) bit-packed") == f"{numbers['bpp']:.4f}"
    assert number(text, r"codes, bit-packed\s+([\d,]+)") == f"{numbers['code_bytes_packed']:,}"
    assert number(text, r"codes, uint16\s+([\d,]+) \(") == f"{numbers['code_bytes_uint16']:,}"
    assert number(text, r"bytes of PNG\s+([\d,]+)") == f"{numbers['png_bytes']:,}"
    assert number(text, r"bytes of JPEG q90\s+([\d,]+)") == f"{numbers['jpeg90_bytes']:,}"
    assert number(text, r"bytes of raw RGB\s+([\d,]+)") == f"{numbers['raw_rgb_bytes']:,}"


def check_reconstruct_numbers(text: str, numbers: dict, original: np.ndarray) -> None:
    assert number(text, r"PSNR\s+([\d.]+ dB)") == f"{numbers['psnr']:.2f} dB"
    assert number(text, r"SSIM\s+([\d.]+)") == f"{numbers['ssim']:.4f}"
    jpeg = metrics.jpeg_at_budget(original, numbers["code_bytes_uint16"])
    assert number(text, r"uint16 codes\)\s+([\d,]+ \(quality \d+)") == f"{jpeg.num_bytes:,} (quality {jpeg.quality}"
    assert number(text, r"PSNR\s+[\d.]+ dB\s+([\d.]+ dB)") == f"{metrics.psnr(original, jpeg.decoded()):.2f} dB"


def test_sample_encode_reconstruct_codes_file_and_question(page, pipe, vlm_folder, tmp_path):
    description = page.locator("#model-description").inner_text()
    assert "tiny-viq" in description and "smoke checkpoint" in description and "VLM" in description
    sample = SAMPLES / "chelsea_300x451.png"
    numbers = library_numbers(pipe, sample)

    pick(page, sample.name)
    page.click("#encode-button")
    check_encode_numbers(text_of(page, "#encode-numbers", "patch grid"), numbers)
    page.locator("#codes-picture img").wait_for()
    page.screenshot(path=tmp_path / "1-encoded.png", full_page=True)

    page.click("#reconstruct-button")
    original = np.asarray(Image.open(sample).convert("RGB"))
    check_reconstruct_numbers(text_of(page, "#reconstruct-numbers", "PSNR"), numbers, original)
    page.locator("#side-by-side img").wait_for()
    page.screenshot(path=tmp_path / "2-reconstructed.png", full_page=True)

    with page.expect_download() as download:
        page.click("#download-codes")
    codes_file = tmp_path / download.value.suggested_filename
    download.value.save_as(codes_file)
    codes = ViQCodes.load(codes_file)
    expected = pipe.encode([sample], progress=False)
    assert torch.equal(codes.codes, expected.codes) and torch.equal(codes.image_grid_hw, expected.image_grid_hw)
    assert codes.images[0]["name"] == sample.name

    page.set_input_files("#codes-upload input[type=file]", str(codes_file))
    text_of(page, "#decoded-info", "Decoded 1 image")
    page.locator("#decoded img").wait_for()
    assert np.array_equal(shown_image(page, "#decoded"), pipe.decode(codes, progress=False)[0])
    page.screenshot(path=tmp_path / "3-codes-file-decoded.png", full_page=True)

    question = "What animal is in this picture?"
    page.fill("#question textarea", question)
    page.click("#ask-button")
    source = text_of(page, "#answer-source", "Answered from")
    assert f"the {codes.codes.numel():,} codes on this page" in source
    assert page.input_value("#answer textarea") == answer_from_codes(vlm_folder, codes, question)
    page.screenshot(path=tmp_path / "4-answered.png", full_page=True)


def answer_from_codes(folder: Path, codes: ViQCodes, question: str) -> str:
    """What the library's VLM answers from these codes (greedy), for comparison with the page."""
    from transformers_viq import ViQForConditionalGeneration

    vlm = ViQForConditionalGeneration.from_pretrained(folder).eval()
    processor = ViQProcessor.from_pretrained(folder)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(image_codes=codes.codes, image_grid_hw=codes.image_grid_hw, text=prompt, return_tensors="pt")
    with torch.inference_mode():
        generated = vlm.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()


def test_two_sessions_at_once_share_the_model(browser, app_url, pipe, tmp_path):
    samples = [SAMPLES / "astronaut_256x256.png", SAMPLES / "coffee_200x304.png"]
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in samples]
    pages = [context.new_page() for context in contexts]
    try:
        for page, sample in zip(pages, samples):
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(app_url)
            pick(page, sample.name)
        for page in pages:  # both requests in flight before either is awaited
            page.click("#reconstruct-button")
        for index, (page, sample) in enumerate(zip(pages, samples)):
            numbers = library_numbers(pipe, sample)
            text = text_of(page, "#reconstruct-numbers", "PSNR")
            check_reconstruct_numbers(text, numbers, np.asarray(Image.open(sample).convert("RGB")))
            check_encode_numbers(page.locator("#encode-numbers").inner_text(), numbers)
            page.screenshot(path=tmp_path / f"session-{index}.png", full_page=True)
    finally:
        for context in contexts:
            context.close()


def test_bad_uploads_show_a_message_and_the_app_keeps_serving(page, tmp_path):
    for kind, (path, message) in bad_uploads(tmp_path).items():
        page.set_input_files("#upload input[type=file]", str(path))
        page.locator("#status", has_text=message).wait_for()
        assert "Problem:" in page.locator("#status").inner_text()
        page.screenshot(path=tmp_path / f"bad-upload-{kind}.png", full_page=True)
    upload = SAMPLES / "coffee_small_48x40.png"
    page.set_input_files("#upload input[type=file]", str(upload))
    page.locator("#status", has_text=f"Loaded {upload.name}").wait_for()
    page.click("#encode-button")
    page.locator("#status", has_text=f"Encoded {upload.name}").wait_for()
