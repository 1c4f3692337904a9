"""The `viq` command line end to end on the committed tiny smoke checkpoint (CPU, no network)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_viq import ViQCodes
from transformers_viq.cli import EXIT_INCOMPATIBLE, EXIT_OK, EXIT_USAGE, main


REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "examples" / "tiny-viq")
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))
# Small images keep the VAE decoder fast on CPU.
MODEL_ARGS = ["--model", TINY, "--device", "cpu", "--quiet"]
SMALL = ["--max-pixels", str(80 * 80)]


@pytest.fixture
def images(tmp_path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    for sample in SAMPLES[::2]:  # three of the bundled photographs (the VAE decoder is the slow part on CPU)
        shutil.copy(sample, folder / sample.name)
    return sorted(folder.glob("*.png"))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("viq: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_encode_decode_reconstruct_end_to_end(tmp_path, images):
    assert len(images) >= 3
    codes_file = tmp_path / "out" / "codes.safetensors"
    assert main(["encode", *map(str, images), "-o", str(codes_file), *MODEL_ARGS, *SMALL, "--batch-size", "2"]) == 0

    codes = ViQCodes.load(codes_file)
    assert codes.num_images == len(images)
    assert codes.model == TINY and codes.fsq_levels == [8, 8, 8, 6, 5]
    assert [record["name"] for record in codes.images] == [path.name for path in images]
    for record, (grid_h, grid_w) in zip(codes.images, codes.image_grid_hw.tolist()):
        # native mode: the fed size is the resized size, a multiple of 16 within the pixel budget
        assert (record["height"], record["width"]) == (16 * grid_h, 16 * grid_w)
        assert record["height"] * record["width"] <= 80 * 80

    for record, path in zip(codes.images, images):  # each image's own size is recorded too
        with Image.open(path) as png:
            assert (record["source_width"], record["source_height"]) == png.size

    # decode takes the model recorded in the file, and gives each image back at the size the user gave
    decoded = tmp_path / "decoded"
    assert main(["decode", str(codes_file), "-o", str(decoded), "--device", "cpu", "--quiet"]) == 0
    for record in codes.images:
        with Image.open(decoded / record["name"]) as png:
            assert png.size == (record["source_width"], record["source_height"]) and png.mode == "RGB"
    # or at the size the model saw
    grid_size = tmp_path / "grid-size"
    assert main(["decode", str(codes_file), "-o", str(grid_size), "--device", "cpu", "-q", "--keep-model-size"]) == 0
    for record in codes.images:
        with Image.open(grid_size / record["name"]) as png:
            assert png.size == (record["width"], record["height"])

    recon = tmp_path / "recon"
    assert main(["reconstruct", *map(str, images), "-o", str(recon), *MODEL_ARGS, *SMALL]) == 0
    report = json.loads((recon / "metrics.json").read_text())
    assert report["model"] == TINY and len(report["images"]) == len(images)
    assert report["measured_at"] == "source"
    for row, record in zip(report["images"], codes.images):
        assert row["measured_at"] == "source"
        assert (row["height"], row["width"]) == (row["source_height"], row["source_width"])
        assert (row["fed_height"], row["fed_width"]) == (record["height"], record["width"])
        stem = Path(row["name"]).stem
        with Image.open(recon / f"{stem}.png") as png:
            reconstruction = np.asarray(png)
        with Image.open(recon / f"{stem}_side_by_side.png") as png:
            assert png.width > 2 * row["width"] and png.height >= row["height"]
        assert reconstruction.shape == (row["height"], row["width"], 3)
        # the same codes decoded by `viq decode` give the same picture (batching does not change it)
        with Image.open(decoded / record["name"]) as png:
            assert np.abs(np.asarray(png).astype(int) - reconstruction.astype(int)).max() <= 1
        pixels = row["height"] * row["width"]
        assert row["bits_per_code"] == 14
        assert math.isclose(row["bpp"], row["num_codes"] * 14 / pixels)
        assert row["num_codes"] == 4 * row["grid_h"] * row["grid_w"]
        assert row["code_bytes_uint16"] == 2 * row["num_codes"]
        assert row["raw_rgb_bytes"] == 3 * pixels > row["png_bytes"] > row["jpeg90_bytes"] > row["code_bytes_packed"]
        assert 0 < row["psnr"] < 60 and -1 <= row["ssim"] <= 1


def test_decode_crops_the_padding_of_reference_mode(tmp_path):
    image = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(image)
    codes_file = tmp_path / "odd.safetensors"
    assert main(["encode", str(image), "-o", str(codes_file), "--no-resize", *MODEL_ARGS]) == 0
    codes = ViQCodes.load(codes_file)
    assert codes.image_grid_hw.tolist() == [[3, 4]]  # padded to 48x64
    assert codes.images == [{"name": "odd.png", "height": 40, "width": 50, "source_height": 40, "source_width": 50}]
    assert main(["decode", str(codes_file), "-o", str(tmp_path / "dec"), *MODEL_ARGS]) == 0
    with Image.open(tmp_path / "dec" / "odd.png") as png:
        assert png.size == (50, 40)


def test_missing_file_is_one_line_and_exit_code_2_in_a_real_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "transformers_viq.cli", "encode", str(tmp_path / "missing.png"), "-o",
         str(tmp_path / "c.safetensors"), "--model", TINY],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr.strip() == f"viq: error: no such file: {tmp_path / 'missing.png'}", result.stderr
    assert not (tmp_path / "c.safetensors").exists()


def test_unreadable_image_is_one_line_and_exit_code_2(tmp_path, capsys):
    garbage = tmp_path / "x.png"
    garbage.write_bytes(b"\x89PNG not really" + bytes(range(256)))
    assert main(["encode", str(garbage), "-o", str(tmp_path / "c.safetensors"), *MODEL_ARGS]) == EXIT_USAGE
    line = _error_line(capsys)
    assert "cannot read image" in line and "x.png" in line
    assert main(["reconstruct", str(garbage), "-o", str(tmp_path / "r"), *MODEL_ARGS]) == EXIT_USAGE
    assert "x.png" in _error_line(capsys)


def test_foreign_codebook_is_refused(tmp_path, capsys):
    foreign = tmp_path / "foreign.safetensors"
    ViQCodes(torch.tensor([0, 4, 8, 2]), torch.tensor([[1, 1]]), [3, 3], model="someone/else",
             images=[{"name": "a.png", "height": 16, "width": 16}]).save(foreign)  # fmt: skip
    assert main(["decode", str(foreign), "-o", str(tmp_path / "dec"), *MODEL_ARGS]) == EXIT_INCOMPATIBLE
    line = _error_line(capsys)
    assert "[3, 3]" in line and "[8, 8, 8, 6, 5]" in line
    assert not (tmp_path / "dec").exists()


def test_bad_inputs_and_options_give_exit_code_2(tmp_path, capsys):
    png = SAMPLES[0]
    assert main(["decode", str(png), "-o", str(tmp_path / "d"), *MODEL_ARGS]) == EXIT_USAGE  # not a codes file
    assert "not a ViQ codes file" in _error_line(capsys)
    assert main(["encode", str(png), "-o", str(tmp_path / "c"), "--batch-size", "0"]) == EXIT_USAGE
    assert "--batch-size" in _error_line(capsys)
    assert main(["encode", str(png), "-o", str(tmp_path / "c"), "--bogus"]) == EXIT_USAGE
    assert "--bogus" in _error_line(capsys)
    assert main([]) == EXIT_USAGE
    _error_line(capsys)
    assert main(["encode", str(png), "-o", str(tmp_path / "c"), "--model", str(tmp_path / "nope")]) == EXIT_USAGE
    assert f"no folder {tmp_path / 'nope'}" in _error_line(capsys)
    assert main(["convert", "--size", "16k", "--source", TINY, "-o", str(tmp_path / "conv"), "-q"]) == EXIT_USAGE
    assert "not the authors' layout" in _error_line(capsys)
    # reference mode refuses an image over the pixel budget, naming it
    assert main(["encode", str(png), "-o", str(tmp_path / "c"), "--no-resize", "--max-pixels", "100",
                 *MODEL_ARGS]) == EXIT_USAGE  # fmt: skip
    assert png.name in _error_line(capsys)


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path, capsys):
    assert main(["encode", str(tmp_path / "missing.png"), "-o", str(tmp_path / "c"), "--debug"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" in err and "CLIError" in err
    assert err.strip().splitlines()[-1] == f"viq: error: no such file: {tmp_path / 'missing.png'}"


def test_help_documents_the_exit_codes(capsys):
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    for command in ("encode", "decode", "reconstruct", "convert"):
        assert command in out
    assert "exit codes" in out and "different codebook" in out
    assert main(["reconstruct", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "--max-pixels" in out and "--batch-size" in out and "--dtype" in out and "XuminYu/ViQ_weights" in out


def test_console_script_is_declared():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["viq"] == "transformers_viq.cli:main"


def test_a_relative_model_folder_is_recorded_so_decode_works_from_elsewhere(tmp_path, monkeypatch):
    image = tmp_path / "small.png"
    Image.fromarray(np.full((32, 48, 3), 120, np.uint8)).save(image)
    monkeypatch.chdir(REPO)
    codes_file = tmp_path / "c.safetensors"
    assert main(["encode", str(image), "-o", str(codes_file), "--model", "examples/tiny-viq", "--device", "cpu",
                 "-q"]) == 0  # fmt: skip
    assert ViQCodes.load(codes_file).model == TINY
    monkeypatch.chdir(tmp_path)
    assert main(["decode", str(codes_file), "-o", "dec", "--device", "cpu", "-q"]) == 0
    assert (tmp_path / "dec" / "small.png").is_file()


def test_convert_a_tiny_checkpoint_in_the_authors_layout(tmp_path, capsys):
    from transformers_viq.testing import TINY_VAE, tiny_config
    from transformers_viq.testing.reference_checkpoint import make_reference_state_dict

    state_dict = make_reference_state_dict([8, 8, 8, 6, 5], seed=1, num_layers=2, hidden_size=32, mlp_ratio=2,
                                           fsq_width=16, pos_grid=8, vae_config=TINY_VAE)  # fmt: skip
    checkpoint = tmp_path / "orig" / "ViQ" / "converted_16k" / "model_viq_fsq_16k.pth"
    checkpoint.parent.mkdir(parents=True)
    torch.save(state_dict, checkpoint)
    config_file = tmp_path / "tiny_config.json"
    tiny_config().to_json_file(config_file)
    out = tmp_path / "hf"
    argv = ["convert", "--size", "16k", "--source", str(tmp_path / "orig"), "--config", str(config_file), "-o",
            str(out), "--check-image", str(SAMPLES[0])]  # fmt: skip
    assert main(argv) == EXIT_OK
    assert "codes identical" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (out / name).is_file()
    # the converted folder is a model the other commands take
    assert main(["encode", str(SAMPLES[0]), "-o", str(tmp_path / "c.safetensors"), "--model", str(out), "--device",
                 "cpu", "-q", *SMALL]) == EXIT_OK  # fmt: skip
