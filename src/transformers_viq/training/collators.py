# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Batches for training a ViQ VLM on pre-extracted codes (a code dataset from `viq extract`)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch


def _has_image_item(messages: list[dict]) -> int:
    count = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for item in content if isinstance(item, dict) and item.get("type") == "image")
    return count


def _with_image_items(messages: list[dict], num_images: int) -> list[dict]:
    """The conversation with `num_images` image items in front of the first user turn, unless it already has them."""
    found = _has_image_item(messages)
    if found == num_images:
        return messages
    if found:
        raise ValueError(f"The conversation has {found} image items but the row has {num_images} images.")
    messages = copy.deepcopy(messages)
    for message in messages:
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            message["content"] = [{"type": "image"} for _ in range(num_images)] + list(content or [])
            return messages
    raise ValueError("The conversation has no user turn to put its images in.")


class ViQCodesCollator:
    """
    Collate rows of a code dataset (`image_codes`, `image_grid_hw` and a conversation) into VLM training batches.

    The text is rendered with the processor's own chat template, each image placeholder is expanded by the processor
    for its grid, and only assistant turns are supervised (`labels` is `-100` elsewhere, padding included).

    A row holds:

    * `image_codes`: one integer sequence per image (the `uint16` codes `viq extract` writes) and `image_grid_hw`:
      one `[h, w]` per image;
    * either `messages` (TRL's conversational format: `role` + `content`, a string or a list of `{"type": "text" |
      "image"}` items; if the conversation has no image items, one per image is put in front of the first user
      turn) or `prompt` + `completion` (strings, or conversations).

    Args:
        processor ([`ViQProcessor`]): the VLM's processor.
        max_length (`int`, *optional*): refuse (rather than truncate into image tokens) longer samples.
        padding_side (`str`, *optional*, defaults to `"right"`).

    Returns (per call): `input_ids`, `attention_mask`, `labels` `(batch, length)`, `image_codes` (packed, int64) and
    `image_grid_hw` `(num_images, 2)`.
    """

    def __init__(self, processor, max_length: int | None = None, padding_side: str = "right"):
        self.processor = processor
        self.max_length = max_length
        self.padding_side = padding_side

    def conversation(self, row: dict[str, Any]) -> list[dict]:
        num_images = len(row.get("image_grid_hw") or [])
        if row.get("messages") is not None:
            messages = list(row["messages"])
        elif row.get("prompt") is not None and row.get("completion") is not None:
            prompt, completion = row["prompt"], row["completion"]
            prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            if isinstance(completion, str):
                completion = [{"role": "assistant", "content": completion}]
            messages = prompt + list(completion)
        else:
            raise ValueError(f"A row needs `messages`, or `prompt` and `completion`; it has {sorted(row)}.")
        return _with_image_items(messages, num_images) if num_images else messages

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        conversations = [self.conversation(row) for row in rows]
        codes, grids = [], []
        for row in rows:
            row_codes = row.get("image_codes") or []
            row_grids = row.get("image_grid_hw") or []
            if len(row_codes) != len(row_grids):
                raise ValueError(f"A row has codes for {len(row_codes)} images but {len(row_grids)} grids.")
            codes += [np.asarray(image_codes, dtype=np.int64) for image_codes in row_codes]
            grids += [list(grid) for grid in row_grids]
        image_kwargs = {"image_codes": codes, "image_grid_hw": grids} if codes else {}
        batch = self.processor.apply_chat_template(
            conversations,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            processor_kwargs={"padding": True, "padding_side": self.padding_side, "return_tensors": "pt"},
            **image_kwargs,
        )
        assistant = batch.pop("assistant_masks")
        assistant = torch.as_tensor(assistant, dtype=torch.bool)
        if self.max_length is not None and int(batch["attention_mask"].sum(-1).max()) > self.max_length:
            raise ValueError(
                f"A sample is {int(batch['attention_mask'].sum(-1).max())} tokens long, over max_length="
                f"{self.max_length}; cutting it could cut into its image tokens. Raise max_length or drop the sample."
            )
        labels = batch["input_ids"].masked_fill(~assistant | (batch["attention_mask"] == 0), -100)
        batch["labels"] = labels
        return dict(batch)


__all__ = ["ViQCodesCollator"]
