# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Training policy and pieces: what trains, LoRA/DoRA configs, collators, quantizer calibration.

The model classes only describe architectures; whether a part trains is `requires_grad`, set here by the training
scripts (`training/` at the repository root) or by the user. Submodules load on first use:

    from transformers_viq.training import freeze, language_model_lora_config, ViQCodesCollator
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


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


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
