"""Training policy lives on the training side: freezing is `requires_grad`, LoRA keeps the projector, codes collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transformers_viq import ViQImageProcessor, ViQProcessor, get_num_image_tokens
from transformers_viq.testing import IMAGE_PAD_ID, make_tiny_model, make_tiny_vlm, qwen_tokenizer
from transformers_viq.training import (
    ViQCodesCollator,
    calibrate_quantizer,
    freeze,
    language_model_lora_config,
    trainable_summary,
)


def top_level_parts(model) -> set[str]:
    return {n.split(".")[1] if n.startswith("model.") else n.split(".")[0]
            for n, p in model.named_parameters() if p.requires_grad}  # fmt: skip


def test_freeze_policies_set_requires_grad_only():
    model = make_tiny_vlm()
    config_before = model.config.to_dict()
    assert freeze(model) is model
    assert top_level_parts(model) == {"projector", "language_model"}
    freeze(model, vision=True, language_model=True)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith("model.projector.")
    }
    summary = trainable_summary(model)
    assert summary["vision"][0] == 0 and summary["language_model"][0] == 0
    assert summary["projector"][0] == summary["projector"][1] > 0
    assert model.config.to_dict() == config_before  # no training state in the config
    assert "train_vision" not in model.config.to_dict()


def test_freeze_rejects_other_models():
    with pytest.raises(ValueError, match="Expected a ViQForConditionalGeneration"):
        freeze(torch.nn.Linear(2, 2))


def test_frozen_vision_gets_no_gradient_and_unfrozen_does():
    model = make_tiny_vlm().train()
    inputs = ViQImageProcessor(size_divisor=32)(images=[np.zeros((32, 64, 3), np.uint8)], return_tensors="pt")
    (h, w), = inputs["image_grid_hw"].tolist()
    input_ids = torch.tensor([[1, 2] + [5] * get_num_image_tokens(h, w) + [3, 4]])
    freeze(model, vision=True)
    model(input_ids=input_ids, labels=input_ids, **inputs).loss.backward()
    assert model.model.vision_tower.embeddings.patch_embedding.weight.grad is None
    assert model.model.projector.proj_in.weight.grad is not None
    model.zero_grad()
    freeze(model, vision=False)
    model(input_ids=input_ids, labels=input_ids, **inputs).loss.backward()
    assert model.model.vision_tower.embeddings.patch_embedding.weight.grad is not None


def test_lora_adapts_the_llm_and_keeps_the_projector_trainable_and_saved(tmp_path):
    from peft import PeftModel, get_peft_model

    model = freeze(make_tiny_vlm(), vision=True, language_model=True)
    peft_model = get_peft_model(model, language_model_lora_config(r=4, lora_alpha=8))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(".language_model." in n for n in lora)
    projector = [n for n in trainable if ".projector." in n]
    assert projector, "the fresh projector must train with the adapter"
    # the summary counts the projector once: all of it trains, PEFT's frozen copy of the original is not counted
    own = sum(p.numel() for p in model.model.projector.parameters() if p.requires_grad)
    assert trainable_summary(peft_model)["projector"] == (own, own)
    assert all(".language_model." in n or ".projector." in n for n in trainable)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".projector." in name and param.requires_grad:
                param.add_(1.0)
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_tiny_vlm(), tmp_path / "adapter")
    for (name, a), (_, b) in zip(peft_model.named_parameters(), reloaded.named_parameters()):
        if ".projector." in name:
            torch.testing.assert_close(a, b)


def test_calibrate_quantizer_spreads_the_fsq_inputs():
    from transformers_viq import ViQModel
    from transformers_viq.testing import calibration_images, spread_weights, tiny_config

    torch.manual_seed(0)
    model = spread_weights(ViQModel(tiny_config())).eval()
    inputs = ViQImageProcessor(do_resize=False)(images=calibration_images(), return_tensors="pt")
    calibrate_quantizer(model, inputs["pixel_values"], inputs["image_grid_hw"], scale=1.5, max_gain=100.0)
    values = model(**inputs, return_pooler_output=False).quantizer_inputs.detach()
    quartiles = torch.quantile(values, torch.tensor([0.25, 0.75]), dim=0)  # robust centre and spread
    torch.testing.assert_close(values.median(0).values, torch.zeros(values.shape[1]), atol=1e-3, rtol=0)
    torch.testing.assert_close((quartiles[1] - quartiles[0]) / 1.349, torch.full((values.shape[1],), 1.5), atol=1e-3,
                               rtol=0)  # fmt: skip
    with pytest.raises(ValueError, match="positive"):
        calibrate_quantizer(model, inputs["pixel_values"], inputs["image_grid_hw"], scale=0)


def code_rows(viq, n=3):
    processor = ViQImageProcessor(size_divisor=32)
    rng = np.random.default_rng(0)
    rows = []
    for index in range(n):
        image = rng.integers(0, 256, size=(32 * (1 + index % 2), 64, 3), dtype=np.uint8)
        inputs = processor(images=[image], return_tensors="pt")
        codes = viq.encode(**inputs, return_pooler_output=False).image_codes
        rows.append({"image_codes": [codes.numpy().astype(np.uint16).tolist()],
                     "image_grid_hw": inputs["image_grid_hw"].tolist()})  # fmt: skip
    return rows


def test_codes_collator_renders_the_chat_template_and_supervises_answers_only():
    tokenizer = qwen_tokenizer()
    processor = ViQProcessor(tokenizer=tokenizer)
    rows = code_rows(make_tiny_model())
    rows[0]["messages"] = [{"role": "user", "content": "What is it?"}, {"role": "assistant", "content": "A cat."}]
    rows[1]["prompt"], rows[1]["completion"] = "Describe.", "Noise."
    rows[2]["messages"] = [
        {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Blocks."}]},
    ]
    batch = ViQCodesCollator(processor)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "image_codes", "image_grid_hw"}
    grids = batch["image_grid_hw"].tolist()
    assert int((batch["input_ids"] == IMAGE_PAD_ID).sum()) == sum(get_num_image_tokens(h, w) for h, w in grids)
    assert batch["image_codes"].dtype == torch.int64
    for index, answer in enumerate(["A cat.", "Noise.", "Blocks."]):
        supervised = batch["labels"][index][batch["labels"][index] != -100]
        assert tokenizer.decode(supervised) == answer + "<|im_end|>\n"
    # the first image item goes in front of the user's text when the conversation names none
    text = tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0] == 1])
    assert "<|im_start|>user\n<|image_pad|>" in text and text.endswith("<|im_start|>assistant\nA cat.<|im_end|>\n")


def test_codes_collator_errors():
    processor = ViQProcessor(tokenizer=qwen_tokenizer())
    rows = code_rows(make_tiny_model(), n=1)
    with pytest.raises(ValueError, match="needs `messages`"):
        ViQCodesCollator(processor)(rows)
    rows[0]["messages"] = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}]},
                           {"role": "assistant", "content": "x"}]  # fmt: skip
    with pytest.raises(ValueError, match="2 image items but the row has 1 images"):
        ViQCodesCollator(processor)(rows)
    rows[0]["messages"] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]
    with pytest.raises(ValueError, match="over max_length=8"):
        ViQCodesCollator(processor, max_length=8)(rows)
