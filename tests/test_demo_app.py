"""The demo page's backend (what it computes and says), its Space export and its install files, without a browser
(tests/test_demo_browser.py drives the page itself)."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_viq import ViQCodes
from transformers_viq.demo import BUNDLED_MODEL, bundled_paths
from transformers_viq.demo.backend import MAX_SOURCE_PIXELS, DemoBackend, DemoInputError
from transformers_viq.demo.space import export_space
from transformers_viq.pipeline import reconstruction_numbers
from transformers_viq.testing import free_port


REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "assets" / "samples"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` pixels (1-bit grey) with almost no data: what a decompression
    bomb looks like to a reader before it decodes anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def bad_uploads(folder: Path) -> dict[str, tuple[Path, str]]:
    """The bad uploads of the issue, each with a piece of the message the page must show."""
    text = folder / "notes.png"
    text.write_text("this is a text file with an image's name\n")
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    bomb = folder / "bomb.png"
    bomb.write_bytes(png_header_only(40_000, 40_000))  # 1.6 gigapixels: over PIL's own guard
    big = folder / "big.png"
    big.write_bytes(png_header_only(10_000, 8_000))  # 80 megapixels: under PIL's guard, over the page's limit
    return {
        "text": (text, "notes.png is not an image this page can read"),
        "empty": (empty, "empty.png is empty (0 bytes)"),
        "bomb": (bomb, "decompression bomb"),
        "big": (big, "10000x8000 pixels (80.0 megapixels): over this page's limit"),
    }


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    backend = DemoBackend.from_pretrained(REPO / BUNDLED_MODEL, device="cpu",
                                          work_dir=tmp_path_factory.mktemp("demo-work"))  # fmt: skip
    yield backend
    backend.close()


def test_encode_and_reconstruct_give_the_library_numbers(backend):
    sample = SAMPLES / "chelsea_300x451.png"
    name, original = backend.read_image(sample)
    encoded = backend.encode(name, original)
    result = backend.reconstruct(encoded)
    item = next(backend.pipe.reconstruct([sample], progress=False))
    library = reconstruction_numbers(item, backend.pipe.codebook_size)
    assert result.numbers == library
    for key in ("grid_h", "grid_w", "num_codes", "bpp", "bpp_uint16", "code_bytes_packed", "code_bytes_uint16",
                "png_bytes", "jpeg90_bytes", "raw_rgb_bytes", "fed_height", "fed_width"):  # fmt: skip
        assert encoded.numbers[key] == library[key], key
    assert encoded.numbers["codes_file_bytes"] == os.path.getsize(encoded.codes_file)
    assert encoded.picture.shape == (library["fed_height"], library["fed_width"], 3)
    # JPEG gets the bytes of the uint16 codes, and no more
    assert result.jpeg_numbers["fits"] and result.jpeg_numbers["bytes"] <= library["code_bytes_uint16"]
    assert result.jpeg.shape == original.shape
    # the codes file round-trips exactly and decodes to the same reconstruction
    decoded = backend.load_codes(encoded.codes_file)
    assert decoded.names == [name]
    assert np.array_equal(decoded.codes.codes, encoded.codes.codes)
    assert np.array_equal(decoded.images[0], result.reconstruction)


def test_the_page_says_which_model_it_runs(backend):
    text = backend.describe()
    assert "tiny-viq" in text and "15,360 codes" in text and "8x8x8x6x5" in text and "2 layers of width 32" in text


@pytest.mark.parametrize("kind", ["text", "empty", "bomb", "big"])
def test_bad_uploads_are_refused_with_a_message(backend, tmp_path, kind):
    path, message = bad_uploads(tmp_path)[kind]
    with pytest.raises(DemoInputError) as caught:
        backend.read_image(path)
    assert message in str(caught.value)
    assert str(tmp_path) not in str(caught.value)  # names the upload, not the server's temporary path


def test_the_page_limit_is_below_pils_guard():
    from PIL import Image

    assert MAX_SOURCE_PIXELS < Image.MAX_IMAGE_PIXELS


def test_bad_codes_files_are_refused_with_a_message(backend, tmp_path):
    not_codes = tmp_path / "photo.safetensors"
    not_codes.write_bytes((SAMPLES / "coffee_small_48x40.png").read_bytes())
    with pytest.raises(DemoInputError, match="photo.safetensors is not a ViQ codes file"):
        backend.load_codes(not_codes)
    foreign = tmp_path / "foreign.safetensors"
    ViQCodes(torch.zeros(4, dtype=torch.int64), torch.tensor([[1, 1]]), [8, 5, 5, 5]).save(foreign)
    with pytest.raises(DemoInputError, match=r"foreign.safetensors: .*\[8, 5, 5, 5\] \(1000 codes"):
        backend.load_codes(foreign)


def test_questions_need_a_vlm(backend):
    with pytest.raises(DemoInputError, match="--vlm"):
        backend.answer("What is this?", image=np.zeros((16, 16, 3), dtype=np.uint8))


def test_demo_requirements_pin_the_tested_versions():
    """The Space installs what the project tests: every pin of demo/requirements.txt is in requirements-dev.txt."""

    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", line)
            if match:
                found[match.group(1).lower()] = match.group(2)
        return found

    demo, dev = pins(REPO / "demo" / "requirements.txt"), pins(REPO / "requirements-dev.txt")
    dev["torch"] = "2.13.0"  # installed first, separately (Makefile)
    assert {"gradio", "torch", "transformers", "scikit-image"} <= set(demo)
    assert {name: version for name, version in demo.items() if dev.get(name) != version} == {}
    front_matter = (REPO / "demo" / "README.md").read_text().split("---")[1]
    assert f"sdk_version: {demo['gradio']}" in front_matter and "app_file: app.py" in front_matter


def test_export_space_runs_from_its_own_folder(tmp_path):
    """The exported folder holds everything: started alone (its own copy of the package, its copy of the model),
    it serves the page."""
    space = export_space(tmp_path / "space")
    assert {path.name for path in space.iterdir()} >= {"app.py", "requirements.txt", "README.md", "space.json",
                                                        "transformers_viq", "model", "samples"}  # fmt: skip
    assert (space / "app.py").read_bytes() == (REPO / "demo" / "app.py").read_bytes()
    config = json.loads((space / "space.json").read_text())
    assert config["model"] == "model" and config["online"] is False
    assert bundled_paths(space)["model"] == str(space / "model")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_space(space)

    port = free_port()
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, cwd=space, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)  # fmt: skip
    try:
        config_text = wait_for_page(process, port)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "smoke checkpoint" in config_text, output[-2000:]
    assert "**Tokenizer**: `model` (HF format)" in config_text  # the Space's copy of the model, in its folder


def wait_for_page(process, port: int, timeout: float = 120) -> str:
    """Poll the page's Gradio config until it answers; the text of the config (its components' values)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}: {process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not answer on port {port} within {timeout} s")


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16", "P", "CMYK"])
def test_uploads_of_any_mode_encode(backend, tmp_path, mode):
    """Any mode Pillow reads becomes the RGB the processor feeds the model (transparency on white, 16 bits scaled)."""
    picture = Image.open(SAMPLES / "coffee_small_48x40.png").convert("RGB")
    converted = picture.convert("I;16") if mode == "I;16" else picture.convert(mode)
    path = tmp_path / ("upload.tif" if mode == "CMYK" else "upload.png")
    converted.save(path)
    name, original = backend.read_image(path)
    assert original.shape == (48, 40, 3) and original.dtype == np.uint8
    encoded = backend.encode(name, original)
    rgb = backend.encode("rgb.png", np.asarray(picture))
    assert (encoded.numbers["grid_h"], encoded.numbers["grid_w"]) == (rgb.numbers["grid_h"], rgb.numbers["grid_w"])
    assert encoded.codes.codes.numel() == rgb.codes.codes.numel() > 0


def test_the_processors_limits_come_back_as_a_message(backend):
    with pytest.raises(DemoInputError, match=r"strip.png: The aspect ratio of the image \(4x2000, ratio 500.0\)"):
        backend.encode("strip.png", np.zeros((4, 2000, 3), dtype=np.uint8))
