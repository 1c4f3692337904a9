"""ViQProcessor: placeholder expansion (pixels and codes), chat template, TRL collator, save/load, Auto classes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from transformers_viq import ViQCodes, ViQImageProcessor, ViQProcessor, get_num_image_tokens
from transformers_viq.testing import IM_START_ID, IMAGE_PAD_ID, qwen_tokenizer


PAD = "<|image_pad|>"
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


def make_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def image_token_runs(input_ids) -> list[int]:
    """Lengths of the runs of consecutive image tokens in one sequence, in order."""
    runs, current = [], 0
    for token in list(input_ids) + [-1]:
        if token == IMAGE_PAD_ID:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def image_item(image=None) -> dict:
    return {"type": "image"} if image is None else {"type": "image", "image": image}


def text_item(text: str) -> dict:
    return {"type": "text", "text": text}


def user(*content) -> dict:
    return {"role": "user", "content": list(content)}


@pytest.fixture(scope="module")
def processor() -> ViQProcessor:
    return ViQProcessor(tokenizer=qwen_tokenizer())


@pytest.fixture(scope="module")
def mixed_images() -> list[Image.Image]:
    # Grids with size_divisor=32: 4x4, 6x4, 2x8 (all even); three different token counts.
    return [make_image(64, 64, 0), make_image(96, 64, 1), make_image(32, 128, 2)]


# ---------------------------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------------------------


def test_defaults(processor):
    assert processor.image_token == PAD
    assert processor.image_token_id == IMAGE_PAD_ID
    assert processor.projector_type == "pooled"
    assert isinstance(processor.image_processor, ViQImageProcessor)
    assert processor.image_processor.size_divisor == 32
    names = ["input_ids", "attention_mask", "pixel_values", "image_grid_hw"]  # a call with images returns these
    assert processor.model_input_names == names


def test_construction_errors():
    with pytest.raises(ValueError, match="tokenizer"):
        ViQProcessor()
    with pytest.raises(ValueError, match="projector_type"):
        ViQProcessor(tokenizer=qwen_tokenizer(), projector_type="linear")

    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tiny = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")), unk_token="[UNK]"
    )
    with pytest.raises(ValueError, match="no <\\|image_pad\\|> token"):
        ViQProcessor(tokenizer=tiny)


# ---------------------------------------------------------------------------------------------------------------
# Placeholder expansion
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("projector_type", ["pooled", "mlp"])
def test_expansion_from_pixels(mixed_images, projector_type):
    processor = ViQProcessor(tokenizer=qwen_tokenizer(), projector_type=projector_type)
    text = [f"{PAD} first {PAD} second", f"third {PAD}", "text only"]
    out = processor(images=mixed_images, text=text, padding=True, return_tensors="pt")

    assert set(out) == {"input_ids", "attention_mask", "pixel_values", "image_grid_hw"}
    grids = out["image_grid_hw"].tolist()
    assert grids == [[4, 4], [6, 4], [2, 8]]
    assert out["pixel_values"].shape == (16 + 24 + 16, 768)
    expected = [get_num_image_tokens(h, w, projector_type) for h, w in grids]
    assert len(set(expected)) > 1 or projector_type == "mlp"
    # Images are consumed in order across samples: 2 in the first sample, 1 in the second, none in the third.
    assert image_token_runs(out["input_ids"][0].tolist()) == expected[:2]
    assert image_token_runs(out["input_ids"][1].tolist()) == expected[2:]
    assert image_token_runs(out["input_ids"][2].tolist()) == []
    # Text around the placeholders is tokenized as without images.
    ids, mask = out["input_ids"][1].tolist(), out["attention_mask"][1].tolist()
    ids = [token for token, keep in zip(ids, mask) if keep and token != IMAGE_PAD_ID]
    assert ids == processor.tokenizer("third ")["input_ids"]


def test_nested_images_per_sample(processor, mixed_images):
    text = [f"{PAD}{PAD}", "none", PAD]
    flat = processor(images=mixed_images, text=text, padding=True)
    nested = processor(images=[mixed_images[:2], [], mixed_images[2:]], text=text, padding=True)
    assert flat["input_ids"] == nested["input_ids"]
    np.testing.assert_array_equal(flat["pixel_values"], nested["pixel_values"])


def test_expansion_from_codes_all_forms_agree(processor):
    grids = torch.tensor([[2, 4], [4, 6], [2, 2]])
    per_image = [torch.randint(0, 15360, (4 * h * w,), generator=torch.Generator().manual_seed(i)) for i, (h, w) in
                 enumerate(grids.tolist())]  # fmt: skip
    packed = torch.cat(per_image)
    text = [f"a {PAD} b {PAD}", f"{PAD} c"]
    expected = [get_num_image_tokens(h, w) for h, w in grids.tolist()]

    forms = {
        "packed tensor": dict(image_codes=packed, image_grid_hw=grids),
        "packed uint16 numpy": dict(image_codes=packed.numpy().astype(np.uint16), image_grid_hw=grids.numpy()),
        "list per image": dict(image_codes=per_image, image_grid_hw=grids.tolist()),
        "nested per sample": dict(image_codes=[per_image[:2], per_image[2:]], image_grid_hw=grids),
        "ViQCodes": dict(image_codes=ViQCodes(codes=packed, image_grid_hw=grids, fsq_levels=[8, 8, 8, 6, 5])),
    }
    outputs = {name: processor(text=text, padding=True, return_tensors="pt", **kw) for name, kw in forms.items()}
    reference = outputs["packed tensor"]
    assert set(reference) == {"input_ids", "attention_mask", "image_codes", "image_grid_hw"}
    assert reference["image_codes"].dtype == torch.long
    assert torch.equal(reference["image_codes"], packed)
    assert torch.equal(reference["image_grid_hw"], grids)
    assert image_token_runs(reference["input_ids"][0].tolist()) == expected[:2]
    assert image_token_runs(reference["input_ids"][1].tolist()) == expected[2:]
    for name, out in outputs.items():
        for key in reference:
            assert torch.equal(out[key], reference[key]), (name, key)


def test_codes_and_pixels_expand_the_same(processor):
    image = make_image(96, 128)
    pixels = processor(images=[image], text=f"Look: {PAD}", return_tensors="pt")
    grid = pixels["image_grid_hw"]
    codes = processor(text=f"Look: {PAD}", image_codes=torch.zeros(4 * int(grid.prod()), dtype=torch.long),
                      image_grid_hw=grid, return_tensors="pt")  # fmt: skip
    assert torch.equal(pixels["input_ids"], codes["input_ids"])


def test_text_only_batch(processor):
    text = ["Hello there", "A longer text without images"]
    out = processor(text=text, padding=True, return_tensors="pt")
    assert set(out) == {"input_ids", "attention_mask"}
    assert torch.equal(out["input_ids"], processor.tokenizer(text, padding=True, return_tensors="pt")["input_ids"])


def test_images_without_text(processor, mixed_images):
    out = processor(images=mixed_images, return_tensors="pt")
    assert set(out) == {"pixel_values", "image_grid_hw"}


def test_tokenizer_kwargs_pass_through(processor):
    text = [f"{PAD} short", "a somewhat longer sample"]
    codes, grid = torch.zeros(4 * 16, dtype=torch.long), [[4, 4]]
    out = processor(text=text, image_codes=codes, image_grid_hw=grid, padding="max_length", max_length=32,
                    padding_side="left", return_tensors="np")  # fmt: skip
    assert out["input_ids"].shape == (2, 32)
    assert isinstance(out["image_codes"], np.ndarray)
    assert out["attention_mask"][1, 0] == 0 and out["attention_mask"][1, -1] == 1  # left padding
    short = processor(text=["long " * 40], truncation=True, max_length=8)
    assert len(short["input_ids"][0]) == 8


def test_truncating_into_image_tokens_raises(processor):
    with pytest.raises(ValueError, match="truncation"):
        processor(text=f"intro {PAD}", image_codes=torch.zeros(64, dtype=torch.long), image_grid_hw=[[4, 4]],
                  truncation=True, max_length=5)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def test_both_images_and_codes_raise(processor):
    with pytest.raises(ValueError, match="not both"):
        processor(images=[make_image(64, 64)], text=PAD, image_codes=torch.zeros(64, dtype=torch.long),
                  image_grid_hw=[[4, 4]])  # fmt: skip


def test_count_mismatch_names_both_counts(processor, mixed_images):
    with pytest.raises(ValueError, match=r"2 <\|image_pad\|> tokens .* but 1 images"):
        processor(images=mixed_images[:1], text=f"{PAD} and {PAD}")
    with pytest.raises(ValueError, match=r"1 <\|image_pad\|> tokens .* but 3 images"):
        processor(images=mixed_images, text=[PAD, "no image", "none"])
    with pytest.raises(ValueError, match=r"1 <\|image_pad\|> tokens .* but 0 images"):
        processor(text=f"where is the image? {PAD}")
    with pytest.raises(ValueError, match=r"0 <\|image_pad\|> tokens .* but 1 images"):
        processor(text="no placeholder", image_codes=torch.zeros(64, dtype=torch.long), image_grid_hw=[[4, 4]])


def test_odd_grids_expand_to_partial_windows(mixed_images):
    """`viq encode`/`viq extract` defaults (size_divisor=16) give odd grids: a last row/column of partial windows."""
    processor = ViQProcessor(image_processor=ViQImageProcessor(size_divisor=16), tokenizer=qwen_tokenizer())
    out = processor(images=[make_image(48, 96)], text=PAD)
    assert out["image_grid_hw"].tolist() == [[3, 6]]
    assert sum(ids.count(IMAGE_PAD_ID) for ids in out["input_ids"]) == 2 * (3 + 1) + 2
    codes = torch.zeros(4 * (4 + 6), dtype=torch.long)
    out = processor(text=PAD * 2, image_codes=codes, image_grid_hw=[[2, 2], [3, 2]])
    assert sum(ids.count(IMAGE_PAD_ID) for ids in out["input_ids"]) == (1 * 2 + 2) + (2 * 2 + 2)
    with pytest.raises(ValueError, match="non-empty patch grid"):
        get_num_image_tokens(0, 2)


@pytest.mark.parametrize(
    "image_codes, image_grid_hw, message",
    [
        (torch.zeros(63, dtype=torch.long), [[4, 4]], r"Image 0 \(grid \[4, 4\]\) needs 64 codes"),
        (torch.zeros(64), [[4, 4]], "integer tensor"),
        (torch.zeros(2, 32, dtype=torch.long), [[4, 4]], "must be 1-D"),
        (torch.full((64,), -1), [[4, 4]], "negative"),
        (torch.zeros(64, dtype=torch.long), None, "need `image_grid_hw`"),
        (torch.zeros(64, dtype=torch.long), [[4, 4, 1]], "shape \\(num_images, 2\\)"),
        (torch.zeros(64, dtype=torch.long), [[0, 4]], "both sides must be >= 1"),
        ([torch.zeros(64, dtype=torch.long)], [[4, 4], [2, 2]], "codes for 1 images but 2 grids"),
        ([torch.zeros(64, dtype=torch.long), torch.zeros(15, dtype=torch.long)], [[4, 4], [2, 2]],
         "Image 1: .*needs 16 codes"),  # fmt: skip
    ],
)
def test_codes_validation(processor, image_codes, image_grid_hw, message):
    with pytest.raises(ValueError, match=message):
        processor(text=PAD, image_codes=image_codes, image_grid_hw=image_grid_hw)


def test_other_argument_errors(processor):
    with pytest.raises(ValueError, match="goes with `image_codes`"):
        processor(images=[make_image(64, 64)], text=PAD, image_grid_hw=[[2, 2]])
    with pytest.raises(ValueError, match="needs `text`"):
        processor()
    with pytest.raises(ValueError, match="string or a list of strings"):
        processor(text=[1, 2])
    codes = ViQCodes(codes=torch.zeros(16, dtype=torch.long), image_grid_hw=[[2, 2]], fsq_levels=[8, 8, 8, 6, 5])
    with pytest.raises(ValueError, match="does not match the grids stored"):
        processor(text=PAD, image_codes=codes, image_grid_hw=[[4, 1]])


# ---------------------------------------------------------------------------------------------------------------
# Chat template
# ---------------------------------------------------------------------------------------------------------------


def test_chat_template_one_image(processor):
    messages = [user(image_item(make_image(64, 64)), text_item("What is this?"))]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|image_pad|>What is this?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_system_turns_and_strings(processor):
    messages = [
        {"role": "system", "content": "Be brief."},
        user(text_item("Compare "), image_item(), text_item(" and "), image_item()),
        {"role": "assistant", "content": [{"type": "text", "text": "Same."}]},
        {"role": "user", "content": "Sure?"},
    ]  # fmt: skip
    assert processor.apply_chat_template(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nCompare <|image_pad|> and <|image_pad|><|im_end|>\n"
        "<|im_start|>assistant\nSame.<|im_end|>\n"
        "<|im_start|>user\nSure?<|im_end|>\n"
    )


def test_apply_chat_template_tokenized_with_image(processor):
    image = make_image(96, 64)
    messages = [user(image_item(image), text_item("Describe."))]
    out = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert set(out) == {"input_ids", "attention_mask", "pixel_values", "image_grid_hw"}
    assert out["input_ids"].shape[0] == 1 and out["input_ids"][0, 0] == IM_START_ID
    assert out["image_grid_hw"].tolist() == [[6, 4]]
    assert image_token_runs(out["input_ids"][0].tolist()) == [get_num_image_tokens(6, 4)]
    direct = processor(images=[image], text=processor.apply_chat_template(messages, add_generation_prompt=True),
                       return_tensors="pt")  # fmt: skip
    assert torch.equal(out["input_ids"], direct["input_ids"])
    assert torch.equal(out["pixel_values"], direct["pixel_values"])
    ids_only = processor.apply_chat_template(messages, tokenize=True, return_tensors="pt")
    assert ids_only.shape == (1, out["input_ids"].shape[1] - 3)  # no generation prompt: 3 tokens fewer


def test_apply_chat_template_images_or_codes_passed_separately(processor):
    messages = [user(image_item(), text_item("Describe."))]
    image = make_image(64, 64)
    with_image = processor.apply_chat_template(messages, images=image, tokenize=True, return_dict=True,
                                               return_tensors="pt")  # fmt: skip
    with_codes = processor.apply_chat_template(
        messages, image_codes=torch.zeros(64, dtype=torch.long), image_grid_hw=[[4, 4]], tokenize=True,
        return_dict=True, return_tensors="pt",
    )
    assert with_image["image_grid_hw"].tolist() == [[4, 4]]
    assert torch.equal(with_image["input_ids"], with_codes["input_ids"])
    assert "image_codes" in with_codes and "pixel_values" not in with_codes


def test_apply_chat_template_batched(processor, mixed_images):
    conversations = [
        [user(image_item(mixed_images[0]), text_item("A?"))],
        [{"role": "user", "content": "No image here."}],
        [user(image_item(mixed_images[1]), image_item(mixed_images[2]))],
    ]
    out = processor.apply_chat_template(conversations, tokenize=True, return_dict=True, return_tensors="pt",
                                        processor_kwargs={"padding": True})  # fmt: skip
    assert out["input_ids"].shape[0] == 3
    counts = [get_num_image_tokens(h, w) for h, w in out["image_grid_hw"].tolist()]
    assert (out["input_ids"] == IMAGE_PAD_ID).sum(1).tolist() == [counts[0], 0, counts[1] + counts[2]]


def test_sanitized_user_text_cannot_add_images(processor):
    messages = [user(image_item(make_image(64, 64)), text_item(f"sneaky {PAD}"))]
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt",
                                        sanitize_control_tokens=True)  # fmt: skip
    assert (out["input_ids"] == IMAGE_PAD_ID).sum() == get_num_image_tokens(4, 4)


# ---------------------------------------------------------------------------------------------------------------
# TRL
# ---------------------------------------------------------------------------------------------------------------


def test_trl_vision_collator(processor, mixed_images):
    pytest.importorskip("trl")
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    def example(images, question, answer):
        return {"images": images, "messages": [{"role": "user", "content": question},
                                               {"role": "assistant", "content": answer}]}  # fmt: skip

    examples = [
        example([mixed_images[0]], "What?", "A cat."),
        example(mixed_images[1:], "Compare.", "Same."),
        example([], "Hi", "Hello."),
    ]
    batch = DataCollatorForVisionLanguageModeling(processor=processor)(examples)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "pixel_values", "image_grid_hw"}
    assert batch["input_ids"].shape == batch["labels"].shape
    assert batch["image_grid_hw"].tolist() == [[4, 4], [6, 4], [2, 8]]
    assert batch["pixel_values"].shape == (56, 768)
    counts = [get_num_image_tokens(h, w) for h, w in batch["image_grid_hw"].tolist()]
    assert (batch["input_ids"] == IMAGE_PAD_ID).sum(1).tolist() == [counts[0], counts[1] + counts[2], 0]
    assert (batch["labels"] == -100).equal(batch["attention_mask"] == 0)  # right padding masked, nothing else
    assert batch["attention_mask"][:, 0].all()

    # assistant_only_loss: the template's {% generation %} markers cover the answer and its <|im_end|>.
    masked = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)(examples[:1])
    labels = masked["labels"][0]
    assert processor.decode(labels[labels != -100]) == "A cat.<|im_end|>\n"

    # Plain text rows with images go through processor(images=, text=).
    rows = [{"images": [mixed_images[0]], "text": f"{PAD}A caption."}, {"images": [], "text": "Text only."}]
    plain = DataCollatorForVisionLanguageModeling(processor=processor)(rows)
    assert (plain["input_ids"] == IMAGE_PAD_ID).sum(1).tolist() == [counts[0], 0]

    # Prompt-completion rows: the prompt (with the image) and the completion are processed separately.
    rows = [{"images": [mixed_images[0]], "prompt": [{"role": "user", "content": "What?"}],
             "completion": [{"role": "assistant", "content": "A cat."}]}]  # fmt: skip
    completion = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)(rows)
    assert (completion["input_ids"] == IMAGE_PAD_ID).sum() == counts[0]
    labels = completion["labels"][0]
    assert processor.decode(labels[labels != -100]) == "A cat.<|im_end|>\n"


# ---------------------------------------------------------------------------------------------------------------
# Decoding, counting, saving
# ---------------------------------------------------------------------------------------------------------------


def test_decoding(processor):
    ids = processor.tokenizer(["Hello world<|im_end|>", "Bye"], padding=True, return_tensors="pt")["input_ids"]
    assert processor.batch_decode(ids, skip_special_tokens=True) == ["Hello world", "Bye"]
    assert processor.decode(ids[1], skip_special_tokens=True) == "Bye"
    assert processor.post_process_image_text_to_text(ids) == ["Hello world", "Bye"]
    assert processor.post_process_image_text_to_text(ids[0]) == ["Hello world"]


@pytest.mark.parametrize("projector_type", ["pooled", "mlp"])
def test_num_multimodal_tokens_match_processing(projector_type):
    processor = ViQProcessor(tokenizer=qwen_tokenizer(), projector_type=projector_type)
    sizes = [(64, 64), (480, 640), (100, 700), (1500, 900)]
    data = processor._get_num_multimodal_tokens(image_sizes=sizes)
    images = [make_image(h, w, i) for i, (h, w) in enumerate(sizes)]
    out = processor(images=images, text=PAD * len(images), return_tensors="pt")
    grids = out["image_grid_hw"].tolist()
    assert data.num_image_patches == [h * w for h, w in grids]
    assert data.num_image_tokens == [get_num_image_tokens(h, w, projector_type) for h, w in grids]
    assert (out["input_ids"] == IMAGE_PAD_ID).sum() == sum(data.num_image_tokens)


def test_save_load_round_trip_and_auto_processor(tmp_path):
    image_processor = ViQImageProcessor(size_divisor=32, max_pixels=512 * 512)
    processor = ViQProcessor(image_processor=image_processor, tokenizer=qwen_tokenizer(), projector_type="mlp")
    processor.save_pretrained(tmp_path)

    files = set(os.listdir(tmp_path))
    assert {"processor_config.json", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json"} <= files
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "ViQProcessor"
    assert saved["projector_type"] == "mlp"
    assert saved["image_processor"]["image_processor_type"] == "ViQImageProcessor"
    assert saved["image_processor"]["size"]["longest_edge"] == 512 * 512  # max_pixels, held in size
    assert (tmp_path / "chat_template.jinja").read_text() == processor.chat_template

    for loaded in (ViQProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is ViQProcessor
        assert loaded.projector_type == "mlp"
        assert loaded.image_processor.size_divisor == 32 and loaded.image_processor.max_pixels == 512 * 512
        assert loaded.chat_template == processor.chat_template
        assert loaded.image_token_id == IMAGE_PAD_ID
        images = [make_image(600, 400)]
        text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}])
        expected, got = processor(images=images, text=text), loaded(images=images, text=text)
        assert expected["input_ids"] == got["input_ids"]
        np.testing.assert_array_equal(expected["pixel_values"], got["pixel_values"])
