# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""REPA for ViQ decoder fine-tuning: align the latent head's preprocess layers with DINOv2 (paper section 4.4).

REPA (Yu et al., "Representation Alignment for Generation", 2024) projects a model's hidden states with a small MLP and
maximises their cosine similarity to the patch features of a frozen self-supervised encoder. Here the states are the
output of the latent head's preprocess layers (one per 16x16 patch) and the encoder is DINOv2, run on the image resized
so that its 14x14 patches form the same `h x w` grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Dinov2PatchFeatures(nn.Module):
    r"""
    Frozen patch features of a transformers `Dinov2Model` on a given patch grid.

    Args:
        model (`transformers.Dinov2Model`, or any module taking `pixel_values` and returning `last_hidden_state`
            `(B, prefix + h*w, dim)` with `config.patch_size` and `config.num_register_tokens`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.patch_size = int(model.config.patch_size)
        self.num_prefix_tokens = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        self.hidden_size = int(model.config.hidden_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True):  # frozen: always in eval mode
        return super().train(False)

    @classmethod
    def from_pretrained(cls, name_or_path: str, dtype: torch.dtype | None = None, **kwargs) -> "Dinov2PatchFeatures":
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(name_or_path, dtype=dtype, **kwargs))

    @torch.no_grad()
    def forward(self, images: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """`images` `(B, 3, H, W)` in `[-1, 1]` -> `(B, h * w, dim)` patch features on the `h x w` grid."""
        height, width = grid_hw
        dtype = next(self.model.parameters()).dtype
        pixels = (images.float() + 1.0) / 2.0
        pixels = F.interpolate(pixels, size=(height * self.patch_size, width * self.patch_size), mode="bicubic",
                               align_corners=False)  # fmt: skip
        pixels = ((pixels - self.mean) / self.std).to(dtype)
        hidden = self.model(pixel_values=pixels).last_hidden_state
        return hidden[:, self.num_prefix_tokens :]


class RepaProjector(nn.Module):
    """`Linear - SiLU - Linear - SiLU - Linear`: hidden states -> the target encoder's width (REPA's projector)."""

    def __init__(self, hidden_size: int, projector_dim: int, target_dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(hidden_size, projector_dim), nn.SiLU(), nn.Linear(projector_dim, projector_dim), nn.SiLU(),
            nn.Linear(projector_dim, target_dim),
        )  # fmt: skip

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layers(hidden_states)


__all__ = ["Dinov2PatchFeatures", "RepaProjector"]
