# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Reading and decoding images, written once for the image processor, the pipeline, extraction and the CLI.

* [`open_image`]: a fully decoded PIL image from a path, an URL, bytes, a `datasets` image dict or a PIL image, with
  the EXIF orientation applied; unreadable input raises a `ValueError` saying what is wrong (and naming the file).
* [`decode_image`]: any supported image (path, PIL, NumPy array, torch tensor) to a channels-first RGB array:
  `uint8` for 8-bit sources, `float32` in [0, 1] for 16-bit and float sources (never reduced to 8 bits).
  Transparency is composited on white; out-of-range values raise, nothing is clipped.
* [`load_rgb`]: an image as `uint8` RGB `(height, width, 3)`, for pictures and metrics.
* [`check_image_file`]: a cheap header-only check that a file is an image, before any model loads.

Imports only NumPy and Pillow (transformers only for URLs and the channel-layout enum).
"""

from __future__ import annotations

import io
import os
import random
import struct
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps


EXIF_ORIENTATION_TAG = 0x0112
MAX_16BIT_VALUE = 65535
# PIL modes holding one integer channel wider than 8 bits; their values are read as 16-bit intensities.
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Exceptions PIL raises for unreadable, corrupt or truncated files (OSError covers UnidentifiedImageError).
PIL_READ_ERRORS = (OSError, SyntaxError, EOFError, ValueError, struct.error, Image.DecompressionBombError)


def check_not_empty(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"Empty image: height {height} and width {width} (both must be at least 1 pixel).")


def check_float_range(array: np.ndarray, low: float, high: float, what: str) -> None:
    if array.size == 0:
        return
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite values; expected finite values in [{low}, {high}].")
    found_min, found_max = float(array.min()), float(array.max())
    if found_min < low or found_max > high:
        raise ValueError(
            f"{what} values must lie in [{low}, {high}], found values in [{found_min:g}, {found_max:g}]."
        )


def composite_on_white(image: Image.Image) -> Image.Image:
    """Composite an image with transparency on a white background and return it in RGB mode."""
    if image.mode == "La":  # premultiplied; PIL converts it to RGBA only through LA
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")



def _exif_upright(image: Image.Image) -> Image.Image:
    if image.getexif().get(EXIF_ORIENTATION_TAG, 1) != 1:
        return ImageOps.exif_transpose(image)
    return image


def _read(handle_or_path, name: str | None) -> Image.Image:
    where = f" {name}" if name else ""
    # Some libraries (lmms-eval among them) set PIL's process-wide LOAD_TRUNCATED_IMAGES, which fills a truncated
    # file with grey instead of failing; a truncated image must fail here, so the flag is off while we decode.
    tolerant, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(handle_or_path) as image:
            image.load()  # decode now, so that truncation is detected here
            upright = _exif_upright(image)
            return upright if upright is not image else image.copy()
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"Image file{where} is too large to decode safely (PIL decompression bomb guard): {error}"
        ) from error
    except PIL_READ_ERRORS as error:
        raise ValueError(f"Cannot read the image file{where} (corrupt, truncated or not an image): {error}") from error
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant


def open_image(source: Any) -> Image.Image:
    """
    A fully decoded PIL image, upright (EXIF orientation applied).

    Args:
        source: a path (`str` or `os.PathLike`), an `http(s)://` URL, encoded bytes, a `datasets` image dict
            (`{"bytes": ..., "path": ...}`) or a PIL image.

    Raises:
        `ValueError` for a missing file, an unreadable or truncated one, or an unsupported source type.
    """
    if isinstance(source, dict):
        if source.get("bytes") is not None:
            return _read(io.BytesIO(bytes(source["bytes"])), source.get("path"))
        if source.get("path"):
            source = source["path"]
        else:
            raise ValueError("The image has neither bytes nor a path.")
    if isinstance(source, Image.Image):
        source.load()
        return _exif_upright(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read(io.BytesIO(bytes(source)), None)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.startswith(("http://", "https://")):
            from transformers.image_utils import load_image

            return _exif_upright(load_image(path))
        if not os.path.isfile(path):
            raise ValueError(f"No such image file: {path}")
        return _read(path, path)
    raise ValueError(f"Unsupported image source of type {type(source).__name__}.")


def image_size(source: Any) -> tuple[int, int]:
    """`(height, width)` of an image as the processor will see it (EXIF orientation applied), from its header only."""
    if isinstance(source, Image.Image):  # a PIL image opened from a file keeps its EXIF orientation unapplied
        width, height = source.size
        turned = source.getexif().get(EXIF_ORIENTATION_TAG, 1) in (5, 6, 7, 8)
        return (width, height) if turned else (height, width)
    if isinstance(source, dict):
        source = source.get("bytes") if source.get("bytes") is not None else source.get("path")
        if source is None:
            raise ValueError("The image has neither bytes nor a path.")
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
        if str(source).startswith(("http://", "https://")):
            width, height = open_image(source).size  # upright already
            return height, width
        raise ValueError(f"No such image file: {source}")
    try:
        with Image.open(source) as opened:
            return image_size(opened)
    except PIL_READ_ERRORS as error:
        raise ValueError(f"Cannot read the image {source} (corrupt or not an image): {error}") from None


def check_image_file(path: str | os.PathLike) -> None:
    """Raise a `ValueError` unless `path` is an existing file that Pillow identifies as an image (header only)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"No such image file: {path}")
    try:
        with Image.open(path):  # opening parses the header: enough to reject what is not an image
            pass
    except PIL_READ_ERRORS as error:
        raise ValueError(f"Cannot read the image file {path} (not an image): {error}") from None


