# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Data-dependent initialisation of a fresh FSQ projection."""

from __future__ import annotations

import torch


@torch.no_grad()
def calibrate_quantizer(model, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor, scale: float = 1.5):
    r"""
    Rescale and shift `model.quantizer.project_in` so that, on the given images, each pre-quantization dimension is
    centred with standard deviation `scale`, i.e. spread over the FSQ levels instead of saturating them.

    Useful before training a fresh quantizer head on a trained trunk, and to make a random smoke model produce varied
    codes.

    Args:
        model ([`ViQModel`]): the tokenizer (changed in place, and returned).
        pixel_values (`torch.FloatTensor` of shape `(sum_i h_i * w_i, 768)`): packed patches of a few images.
        image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`): their patch grids.
        scale (`float`, *optional*, defaults to 1.5): target standard deviation of every FSQ input.
    """
    if scale <= 0:
        raise ValueError(f"`scale` must be positive, got {scale}.")
    values = model(pixel_values, image_grid_hw, return_pooler_output=False).quantizer_inputs.float()
    if values.shape[0] < 2:
        raise ValueError("calibrate_quantizer needs at least two sub-tokens (a patch gives four) to measure a spread.")
    mean, std = values.mean(0), values.std(0).clamp_min(1e-6)
    layer = model.quantizer.project_in
    factor = (scale / std).to(layer.weight.dtype)
    layer.weight.mul_(factor.unsqueeze(-1))
    layer.bias.copy_((layer.bias - mean.to(layer.bias.dtype)) * factor)
    return model


__all__ = ["calibrate_quantizer"]
