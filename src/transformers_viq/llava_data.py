# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""LLaVA-style JSON/JSONL -> TRL's conversational vision rows (`images` + `messages`).

The LLaVA family (LLaVA-Pretrain, LLaVA-Instruct, LLaVA-NeXT, LLaVA-OneVision, and the ViQ training code) stores a
sample as

    {"id": "000000033471",
     "image": "coco/train2017/000000033471.jpg",          # or a list of paths, or [{"img_path": ..., ...}, ...]
     "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                       {"from": "gpt", "value": "The bus is white and red."}]}

in a JSON list or one object per line (JSONL). [`load_llava_json`] turns a file into a `datasets.Dataset` whose rows
are what TRL's `SFTTrainer` and `viq extract` read:

    id        str                       the sample's id (its position in the file, `"#<n>"`, when it has none)
    images    list[str]                 image paths, resolved against `image_folder` (default: the file's folder)
    messages  list[{role, content}]     role `user` / `assistant` / `system`; content a list of
                                        `{"type": "image"}` and `{"type": "text", "text": ...}` items, each `<image>`
                                        marker turned into an image item where it stood

Images are not opened here (a corrupt or missing file is the reader's business: the trainer's collator or
`viq extract` logs and skips it). A sample whose number of `<image>` markers differs from its number of images raises
a `ValueError` naming the sample.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

from .logging_utils import get_logger


logger = get_logger(__name__)

IMAGE_MARKER = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_MARKER_RE = re.compile(re.escape(IMAGE_MARKER))
_CHUNK = 10_000  # rows converted to Arrow at a time: the Python objects of a 2M-sample file never all coexist


def message_features():
    """The `datasets` features of the `messages` column (shared with the code datasets that carry it)."""
    import datasets

    item = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    return datasets.List({"role": datasets.Value("string"), "content": datasets.List(item)})


def llava_features():
    """The `datasets.Features` of the rows [`load_llava_json`] returns."""
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "images": datasets.List(datasets.Value("string")),
            "messages": message_features(),
        }
    )


def _content(text: str) -> list[dict[str, Any]]:
    """One turn's text -> content items, each `<image>` an image item in place (text kept verbatim around it)."""
    items: list[dict[str, Any]] = []
    pieces = _MARKER_RE.split(text)
    for position, piece in enumerate(pieces):
        if position:
            items.append({"type": "image", "text": None})
        if piece:
            items.append({"type": "text", "text": piece})
    return items


def llava_to_messages(conversations: list[dict[str, Any]], num_images: int, sample_id: Any = None) -> list[dict]:
    r"""
    One LLaVA conversation -> TRL conversational messages.

    Args:
        conversations (`list[dict]`): turns `{"from": "human" | "gpt" | "system", "value": str}` (`"role"` /
            `"content"` are accepted too), with `<image>` markers where the images go.
        num_images (`int`): how many images the sample has.
        sample_id (*optional*): named in errors.

    Returns:
        `list[dict]`: `{"role": "user" | "assistant" | "system", "content": [{"type": "image", "text": None} |
        {"type": "text", "text": str}, ...]}` per turn.

    Raises:
        `ValueError`: if the number of `<image>` markers is not `num_images`, a turn has an unknown speaker or no
        text, or the conversation has no assistant turn.
    """
    where = f"sample {sample_id!r}" if sample_id is not None else "the sample"
    if not isinstance(conversations, list) or not conversations:
        raise ValueError(f"{where}: `conversations` must be a non-empty list of turns, got {conversations!r:.80}.")
    messages, markers = [], 0
    for turn in conversations:
        if not isinstance(turn, dict):
            raise ValueError(f"{where}: a turn must be a dict with `from` and `value`, got {turn!r:.80}.")
        speaker = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        role = ROLES.get(str(speaker).lower()) if speaker is not None else None
        if role is None:
            raise ValueError(f"{where}: unknown speaker {speaker!r}; expected one of {sorted(ROLES)}.")
        if not isinstance(text, str):
            raise ValueError(f"{where}: the {speaker!r} turn has no text (`value`), got {text!r:.80}.")
        markers += text.count(IMAGE_MARKER)
        messages.append({"role": role, "content": _content(text)})
    if markers != num_images:
        raise ValueError(
            f"{where} has {markers} {IMAGE_MARKER} markers but {num_images} images; each image needs exactly one "
            f"{IMAGE_MARKER} in the conversation."
        )
    if not any(message["role"] == "assistant" for message in messages):
        raise ValueError(f"{where} has no assistant (`gpt`) turn: nothing to learn from.")
    return messages


