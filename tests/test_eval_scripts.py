"""transformers_viq.metrics, eval/compression.py and eval/reconstruction.py (CPU, tiny smoke model, no network)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_viq import metrics


REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "examples" / "tiny-viq")
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))


@pytest.fixture
def load_script(monkeypatch):
    """Import an eval script as a module, as `python eval/<name>.py` would run it (its folder on the path)."""
    monkeypatch.syspath_prepend(str(REPO / "eval"))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"eval_{name}", REPO / "eval" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def two_images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for sample in SAMPLES[:2]:
        shutil.copy(sample, folder / sample.name)
    return folder


def photo() -> np.ndarray:
    with Image.open(SAMPLES[0]) as image:
        return np.asarray(image.convert("RGB").resize((96, 80)))


# ---- metrics ---------------------------------------------------------------------------------------------------
def test_psnr_and_ssim_known_values():
    image = photo()
    assert metrics.psnr(image, image) == math.inf
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    flat = np.full((32, 40, 3), 100, np.uint8)
    assert metrics.psnr(flat, flat + 10) == pytest.approx(20 * math.log10(255 / 10))  # MSE = 100
    rng = np.random.default_rng(0)
    noisy = np.clip(image.astype(int) + rng.choice([-5, 5], size=image.shape), 0, 255).astype(np.uint8)
    mse = np.mean((noisy.astype(float) - image) ** 2)
    assert metrics.psnr(image, noisy) == pytest.approx(10 * math.log10(255**2 / mse))
    assert 0.5 < metrics.ssim(image, noisy) < 1.0
    assert metrics.ssim(image, 255 - image) < 0.2
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(image, image[:10])
    with pytest.raises(ValueError, match="uint8"):
        metrics.ssim(image.astype(np.float32), image)


@pytest.mark.parametrize("codebook_size, bits", [(15360, 14), (64000, 16), (2304, 12)])
def test_bit_packing_round_trip(codebook_size, bits):
    assert metrics.bits_per_code(codebook_size) == bits
    rng = np.random.default_rng(codebook_size)
    codes = np.concatenate([[0, codebook_size - 1], rng.integers(0, codebook_size, 997)])
    packed = metrics.pack_codes(codes, bits)
    assert len(packed) == math.ceil(codes.size * bits / 8)
    np.testing.assert_array_equal(metrics.unpack_codes(packed, bits, codes.size), codes)
    from_tensor = metrics.pack_codes(torch.tensor(codes), bits)
    np.testing.assert_array_equal(metrics.unpack_codes(from_tensor, bits, codes.size), codes)
    with pytest.raises(ValueError, match="does not fit"):
        metrics.pack_codes([2**bits], bits)


def test_code_storage_is_measured_and_round_trips():
    codes = np.random.default_rng(0).integers(0, 15360, 1024)
    sizes = metrics.code_storage(codes, 15360)
    assert sizes["uint16"] == 2048 and sizes["packed"] == 1792
    assert sizes["best"] == min(value for key, value in sizes.items() if key != "best")
    repetitive = np.tile([5, 6, 7, 8], 256)
    assert metrics.code_storage(repetitive, 15360)["zlib"] < 100  # compressors find the structure
    raw = metrics.codes_to_uint16_bytes(codes)
    for method in metrics.COMPRESSORS:
        assert len(metrics.compress(raw, method)) == sizes[method]


def test_jpeg_quality_search_respects_the_budget():
    image = photo()
    low, high = metrics.jpeg_bytes(image, 1), metrics.jpeg_bytes(image, 100)
    for budget in (low, (low + high) // 3, (low + high) // 2, high, high * 2):
        match = metrics.jpeg_at_budget(image, budget)
        assert match.fits and match.num_bytes <= budget and match.num_bytes == len(match.data)
        assert match.num_bytes == metrics.jpeg_bytes(image, match.quality)
        if match.quality < 100:  # the next quality up does not fit: the highest that fits
            assert metrics.jpeg_bytes(image, match.quality + 1) > budget
        assert match.decoded().shape == image.shape
    too_small = metrics.jpeg_at_budget(image, low - 1)
    assert not too_small.fits and too_small.quality == 1 and too_small.num_bytes == low > too_small.budget
    assert metrics.png_bytes(image) > metrics.jpeg_bytes(image, 90) and metrics.raw_rgb_bytes(image) == 96 * 80 * 3


def test_frechet_distance_and_running_statistics():
    assert metrics.frechet_distance([0.0], [[1.0]], [1.0], [[4.0]]) == pytest.approx(2.0)  # 1 + 1 + 4 - 2*2
    features = np.random.default_rng(0).normal(size=(64, 5))
    stats = metrics.FeatureStatistics()
    stats.update(features[:10])
    stats.update(features[10:])
    mean, cov = metrics.feature_statistics(features)
    np.testing.assert_allclose(stats.mean, mean, atol=1e-12)
    np.testing.assert_allclose(stats.covariance, cov, atol=1e-12)
    assert metrics.frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-6)
    assert metrics.frechet_distance(mean, cov, mean + 1, cov) == pytest.approx(5.0, abs=1e-6)


def test_bits_per_pixel():
    assert metrics.bits_per_pixel(2048, 256 * 256) == 0.25  # uint16 codes of a 256x256 image
    assert metrics.code_bits_per_pixel(1024, 15360, 256 * 256) == pytest.approx(1024 * 14 / 65536)


# ---- eval/compression.py ---------------------------------------------------------------------------------------
def test_compression_report_on_two_small_images(two_images, tmp_path, capsys, load_script):
    compression = load_script("compression")
    out = tmp_path / "report"
    argv = ["--images", str(two_images), "--model", TINY, "--device", "cpu", "--max-pixels", str(96 * 96),
            "--output-dir", str(out)]  # fmt: skip
    assert compression.main(argv) == 0
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert report in printed
    assert "| image | size (HxW) | ViQ bytes (uint16) |" in report and "## Storing the codes" in report
    assert "tiny smoke checkpoint" in report
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == [path.name for path in SAMPLES[:2]]
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["codebook_size"] == 15360 and results["meta"]["smoke"] is True
    for row in results["images"]:
        assert row["image"] in report
        pixels = row["width"] * row["height"]
        assert row["width"] % 16 == 0 and row["height"] % 16 == 0 and pixels <= 96 * 96
        assert row["viq_bytes"] == row["codes_uint16_bytes"] == 2 * row["num_codes"]
        assert row["codes_packed_bytes"] == math.ceil(row["num_codes"] * 14 / 8)
        assert row["viq_bpp"] == pytest.approx(8 * row["viq_bytes"] / pixels)
        if row["jpeg_fits_budget"]:
            assert row["jpeg_bytes"] <= row["viq_bytes"] and 1 <= row["jpeg_quality"] <= 100
        else:
            assert row["jpeg_quality"] == 1 and row["jpeg_bytes"] > row["viq_bytes"]
        for key in ("viq", "jpeg"):
            assert 0 < row[f"{key}_psnr"] < 80 and -1 <= row[f"{key}_ssim"] <= 1
        for storage in ("zlib", "bz2", "lzma", "zlib_packed", "bz2_packed", "lzma_packed"):
            assert row[f"codes_{storage}_bytes"] > 0
    with Image.open(out / "grid.png") as grid:
        assert grid.height > 2 * 256 and grid.width > 3 * 96  # two rows of three 256-px-high cells


# ---- eval/reconstruction.py ------------------------------------------------------------------------------------
def test_reconstruction_folder_reports_psnr_ssim_and_skips_rfid(two_images, tmp_path, capsys, load_script):
    reconstruction = load_script("reconstruction")
    out = tmp_path / "recon"
    argv = ["--images", str(two_images), "--model", TINY, "--device", "cpu", "--resolution", "64", "--quiet",
            "--output-dir", str(out), "--save-examples", "1"]  # fmt: skip
    assert reconstruction.main(argv) == 0
    printed = capsys.readouterr().out
    skipped = [line for line in printed.splitlines() if line.startswith("rFID skipped")]
    assert len(skipped) == 1 and "--inception-weights" in skipped[0]
    assert "PSNR" in printed and "SSIM" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["num_images"] == 2 and result["rfid"] is None and result["rfid_skipped"]
    assert 0 < result["psnr"] < 60 and -1 <= result["ssim"] <= 1
    assert (out / "per_image.csv").exists() and (out / "example_001.png").exists()


def test_resize_center_crop_protocol():
    from transformers_viq.image_io import resize_crop

    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 140:160] = 255  # a bar in the centre stays in the centre
    crop = resize_crop(wide, 64)
    assert crop.shape == (64, 64, 3)
    assert crop[:, 32].mean() > 200 and crop[:, 0].mean() < 10
    assert resize_crop(np.zeros((64, 64, 3), np.uint8), 64).shape == (64, 64, 3)


class FakeInception(torch.nn.Module):
    """Stands in for a TorchScript Inception-v3: uint8 (N, 3, H, W) -> (N, 9) features."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.float() / 255.0
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x[:, :, ::2, ::2].mean(dim=(2, 3))], dim=1)


