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
"""Image processor for ViQ (PIL/NumPy backend).

ViQ (Visual Quantized representations, Yu et al.) tokenizes an image at its native aspect ratio into 4 discrete
codes per 16x16 patch. This processor turns images into the packed patch representation the ViQ vision tower consumes:

- `pixel_values`: all images' patches concatenated along the first axis (no padding between images), each patch
  flattened in `(channel, row, col)` order so that a `Conv2d(3, D, 16, stride=16)` weight reshaped to `(D, 768)` is
  the equivalent linear patch embedding;
- `image_grid_hw`: the `(h, w)` patch grid of every image, from which packed-sequence boundaries follow.

Two modes:

- **native** (`do_resize=True`, the default): aspect-preserving resize so that both sides are multiples of
  `size_divisor` and the pixel count lies in `[min_pixels, max_pixels]` (Qwen2-VL `smart_resize` rules). An image
  that already satisfies the constraints is not resampled.
- **reference** (`do_resize=False`): the preprocessing of the authors' released ViQ code (github.com/yuxumin/ViQ),
  reproduced bit-exactly for 8-bit input: `x = float32(u8 * (1/255))` (product in float64), `(x - 0.5) / 0.5` in
  float32, then zero padding (value 0.0, after normalization) at the bottom/right to multiples of `size_divisor`
  (16 by default, the reference's patch size). No resize.

Beyond the reference (which only saw RGB PIL images), inputs are decoded robustly: EXIF orientation is applied,
transparency is composited on white, 16-bit images are scaled by 1/65535, float images are accepted in [0, 1], and
unreadable files or malformed arrays raise `ValueError` naming the image (and its path).

Structure adapted from transformers' `Qwen2VLImageProcessorPil` (packed output, `smart_resize`) and
`Siglip2ImageProcessorPil` (patchify); patch-internal order changed to `(channel, row, col)` to match ViQ's conv.
"""

import io
import math
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ImageInput, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType, is_torch_tensor, logging


logger = logging.get_logger(__name__)

MAX_ASPECT_RATIO = 200
# the processor's names for the two entries of `size`
_SIZE_ALIASES = ("min_pixels", "max_pixels")
_PIL_RETURN_TYPES = ("PIL.Image.Image", "pil")


# ----------------------------------------------------------------------------------------------------------------
# Decoding: any supported image (path, URL, bytes, `datasets` dict, PIL image, array, tensor) to a channels-first
# RGB array, the first step of the processor; the package's pipeline, metrics and CLI decode through it too.
# ----------------------------------------------------------------------------------------------------------------
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


class ViQImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    min_pixels (`int`, *optional*, defaults to `64 * 64`):
        In native mode (`do_resize=True`), images with fewer pixels are upscaled (aspect ratio kept) to at least this
        many pixels (`max_pixels` wins if the two conflict). Ignored in reference mode. Held as
        `size["shortest_edge"]`, as transformers' Qwen2-VL processors hold it.
    max_pixels (`int`, *optional*, defaults to `1024 * 1024`):
        In native mode, images with more pixels are downscaled (aspect ratio kept) to at most this many pixels. In
        reference mode (`do_resize=False`), images with more pixels are rejected with a `ValueError`. Held as
        `size["longest_edge"]`.
    size_divisor (`int`, *optional*, defaults to 16):
        Both output sides are multiples of this value (by resizing in native mode, by zero padding in reference
        mode). Must be a multiple of `patch_size`; use 32 for even patch grids (2x2 token merging in a VLM).
    patch_size (`int`, *optional*, defaults to 16):
        The spatial patch size of the ViQ vision encoder.
    """

    min_pixels: int
    max_pixels: int
    size_divisor: int
    patch_size: int


def smart_resize(
    height: int,
    width: int,
    factor: int = 16,
    min_pixels: int = 64 * 64,
    max_pixels: int = 1024 * 1024,
) -> tuple[int, int]:
    """
    Compute the native-mode output size of an image, Qwen2-VL `smart_resize` style.

    1. Both sides are multiples of `factor` (at least one `factor`).
    2. The pixel count lies in `[min_pixels, max_pixels]`; `max_pixels` is a hard limit, `min_pixels` is met unless
       that would break `max_pixels`.
    3. The aspect ratio is kept as closely as possible: within the budget each side is rounded to the nearest
       multiple of `factor`; above it both sides are scaled down and floored, below it scaled up and ceiled.

    Args:
        height (`int`):
            Height of the input image in pixels.
        width (`int`):
            Width of the input image in pixels.
        factor (`int`, *optional*, defaults to 16):
            Both output sides are multiples of this value.
        min_pixels (`int`, *optional*, defaults to `64 * 64`):
            Minimum number of output pixels.
        max_pixels (`int`, *optional*, defaults to `1024 * 1024`):
            Maximum number of output pixels; must be at least `factor * factor`.

    Returns:
        `tuple[int, int]`: The output `(height, width)` in pixels.

    Raises:
        `ValueError`: If the image is empty or its aspect ratio exceeds 200.
    """
    _check_aspect_ratio(height, width)
    if max_pixels < factor * factor:
        raise ValueError(f"max_pixels={max_pixels} is smaller than one {factor}x{factor} block ({factor * factor}).")

    resized_height = max(factor, round(height / factor) * factor)
    resized_width = max(factor, round(width / factor) * factor)
    if resized_height * resized_width > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        resized_height = max(factor, math.floor(height / beta / factor) * factor)
        resized_width = max(factor, math.floor(width / beta / factor) * factor)
    elif resized_height * resized_width < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        resized_height = math.ceil(height * beta / factor) * factor
        resized_width = math.ceil(width * beta / factor) * factor

    # Clamping a side to one `factor` (very elongated images), float error in the floor, or ceil rounding (when
    # min_pixels is close to max_pixels) can overshoot the budget: shrink the longer side, then the other one.
    for _ in range(2):
        if resized_height * resized_width <= max_pixels:
            break
        if resized_height >= resized_width:
            resized_height = max(factor, max_pixels // resized_width // factor * factor)
        else:
            resized_width = max(factor, max_pixels // resized_height // factor * factor)
    return resized_height, resized_width


def convert_image_to_patches(image: np.ndarray, patch_size: int) -> np.ndarray:
    """
    Cut a channels-first image into flattened, non-overlapping patches.

    Patches are ordered row-major over the patch grid; inside a patch the order is `(channel, row, col)`, i.e.
    `image[:, 16 * r : 16 * (r + 1), 16 * c : 16 * (c + 1)].reshape(-1)` for `patch_size=16`. This matches a
    `Conv2d(C, D, patch_size, stride=patch_size)` whose weight is reshaped to `(D, C * patch_size * patch_size)`.

    Args:
        image (`np.ndarray` of shape `(num_channels, height, width)`):
            The image; `height` and `width` must be multiples of `patch_size`.
        patch_size (`int`):
            The side of a square patch.

    Returns:
        `np.ndarray` of shape `(grid_height * grid_width, num_channels * patch_size * patch_size)`.
    """
    num_channels, height, width = image.shape
    grid_height, grid_width = height // patch_size, width // patch_size
    patches = image.reshape(num_channels, grid_height, patch_size, grid_width, patch_size)
    patches = patches.transpose(1, 3, 0, 2, 4)  # (grid_h, grid_w, C, p, p)
    return patches.reshape(grid_height * grid_width, num_channels * patch_size * patch_size)


def _check_aspect_ratio(height: int, width: int) -> None:
    check_not_empty(height, width)
    aspect_ratio = max(height, width) / min(height, width)
    if aspect_ratio > MAX_ASPECT_RATIO:
        raise ValueError(
            f"The aspect ratio of the image ({height}x{width}, ratio {aspect_ratio:.1f}) exceeds {MAX_ASPECT_RATIO}; "
            "crop or pad the image to a less elongated shape first."
        )


def _describe(image: Any, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return f"Image {index} ('{os.fspath(image)}')"
    if isinstance(image, Image.Image):
        return f"Image {index} (PIL image, mode {image.mode}, size {image.width}x{image.height})"
    shape = tuple(getattr(image, "shape", ()))
    return f"Image {index} ({type(image).__name__} of shape {shape}, dtype {getattr(image, 'dtype', None)})"


class ViQImageProcessor(PilBackend):
    r"""
    Constructs a ViQ image processor (PIL/NumPy backend, CPU).

    Images of any size and aspect ratio are converted to RGB, resized to the patch grid (native mode) or zero padded
    to it (reference mode), normalized, cut into patches and packed into one sequence.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Native mode: resize each image (aspect ratio kept) so both sides are multiples of `size_divisor` and the
            pixel count lies in `[min_pixels, max_pixels]`. `False` selects the reference preprocessing of the
            released ViQ code: no resize, zero padding to multiples of `size_divisor` after normalization.
        size (`dict[str, int]`, *optional*, defaults to `{"shortest_edge": 64 * 64, "longest_edge": 1024 * 1024}`):
            The pixel budget: `shortest_edge` is `min_pixels`, `longest_edge` is `max_pixels` (the layout of
            transformers' Qwen2-VL image processors). `min_pixels` / `max_pixels`, here or per call, set them.
        min_pixels (`int`, *optional*, defaults to `64 * 64`):
            Native mode: smaller images are upscaled to at least this many pixels.
        max_pixels (`int`, *optional*, defaults to `1024 * 1024`):
            Native mode: larger images are downscaled to at most this many pixels. Reference mode: larger images
            raise a `ValueError`.
        size_divisor (`int`, *optional*, defaults to 16):
            Output sides are multiples of this value. Must be a multiple of `patch_size`.
        patch_size (`int`, *optional*, defaults to 16):
            Patch size of the ViQ vision encoder.
        resample (`PILImageResampling`, *optional*, defaults to `PILImageResampling.BICUBIC`):
            Resampling filter used in native mode.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply 8-bit images by `rescale_factor` (in float64, then cast to float32). 16-bit images are
            always scaled by 1/65535 and float images are taken as values in [0, 1]; neither is rescaled again.
        rescale_factor (`float`, *optional*, defaults to `1 / 255`):
            Scale factor for 8-bit images.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalize with `(x - image_mean) / image_std` (float32).
        image_mean (`float` or `list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`):
            Per-channel mean.
        image_std (`float` or `list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`):
            Per-channel standard deviation.
        do_convert_rgb (`bool`, *optional*, defaults to `True`):
            Whether to convert images to RGB (grayscale replicated, palette/CMYK converted, transparency composited on
            white). When `False`, every image must already have exactly 3 channels.

    Example:

    ```python
    >>> import numpy as np
    >>> from transformers_viq import ViQImageProcessor

    >>> processor = ViQImageProcessor()
    >>> images = [np.zeros((480, 640, 3), dtype=np.uint8), np.zeros((100, 700, 3), dtype=np.uint8)]
    >>> inputs = processor(images=images, return_tensors="pt")
    >>> inputs["image_grid_hw"].tolist()
    [[30, 40], [6, 44]]
    >>> inputs["pixel_values"].shape
    torch.Size([1464, 768])
    ```
    """

    valid_kwargs = ViQImageProcessorKwargs
    model_input_names = ["pixel_values", "image_grid_hw"]

    do_resize = True
    size = {"shortest_edge": 64 * 64, "longest_edge": 1024 * 1024}
    size_divisor = 16
    patch_size = 16
    resample = PILImageResampling.BICUBIC
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    do_convert_rgb = True

    def __init__(self, **kwargs: Unpack[ViQImageProcessorKwargs]):
        size = kwargs.pop("size", None)
        size = dict(type(self).size if size is None else size)
        min_pixels, max_pixels = kwargs.pop("min_pixels", None), kwargs.pop("max_pixels", None)
        if min_pixels is not None:
            size["shortest_edge"] = min_pixels
        if max_pixels is not None:
            size["longest_edge"] = max_pixels
        super().__init__(size=size, **kwargs)
        # `min_pixels` / `max_pixels` live in `size`: a call takes them as overrides, never as defaults of its own
        self._valid_kwargs_names = [name for name in self._valid_kwargs_names if name not in _SIZE_ALIASES]
        self._check_geometry(self.min_pixels, self.max_pixels, self.size_divisor, self.patch_size)

    @property
    def min_pixels(self) -> int | None:
        """`size["shortest_edge"]`: the smallest pixel count of a native-mode output."""
        size = self.__dict__.get("size")  # the instance's own (unset while `__init__` resolves its attributes)
        return None if size is None else size["shortest_edge"]

    @property
    def max_pixels(self) -> int | None:
        """`size["longest_edge"]`: the pixel budget (native mode resizes to it, reference mode refuses more)."""
        size = self.__dict__.get("size")
        return None if size is None else size["longest_edge"]

    def _standardize_kwargs(self, size=None, min_pixels: int | None = None, max_pixels: int | None = None, **kwargs):
        if min_pixels is not None or max_pixels is not None:
            size = dict(size) if size is not None else dict(self.size)
            if min_pixels is not None:
                size["shortest_edge"] = min_pixels
            if max_pixels is not None:
                size["longest_edge"] = max_pixels
        return super()._standardize_kwargs(size=size, **kwargs)

    def preprocess(self, images: ImageInput, **kwargs: Unpack[ViQImageProcessorKwargs]) -> BatchFeature:
        r"""
        Preprocess an image or a batch of images into packed patches.

        Args:
            images (`ImageInput`):
                One image or a (possibly nested) list of images. An image is a `PIL.Image.Image` (any mode), a path
                (`str` or `os.PathLike`; an `http(s)://` URL is fetched), a `np.ndarray` or a `torch.Tensor`. Arrays
                and tensors are `(H, W)`, `(H, W, C)` or `(C, H, W)` with 1, 3 or 4 channels (4-D arrays are a batch);
                dtype `uint8` (0-255), `uint16` (0-65535) or float (values in [0, 1]). When both layouts fit, NumPy
                arrays are read as `(H, W, C)` and torch tensors as `(C, H, W)`; pass `input_data_format` to force one.
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` for torch tensors, `"np"` for NumPy arrays; `None` also gives NumPy arrays.
            **kwargs:
                Any constructor argument, to override it for this call.

        Returns:
            [`BatchFeature`] with:

            - **pixel_values** (`float32` of shape `(sum_i h_i * w_i, 3 * patch_size * patch_size)`) -- the patches of
              all images, concatenated in input order, each image's patches row-major over its grid, each patch in
              `(channel, row, col)` order.
            - **image_grid_hw** (`int64` of shape `(num_images, 2)`) -- the patch grid `(h_i, w_i)` of each image.

        Raises:
            `ValueError`: For an empty image, an aspect ratio above 200 (native mode), an image over `max_pixels`
            (reference mode), a wrong number of dimensions or channels, an unsupported dtype, float values outside
            [0, 1], or an unreadable, truncated or too large image file. The message names the image and its path.
        """
        return super().preprocess(images, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # Sizes
    # ------------------------------------------------------------------------------------------------------------

    @staticmethod
    def _check_geometry(min_pixels: int, max_pixels: int, size_divisor: int, patch_size: int) -> None:
        for name, value in (
            ("min_pixels", min_pixels),
            ("max_pixels", max_pixels),
            ("size_divisor", size_divisor),
            ("patch_size", patch_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if size_divisor % patch_size != 0:
            raise ValueError(
                f"`size_divisor` ({size_divisor}) must be a multiple of `patch_size` ({patch_size}), so that every "
                "output side is a whole number of patches."
            )

    @staticmethod
    def _output_size(
        height: int, width: int, do_resize: bool, min_pixels: int, max_pixels: int, size_divisor: int
    ) -> tuple[int, int]:
        """Output `(height, width)` before padding; checks the image against the mode's limits."""
        if do_resize:
            return smart_resize(height, width, size_divisor, min_pixels=min_pixels, max_pixels=max_pixels)
        _check_aspect_ratio(height, width)
        if height * width > max_pixels:
            raise ValueError(
                f"The image is {height}x{width} = {height * width} pixels, over the pixel budget "
                f"max_pixels={max_pixels} of reference mode (do_resize=False, which never resizes). Pass "
                f"max_pixels={height * width} (or larger) to accept it, or use do_resize=True to downscale it to the "
                "budget."
            )
        return height, width

    def get_resized_size(self, height: int, width: int, images_kwargs: dict | None = None) -> tuple[int, int]:
        """
        The size in pixels, after resizing (native mode) or padding (reference mode), of the image the processor
        produces for an input of `height x width` pixels. Lets callers count tokens without loading pixels.

        Args:
            height (`int`):
                Height of the input image (after EXIF orientation).
            width (`int`):
                Width of the input image (after EXIF orientation).
            images_kwargs (`dict`, *optional*):
                Overrides of `do_resize`, `min_pixels`, `max_pixels`, `size_divisor`, `patch_size`.

        Returns:
            `tuple[int, int]`: `(height, width)`, both multiples of `size_divisor`.

        Raises:
            `ValueError`: In the same cases as preprocessing an image of that size.
        """
        images_kwargs = images_kwargs or {}
        do_resize = images_kwargs.get("do_resize", self.do_resize)
        size = images_kwargs.get("size") or self.size
        min_pixels = images_kwargs.get("min_pixels", size["shortest_edge"])
        max_pixels = images_kwargs.get("max_pixels", size["longest_edge"])
        size_divisor = images_kwargs.get("size_divisor", self.size_divisor)
        patch_size = images_kwargs.get("patch_size", self.patch_size)
        self._check_geometry(min_pixels, max_pixels, size_divisor, patch_size)
        out_height, out_width = self._output_size(height, width, do_resize, min_pixels, max_pixels, size_divisor)
        return math.ceil(out_height / size_divisor) * size_divisor, math.ceil(out_width / size_divisor) * size_divisor

    def get_number_of_image_patches(self, height: int, width: int, images_kwargs: dict | None = None) -> int:
        """
        Number of patches (`h * w` of the patch grid) the processor produces for a `height x width` input image. ViQ
        emits 4 codes per patch.

        Args:
            height (`int`):
                Height of the input image.
            width (`int`):
                Width of the input image.
            images_kwargs (`dict`, *optional*):
                Overrides of the processor's defaults, as in [`~ViQImageProcessor.get_resized_size`].

        Returns:
            `int`: Number of patches.
        """
        patch_size = (images_kwargs or {}).get("patch_size", self.patch_size)
        out_height, out_width = self.get_resized_size(height, width, images_kwargs)
        return (out_height // patch_size) * (out_width // patch_size)

    # ------------------------------------------------------------------------------------------------------------
    # Decoding inputs
    # ------------------------------------------------------------------------------------------------------------

    def _validate_preprocess_kwargs(self, **kwargs) -> None:
        size = kwargs.get("size")
        self._check_geometry(
            size.shortest_edge, size.longest_edge, kwargs.get("size_divisor"), kwargs.get("patch_size")
        )
        # The output size is computed per image, so the base check that `size` is set when resizing does not apply.
        kwargs.pop("do_resize", None)
        super()._validate_preprocess_kwargs(**kwargs)

    def _prepare_image_like_inputs(self, images: ImageInput, *args, **kwargs) -> list[np.ndarray]:
        """
        Flatten the input structure and decode every image to a channels-first RGB array: `uint8` for 8-bit sources,
        `float32` in [0, 1] for 16-bit and float sources. Size limits are checked here so that errors can name the
        image and its path.
        """
        flat_images = self._flatten_images(images)
        if not flat_images:
            raise ValueError("No images were given.")
        decoded = []
        for index, image in enumerate(flat_images):
            try:
                array = decode_image(
                    image,
                    do_convert_rgb=kwargs.get("do_convert_rgb", self.do_convert_rgb),
                    input_data_format=kwargs.get("input_data_format"),
                )
                size = kwargs.get("size") or self.size
                self._output_size(
                    array.shape[1],
                    array.shape[2],
                    kwargs.get("do_resize", self.do_resize),
                    size["shortest_edge"],
                    size["longest_edge"],
                    kwargs.get("size_divisor", self.size_divisor),
                )
            except ValueError as error:
                raise ValueError(f"{_describe(image, index)}: {error}") from error
            decoded.append(array)
        return decoded

    @classmethod
    def _flatten_images(cls, images: Any) -> list:
        if isinstance(images, (list, tuple)):
            return [image for item in images for image in cls._flatten_images(item)]
        if isinstance(images, (str, os.PathLike, Image.Image, bytes, bytearray, dict)):
            return [images]
        if isinstance(images, np.ndarray) or is_torch_tensor(images):
            return list(images) if images.ndim == 4 else [images]
        raise ValueError(
            f"Unsupported image type {type(images).__name__}; expected a PIL image, a path, a NumPy array, a torch "
            "tensor, or a list of those."
        )

    def decode_image(self, image: Any) -> np.ndarray:
        """
        Decode one image (path, PIL image, array or tensor) exactly as the processor does before resizing: EXIF
        orientation, transparency on white, colour conversion, range checks.

        Returns:
            `np.ndarray` of shape `(3, height, width)`: `uint8` for 8-bit sources, `float32` in [0, 1] for 16-bit and
            float sources (never reduced to 8 bits).
        """
        return decode_image(image, self.do_convert_rgb, None)

    # ------------------------------------------------------------------------------------------------------------
    # Processing
    # ------------------------------------------------------------------------------------------------------------

    def resize(
        self,
        image: np.ndarray,
        size: SizeDict | tuple[int, int],
        resample: "PILImageResampling | int | None" = None,
        **kwargs,
    ) -> np.ndarray:
        """
        Resize a channels-first image with PIL, keeping its precision.

        `uint8` images are resized as one RGB PIL image (as the reference demo does); float images channel by channel
        in PIL's 32-bit float mode, so 16-bit and float sources are not quantized to 8 bits.

        Args:
            image (`np.ndarray` of shape `(3, height, width)`):
                The image, `uint8` or `float32`.
            size (`SizeDict` or `tuple[int, int]`):
                Target `(height, width)`.
            resample (`PILImageResampling`, *optional*, defaults to `self.resample`):
                Resampling filter.

        Returns:
            `np.ndarray` of shape `(3, size.height, size.width)`, same dtype as `image`.
        """
        height, width = (size.height, size.width) if isinstance(size, SizeDict) else size
        resample = self.resample if resample is None else resample
        if image.dtype == np.uint8:
            pil_image = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
            resized = np.asarray(pil_image.resize((width, height), resample=resample))
            return np.ascontiguousarray(resized.transpose(2, 0, 1))
        channels = []
        for channel in image:
            pil_channel = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))  # mode "F"
            channels.append(np.asarray(pil_channel.resize((width, height), resample=resample)))
        return np.stack(channels, axis=0)

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        size_divisor: int,
        patch_size: int,
        resample: "PILImageResampling | int | None",
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | Sequence[float] | None,
        image_std: float | Sequence[float] | None,
        return_tensors: str | TensorType | None,
        **kwargs,
    ) -> BatchFeature:
        if do_normalize:
            mean = np.broadcast_to(np.asarray(image_mean, dtype=np.float32), (3,)).reshape(3, 1, 1)
            std = np.broadcast_to(np.asarray(image_std, dtype=np.float32), (3,)).reshape(3, 1, 1)

        min_pixels, max_pixels = size.shortest_edge, size.longest_edge
        all_patches, grids = [], []
        for image in images:
            height, width = image.shape[-2:]
            out_height, out_width = self._output_size(height, width, do_resize, min_pixels, max_pixels, size_divisor)
            if (out_height, out_width) != (height, width):
                image = self.resize(image, (out_height, out_width), resample=resample)

            if image.dtype == np.uint8:
                if do_rescale:
                    # As the reference (transformers' `rescale`): product in float64, then cast to float32.
                    image = (image.astype(np.float64) * rescale_factor).astype(np.float32)
                else:
                    logger.warning_once("do_rescale=False with 8-bit images: values stay in [0, 255].")
                    image = image.astype(np.float32)
            if do_normalize:
                image = (image - mean) / std  # float32, as the reference

            # Zero padding at the bottom/right after normalization (a no-op after a native-mode resize).
            pad_height = -out_height % size_divisor
            pad_width = -out_width % size_divisor
            if pad_height or pad_width:
                image = np.pad(image, ((0, 0), (0, pad_height), (0, pad_width)), constant_values=0.0)

            all_patches.append(convert_image_to_patches(image.astype(np.float32, copy=False), patch_size))
            grids.append((image.shape[1] // patch_size, image.shape[2] // patch_size))

        pixel_values = np.ascontiguousarray(np.concatenate(all_patches, axis=0))
        image_grid_hw = np.array(grids, dtype=np.int64).reshape(-1, 2)
        return BatchFeature(
            data={"pixel_values": pixel_values, "image_grid_hw": image_grid_hw}, tensor_type=return_tensors
        )

    # ------------------------------------------------------------------------------------------------------------
    # Post-processing
    # ------------------------------------------------------------------------------------------------------------

    def postprocess(
        self, images: Any, return_tensors: str = "PIL.Image.Image"
    ) -> list["Image.Image"] | list[np.ndarray]:
        """
        Convert decoded images in [-1, 1] to 8-bit RGB, as the reference does:
        `uint8(clamp(x * 0.5 + 0.5, 0, 1) * 255)` in float32, truncating (not rounding). The padding added by the
        processor is kept (reconstructions are `16 h x 16 w`).

        Args:
            images (`list` of `torch.Tensor` / `np.ndarray` of shape `(3, height, width)`, or a `torch.Tensor` /
                `np.ndarray` of shape `(batch_size, 3, height, width)`):
                Decoded images, float, nominally in [-1, 1] (values outside are clamped).
            return_tensors (`str`, *optional*, defaults to `"PIL.Image.Image"`):
                `"PIL.Image.Image"` (or `"pil"`) for RGB PIL images, `"np"` for `uint8` arrays of shape
                `(height, width, 3)`.

        Returns:
            `list[PIL.Image.Image]` or `list[np.ndarray]`: One entry per image.

        Raises:
            `ValueError`: If an image is not `(3, H, W)`, contains NaN, or `return_tensors` is not supported.
        """
        if return_tensors not in (*_PIL_RETURN_TYPES, "np"):
            raise ValueError(f"return_tensors must be 'PIL.Image.Image' or 'np', got {return_tensors!r}.")
        if is_torch_tensor(images) or isinstance(images, np.ndarray):
            images = [images] if images.ndim == 3 else list(images)

        outputs = []
        for index, image in enumerate(images):
            if is_torch_tensor(image):
                import torch

                array = image.detach().to("cpu", torch.float32).numpy()
            else:
                array = np.asarray(image, dtype=np.float32)
            if array.ndim != 3 or array.shape[0] != 3:
                raise ValueError(f"Image {index}: expected shape (3, height, width), got {tuple(array.shape)}.")
            if np.isnan(array).any():
                raise ValueError(f"Image {index} contains NaN values; cannot convert it to pixels.")
            scaled = np.clip(array * np.float32(0.5) + np.float32(0.5), 0.0, 1.0) * np.float32(255.0)
            pixels = np.ascontiguousarray(scaled.astype(np.uint8).transpose(1, 2, 0))  # astype truncates
            outputs.append(Image.fromarray(pixels) if return_tensors in _PIL_RETURN_TYPES else pixels)
        return outputs


__all__ = [
    "ViQImageProcessor",
    "ViQImageProcessorKwargs",
    "convert_image_to_patches",
    "decode_array",
    "decode_image",
    "decode_pil",
    "open_image",
    "smart_resize",
]
