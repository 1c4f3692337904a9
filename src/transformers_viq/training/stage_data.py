# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Data for training ViQ itself: image-text datasets and the collators that pack their images.

Rows hold one image (`image`) or several (`images`): a path (relative to `image_folder` if given), bytes, a `datasets`
image, a PIL image or an array; and the text as `prompt` + `answer` strings, LLaVA `conversations`
(`[{"from": "human" | "gpt", "value": ...}]`, `<image>` markers dropped) or `messages` (`[{"role", "content"}]`,
string contents or TRL's lists of `{"type", "text"}` items). [`load_training_dataset`] reads datasets and LLaVA files
with the readers of `training/sft.py` and `viq extract`. Images are packed into one sequence per batch (no padding
to the largest image), at the pixel budget of the current phase of a [`ResolutionSchedule`], with both sides
multiples of `16 * token_window` so the LLM's token windows tile every image.

The text side follows Qwen2.5's chat format; each image is `<|vision_start|>` + one `<|image_pad|>` per LLM token +
`<|vision_end|>` at the start of the first user turn, and only assistant turns are supervised.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..image_io import load_rgb, resize_crop
from ..logging_utils import get_logger
from .schedule import ResolutionSchedule


logger = get_logger(__name__)

SYSTEM_PROMPT = "You are a helpful assistant."
IMAGE_TOKEN = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"


def load_training_dataset(name_or_path: str, split: str | None = "train", image_folder: str | None = None):
    """
    A `datasets.Dataset`, read by the readers `training/sft.py` and `viq extract` use, with their rules: a LLaVA-style
    `.json` / `.jsonl` file through [`~transformers_viq.load_llava_json`] (relative image paths against `image_folder`,
    else the file's folder; `image` as a path, a list or `img_path` records; `messages` with list contents), a
    `save_to_disk` folder, a local data folder or file, or a Hub dataset (which, when neither cached nor reachable,
    fails at once instead of after `datasets`' retries). `split` picks one of several (a dataset with one split is
    taken whatever its name).
    """
    from ..extraction import is_llava_json, load_source_dataset

    llava = is_llava_json(name_or_path)
    try:
        return load_source_dataset(name_or_path, split, image_folder=image_folder if llava else None)
    except ValueError as error:
        if split is None or "no split" not in str(error):
            raise
    return load_source_dataset(name_or_path, None)  # one split under another name (`train` by default)


def _row_images(row: dict[str, Any], image_column: str, image_folder: str | None) -> list:
    if row.get(image_column) is not None:
        images = row[image_column]
    elif row.get("images") is not None:
        images = row["images"]
    else:
        raise ValueError(f"A row has no images (no {image_column!r} or 'images' field; fields: {sorted(row)}).")
    if not isinstance(images, (list, tuple)):
        images = [images]
    if image_folder:
        images = [os.path.join(image_folder, im) if isinstance(im, str) and not os.path.isabs(im) else im
                  for im in images]  # fmt: skip
    return [load_rgb(image) for image in images]


def _turns(row: dict[str, Any], prompt_column: str, answer_column: str) -> list[tuple[str, str]]:
    """The conversation as `(role, text)` pairs, `role` in `{"user", "assistant"}`."""
    if row.get("conversations") is not None:
        roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
        turns = []
        for turn in row["conversations"]:
            role = roles.get(turn.get("from"))
            if role is None:
                raise ValueError(f"Unknown speaker {turn.get('from')!r} in a conversation (human/gpt expected).")
            turns.append((role, turn["value"].replace("<image>\n", "").replace("<image>", "").strip()))
        return turns
    if row.get("messages") is not None:
        turns = []
        for message in row["messages"]:
            if message.get("role") == "system":
                continue
            content = message.get("content")
            if isinstance(content, (list, tuple)):  # TRL's and load_llava_json's items: the text ones, in order
                content = "".join(item.get("text") or "" for item in content if item.get("type") == "text")
            if not isinstance(content, str):
                raise ValueError("`messages` contents must be strings or lists of {'type', 'text'} items.")
            turns.append((message["role"], content.strip()))
        return turns
    if row.get(prompt_column) is not None and row.get(answer_column) is not None:
        return [("user", str(row[prompt_column])), ("assistant", str(row[answer_column]))]
    raise ValueError(
        f"A row needs `conversations`, `messages`, or `{prompt_column}` and `{answer_column}`; it has {sorted(row)}."
    )


class StageImageCollator:
    r"""
    Packs the images of a batch (no text): either at the pixel budget of a [`ResolutionSchedule`] (native aspect
    ratio) or, with `image_size`, resized and cropped to `image_size x image_size` (decoder fine-tuning at 256x256).

    Returns `pixel_values` `(sum_i h_i*w_i, 768)` and `image_grid_hw` `(num_images, 2)`.
    """

    def __init__(self, image_processor, schedule: ResolutionSchedule | None = None, image_size: int | None = None,
                 random_crop: bool = True, image_column: str = "image", image_folder: str | None = None,
                 min_pixels: int = 64 * 64):  # fmt: skip
        if (schedule is None) == (image_size is None):
            raise ValueError("Give exactly one of `schedule` (pixel budget) or `image_size` (square crops).")
        if image_size is not None and image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size}.")
        self.image_processor = image_processor
        self.schedule = schedule
        self.image_size = image_size
        self.random_crop = random_crop
        self.image_column = image_column
        self.image_folder = image_folder
        self.min_pixels = min_pixels

    def images(self, rows) -> list[np.ndarray]:
        return [image for row in rows for image in _row_images(row, self.image_column, self.image_folder)]

    def process(self, images: list[np.ndarray], token_window: int = 1) -> dict[str, torch.Tensor]:
        if self.image_size is not None:
            images = [resize_crop(image, self.image_size, self.random_crop) for image in images]
            out = self.image_processor(images=images, do_resize=False, max_pixels=self.image_size**2,
                                       return_tensors="pt")  # fmt: skip
        else:
            budget = self.schedule.phase().max_pixels
            out = self.image_processor(images=images, do_resize=True, max_pixels=budget,
                                       min_pixels=min(self.min_pixels, budget), size_divisor=16 * token_window,
                                       return_tensors="pt")  # fmt: skip
        return {"pixel_values": out["pixel_values"], "image_grid_hw": out["image_grid_hw"]}

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.process(self.images(rows))


