# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The everyday ViQ jobs as a small library API: load a tokenizer by name, encode, decode, reconstruct.

The `viq` command line, the `eval/` scripts and extraction all go through this module, so they measure exactly the
same pipeline (the lmms-eval plugin evaluates VLMs: it loads them with `from_pretrained` and reads images through
`image_io`, as the image processor does).

```python
from transformers_viq.pipeline import ViQPipeline

pipe = ViQPipeline.from_pretrained("XuminYu/ViQ_weights", size="16k", device="auto")   # or an HF-format folder
codes = pipe.encode(["cat.jpg", "dog.png"])        # a ViQCodes: uint16-ready codes, grids, names and sizes
images = pipe.decode(codes)                        # uint8 (H, W, 3) arrays, each at its image's own size
for item in pipe.reconstruct(["cat.jpg"]):         # encode + decode, with the image the model saw
    print(item.name, reconstruction_numbers(item, pipe.codebook_size)["psnr"])
```

Errors are the library's usual ones: `FileNotFoundError` for a missing file or model folder, `ValueError` naming the
image for unreadable or unsuitable input, [`ModelLoadError`] (its `__cause__` is the original error) when a model
cannot be loaded, including when the Hub cannot be reached: that is found out with one request, without retries, and
offline (`HF_HUB_OFFLINE=1`) nothing is asked of the network.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .hub_utils import (
    HubUnreachableError,
    check_local_folder,
    ensure_fetchable,
    hub_error_reason,
    is_offline,
    looks_like_path,
)
from .image_io import image_size, load_rgb, resize_rgb
from .logging_utils import get_logger, one_line, progress_bar
from .models.viq.configuration_viq import FSQ_LEVEL_PRESETS
from .original_checkpoint import AUTHORS_REPO, original_layout_sizes


logger = get_logger(__name__)

DEFAULT_MODEL = AUTHORS_REPO
DEFAULT_SIZE = "16k"
SIZES = tuple(FSQ_LEVEL_PRESETS)
DTYPES = ("float32", "bfloat16")


class ModelLoadError(RuntimeError):
    """A model (or its processor) could not be loaded; the original error is the `__cause__`."""


