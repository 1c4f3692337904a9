# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Batches for training a ViQ VLM: from pre-extracted codes ([`ViQCodesCollator`]) or from images
([`ViQImageCollator`]), padded or packed.

Both render each conversation with the processor's own chat template, let the processor expand every image
placeholder for its grid, and supervise the assistant turns only (`labels` is `-100` elsewhere). Rows come straight
from the dataset, or, when packing, as `{"pack": [row indices]}` rows of the index dataset built by
`transformers_viq.training.data.packed_index_dataset`, expanded from `source`: the samples of a pack are laid end to
end in one sequence of exactly `max_length` tokens, with `position_ids` restarting at 0 for each sample and no
`attention_mask`, which the model turns into a block-diagonal causal mask (attention never crosses samples).

[`ViQImageCollator`] never stops an epoch on an unreadable image: the sample is logged, left out and counted
(`collator.skipped`, and `skipped-samples-rank<r>.jsonl` when `skipped_log_dir` is set); a batch left empty is
refilled from `source`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from typing import Any

import numpy as np
import torch

from ..logging_utils import get_logger
from .data import conversation_of, num_images_of, with_image_items


logger = get_logger(__name__)


class UnreadableImageError(ValueError):
    """An image of a training sample cannot be read or preprocessed; the sample is left out."""


class SkippedSamples:
    """
    A count of left-out samples shared by the dataloader's worker processes (and this one), with an optional log:
    one JSON line per sample in `log_dir/skipped-samples-rank<RANK>.jsonl` (`sample`, `error`, and `stage`: `"before
    training"` for the rows the data preparation left out, `"training"` for those the collator skipped).
    """

    def __init__(self, log_dir: str | None = None):
        self._count = multiprocessing.get_context("fork").Value("q", 0) if os.name == "posix" else None
        self._local = 0
        self.before_training = 0
        self.log_dir = log_dir

    @property
    def count(self) -> int:
        """Every sample left out on this process: before training and during it."""
        during = int(self._count.value) if self._count is not None else self._local
        return self.before_training + during

    def add(self, sample: str, error: str) -> None:
        """A sample skipped during training (an unreadable image): counted, logged and written."""
        if self._count is not None:
            with self._count.get_lock():
                self._count.value += 1
        else:
            self._local += 1
        logger.warning(f"Skipping {sample}: {error}")
        self._write([{"sample": sample, "error": error, "stage": "training"}])

    def add_left_out(self, left_out: dict[str, str]) -> None:
        """
        The rows left out before training (`SFTData.left_out`: name -> reason), already logged when they were left
        out: counted here, and written by the main process only (every process prepares the same rows).
        """
        self.before_training += len(left_out)
        if int(os.environ.get("RANK", "0")) == 0:
            self._write([{"sample": name, "error": error, "stage": "before training"}
                         for name, error in left_out.items()])  # fmt: skip

    def _write(self, records: list[dict]) -> None:
        if not self.log_dir or not records:
            return
        rank = int(os.environ.get("RANK", "0"))
        os.makedirs(self.log_dir, exist_ok=True)
        with open(os.path.join(self.log_dir, f"skipped-samples-rank{rank}.jsonl"), "a", encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)