def decode_pil(image: Image.Image, do_convert_rgb: bool = True) -> np.ndarray:
    """A PIL image as `(3, H, W)`: `uint8`, or `float32` in [0, 1] for 16-bit and float modes."""
    if image.getexif().get(EXIF_ORIENTATION_TAG, 1) != 1:
        image = ImageOps.exif_transpose(image)
    check_not_empty(image.height, image.width)
    mode = image.mode

    if mode in HIGH_BIT_DEPTH_MODES or mode == "F":
        if not do_convert_rgb:
            raise ValueError(f"Single-channel image (mode {mode}) needs do_convert_rgb=True.")
        values = np.asarray(image)
        if mode == "F":
            check_float_range(values, 0.0, 1.0, "Float image (mode F)")
            gray = values.astype(np.float32)
        else:
            check_float_range(values, 0, MAX_16BIT_VALUE, f"16-bit image (mode {mode})")
            gray = (values.astype(np.float64) / MAX_16BIT_VALUE).astype(np.float32)
        return np.repeat(gray[None], 3, axis=0)

    if not do_convert_rgb:
        if mode != "RGB":
            raise ValueError(f"Image has mode {mode}, not RGB; pass do_convert_rgb=True to convert it.")
    elif image.has_transparency_data:
        image = composite_on_white(image)
    elif mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))


