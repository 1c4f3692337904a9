# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The continuous any-resolution ViQ encoder: a native-resolution SigLIP2 (Stage 1 of ViQ).

Stage 1 of ViQ (paper section 3.1, appendix A.1) turns the fixed-resolution SigLIP2 into an any-resolution encoder:
the same trunk with a 128x128 position table (SigLIP2's 24x24 table upsampled bicubically) resized per image, and
SigLIP2's attention-pooling head, trained with a text loss through a small LLM and self-distillation from the original
model.
The authors publish two such encoders (`anyres_vit/giant1b/siglip2_g_anyres_s4.pth`,
`anyres_vit/so400m/siglip2_so400m_anyres_s4.pth` in `XuminYu/ViQ_weights`); they initialise Stage 2.

[`ViQVisionModel`] is that encoder: packed images of mixed sizes in, one continuous feature per 16x16 patch and one
pooled embedding per image out. It shares its modules (and parameter names) with the trunk and pooling head of
[`ViQModel`], so a Stage-1 checkpoint initialises a ViQ tokenizer key for key. The same class, with a 24x24 table,
is the frozen SigLIP2 teacher of the self-distillation ([`ViQVisionModel.from_siglip2`] reads open_clip and timm
checkpoints).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from ...logging_utils import get_logger
from .configuration_viq import VISION_PRESETS, ViQVisionConfig
from .modeling_viq import ViQPoolingHead, ViQVisionEmbeddings, ViQVisionEncoder, ViQVisionTransformer, _host_to_device


logger = get_logger(__name__)


@dataclass
class ViQVisionOutput(ModelOutput):
    r"""
    Output of [`ViQVisionModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(sum_i h_i * w_i, hidden_size)`):
            Output of the last trunk block for every patch of the packed images (no final LayerNorm: the raw residual
            stream, which is what ViQ's fusion block reads).
        pooler_output (`torch.FloatTensor` of shape `(num_images, hidden_size)`, *optional*):
            Attention-pooled embedding of each image (final LayerNorm, then the pooling head).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The embeddings and the output of each trunk block, each `(sum_i h_i * w_i, hidden_size)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True` under `eager`):
            The attention probabilities of each trunk block, each `(1, num_heads, sum_i h_i * w_i, sum_i h_i * w_i)`
            (zero between patches of different images).
        image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`):
            Patch grid `(h_i, w_i)` of each image.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_grid_hw: torch.LongTensor | None = None


class ViQVisionPreTrainedModel(ViQVisionTransformer):
    config: ViQVisionConfig
    config_class = ViQVisionConfig
    base_model_prefix = "vision_model"
    _no_split_modules = ["ViQVisionEmbeddings", "ViQEncoderLayer", "ViQPoolingHead"]

    @property
    def trunk_config(self) -> ViQVisionConfig:
        return self.config


class ViQVisionModel(ViQVisionPreTrainedModel):
    r"""
    The continuous any-resolution encoder of ViQ Stage 1 (a native-resolution SigLIP2): packed images -> one feature
    per patch and an attention-pooled embedding per image. Every attention is block-diagonal per image.

    Example:

    ```python
    >>> import transformers_viq
    >>> from transformers_viq import ViQImageProcessor, ViQVisionModel
    >>> model = ViQVisionModel.from_pretrained("XuminYu/ViQ_weights", stage1_encoder="giant")  # published Stage 1
    >>> inputs = ViQImageProcessor()(images=[image_a, image_b], return_tensors="pt")
    >>> out = model(**inputs)
    >>> out.last_hidden_state.shape, out.pooler_output.shape   # (sum_i h_i*w_i, 1536), (2, 1536)
    ```
    """

    def __init__(self, config: ViQVisionConfig):
        super().__init__(config)
        self.embeddings = ViQVisionEmbeddings(config)
        self.encoder = ViQVisionEncoder(config, config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = ViQPoolingHead(config)
        self.post_init()

    # ---- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def _from_trunk_state_dict(cls, state_dict, config: ViQVisionConfig, source: str | None, **kwargs):
        from ...original_checkpoint import convert_trunk_state_dict, file_dtype

        dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", "auto"))
        if dtype is None or dtype == "auto":
            dtype = file_dtype(state_dict)
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        converted = convert_trunk_state_dict(
            state_dict,
            cls.expected_state_shapes(config),
            dtype=dtype,
            description=f"a ViQ vision model ({config.num_hidden_layers} layers, width {config.hidden_size}, "
            f"{config.position_embedding_size}x{config.position_embedding_size} positions)"
            + (f" ({source})" if source else ""),
        )
        for key in ("_from_auto", "adapter_kwargs", "trust_remote_code", "subfolder", "use_safetensors"):
            kwargs.pop(key, None)
        model = super().from_pretrained(None, config=config, state_dict=converted, dtype=dtype, **kwargs)
        if source:
            model.name_or_path = model.config._name_or_path = str(source)
        return model

    @classmethod
    def from_original_state_dict(cls, state_dict, config: ViQVisionConfig | None = None, *, source=None, **kwargs):
        r"""
        An encoder from a state dict in the published Stage-1 layout (with or without the training prefix
        `base_model.model.model.vision_tower.vision_tower.`; the teacher and projector tensors such a dump may hold
        are left out), checked key by key. A 24x24 position table is upsampled bicubically to the config's grid.

        Args:
            state_dict (`dict[str, torch.Tensor]`): the file's tensors.
            config ([`ViQVisionConfig`], *optional*): the architecture; by default read from the weights (geometry)
                with 16 attention heads and a 128x128 position table, as in both published encoders.
            source (`str`, *optional*): where the tensors came from, for messages.
            kwargs: as for [`~PreTrainedModel.from_pretrained`] (`dtype` (`"auto"`: the file's), `attn_implementation`,
                `device_map`, ...).
        """
        if config is None:
            config = cls.config_from_weights(state_dict, position_embedding_size=128)
        return cls._from_trunk_state_dict(state_dict, config, source, **kwargs)

    @classmethod
    def config_from_weights(cls, state_dict, num_attention_heads: int = 16, **overrides) -> ViQVisionConfig:
        """
        A [`ViQVisionConfig`] with the geometry the weights imply (width, depth, MLP width, patch size, position grid)
        and `num_attention_heads` (16 in every SigLIP2 giant / So400m model; it cannot be read from weights).
        `overrides` win, e.g. `position_embedding_size=128` for a student initialised from a 24x24 teacher.
        """
        from ...original_checkpoint import strip_trunk_prefixes, trunk_geometry

        stripped, _ = strip_trunk_prefixes(state_dict)
        geometry = trunk_geometry(stripped)
        return ViQVisionConfig(**{**geometry, "num_attention_heads": num_attention_heads, **overrides})

    @classmethod
    def from_siglip2(
        cls,
        checkpoint,
        config: ViQVisionConfig | None = None,
        position_embedding_size: int | None = None,
        num_attention_heads: int = 16,
        **kwargs,
    ):
        r"""
        Load a fixed-resolution SigLIP2 checkpoint of open_clip (`open_clip_pytorch_model.bin`: keys
        `visual.trunk.*`; the text tower and logit scale/bias are left out) or timm (`model.safetensors`, bare trunk
        keys), e.g. `timm/ViT-gopt-16-SigLIP2-384` (giant) or `timm/ViT-SO400M-16-SigLIP2-384`.

        Args:
            checkpoint (`str`, `os.PathLike` or `dict[str, torch.Tensor]`): the file (`.bin`/`.pth` read safely,
                `.safetensors`) or its state dict.
            config ([`ViQVisionConfig`], *optional*): the architecture; by default the geometry of the weights with
                `num_attention_heads` heads.
            position_embedding_size (`int`, *optional*): side of the position table to build. `None` keeps the
                checkpoint's (24 for the 384-px teachers: the self-distillation teacher); 128 gives the Stage-1
                student, whose table is the checkpoint's upsampled bicubically.
            num_attention_heads (`int`, *optional*, defaults to 16): used when `config` is not given.
            kwargs: as for [`~PreTrainedModel.from_pretrained`].

        The activation is the config's `hidden_act`, exact GELU by default as in the ViQ training code (SigLIP2 itself
        was trained with the tanh approximation: pass a config with `hidden_act="gelu_pytorch_tanh"` for that).
        """
        from ...original_checkpoint import load_state_dict_file

        source = None
        if isinstance(checkpoint, (str, os.PathLike)):
            source = os.fspath(checkpoint)
            checkpoint = load_state_dict_file(source)
        if config is None:
            overrides = {} if position_embedding_size is None else {"position_embedding_size": position_embedding_size}
            config = cls.config_from_weights(checkpoint, num_attention_heads=num_attention_heads, **overrides)
        elif position_embedding_size is not None and position_embedding_size != config.position_embedding_size:
            raise ValueError(
                f"position_embedding_size={position_embedding_size} disagrees with the config's "
                f"{config.position_embedding_size}; give one of them."
            )
        return cls._from_trunk_state_dict(checkpoint, config, source, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, stage1_encoder: str | None = None, **kwargs):
        r"""
        Load an encoder in HF format (`config.json` + safetensors) or a published Stage-1 encoder.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): Hub id or local folder.
            stage1_encoder (`str`, *optional*): `"giant"` or `"so400m"`: read
                `anyres_vit/giant1b/siglip2_g_anyres_s4.pth` or `anyres_vit/so400m/siglip2_so400m_anyres_s4.pth` of the
                authors' layout (e.g.
                `"XuminYu/ViQ_weights"`; only that file is fetched, the Hub cache is used offline).
            kwargs: as for [`~PreTrainedModel.from_pretrained`] (`config`, `dtype`, `attn_implementation`, `subfolder`,
                `revision`, `cache_dir`, `local_files_only`, `token`, ...).
        """
        if stage1_encoder is None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        from ...original_checkpoint import HUB_KWARGS, load_original_state_dict, resolve_stage1_checkpoint

        if stage1_encoder not in VISION_PRESETS:
            raise ValueError(
                f"Unknown Stage-1 encoder {stage1_encoder!r}; expected one of {', '.join(VISION_PRESETS)}."
            )
        config = kwargs.pop("config", None) or ViQVisionConfig.from_preset(stage1_encoder)
        if not isinstance(config, ViQVisionConfig):
            raise ValueError(f"`config` must be a ViQVisionConfig, got {type(config).__name__}.")
        hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        subfolder = kwargs.pop("subfolder", "") or ""
        path = resolve_stage1_checkpoint(pretrained_model_name_or_path, stage1_encoder, subfolder,
                                                  **hub_kwargs)  # fmt: skip
        model = cls._from_trunk_state_dict(load_original_state_dict(path), config, path, **kwargs)
        model.name_or_path = model.config._name_or_path = str(pretrained_model_name_or_path)
        return model

    # ---- forward ------------------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.FloatTensor,
        image_grid_hw: torch.LongTensor,
        return_pooler_output: bool = True,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> ViQVisionOutput | tuple:
        r"""
        Packed images -> one feature per patch and a pooled embedding per image. The shapes of the inputs are checked,
        their values are not (a training forward reads nothing back from the device; the processor makes finite
        pixels).

        Args:
            pixel_values (`torch.FloatTensor` of shape `(sum_i h_i * w_i, num_channels * patch_size**2)`):
                Packed patches from [`ViQImageProcessor`].
            image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`):
                Patch grid of each image.
            return_pooler_output (`bool`, *optional*, defaults to `True`):
                Whether to run the final LayerNorm and the attention-pooling head.
            output_hidden_states (`bool`, *optional*):
                Also return the embeddings and every block's output (default: `config.output_hidden_states`).
            output_attentions (`bool`, *optional*):
                Also return every block's attention probabilities (default: `config.output_attentions`); only the
                `eager` implementation computes them (`None` entries otherwise, as in transformers).
            return_dict (`bool`, *optional*):
                `False` returns a tuple of the output's fields that are set (default: `config.return_dict`).

        Returns:
            [`ViQVisionOutput`]: `last_hidden_state` `(sum_i h_i*w_i, hidden)`, `pooler_output` `(num_images, hidden)`,
            the hidden states and attentions if asked, and `image_grid_hw`.
        """
        config = self.config
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        return_dict = config.return_dict if return_dict is None else return_dict
        grid_hw = self._check_inputs(pixel_values, image_grid_hw, check_values=False)
        device = self.embeddings.patch_embedding.weight.device
        packed = self._packed(grid_hw, device)
        hidden_states, all_hidden_states, all_attentions = self.trunk(
            pixel_values, grid_hw, packed, output_hidden_states, output_attentions
        )
        output = ViQVisionOutput(
            last_hidden_state=hidden_states,
            pooler_output=self.pool(hidden_states, grid_hw) if return_pooler_output else None,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            image_grid_hw=_host_to_device(torch.tensor(grid_hw, dtype=torch.long), device),
        )
        return output if return_dict else output.to_tuple()


__all__ = ["ViQVisionModel", "ViQVisionOutput", "ViQVisionPreTrainedModel"]
