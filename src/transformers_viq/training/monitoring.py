# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""What ViQ training shows besides its losses: codebook usage and code stability, computed from returned codes.

The quantizer itself keeps no statistics (it is a pure leaf); the trainer feeds the codes each step returns to a
[`CodebookUsage`] and measures [`code_stability`] every few steps, and logs both through `report_to`.
"""

from __future__ import annotations

import math

import torch


class CodebookUsage:
    r"""
    Code counts over a logging interval: the fraction of the codebook used and the perplexity of the code distribution
    (`exp` of its entropy; equal to the codebook size when every code is equally frequent).

    Args:
        codebook_size (`int`): number of codes.
    """

    def __init__(self, codebook_size: int):
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be positive, got {codebook_size}.")
        self.codebook_size = codebook_size
        self.counts = torch.zeros(codebook_size, dtype=torch.float64)

    def update(self, codes: torch.Tensor) -> None:
        """
        Count the codes of a step (any shape, integer values in `[0, codebook_size)`), on their device: no host-device
        synchronisation per step (the range is checked for host tensors; on a GPU an index out of range is a device
        error, and FSQ indices never are).
        """
        codes = codes.detach().reshape(-1).to(torch.int64)
        if codes.numel() == 0:
            return
        if codes.device.type == "cpu" and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"Codes outside [0, {self.codebook_size}): {int(codes.min())}..{int(codes.max())}.")
        if self.counts.device != codes.device:
            self.counts = self.counts.to(codes.device)
        self.counts.index_add_(0, codes, torch.ones_like(codes, dtype=torch.float64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())  # read at logging time only

    def compute(self, counts: torch.Tensor | None = None) -> dict[str, float]:
        """`codebook_usage` (fraction of codes seen) and `codebook_perplexity` of `counts` (default: the tracker's)."""
        counts = self.counts if counts is None else counts.to(torch.float64).cpu()
        total = float(counts.sum())
        if total == 0:
            return {}
        probabilities = counts[counts > 0] / total
        entropy = float(-(probabilities * probabilities.log()).sum())
        usage = float((counts > 0).sum()) / self.codebook_size
        return {"codebook_usage": usage, "codebook_perplexity": math.exp(entropy)}

    def reset(self) -> None:
        self.counts.zero_()


@torch.no_grad()
def code_stability(model, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor, codes: torch.Tensor,
                   noise_std: float = 0.01, generator: torch.Generator | None = None) -> float:  # fmt: skip
    """
    Fraction of codes unchanged when Gaussian noise of std `noise_std` is added to the (normalised) pixels, as the
    released training code logged it (noise 0.01).

    Args:
        model ([`ViQModel`]): the tokenizer (its `forward` is called without gradient).
        pixel_values, image_grid_hw: the step's packed images.
        codes (`torch.Tensor`): the codes the model gave for the clean images.
    """
    noise = torch.randn(pixel_values.shape, generator=generator, device="cpu").to(pixel_values.device)
    noisy = model(pixel_values + noise_std * noise.to(pixel_values.dtype), image_grid_hw, return_pooler_output=False)
    return float((noisy.image_codes == codes.to(noisy.image_codes.device)).float().mean())


__all__ = ["CodebookUsage", "code_stability"]
