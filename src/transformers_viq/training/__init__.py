# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Training policy and pieces: what trains, LoRA/DoRA configs, collators, quantizer calibration.

The model classes only describe architectures; whether a part trains is `requires_grad`, set here by the training
scripts (`training/` at the repository root) or by the user. Submodules load on first use:

    from transformers_viq.training import freeze, language_model_lora_config, ViQCodesCollator
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import attach


_EXPORTS = {
    "calibrate_quantizer": "calibration",
    "freeze": "freezing",
    "trainable_summary": "freezing",
    "language_model_lora_config": "lora",
    "ViQCodesCollator": "collators",
}

if TYPE_CHECKING:
    from .calibration import calibrate_quantizer
    from .collators import ViQCodesCollator
    from .freezing import freeze, trainable_summary
    from .lora import language_model_lora_config


__getattr__, __dir__ = attach(__name__, _EXPORTS)


__all__ = [
    "ViQCodesCollator",
    "calibrate_quantizer",
    "freeze",
    "language_model_lora_config",
    "trainable_summary",
]