# ------------------------------------------------------------------------------------------------------------------
# Resolving what to load
# ------------------------------------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> str:
    """`"auto"` -> `"cuda"` when available, else `"cpu"`; a CUDA device without CUDA raises a `ValueError`."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine (use 'cpu').")
    return device


def resolve_model(model: str | None = None, size: str | None = None, **hub_kwargs) -> tuple[str, str | None]:
    """
    `(model, size)` to load. `size` selects the authors' layout; without it, a folder or repo in that layout (see
    `original_checkpoint.original_layout_sizes`) takes size 16k when it holds it, or its only size; anything else is
    read in HF format. No model means `XuminYu/ViQ_weights` at 16k.

    Raises:
        `NoSuchFolderError` (a `FileNotFoundError`) for a name that looks like a local path and is no folder;
        `ValueError` for an unknown size, a size for a folder in HF format, or a folder in the authors' layout that
        holds several sizes but not 16k; `HubUnreachableError` (a `ConnectionError`) when a
        Hub repo is not cached and the Hub cannot be reached (one request, no retries), or downloads are off.
    """
    if size is not None and size not in FSQ_LEVEL_PRESETS:
        raise ValueError(f"Unknown ViQ size {size!r}; expected one of {', '.join(SIZES)}.")
    if model is None:
        return DEFAULT_MODEL, size or DEFAULT_SIZE
    model = os.fspath(model)
    check_local_folder(model)
    if size is not None and os.path.isfile(os.path.join(os.path.expanduser(model), "config.json")):
        raise ValueError(f"{model} is a folder in HF format (config.json), not the authors' layout: drop "
                         f"size='{size}' to load it.")  # fmt: skip
    if size is None:
        sizes = original_layout_sizes(model, **hub_kwargs)
        if DEFAULT_SIZE in sizes:
            size = DEFAULT_SIZE
        elif len(sizes) == 1:
            size = sizes[0]
        elif sizes:
            raise ValueError(f"{model} is in the authors' layout with sizes {', '.join(sizes)}: choose one, e.g. "
                             f"size='{sizes[-1]}'.")  # fmt: skip
    return model, size


def _check_hub_files(repo: str, filenames, **hub_kwargs) -> None:
    """Before transformers downloads an HF-format repo (with retries), ask once for each file that is not cached."""
    if is_offline(hub_kwargs):
        return  # transformers then reads the cache only, and says what is missing
    for filename in filenames:
        ensure_fetchable(repo, filename, hub_kwargs)


def recorded_model_id(model_id: str) -> str:
    """How a model is recorded in a codes file or dataset: a local folder as an absolute path, a Hub id as is."""
    expanded = os.path.expanduser(model_id)
    return str(Path(expanded).resolve()) if os.path.isdir(expanded) else model_id


def load_config(model: str, size: str | None = None, **hub_kwargs):
    """The `ViQConfig` of a model without loading its weights (the preset for the authors' layout)."""
    from .models.viq.configuration_viq import ViQConfig

    if size is not None:
        return ViQConfig.from_preset(size)
    return ViQConfig.from_pretrained(model, **hub_kwargs)



# ------------------------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Reconstruction:
    """
    One image through encode -> decode. `original` and `reconstruction` have the same size: the image's own size
    (`measured_at == "source"`, the reconstruction resized back from the size the model saw), or the size the model
    saw (`measured_at == "model"`: the processor's resize, before padding).
    """

    name: str
    original: np.ndarray  # uint8 (H, W, 3)
    reconstruction: np.ndarray  # uint8, same shape
    codes: np.ndarray  # int64 (4 * h * w,)
    grid_hw: tuple[int, int]
    source_size: tuple[int, int]  # (height, width) of the file
    extra: dict = field(default_factory=dict)
    fed_size: tuple[int, int] | None = None  # (height, width) the model saw, before padding
    measured_at: str = "model"  # "source" or "model": the size of `original` and `reconstruction`


MEASURED_AT = {"source": "the image's own size", "model": "the size the model saw"}


def reconstruction_numbers(item: Reconstruction, codebook_size: int) -> dict:
    """
    bpp, byte sizes (codes, raw RGB, PNG and JPEG q90 of the original), PSNR and SSIM of one reconstruction, computed
    at the size of `item.original` (`width` x `height`, which `measured_at` names: `"source"` or `"model"`).
    """
    from . import metrics

    height, width = item.original.shape[:2]
    fed_height, fed_width = item.fed_size or (height, width)
    pixels = height * width
    bits = metrics.bits_per_code(codebook_size)
    num_codes = int(item.codes.size)
    return {
        "name": item.name,
        "measured_at": item.measured_at,
        "source_height": item.source_size[0],
        "source_width": item.source_size[1],
        "fed_height": fed_height,
        "fed_width": fed_width,
        "height": height,
        "width": width,
        "grid_h": item.grid_hw[0],
        "grid_w": item.grid_hw[1],
        "num_codes": num_codes,
        "codebook_size": codebook_size,
        "bits_per_code": bits,
        "bpp": num_codes * bits / pixels,
        "bpp_uint16": num_codes * 16 / pixels,
        "code_bytes_packed": math.ceil(num_codes * bits / 8),
        "code_bytes_uint16": 2 * num_codes,
        "raw_rgb_bytes": 3 * pixels,
        "png_bytes": metrics.png_bytes(item.original),
        "jpeg90_bytes": metrics.jpeg_bytes(item.original, 90),
        "psnr": metrics.psnr(item.original, item.reconstruction),
        "ssim": metrics.ssim(item.original, item.reconstruction),
    }


# ------------------------------------------------------------------------------------------------------------------
# The pipeline
# ------------------------------------------------------------------------------------------------------------------
def _name_of(source: Any, index: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return f"image {index}"


def _batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), max(1, batch_size)):
        yield items[start : start + batch_size]


