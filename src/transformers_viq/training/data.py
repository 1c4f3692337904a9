# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Training data for a ViQ VLM: the three ways in, checked before the first step, and packed.

[`load_sft_dataset`] reads

* a code dataset written by `viq extract` (a folder with `viq_codes.json`): codes instead of pixels, so the 1.1B trunk
  never runs; codes made with another codebook than the model's are refused, naming both;
* a LLaVA-style JSON/JSONL file (LLaVA-Pretrain, LLaVA-OneVision, ...), through [`load_llava_json`];
* a `datasets` dataset in TRL's conversational vision format (`images` + `messages`, or `prompt` + `completion`): a
  `save_to_disk` folder, a local data folder/file or a Hub name;

and [`check_conversations`] refuses, before training starts, a sample whose number of image items differs from its
number of images (naming the sample), so no such sample can stop an epoch half-way.

Packing (the paper packs image-text pairs into fixed 4k and 16k sequences): [`sample_lengths`] counts each sample's
tokens without decoding any image (codes: from the grids; pixels: from the image headers), [`pack_by_length`] fills
sequences of `max_length` tokens best-fit-decreasing, and [`packed_index_dataset`] is the training dataset of packs
(lists of row indices) that the collators expand ([`~transformers_viq.training.ViQCodesCollator`] and
[`~transformers_viq.training.ViQImageCollator`] with `source=`); attention never crosses samples (each sample's
positions restart at 0, which the model turns into a block-diagonal causal mask).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..image_io import image_size
from ..logging_utils import get_logger


logger = get_logger(__name__)

CODE_COLUMNS = ("image_codes", "image_grid_hw")
PIXEL_COLUMNS = ("images", "image")


@dataclass
class SFTData:
    """A training dataset and what it holds."""

    dataset: Any  # datasets.Dataset
    kind: str  # "codes" or "pixels"
    source: str  # where it was read from
    code_metadata: dict | None = None  # viq_codes.json of a code dataset
    skipped: dict[str, list] = field(default_factory=dict)  # reason -> row indices left out before training
    left_out: dict[str, str] = field(default_factory=dict)  # each row left out before training (its name) -> why


def undecoded_images(dataset):
    """The dataset with its image columns left undecoded (`{"bytes", "path"}` dicts): the collators decode them one
    by one, so a corrupt image is one skipped sample, not an error raised by `datasets` in the middle of an epoch."""
    import datasets

    for name in PIXEL_COLUMNS:
        feature = dataset.features.get(name)
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
        elif isinstance(getattr(feature, "feature", None), datasets.Image) and feature.feature.decode:
            dataset = dataset.cast_column(name, datasets.List(datasets.Image(decode=False)))
    return dataset


def _is_llava_file(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith((".json", ".jsonl"))


def load_sft_dataset(
    source: Any,
    *,
    split: str | None = None,
    image_folder: str | None = None,
    viq_config: Any = None,
) -> SFTData:
    r"""
    Read training data for a ViQ VLM from any of the three supported sources (see the module docstring).

    Args:
        source: a code-dataset folder, a LLaVA JSON/JSONL file, a `datasets.Dataset`, a `save_to_disk` folder, or a
            name/path for `datasets.load_dataset`.
        split (`str`, *optional*): the split to use when the source has several.
        image_folder (`str`, *optional*): the folder relative image paths of a LLaVA file are under (default: the
            file's folder).
        viq_config (`ViQConfig`, *optional*): the model's tokenizer config; codes from another codebook are refused.

    Raises:
        `IncompatibleCodebookError` (a `ValueError`) for codes of another codebook; `ValueError` for a dataset with
        neither images nor codes, or malformed conversations; `FileNotFoundError` for a missing path.
    """
    import datasets

    from ..extraction import load_code_dataset, load_source_dataset, read_code_metadata
    from ..llava_data import load_llava_json

    if isinstance(source, datasets.Dataset):
        dataset, name, meta = source, source.info.dataset_name or "<Dataset>", None
    else:
        path = os.path.expanduser(os.fspath(source))
        name = path
        meta = None
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "viq_codes.json")):
            meta = read_code_metadata(path)
            dataset = load_code_dataset(path, config=viq_config)
        elif _is_llava_file(path):
            dataset = load_llava_json(path, image_folder=image_folder)
        else:
            dataset = load_source_dataset(source, split)
    columns = set(dataset.column_names)
    if set(CODE_COLUMNS) <= columns:
        kind = "codes"
    elif columns & set(PIXEL_COLUMNS):
        kind = "pixels"
    else:
        raise ValueError(
            f"{name}: a training dataset needs images (`images` or `image`, TRL's vision format) or codes "
            f"(`image_codes` + `image_grid_hw`, from `viq extract`); it has {sorted(columns)}."
        )
    if kind == "pixels":
        dataset = undecoded_images(dataset)
    if not ({"messages"} <= columns or {"prompt", "completion"} <= columns):
        raise ValueError(
            f"{name}: a training dataset needs `messages` or `prompt` + `completion`; it has {sorted(columns)}."
        )
    return SFTData(dataset=dataset, kind=kind, source=name, code_metadata=meta)


