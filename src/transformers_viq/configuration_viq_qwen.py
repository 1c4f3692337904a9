# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Configuration of the ViQ vision-language model: a ViQ tokenizer, a projector and a Qwen2.5 decoder.

The authors' released training code feeds the code embedder's features (one 1536-d vector per 16x16
patch) through a projector that pools 2x2 patch windows with a learned softmax, adds a learned newline token after
each row and learned begin/end tokens, into a Qwen2.5 LLM. The number of LLM tokens an image takes is computed by
`get_num_image_tokens`, the one place both the processor and the model read it from.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_viq import ViQConfig, missing_config


PROJECTOR_TYPES = ("pooled", "mlp")


def get_num_image_tokens(grid_h: int, grid_w: int, projector_type: str = "pooled") -> int:
    """
    Number of LLM positions an image with a `grid_h x grid_w` patch grid takes.

    * `"pooled"` (the released projector): one token per 2x2 window, a newline token after each window row, and
      begin/end tokens: `(h/2) * (w/2 + 1) + 2`.
    * `"mlp"`: one token per 2x2 window (the four patch features concatenated): `(h/2) * (w/2)`.

    Both need an even grid (use `ViQImageProcessor(size_divisor=32)`); an odd one raises a `ValueError`.
    """
    if projector_type not in PROJECTOR_TYPES:
        raise ValueError(f"Unknown projector_type {projector_type!r}; expected one of {PROJECTOR_TYPES}.")
    if grid_h <= 0 or grid_w <= 0 or grid_h % 2 or grid_w % 2:
        raise ValueError(
            f"The projector merges 2x2 patch windows and needs an even patch grid, got {grid_h}x{grid_w}: preprocess "
            "with ViQImageProcessor(size_divisor=32)."
        )
    if projector_type == "pooled":
        return (grid_h // 2) * (grid_w // 2 + 1) + 2
    return (grid_h // 2) * (grid_w // 2)


class ViQQwenConfig(PreTrainedConfig):
    r"""
    Configuration of [`ViQForConditionalGeneration`].

    Args:
        vision_config (`dict` or [`ViQConfig`], *optional*):
            The ViQ tokenizer (defaults to the released 16k architecture).
        text_config (`dict` or `Qwen2Config`, *optional*):
            The Qwen2.5 decoder (defaults to a `Qwen2Config()`).
        image_token_id (`int`, *optional*, defaults to 151655):
            Id of the placeholder token that image features replace (`<|image_pad|>` in the Qwen2.5 vocabulary).
        projector_type (`str`, *optional*, defaults to `"pooled"`):
            `"pooled"`: the released projector (2x2 learned softmax pooling, newline and begin/end tokens);
            `"mlp"`: 2x2 patches concatenated, then Linear-GELU-Linear.
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the projector.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Whether the LM head shares the input embeddings (Qwen2.5-0.5B/1.5B/3B: tied; 7B: untied). Taken from
            `text_config` when that says tied.
    """

    model_type = "viq_qwen"
    sub_configs_defaults = {
        "vision_config": ViQConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 151655
    projector_type: str = "pooled"
    projector_hidden_act: str = "gelu"
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"Unknown projector_type {self.projector_type!r}; expected one of {PROJECTOR_TYPES}.")
        super().__post_init__(**kwargs)
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        vocab = getattr(self.text_config, "vocab_size", None)
        if vocab is not None and not 0 <= self.image_token_id < vocab:
            raise ValueError(f"`image_token_id` {self.image_token_id} is outside the text vocabulary (size {vocab}).")

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        # Update: a folder or repo without config.json is an error (transformers would build the default model).
        config_dict, unused = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if not config_dict:
            raise missing_config(pretrained_model_name_or_path, vlm=True, **kwargs)
        return config_dict, unused

    def num_image_tokens(self, grid_h: int, grid_w: int) -> int:
        """LLM positions of an image with this patch grid (see `get_num_image_tokens`)."""
        return get_num_image_tokens(grid_h, grid_w, self.projector_type)


__all__ = ["PROJECTOR_TYPES", "ViQQwenConfig", "get_num_image_tokens"]