class ViQPipeline:
    """
    A ViQ tokenizer with its image processor, for encoding images to codes and decoding codes to images.

    Args:
        model ([`ViQModel`]): the tokenizer (in eval mode, on its device).
        image_processor ([`ViQImageProcessor`], *optional*): defaults to the native-resolution defaults.
        model_id (`str`, *optional*): the name or path it was loaded from (recorded in codes files).
        viq_size (`str`, *optional*): the size it was loaded as from the authors' layout (`None` for HF format).
    """

    def __init__(self, model, image_processor=None, model_id: str | None = None, viq_size: str | None = None):
        from .models.viq.image_processing_viq import ViQImageProcessor

        self.model = model
        self.image_processor = image_processor if image_processor is not None else ViQImageProcessor()
        self.model_id = model_id or getattr(model.config, "_name_or_path", None) or None
        self.viq_size = viq_size

    # ---- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        size: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "float32",
        max_pixels: int | None = None,
        do_resize: bool = True,
        **hub_kwargs,
    ) -> ViQPipeline:
        """
        Load a tokenizer and its image processor for inference.

        Args:
            model (`str`, *optional*): an HF-format folder/repo, or the authors' layout (default
                `XuminYu/ViQ_weights`).
            size (`str`, *optional*): the size to read from the authors' layout (`2k` ... `64k`; default 16k there).
            device (`str`, *optional*, defaults to `"auto"`): `auto` (CUDA when available), `cpu`, `cuda`, `cuda:N`.
            dtype (`str`, *optional*, defaults to `"float32"`): `float32` or `bfloat16`.
            max_pixels (`int`, *optional*): pixel budget per image (overrides the processor's).
            do_resize (`bool`, *optional*, defaults to `True`): `False` for the authors' preprocessing (no resize,
                zero padding to multiples of 16).
            hub_kwargs: `revision`, `cache_dir`, `local_files_only`, `token`.

        An HF-format model brings its `preprocessor_config.json` (if any); the authors' layout uses the defaults.
        """
        import torch

        from .models.viq.image_processing_viq import ViQImageProcessor
        from .models.viq.modeling_viq import ViQModel

        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}.")
        if is_offline(hub_kwargs):
            hub_kwargs["local_files_only"] = True
        name = DEFAULT_MODEL if model is None else os.fspath(model)
        try:
            model_id, size = resolve_model(None if model is None else name, size, **hub_kwargs)
            if size is None and not looks_like_path(model_id) and not os.path.isdir(model_id):
                _check_hub_files(model_id, ("config.json", "model.safetensors"), **hub_kwargs)
        except HubUnreachableError as error:
            raise ModelLoadError(f"cannot load model {name}: {one_line(error)}") from error
        device = resolve_device(device)
        try:
            viq = ViQModel.from_pretrained(model_id, viq_size=size, dtype=getattr(torch, dtype), **hub_kwargs)
        except Exception as error:  # hub errors, missing files, bad configs, damaged weights
            where = model_id + (f" (size {size})" if size else "")
            reason = hub_error_reason(error) or one_line(error)
            raise ModelLoadError(f"cannot load model {where}: {reason}") from error
        viq = viq.to(device).eval()
        overrides: dict[str, Any] = {"do_resize": do_resize}
        if max_pixels is not None:
            overrides["max_pixels"] = int(max_pixels)
        processor = None
        if size is None:  # HF format: the processor saved with the model, if any
            try:
                processor = ViQImageProcessor.from_pretrained(model_id, **overrides, **hub_kwargs)
            except (OSError, ValueError) as error:
                if "preprocessor_config.json" not in str(error):
                    raise ModelLoadError(
                        f"cannot load the image processor of {model_id}: {one_line(error)}"
                    ) from error
        if processor is None:
            processor = ViQImageProcessor(**overrides)
        return cls(viq, processor, model_id=model_id, viq_size=size)

    # ---- properties ---------------------------------------------------------------------------------------------
    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    @property
    def config(self):
        return self.model.config

    @property
    def codebook_size(self) -> int:
        return self.model.config.codebook_size

    def fed_size(self, height: int, width: int) -> tuple[int, int]:
        """The size `(height, width)` the processor feeds to the model for an input of this size, before padding."""
        if self.image_processor.do_resize:
            return self.image_processor.get_resized_size(height, width)
        return height, width

    def fed_image(self, array: np.ndarray) -> np.ndarray:
        """A `uint8` image as the model sees it (resized as the processor does, before normalisation and padding)."""
        height, width = self.fed_size(*array.shape[:2])
        if (height, width) == array.shape[:2]:
            return array
        resized = self.image_processor.resize(np.ascontiguousarray(array.transpose(2, 0, 1)), (height, width))
        return np.ascontiguousarray(resized.transpose(1, 2, 0))

    # ---- encoding -----------------------------------------------------------------------------------------------
    def encode_batch(self, images: Sequence[Any], names: Sequence[str] | None = None):
        """
        Encode images (paths, PIL images, arrays) in one packed call.

        Returns:
            `(codes, image_grid_hw)`: CPU int64 tensors, `(sum_i 4*h_i*w_i,)` and `(num_images, 2)`.

        Raises:
            `ValueError` naming the image at fault (by `names`, or its file name) when one cannot be processed.
        """
        try:
            inputs = self.image_processor(images=list(images), return_tensors="pt")
        except ValueError:
            names = list(names) if names is not None else [_name_of(image, i) for i, image in enumerate(images)]
            for name, image in zip(names, images):  # find the image at fault, to name it
                try:
                    self.image_processor(images=[image])
                except ValueError as single:
                    message = one_line(single).split(": ", 1)[-1] if one_line(single).startswith("Image 0") else (
                        one_line(single))  # fmt: skip
                    raise ValueError(f"{name}: {message}") from single
            raise
        # host tensors: `encode` validates them on the host and copies them without a device synchronisation
        out = self.model.encode(inputs["pixel_values"], inputs["image_grid_hw"], return_pooler_output=False)
        return out.image_codes.cpu(), out.image_grid_hw.cpu()

    def encode(self, images: Iterable[Any], names: Sequence[str] | None = None, batch_size: int = 4,
               progress: bool = True):  # fmt: skip
        """
        Encode images in packed batches to a [`ViQCodes`] that records, per image, its name, its own size and the size
        the model was fed (so that decoding can give the image back at either).

        Args:
            images: paths, PIL images or `uint8` arrays.
            names (`list[str]`, *optional*): one per image (default: file names, or `image <i>`).
            batch_size (`int`, *optional*, defaults to 4): images per packed model call.
            progress (`bool`, *optional*, defaults to `True`): show a progress bar (on a terminal).
        """
        import torch

        from .codes_io import ViQCodes

        images = list(images)
        names = list(names) if names is not None else [_name_of(image, i) for i, image in enumerate(images)]
        if len(names) != len(images):
            raise ValueError(f"Got {len(names)} names for {len(images)} images.")
        all_codes, all_grids, records = [], [], []
        with progress_bar(total=len(images), desc="encode", unit="img", disable=not progress) as bar:
            for start in range(0, len(images), max(1, batch_size)):
                batch, batch_names = images[start : start + batch_size], names[start : start + batch_size]
                codes, grid = self.encode_batch(batch, batch_names)
                all_codes.append(codes)
                all_grids.append(grid)
                for name, image in zip(batch_names, batch):
                    source_height, source_width = self._source_size(image)
                    height, width = self.fed_size(source_height, source_width)
                    records.append({"name": name, "height": int(height), "width": int(width),
                                    "source_height": source_height, "source_width": source_width})  # fmt: skip
                bar.update(len(batch))
        return ViQCodes(
            torch.cat(all_codes) if all_codes else torch.zeros(0, dtype=torch.int64),
            torch.cat(all_grids) if all_grids else torch.zeros((0, 2), dtype=torch.int64),
            list(self.config.fsq_levels),
            model=recorded_model_id(self.model_id) if self.model_id else None,
            viq_size=self.viq_size or self.config.preset,
            codes_per_patch=self.config.codes_per_patch,
            patch_size=self.config.vision_config.patch_size,
            images=records,
        )

    def _source_size(self, image: Any) -> tuple[int, int]:
        if not hasattr(image, "shape"):  # files, bytes, PIL images: the header is enough (EXIF orientation applied)
            return image_size(image)
        decoded = self.image_processor.decode_image(image)
        return int(decoded.shape[1]), int(decoded.shape[2])

    # ---- decoding -----------------------------------------------------------------------------------------------
    def decode_codes(self, codes, image_grid_hw, sizes: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
        """Codes of one or more images -> `uint8` RGB arrays `(H, W, 3)`, cropped to `sizes` where given."""
        decoded = self.model.decode(codes.to(self.device), image_grid_hw.to(self.device))
        arrays = self.image_processor.postprocess(decoded, return_tensors="np")
        if sizes is not None:
            arrays = [array[:height, :width] for array, (height, width) in zip(arrays, sizes)]
        return arrays

    def decode(self, codes, batch_size: int = 4, progress: bool = True, keep_model_size: bool = False
               ) -> list[np.ndarray]:  # fmt: skip
        """
        A [`ViQCodes`] -> one `uint8` RGB array per image, at each image's own size as recorded when it was encoded
        (the padding added by the processor is cropped, then the picture is resized back from the size the model saw).

        Args:
            codes ([`ViQCodes`]): the codes to decode.
            batch_size (`int`, *optional*, defaults to 4): images per decoder call.
            progress (`bool`, *optional*, defaults to `True`): show a progress bar (on a terminal).
            keep_model_size (`bool`, *optional*, defaults to `False`): return the size the model saw instead (the
                processor's resize, a multiple of the patch size in native mode), without resizing back.

        Codes files without recorded sizes come back at the size the model saw (older files record no source size)
        or, without any record, at their grid's size.

        Raises:
            `IncompatibleCodebookError` (a `ValueError`) when the codes were made with another codebook.
        """
        import torch

        codes.check_compatible(self.config)
        per_image = codes.split()
        patch = codes.patch_size
        records = codes.images or [{} for _ in range(codes.num_images)]
        arrays: list[np.ndarray] = []
        with progress_bar(total=codes.num_images, desc="decode", unit="img", disable=not progress) as bar:
            for batch in _batches(list(range(codes.num_images)), batch_size):
                sizes = []
                for index in batch:
                    grid_h, grid_w = codes.image_grid_hw[index].tolist()
                    height = min(int(records[index].get("height", grid_h * patch)), grid_h * patch)
                    width = min(int(records[index].get("width", grid_w * patch)), grid_w * patch)
                    sizes.append((height, width))
                batch_codes = torch.cat([per_image[index] for index in batch])
                decoded = self.decode_codes(batch_codes, codes.image_grid_hw[batch], sizes)
                for index, array in zip(batch, decoded):
                    source = codes.source_size(index)
                    arrays.append(array if keep_model_size or source is None else resize_rgb(array, *source))
                bar.update(len(batch))
        return arrays

    # ---- both ---------------------------------------------------------------------------------------------------
    def reconstruct(self, items: Iterable[Any], batch_size: int = 4, progress: bool = True, desc: str = "reconstruct",
                    total: int | None = None, keep_model_size: bool = False) -> Iterator[Reconstruction]:  # fmt: skip
        """
        Encode and decode images in packed batches. `items` is any iterable (read lazily) of paths, arrays, or
        `(name, path or uint8 array)` pairs. Yields [`Reconstruction`]s in input order, at each image's own size (the
        reconstruction resized back from the size the model saw), or with `keep_model_size=True` at the size the model
        saw (the original resized as the processor resizes it); `measured_at` says which.
        """
        if total is None and hasattr(items, "__len__"):
            total = len(items)

        def run(batch):
            arrays = [load_rgb(source) if isinstance(source, (str, os.PathLike)) else source for _, source in batch]
            codes, grid = self.encode_batch(arrays, [name for name, _ in batch])
            fed = [self.fed_image(array) for array in arrays]
            recon = self.decode_codes(codes, grid, [image.shape[:2] for image in fed])
            counts = (self.config.codes_per_patch * grid[:, 0] * grid[:, 1]).tolist()
            for (name, _), array, image, output, image_codes, hw in zip(
                batch, arrays, fed, recon, codes.split(counts), grid.tolist()
            ):
                source_size, fed_size = tuple(array.shape[:2]), tuple(image.shape[:2])
                if keep_model_size:
                    original, reconstruction, at = image, output, "model"
                else:
                    original, reconstruction, at = array, resize_rgb(output, *source_size), "source"
                yield Reconstruction(name, original, reconstruction, image_codes.numpy(), tuple(hw), source_size,
                                     fed_size=fed_size, measured_at=at)  # fmt: skip

        with progress_bar(total=total, desc=desc, unit="img", disable=not progress) as bar:
            batch: list[tuple[str, Any]] = []
            for index, item in enumerate(items):
                if isinstance(item, (str, os.PathLike)):
                    batch.append((Path(item).name, item))
                elif isinstance(item, tuple):
                    batch.append(item)
                else:
                    batch.append((f"image {index}", item))
                if len(batch) == max(1, batch_size):
                    yield from run(batch)
                    bar.update(len(batch))
                    batch = []
            if batch:
                yield from run(batch)
                bar.update(len(batch))


__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SIZE",
    "ModelLoadError",
    "MEASURED_AT",
    "Reconstruction",
    "ViQPipeline",
    "load_config",
    "looks_like_path",
    "reconstruction_numbers",
    "recorded_model_id",
    "resolve_device",
    "resolve_model",
]