def test_reconstruction_dataset_with_inception_weights_reports_rfid(tmp_path, capsys, load_script):
    import datasets
    reconstruction = load_script("reconstruction")
    weights = tmp_path / "inception.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(FakeInception()).save(str(weights))
    images = [Image.open(path).convert("RGB") for path in SAMPLES[:3]]
    features = datasets.Features({"image": datasets.Image()})
    datasets.Dataset.from_dict({"image": images}, features=features).save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "recon"
    argv = ["--dataset", str(tmp_path / "ds"), "--model", TINY, "--device", "cpu", "--resolution", "48", "--quiet",
            "--inception-weights", str(weights), "--output-dir", str(out)]  # fmt: skip
    assert reconstruction.main(argv) == 0
    printed = capsys.readouterr().out
    assert "rFID skipped" not in printed and "rFID" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["num_images"] == 3 and result["rfid_feature_dim"] == 9
    assert result["rfid"] is not None and result["rfid"] > -1e-6


def test_reconstruction_says_why_unusable_weights_are_skipped(two_images, tmp_path, capsys, load_script):
    reconstruction = load_script("reconstruction")
    bad = tmp_path / "not_inception.pt"
    bad.write_bytes(b"not a torchscript file")
    argv = ["--images", str(two_images), "--model", TINY, "--device", "cpu", "--resolution", "32", "--quiet",
            "--inception-weights", str(bad), "--output-dir", str(tmp_path / "o"), "--limit", "1"]  # fmt: skip
    assert reconstruction.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"rFID skipped: cannot load {bad}" in printed
    assert json.loads((tmp_path / "o" / "results.json").read_text())["num_images"] == 1
