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

from ..viq.configuration_viq import ConfigLoaderHook, ViQConfig, with_auto_map, without_empty_auto_map


PROJECTOR_TYPES = ("pooled", "mlp")


def get_num_image_tokens(grid_h: int, grid_w: int, projector_type: str = "pooled") -> int:
    """
    Number of LLM positions an image with a `grid_h x grid_w` patch grid takes.

    The projector merges 2x2 patch windows; an odd side gets a last row/column of windows holding only the patches
    that exist (the grid is completed to even sides, the missing patches are masked out of the pooling), so any grid
    works: the codes written by `viq encode` / `viq extract` with their defaults (`size_divisor=16`) train and run
    as they are. With `W = ceil(w / 2)` and `H = ceil(h / 2)` windows per row and column:

    * `"pooled"` (the released projector): one token per window, a newline token after each window row, and
      begin/end tokens: `H * (W + 1) + 2`.
    * `"mlp"`: one token per window (the four patch features concatenated, zeros for missing patches): `H * W`.

    Even grids (e.g. `ViQImageProcessor(size_divisor=32)`, what the released training code fed) are exactly the
    released projector.
    """
    if projector_type not in PROJECTOR_TYPES:
        raise ValueError(f"Unknown projector_type {projector_type!r}; expected one of {PROJECTOR_TYPES}.")
    if grid_h <= 0 or grid_w <= 0:
        raise ValueError(f"An image needs a non-empty patch grid, got {grid_h}x{grid_w}.")
    rows, columns = (grid_h + 1) // 2, (grid_w + 1) // 2
    if projector_type == "pooled":
        return rows * (columns + 1) + 2
    return rows * columns


class ViQQwenConfig(ConfigLoaderHook, PreTrainedConfig):
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
        with_auto_map(self)
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        vocab = getattr(self.text_config, "vocab_size", None)
        if vocab is not None and not 0 <= self.image_token_id < vocab:
            raise ValueError(f"`image_token_id` {self.image_token_id} is outside the text vocabulary (size {vocab}).")

    def to_dict(self) -> dict:
        return without_empty_auto_map(super().to_dict())

    def num_image_tokens(self, grid_h: int, grid_w: int) -> int:
        """LLM positions of an image with this patch grid (see `get_num_image_tokens`)."""
        return get_num_image_tokens(grid_h, grid_w, self.projector_type)


__all__ = ["PROJECTOR_TYPES", "ViQQwenConfig", "get_num_image_tokens"]