# ------------------------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------------------------
def count_image_items(messages: Sequence[dict] | None) -> int | None:
    """Image items in a conversation; `None` when no turn has structured (list) content (TRL then inserts them)."""
    if not messages:
        return None
    structured, count = False, 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            structured = True
            count += sum(1 for item in content if isinstance(item, dict) and item.get("type") == "image")
    return count if structured else None


def conversation_of(row: dict[str, Any]) -> list[dict]:
    """A row's conversation: `messages`, or `prompt` + `completion` (strings or conversations) joined."""
    if row.get("messages") is not None:
        return list(row["messages"])
    prompt, completion = row.get("prompt"), row.get("completion")
    if prompt is None or completion is None:
        raise ValueError(f"A row needs `messages`, or `prompt` and `completion`; it has {sorted(row)}.")
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    return prompt + list(completion)


def with_image_items(messages: list[dict], num_images: int) -> list[dict]:
    """The conversation with `num_images` image items in front of the first user turn, unless it already has them."""
    found = count_image_items(messages) or 0
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


def num_images_of(row: dict[str, Any], kind: str) -> int:
    if kind == "codes":
        return len(row.get("image_grid_hw") or [])
    images = row.get("images")
    if images is None and row.get("image") is not None:
        return 1
    return len(images or [])


def _row_name(row: dict[str, Any], index: int) -> str:
    sample_id = row.get("id")
    return f"row {index}" + (f" (id {sample_id!r})" if sample_id is not None else "")


def check_conversations(dataset, kind: str, batch_size: int = 1000) -> None:
    """
    Refuse, before training, a row whose conversation has a different number of image items than the row has images
    (or codes), or that has no assistant turn to learn from. The error names the row (and its `id`).
    """
    columns = [c for c in ("id", "messages", "prompt", "completion", *CODE_COLUMNS[1:], *PIXEL_COLUMNS)
               if c in dataset.column_names]  # fmt: skip
    start = 0
    for batch in undecoded_images(dataset.select_columns(columns)).iter(batch_size=batch_size):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        for offset, row in enumerate(rows):
            index = start + offset
            try:
                conversation = conversation_of(row)
            except ValueError as error:
                raise ValueError(f"{_row_name(row, index)}: {error}") from None
            found, expected = count_image_items(conversation), num_images_of(row, kind)
            if found is not None and found != expected:
                raise ValueError(
                    f"{_row_name(row, index)} has {found} image items in its conversation but {expected} images; "
                    "each image needs exactly one image item (one <image> marker in LLaVA data)."
                )
            if found is None and expected and not any(m.get("role") == "user" for m in conversation):
                raise ValueError(f"{_row_name(row, index)} has {expected} images but no user turn to put them in.")
            if not any(m.get("role") == "assistant" for m in conversation):
                raise ValueError(f"{_row_name(row, index)} has no assistant turn: nothing to learn from.")
        start += len(rows)


