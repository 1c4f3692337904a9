"""Shared fixtures (the tiny models themselves come from `transformers_viq.testing`) and the `slow` marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from transformers_viq.testing import TINY_VAE, make_tiny_model
from transformers_viq.testing.reference_checkpoint import make_reference_state_dict


@pytest.fixture
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="module")
def authors_layout(tmp_path_factory) -> Path:
    """A folder in the authors' layout holding a tiny 16k checkpoint (widths of 32, 2 layers)."""
    folder = tmp_path_factory.mktemp("authors")
    checkpoint = folder / "ViQ" / "converted_16k" / "model_viq_fsq_16k.pth"
    checkpoint.parent.mkdir(parents=True)
    torch.save(make_reference_state_dict([8, 8, 8, 6, 5], seed=1, num_layers=2, hidden_size=32, mlp_ratio=2,
                                         fsq_width=16, pos_grid=8, vae_config=TINY_VAE), checkpoint)  # fmt: skip
    return folder


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW", "0") not in ("1", "true", "yes"):
        skip = pytest.mark.skip(reason="slow: set RUN_SLOW=1 to run")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