def tensor_to_numpy(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    try:
        return tensor.numpy()
    except TypeError as error:
        raise ValueError(f"Unsupported tensor dtype {tensor.dtype}: {error}") from error


def decode_array(
    array: np.ndarray, do_convert_rgb: bool = True, input_data_format=None, default_layout: str = "last"
) -> np.ndarray:
    """An array image (`(H, W)`, `(H, W, C)` or `(C, H, W)`; uint8, uint16 or float in [0, 1]) as `(3, H, W)`."""
    array = np.asarray(array)
    dtype = array.dtype
    is_uint8 = dtype.kind == "u" and dtype.itemsize == 1
    is_uint16 = dtype.kind == "u" and dtype.itemsize == 2
    if not (is_uint8 or is_uint16 or dtype.kind == "f"):
        raise ValueError(
            f"Unsupported dtype {dtype}; expected uint8 (0-255), uint16 (0-65535) or float (values in [0, 1])."
        )

    # Layout -> (H, W, C)
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim != 3:
        raise ValueError(
            f"Expected an image with 2 dimensions (H, W) or 3 dimensions (H, W, C) / (C, H, W), got "
            f"{array.ndim} dimensions (shape {array.shape})."
        )
    elif input_data_format is not None:
        if str(getattr(input_data_format, "value", input_data_format)) == "channels_first":
            array = np.moveaxis(array, 0, -1)
    else:
        channels_first = array.shape[0] in (1, 3, 4)
        channels_last = array.shape[-1] in (1, 3, 4)
        if channels_first and (not channels_last or default_layout == "first"):
            array = np.moveaxis(array, 0, -1)
        elif not channels_last:
            raise ValueError(
                f"Cannot find a channel axis of size 1, 3 or 4 in an image of shape {array.shape}; expected 1 "
                "(grayscale), 3 (RGB) or 4 (RGBA) channels."
            )
    height, width, num_channels = array.shape
    check_not_empty(height, width)
    if num_channels not in (1, 3, 4):
        raise ValueError(
            f"Expected 1 (grayscale), 3 (RGB) or 4 (RGBA) channels, got {num_channels} channels "
            f"(shape {array.shape})."
        )
    if not do_convert_rgb and num_channels != 3:
        raise ValueError(
            f"Image has {num_channels} channels, not 3; pass do_convert_rgb=True to convert it to RGB."
        )

    if is_uint8:
        if num_channels == 4:
            rgb = np.asarray(composite_on_white(Image.fromarray(np.ascontiguousarray(array))))
        else:
            rgb = np.broadcast_to(array, (height, width, 3))
        return np.ascontiguousarray(rgb.transpose(2, 0, 1))

    if is_uint16:
        values = (array.astype(np.float64) / MAX_16BIT_VALUE).astype(np.float32)
    else:
        check_float_range(array, 0.0, 1.0, f"Float image ({dtype})")
        values = array.astype(np.float32)
    if num_channels == 4:
        alpha = values[..., 3:]
        values = values[..., :3] * alpha + (np.float32(1.0) - alpha)
    rgb = np.broadcast_to(values, (height, width, 3))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def decode_image(image: Any, do_convert_rgb: bool = True, input_data_format=None) -> np.ndarray:
    """
    Decode one image (path, URL, bytes, `datasets` dict, PIL image, NumPy array or torch tensor) to `(3, H, W)`:
    `uint8` for 8-bit sources, `float32` in [0, 1] for 16-bit and float sources.
    """
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview, dict)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        return decode_pil(image, do_convert_rgb)
    if type(image).__module__.startswith("torch"):
        return decode_array(tensor_to_numpy(image), do_convert_rgb, input_data_format, "first")
    return decode_array(image, do_convert_rgb, input_data_format, "last")


def to_rgb_uint8(decoded: np.ndarray) -> np.ndarray:
    """A decoded `(3, H, W)` image as `uint8` `(H, W, 3)` (16-bit and float sources rounded to 8 bits here only)."""
    if decoded.dtype != np.uint8:
        decoded = np.round(decoded * 255).astype(np.uint8)
    return np.ascontiguousarray(decoded.transpose(1, 2, 0))


def load_rgb(image: Any) -> np.ndarray:
    """Any supported image as `uint8` RGB `(height, width, 3)`, decoded as the processor decodes it."""
    return to_rgb_uint8(decode_image(image))


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A `uint8` RGB `(H, W, 3)` image resized to `(height, width)` (bicubic; returned as is if already that size)."""
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((int(width), int(height)), Image.Resampling.BICUBIC)
    return np.asarray(resized)


def resize_crop(image: np.ndarray, size: int, random_crop: bool = False) -> np.ndarray:
    """Shorter side to `size` (bicubic; the longer side `int(size * long / short)`), then a `size x size` crop: the
    center one (the reconstruction protocol of `eval/reconstruction.py`) or a random one (training)."""
    pil = Image.fromarray(image)
    width, height = pil.size
    if min(width, height) != size:
        if width <= height:
            new_width, new_height = size, int(size * height / width)
        else:
            new_width, new_height = int(size * width / height), size
        pil = pil.resize((new_width, new_height), Image.Resampling.BICUBIC)
        width, height = pil.size
    if random_crop:
        left, top = random.randint(0, width - size), random.randint(0, height - size)
    else:
        left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return np.ascontiguousarray(np.asarray(pil.crop((left, top, left + size, top + size))))


__all__ = [
    "image_size",
    "resize_crop",
    "check_image_file",
    "decode_array",
    "decode_image",
    "decode_pil",
    "load_rgb",
    "open_image",
    "resize_rgb",
    "to_rgb_uint8",
]
