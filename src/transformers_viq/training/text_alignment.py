# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The text loss of ViQ training: a temporary LLM reads the vision features (paper section 3.1, Eq. 1; appendix A.1).

The paper trains the encoder with a light LLM, Qwen2.5-0.5B, of which only LoRA (DoRA in the released code: r=64,
alpha=16, dropout 0.05, every linear layer) is optimised. Vision tokens are downsampled before the LLM: x16 (4x4
windows) at 384^2 and x4 (2x2 windows) at 768^2 in Stage 1, x4 in Stage 2. [`WindowPoolingProjector`] pools each
window with a learned softmax per channel (the released projector's pooling, for any window size, so one projector
serves both phases) and maps it to the LLM width. The LLM and its projector are discarded after training; only the
vision encoder is kept.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from ..logging_utils import get_logger
from ..models.viq_qwen.modeling_viq_qwen import ViQSoftmaxPooler


logger = get_logger(__name__)

LLM_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _windows(features: torch.Tensor, height: int, width: int, window: int) -> torch.Tensor:
    """`(h*w, C)` row-major -> `(h/k * w/k, k*k, C)`: the `k x k` windows, row-major, each row-major inside."""
    channels = features.shape[-1]
    grid = features.view(height // window, window, width // window, window, channels).permute(0, 2, 1, 3, 4)
    return grid.reshape((height // window) * (width // window), window * window, channels)


class WindowPoolingProjector(nn.Module):
    r"""
    Vision features -> LLM embeddings, one per `window x window` block of patches: `Linear` to the LLM width on each
    patch, learned softmax pooling over the window (per channel, from each token and the window mean), activation,
    `Linear`.

    Args:
        vision_dim (`int`): width of the vision features.
        text_dim (`int`): width of the LLM's embeddings.
        hidden_act (`str`, *optional*, defaults to `"gelu"`).
    """

    def __init__(self, vision_dim: int, text_dim: int, hidden_act: str = "gelu"):
        super().__init__()
        self.proj_in = nn.Linear(vision_dim, text_dim)
        self.pooler = ViQSoftmaxPooler(text_dim, hidden_act)
        self.act = ACT2FN[hidden_act]
        self.proj_out = nn.Linear(text_dim, text_dim)

    def forward(self, features: torch.Tensor, grid_hw: list[tuple[int, int]], window: int) -> torch.Tensor:
        """`features` `(sum_i h_i*w_i, vision_dim)` -> `(sum_i (h_i/k)*(w_i/k), text_dim)`, images in order."""
        outputs = []
        for image_features, (h, w) in zip(features.split([h * w for h, w in grid_hw]), grid_hw):
            if h % window or w % window:
                raise ValueError(f"A {h}x{w} patch grid does not tile into {window}x{window} windows: the images must "
                                 f"have sides that are multiples of {16 * window} pixels.")  # fmt: skip
            windows = self.proj_in(_windows(image_features, h, w, window))
            outputs.append(self.proj_out(self.act(self.pooler(windows))))
        return torch.cat(outputs)


class TextAlignmentHead(nn.Module):
    r"""
    The temporary LLM of the text loss and its projector.

    Args:
        language_model: a causal LM (typically a PEFT model: Qwen2.5 with LoRA/DoRA).
        projector ([`WindowPoolingProjector`]).
        image_token_id (`int`): the token whose positions receive the vision embeddings (`<|image_pad|>`).
    """

    def __init__(self, language_model: nn.Module, projector: WindowPoolingProjector, image_token_id: int):
        super().__init__()
        self.language_model = language_model
        self.projector = projector
        self.image_token_id = image_token_id

    @classmethod
    def from_pretrained(cls, name_or_path: str, vision_dim: int, *, lora_r: int = 64, lora_alpha: int = 16,
                        lora_dropout: float = 0.05, use_dora: bool = True, dtype: torch.dtype | None = None,
                        image_token_id: int | None = None, **hub_kwargs) -> "TextAlignmentHead":  # fmt: skip
        """
        Load the LLM (frozen), wrap its linear layers with LoRA / DoRA (`lora_r=0` trains none of the LLM), and build
        a fresh projector from `vision_dim` to the LLM width.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **hub_kwargs)
        model.config.use_cache = False
        if image_token_id is None:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs)
            image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
            if image_token_id is None or image_token_id == tokenizer.unk_token_id:
                raise ValueError(f"The tokenizer of {name_or_path} has no <|image_pad|> token; pass image_token_id.")
        model.requires_grad_(False)
        if lora_r > 0:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, use_dora=use_dora,
                                bias="none", target_modules=LLM_LINEARS)  # fmt: skip
            model = get_peft_model(model, config)
        # the projector trains: it stays in float32 (mixed precision computes in `dtype`, the LLM's frozen weights)
        projector = WindowPoolingProjector(vision_dim, model.get_input_embeddings().embedding_dim)
        return cls(model, projector, int(image_token_id))

    def forward(self, features: torch.Tensor, grid_hw: list[tuple[int, int]], window: int, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """The LLM's cross-entropy on the supervised tokens, with the vision embeddings at the image tokens."""
        image_embeds = self.projector(features, grid_hw, window)
        embeddings = self.language_model.get_input_embeddings()(input_ids)
        mask = input_ids == self.image_token_id
        if int(mask.sum()) != image_embeds.shape[0]:
            raise ValueError(f"The text has {int(mask.sum())} image tokens but the images give "
                             f"{image_embeds.shape[0]} (window {window}x{window}, grids {grid_hw}).")  # fmt: skip
        embeddings = embeddings.masked_scatter(mask.unsqueeze(-1), image_embeds.to(embeddings.dtype))
        output = self.language_model(inputs_embeds=embeddings, attention_mask=attention_mask, labels=labels)
        return output.loss


__all__ = ["LLM_LINEARS", "TextAlignmentHead", "WindowPoolingProjector"]
