# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Training policy and pieces: what trains, LoRA/DoRA configs, data loading and packing, collators, building and
saving a VLM for training, quantizer calibration.

The model classes only describe architectures; whether a part trains is `requires_grad`, set here by the training
scripts (`training/` at the repository root) or by the user. Submodules load on first use:

    from transformers_viq.training import freeze, language_model_lora_config, ViQCodesCollator

Training ViQ itself (Stage 1, Stage 2-1, Stage 2-2, decoder fine-tuning; `training/train_viq.py`):

    from transformers_viq.training import parse_stage_arguments, run_stage

`arguments` (ViQStageArguments), `stages` (ViQStageModel, build_stage, transfer_weights), `trainer`
(ViQStageTrainer), `run` (run_stage), `losses`, `text_alignment` (the temporary LLM), `stage_data` (image-text
collators), `schedule` (progressive resolution), `monitoring` (codebook usage, code stability), `ema`, `perceptual`
(LPIPS), `discriminator`, `repa` (DINOv2 alignment).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import attach


_EXPORTS = {
    "calibrate_quantizer": "calibration",
    "freeze": "freezing",
    "trainable_summary": "freezing",
    "language_model_lora_config": "lora",
    "language_model_linears": "lora",
    "ViQCodesCollator": "collators",
    "ViQImageCollator": "collators",
    "SkippedSamples": "collators",
    "LogSkippedSamples": "callbacks",
    "SkippedSamplesCallback": "callbacks",
    "SFTData": "data",
    "load_sft_dataset": "data",
    "check_conversations": "data",
    "sample_lengths": "data",
    "pack_by_length": "data",
    "packed_index_dataset": "data",
    "prepare_for_training": "data",
    "TRAINING_MODES": "vlm",
    "load_vlm": "vlm",
    "set_training_mode": "vlm",
    "check_trainable": "vlm",
    "save_trained_vlm": "vlm",
}

if TYPE_CHECKING:
    from .calibration import calibrate_quantizer
    from .callbacks import LogSkippedSamples, SkippedSamplesCallback
    from .collators import SkippedSamples, ViQCodesCollator, ViQImageCollator
    from .data import (
        SFTData,
        check_conversations,
        load_sft_dataset,
        pack_by_length,
        packed_index_dataset,
        prepare_for_training,
        sample_lengths,
    )
    from .freezing import freeze, trainable_summary
    from .lora import language_model_linears, language_model_lora_config
    from .vlm import TRAINING_MODES, check_trainable, load_vlm, save_trained_vlm, set_training_mode


# Training ViQ itself: the four stages and their pieces
_STAGE_EXPORTS = {
    "ViQStageArguments": "arguments",
    "ViQStageModel": "stages",
    "LossWeights": "stages",
    "build_stage": "stages",
    "load_vision_model": "stages",
    "transfer_weights": "stages",
    "ViQStageTrainer": "trainer",
    "run_stage": "run",
    "parse_stage_arguments": "run",
    "StageResult": "run",
    "StageImageCollator": "stage_data",
    "StageImageTextCollator": "stage_data",
    "load_training_dataset": "stage_data",
    "ResolutionSchedule": "schedule",
    "ResolutionPhase": "schedule",
    "CodebookUsage": "monitoring",
    "code_stability": "monitoring",
    "ExponentialMovingAverage": "ema",
    "LPIPS": "perceptual",
    "PatchDiscriminator": "discriminator",
    "Dinov2PatchFeatures": "repa",
    "RepaProjector": "repa",
    "TextAlignmentHead": "text_alignment",
    "WindowPoolingProjector": "text_alignment",
}
_EXPORTS = {**_EXPORTS, **_STAGE_EXPORTS}

if TYPE_CHECKING:
    from .arguments import ViQStageArguments
    from .discriminator import PatchDiscriminator
    from .ema import ExponentialMovingAverage
    from .monitoring import CodebookUsage, code_stability
    from .perceptual import LPIPS
    from .repa import Dinov2PatchFeatures, RepaProjector
    from .run import StageResult, parse_stage_arguments, run_stage
    from .schedule import ResolutionPhase, ResolutionSchedule
    from .stage_data import StageImageCollator, StageImageTextCollator, load_training_dataset
    from .stages import LossWeights, ViQStageModel, build_stage, load_vision_model, transfer_weights
    from .text_alignment import TextAlignmentHead, WindowPoolingProjector
    from .trainer import ViQStageTrainer


__getattr__, __dir__ = attach(__name__, _EXPORTS)


__all__ = [
    "SFTData",
    "SkippedSamples",
    "LogSkippedSamples",
    "SkippedSamplesCallback",
    "TRAINING_MODES",
    "ViQCodesCollator",
    "ViQImageCollator",
    "calibrate_quantizer",
    "check_conversations",
    "check_trainable",
    "freeze",
    "language_model_linears",
    "language_model_lora_config",
    "load_sft_dataset",
    "load_vlm",
    "pack_by_length",
    "packed_index_dataset",
    "prepare_for_training",
    "sample_lengths",
    "save_trained_vlm",
    "set_training_mode",
    "trainable_summary",
]
__all__ += [
    "CodebookUsage",
    "Dinov2PatchFeatures",
    "ExponentialMovingAverage",
    "LPIPS",
    "LossWeights",
    "PatchDiscriminator",
    "RepaProjector",
    "ResolutionPhase",
    "ResolutionSchedule",
    "StageImageCollator",
    "StageImageTextCollator",
    "StageResult",
    "TextAlignmentHead",
    "ViQStageArguments",
    "ViQStageModel",
    "ViQStageTrainer",
    "WindowPoolingProjector",
    "build_stage",
    "code_stability",
    "load_training_dataset",
    "load_vision_model",
    "parse_stage_arguments",
    "run_stage",
    "transfer_weights",
]
