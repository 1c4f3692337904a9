"""Batched generation equals one-at-a-time generation, with a saved ViQProcessor's defaults (pixels and codes).

A batch of prompts of different lengths is padded; a decoder-only model continues each row after its last position,
so the padding must be on the left. These tests batch the way users and lmms-eval do: `processor(...,
padding=True)` with the saved defaults, and `pipeline("image-text-to-text")` with `batch_size`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from transformers_viq import ViQForConditionalGeneration, ViQProcessor
from transformers_viq.testing import make_tiny_vlm, qwen_tokenizer


PROMPTS = ["Describe this picture in as much detail as you can, please.", "Hi"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny VLM and its processor, saved and loaded back: what a user (or lmms-eval) gets from a folder."""
    folder = tmp_path_factory.mktemp("vlm")
    make_tiny_vlm(qwen_tokenizer()).save_pretrained(folder)
    ViQProcessor(tokenizer=qwen_tokenizer()).save_pretrained(folder)
    model = ViQForConditionalGeneration.from_pretrained(folder).eval()
    return folder, model, ViQProcessor.from_pretrained(folder)


def make_images() -> list[Image.Image]:
    rng = np.random.default_rng(7)  # two sizes: 4x4 and 6x2 patch grids, different token counts
    return [Image.fromarray(rng.integers(0, 256, size=size, dtype=np.uint8)) for size in ((64, 64, 3), (96, 32, 3))]


def chat(image, prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]


def prepare(model, processor, images, prompts, image_input: str, **kwargs):
    """One packed processor call for prompts and images; images as pixels, or as codes from the VLM's tokenizer."""
    texts = [processor.apply_chat_template(chat(None, prompt), add_generation_prompt=True) for prompt in prompts]
    inputs = processor(images=images, text=texts, return_tensors="pt", **kwargs)
    if image_input == "codes":
        pixel_values, grids = inputs.pop("pixel_values"), inputs["image_grid_hw"]
        codes = model.model.vision_tower.encode(pixel_values, grids, return_pooler_output=False).image_codes
        inputs = processor(image_codes=codes, image_grid_hw=grids, text=texts, return_tensors="pt", **kwargs)
    return inputs


def greedy(model, inputs):
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=151643)  # fmt: skip
    new_tokens = out.sequences[:, inputs["input_ids"].shape[1] :]
    return torch.stack(out.scores, dim=1), new_tokens  # (batch, steps, vocab), (batch, steps)


def test_saved_processor_pads_on_the_left(saved):
    _, _, processor = saved
    assert processor.padding_side == "left" and processor.tokenizer.padding_side == "left"
    batch = processor(text=PROMPTS, padding=True, return_tensors="pt")
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].all()
    # An explicit choice per call still wins (TRL's training collator asks for right padding).
    right = processor(text=PROMPTS, padding=True, padding_side="right", return_tensors="pt")
    assert right["attention_mask"][1, -1] == 0


@pytest.mark.parametrize("image_input", ["pixels", "codes"])
def test_batched_generation_equals_one_at_a_time(saved, image_input):
    _, model, processor = saved
    images = make_images()
    batch = prepare(model, processor, images, PROMPTS, image_input, padding=True)
    assert (batch["attention_mask"] == 0).any(), "the prompts must differ in length for the check to mean anything"
    batch_scores, batch_tokens = greedy(model, batch)
    for row, (image, prompt) in enumerate(zip(images, PROMPTS)):
        scores, tokens = greedy(model, prepare(model, processor, [image], [prompt], image_input))
        torch.testing.assert_close(batch_scores[row], scores[0], atol=1e-5, rtol=1e-5)
        assert torch.equal(batch_tokens[row], tokens[0])


def test_right_padded_batch_is_refused(saved):
    _, model, processor = saved
    batch = prepare(model, processor, make_images(), PROMPTS, "pixels", padding=True, padding_side="right")
    with pytest.raises(ValueError, match="Right-padded batch"):
        model.generate(**batch, max_new_tokens=1)


def test_pipeline_batches_like_one_at_a_time(saved, monkeypatch):
    folder, _, _ = saved
    pipe = pipeline("image-text-to-text", model=str(folder))
    calls = []  # the inputs the pipeline hands to generate, as it batched them
    original = pipe.model.generate
    monkeypatch.setattr(pipe.model, "generate", lambda **inputs: calls.append(inputs) or original(**inputs))
    chats = [chat(image, prompt) for image, prompt in zip(make_images(), PROMPTS)]
    kwargs = {"generate_kwargs": {"max_new_tokens": 3, "do_sample": False}, "return_tensors": True}
    alone = [pipe(conversation, **kwargs)[0]["generated_token_ids"] for conversation in chats]
    together = [out[0]["generated_token_ids"] for out in pipe(chats, batch_size=2, **kwargs)]
    for single, batched in zip(alone, together):
        assert torch.equal(single[-3:], batched[-3:])
    # The untrained model's greedy tokens hardly depend on the input; its scores do.
    assert [len(call["input_ids"]) for call in calls] == [1, 1, 2]
    model_inputs = ("input_ids", "attention_mask", "pixel_values", "image_grid_hw")
    batch_scores, _ = greedy(pipe.model, {key: calls[2][key] for key in model_inputs})
    for row, call in enumerate(calls[:2]):
        scores, _ = greedy(pipe.model, {key: call[key] for key in model_inputs})
        torch.testing.assert_close(batch_scores[row], scores[0], atol=1e-5, rtol=1e-5)
