"""The ViQ stages read datasets and LLaVA files with the readers of `training/sft.py` and `viq extract`, by the same
rules: relative image paths against the file's folder (or `image_folder`), `img_path` records, `messages` with list
contents, and a Hub dataset that cannot be reached failing at once. CPU, no network."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from transformers_viq import ViQImageProcessor
from transformers_viq.hub_utils import HubUnreachableError
from transformers_viq.testing import qwen_tokenizer
from transformers_viq.training import ResolutionSchedule, StageImageTextCollator, load_training_dataset


def llava_file(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "images").mkdir(parents=True)
    for name, size in (("a.png", (32, 48)), ("b.png", (48, 32))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / "data" / "images" / name)
    records = [
        {"id": "one", "image": "images/a.png",
         "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A square."}]},
        {"id": "two", "image": [{"img_path": "images/b.png", "resize": "384x16"}],
         "conversations": [{"from": "human", "value": "Describe <image>"}, {"from": "gpt", "value": "Tall noise."}]},
    ]  # fmt: skip
    path = tmp_path / "data" / "train.json"
    path.write_text(json.dumps(records))
    return path


def test_a_llava_file_reads_as_sft_reads_it_and_its_rows_collate(tmp_path, monkeypatch):
    path = llava_file(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the file's folder, not the working folder
    dataset = load_training_dataset(str(path))
    assert dataset["id"] == ["one", "two"]
    assert dataset["images"] == [[str(tmp_path / "data" / "images" / "a.png")],
                                 [str(tmp_path / "data" / "images" / "b.png")]]  # fmt: skip
    assert dataset[0]["messages"][0]["content"][0]["type"] == "image"  # list contents, as TRL's format

    tokenizer = qwen_tokenizer()
    schedule = ResolutionSchedule([{"until": 1.0, "max_pixels": 64 * 64, "token_window": 2}])
    collator = StageImageTextCollator(tokenizer, ViQImageProcessor(), schedule, min_pixels=16 * 16)
    batch = collator([dataset[0], dataset[1]])
    for ids, labels, answer in zip(batch["input_ids"], batch["labels"], ("A square.", "Tall noise.")):
        assert tokenizer.decode(ids[labels != -100]) == answer + "<|im_end|>\n"  # only the assistant turn
    assert "What is it?" in tokenizer.decode(batch["input_ids"][0]) and "<image>" not in tokenizer.decode(
        batch["input_ids"][0])

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data" / "images").rename(tmp_path / "elsewhere" / "images")  # LLaVA's --image_folder
    dataset = load_training_dataset(str(path), image_folder=str(tmp_path / "elsewhere"))
    assert dataset["images"][0] == [str(tmp_path / "elsewhere" / "images" / "a.png")]


def test_a_hub_dataset_that_cannot_be_reached_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="someone/not-cached"):
        load_training_dataset("someone/not-cached")
    assert time.perf_counter() - started < 5
    with pytest.raises(FileNotFoundError, match="no such LLaVA JSON/JSONL file|no such dataset"):
        load_training_dataset("./missing/train.json")