class _ConversationCollator:
    """Shared machinery: one sample -> token ids and labels; samples -> a padded or a packed batch."""

    image_keys: tuple[str, ...] = ()

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        padding_side: str = "right",
        packing: bool = False,
        source=None,
        skipped_log_dir: str | None = None,
    ):
        if padding_side not in ("left", "right"):
            raise ValueError(f"`padding_side` must be 'left' or 'right', got {padding_side!r}.")
        if packing and (not max_length or source is None):
            raise ValueError("Packing needs `max_length` (the packed sequence length) and `source` (the rows packed).")
        self.processor = processor
        self.max_length = max_length
        self.padding_side = padding_side
        self.packing = packing
        self.source = source
        self.skipped = SkippedSamples(skipped_log_dir)
        self._rng = np.random.default_rng(0)

    # --- one sample ------------------------------------------------------------------------------------------------
    def conversation(self, row: dict[str, Any]) -> list[dict]:
        messages = conversation_of(row)
        num_images = self.num_images(row)
        return with_image_items(messages, num_images) if num_images else messages

    def num_images(self, row: dict[str, Any]) -> int:
        raise NotImplementedError

    def image_inputs(self, row: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments that give the processor this row's images (raises `ValueError` if unreadable)."""
        raise NotImplementedError

    def encode(self, row: dict[str, Any]) -> dict[str, Any]:
        """`input_ids` and `labels` (lists) of one sample, plus its image tensors."""
        conversation = self.conversation(row)
        image_kwargs = self.image_inputs(row) if self.num_images(row) else {}
        out = self.processor.apply_chat_template(
            [conversation],
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            processor_kwargs={"padding": False, "return_tensors": "pt"},
            **image_kwargs,
        )
        input_ids = out["input_ids"][0]
        assistant = torch.as_tensor(out["assistant_masks"][0], dtype=torch.bool)
        labels = input_ids.masked_fill(~assistant, -100)
        encoded = {"input_ids": input_ids, "labels": labels}
        for key in self.image_keys + ("image_grid_hw",):
            if key in out:
                encoded[key] = out[key]
        return encoded

    # --- a batch -------------------------------------------------------------------------------------------------
    def _try_encode(self, row: dict[str, Any], name: str) -> dict[str, Any] | None:
        return self.encode(row)

    def _refill(self) -> list[dict[str, Any]]:
        """A readable sample from `source` for a batch whose samples were all left out."""
        if self.source is None:
            raise ValueError("Every sample of the batch was unreadable and there is no `source` to draw another from.")
        for _ in range(min(1000, len(self.source))):
            index = int(self._rng.integers(len(self.source)))
            row = self.source[index]
            encoded = self._try_encode(row, f"row {index}")
            if encoded is not None and (self.max_length is None or len(encoded["input_ids"]) <= self.max_length):
                return [encoded]
        raise ValueError("Every sample of the batch was unreadable, and so were 1000 others drawn from `source`.")

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.packing:
            groups = []
            for row in rows:
                if "pack" not in row:
                    raise ValueError("A packing collator takes `{'pack': [row indices]}` rows (packed_index_dataset).")
                group = []
                for index in row["pack"]:
                    encoded = self._try_encode(self.source[int(index)], f"row {int(index)}")
                    if encoded is not None:
                        group.append(encoded)
                groups.append(group)
            if not any(groups):
                groups[0] = self._refill()
            return self._packed_batch(groups)
        samples = []
        for position, row in enumerate(rows):
            name = f"row id {row['id']!r}" if row.get("id") is not None else f"sample {position} of the batch"
            encoded = self._try_encode(row, name)
            if encoded is not None:
                samples.append(encoded)
        if not samples:
            samples = self._refill()
        return self._padded_batch(samples)

    def _images(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out = {}
        with_images = [s for s in samples if "image_grid_hw" in s]
        if with_images:
            for key in self.image_keys + ("image_grid_hw",):
                out[key] = torch.cat([torch.as_tensor(s[key]) for s in with_images])
        return out

    def _padded_batch(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(s["input_ids"]) for s in samples)
        if self.max_length is not None and longest > self.max_length:
            raise ValueError(
                f"A sample is {longest} tokens long, over max_length={self.max_length}; cutting it could cut into its "
                "image tokens. Raise max_length or drop the sample."
            )
        pad_id = self.processor.tokenizer.pad_token_id
        input_ids = torch.full((len(samples), longest), pad_id, dtype=torch.long)
        labels = torch.full((len(samples), longest), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), longest), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            span = slice(longest - n, longest) if self.padding_side == "left" else slice(0, n)
            input_ids[row, span] = sample["input_ids"]
            labels[row, span] = sample["labels"]
            attention_mask[row, span] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, **self._images(samples)}

    def _packed_batch(self, groups: list[list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        length = self.max_length
        pad_id = self.processor.tokenizer.pad_token_id
        input_ids = torch.full((len(groups), length), pad_id, dtype=torch.long)
        labels = torch.full((len(groups), length), -100, dtype=torch.long)
        position_ids = torch.zeros((len(groups), length), dtype=torch.long)
        for row, group in enumerate(groups):
            start = 0
            for sample in group:
                n = len(sample["input_ids"])
                if start + n > length:
                    raise ValueError(
                        f"A pack holds {start + n} tokens, over max_length={length}: its lengths were counted with "
                        "another processor than the collator's."
                    )
                input_ids[row, start : start + n] = sample["input_ids"]
                labels[row, start : start + n] = sample["labels"]
                position_ids[row, start : start + n] = torch.arange(n)
                start += n
            position_ids[row, start:] = torch.arange(length - start)  # the padding is a segment of its own
        samples = [sample for group in groups for sample in group]
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, **self._images(samples)}


class ViQCodesCollator(_ConversationCollator):
    """
    Collate rows of a code dataset (`image_codes`, `image_grid_hw` and a conversation) into VLM training batches.

    The text is rendered with the processor's own chat template, each image placeholder is expanded by the processor
    for its grid, and only assistant turns are supervised (`labels` is `-100` elsewhere, padding included).

    A row holds:

    * `image_codes`: one integer sequence per image (the `uint16` codes `viq extract` writes) and `image_grid_hw`:
      one `[h, w]` per image (any grid: odd sides are fine);
    * either `messages` (TRL's conversational format: `role` + `content`, a string or a list of `{"type": "text" |
      "image"}` items; if the conversation has no image items, one per image is put in front of the first user
      turn) or `prompt` + `completion` (strings, or conversations).

    Args:
        processor ([`ViQProcessor`]): the VLM's processor.
        max_length (`int`, *optional*): refuse (rather than truncate into image tokens) longer samples; with
            `packing`, the fixed length of the packed sequences.
        padding_side (`str`, *optional*, defaults to `"right"`).
        packing (`bool`, *optional*, defaults to `False`): rows are `{"pack": [row indices of source]}`.
        source (`datasets.Dataset`, *optional*): the code dataset the packs index (packing).
        skipped_log_dir (`str`, *optional*): where to record left-out samples (`skipped-samples-rank<r>.jsonl`).
        codebook_size (`int`, *optional*): the VLM tokenizer's number of codes; a code outside `[0, codebook_size)`
            is refused here, on the CPU, with the row named (the model's training forward reads no values back).

    Returns (per call): `input_ids`, `labels` `(batch, length)` and `attention_mask` (padded) or `position_ids`
    (packed), `image_codes` (packed, int64) and `image_grid_hw` `(num_images, 2)`.
    """

    image_keys = ("image_codes",)

    def __init__(self, processor, *args, codebook_size: int | None = None, **kwargs):
        super().__init__(processor, *args, **kwargs)
        self.codebook_size = codebook_size

    def num_images(self, row: dict[str, Any]) -> int:
        return len(row.get("image_grid_hw") or [])

    def image_inputs(self, row: dict[str, Any]) -> dict[str, Any]:
        codes, grids = row.get("image_codes") or [], row.get("image_grid_hw") or []
        if len(codes) != len(grids):
            raise ValueError(f"A row has codes for {len(codes)} images but {len(grids)} grids.")
        arrays = [np.asarray(image_codes, dtype=np.int64) for image_codes in codes]
        limit = self.codebook_size
        for index, array in enumerate(arrays):
            if limit is not None and array.size and (array.min() < 0 or array.max() >= limit):
                raise ValueError(
                    f"Row {row.get('id', '')!r}: image {index} has codes {int(array.min())}..{int(array.max())}, "
                    f"outside [0, {limit}) of this VLM's tokenizer; extract the codes again with its tokenizer."
                )
        return {"image_codes": arrays, "image_grid_hw": [list(grid) for grid in grids]}


class ViQImageCollator(_ConversationCollator):
    """
    Collate rows with images (TRL's vision format: `images` — paths, PIL images, bytes or `datasets` image dicts —
    or `image`, and a conversation) into VLM training batches of `pixel_values` + `image_grid_hw`.

    As [`ViQCodesCollator`], plus: a sample whose image cannot be read (missing, corrupt, truncated, refused by the
    image processor) is logged, left out and counted in `self.skipped` instead of stopping the epoch.
    """

    image_keys = ("pixel_values",)

    def num_images(self, row: dict[str, Any]) -> int:
        return num_images_of(row, "pixels")

    def image_inputs(self, row: dict[str, Any]) -> dict[str, Any]:
        from ..models.viq.image_processing_viq import open_image

        images = row.get("images")
        if images is None and row.get("image") is not None:
            images = [row["image"]]
        opened = []
        for image in images:
            try:
                image = open_image(image)
                # the processor's own geometry checks (empty image, aspect ratio over 200, size limits), on the size
                self.processor.image_processor.get_resized_size(image.height, image.width)
            except (ValueError, OSError) as error:
                raise UnreadableImageError(str(error).splitlines()[0] or type(error).__name__) from error
            opened.append(image)
        return {"images": [opened]}

    def _try_encode(self, row: dict[str, Any], name: str) -> dict[str, Any] | None:
        try:
            return self.encode(row)
        except UnreadableImageError as error:
            self.skipped.add(name, str(error))
            return None


__all__ = ["SkippedSamples", "UnreadableImageError", "ViQCodesCollator", "ViQImageCollator", "with_image_items"]
