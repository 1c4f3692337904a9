"""TRL's SFTTrainer trains ViQForConditionalGeneration on precomputed codes, and the images really reach the LLM."""

from __future__ import annotations

import numpy as np
import torch

from transformers_viq import ViQForConditionalGeneration, ViQImageProcessor, ViQProcessor, get_num_image_tokens
from transformers_viq.testing import IMAGE_PAD_ID, make_tiny_vlm, qwen_tokenizer
from transformers_viq.training import ViQCodesCollator, freeze


def tiny_vlm(tokenizer) -> ViQForConditionalGeneration:
    return make_tiny_vlm(tokenizer)


def codes_dataset(model, tokenizer, n=6):
    """Rows as a code-extraction job writes them: the codes of each image as uint16, its grid, and the text."""
    from datasets import Dataset

    rng = np.random.default_rng(0)
    processor = ViQImageProcessor(size_divisor=32)
    rows = {"image_codes": [], "image_grid_hw": [], "prompt": [], "completion": []}
    for index in range(n):
        image = rng.integers(0, 256, size=(32 * (1 + index % 2), 64, 3), dtype=np.uint8)
        inputs = processor(images=[image], return_tensors="pt")
        codes = model.model.vision_tower.encode(**inputs, return_pooler_output=False).image_codes
        rows["image_codes"].append([codes.numpy().astype(np.uint16)])
        rows["image_grid_hw"].append(inputs["image_grid_hw"].tolist())
        rows["prompt"].append(f"Describe image {index}.")
        rows["completion"].append(f"It is image number {index}.")
    return Dataset.from_dict(rows)


def test_sft_trainer_on_codes_trains_and_images_reach_the_llm(tmp_path):
    from trl import SFTConfig, SFTTrainer

    tokenizer = qwen_tokenizer()
    model = tiny_vlm(tokenizer)
    dataset = codes_dataset(model, tokenizer)
    freeze(model, vision=True)
    collator = ViQCodesCollator(ViQProcessor(tokenizer=tokenizer))
    projector_before = {n: p.detach().clone() for n, p in model.model.projector.named_parameters()}
    vision_before = model.model.vision_tower.code_embedder.merge.fc1.weight.detach().clone()
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, learning_rate=5e-3, use_cpu=True,
        bf16=False, report_to="none", logging_steps=1, save_strategy="no", max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False,  # TRL default: checkpointing on
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         data_collator=collator)  # fmt: skip
    result = trainer.train()
    assert result.global_step == 4 and np.isfinite(result.training_loss)
    # the projector only gets a gradient through the image embeddings merged into the text: had the base model
    # skipped the merge (or had the codes been dropped on the way), it would be unchanged
    projector = model.model.projector.named_parameters()
    changed = {n for n, p in projector if not torch.equal(p.detach(), projector_before[n])}
    assert changed == set(projector_before), f"projector parameters left unchanged: {set(projector_before) - changed}"
    assert torch.equal(model.model.vision_tower.code_embedder.merge.fc1.weight, vision_before)  # frozen
    # and the trained model generates from codes
    batch = collator([dataset[0]])
    out = model.generate(input_ids=batch["input_ids"], image_codes=batch["image_codes"],
                         image_grid_hw=batch["image_grid_hw"], max_new_tokens=3, do_sample=False)  # fmt: skip
    assert out.shape[1] == batch["input_ids"].shape[1] + 3


def test_sft_trainer_on_images_with_the_processor_and_trl_default_collator(tmp_path):
    """The everyday path: an `images` + `messages` dataset, ViQProcessor as processing class, TRL's own collator."""
    from datasets import Dataset
    from PIL import Image as PILImage
    from trl import SFTConfig, SFTTrainer

    tokenizer = qwen_tokenizer()
    model = freeze(tiny_vlm(tokenizer), vision=True)
    processor = ViQProcessor(tokenizer=tokenizer)
    rng = np.random.default_rng(1)
    rows = {"images": [], "messages": []}
    for index in range(4):
        image = PILImage.fromarray(rng.integers(0, 256, size=(32, 32 * (1 + index % 2), 3), dtype=np.uint8))
        rows["images"].append([image])
        rows["messages"].append([
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"What is {index}?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"Number {index}."}]},
        ])  # fmt: skip
    dataset = Dataset.from_dict(rows)
    before = model.model.projector.proj_in.weight.detach().clone()
    args = SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=5e-3,
                     use_cpu=True, bf16=False, report_to="none", save_strategy="no", max_length=None)  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    batch = next(iter(trainer.get_train_dataloader()))
    assert {"pixel_values", "image_grid_hw", "input_ids", "labels"} <= set(batch)
    assert int((batch["input_ids"] == IMAGE_PAD_ID).sum()) == sum(
        get_num_image_tokens(h, w) for h, w in batch["image_grid_hw"].tolist()
    )
    result = trainer.train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert not torch.equal(model.model.projector.proj_in.weight, before)
