# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Checks of packed images and codes, written once for the model, the processors, the codes file and extraction.

Every check raises a `ValueError` that names the argument, the image at fault and what was expected, with the same
wording wherever it runs. This module imports only torch, NumPy and the configuration's constants.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .configuration_viq import CODES_PER_PATCH


class IncompatibleCodebookError(ValueError):
    """Codes made with one codebook (FSQ levels, codes per patch) given to a model or dataset of another."""


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{name}` must be an integer tensor or array: {error}") from None


def _is_integer(tensor: torch.Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)


def check_grid(image_grid_hw, name: str = "image_grid_hw") -> list[tuple[int, int]]:
    """
    The patch grid of each image as a list of `(h, w)`.

    Accepts a tensor, array or nested list of shape `(num_images, 2)` (a single `[h, w]` is one image). Raises a
    `ValueError` for a missing grid, non-integers, another shape, or a side below 1.
    """
    if image_grid_hw is None:
        raise ValueError(f"`{name}` is required: the (h, w) patch grid of each image, shape (num_images, 2).")
    grid = _as_tensor(image_grid_hw, name)
    if not _is_integer(grid):
        raise ValueError(f"`{name}` must hold integers, got dtype {grid.dtype}.")
    if grid.ndim == 1 and grid.shape[0] == 2:
        grid = grid[None]
    if grid.ndim != 2 or grid.shape[-1] != 2 or grid.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape (num_images, 2), got {tuple(grid.shape)}.")
    pairs = [(int(h), int(w)) for h, w in grid.tolist()]
    for index, (height, width) in enumerate(pairs):
        if height < 1 or width < 1:
            raise ValueError(f"`{name}` of image {index} is {[height, width]}: both sides must be >= 1.")
    return pairs


def _image_of(position: int, counts: Sequence[int]) -> int:
    return int(np.searchsorted(np.cumsum(counts), position, side="right"))


def check_codes(
    image_codes,
    grid_hw: Sequence[tuple[int, int]],
    codes_per_patch: int = CODES_PER_PATCH,
    codebook_size: int | None = None,
    name: str = "image_codes",
    check_values: bool = True,
) -> torch.LongTensor:
    """
    Packed codes checked against their grids, returned as an int64 tensor (on the device they came on).

    Accepts any integer tensor (the `uint16` of a codes file included), a NumPy array or a list. Raises a
    `ValueError` naming the problem and the image for a non-integer dtype, a shape other than 1-D, a count that is not
    `codes_per_patch * h * w` per image, or (with `check_values`) a value outside `[0, codebook_size)` (only
    negatives when `codebook_size` is `None`). The value check reads the codes on the host: a device synchronisation
    for codes on a GPU, which a training forward leaves to the boundaries its data came through.
    """
    codes = _as_tensor(image_codes, name)
    if not _is_integer(codes):
        raise ValueError(f"`{name}` must be an integer tensor, got dtype {codes.dtype}.")
    codes = codes.to(torch.int64)  # unsigned codes (uint16 files) support no comparisons in torch
    if codes.ndim != 1:
        raise ValueError(
            f"`{name}` must be 1-D packed codes of shape (sum_i {codes_per_patch}*h_i*w_i,), got shape "
            f"{tuple(codes.shape)}."
        )
    counts = [codes_per_patch * h * w for h, w in grid_hw]
    total = codes.shape[0]
    if total != sum(counts):
        offset = 0
        for index, count in enumerate(counts):
            if offset + count > total:
                raise ValueError(
                    f"Image {index} (grid {list(grid_hw[index])}) needs {count} codes ({codes_per_patch} per patch) "
                    f"but only {total - offset} remain: got {total} codes for grids {[list(g) for g in grid_hw]}, "
                    f"which need {sum(counts)}."
                )
            offset += count
        raise ValueError(
            f"Got {total} codes for grids {[list(g) for g in grid_hw]}, which need {sum(counts)} ({codes_per_patch} "
            f"per patch); {total - sum(counts)} codes are left over."
        )
    if total and check_values:
        bad = codes < 0 if codebook_size is None else (codes < 0) | (codes >= codebook_size)
        if bool(bad.any()):
            position = int(bad.nonzero()[0, 0])
            value, image = int(codes[position]), _image_of(position, counts)
            if codebook_size is None:
                raise ValueError(f"Image {image} has negative code {value} (at packed position {position}).")
            raise ValueError(
                f"Image {image} has code {value} (at packed position {position}) outside [0, {codebook_size}): the "
                "codes were made with a different codebook, or are corrupt."
            )
    return codes


def pack_codes(
    per_image_codes: Sequence,
    grid_hw: Sequence[tuple[int, int]],
    codes_per_patch: int = CODES_PER_PATCH,
    codebook_size: int | None = None,
    name: str = "image_codes",
) -> torch.LongTensor:
    """One code sequence per image (e.g. the rows of a code dataset), checked one by one and packed."""
    if len(per_image_codes) != len(grid_hw):
        raise ValueError(f"Got codes for {len(per_image_codes)} images but {len(grid_hw)} grids in `image_grid_hw`.")
    packed = []
    for index, (codes, grid) in enumerate(zip(per_image_codes, grid_hw)):
        try:
            packed.append(check_codes(codes, [grid], codes_per_patch, codebook_size, name=f"{name}[{index}]"))
        except ValueError as error:
            raise ValueError(f"Image {index}: {str(error).removeprefix('Image 0 ')}") from None
    return torch.cat(packed) if packed else torch.zeros(0, dtype=torch.int64)


def check_pixels(pixel_values, grid_hw: Sequence[tuple[int, int]], patch_dim: int, check_values: bool = True) -> None:
    """Packed patches `(sum_i h_i*w_i, patch_dim)`: a float tensor of the right shape, matching the grids, and (with
    `check_values`, which reads the values on the host: a device synchronisation for a GPU tensor) finite."""
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
    if pixel_values.ndim != 2 or pixel_values.shape[-1] != patch_dim:
        raise ValueError(
            f"`pixel_values` must be packed patches of shape (total_patches, {patch_dim}), got "
            f"{tuple(pixel_values.shape)}. Use `ViQImageProcessor` to turn images into this layout."
        )
    if not pixel_values.is_floating_point():
        raise ValueError(f"`pixel_values` must be a float tensor, got dtype {pixel_values.dtype}.")
    counts = [h * w for h, w in grid_hw]
    if pixel_values.shape[0] != sum(counts):
        raise ValueError(
            f"`pixel_values` has {pixel_values.shape[0]} patches but `image_grid_hw` {[list(g) for g in grid_hw]} "
            f"describes {sum(counts)}."
        )
    if not check_values:
        return
    finite = torch.isfinite(pixel_values).all(dim=-1)
    if not bool(finite.all()):
        patch = int((~finite).nonzero()[0, 0])
        raise ValueError(
            f"`pixel_values` of image {_image_of(patch, counts)} hold NaN or infinite values (patch {patch})."
        )


def check_same_codebook(
    made_with_levels: Sequence[int],
    made_with_codes_per_patch: int,
    config,
    what: str,
    hint: str = "Decode them with the model that made them.",
) -> None:
    """
    Raise [`IncompatibleCodebookError`] unless codes made with `made_with_levels` fit a model with `config` (a
    `ViQConfig`, or anything with `fsq_levels` and `codes_per_patch`). `what` describes the codes (a file, a dataset).
    """
    levels = [int(level) for level in config.fsq_levels]
    made = [int(level) for level in made_with_levels]
    if made != levels or int(made_with_codes_per_patch) != int(config.codes_per_patch):
        raise IncompatibleCodebookError(
            f"{what} made with fsq_levels {made} ({int(np.prod(made))} codes, {made_with_codes_per_patch} per patch); "
            f"this model uses {levels} ({int(np.prod(levels))} codes, {config.codes_per_patch} per patch). {hint}"
        )


__all__ = [
    "IncompatibleCodebookError",
    "check_codes",
    "check_grid",
    "check_pixels",
    "check_same_codebook",
    "pack_codes",
]
