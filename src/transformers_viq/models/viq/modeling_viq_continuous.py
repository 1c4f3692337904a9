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
from transformers.utils import ModelOutput, logging

from .configuration_viq import ViQVisionConfig
from .modeling_viq import ViQPoolingHead, ViQVisionEmbeddings, ViQVisionEncoder, ViQVisionTransformer, _host_to_device


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
