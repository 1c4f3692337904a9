# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""transformers-viq: the ViQ visual tokenizer as a Hugging Face transformers model.

Importing the package registers ViQ with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoImageProcessor`, `AutoModelForImageTextToText`, `AutoModelForCausalLM`, `AutoProcessor`).
"""

from .codes_io import ViQCodes
from .configuration_viq import FSQ_LEVEL_PRESETS, ViQConfig, ViQVisionConfig
from .configuration_viq_qwen import ViQQwenConfig, get_num_image_tokens
from .extraction import ExtractionResult, extract_codes, load_code_dataset
from .fsq import FiniteScalarQuantizer
from .image_processing_viq import ViQImageProcessor
from .model_cards import push_to_hub_with_card, render_tokenizer_card, render_vlm_card
from .modeling_viq import ViQEncoderOutput, ViQModel, ViQPreTrainedModel
from .modeling_viq_qwen import ViQForConditionalGeneration, ViQQwenModel, ViQQwenPreTrainedModel
from .processing_viq import ViQProcessor

__version__ = "0.1.0"


def register_auto_classes() -> None:
    """Register the ViQ classes with transformers' Auto classes (idempotent; runs on import)."""
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    AutoConfig.register(ViQConfig.model_type, ViQConfig, exist_ok=True)
    AutoConfig.register(ViQVisionConfig.model_type, ViQVisionConfig, exist_ok=True)
    AutoModel.register(ViQConfig, ViQModel, exist_ok=True)
    AutoImageProcessor.register(ViQConfig, image_processor_classes={"pil": ViQImageProcessor}, exist_ok=True)
    AutoProcessor.register(ViQQwenConfig, ViQProcessor, exist_ok=True)
    AutoConfig.register(ViQQwenConfig.model_type, ViQQwenConfig, exist_ok=True)
    AutoModel.register(ViQQwenConfig, ViQQwenModel, exist_ok=True)
    AutoModelForImageTextToText.register(ViQQwenConfig, ViQForConditionalGeneration, exist_ok=True)
    AutoModelForCausalLM.register(ViQQwenConfig, ViQForConditionalGeneration, exist_ok=True)


register_auto_classes()

__all__ = [
    "FSQ_LEVEL_PRESETS",
    "ExtractionResult",
    "FiniteScalarQuantizer",
    "ViQCodes",
    "ViQConfig",
    "ViQEncoderOutput",
    "ViQForConditionalGeneration",
    "ViQImageProcessor",
    "ViQModel",
    "ViQPreTrainedModel",
    "ViQProcessor",
    "ViQQwenConfig",
    "ViQQwenModel",
    "ViQQwenPreTrainedModel",
    "ViQVisionConfig",
    "extract_codes",
    "get_num_image_tokens",
    "load_code_dataset",
    "push_to_hub_with_card",
    "register_auto_classes",
    "render_tokenizer_card",
    "render_vlm_card",
]
