# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The four stages of ViQ training as one module per run: the trained model, its frozen helpers and the losses.

    stage1    text-aligned any-resolution pre-training (paper section 3.1): a [`ViQVisionModel`] (SigLIP2 with a
              128x128 position table) trained with the text loss of a temporary LLM and self-distillation from the
              frozen fixed-resolution SigLIP2 on the image resized to 384x384.
    stage2_1  proximal representation (section 3.2): a [`ViQModel`] with `quantizer="proximal"` (bottleneck 1536 ->
              128 with the L-infinity projection), initialised from Stage 1; text + distillation + latent regression
              (MSE to the frozen Qwen-Image VAE encoder's posterior mean).
    stage2_2  FSQ (section 3.2): the released head (x4 token expansion, headless RoPE blocks, GoldenGate RoPE, FSQ)
              replaces the proximal constraint, initialised from Stage 2-1 where the shapes allow; same three losses.
    decoder   decoder fine-tuning (section 4.4): the tokenizer frozen, its latent head and the VAE decoder trained with
              MSE + LPIPS + KL + GAN + REPA (DINOv2 on the latent head's preprocess layers).

[`ViQStageModel`] holds the trained model under `viq` (what is saved, in HF format) and the helpers (teacher, LLM with
its projector, VAE, LPIPS, discriminator, DINOv2) beside it; its `forward` returns the total loss and each term, so
`transformers.Trainer` (with DDP, DeepSpeed or FSDP through accelerate) trains it as it is. [`build_stage`] assembles
a stage from [`ViQStageArguments`].
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from ..logging_utils import get_logger
from ..models.viq.configuration_viq import QWEN_IMAGE_VAE_CONFIG, ViQConfig
from ..models.viq.validation_viq import check_grid
from .arguments import ViQStageArguments
from .losses import (
    discriminator_hinge_loss,
    distillation_loss,
    generator_adversarial_loss,
    latent_kl_loss,
    latent_regression_loss,
    repa_loss,
)


logger = get_logger(__name__)

DECODER_TRAINABLE = ["latent_head", "vae.post_quant_conv", "vae.decoder"]
DEFAULT_SCHEDULES = {
    # paper appendix A.1: 384^2 with x16 token downsampling, then 768^2 with x4
    "stage1": [{"until": 0.5, "max_pixels": 384 * 384, "token_window": 4},
               {"until": 1.0, "max_pixels": 768 * 768, "token_window": 2}],  # fmt: skip
    # Stage 2: 768 px, 2x2 pooling before the LLM
    "stage2_1": [{"until": 1.0, "max_pixels": 768 * 768, "token_window": 2}],
    "stage2_2": [{"until": 1.0, "max_pixels": 768 * 768, "token_window": 2}],
}


# ----------------------------------------------------------------------------------------------------------------
# Pixels <-> packed patches
# ----------------------------------------------------------------------------------------------------------------
def unpatchify(pixel_values: torch.Tensor, grid_hw: list[tuple[int, int]], patch_size: int) -> list[torch.Tensor]:
    """Packed patches `(sum_i h_i*w_i, C*p*p)` (the processor's layout) -> one `(C, h_i*p, w_i*p)` image per image."""
    images = []
    for patches, (h, w) in zip(pixel_values.split([h * w for h, w in grid_hw]), grid_hw):
        channels = patches.shape[-1] // (patch_size * patch_size)
        grid = patches.reshape(h, w, channels, patch_size, patch_size).permute(2, 0, 3, 1, 4)
        images.append(grid.reshape(channels, h * patch_size, w * patch_size))
    return images


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`(B, C, H, W)` -> packed patches `(B * h * w, C*p*p)`, images in order, patches row-major."""
    batch, channels, height, width = images.shape
    h, w = height // patch_size, width // patch_size
    grid = images.reshape(batch, channels, h, patch_size, w, patch_size).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(batch * h * w, channels * patch_size * patch_size)


def _same_size_groups(tensors: list[torch.Tensor]) -> list[list[int]]:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensors):
        groups[tuple(tensor.shape)].append(index)
    return list(groups.values())


# ----------------------------------------------------------------------------------------------------------------
# The stage module
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class LossWeights:
    """Weights of the loss terms (the paper's, where it gives them)."""

    text: float = 1.0
    distill: float = 10.0
    latent: float = 1.0
    mse: float = 1.0
    lpips: float = 1.0
    kl: float = 1e-6
    gan: float = 0.1
    repa: float = 1.5


@dataclass
class ViQStageOutput(ModelOutput):
    r"""
    Args:
        loss (`torch.FloatTensor` of shape `()`): the weighted sum of the terms (the discriminator's included).
        losses (`dict[str, torch.Tensor]`): each term before weighting, detached (`text`, `distill` (1 - cos),
            `latent`, `mse`, `lpips`, `kl`, `gan` (generator), `discriminator`, `repa`).
        image_codes (`torch.LongTensor`, *optional*): the step's codes (stages with FSQ).
        quantizer_saturation (`torch.FloatTensor` of shape `()`, *optional*): share of the FSQ inputs beyond 0.99 of
            the bound (stages that train an FSQ quantizer; see [`FiniteScalarQuantizer.saturation`]).
    """

    loss: torch.FloatTensor | None = None
    losses: dict | None = None
    image_codes: torch.LongTensor | None = None
    quantizer_saturation: torch.FloatTensor | None = None


class ViQStageModel(nn.Module):
    r"""
    One training stage: `viq` (the trained [`ViQVisionModel`] or [`ViQModel`]) and the frozen or auxiliary modules its
    losses need. Which parameters train is `requires_grad`, set by [`build_stage`].

    Args:
        stage (`str`): `"stage1"`, `"stage2_1"`, `"stage2_2"` or `"decoder"`.
        viq: the trained model.
        weights ([`LossWeights`]).
        teacher ([`ViQVisionModel`], *optional*): frozen SigLIP2 for self-distillation.
        teacher_image_size (`int`, *optional*, defaults to 384): side of the teacher's input.
        text_head ([`TextAlignmentHead`], *optional*): the temporary LLM and its projector.
        perceptual ([`LPIPS`], *optional*), discriminator ([`PatchDiscriminator`], *optional*),
        repa_encoder ([`Dinov2PatchFeatures`], *optional*), repa_projector ([`RepaProjector`], *optional*): decoder.
        gan_start_step (`int`, *optional*, defaults to 0): the GAN terms apply from this step on.
        constant_codes (`bool`, *optional*, defaults to `False`): decoder ablation: code 0 at every position instead
            of the tokenizer's codes.
    """

    def __init__(self, stage: str, viq: nn.Module, weights: LossWeights | None = None, *, teacher=None,
                 teacher_image_size: int = 384, text_head=None, perceptual=None, discriminator=None,
                 repa_encoder=None, repa_projector=None, gan_start_step: int = 0,
                 constant_codes: bool = False):  # fmt: skip
        super().__init__()
        self.stage = stage
        self.viq = viq
        self.weights = weights or LossWeights()
        self.teacher = teacher
        self.teacher_image_size = teacher_image_size
        self.text_head = text_head
        self.perceptual = perceptual
        self.discriminator = discriminator
        self.repa_encoder = repa_encoder
        self.repa_projector = repa_projector
        self.gan_start_step = gan_start_step
        self.constant_codes = constant_codes
        if constant_codes and stage != "decoder":
            raise ValueError("constant_codes is an ablation of the decoder stage.")
        self.step = 0  # the trainer's global step (set by its callback)
        self.new_parameter_names: set[str] = set()  # parameters the stage created (their own learning rate)
        if teacher is not None:
            teacher.requires_grad_(False)
        if (repa_encoder is None) != (repa_projector is None):
            raise ValueError("REPA needs both the DINOv2 encoder and the projector.")

    @property
    def patch_size(self) -> int:
        return self.viq.embeddings.config.patch_size

    @property
    def _no_split_modules(self) -> list[str]:
        """
        The blocks FSDP wraps one by one (`fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP`, which reads this
        attribute): those the models of the stage declare (ViQ, teacher, LLM), as far as they occur in this stage
        (accelerate refuses a name it cannot find, and Stage 1 has no quantizer, say).
        """
        present = {type(module).__name__ for module in self.modules()}
        declared = set()
        for module in self.modules():
            value = getattr(module, "_no_split_modules", None) if module is not self else None
            if isinstance(value, (list, tuple, set)):
                declared.update(value)
        return sorted(declared & present)

    # ---- Trainer hooks --------------------------------------------------------------------------------------------
    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers: int = 1,
                                        offload: bool = False):  # fmt: skip
        """Recompute the blocks of the trained model (and of the LLM) in the backward pass (`TrainingArguments`'
        `activation_checkpointing`)."""
        kwargs = {"activation_checkpointing_kwargs": activation_checkpointing_kwargs, "every_n_layers": every_n_layers,
                  "offload": offload}  # fmt: skip
        self.viq.activation_checkpointing_enable(**kwargs)
        if self.text_head is not None:
            language_model = self.text_head.language_model
            base = language_model.get_base_model() if hasattr(language_model, "get_base_model") else language_model
            base.activation_checkpointing_enable(**kwargs)

    def auxiliary_state_keys(self) -> list[str]:
        """State-dict keys outside `viq` that training changes (LoRA, projectors, discriminator): saved with every
        checkpoint next to the model, so a run resumes exactly."""
        keys = [name for name, param in self.named_parameters() if param.requires_grad and not name.startswith("viq.")]
        if self.discriminator is not None:
            keys += [f"discriminator.{name}" for name, _ in self.discriminator.named_buffers()]
        return keys

    # ---- helpers --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_embeddings(self, images: list[torch.Tensor]) -> torch.Tensor:
        """The frozen teacher's pooled token of each image, resized to `teacher_image_size` squared (bilinear, no
        antialias, aspect ratio not kept: as in the released training code)."""
        size = self.teacher_image_size
        patch = self.teacher.config.patch_size
        resized = torch.cat([F.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                                           align_corners=False) for image in images])  # fmt: skip
        grid = torch.tensor([[size // patch, size // patch]] * len(images), device=resized.device)
        return self.teacher(patchify(resized, patch), grid).pooler_output

    @torch.no_grad()
    def vae_posterior_means(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The frozen Qwen-Image VAE encoder's posterior mean of each image: `(z, H/8, W/8)` (raw latent space)."""
        vae = self.viq.vae
        dtype = next(vae.parameters()).dtype
        means: list[torch.Tensor | None] = [None] * len(images)
        for group in _same_size_groups(images):
            batch = torch.stack([images[i] for i in group])[:, :, None].to(dtype)  # (B, 3, 1, H, W)
            mean = vae.encode(batch).latent_dist.mean[:, :, 0]
            for slot, index in enumerate(group):
                means[index] = mean[slot]
        return means

    def decode_latents_to_pixels(self, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        """VAE decoder on predicted latents (with gradient): one `(3, 8*H', 8*W')` image in `[-1, 1]` per latent."""
        vae = self.viq.vae
        dtype = next(vae.decoder.parameters()).dtype
        images: list[torch.Tensor | None] = [None] * len(latents)
        for group in _same_size_groups(latents):
            batch = torch.stack([latents[i] for i in group])[:, :, None].to(dtype)
            decoded = vae.decode(batch, return_dict=False)[0][:, :, 0]
            for slot, index in enumerate(group):
                images[index] = decoded[slot]
        return images

    # ---- forward --------------------------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                token_window: torch.Tensor | None = None) -> ViQStageOutput:  # fmt: skip
        grid_hw = check_grid(image_grid_hw)
        if self.stage == "decoder":
            return self._decoder_forward(pixel_values, image_grid_hw, grid_hw)
        weights = self.weights
        out = self.viq(pixel_values, image_grid_hw)
        features = out.last_hidden_state
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        images = None
        if self.text_head is not None and weights.text > 0:
            if input_ids is None or token_window is None:
                raise ValueError("This stage has a text loss: the batch needs input_ids, labels and token_window.")
            text = self.text_head(features, grid_hw, int(token_window), input_ids, attention_mask, labels)
            terms["text"] = (weights.text, text)
        if self.teacher is not None and weights.distill > 0:
            images = unpatchify(pixel_values, grid_hw, self.patch_size)
            target = self.teacher_embeddings(images)
            terms["distill"] = (weights.distill, distillation_loss(out.pooler_output, target, weight=1.0))
        if self.stage in ("stage2_1", "stage2_2") and weights.latent > 0:
            images = images if images is not None else unpatchify(pixel_values, grid_hw, self.patch_size)
            targets = self.vae_posterior_means(images)
            predicted = self.viq.predict_latents(features, image_grid_hw)
            terms["latent"] = (weights.latent, latent_regression_loss(predicted, targets))
        if not terms:
            raise ValueError(f"Stage {self.stage} has no loss term: give a teacher, an LLM or positive weights.")
        output = self._output(terms, getattr(out, "image_codes", None))
        quantizer = getattr(self.viq, "quantizer", None)
        if output.image_codes is not None and hasattr(quantizer.fsq, "saturation"):
            output.quantizer_saturation = quantizer.fsq.saturation(out.quantizer_inputs)
        return output

    def _output(self, terms: dict, codes) -> ViQStageOutput:
        loss = sum(weight * value for weight, value in terms.values())
        return ViQStageOutput(loss=loss, losses={name: value.detach() for name, (_, value) in terms.items()},
                              image_codes=codes)  # fmt: skip

    def _decoder_forward(self, pixel_values, image_grid_hw, grid_hw) -> ViQStageOutput:
        weights = self.weights
        with torch.no_grad():
            if self.constant_codes:
                codes = torch.zeros(self.viq.config.codes_per_patch * int(pixel_values.shape[0]), dtype=torch.long,
                                    device=pixel_values.device)  # fmt: skip
                encoded = ViQStageOutput(image_codes=codes)
                features = self.viq.embed_codes(codes, image_grid_hw)
            else:
                encoded = self.viq(pixel_values, image_grid_hw, return_pooler_output=False)
                features = encoded.last_hidden_state
        features = features.detach()
        latents, hidden = self.viq.predict_latents(features, image_grid_hw, return_hidden_states=True)
        reconstructions = self.decode_latents_to_pixels(latents)
        images = unpatchify(pixel_values, grid_hw, self.patch_size)
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        terms["mse"] = (weights.mse, torch.stack([F.mse_loss(r.float(), i.float()) for r, i in
                                                  zip(reconstructions, images)]).mean())  # fmt: skip
        if weights.kl > 0:
            terms["kl"] = (weights.kl, latent_kl_loss(latents))
        groups = _same_size_groups(images)
        if self.perceptual is not None and weights.lpips > 0:
            distances = [self.perceptual(torch.stack([reconstructions[i] for i in g]),
                                         torch.stack([images[i] for i in g])) for g in groups]  # fmt: skip
            terms["lpips"] = (weights.lpips, torch.cat(distances).mean())
        if self.discriminator is not None and weights.gan > 0 and self.step >= self.gan_start_step:
            generator, discriminator = [], []
            frozen = {name: tensor.detach() for name, tensor in self.discriminator.state_dict(keep_vars=True).items()}
            for group in groups:
                fake = torch.stack([reconstructions[i] for i in group]).float()
                real = torch.stack([images[i] for i in group]).float()
                # the generator's term sees the discriminator as a constant; the discriminator's sees constant images
                generator.append(generator_adversarial_loss(torch.func.functional_call(self.discriminator, frozen,
                                                                                       (fake,))))  # fmt: skip
                discriminator.append(
                    discriminator_hinge_loss(self.discriminator(real), self.discriminator(fake.detach()))
                )
            terms["gan"] = (weights.gan, torch.stack(generator).mean())
            terms["discriminator"] = (1.0, torch.stack(discriminator).mean())
        if self.repa_encoder is not None and weights.repa > 0:
            targets: list[torch.Tensor | None] = [None] * len(images)
            for group in groups:
                features_group = self.repa_encoder(torch.stack([images[i] for i in group]), grid_hw[group[0]])
                for slot, index in enumerate(group):
                    targets[index] = features_group[slot]
            projected = self.repa_projector(hidden)
            terms["repa"] = (weights.repa, repa_loss(projected, torch.cat(targets).to(projected.dtype)))
        # the ablation's constant codes are no codebook usage to monitor (nor to warn about as a collapse)
        return self._output(terms, None if self.constant_codes else encoded.image_codes)


# ----------------------------------------------------------------------------------------------------------------
# Weight hand-over between stages
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class WeightTransfer:
    """What [`transfer_weights`] did: target keys filled from the source, target keys left fresh (absent from the
    source, or of another shape there), and source keys the target has no place for."""

    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def names(items):
            return ", ".join(items[:8]) + (f", ... ({len(items)})" if len(items) > 8 else "")

        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.reshaped:
            parts.append(f"{len(self.reshaped)} fresh because their shape changed ({names(self.reshaped)})")
        fresh = [k for k in self.fresh if k not in self.reshaped]
        if fresh:
            parts.append(f"{len(fresh)} fresh ({names(fresh)})")
        if self.unused:
            parts.append(f"{len(self.unused)} source tensors without a place ({names(self.unused)})")
        return "; ".join(parts)


@torch.no_grad()
def transfer_weights(target: nn.Module, source: dict[str, torch.Tensor]) -> WeightTransfer:
    """
    Copy every source tensor whose name and shape the target has; report the rest (nothing is dropped silently).

    Stage 1 -> 2-1: the trunk, its final LayerNorm and the pooling head carry over; the fusion block, bottleneck,
    code embedder and latent head are fresh. Stage 2-1 -> 2-2: everything but the quantizer projections (128-d
    bottleneck -> FSQ dimensions) and any quantizer blocks Stage 2-1 did not have.
    """
    report = WeightTransfer()
    own = target.state_dict()
    for name, tensor in source.items():
        if name not in own:
            report.unused.append(name)
        elif own[name].shape != tensor.shape:
            report.reshaped.append(name)
        else:
            own[name].copy_(tensor.to(own[name].dtype))
            report.loaded.append(name)
    report.fresh = [name for name in own if name not in set(report.loaded)]
    return report


# ----------------------------------------------------------------------------------------------------------------
# Building a stage from its arguments
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class StageComponents:
    """What [`build_stage`] assembles: the module to train, its data and collator, the image processor saved with the
    model, and the resolution schedule."""

    model: ViQStageModel
    train_dataset: object
    eval_dataset: object | None
    data_collator: object
    image_processor: object
    schedule: object | None
    transfer: WeightTransfer | None = None


def _is_hf_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def _fetch(name_or_path: str, filename: str | None) -> str:
    """A local file or folder as is; a Hub repo: the named file (downloaded, or from the cache offline)."""
    if os.path.exists(name_or_path) or filename is None:
        return name_or_path
    from ..original_checkpoint import _download

    return _download(name_or_path, filename, {})  # from the cache, or after one quick request (none offline)


def load_vision_model(name_or_path: str, *, filename: str | None = None, stage1_encoder: str | None = None,
                      position_embedding_size: int | None = None, num_attention_heads: int = 16,
                      hidden_act: str = "gelu", dtype: torch.dtype | None = None):  # fmt: skip
    """
    A [`ViQVisionModel`] from: the authors' layout (`stage1_encoder="giant"|"so400m"`), an HF-format folder or repo,
    or a raw checkpoint file (published Stage-1 `.pth`, open_clip `.bin`, timm `.safetensors`). For raw files the
    geometry comes from the weights, `position_embedding_size` (if given) resizes the position table bicubically.
    """
    from ..models.viq.modeling_viq_continuous import ViQVisionModel
    from ..original_checkpoint import load_state_dict_file, vision_config_from_weights, vision_model_from_siglip2

    kwargs = {} if dtype is None else {"dtype": dtype}
    if stage1_encoder is not None:
        return ViQVisionModel.from_pretrained(name_or_path, stage1_encoder=stage1_encoder, **kwargs)
    path = _fetch(name_or_path, filename)
    if os.path.isfile(path):
        state = load_state_dict_file(path)
        overrides = {"hidden_act": hidden_act}
        if position_embedding_size is not None:
            overrides["position_embedding_size"] = position_embedding_size
        config = vision_config_from_weights(state, num_attention_heads=num_attention_heads, **overrides)
        return vision_model_from_siglip2(state, config=config, **kwargs)
    model = ViQVisionModel.from_pretrained(path, **kwargs)
    if position_embedding_size is not None and model.config.position_embedding_size != position_embedding_size:
        raise ValueError(f"{name_or_path} has a {model.config.position_embedding_size}-wide position grid, not "
                         f"{position_embedding_size}.")  # fmt: skip
    return model


def _vae_config(vae) -> dict:
    return {key: (list(vae.config[key]) if isinstance(vae.config[key], tuple) else vae.config[key])
            for key in QWEN_IMAGE_VAE_CONFIG if key in vae.config}  # fmt: skip


def _load_vae(args: ViQStageArguments):
    from diffusers import AutoencoderKLQwenImage

    if args.vae_name_or_path is None:
        raise ValueError(f"Stage {args.stage} regresses Qwen-Image VAE latents: give vae_name_or_path (e.g. "
                         "Qwen/Qwen-Image with vae_subfolder: vae), or latent_weight: 0.")  # fmt: skip
    kwargs = {"subfolder": args.vae_subfolder} if args.vae_subfolder else {}
    return AutoencoderKLQwenImage.from_pretrained(args.vae_name_or_path, **kwargs)


def _build_viq(args: ViQStageArguments):
    """The trained model of the stage, and how its weights were obtained."""
    from ..models.viq.modeling_viq import ViQModel
    from ..models.viq.modeling_viq_continuous import ViQVisionModel

    if args.stage == "stage1":
        source = args.init_from or args.teacher_name_or_path
        if source is None:
            raise ValueError("stage1 needs init_from (or a teacher to start from).")
        filename = args.init_filename if args.init_from else args.teacher_filename
        model = load_vision_model(source, filename=filename, stage1_encoder=args.stage1_encoder,
                                  position_embedding_size=None if args.stage1_encoder or _is_hf_folder(source)
                                  else args.position_embedding_size, num_attention_heads=args.num_attention_heads,
                                  hidden_act=args.hidden_act)  # fmt: skip
        return model, None
    if args.init_from is None:
        raise ValueError(f"{args.stage} needs init_from (the previous stage's output).")
    if args.stage == "stage2_1":
        stage1 = load_vision_model(args.init_from, filename=args.init_filename, stage1_encoder=args.stage1_encoder,
                                   num_attention_heads=args.num_attention_heads, hidden_act=args.hidden_act)
        if not isinstance(stage1, ViQVisionModel):
            raise ValueError(f"{args.init_from} is not a Stage-1 encoder.")
        vae = _load_vae(args) if args.latent_weight > 0 or args.vae_name_or_path else None
        overrides = {**args.model_config, "quantizer": "proximal"}
        config = ViQConfig(vision_config=stage1.config.to_dict(),
                           vae_config=_vae_config(vae) if vae is not None else None, **overrides)  # fmt: skip
        model = ViQModel(config)
        transfer = transfer_weights(model, stage1.state_dict())
        if vae is not None:
            model.vae.load_state_dict(vae.state_dict())
            transfer.fresh = [k for k in transfer.fresh if not k.startswith("vae.")]
            transfer.loaded += [f"vae.{k}" for k in vae.state_dict()]
        return model, transfer
    source_model = ViQModel.from_pretrained(args.init_from, viq_size=args.viq_size)
    if args.stage == "decoder":
        source_model._check_has_codes()
        return source_model, None
    # stage2_2: the FSQ head replaces the proximal constraint
    config_dict = source_model.config.to_dict()
    config_dict.update(quantizer="fsq", bottleneck_dim=None, **args.model_config)
    config = ViQConfig.from_dict(config_dict)
    model = ViQModel(config)
    transfer = transfer_weights(model, source_model.state_dict())
    if args.vae_name_or_path:
        vae = _load_vae(args)
        model.vae.load_state_dict(vae.state_dict())
    return model, transfer


def _set_trainable(args: ViQStageArguments, viq) -> None:
    viq.requires_grad_(True)
    if args.stage in ("stage2_1", "stage2_2") and viq.vae is not None:
        viq.vae.requires_grad_(False)  # the frozen Qwen-Image VAE
    if args.freeze_trunk:
        viq.embeddings.requires_grad_(False)
        viq.encoder.requires_grad_(False)
    if args.stage == "decoder":
        viq.requires_grad_(False)
        modules = dict(viq.named_modules())
        for name in args.trainable_modules or DECODER_TRAINABLE:
            if name not in modules:
                raise ValueError(f"trainable_modules: the tokenizer has no module {name!r}.")
            modules[name].requires_grad_(True)


def build_stage(args: ViQStageArguments, training_args) -> StageComponents:
    """Assemble the model, data and collator of a stage (see the module docstring)."""
    from ..models.viq.image_processing_viq import ViQImageProcessor
    from .schedule import ResolutionSchedule
    from .stage_data import StageImageCollator, StageImageTextCollator, load_training_dataset

    compute_dtype = torch.bfloat16 if training_args.bf16 else (torch.float16 if training_args.fp16 else None)
    viq, transfer = _build_viq(args)
    if transfer is not None:
        logger.info(f"{args.stage} from {args.init_from}: {transfer.summary()}")
    _set_trainable(args, viq)
    weights = LossWeights(text=args.text_weight, distill=args.distill_weight, latent=args.latent_weight,
                          mse=args.mse_weight, lpips=args.lpips_weight, kl=args.kl_weight, gan=args.gan_weight,
                          repa=args.repa_weight)  # fmt: skip

    teacher = None
    if args.stage != "decoder" and args.distill_weight > 0:
        if args.teacher_name_or_path is None:
            raise ValueError(f"{args.stage} distils from the fixed-resolution SigLIP2: give teacher_name_or_path, or "
                             "distill_weight: 0.")  # fmt: skip
        teacher = load_vision_model(args.teacher_name_or_path, filename=args.teacher_filename,
                                    num_attention_heads=args.num_attention_heads, hidden_act=args.hidden_act,
                                    dtype=compute_dtype).eval()  # fmt: skip
        if teacher.config.hidden_size != viq.trunk_config.hidden_size:
            raise ValueError(f"The teacher's width {teacher.config.hidden_size} differs from the student's "
                             f"{viq.trunk_config.hidden_size}.")  # fmt: skip
    teacher_size = args.teacher_image_size or (16 * teacher.config.position_embedding_size if teacher else 384)

    text_head, tokenizer = None, None
    if args.stage != "decoder" and args.text_model_name_or_path and args.text_weight > 0:
        from transformers import AutoTokenizer

        from .text_alignment import TextAlignmentHead

        tokenizer = AutoTokenizer.from_pretrained(args.text_model_name_or_path)
        text_head = TextAlignmentHead.from_pretrained(
            args.text_model_name_or_path, viq.trunk_config.hidden_size, lora_r=args.lora_r,
            lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, use_dora=args.use_dora, dtype=compute_dtype,
            image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        )  # fmt: skip
    elif args.stage != "decoder" and args.text_weight > 0:
        logger.warning(f"{args.stage}: no text_model_name_or_path, so no text loss (the paper's recipe has one).")

    perceptual = discriminator = repa_encoder = repa_projector = None
    if args.stage == "decoder":
        from .discriminator import PatchDiscriminator
        from .perceptual import LPIPS

        if args.lpips_weight > 0:
            if args.lpips_path is None:
                raise ValueError("The decoder stage's LPIPS term needs lpips_path (or lpips_weight: 0).")
            perceptual = LPIPS.from_file(args.lpips_path)
        if args.gan_weight > 0:
            discriminator = PatchDiscriminator(channels=args.discriminator_channels,
                                               num_layers=args.discriminator_layers, norm=args.discriminator_norm)
        if args.repa_weight > 0 and args.repa_encoder_name_or_path:
            from .repa import Dinov2PatchFeatures, RepaProjector

            repa_encoder = Dinov2PatchFeatures.from_pretrained(args.repa_encoder_name_or_path, dtype=compute_dtype)
            repa_projector = RepaProjector(viq.config.hidden_size, args.repa_projector_dim, repa_encoder.hidden_size)
        elif args.repa_weight > 0:
            logger.warning("decoder: no repa_encoder_name_or_path, so no REPA term (the paper aligns to DINOv2).")

    model = ViQStageModel(args.stage, viq, weights, teacher=teacher, teacher_image_size=teacher_size,
                          text_head=text_head, perceptual=perceptual, discriminator=discriminator,
                          repa_encoder=repa_encoder, repa_projector=repa_projector,
                          gan_start_step=args.gan_start_step, constant_codes=args.constant_codes)  # fmt: skip
    fresh = set(transfer.fresh) if transfer is not None else set()
    model.new_parameter_names = {
        name for name, param in model.named_parameters()
        if param.requires_grad and (not name.startswith("viq.") or name.removeprefix("viq.") in fresh)
    }  # fmt: skip

    image_processor = ViQImageProcessor()
    schedule = None
    if args.stage == "decoder":
        collator = StageImageCollator(image_processor, image_size=args.image_size, image_column=args.image_column,
                                 image_folder=args.image_folder)  # fmt: skip
    else:
        schedule = ResolutionSchedule(args.resolution_schedule or DEFAULT_SCHEDULES[args.stage])
        if text_head is not None:
            collator = StageImageTextCollator(tokenizer, image_processor, schedule, max_length=args.max_length,
                                         image_column=args.image_column, prompt_column=args.prompt_column,
                                         answer_column=args.answer_column, image_folder=args.image_folder,
                                         min_pixels=args.min_pixels)  # fmt: skip
        else:
            collator = StageImageCollator(image_processor, schedule=schedule, image_column=args.image_column,
                                     image_folder=args.image_folder, min_pixels=args.min_pixels)  # fmt: skip
    if args.dataset_name_or_path is None:
        raise ValueError("dataset_name_or_path is required.")
    train_dataset = load_training_dataset(args.dataset_name_or_path, args.dataset_split, args.image_folder)
    eval_dataset = None
    if args.eval_dataset_name_or_path:
        eval_dataset = load_training_dataset(args.eval_dataset_name_or_path, args.eval_dataset_split,
                                             args.image_folder)  # fmt: skip
    return StageComponents(model, train_dataset, eval_dataset, collator, image_processor, schedule, transfer)


__all__ = [
    "DEFAULT_SCHEDULES",
    "LossWeights",
    "StageComponents",
    "ViQStageModel",
    "ViQStageOutput",
    "WeightTransfer",
    "build_stage",
    "load_vision_model",
    "patchify",
    "transfer_weights",
    "unpatchify",
]