def _image_paths(sample: dict[str, Any], base: str, where: str) -> list[str]:
    value = sample.get("image", sample.get("images"))
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    paths = []
    for item in values:
        if isinstance(item, dict):  # the ViQ training layout: {"img_path": ..., "resize": "384x16"}
            item = item.get("img_path", item.get("path"))
        if not isinstance(item, str) or not item:
            raise ValueError(f"{where}: an image must be a path (str), got {item!r:.80}.")
        paths.append(os.path.normpath(os.path.join(base, os.path.expanduser(item))))
    return paths


def _read_samples(path: str) -> Iterator[dict[str, Any]]:
    """The samples of a JSON list or a JSONL file, in order."""
    with open(path, encoding="utf-8") as handle:
        head = handle.read(4096).lstrip()
        handle.seek(0)
        if head.startswith("["):
            try:
                samples = json.load(handle)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON: {error}") from error
            yield from samples
            return
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error})") from error


def _rows(samples: Iterable[dict[str, Any]], base: str, path: str) -> Iterator[dict[str, Any]]:
    for index, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise ValueError(f"{path}: sample #{index} is not a JSON object but {type(sample).__name__}.")
        sample_id = sample.get("id")
        sample_id = f"#{index}" if sample_id is None else str(sample_id)
        where = f"sample {sample_id!r} (#{index} in {path})"
        images = _image_paths(sample, base, where)
        if "conversations" not in sample:
            raise ValueError(f"{where} has no `conversations`; it has {sorted(sample)}.")
        try:
            messages = llava_to_messages(sample["conversations"], len(images), sample_id=sample_id)
        except ValueError as error:
            raise ValueError(f"{error} [#{index} in {path}]") from None
        yield {"id": sample_id, "images": images, "messages": messages}


def load_llava_json(path: str | os.PathLike, image_folder: str | os.PathLike | None = None):
    r"""
    Read a LLaVA-style JSON (a list) or JSONL (one sample per line) file as a `datasets.Dataset` of TRL
    conversational vision rows (`id`, `images`, `messages`; see the module docstring).

    Args:
        path (`str` or `os.PathLike`): the JSON or JSONL file.
        image_folder (`str` or `os.PathLike`, *optional*): folder that relative image paths are relative to (LLaVA's
            `--image_folder`); defaults to the folder of `path`. Absolute paths are kept.

    Raises:
        `FileNotFoundError`: if `path` does not exist.
        `ValueError`: if the file is not JSON/JSONL, or a sample is malformed or has a different number of `<image>`
            markers than images (the message names the sample's id and position).
    """
    import datasets

    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such LLaVA JSON/JSONL file: {path}")
    base = os.path.abspath(os.path.expanduser(os.fspath(image_folder)) if image_folder else os.path.dirname(path))
    features = llava_features()
    parts, chunk = [], {"id": [], "images": [], "messages": []}
    for row in _rows(_read_samples(path), base, path):
        for key, value in row.items():
            chunk[key].append(value)
        if len(chunk["id"]) >= _CHUNK:
            parts.append(datasets.Dataset.from_dict(chunk, features=features))
            chunk = {key: [] for key in chunk}
    if chunk["id"] or not parts:
        parts.append(datasets.Dataset.from_dict(chunk, features=features))
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    logger.info(f"Read {len(dataset)} samples from {path} (images under {base}).")
    return dataset


__all__ = ["IMAGE_MARKER", "llava_features", "llava_to_messages", "load_llava_json", "message_features"]
