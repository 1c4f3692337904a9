# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Finite scalar quantization (FSQ) with the exact numerics of the released ViQ checkpoints.

FSQ is from Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple" (2023); the bounded-tanh form with an
offset for even level counts follows the paper's appendix A.1. ViQ uses it with these specifics (those of the
authors' released code): the bound, the rounding and the index arithmetic always run in float32, rounding is
round-half-to-even (`torch.round`), and the first dimension is the least-significant digit of an index.

This module is a leaf: plain PyTorch (and the names of the proximal constraints, from the configuration), explicit
arguments, no I/O, no distributed calls, no metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .configuration_viq import PROXIMAL_CONSTRAINTS


def round_ste(values: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity gradient in the backward pass (straight-through)."""
    return values + (torch.round(values) - values).detach()


def implicit_codebook(levels: Sequence[int]) -> torch.Tensor:
    """
    All codes of an FSQ codebook in index order.

    Returns:
        `torch.FloatTensor` of shape `(prod(levels), len(levels))`: row `i` holds the code of index `i`, each value in
        `[-1, 1]` (`(digit - L // 2) / (L // 2)`), float32.
    """
    levels_t = torch.tensor(list(levels), dtype=torch.int64)
    basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), levels_t[:-1]]), dim=0)
    indices = torch.arange(math.prod(levels), dtype=torch.int64).unsqueeze(-1)
    digits = (indices // basis) % levels_t
    half = (levels_t // 2).to(torch.float32)
    return (digits.to(torch.float32) - half) / half


class FiniteScalarQuantizer(nn.Module):
    r"""
    Parameter-free FSQ over the last dimension of its input.

    Args:
        levels (`Sequence[int]`):
            Number of levels of each dimension (each >= 2).
        eps (`float`, *optional*, defaults to 1e-3):
            Slack of the bound: `half_l = (L - 1) * (1 + eps) / 2`.

    Buffers (not saved in state dicts; re-created by `ViQPreTrainedModel._init_weights` after loading):
        `levels` (int64, `(D,)`), `basis` (int64, `(D,)`, `cumprod([1] + levels[:-1])`) and `codebook`
        (float32, `(K, D)`, the implicit codebook).
    """

    def __init__(self, levels: Sequence[int], eps: float = 1e-3):
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be integers >= 2, got {levels}.")
        self.eps = float(eps)
        self.level_list = levels  # plain Python copy: buffers can be rebuilt even after meta-device construction
        self.codebook_dim = len(levels)
        self.codebook_size = math.prod(levels)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.int64), persistent=False)
        self.register_buffer("basis", self._basis(levels), persistent=False)
        self.register_buffer("codebook", implicit_codebook(levels), persistent=False)

    @staticmethod
    def _basis(levels: Sequence[int]) -> torch.Tensor:
        return torch.cumprod(torch.tensor([1] + list(levels[:-1]), dtype=torch.int64), dim=0)

    # ---- the three transforms --------------------------------------------------------------------------------
    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """
        `tanh(z + atanh(offset / half_l)) * half_l - offset` per dimension, in float32, where
        `half_l = (L - 1) * (1 + eps) / 2` and `offset` is 0.5 for even `L`, else 0.

        For even `L` the range is asymmetric: the rounded values are `-L/2 .. L/2 - 1`.
        """
        z = z.float()
        levels = self.levels.to(device=z.device)
        half_l = (levels - 1) * (1 + self.eps) / 2  # float32: int64 tensor times a Python float
        offset = torch.where(levels % 2 == 0, 0.5, 0.0).to(torch.float32)
        shift = (offset / half_l).atanh()
        return (z + shift).tanh() * half_l - offset

    @torch.no_grad()
    def saturation(self, z: torch.Tensor, threshold: float = 0.99) -> torch.Tensor:
        """
        Share of the values of `z` `(..., D)` whose bounded value lies beyond `threshold` of the bound
        (`|tanh(z + shift)| > threshold`): there `tanh` passes almost no gradient back, and a dimension that sits there
        keeps its outermost level whatever its input does. A float32 scalar tensor on `z`'s device (no
        synchronisation).
        """
        levels = self.levels.to(device=z.device)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0).to(torch.float32)
        return ((z.detach().float() + (offset / half_l).atanh()).tanh().abs() > threshold).float().mean()

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """
        Quantize to codes in `[-1, 1]` (float32) with a straight-through gradient.

        Args:
            z (`torch.Tensor` of shape `(..., D)`): any float dtype; computed in float32.
        """
        half_width = (self.levels // 2).to(device=z.device, dtype=torch.float32)
        return round_ste(self.bound(z)) / half_width

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes in `[-1, 1]` `(..., D)` -> int64 indices `(...)` in `[0, prod(levels))`."""
        half_width = (self.levels // 2).to(device=codes.device)
        digits = torch.round(codes.float() * half_width).to(torch.int64) + half_width
        return (digits * self.basis.to(codes.device)).sum(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """int indices `(...)` -> float32 codes `(..., D)` (a lookup in the implicit codebook)."""
        return self.codebook.float()[indices.long()]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            z (`torch.Tensor` of shape `(..., D)`): pre-quantization values (any float dtype).

        Returns:
            `tuple(codes, indices)`: float32 codes `(..., D)` in `[-1, 1]` (straight-through gradient to `z`) and int64
            indices `(...)`.

        One pass to float32 (the bound), then the indices straight from the rounded digits (no second rounding of the
        codes); the straight-through form only where a gradient is wanted (its values equal `torch.round`'s).
        """
        if z.shape[-1] != self.codebook_dim:
            raise ValueError(f"FSQ expects a last dimension of {self.codebook_dim}, got shape {tuple(z.shape)}.")
        bounded = self.bound(z)
        rounded = round_ste(bounded) if bounded.requires_grad else torch.round(bounded)
        half_width = (self.levels // 2).to(device=z.device)
        digits = rounded.detach().to(torch.int64) + half_width  # in [0, L - 1]
        indices = (digits * self.basis.to(z.device)).sum(dim=-1)
        return rounded / half_width.to(torch.float32), indices


class ProximalProjection(nn.Module):
    r"""
    The Stage 2-1 stand-in for the quantizer (the paper's "proximal representation", Eq. 3): a parameter-free
    constraint on the bottleneck vectors, with the same `(codes, indices)` interface as [`FiniteScalarQuantizer`]
    (there are no indices: `None`).

    Args:
        constraint (`str`):
            `"linf"`: `x / max(|x|)` over the last dimension, i.e. onto the surface of the unit hypercube
            (`||x||_inf = 1`; the paper's choice). `"l2"`: onto the unit sphere. `"tanh"`: `tanh(x)`. `"none"`: no
            constraint.
        eps (`float`, *optional*, defaults to 1e-6):
            Floor of the norm in `"linf"` and `"l2"`.
    """

    def __init__(self, constraint: str, eps: float = 1e-6):
        super().__init__()
        if constraint not in PROXIMAL_CONSTRAINTS:
            raise ValueError(f"Unknown proximal constraint {constraint!r}; expected one of {PROXIMAL_CONSTRAINTS}.")
        self.constraint = constraint
        self.eps = eps

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        """`z` `(..., D)` -> `(projected z, None)`, in the dtype of `z` (differentiable)."""
        if self.constraint == "linf":
            return z / z.abs().amax(dim=-1, keepdim=True).clamp_min(self.eps), None
        if self.constraint == "l2":
            return torch.nn.functional.normalize(z, dim=-1, eps=self.eps), None
        if self.constraint == "tanh":
            return z.tanh(), None
        return z, None


__all__ = ["FiniteScalarQuantizer", "ProximalProjection", "implicit_codebook", "round_ste"]
