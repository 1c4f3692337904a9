# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""What a ViQ training stage needs besides `transformers.TrainingArguments`: one dataclass, read from a YAML recipe
(`training/recipes/viq_*.yaml`) and the command line by `trl.TrlParser`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


STAGES = ("stage1", "stage2_1", "stage2_2", "decoder")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class ViQStageArguments:
    r"""
    The models, data, losses and schedule of one ViQ training stage. Paths are local files/folders or Hub ids; nothing
    is downloaded that is not named here.
    """

    stage: str = field(default="stage1", metadata=_help(f"One of {', '.join(STAGES)}."))

    # ---- the ViQ model ------------------------------------------------------------------------------------------
    init_from: str | None = field(default=None, metadata=_help(
        "Where the trained model starts. stage1: a SigLIP2 checkpoint (open_clip .bin / timm .safetensors; default: "
        "the teacher's), a published Stage-1 encoder (with stage1_encoder) or an HF-format ViQVisionModel. stage2_1: "
        "a Stage-1 encoder (HF folder, .pth file, or the authors' repo with stage1_encoder). stage2_2: a Stage 2-1 "
        "output. decoder: a ViQ tokenizer (HF folder, or the authors' repo with viq_size)."))  # fmt: skip
    init_filename: str | None = field(default=None, metadata=_help(
        "File to fetch from a Hub repo given as init_from (e.g. open_clip_pytorch_model.bin)."))
    stage1_encoder: str | None = field(default=None, metadata=_help(
        "giant or so400m: read anyres_vit/... of the authors' layout from init_from."))
    viq_size: str | None = field(default=None, metadata=_help("decoder stage: a size of the authors' release."))
    model_config: dict | str | None = field(default=None, metadata=_help(
        "ViQConfig fields of the stage-2 model (JSON on the command line): fsq_levels, bottleneck_dim, proximal, "
        "codes_per_patch, quantizer_num_layers, ..."))
    position_embedding_size: int = field(default=128, metadata=_help(
        "stage1: side of the student's position table (SigLIP2's is upsampled bicubically to it)."))
    num_attention_heads: int = field(default=16, metadata=_help("Heads of SigLIP2 trunks read from raw checkpoints."))
    hidden_act: str = field(default="gelu", metadata=_help(
        "Activation of trunks read from raw SigLIP2 checkpoints (exact GELU as in the ViQ code)."))
    calibrate_quantizer: bool = field(default=True, metadata=_help(
        "stage2_2: rescale the fresh FSQ projection on the first batch so codes spread over the levels."))

    # ---- teacher (self-distillation) ----------------------------------------------------------------------------
    teacher_name_or_path: str | None = field(default=None, metadata=_help(
        "The frozen fixed-resolution SigLIP2: an open_clip / timm file, a Hub repo (with teacher_filename) or an "
        "HF-format ViQVisionModel."))
    teacher_filename: str | None = field(default=None, metadata=_help("File of teacher_name_or_path on the Hub."))
    teacher_image_size: int | None = field(default=None, metadata=_help(
        "Side of the teacher's square input (default: 16 x its position grid, 384 for SigLIP2-384)."))
    distill_weight: float = field(default=10.0, metadata=_help("Weight of 1 - cos (10 in the released code)."))

    # ---- temporary LLM (text loss) ------------------------------------------------------------------------------
    text_model_name_or_path: str | None = field(default=None, metadata=_help(
        "The LLM of the text loss (Qwen/Qwen2.5-0.5B) with its tokenizer; none: no text loss."))
    text_weight: float = field(default=1.0)
    lora_r: int = field(default=64, metadata=_help("LoRA rank on every LLM linear (0: the LLM stays frozen)."))
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    use_dora: bool = field(default=True, metadata=_help("DoRA, as in the released code."))
    max_length: int | None = field(default=4096, metadata=_help("Longest text sequence (tokens)."))

    # ---- Qwen-Image VAE (latent regression, decoder) ------------------------------------------------------------
    vae_name_or_path: str | None = field(default=None, metadata=_help(
        "Qwen-Image VAE (diffusers AutoencoderKLQwenImage), e.g. Qwen/Qwen-Image with vae_subfolder=vae."))
    vae_subfolder: str | None = None
    latent_weight: float = field(default=1.0, metadata=_help("MSE to the VAE posterior mean (stages 2-1, 2-2)."))

    # ---- data ---------------------------------------------------------------------------------------------------
    dataset_name_or_path: str | None = field(default=None, metadata=_help(
        "A save_to_disk folder, a LLaVA-style .json/.jsonl file or a Hub dataset."))
    dataset_split: str = "train"
    eval_dataset_name_or_path: str | None = None
    eval_dataset_split: str = "validation"
    image_folder: str | None = field(default=None, metadata=_help("Root of relative image paths in JSON records."))
    image_column: str = "image"
    prompt_column: str = "prompt"
    answer_column: str = "answer"
    resolution_schedule: list[dict] | str | None = field(default=None, metadata=_help(
        "Phases [{until, max_pixels, token_window}] (fractions of the run); default one phase at 768^2, windows 2x2."))
    min_pixels: int = 64 * 64
    image_size: int = field(default=256, metadata=_help("decoder: side of the square training crops."))

    # ---- optimisation -------------------------------------------------------------------------------------------
    new_parameter_learning_rate: float | None = field(default=None, metadata=_help(
        "Learning rate of the parameters the stage creates (paper, Stage 2-1: 1e-4 while the rest uses 5e-5); "
        "default: learning_rate for all."))
    freeze_trunk: bool = field(default=False, metadata=_help("Freeze patch embedding, positions and trunk blocks."))
    ema_decay: float | None = field(default=None, metadata=_help(
        "EMA of the trained weights (decoder: 0.9999); the final model is the average."))

    # ---- monitoring ---------------------------------------------------------------------------------------------
    code_stability_steps: int = field(default=10, metadata=_help(
        "Measure code stability every N steps (an extra forward on noisy pixels); 0: never."))
    code_stability_noise: float = 0.01
    collapse_usage_threshold: float = field(default=0.05, metadata=_help(
        "Warn (once) when a logging interval uses less than this fraction of the codebook."))
    saturation_threshold: float = field(default=0.5, metadata=_help(
        "Warn (once) when more than this share of the FSQ inputs lies beyond 0.99 of the bound."))
    calibration_max_gain: float = field(default=4.0, metadata=_help(
        "stage2_2: bound of calibrate_quantizer's per-dimension gain (and of its inverse)."))

    # ---- decoder fine-tuning ------------------------------------------------------------------------------------
    trainable_modules: list[str] | str | None = field(default=None, metadata=_help(
        "decoder: what trains (default latent_head, vae.post_quant_conv, vae.decoder)."))
    mse_weight: float = 1.0
    lpips_path: str | None = field(default=None, metadata=_help(
        "LPIPS file written by transformers_viq.training.LPIPS.save (e.g. from torchvision's VGG16 + lpips vgg.pth)."))
    lpips_weight: float = 1.0
    kl_weight: float = field(default=1e-6, metadata=_help("KL of the predicted latents (unit variance) to N(0, I)."))
    gan_weight: float = 0.1
    gan_start_step: int = field(default=0, metadata=_help("Step from which the GAN terms apply."))
    discriminator_channels: int = 64
    discriminator_layers: int = 3
    discriminator_norm: str = "group"
    repa_encoder_name_or_path: str | None = field(default=None, metadata=_help(
        "DINOv2 (transformers Dinov2Model, e.g. facebook/dinov2-base) for the REPA loss; none: no REPA."))
    repa_weight: float = 1.5
    repa_projector_dim: int = 2048
    constant_codes: bool = field(default=False, metadata=_help(
        "decoder, ablation: the decoder sees one constant code at every position instead of the tokenizer's codes "
        "(what the codes add to a reconstruction is the difference of the two runs' eval PSNR)."))

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}.")
        self.model_config = _json_field("model_config", self.model_config, dict) or {}
        self.resolution_schedule = _json_field("resolution_schedule", self.resolution_schedule, list)
        if isinstance(self.trainable_modules, str):
            self.trainable_modules = [m.strip() for m in self.trainable_modules.split(",") if m.strip()]
        if self.stage1_encoder is not None and self.stage1_encoder not in ("giant", "so400m"):
            raise ValueError(f"stage1_encoder must be giant or so400m, got {self.stage1_encoder!r}.")
        for name in ("distill_weight", "text_weight", "latent_weight", "mse_weight", "lpips_weight", "kl_weight",
                     "gan_weight", "repa_weight"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")


def _json_field(name: str, value: Any, kind: type):
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} must be JSON on the command line: {error}") from None
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}.")
    return value


__all__ = ["STAGES", "ViQStageArguments"]
