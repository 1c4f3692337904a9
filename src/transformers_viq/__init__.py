# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""transformers-viq: the ViQ visual tokenizer as a Hugging Face transformers model.

Importing the package registers ViQ with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoImageProcessor`).
"""

from .codes_io import ViQCodes
from .configuration_viq import FSQ_LEVEL_PRESETS, ViQConfig, ViQVisionConfig
from .fsq import FiniteScalarQuantizer
from .image_processing_viq import ViQImageProcessor
from .modeling_viq import ViQEncoderOutput, ViQModel, ViQPreTrainedModel


__version__ = "0.1.0"


def register_auto_classes() -> None:
    """Register the ViQ classes with transformers' Auto classes (idempotent; runs on import)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    AutoConfig.register(ViQConfig.model_type, ViQConfig, exist_ok=True)
    AutoConfig.register(ViQVisionConfig.model_type, ViQVisionConfig, exist_ok=True)
    AutoModel.register(ViQConfig, ViQModel, exist_ok=True)
    AutoImageProcessor.register(ViQConfig, image_processor_classes={"pil": ViQImageProcessor}, exist_ok=True)


register_auto_classes()

__all__ = [
    "FSQ_LEVEL_PRESETS",
    "FiniteScalarQuantizer",
    "ViQCodes",
    "ViQConfig",
    "ViQEncoderOutput",
    "ViQImageProcessor",
    "ViQModel",
    "ViQPreTrainedModel",
    "ViQVisionConfig",
    "register_auto_classes",
]