class StageImageTextCollator(StageImageCollator):
    r"""
    Packs images and renders the text for the temporary LLM of the text loss.

    Args:
        tokenizer: the LLM's tokenizer (Qwen2.5: `<|image_pad|>`, `<|vision_start|>`, `<|vision_end|>` are tokens).
        image_processor ([`ViQImageProcessor`]): resizes each image to the phase's pixel budget.
        schedule ([`ResolutionSchedule`]): pixel budget and token window over the run.
        max_length (`int`, *optional*): longer samples are cut at the end (never inside their image tokens).

    Returns `pixel_values`, `image_grid_hw`, `input_ids`, `attention_mask`, `labels` (`-100` outside assistant turns
    and on padding) and `token_window` (a 0-d tensor).
    """

    def __init__(self, tokenizer, image_processor, schedule: ResolutionSchedule, max_length: int | None = None,
                 image_column: str = "image", prompt_column: str = "prompt", answer_column: str = "answer",
                 image_folder: str | None = None, min_pixels: int = 64 * 64):  # fmt: skip
        super().__init__(image_processor, schedule=schedule, image_column=image_column, image_folder=image_folder,
                         min_pixels=min_pixels)  # fmt: skip
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.prompt_column = prompt_column
        self.answer_column = answer_column
        ids = tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, VISION_START, VISION_END])
        unknown = tokenizer.unk_token_id
        if any(i is None or (unknown is not None and i == unknown) for i in ids):
            raise ValueError(f"The tokenizer lacks {IMAGE_TOKEN}, {VISION_START} or {VISION_END} (a Qwen2.5 tokenizer "
                             "has them).")  # fmt: skip
        self.image_token_id, self.vision_start_id, self.vision_end_id = ids
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token.")

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _sample(self, turns, grids, token_window) -> tuple[list[int], list[int]]:
        ids = self._encode(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n")
        labels = [-100] * len(ids)
        images_placed = False
        for role, text in turns:
            if role == "user":
                piece = self._encode("<|im_start|>user\n")
                if not images_placed:
                    for h, w in grids:
                        piece += [self.vision_start_id] + [self.image_token_id] * ((h // token_window) *
                                                                                   (w // token_window))
                        piece += [self.vision_end_id]
                    images_placed = True
                piece += self._encode(f"{text}<|im_end|>\n<|im_start|>assistant\n")
                ids += piece
                labels += [-100] * len(piece)
            else:
                piece = self._encode(f"{text}<|im_end|>\n")
                ids += piece
                labels += piece
        if not images_placed:
            raise ValueError("The conversation has no user turn to put its images in.")
        if self.max_length is not None and len(ids) > self.max_length:
            last_image = max(i for i, t in enumerate(ids) if t == self.vision_end_id)
            if last_image >= self.max_length:
                raise ValueError(f"A sample's image tokens end at position {last_image}, beyond max_length="
                                 f"{self.max_length}: raise max_length or lower the pixel budget.")  # fmt: skip
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        return ids, labels

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        phase = self.schedule.phase()
        images, counts, conversations = [], [], []
        for row in rows:
            row_images = _row_images(row, self.image_column, self.image_folder)
            images += row_images
            counts.append(len(row_images))
            conversations.append(_turns(row, self.prompt_column, self.answer_column))
        batch = self.process(images, phase.token_window)
        grids = batch["image_grid_hw"].tolist()
        sequences, offset = [], 0
        for turns, count in zip(conversations, counts):
            sequences.append(self._sample(turns, grids[offset : offset + count], phase.token_window))
            offset += count
        length = max(len(ids) for ids, _ in sequences)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for index, (ids, row_labels) in enumerate(sequences):
            input_ids[index, : len(ids)] = torch.tensor(ids)
            labels[index, : len(ids)] = torch.tensor(row_labels)
            attention_mask[index, : len(ids)] = 1
        batch.update(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                     token_window=torch.tensor(phase.token_window))  # fmt: skip
        return batch


__all__ = ["StageImageCollator", "StageImageTextCollator", "load_training_dataset", "resize_crop"]
