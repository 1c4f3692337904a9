# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Data-dependent initialisation of a fresh FSQ projection, with a bounded gain."""

from __future__ import annotations

import torch

from ..logging_utils import get_logger


logger = get_logger(__name__)


@torch.no_grad()
def calibrate_quantizer(model, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor, scale: float = 1.0,
                        max_gain: float = 4.0):  # fmt: skip
    r"""
    Rescale and shift `model.quantizer.project_in` so that, on the given images, each pre-quantization dimension is
    centred (median) with a robust spread (interquartile range / 1.349, the standard deviation of a normal
    distribution with that IQR) of `scale`, i.e. spread over the FSQ levels instead of sitting on one of them.

    The gain of each dimension is clipped to `[1 / max_gain, max_gain]`: whatever the gain, it also multiplies every
    later change of the layers before `project_in`, and an unbounded one (1e4 on near-constant inputs) turns the first
    optimizer steps into a jump of all values onto one side of the bound, where `tanh` passes no gradient (a collapse
    to one code). A clipped gain is logged: inputs that narrow are a problem of the model's scale, not something to
    calibrate away. The released recipe has no such step; with the width-scaled initialisation of [`ViQModel`] the
    FSQ inputs start at order one and the gain stays near 1.

    Args:
        model ([`ViQModel`]): the tokenizer (changed in place, and returned).
        pixel_values (`torch.FloatTensor` of shape `(sum_i h_i * w_i, 768)`): packed patches of a few images.
        image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`): their patch grids.
        scale (`float`, *optional*, defaults to 1.0): target robust spread of every FSQ input.
        max_gain (`float`, *optional*, defaults to 4.0): bound of the per-dimension gain (and of its inverse).

    Returns:
        The model; the gains applied are in `model.quantizer.calibration_gain` (a float tensor, one per dimension).
    """
    if scale <= 0:
        raise ValueError(f"`scale` must be positive, got {scale}.")
    if max_gain < 1:
        raise ValueError(f"`max_gain` must be >= 1, got {max_gain}.")
    values = model(pixel_values, image_grid_hw, return_pooler_output=False).quantizer_inputs.float()
    if values.shape[0] < 4:
        raise ValueError("calibrate_quantizer needs at least four sub-tokens (one patch gives four) to measure a "
                         "spread.")  # fmt: skip
    centre = values.median(dim=0).values
    quartiles = torch.quantile(values, torch.tensor([0.25, 0.75], device=values.device), dim=0)
    spread = (quartiles[1] - quartiles[0]) / 1.349
    wanted = scale / spread.clamp_min(torch.finfo(torch.float32).tiny)
    gain = wanted.clamp(1 / max_gain, max_gain)
    if bool((gain != wanted).any()):
        logger.warning(f"calibrate_quantizer: the FSQ inputs' spread {spread.tolist()} would need gains "
                       f"{wanted.tolist()}; clipped to [{1 / max_gain:g}, {max_gain:g}]. Inputs this narrow or wide "
                       "point at the scale of the layers before the quantizer.")  # fmt: skip
    layer = model.quantizer.project_in
    factor = gain.to(layer.weight.dtype)
    layer.weight.mul_(factor.unsqueeze(-1))
    layer.bias.copy_((layer.bias - centre.to(layer.bias.dtype)) * factor)
    model.quantizer.calibration_gain = gain.cpu()
    return model


__all__ = ["calibrate_quantizer"]
