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
is the frozen SigLIP2 teacher of the self-distillation (`vision_model_from_siglip2` in
`transformers_viq.original_checkpoint` reads open_clip and timm checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .configuration_viq import ViQVisionConfig
from .modeling_viq import (
    ModelLoaderHook,
    PackedAttentionChoice,
    ViQPoolingHead,
    ViQVisionEmbeddings,
    ViQVisionEncoder,
    _host_to_device,
    width_scaled_std,
)
from .validation_viq import check_grid, check_pixels


logger = logging.get_logger(__name__)


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
        image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`):
            Patch grid `(h_i, w_i)` of each image.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    image_grid_hw: torch.LongTensor | None = None


class ViQVisionPreTrainedModel(ModelLoaderHook, PreTrainedModel):
    config: ViQVisionConfig
    config_class = ViQVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViQVisionEmbeddings", "ViQEncoderLayer", "ViQPoolingHead"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False
    _supports_attention_backend = True

    def _init_weights(self, module):
        std = 0.02
        if isinstance(module, ViQVisionEmbeddings):
            init.trunc_normal_(module.patch_embedding.weight, std=std)
            init.zeros_(module.patch_embedding.bias)
            init.trunc_normal_(module.position_embedding.weight, std=std)
        elif isinstance(module, ViQPoolingHead):
            init.trunc_normal_(module.probe, std=std)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=width_scaled_std(std, module.in_features))
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class ViQVisionModel(PackedAttentionChoice, ViQVisionPreTrainedModel):
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
        self.encoder = ViQVisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = ViQPoolingHead(config)
        self.post_init()

    # ---- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def expected_state_shapes(cls, config: ViQVisionConfig) -> dict[str, torch.Size]:
        """`{key: shape}` of a model built from `config` (on the meta device: no memory, no init)."""
        with torch.device("meta"):
            model = cls._from_config(config)
        return {name: tensor.shape for name, tensor in model.state_dict().items()}

    # ---- forward ------------------------------------------------------------------------------------------------
    def forward(
        self, pixel_values: torch.FloatTensor, image_grid_hw: torch.LongTensor, return_pooler_output: bool = True
    ) -> ViQVisionOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(sum_i h_i * w_i, num_channels * patch_size**2)`):
                Packed patches from [`ViQImageProcessor`].
            image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`):
                Patch grid of each image.
            return_pooler_output (`bool`, *optional*, defaults to `True`):
                Whether to run the final LayerNorm and the attention-pooling head.

        Returns:
            [`ViQVisionOutput`]: `last_hidden_state` `(sum_i h_i*w_i, hidden)`, `pooler_output` `(num_images, hidden)`
            and `image_grid_hw`.
        """
        grid_hw = check_grid(image_grid_hw)
        check_pixels(pixel_values, grid_hw, self.embeddings.patch_dim)
        device = self.embeddings.patch_embedding.weight.device
        lengths = [h * w for h, w in grid_hw]
        packed = self._packed_sequence(lengths, device, self.config.hidden_size // self.config.num_attention_heads)
        pixel_values = _host_to_device(pixel_values, device)  # host inputs travel without a synchronisation
        hidden_states = self.encoder(self.embeddings(pixel_values, grid_hw), packed)
        pooled = self.head(self.post_layernorm(hidden_states), lengths) if return_pooler_output else None
        return ViQVisionOutput(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            image_grid_hw=torch.tensor(grid_hw, dtype=torch.long, device=device),
        )


__all__ = ["ViQVisionModel", "ViQVisionOutput", "ViQVisionPreTrainedModel"]
