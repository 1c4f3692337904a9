"""Shared fixtures: tiny ViQ configs and models that run in milliseconds on CPU."""

from __future__ import annotations

import os

import pytest
import torch

from transformers_viq import ViQConfig, ViQModel


TINY_VAE = {
    "base_dim": 8,
    "z_dim": 4,
    "dim_mult": [1, 2, 2, 2],
    "num_res_blocks": 1,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}


def tiny_config(levels=(8, 8, 8, 6, 5), **overrides) -> ViQConfig:
    """A ViQ with every stage of the real one, at widths of 32 (patch size stays 16: the processor's default)."""
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "patch_size": 16,
        "position_embedding_size": 8,
    }
    vision.update(overrides.pop("vision_config", {}))
    kwargs = {
        "vision_config": vision,
        "fsq_levels": list(levels),
        "quantizer_attention_dim": 16,
        "latent_norm_groups": 4,
        "vae_config": dict(TINY_VAE),
    }
    kwargs.update(overrides)
    return ViQConfig(**kwargs)


def spread_weights(model: ViQModel, seed: int = 0) -> ViQModel:
    """Give a fresh tiny model weights whose codes vary from patch to patch (a 0.02-std init saturates FSQ)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("vae."):
                continue
            if param.ndim >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
            elif "layer_norm" in name or "layernorm" in name or name.endswith("affine_weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    return model


def make_tiny_model(levels=(8, 8, 8, 6, 5), seed: int = 0, **overrides) -> ViQModel:
    """A tiny ViQ whose codes vary from patch to patch on natural and random images."""
    import numpy as np

    from transformers_viq import ViQImageProcessor

    torch.manual_seed(seed)
    model = spread_weights(ViQModel(tiny_config(levels=levels, **overrides)), seed=seed).eval()
    rng = np.random.default_rng(1234)
    smooth = np.kron(rng.integers(0, 256, size=(6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    calibration = [rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8), smooth]
    inputs = ViQImageProcessor(do_resize=False)(images=calibration, return_tensors="pt")
    return model.calibrate_quantizer(inputs["pixel_values"], inputs["image_grid_hw"])


@pytest.fixture
def tiny_model() -> ViQModel:
    return make_tiny_model()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW", "0") not in ("1", "true", "yes"):
        skip = pytest.mark.skip(reason="slow: full-size check, set RUN_SLOW=1 to run")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
