# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""transformers-viq: the ViQ visual tokenizer as a Hugging Face transformers model.

Importing the package registers ViQ with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoImageProcessor`, `AutoModelForImageTextToText`, `AutoModelForCausalLM`, `AutoProcessor`). Everything else loads
on first use: `transformers_viq.extract_codes` imports the extraction module (and `datasets`) only when touched, so
`import transformers_viq` stays as light as transformers' own model classes.

Layout (imports flow models -> services -> faces; `tests/test_layout.py` checks it):

    models/viq/       configuration_viq, modeling_viq (ViQModel), modeling_viq_continuous (ViQVisionModel, the
                      Stage-1 encoder), fsq, validation_viq (checks of codes, grids, pixels), image_processing_viq
    models/viq_qwen/  configuration_viq_qwen, modeling_viq_qwen (ViQForConditionalGeneration), processing_viq
                      The model folders import torch, transformers, diffusers and each other, nothing else of the
                      package: they are what a model pushed with its code (`trust_remote_code=True`) carries.
    services          original_checkpoint (the authors' layout; importing the package installs its loader on the
                      models as `checkpoint_loader`), model_cards (cards, presets, Hub pushes, the remote-code
                      bundle), codes_io (codes files), image_io, llava_data, metrics, synthetic, pipeline
                      (load/encode/decode/reconstruct), visualization, extraction (code datasets), training/,
                      integrations/ (lmms-eval), testing/; at the bottom hub_utils, file_utils, logging_utils, lazy
                      (they import nothing of ours)
    faces             cli (`viq`), demo/, convert_viq_original_to_hf (the converter script)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import attach


__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "FSQ_LEVEL_PRESETS": "models.viq.configuration_viq",
    "ViQConfig": "models.viq.configuration_viq",
    "ViQVisionConfig": "models.viq.configuration_viq",
    "ViQQwenConfig": "models.viq_qwen.configuration_viq_qwen",
    "get_num_image_tokens": "models.viq_qwen.configuration_viq_qwen",
    "FiniteScalarQuantizer": "models.viq.fsq",
    "ViQEncoderOutput": "models.viq.modeling_viq",
    "ViQModel": "models.viq.modeling_viq",
    "ViQPreTrainedModel": "models.viq.modeling_viq",
    "ViQVisionModel": "models.viq.modeling_viq_continuous",
    "ViQVisionOutput": "models.viq.modeling_viq_continuous",
    "ViQForConditionalGeneration": "models.viq_qwen.modeling_viq_qwen",
    "ViQQwenModel": "models.viq_qwen.modeling_viq_qwen",
    "ViQQwenPreTrainedModel": "models.viq_qwen.modeling_viq_qwen",
    "ViQImageProcessor": "models.viq.image_processing_viq",
    "ViQProcessor": "models.viq_qwen.processing_viq",
    "ViQCodes": "codes_io",
    "IncompatibleCodebookError": "models.viq.validation_viq",
    "ViQPipeline": "pipeline",
    "ExtractionResult": "extraction",
    "extract_codes": "extraction",
    "load_code_dataset": "extraction",
    "load_llava_json": "llava_data",
    "push_to_hub_with_card": "model_cards",
    "render_tokenizer_card": "model_cards",
    "render_vlm_card": "model_cards",
    "language_model_lora_config": "training.lora",
}

if TYPE_CHECKING:
    from .codes_io import ViQCodes
    from .extraction import ExtractionResult, extract_codes, load_code_dataset
    from .llava_data import load_llava_json
    from .model_cards import push_to_hub_with_card, render_tokenizer_card, render_vlm_card
    from .models.viq.configuration_viq import FSQ_LEVEL_PRESETS, ViQConfig, ViQVisionConfig
    from .models.viq.fsq import FiniteScalarQuantizer
    from .models.viq.image_processing_viq import ViQImageProcessor
    from .models.viq.modeling_viq import ViQEncoderOutput, ViQModel, ViQPreTrainedModel
    from .models.viq.modeling_viq_continuous import ViQVisionModel, ViQVisionOutput
    from .models.viq.validation_viq import IncompatibleCodebookError
    from .models.viq_qwen.configuration_viq_qwen import ViQQwenConfig, get_num_image_tokens
    from .models.viq_qwen.modeling_viq_qwen import ViQForConditionalGeneration, ViQQwenModel, ViQQwenPreTrainedModel
    from .models.viq_qwen.processing_viq import ViQProcessor
    from .pipeline import ViQPipeline
    from .training.lora import language_model_lora_config


__getattr__, __dir__ = attach(__name__, _EXPORTS)


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

    from .models.viq.configuration_viq import ViQConfig, ViQVisionConfig
    from .models.viq.image_processing_viq import ViQImageProcessor
    from .models.viq.modeling_viq import ViQModel
    from .models.viq.modeling_viq_continuous import ViQVisionModel
    from .models.viq_qwen.configuration_viq_qwen import ViQQwenConfig
    from .models.viq_qwen.modeling_viq_qwen import ViQForConditionalGeneration, ViQQwenModel
    from .models.viq_qwen.processing_viq import ViQProcessor

    AutoConfig.register(ViQConfig.model_type, ViQConfig, exist_ok=True)
    AutoConfig.register(ViQVisionConfig.model_type, ViQVisionConfig, exist_ok=True)
    AutoModel.register(ViQConfig, ViQModel, exist_ok=True)
    AutoModel.register(ViQVisionConfig, ViQVisionModel, exist_ok=True)
    AutoImageProcessor.register(ViQConfig, image_processor_classes={"pil": ViQImageProcessor}, exist_ok=True)
    AutoProcessor.register(ViQQwenConfig, ViQProcessor, exist_ok=True)
    AutoConfig.register(ViQQwenConfig.model_type, ViQQwenConfig, exist_ok=True)
    AutoModel.register(ViQQwenConfig, ViQQwenModel, exist_ok=True)
    AutoModelForImageTextToText.register(ViQQwenConfig, ViQForConditionalGeneration, exist_ok=True)
    AutoModelForCausalLM.register(ViQQwenConfig, ViQForConditionalGeneration, exist_ok=True)


def _install_services() -> None:
    """
    What the package adds to the model classes, which import nothing of it: its loader of checkpoints outside Hugging
    Face format as their `checkpoint_loader` (the authors' layout through `from_pretrained`, plain errors for missing
    folders and damaged files), and its logger's handler and verbosity for their messages (their loggers are
    children of the package's).
    """
    from .logging_utils import get_logger
    from .original_checkpoint import install

    get_logger()
    install()


register_auto_classes()
_install_services()

__all__ = [
    "ExtractionResult",
    "FSQ_LEVEL_PRESETS",
    "FiniteScalarQuantizer",
    "IncompatibleCodebookError",
    "ViQCodes",
    "ViQConfig",
    "ViQEncoderOutput",
    "ViQForConditionalGeneration",
    "ViQImageProcessor",
    "ViQModel",
    "ViQPipeline",
    "ViQPreTrainedModel",
    "ViQProcessor",
    "ViQQwenConfig",
    "ViQQwenModel",
    "ViQQwenPreTrainedModel",
    "ViQVisionConfig",
    "ViQVisionModel",
    "ViQVisionOutput",
    "extract_codes",
    "get_num_image_tokens",
    "language_model_lora_config",
    "load_code_dataset",
    "load_llava_json",
    "push_to_hub_with_card",
    "register_auto_classes",
    "render_tokenizer_card",
    "render_vlm_card",
]
