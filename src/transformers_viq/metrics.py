# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Quality and size measures for ViQ reconstructions and code streams.

Everything here works on `uint8` RGB images of shape `(height, width, 3)` and on 1-D integer code arrays.

* **Quality**: [`psnr`] and [`ssim`] (scikit-image's `peak_signal_noise_ratio` / `structural_similarity`,
  `data_range=255`, colour images with `channel_axis=-1`, SSIM's default 7x7 uniform window), and
  [`frechet_distance`], the FID formula on two sets of features.
* **Sizes of the original**: raw RGB bytes, [`png_bytes`] (Pillow, `optimize=True`), [`jpeg_bytes`] at a quality
  (Pillow/libjpeg, baseline, 4:2:0 chroma subsampling, optimised Huffman tables), and [`jpeg_at_budget`], the
  highest JPEG quality whose file fits a byte budget.
* **Sizes of a code stream** ([`code_storage`]): `uint16` (the paper's storage), bit-packed at `ceil(log2 K)` bits
  per code ([`pack_codes`] / [`unpack_codes`]), and general-purpose lossless compressors from the standard library
  (zlib, bz2, lzma) run on the stream, measured, never estimated.

scikit-image and SciPy are needed only for SSIM / PSNR and the Frechet distance (`pip install scikit-image`).
"""

from __future__ import annotations

import bz2
import io
import lzma
import math
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image


# ------------------------------------------------------------------------------------------------------------------
# Quality
# ------------------------------------------------------------------------------------------------------------------
EXTRA_HINT = "pip install 'transformers-viq[eval]' (or: pip install scikit-image scipy)"


def _skimage_metrics():
    try:
        from skimage import metrics as skimage_metrics
    except ImportError as error:
        raise ImportError(f"PSNR and SSIM need scikit-image: {EXTRA_HINT}") from error
    return skimage_metrics


def check_quality_dependencies() -> None:
    """Raise an `ImportError` naming the extra to install when PSNR/SSIM cannot be computed (scikit-image missing)."""
    _skimage_metrics()


def _as_rgb_uint8(image, what: str) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got dtype {array.dtype}.")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (height, width, 3), got {array.shape}.")
    return array


def _pair(reference, image) -> tuple[np.ndarray, np.ndarray]:
    reference = _as_rgb_uint8(reference, "reference")
    image = _as_rgb_uint8(image, "image")
    if reference.shape != image.shape:
        raise ValueError(f"Images differ in shape: {reference.shape} vs {image.shape}.")
    return reference, image


def psnr(reference, image) -> float:
    """Peak signal-to-noise ratio in dB of two `uint8` RGB images (peak 255); `inf` for identical images."""
    reference, image = _pair(reference, image)
    if np.array_equal(reference, image):
        return math.inf
    return float(_skimage_metrics().peak_signal_noise_ratio(reference, image, data_range=255))


def ssim(reference, image) -> float:
    """
    Structural similarity of two `uint8` RGB images (scikit-image, `data_range=255`, `channel_axis=-1`, 7x7 uniform
    window; the window shrinks to the largest odd size that fits images smaller than 7 pixels).
    """
    structural_similarity = _skimage_metrics().structural_similarity
    reference, image = _pair(reference, image)
    side = min(reference.shape[:2])
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {reference.shape[:2]}.")
    win_size = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(reference, image, data_range=255, channel_axis=-1, win_size=win_size))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """
    Frechet distance between two Gaussians `N(mu1, sigma1)` and `N(mu2, sigma2)`:
    `|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))`, the FID formula when the Gaussians are fitted to
    Inception pool3 features. A singular product gets `eps` added to both diagonals (as is customary for FID).
    """
    try:
        from scipy import linalg
    except ImportError as error:
        raise ImportError(f"The Frechet distance needs SciPy: {EXTRA_HINT}") from error

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("The two feature statistics differ in dimension.")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are samples) of a `(num_samples, dim)` feature array."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"Need at least 2 feature vectors of shape (num_samples, dim), got {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


class FeatureStatistics:
    """
    Running mean and covariance of feature vectors (float64 sums), so that FID over many images never holds all
    features in memory. `update` takes `(batch, dim)` arrays.
    """

    def __init__(self):
        self.count = 0
        self._sum = None
        self._outer = None

    def update(self, features) -> None:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise ValueError(f"Features must have shape (batch, dim), got {features.shape}.")
        if self._sum is None:
            self._sum = np.zeros(features.shape[1])
            self._outer = np.zeros((features.shape[1], features.shape[1]))
        self.count += features.shape[0]
        self._sum += features.sum(axis=0)
        self._outer += features.T @ features

    @property
    def mean(self) -> np.ndarray:
        return self._sum / self.count

    @property
    def covariance(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"A covariance needs at least 2 feature vectors, got {self.count}.")
        mean = self.mean
        return (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)


# ------------------------------------------------------------------------------------------------------------------
# Bits and bytes of an image
# ------------------------------------------------------------------------------------------------------------------
def bits_per_code(codebook_size: int) -> int:
    """`ceil(log2 K)`: bits needed to store one code of a `K`-code codebook."""
    if codebook_size < 2:
        raise ValueError(f"A codebook needs at least 2 codes, got {codebook_size}.")
    return math.ceil(math.log2(codebook_size))


def bits_per_pixel(num_bytes_or_bits: float, num_pixels: int, *, unit: str = "bytes") -> float:
    """Bits per pixel of a payload of `num_bytes_or_bits` (`unit="bytes"` or `"bits"`) for `num_pixels` pixels."""
    if unit not in ("bytes", "bits"):
        raise ValueError(f"unit must be 'bytes' or 'bits', got {unit!r}.")
    bits = num_bytes_or_bits * (8 if unit == "bytes" else 1)
    return float(bits) / num_pixels


def code_bits_per_pixel(num_codes: int, codebook_size: int, num_pixels: int) -> float:
    """Bits per pixel of `num_codes` codes stored at `ceil(log2 K)` bits each."""
    return num_codes * bits_per_code(codebook_size) / num_pixels


def raw_rgb_bytes(image) -> int:
    """Bytes of the image as raw 8-bit RGB (`height * width * 3`)."""
    array = _as_rgb_uint8(image, "image")
    return int(array.shape[0] * array.shape[1] * 3)


def encode_png(image) -> bytes:
    """PNG file bytes of the image (Pillow, lossless, `optimize=True`: zlib level 9, best filter Pillow finds)."""
    buffer = io.BytesIO()
    Image.fromarray(_as_rgb_uint8(image, "image")).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def png_bytes(image) -> int:
    """Size in bytes of the image as a PNG file (see [`encode_png`])."""
    return len(encode_png(image))


def encode_jpeg(image, quality: int) -> bytes:
    """JPEG file bytes at `quality` (1-100; Pillow/libjpeg, baseline, 4:2:0 subsampling, optimised Huffman tables)."""
    quality = int(quality)
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}.")
    buffer = io.BytesIO()
    Image.fromarray(_as_rgb_uint8(image, "image")).save(
        buffer, format="JPEG", quality=quality, optimize=True, subsampling="4:2:0"
    )
    return buffer.getvalue()


def jpeg_bytes(image, quality: int = 90) -> int:
    """Size in bytes of the image as a JPEG file at `quality` (see [`encode_jpeg`])."""
    return len(encode_jpeg(image, quality))


def decode_image_bytes(data: bytes) -> np.ndarray:
    """Decode an encoded image (PNG/JPEG bytes) to a `uint8` RGB array (through `image_io`, the one reader)."""
    from .image_io import load_rgb

    return load_rgb(bytes(data))


@dataclass
class JpegMatch:
    """Result of [`jpeg_at_budget`]."""

    quality: int
    num_bytes: int
    budget: int
    fits: bool
    data: bytes

    def decoded(self) -> np.ndarray:
        return decode_image_bytes(self.data)


def jpeg_at_budget(image, budget_bytes: int) -> JpegMatch:
    """
    The highest JPEG quality whose file is at most `budget_bytes`, found by bisection over qualities 1..100 (JPEG
    size grows with quality). When even quality 1 is over the budget, quality 1 is returned with `fits=False`: the
    caller must report that the JPEG is larger than the budget, not pretend it matched.
    """
    budget_bytes = int(budget_bytes)
    cache: dict[int, bytes] = {}

    def encoded(quality: int) -> bytes:
        if quality not in cache:
            cache[quality] = encode_jpeg(image, quality)
        return cache[quality]

    if len(encoded(1)) > budget_bytes:
        return JpegMatch(1, len(encoded(1)), budget_bytes, False, encoded(1))
    low, high = 1, 100  # invariant: size(low) <= budget
    while low < high:
        middle = (low + high + 1) // 2
        if len(encoded(middle)) <= budget_bytes:
            low = middle
        else:
            high = middle - 1
    return JpegMatch(low, len(encoded(low)), budget_bytes, True, encoded(low))


# ------------------------------------------------------------------------------------------------------------------
# Bits and bytes of a code stream
# ------------------------------------------------------------------------------------------------------------------
def _codes_array(codes) -> np.ndarray:
    if hasattr(codes, "detach"):  # torch tensor
        codes = codes.detach().cpu().numpy()
    array = np.asarray(codes).reshape(-1)
    if array.dtype.kind not in "iu":
        raise ValueError(f"Codes must be integers, got dtype {array.dtype}.")
    if array.size and array.min() < 0:
        raise ValueError("Codes must be non-negative.")
    return array


def codes_to_uint16_bytes(codes) -> bytes:
    """The code stream as little-endian `uint16` (2 bytes per code; every released codebook fits)."""
    array = _codes_array(codes)
    if array.size and array.max() >= 2**16:
        raise ValueError(f"Code {int(array.max())} does not fit in 16 bits.")
    return array.astype("<u2").tobytes()


def pack_codes(codes, bits: int) -> bytes:
    """
    Bit-pack codes at `bits` bits each: a little-endian bit stream (bit `j` of code `i` is stream bit
    `i * bits + j`, bytes filled from their least significant bit), padded with zero bits to a whole byte.
    `len(result) == ceil(len(codes) * bits / 8)`.
    """
    array = _codes_array(codes).astype(np.uint64)
    if not 1 <= bits <= 63:
        raise ValueError(f"bits must be in 1..63, got {bits}.")
    if array.size and int(array.max()) >= 2**bits:
        raise ValueError(f"Code {int(array.max())} does not fit in {bits} bits.")
    shifts = np.arange(bits, dtype=np.uint64)
    bit_matrix = ((array[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bit_matrix.reshape(-1), bitorder="little").tobytes()


def unpack_codes(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of [`pack_codes`]: `count` codes of `bits` bits each, as `int64`."""
    needed = math.ceil(count * bits / 8)
    if len(data) < needed:
        raise ValueError(f"{count} codes of {bits} bits need {needed} bytes, got {len(data)}.")
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits, bitorder="little")
    weights = (np.uint64(1) << np.arange(bits, dtype=np.uint64)).astype(np.int64)
    return stream.reshape(count, bits).astype(np.int64) @ weights


COMPRESSORS = {
    "zlib": (lambda data: zlib.compress(data, 9), zlib.decompress),
    "bz2": (lambda data: bz2.compress(data, 9), bz2.decompress),
    "lzma": (lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
}
"""Standard-library lossless compressors at their strongest settings: zlib level 9, bz2 level 9, lzma (xz) 9e."""


def compress(data: bytes, method: str) -> bytes:
    """Compress with one of [`COMPRESSORS`] and check that it decompresses to the input."""
    if method not in COMPRESSORS:
        raise ValueError(f"Unknown compressor {method!r}; expected one of {', '.join(COMPRESSORS)}.")
    packer, unpacker = COMPRESSORS[method]
    compressed = packer(data)
    if unpacker(compressed) != data:  # cheap insurance: never report a size that does not round-trip
        raise RuntimeError(f"{method} did not round-trip.")
    return compressed


def code_storage(codes, codebook_size: int) -> dict[str, int]:
    """
    Bytes needed to store a code stream, measured:

    * `uint16`: 2 bytes per code (the paper's storage);
    * `packed`: `ceil(log2 K)` bits per code ([`pack_codes`]);
    * `zlib`, `bz2`, `lzma`: each compressor on the `uint16` stream; `zlib_packed`, `bz2_packed`, `lzma_packed`: on
      the bit-packed stream (whole files, headers included);
    * `best`: the smallest of all of the above.
    """
    raw = codes_to_uint16_bytes(codes)
    packed = pack_codes(codes, bits_per_code(codebook_size))
    sizes = {"uint16": len(raw), "packed": len(packed)}
    for method in COMPRESSORS:
        sizes[method] = len(compress(raw, method))
    for method in COMPRESSORS:
        sizes[f"{method}_packed"] = len(compress(packed, method))
    sizes["best"] = min(sizes.values())
    return sizes


__all__ = [
    "COMPRESSORS",
    "FeatureStatistics",
    "JpegMatch",
    "bits_per_code",
    "bits_per_pixel",
    "check_quality_dependencies",
    "code_bits_per_pixel",
    "code_storage",
    "codes_to_uint16_bytes",
    "compress",
    "decode_image_bytes",
    "encode_jpeg",
    "encode_png",
    "feature_statistics",
    "frechet_distance",
    "jpeg_at_budget",
    "jpeg_bytes",
    "pack_codes",
    "png_bytes",
    "psnr",
    "raw_rgb_bytes",
    "ssim",
    "unpack_codes",
]
