# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""A file format for ViQ codes: the codes of one or many images, their grids, and what produced them.

A codes file is a [safetensors](https://huggingface.co/docs/safetensors) file (no pickle, memory-mappable) holding

* `codes`: `uint16`, shape `(sum_i 4 * h_i * w_i,)` - the packed codes in the released model's order (patch-major,
  then the 4 sub-codes of a patch). Every released codebook (at most 64000 codes) fits in 16 bits.
* `image_grid_hw`: `int32`, shape `(num_images, 2)` - the patch grid of each image,

and, as string metadata under the key `"viq"`, a JSON object:

```json
{"format": "viq-codes", "version": 1, "model": "XuminYu/ViQ_weights", "viq_size": "16k",
 "fsq_levels": [8, 8, 8, 6, 5], "codebook_size": 15360, "codes_per_patch": 4, "patch_size": 16,
 "images": [{"name": "cat.jpg", "height": 448, "width": 304, "source_height": 451, "source_width": 300}, ...]}
```

`images` records each image's name, the size the processor fed to the model (`height`, `width`: before padding to
the patch grid) and the image's own size (`source_height`, `source_width`), so a decoded image can be cropped back to
what the model saw and resized back to what the user gave. Files written before the source size was recorded (same
format version) still load; they decode at the size the model saw. Round trips are exact; decoding codes produced
with another codebook is refused (`ViQCodes.check_compatible`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .file_utils import atomic_path
from .models.viq.configuration_viq import CODES_PER_PATCH
from .models.viq.validation_viq import check_codes, check_grid, check_same_codebook


FORMAT_NAME = "viq-codes"
FORMAT_VERSION = 1


@dataclass
class ViQCodes:
    """
    Codes of one or many images with their provenance.

    Args:
        codes (`torch.LongTensor` of shape `(sum_i 4 * h_i * w_i,)`): packed codes.
        image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`): patch grid of each image.
        fsq_levels (`list[int]`): levels of the codebook that produced the codes.
        model (`str`, *optional*): id or path of the model that produced them.
        viq_size (`str`, *optional*): released size name (`"16k"`, ...) if the levels are a preset.
        codes_per_patch (`int`, *optional*, defaults to 4), patch_size (`int`, *optional*, defaults to 16).
        images (`list[dict]`, *optional*): per image `{"name", "height", "width", "source_height", "source_width"}`
            (`height`/`width`: the size fed to the model before padding; `source_*`: the image's own size).
    """

    codes: torch.Tensor
    image_grid_hw: torch.Tensor
    fsq_levels: list[int]
    model: str | None = None
    viq_size: str | None = None
    codes_per_patch: int = CODES_PER_PATCH
    patch_size: int = 16
    images: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.fsq_levels = [int(level) for level in self.fsq_levels]
        grid_hw = check_grid(self.image_grid_hw)
        self.image_grid_hw = torch.tensor(grid_hw, dtype=torch.int64).reshape(-1, 2)
        codes = self.codes.detach().cpu() if torch.is_tensor(self.codes) else self.codes
        self.codes = check_codes(codes, grid_hw, self.codes_per_patch, self.codebook_size)
        if self.images and len(self.images) != len(self.image_grid_hw):
            raise ValueError(f"{len(self.images)} image records for {len(self.image_grid_hw)} grids.")
        for index, record in enumerate(self.images):
            for key in ("height", "width", "source_height", "source_width"):
                value = record.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                    raise ValueError(f"Image record {index}: `{key}` must be a positive integer, got {value!r}.")

    @property
    def codebook_size(self) -> int:
        return int(np.prod(self.fsq_levels))

    @property
    def num_images(self) -> int:
        return len(self.image_grid_hw)

    def source_size(self, index: int) -> tuple[int, int] | None:
        """`(height, width)` of image `index` as the user gave it, or `None` if the file does not record it."""
        record = self.images[index] if index < len(self.images) else {}
        if "source_height" not in record or "source_width" not in record:
            return None
        return int(record["source_height"]), int(record["source_width"])

    def split(self) -> list[torch.Tensor]:
        """The codes of each image, `(4 * h_i * w_i,)` each."""
        counts = (self.codes_per_patch * self.image_grid_hw[:, 0] * self.image_grid_hw[:, 1]).tolist()
        return list(self.codes.split(counts))

    def check_compatible(self, config) -> None:
        """Raise an `IncompatibleCodebookError` (a `ValueError`) unless a model with `config` can decode them."""
        check_same_codebook(
            self.fsq_levels,
            self.codes_per_patch,
            config,
            what=f"These codes ({self.viq_size or 'custom levels'}, model {self.model!r}) were",
        )

    # ---- file I/O ---------------------------------------------------------------------------------------------
    def metadata(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "model": self.model,
            "viq_size": self.viq_size,
            "fsq_levels": self.fsq_levels,
            "codebook_size": self.codebook_size,
            "codes_per_patch": self.codes_per_patch,
            "patch_size": self.patch_size,
            "images": self.images,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write a codes file (safetensors), atomically."""
        from safetensors.numpy import save_file

        if self.codebook_size > 2**16:
            raise ValueError(f"A codebook of {self.codebook_size} codes does not fit the file's uint16 codes.")
        arrays = {
            "codes": self.codes.numpy().astype(np.uint16),
            "image_grid_hw": self.image_grid_hw.numpy().astype(np.int32),
        }
        with atomic_path(path) as temporary:  # a killed run never leaves half a file
            save_file(arrays, temporary, metadata={"viq": json.dumps(self.metadata())})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ViQCodes":
        """Read a codes file; a file that is not one raises a `ValueError` saying so."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as handle:
                raw = (handle.metadata() or {}).get("viq")
                arrays = {key: handle.get_tensor(key) for key in handle.keys()}
        except FileNotFoundError:
            raise
        except Exception as error:  # safetensors raises its own error types for foreign files
            raise ValueError(f"{path} is not a ViQ codes file: {error}") from None
        if raw is None or set(arrays) != {"codes", "image_grid_hw"}:
            raise ValueError(f"{path} is a safetensors file but not a ViQ codes file (no 'viq' metadata).")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: its 'viq' metadata is not JSON ({error}).") from None
        if meta.get("format") != FORMAT_NAME:
            raise ValueError(f"{path}: unknown format {meta.get('format')!r}.")
        if int(meta.get("version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{path} has codes-file version {meta['version']}; this package reads {FORMAT_VERSION}.")
        if not isinstance(meta.get("fsq_levels"), list):
            raise ValueError(f"{path}: the codes file does not record the `fsq_levels` that produced it.")
        return cls(
            codes=torch.from_numpy(arrays["codes"].astype(np.int64)),
            image_grid_hw=torch.from_numpy(arrays["image_grid_hw"].astype(np.int64)),
            fsq_levels=meta["fsq_levels"],
            model=meta.get("model"),
            viq_size=meta.get("viq_size"),
            codes_per_patch=int(meta.get("codes_per_patch", CODES_PER_PATCH)),
            patch_size=int(meta.get("patch_size", 16)),
            images=list(meta.get("images") or []),
        )


__all__ = ["ViQCodes"]
