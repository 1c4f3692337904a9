# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The patch discriminator of ViQ decoder fine-tuning (the GAN term of the paper's Eq. 8).

A PatchGAN (Isola et al., 2017, as used by VQGAN and most VAE decoders): strided 4x4 convolutions that score
overlapping patches of an image as real or fake; the generator is trained against the mean score.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    r"""
    Args:
        in_channels (`int`, *optional*, defaults to 3): channels of the images.
        channels (`int`, *optional*, defaults to 64): width of the first layer; doubled per layer up to 8x.
        num_layers (`int`, *optional*, defaults to 3): strided layers after the first.
        norm (`str`, *optional*, defaults to `"batch"`): `"batch"` (the PatchGAN default), `"group"` (one group per
            layer, independent of the batch) or `"none"`.

    Input `(B, in_channels, H, W)` in `[-1, 1]`; output `(B, 1, H', W')` logits (one per patch).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if norm not in ("batch", "group", "none"):
            raise ValueError(f"norm must be 'batch', 'group' or 'none', got {norm!r}.")
        if num_layers < 1 or channels < 1:
            raise ValueError(f"Need num_layers >= 1 and channels >= 1, got {num_layers} and {channels}.")

        def normalization(width: int) -> nn.Module:
            if norm == "batch":
                return nn.BatchNorm2d(width)
            if norm == "group":
                return nn.GroupNorm(1, width)
            return nn.Identity()

        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for index in range(1, num_layers + 1):
            out_width = channels * min(2**index, 8)
            stride = 2 if index < num_layers else 1
            layers += [nn.Conv2d(width, out_width, 4, stride, 1, bias=norm == "none"), normalization(out_width),
                       nn.LeakyReLU(0.2)]  # fmt: skip
            width = out_width
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


__all__ = ["PatchDiscriminator"]
