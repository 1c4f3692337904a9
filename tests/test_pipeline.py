"""transformers_viq.pipeline: the library behind `viq`, the eval scripts and extraction (tiny smoke checkpoint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_viq import IncompatibleCodebookError, ViQCodes
from transformers_viq.pipeline import (
    ModelLoadError,
    ViQPipeline,
    reconstruction_numbers,
    recorded_model_id,
    resolve_model,
)
from transformers_viq.testing import TINY_VAE
from transformers_viq.testing.reference_checkpoint import make_reference_state_dict


REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "tiny-viq"


@pytest.fixture(scope="module")
def pipe():
    return ViQPipeline.from_pretrained(TINY, device="cpu", max_pixels=80 * 80)


def test_encode_decode_reconstruct_files_and_arrays(pipe, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    array = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    codes = pipe.encode([path, array], batch_size=1, progress=False)
    assert isinstance(codes, ViQCodes) and codes.num_images == 2
    assert [record["name"] for record in codes.images] == ["noise.png", "image 1"]
    assert codes.model == str(TINY) and codes.viq_size == "16k"
    # packed batches give the same codes as one image per call
    assert torch.equal(pipe.encode([path, array], batch_size=2, progress=False).codes, codes.codes)
    # the sizes the user gave are recorded next to the sizes the model saw (a multiple of 16 within the budget)
    assert [codes.source_size(i) for i in range(2)] == [(40, 50), (64, 48)]
    assert [(r["height"], r["width"]) for r in codes.images] == [(64, 80), (80, 64)]
    images = pipe.decode(codes, progress=False)  # back at the size the user gave
    assert [image.shape for image in images] == [(40, 50, 3), (64, 48, 3)] and images[0].dtype == np.uint8
    model_size = pipe.decode(codes, progress=False, keep_model_size=True)
    assert [image.shape for image in model_size] == [(64, 80, 3), (80, 64, 3)]
    items = list(pipe.reconstruct([path, ("mine", array)], batch_size=2, progress=False))
    assert [item.name for item in items] == ["noise.png", "mine"]
    assert items[1].source_size == (64, 48) and items[1].fed_size == (80, 64)
    for item, image in zip(items, images):
        assert item.measured_at == "source" and item.original.shape == item.reconstruction.shape == image.shape
        assert np.abs(item.reconstruction.astype(int) - image.astype(int)).max() <= 1  # decode == reconstruct
    np.testing.assert_array_equal(items[1].original, array)
    numbers = reconstruction_numbers(items[0], pipe.codebook_size)
    assert numbers["num_codes"] == 4 * numbers["grid_h"] * numbers["grid_w"] and 0 < numbers["psnr"] < 60
    assert numbers["measured_at"] == "source" and (numbers["height"], numbers["width"]) == (40, 50)
    assert numbers["bpp"] == numbers["num_codes"] * 14 / (40 * 50)
    # codes files written before the source size was recorded decode at the size the model saw
    older = ViQCodes(codes.codes, codes.image_grid_hw, codes.fsq_levels, model=codes.model,
                     images=[{k: r[k] for k in ("name", "height", "width")} for r in codes.images])  # fmt: skip
    assert [image.shape for image in pipe.decode(older, progress=False)] == [(64, 80, 3), (80, 64, 3)]
    (fed,) = pipe.reconstruct([path], progress=False, keep_model_size=True)
    assert fed.measured_at == "model" and fed.original.shape == fed.reconstruction.shape == (64, 80, 3)
    assert reconstruction_numbers(fed, pipe.codebook_size)["measured_at"] == "model"


def test_errors_are_the_usual_ones(pipe, tmp_path):
    garbage = tmp_path / "x.png"
    garbage.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"^x.png: .*Cannot read"):
        pipe.encode([garbage], progress=False)
    foreign = ViQCodes(torch.tensor([0, 4, 8, 2]), [[1, 1]], [3, 3], model="someone/else")
    with pytest.raises(IncompatibleCodebookError, match=r"\[3, 3\].*\[8, 8, 8, 6, 5\]"):
        pipe.decode(foreign)
    with pytest.raises(FileNotFoundError, match="^no folder "):
        ViQPipeline.from_pretrained(tmp_path / "nope", device="cpu")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load model") as info:
        ViQPipeline.from_pretrained(tmp_path / "bad", device="cpu")
    assert info.value.__cause__ is not None
    with pytest.raises(ValueError, match="dtype 'float16'"):
        ViQPipeline.from_pretrained(TINY, dtype="float16")


def test_resolving_models_and_recording_them(tmp_path, monkeypatch):
    assert resolve_model() == ("XuminYu/ViQ_weights", "16k")
    assert resolve_model(str(TINY)) == (str(TINY), None)  # HF format
    state_dict = make_reference_state_dict([8, 8, 8, 5, 5, 5], seed=1, num_layers=2, hidden_size=32, mlp_ratio=2,
                                           fsq_width=16, pos_grid=8, vae_config=TINY_VAE)  # fmt: skip
    path = tmp_path / "orig" / "ViQ" / "converted_64k" / "model_viq_fsq_64k.pth"
    path.parent.mkdir(parents=True)
    torch.save(state_dict, path)
    assert resolve_model(str(tmp_path / "orig")) == (str(tmp_path / "orig"), "64k")  # its only size
    with pytest.raises(ValueError, match="Unknown ViQ size '3k'"):
        resolve_model(str(TINY), "3k")
    monkeypatch.chdir(REPO)
    assert recorded_model_id("examples/tiny-viq") == str(TINY)
    assert recorded_model_id("someone/viq") == "someone/viq"


def test_codes_record_each_source_size_upright_for_files_pil_images_and_arrays(pipe, tmp_path):
    """An EXIF-rotated JPEG is recorded at its upright size, as the processor decodes it, whatever form it comes in."""
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide and 24 high; upright it is 24 wide and 40 high
    Image.new("RGB", (40, 24), (10, 200, 30)).save(path, exif=exif)
    codes = pipe.encode([str(path), Image.open(path), np.zeros((40, 24, 3), np.uint8)], progress=False)
    assert [(image["source_height"], image["source_width"]) for image in codes.images] == [(40, 24)] * 3
