# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Images for the pipeline, extraction, metrics and the CLI, decoded as the image processor decodes them.

Decoding itself belongs to the image processor (`models/viq/image_processing_viq.py`: [`open_image`] and
[`decode_image`], with EXIF orientation, transparency on white and range checks); this module builds on it:

* [`image_size`]: an image's `(height, width)` as the processor will see it, from the file header only.
* [`check_image_file`]: a cheap header-only check that a file is an image, before any model loads.
* [`load_rgb`]: an image as `uint8` RGB `(height, width, 3)`, for pictures and metrics.
* [`resize_rgb`], [`resize_crop`]: resizing and cropping for the reconstruction protocol and training.
"""

from __future__ import annotations

import io
import os
import random
from typing import Any

import numpy as np
from PIL import Image

from .models.viq.image_processing_viq import EXIF_ORIENTATION_TAG, PIL_READ_ERRORS, decode_image, open_image


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
    "check_image_file",
    "image_size",
    "load_rgb",
    "resize_crop",
    "resize_rgb",
    "to_rgb_uint8",
]
