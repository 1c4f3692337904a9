# Copyright 2026 The transformers-viq authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tests for `ViQImageProcessor`: packing, patch order, reference numerics, native sizing, decoding, errors."""

import io
import math
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_viq.models.viq.image_processing_viq import ViQImageProcessor, convert_image_to_patches, smart_resize


PATCH = 16


def reference_pixels(u8_hwc: np.ndarray, patch_size: int = PATCH) -> np.ndarray:
    """The released ViQ preprocessing (the authors' code), written out: (3, H_pad, W_pad) float32."""
    x = (u8_hwc.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    x = x.transpose(2, 0, 1)
    height, width = x.shape[1:]
    pad_h, pad_w = (patch_size - height % patch_size) % patch_size, (patch_size - width % patch_size) % patch_size
    return np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=0.0)


def unpatchify(pixel_values: np.ndarray, grid_hw, patch_size: int = PATCH) -> np.ndarray:
    """Inverse of the processor's packing for one image: (h*w, 3*p*p) -> (3, h*p, w*p)."""
    h, w = (int(v) for v in grid_hw)
    patches = np.asarray(pixel_values).reshape(h, w, 3, patch_size, patch_size)
    return patches.transpose(2, 0, 3, 1, 4).reshape(3, h * patch_size, w * patch_size)


