"""LLaVA JSON/JSONL -> TRL conversational vision rows: markers in place, paths resolved, mismatches named."""

from __future__ import annotations

import json
import os

import pytest

from transformers_viq.llava_data import llava_to_messages, load_llava_json


SAMPLES = [
    {"id": "a1", "image": "imgs/a.jpg",
     "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."},
                       {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Grey."}]},
    {"id": 7, "image": ["b.png", "/abs/c.png"],
     "conversations": [{"from": "human", "value": "Left <image> right <image>, same?"},
                       {"from": "gpt", "value": "No."}]},
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                       {"from": "gpt", "value": "Hello."}]},
    {"id": "v", "image": [{"img_path": "d.jpg", "resize": "384x16"}],
     "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "<image> is shown"}][:1]
     + [{"from": "gpt", "value": "A dog."}]},
]  # fmt: skip


def write(tmp_path, samples, jsonl=False):
    path = tmp_path / ("data.jsonl" if jsonl else "data.json")
    if jsonl:
        path.write_text("\n".join(json.dumps(sample) for sample in samples) + "\n\n")
    else:
        path.write_text(json.dumps(samples))
    return path


@pytest.mark.parametrize("jsonl", [False, True])
def test_rows_are_trl_conversational_vision_rows(tmp_path, jsonl):
    dataset = load_llava_json(write(tmp_path, SAMPLES, jsonl))
    assert set(dataset.column_names) == {"id", "images", "messages"} and len(dataset) == 4
    first = dataset[0]
    assert first["id"] == "a1"
    assert first["images"] == [str(tmp_path / "imgs" / "a.jpg")]  # relative to the file's folder
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user", "assistant"]
    assert first["messages"][0]["content"] == [
        {"type": "image", "text": None},
        {"type": "text", "text": "\nWhat is it?"},
    ]
    assert first["messages"][1]["content"] == [{"type": "text", "text": "A cat."}]
    second = dataset[1]
    assert second["id"] == "7" and second["images"] == [str(tmp_path / "b.png"), "/abs/c.png"]
    assert [item["type"] for item in second["messages"][0]["content"]] == ["text", "image", "text", "image", "text"]
    assert "".join(item["text"] or "<image>" for item in second["messages"][0]["content"]) == (
        "Left <image> right <image>, same?"
    )
    third = dataset[2]
    assert third["id"] == "#2" and third["images"] == [] and third["messages"][0]["role"] == "system"
    assert dataset[3]["images"] == [str(tmp_path / "d.jpg")]


def test_image_folder_overrides_the_files_folder(tmp_path):
    dataset = load_llava_json(write(tmp_path, SAMPLES[:1]), image_folder=tmp_path / "elsewhere")
    assert dataset[0]["images"] == [os.path.join(str(tmp_path), "elsewhere", "imgs", "a.jpg")]


def test_marker_count_mismatch_names_the_sample(tmp_path):
    bad = dict(SAMPLES[1], id="bad-42", image=["b.png"])
    with pytest.raises(ValueError, match=r"sample 'bad-42'.* 2 <image> markers but 1 images.*#1 in"):
        load_llava_json(write(tmp_path, [SAMPLES[0], bad]))
    with pytest.raises(ValueError, match="0 <image> markers but 1 images"):
        llava_to_messages([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}], 1, sample_id="x")


@pytest.mark.parametrize(
    ("conversations", "message"),
    [
        ([{"from": "robot", "value": "Hi"}], "unknown speaker 'robot'"),
        ([{"from": "human", "value": None}], "has no text"),
        ([{"from": "human", "value": "Hi"}], "no assistant"),
        ([], "non-empty list"),
    ],
)
def test_malformed_conversations_are_refused(conversations, message):
    with pytest.raises(ValueError, match=message):
        llava_to_messages(conversations, 0, sample_id="s")


def test_broken_files_are_refused_with_their_place(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_llava_json(tmp_path / "missing.json")
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(SAMPLES[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2"):
        load_llava_json(path)
    no_conv = tmp_path / "noconv.json"
    no_conv.write_text(json.dumps([{"id": "q", "image": "a.jpg"}]))
    with pytest.raises(ValueError, match="'q'.*no `conversations`"):
        load_llava_json(no_conv)


def test_rows_feed_trl_and_the_viq_chat_template(tmp_path):
    """The rows are what TRL's vision collator reads: its message preparation accepts them, the template renders the
    images in place, and the processor expands them (images read from the paths)."""
    import numpy as np
    from PIL import Image
    from trl.data_utils import prepare_multimodal_messages

    from transformers_viq import ViQProcessor, get_num_image_tokens
    from transformers_viq.testing import IMAGE_PAD_ID, qwen_tokenizer

    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "imgs" / "a.jpg")
    row = load_llava_json(write(tmp_path, SAMPLES[:1]))[0]
    messages = prepare_multimodal_messages(row["messages"], images=row["images"])
    processor = ViQProcessor(tokenizer=qwen_tokenizer())
    text = processor.apply_chat_template(row["messages"])
    assert "<|im_start|>user\n<|image_pad|>\nWhat is it?<|im_end|>" in text
    batch = processor.apply_chat_template(
        [messages], tokenize=True, return_dict=True, return_tensors="pt", return_assistant_tokens_mask=True
    )
    ((h, w),) = batch["image_grid_hw"].tolist()
    assert int((batch["input_ids"] == IMAGE_PAD_ID).sum()) == get_num_image_tokens(h, w)
    assert batch["assistant_masks"].sum() > 0
