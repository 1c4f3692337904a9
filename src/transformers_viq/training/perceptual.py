# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""LPIPS, the learned perceptual distance of Zhang et al. (2018), for ViQ decoder fine-tuning.

LPIPS compares two images through the feature maps of a fixed network: each map is normalised to unit length along
channels, the squared differences are weighted per channel by a learned non-negative `1x1` layer, averaged over space
and summed over layers. The backbone is injected: [`VGG16Features`] reproduces torchvision's `vgg16().features` (same
parameter names, so torchvision's `vgg16-397923af.pth` loads into it, without torchvision), and [`ConvFeatures`] is a
small configurable stack for tests and experiments.

Weights are loaded by the user, never downloaded: [`LPIPS.from_vgg16_files`] builds the standard VGG LPIPS from
torchvision's VGG16 file and the LPIPS linear layers (`lpips` package, `weights/v0.1/vgg.pth`); [`LPIPS.save`] writes
one safetensors file that [`LPIPS.from_file`] reads back (the decoder recipe's `lpips_path`).
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from torch import nn


# Input scaling of the LPIPS networks (images in [-1, 1] -> the backbone's ImageNet statistics).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# torchvision vgg16().features: index of each layer, with LPIPS taps after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG16_TAPS = (3, 8, 15, 22, 29)


class VGG16Features(nn.Module):
    """torchvision's VGG16 `features` (same module indices: `features.0.weight`, ...) returning the 5 LPIPS taps."""

    channels = [64, 128, 256, 512, 512]

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_channels = item
        self.features = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            images = layer(images)
            if index in _VGG16_TAPS:
                outputs.append(images)
        return outputs


class ConvFeatures(nn.Module):
    """A small stack: per stage a 3x3 conv + ReLU (after a 2x average pool from the second stage on); one tap each."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.channels = list(channels)
        stages, in_channels = [], 3
        for out_channels in self.channels:
            stages.append(nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, stage in enumerate(self.stages):
            if index:
                images = F.avg_pool2d(images, 2)
            images = stage(images)
            outputs.append(images)
        return outputs


def _unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    r"""
    Learned perceptual image patch similarity.

    Args:
        backbone (`nn.Module`): maps `(B, 3, H, W)` images to a list of feature maps (e.g. [`VGG16Features`]).
        channels (`list[int]`): channels of each of those maps.
        backbone_name (`str`, *optional*, defaults to `"conv"`): `"vgg16"` or `"conv"` (what [`LPIPS.save`] records to
            rebuild the backbone).

    The network is frozen at construction (`requires_grad=False`, eval mode): it is a loss, gradients reach the images
    only.
    """

    def __init__(self, backbone: nn.Module, channels: list[int], backbone_name: str = "conv"):
        super().__init__()
        self.backbone = backbone
        self.channels = list(channels)
        self.backbone_name = backbone_name
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.channels])
        for lin in self.lins:
            nn.init.constant_(lin.weight, 1.0 / lin.weight.shape[1])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # a fixed loss network: always in eval mode
        return super().train(False)

    def forward(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images, references (`torch.Tensor` of shape `(B, 3, H, W)`): values in `[-1, 1]`.

        Returns:
            `torch.Tensor` of shape `(B,)`: the distance of each pair (0 for identical images).
        """
        if images.shape != references.shape or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (B, 3, H, W) batches of one shape, got {tuple(images.shape)} and "
                             f"{tuple(references.shape)}.")  # fmt: skip
        dtype = self.lins[0].weight.dtype
        both = torch.cat([images, references]).to(dtype)
        both = (both - self.shift.to(dtype)) / self.scale.to(dtype)
        features = self.backbone(both)
        if len(features) != len(self.lins):
            raise ValueError(f"The LPIPS backbone gave {len(features)} feature maps for {len(self.lins)} layers.")
        total = 0.0
        for lin, feature in zip(self.lins, features):
            first, second = _unit_normalize(feature).chunk(2)
            total = total + lin((first - second).pow(2)).mean(dim=(1, 2, 3))
        return total

    # ---- files --------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file: the backbone and linear layers, and what rebuilds them (in its metadata)."""
        from safetensors.torch import save_file

        from ..file_utils import atomic_path

        state = {name: tensor.contiguous() for name, tensor in self.state_dict().items()}
        metadata = {"format": "viq-lpips", "backbone": self.backbone_name, "channels": json.dumps(self.channels)}
        with atomic_path(path) as tmp:
            save_file(state, tmp, metadata=metadata)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "LPIPS":
        """Read a file written by [`LPIPS.save`]."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No LPIPS file at {path} (make one with LPIPS.from_vgg16_files(...).save(path)).")
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != "viq-lpips":
            raise ValueError(f"{path} is not an LPIPS file written by LPIPS.save (metadata {metadata}).")
        channels = json.loads(metadata["channels"])
        name = metadata["backbone"]
        if name == "vgg16":
            backbone = VGG16Features()
        elif name == "conv":
            backbone = ConvFeatures(channels)
        else:
            raise ValueError(f"{path}: unknown LPIPS backbone {name!r}.")
        model = cls(backbone, channels, backbone_name=name)
        model.load_state_dict(load_file(path), strict=True)
        return model

    @classmethod
    def from_vgg16_files(cls, vgg16_path: str | os.PathLike, lin_path: str | os.PathLike) -> "LPIPS":
        """
        The standard VGG LPIPS from torchvision's ImageNet VGG16 weights (`vgg16-397923af.pth`; its `classifier.*`
        is not used) and the LPIPS linear layers (`vgg.pth` of the `lpips` package: `lin0.model.1.weight`, ...).
        """
        from ..original_checkpoint import load_state_dict_file

        model = cls(VGG16Features(), VGG16Features.channels, backbone_name="vgg16")
        vgg = {k: v for k, v in load_state_dict_file(vgg16_path).items() if k.startswith("features.")}
        model.backbone.load_state_dict(vgg, strict=True)
        lins = load_state_dict_file(lin_path)
        expected = {f"lin{i}.model.1.weight" for i in range(len(model.lins))}
        if set(lins) != expected:
            raise ValueError(f"{os.fspath(lin_path)} holds {sorted(lins)}, expected {sorted(expected)}.")
        for index, lin in enumerate(model.lins):
            lin.weight.data.copy_(lins[f"lin{index}.model.1.weight"])
        return model


__all__ = ["LPIPS", "ConvFeatures", "VGG16Features"]