def random_u8(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def single_image(processor, image, **kwargs) -> np.ndarray:
    out = processor(images=image, return_tensors="np", **kwargs)
    assert out["image_grid_hw"].shape == (1, 2)
    return unpatchify(out["pixel_values"], out["image_grid_hw"][0])


# ----------------------------------------------------------------------------------------------------------------
# Output structure
# ----------------------------------------------------------------------------------------------------------------


class TestOutputs:
    def test_mixed_sizes_are_packed(self):
        processor = ViQImageProcessor()
        images = [random_u8(480, 640), Image.fromarray(random_u8(100, 700, seed=1)), random_u8(33, 47, seed=2)]
        out = processor(images=images, return_tensors="pt")

        sizes = [(480, 640), (100, 700), (33, 47)]
        expected_grids = [[h // PATCH, w // PATCH] for h, w in (processor.get_resized_size(*size) for size in sizes)]
        assert expected_grids == [[30, 40], [6, 44], [4, 5]]
        assert out["image_grid_hw"].dtype == torch.int64
        assert out["image_grid_hw"].tolist() == expected_grids
        total = sum(h * w for h, w in expected_grids)
        assert out["pixel_values"].dtype == torch.float32
        assert tuple(out["pixel_values"].shape) == (total, 3 * PATCH * PATCH)
        for (h, w), (height, width) in zip(expected_grids, sizes):
            assert h * w == processor.get_number_of_image_patches(height, width)

    @pytest.mark.parametrize("return_tensors", ["np", None])
    def test_numpy_outputs(self, return_tensors):
        out = ViQImageProcessor()(images=random_u8(64, 96), return_tensors=return_tensors)
        assert isinstance(out["pixel_values"], np.ndarray) and out["pixel_values"].dtype == np.float32
        assert isinstance(out["image_grid_hw"], np.ndarray) and out["image_grid_hw"].dtype == np.int64
        assert out["pixel_values"].shape == (24, 768)
        assert out["image_grid_hw"].tolist() == [[4, 6]]

    def test_single_image_equals_list_of_one_and_batch_independence(self):
        processor = ViQImageProcessor(do_resize=False)
        a, b = random_u8(40, 24), random_u8(17, 70, seed=3)
        alone = processor(images=a, return_tensors="np")
        listed = processor(images=[a], return_tensors="np")
        nested = processor(images=[[b], [a]], return_tensors="np")
        np.testing.assert_array_equal(alone["pixel_values"], listed["pixel_values"])
        n_b = int(np.prod(nested["image_grid_hw"][0]))
        np.testing.assert_array_equal(nested["pixel_values"][n_b:], alone["pixel_values"])
        assert nested["image_grid_hw"].tolist() == [[2, 5], [3, 2]]

    def test_patch_order_row_major_and_channel_row_col(self):
        # Every value in the image is distinct, so any permutation would be caught.
        height, width = 48, 64
        image = np.arange(3 * height * width, dtype=np.float32).reshape(3, height, width) / (3 * height * width)
        out = ViQImageProcessor(do_resize=False)(images=torch.from_numpy(image), return_tensors="np")
        pixel_values = out["pixel_values"]
        normalized = (image - np.float32(0.5)) / np.float32(0.5)
        h, w = height // PATCH, width // PATCH
        assert out["image_grid_hw"].tolist() == [[h, w]]
        for r in range(h):
            for c in range(w):
                block = normalized[:, PATCH * r : PATCH * (r + 1), PATCH * c : PATCH * (c + 1)]  # (3, 16, 16) CHW
                np.testing.assert_array_equal(pixel_values[r * w + c], block.reshape(-1))

    def test_patches_match_conv2d(self):
        image = random_u8(32, 48)
        out = ViQImageProcessor(do_resize=False)(images=image, return_tensors="pt")
        conv = torch.nn.Conv2d(3, 8, PATCH, stride=PATCH, bias=False)
        chw = torch.from_numpy(reference_pixels(image))[None]
        expected = conv(chw).flatten(2).transpose(1, 2)[0]  # (h*w, 8), row-major tokens
        got = out["pixel_values"] @ conv.weight.reshape(8, -1).T
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    def test_convert_image_to_patches_helper(self):
        image = np.arange(3 * 32 * 16, dtype=np.float32).reshape(3, 32, 16)
        patches = convert_image_to_patches(image, 16)
        assert patches.shape == (2, 768)
        np.testing.assert_array_equal(patches[1], image[:, 16:, :].reshape(-1))


# ----------------------------------------------------------------------------------------------------------------
# Reference mode
# ----------------------------------------------------------------------------------------------------------------


class TestReferenceMode:
    def test_bit_exact_with_zero_padding(self):
        image = random_u8(37, 50)
        out = ViQImageProcessor(do_resize=False)(images=image, return_tensors="np")
        assert out["image_grid_hw"].tolist() == [[3, 4]]
        got = unpatchify(out["pixel_values"], (3, 4))
        expected = reference_pixels(image)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)  # bitwise
        assert np.all(got[:, 37:, :] == 0.0) and np.all(got[:, :, 50:] == 0.0)

    def test_pil_input_matches_array_input(self):
        image = random_u8(21, 30, seed=5)
        processor = ViQImageProcessor(do_resize=False)
        np.testing.assert_array_equal(
            single_image(processor, Image.fromarray(image)), single_image(processor, image)
        )

    def test_over_budget_raises_with_fix(self):
        processor = ViQImageProcessor(do_resize=False, max_pixels=32 * 32)
        with pytest.raises(ValueError) as info:
            processor(images=random_u8(40, 40))
        message = str(info.value)
        assert "40x40" in message and "1600" in message
        assert "max_pixels=1024" in message and "max_pixels=1600" in message and "do_resize=True" in message

    def test_default_budget_accepts_1024_square(self):
        assert ViQImageProcessor(do_resize=False).get_resized_size(1024, 1024) == (1024, 1024)


# ----------------------------------------------------------------------------------------------------------------
# Native mode sizing
# ----------------------------------------------------------------------------------------------------------------


class TestNativeMode:
    def test_within_budget_multiple_of_16_is_not_resampled(self):
        image = random_u8(64, 96, seed=7)
        native = single_image(ViQImageProcessor(), image)
        reference = single_image(ViQImageProcessor(do_resize=False), image)
        np.testing.assert_array_equal(native, reference)

    def test_within_budget_rounds_each_side(self):
        processor = ViQImageProcessor()
        assert processor.get_resized_size(100, 700) == (96, 704)
        assert processor.get_resized_size(1010, 1030) == (1008, 1024)
        assert processor.get_resized_size(1000, 1000) == (992, 992)  # 62.5 patches: Python round, half to even
        out = processor(images=random_u8(100, 700), return_tensors="np")
        assert out["image_grid_hw"].tolist() == [[6, 44]]

    def test_over_max_pixels_scaled_down(self):
        processor = ViQImageProcessor()
        height, width = processor.get_resized_size(2000, 3000)
        assert height * width <= processor.max_pixels
        assert height % 16 == 0 and width % 16 == 0
        assert abs((width / height) - 1.5) < 0.05
        assert height * width > 0.9 * processor.max_pixels

        small = ViQImageProcessor(max_pixels=64 * 64, min_pixels=16 * 16)
        out = small(images=random_u8(200, 300), return_tensors="np")
        h, w = out["image_grid_hw"][0].tolist()
        assert (h * 16) * (w * 16) <= 64 * 64 and abs(w / h - 1.5) < 0.35

    def test_under_min_pixels_scaled_up(self):
        processor = ViQImageProcessor()
        height, width = processor.get_resized_size(20, 30)
        assert height * width >= processor.min_pixels
        assert height % 16 == 0 and width % 16 == 0 and width > height
        out = processor(images=random_u8(20, 30), return_tensors="np")
        assert out["image_grid_hw"].tolist() == [[height // 16, width // 16]]

    def test_budget_holds_for_elongated_images(self):
        # smart_resize alone would clamp the short side to 16 and overshoot max_pixels.
        height, width = smart_resize(16, 3200, factor=16, min_pixels=16 * 16, max_pixels=64 * 64)
        assert height * width <= 64 * 64 and height == 16 and width % 16 == 0

    def test_size_divisor_32_gives_even_grids(self):
        processor = ViQImageProcessor(size_divisor=32)
        out = processor(images=[random_u8(100, 700), random_u8(37, 50), random_u8(500, 333)], return_tensors="np")
        assert np.all(out["image_grid_hw"] % 2 == 0)
        out = ViQImageProcessor(size_divisor=32, do_resize=False)(images=random_u8(37, 50), return_tensors="np")
        assert out["image_grid_hw"].tolist() == [[4, 4]]

    def test_size_divisor_must_be_multiple_of_patch_size(self):
        with pytest.raises(ValueError, match="multiple of `patch_size`"):
            ViQImageProcessor(size_divisor=24)
        with pytest.raises(ValueError, match="multiple of `patch_size`"):
            ViQImageProcessor()(images=random_u8(32, 32), size_divisor=24)

    def test_float_sources_are_resized_without_8bit_quantization(self):
        gradient = np.linspace(0.0, 1.0, 40 * 40, dtype=np.float32).reshape(40, 40)
        out = single_image(ViQImageProcessor(min_pixels=64 * 64), gradient)
        assert out.shape == (3, 64, 64)
        values = (out[0] + 1) / 2 * 255
        assert np.abs(values - np.round(values)).max() > 1e-2  # not on the 1/255 lattice


# ----------------------------------------------------------------------------------------------------------------
# Decoding of inputs
# ----------------------------------------------------------------------------------------------------------------


def normalized(value_0_1: float) -> float:
    return (value_0_1 - 0.5) / 0.5


class TestDecoding:
    def test_exif_orientation_is_applied(self, tmp_path):
        path = tmp_path / "rotated.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise on display
        Image.fromarray(random_u8(32, 64)).save(path, exif=exif)  # stored as 32 x 64 (H x W)
        processor = ViQImageProcessor(do_resize=False)
        assert processor(images=str(path))["image_grid_hw"].tolist() == [[4, 2]]
        assert processor(images=pathlib.Path(path))["image_grid_hw"].tolist() == [[4, 2]]
        with Image.open(path) as opened:
            assert processor(images=opened)["image_grid_hw"].tolist() == [[4, 2]]

    def test_rgba_composited_on_white(self):
        rgba = np.zeros((16, 16, 4), dtype=np.uint8)
        rgba[0, 0] = (10, 20, 30, 0)  # fully transparent -> white
        rgba[0, 1] = (10, 20, 30, 255)  # opaque -> unchanged
        processor = ViQImageProcessor(do_resize=False)
        for image in (Image.fromarray(rgba, mode="RGBA"), rgba):
            out = single_image(processor, image)
            np.testing.assert_array_equal(out[:, 0, 0], [1.0, 1.0, 1.0])
            np.testing.assert_array_equal(out[:, 0, 1], reference_pixels(rgba[:1, 1:2, :3])[:, 0, 0])
        float_rgba = rgba.astype(np.float32) / 255
        out = single_image(processor, float_rgba)
        np.testing.assert_allclose(out[:, 0, 0], [1.0, 1.0, 1.0])

    def test_la_composited_on_white(self):
        la = Image.new("LA", (16, 16), (0, 0))
        assert np.all(single_image(ViQImageProcessor(do_resize=False), la) == 1.0)

    def test_palette_with_transparency(self):
        palette_image = Image.new("P", (16, 16), 0)
        palette_image.putpalette([255, 0, 0] + [0, 0, 255] * 255)
        palette_image.putpixel((1, 0), 1)
        palette_image.info["transparency"] = 0
        out = single_image(ViQImageProcessor(do_resize=False), palette_image)
        np.testing.assert_array_equal(out[:, 0, 0], [1.0, 1.0, 1.0])  # transparent red -> white
        np.testing.assert_array_equal(out[:, 0, 1], [-1.0, -1.0, 1.0])  # opaque blue

    def test_grayscale_and_cmyk(self):
        processor = ViQImageProcessor(do_resize=False)
        gray = random_u8(16, 16, 1, seed=9)[..., 0]
        expected = reference_pixels(np.repeat(gray[..., None], 3, axis=-1))
        np.testing.assert_array_equal(single_image(processor, Image.fromarray(gray, mode="L")), expected)
        np.testing.assert_array_equal(single_image(processor, gray), expected)  # (H, W) array
        np.testing.assert_array_equal(single_image(processor, gray[..., None]), expected)  # (H, W, 1)
        bilevel = Image.new("1", (16, 16), 1)
        assert np.all(single_image(processor, bilevel) == 1.0)

        cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # no ink -> white
        cmyk.putpixel((1, 0), (0, 255, 255, 0))  # magenta + yellow -> red
        out = single_image(processor, cmyk)
        np.testing.assert_array_equal(out[:, 0, 0], [1.0, 1.0, 1.0])
        np.testing.assert_array_equal(out[:, 0, 1], [1.0, -1.0, -1.0])

    def test_16bit_scaled_not_clipped(self):
        values = np.zeros((16, 16), dtype=np.uint16)
        values[0, 0], values[0, 1], values[0, 2] = 65535, 32768, 1000
        processor = ViQImageProcessor(do_resize=False)
        expected = np.array([1.0, normalized(32768 / 65535), normalized(1000 / 65535)], dtype=np.float32)
        inputs = [
            Image.fromarray(values),  # I;16
            Image.frombytes("I;16B", (16, 16), values.astype(">u2").tobytes()),
            Image.fromarray(values.astype(np.int32)),  # I
            values,
            values.astype(">u2"),
        ]
        assert [image.mode for image in inputs[:3]] == ["I;16", "I;16B", "I"]
        for image in inputs:
            out = single_image(processor, image)
            np.testing.assert_allclose(out[0, 0, :3], expected, rtol=0, atol=1e-6)
            assert abs(out[0, 0, 1]) < 1e-4  # 32768 -> ~0.0 after normalization (clipping to 255 would give 1.0)
            np.testing.assert_array_equal(out[0], out[2])

    def test_16bit_png_file(self, tmp_path):
        path = tmp_path / "deep.png"
        values = np.full((16, 16), 65535, dtype=np.uint16)
        Image.fromarray(values).save(path)
        assert np.all(single_image(ViQImageProcessor(do_resize=False), path) == 1.0)

    def test_float_inputs(self):
        processor = ViQImageProcessor(do_resize=False)
        image = np.full((16, 16, 3), 0.25, dtype=np.float32)
        np.testing.assert_array_equal(single_image(processor, image), np.full((3, 16, 16), -0.5, np.float32))
        chw_tensor = torch.full((3, 16, 32), 0.75, dtype=torch.bfloat16)
        out = single_image(processor, chw_tensor)
        assert out.shape == (3, 16, 32) and np.all(out == 0.5)
        mode_f = Image.fromarray(np.full((16, 16), 1.0, dtype=np.float32))
        assert np.all(single_image(processor, mode_f) == 1.0)

    @pytest.mark.parametrize("bad_value, shown", [(1.5, "1.5"), (-0.25, "-0.25")])
    def test_float_out_of_range_rejected(self, bad_value, shown):
        image = np.full((16, 16, 3), 0.5, dtype=np.float32)
        image[3, 4, 1] = bad_value
        with pytest.raises(ValueError, match=r"\[0\.0, 1\.0\]") as info:
            ViQImageProcessor()(images=image)
        assert shown in str(info.value)
        with pytest.raises(ValueError, match="mode F"):
            ViQImageProcessor()(images=Image.fromarray(image[..., 0] * 255))

    def test_float_nan_rejected(self):
        image = np.full((16, 16, 3), 0.5, dtype=np.float32)
        image[0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            ViQImageProcessor()(images=image)

    def test_layouts(self):
        processor = ViQImageProcessor(do_resize=False)
        hwc = random_u8(16, 32, seed=11)
        expected = reference_pixels(hwc)
        chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
        np.testing.assert_array_equal(single_image(processor, chw), expected)
        np.testing.assert_array_equal(single_image(processor, torch.from_numpy(hwc)), expected)
        np.testing.assert_array_equal(single_image(processor, torch.from_numpy(chw)), expected)
        # 4-D arrays are batches.
        out = processor(images=np.stack([hwc, hwc]), return_tensors="np")
        assert out["image_grid_hw"].tolist() == [[1, 2], [1, 2]]
        # Ambiguous (3, 4, 3): NumPy reads HWC, torch reads CHW, `input_data_format` forces a layout.
        ambiguous = random_u8(3, 4, seed=12)
        assert processor.get_resized_size(3, 4) == (16, 16)
        got = single_image(processor, ambiguous)
        np.testing.assert_array_equal(got, reference_pixels(ambiguous))
        got = single_image(processor, ambiguous, input_data_format="channels_first")
        np.testing.assert_array_equal(got, reference_pixels(ambiguous.transpose(1, 2, 0)))

    def test_do_convert_rgb_false_requires_rgb(self):
        processor = ViQImageProcessor(do_convert_rgb=False, do_resize=False)
        rgb = random_u8(16, 16)
        np.testing.assert_array_equal(single_image(processor, rgb), reference_pixels(rgb))
        with pytest.raises(ValueError, match="do_convert_rgb=True"):
            processor(images=Image.new("RGBA", (16, 16)))
        with pytest.raises(ValueError, match="do_convert_rgb=True"):
            processor(images=random_u8(16, 16, 4))


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


class TestErrors:
    @pytest.mark.parametrize("do_resize", [True, False])
    def test_empty_image(self, do_resize):
        with pytest.raises(ValueError, match="Empty image"):
            ViQImageProcessor(do_resize=do_resize)(images=np.zeros((0, 10, 3), dtype=np.uint8))
        with pytest.raises(ValueError, match="Empty image"):
            ViQImageProcessor(do_resize=do_resize)(images=Image.new("RGB", (12, 0)))

    def test_aspect_ratio(self):
        with pytest.raises(ValueError, match="aspect ratio.*exceeds 200"):
            ViQImageProcessor()(images=random_u8(1, 300))
        with pytest.raises(ValueError, match="aspect ratio.*exceeds 200"):
            ViQImageProcessor().get_number_of_image_patches(1000, 4)
        with pytest.raises(ValueError, match="aspect ratio.*exceeds 200"):  # reference mode too
            ViQImageProcessor(do_resize=False)(images=random_u8(1, 300))

    def test_no_images(self):
        with pytest.raises(ValueError, match="No images"):
            ViQImageProcessor()(images=[])

    @pytest.mark.parametrize("shape", [(16, 16, 2), (16, 16, 5), (7, 16, 16)])
    def test_wrong_channels(self, shape):
        with pytest.raises(ValueError, match="channel"):
            ViQImageProcessor()(images=np.zeros(shape, dtype=np.uint8))

    def test_wrong_dims_and_dtype(self):
        with pytest.raises(ValueError, match="dimensions"):
            ViQImageProcessor()(images=np.zeros((16,), dtype=np.uint8))
        with pytest.raises(ValueError, match="dtype int32"):
            ViQImageProcessor()(images=np.zeros((16, 16, 3), dtype=np.int32))
        with pytest.raises(ValueError, match="Unsupported image type"):
            ViQImageProcessor()(images=[3.5])
        # a `datasets` image dict is read from its bytes or path; one with neither is named
        with pytest.raises(ValueError, match="Image 0 .*neither bytes nor a path"):
            ViQImageProcessor()(images=[{"not": "an image"}])

    def test_corrupt_file_names_path(self, tmp_path):
        path = tmp_path / "corrupt.png"
        path.write_bytes(b"this is not an image" * 10)
        with pytest.raises(ValueError, match="Cannot read") as info:
            ViQImageProcessor()(images=str(path))
        assert str(path) in str(info.value)

    @pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("JPEG", "jpg")])
    def test_truncated_file_names_path(self, tmp_path, fmt, suffix):
        buffer = io.BytesIO()
        Image.fromarray(random_u8(64, 64)).save(buffer, fmt)
        path = tmp_path / f"truncated.{suffix}"
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        with pytest.raises(ValueError, match="truncated") as info:
            ViQImageProcessor()(images=[random_u8(16, 16), path])
        assert str(path) in str(info.value) and "Image 1" in str(info.value)

    def test_missing_file_names_path(self, tmp_path):
        path = tmp_path / "missing.png"
        with pytest.raises(ValueError, match="No such image file") as info:
            ViQImageProcessor()(images=path)
        assert str(path) in str(info.value)

    def test_decompression_bomb(self, tmp_path, monkeypatch):
        path = tmp_path / "bomb.png"
        Image.fromarray(random_u8(64, 64)).save(path)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64*64 > 2 * 100 -> DecompressionBombError
        with pytest.raises(ValueError, match="decompression bomb") as info:
            ViQImageProcessor()(images=path)
        assert str(path) in str(info.value)

    def test_errors_after_decoding_name_path(self, tmp_path):
        path = tmp_path / "big.png"
        Image.fromarray(random_u8(40, 40)).save(path)
        with pytest.raises(ValueError, match="max_pixels") as info:
            ViQImageProcessor(do_resize=False, max_pixels=32 * 32)(images=path)
        assert str(path) in str(info.value)

    def test_invalid_geometry(self):
        with pytest.raises(ValueError, match="positive integer"):
            ViQImageProcessor(patch_size=0)
        with pytest.raises(ValueError, match="smaller than one 16x16 block"):
            ViQImageProcessor(max_pixels=100)(images=random_u8(8, 8))
        # max_pixels is a hard limit and wins over min_pixels.
        height, width = ViQImageProcessor(min_pixels=128 * 128, max_pixels=64 * 64).get_resized_size(20, 30)
        assert height * width <= 64 * 64


# ----------------------------------------------------------------------------------------------------------------
# Post-processing
# ----------------------------------------------------------------------------------------------------------------


class TestPostprocess:
    def test_truncation_and_clamping(self):
        values = torch.tensor([-1.5, -1.0, 0.0, 0.998, 0.999, 1.0, 2.0], dtype=torch.float32)
        image = values.reshape(1, 1, -1).expand(3, 2, -1).contiguous()  # (3, 2, 7)
        out = ViQImageProcessor().postprocess([image], return_tensors="np")[0]
        assert out.shape == (2, 7, 3) and out.dtype == np.uint8
        half = np.float32(0.5)
        expected = (np.clip(values.numpy() * half + half, 0, 1) * np.float32(255)).astype(np.uint8)
        np.testing.assert_array_equal(out[0, :, 0], expected)
        assert out[0, :, 0].tolist() == [0, 0, 127, 254, 254, 255, 255]  # truncation, not rounding

    def test_shapes_and_types(self):
        processor = ViQImageProcessor()
        batch = torch.rand(2, 3, 32, 48) * 2 - 1
        pils = processor.postprocess(batch)
        assert len(pils) == 2 and all(isinstance(p, Image.Image) for p in pils)
        assert pils[0].size == (48, 32) and pils[0].mode == "RGB"
        mixed = processor.postprocess([np.zeros((3, 16, 16), np.float32), torch.zeros(3, 32, 16)], return_tensors="np")
        assert [a.shape for a in mixed] == [(16, 16, 3), (32, 16, 3)]
        assert np.all(mixed[0] == 127)
        np.testing.assert_array_equal(np.asarray(pils[1]), processor.postprocess(batch[1:], return_tensors="np")[0])

    def test_round_trip_through_preprocess(self):
        image = random_u8(32, 32, seed=4)
        processor = ViQImageProcessor(do_resize=False)
        chw = unpatchify(processor(images=image, return_tensors="np")["pixel_values"], (2, 2))
        restored = processor.postprocess([chw], return_tensors="np")[0]
        assert np.abs(restored.astype(int) - image.astype(int)).max() <= 1

    def test_errors(self):
        processor = ViQImageProcessor()
        nan_image = torch.zeros(3, 16, 16)
        nan_image[1, 2, 3] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            processor.postprocess([nan_image])
        with pytest.raises(ValueError, match=r"\(3, height, width\)"):
            processor.postprocess([torch.zeros(4, 16, 16)])
        with pytest.raises(ValueError, match="return_tensors"):
            processor.postprocess([torch.zeros(3, 16, 16)], return_tensors="pt")


# ----------------------------------------------------------------------------------------------------------------
# Serialization
# ----------------------------------------------------------------------------------------------------------------


class TestSerialization:
    PARAMS = {
        "do_resize": False,
        "min_pixels": 32 * 32,
        "max_pixels": 512 * 512,
        "size_divisor": 32,
        "patch_size": 16,
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 127.5,
        "do_normalize": False,
        "image_mean": [0.25, 0.5, 0.75],
        "image_std": [0.1, 0.2, 0.3],
        "do_convert_rgb": False,
    }

    def check(self, processor):
        for key, value in self.PARAMS.items():
            got = getattr(processor, key)
            assert (list(got) if isinstance(got, tuple) else got) == value, key

    def test_save_load_round_trip(self, tmp_path):
        processor = ViQImageProcessor(**self.PARAMS)
        self.check(processor)
        processor.save_pretrained(tmp_path)
        assert (tmp_path / "preprocessor_config.json").is_file()
        loaded = ViQImageProcessor.from_pretrained(tmp_path)
        self.check(loaded)
        assert loaded.to_dict() == processor.to_dict()
        assert loaded.to_dict()["image_processor_type"] == "ViQImageProcessor"

    def test_defaults_round_trip(self, tmp_path):
        processor = ViQImageProcessor()
        processor.save_pretrained(tmp_path)
        loaded = ViQImageProcessor.from_pretrained(tmp_path)
        assert loaded.to_dict() == processor.to_dict()
        assert (loaded.do_resize, loaded.min_pixels, loaded.max_pixels) == (True, 64 * 64, 1024 * 1024)
        assert (loaded.size_divisor, loaded.patch_size, int(loaded.resample)) == (16, 16, 3)
        assert math.isclose(loaded.rescale_factor, 1 / 255) and list(loaded.image_mean) == [0.5, 0.5, 0.5]

    def test_from_dict(self):
        processor = ViQImageProcessor.from_dict(self.PARAMS)
        self.check(processor)
        overridden = ViQImageProcessor.from_dict({"do_resize": False}, size_divisor=32)
        assert overridden.do_resize is False and overridden.size_divisor == 32

    def test_call_time_override(self):
        processor = ViQImageProcessor()
        out = processor(images=random_u8(37, 50), do_resize=False, return_tensors="np")
        assert out["image_grid_hw"].tolist() == [[3, 4]]
        assert processor.do_resize is True