# ------------------------------------------------------------------------------------------------------------------
# Lengths and packing
# ------------------------------------------------------------------------------------------------------------------
def _sample_lengths_batch(batch, processor, kind: str, image_kwargs: dict) -> dict[str, list]:
    from ..models.viq_qwen.configuration_viq_qwen import get_num_image_tokens

    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    lengths, errors = [], []
    for row in rows:
        try:
            if kind == "codes":
                grids = [tuple(grid) for grid in row.get("image_grid_hw") or []]
            else:
                images = row.get("images")
                images = [row["image"]] if images is None and row.get("image") is not None else (images or [])
                patch = processor.image_processor.patch_size
                grids = []
                for image in images:
                    height, width = image_size(image)
                    out_h, out_w = processor.image_processor.get_resized_size(height, width, image_kwargs)
                    grids.append((out_h // patch, out_w // patch))
            conversation = conversation_of(row)
            if grids and count_image_items(conversation) is None:
                conversation = with_image_items(conversation, len(grids))
            text = processor.apply_chat_template(conversation, tokenize=False)
            ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
            image_tokens = sum(get_num_image_tokens(h, w, processor.projector_type) for h, w in grids)
            lengths.append(len(ids) - len(grids) + image_tokens)
            errors.append(None)
        except ValueError as error:
            lengths.append(-1)
            errors.append(str(error))
    return {"_length": lengths, "_error": errors}


def sample_lengths(dataset, processor, kind: str, num_proc: int | None = None) -> tuple[list[int], dict[int, str]]:
    """
    Each row's length in tokens once its images are expanded, without decoding any image: from the grids of a code
    dataset, from the image headers (and the processor's resize rules) of a pixel dataset.

    Returns:
        `(lengths, errors)`: `lengths[i]` is `-1` for a row whose images cannot be read, and `errors[i]` says why.
    """
    columns = [c for c in ("messages", "prompt", "completion", "image_grid_hw", *PIXEL_COLUMNS)
               if c in dataset.column_names]  # fmt: skip
    view = undecoded_images(dataset.select_columns(columns))  # only the image headers are read here
    result = view.map(
        _sample_lengths_batch,
        batched=True,
        batch_size=256,
        num_proc=num_proc,
        fn_kwargs={"processor": processor, "kind": kind, "image_kwargs": {}},
        remove_columns=columns,
        desc="Counting tokens",
        load_from_cache_file=False,
        # hashing the processor for a fingerprint costs seconds; the lengths are never cached anyway
        new_fingerprint=f"viq-lengths-{getattr(dataset, '_fingerprint', 'dataset')}",
    )
    lengths = list(result["_length"])
    errors = {index: error for index, error in enumerate(result["_error"]) if error is not None}
    return lengths, errors


def pack_by_length(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """
    Best-fit-decreasing packing of rows (by their token lengths) into sequences of at most `max_length` tokens.

    Every row of length `1..max_length` lands in exactly one pack; rows that cannot fit (length over `max_length`) or
    that have no length (negative) are left out: select them beforehand. Packs come out in a deterministic order
    (the sampler shuffles them).
    """
    import bisect

    if max_length <= 0:
        raise ValueError(f"`max_length` must be positive to pack, got {max_length}.")
    order = sorted((i for i, n in enumerate(lengths) if 0 < n <= max_length), key=lambda i: (-lengths[i], i))
    packs: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining room, pack index), sorted
    for index in order:
        need = lengths[index]
        position = bisect.bisect_left(free, (need, -1))
        if position < len(free):
            room, pack = free.pop(position)
        else:
            room, pack = max_length, len(packs)
            packs.append([])
        packs[pack].append(index)
        if room - need > 0:
            bisect.insort(free, (room - need, pack))
    return packs


def packed_index_dataset(packs: list[list[int]]):
    """The training dataset of packs: one row `{"pack": [row indices]}` per fixed-length sequence."""
    import datasets

    return datasets.Dataset.from_dict(
        {"pack": packs}, features=datasets.Features({"pack": datasets.List(datasets.Value("int64"))})
    )


def run_on_main_process(compute: Callable[[], Any]) -> Any:
    """
    `compute()` once, on the main process, and its result on every process: under an initialised
    `torch.distributed` process group of several processes, rank 0 computes and broadcasts the result (or the error it
    raised, raised again everywhere, so that no process waits for a result that will not come); otherwise this process
    computes.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return compute()
    payload: list = [None]
    error = None
    if dist.get_rank() == 0:
        try:
            payload = [("result", compute())]
        except Exception as raised:  # noqa: BLE001 - handed to the other processes, then raised here too
            error, payload = raised, [("error", raised)]
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    kind, value = payload[0]
    if kind == "error":
        raise value
    return value


def prepare_for_training(
    data: SFTData,
    processor,
    *,
    max_length: int | None = None,
    packing: bool = False,
    num_proc: int | None = None,
):
    """
    Check the conversations, leave out (logged, listed by reason in `data.skipped` and by name with the reason in
    `data.left_out`, for the collator's `skipped.add_left_out`) rows whose images cannot be read or that are longer
    than `max_length`, and pack when asked. Under several processes (an initialised `torch.distributed` group) the
    checks and the token counts (tokenising every row, reading every image header) run once, on the main process,
    and the others reuse them ([`run_on_main_process`]).

    Returns:
        The dataset to give the trainer: `data.dataset` itself, a selection of it, or (packing) an index dataset of
        packs over `data.dataset`.
    """
    if packing and not max_length:
        raise ValueError("Packing needs `max_length`: the fixed length of the packed sequences (e.g. 4096).")

    def check_and_count():
        check_conversations(data.dataset, data.kind)
        return sample_lengths(data.dataset, processor, data.kind, num_proc=num_proc) if max_length else None

    counted = run_on_main_process(check_and_count)
    if not packing and not max_length:
        return data.dataset
    lengths, errors = counted
    errors = {int(index): error for index, error in errors.items()}
    for index, error in errors.items():
        logger.warning(f"Leaving out row {index}: {error}")
    long_rows = [index for index, n in enumerate(lengths) if n > max_length]
    if long_rows:
        logger.warning(
            f"Leaving out {len(long_rows)} rows longer than max_length={max_length} tokens (cutting them could cut "
            f"into their image tokens), e.g. row {long_rows[0]} with {lengths[long_rows[0]]} tokens."
        )
    data.skipped = {"unreadable": sorted(errors), "too_long": long_rows}
    reasons = {index: f"unreadable: {error}" for index, error in errors.items()}
    reasons.update({index: f"longer than max_length={max_length} tokens ({lengths[index]} tokens)"
                    for index in long_rows})  # fmt: skip
    ids = data.dataset["id"] if reasons and "id" in data.dataset.column_names else None
    data.left_out = {_row_name({"id": ids[index] if ids is not None else None}, index): reasons[index]
                     for index in sorted(reasons)}  # fmt: skip
    if packing:
        packs = pack_by_length(lengths, max_length)
        kept = sum(len(pack) for pack in packs)
        fill = sum(lengths[i] for pack in packs for i in pack) / max(1, len(packs) * max_length)
        logger.info(f"Packed {kept} rows into {len(packs)} sequences of {max_length} tokens ({fill:.0%} filled).")
        return packed_index_dataset(packs)
    keep = [index for index, n in enumerate(lengths) if 0 < n <= max_length]
    return data.dataset if len(keep) == len(lengths) else data.dataset.select(keep)


__all__ = [
    "SFTData",
    "undecoded_images",
    "check_conversations",
    "conversation_of",
    "count_image_items",
    "with_image_items",
    "image_size",
    "load_sft_dataset",
    "pack_by_length",
    "packed_index_dataset",
    "prepare_for_training",
    "run_on_main_process",
    "sample_lengths",
]
