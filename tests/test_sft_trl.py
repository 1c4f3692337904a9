"""TRL's SFTTrainer trains ViQForConditionalGeneration on precomputed codes, and the images really reach the LLM."""

from __future__ import annotations

import numpy as np
import torch
from conftest import make_tiny_model
from qwen_utils import IMAGE_PAD_ID, qwen_tokenizer

from transformers_viq import ViQForConditionalGeneration, ViQImageProcessor, ViQQwenConfig, get_num_image_tokens



def tiny_vlm(tokenizer) -> ViQForConditionalGeneration:
    viq = make_tiny_model()
    text = dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=1024,
                tie_word_embeddings=True)  # fmt: skip
    config = ViQQwenConfig(vision_config=viq.config.to_dict(), text_config=text, image_token_id=IMAGE_PAD_ID)
    torch.manual_seed(0)
    model = ViQForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(viq.state_dict())
    return model


def codes_dataset(model, tokenizer, n=6):
    """Rows as a code-extraction job writes them: the codes of each image as uint16, its grid, and the text."""
    from datasets import Dataset

    rng = np.random.default_rng(0)
    processor = ViQImageProcessor(size_divisor=32)
    rows = {"image_codes": [], "image_grid_hw": [], "prompt": [], "answer": []}
    for index in range(n):
        image = rng.integers(0, 256, size=(32 * (1 + index % 2), 64, 3), dtype=np.uint8)
        inputs = processor(images=[image], return_tensors="pt")
        codes = model.model.vision_tower.encode(**inputs, return_pooler_output=False).image_codes
        rows["image_codes"].append(codes.numpy().astype(np.uint16))
        rows["image_grid_hw"].append(inputs["image_grid_hw"][0].tolist())
        rows["prompt"].append(f"Describe image {index}.")
        rows["answer"].append(f"It is image number {index}.")
    return Dataset.from_dict(rows)


class CodesCollator:
    """Qwen2 chat text with each image's placeholder run expanded; labels on the answer only."""

    def __init__(self, tokenizer, projector_type="pooled"):
        self.tokenizer = tokenizer
        self.projector_type = projector_type

    def __call__(self, rows):
        input_ids, labels, codes, grids = [], [], [], []
        for row in rows:
            h, w = row["image_grid_hw"]
            image = "<|image_pad|>" * get_num_image_tokens(h, w, self.projector_type)
            prompt = f"<|im_start|>user\n{image}{row['prompt']}<|im_end|>\n<|im_start|>assistant\n"
            answer = f"{row['answer']}<|im_end|>\n"
            p = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
            input_ids.append(p + a)
            labels.append([-100] * len(p) + a)
            codes.append(torch.as_tensor(np.asarray(row["image_codes"], dtype=np.int64)))
            grids.append(row["image_grid_hw"])
        length = max(map(len, input_ids))
        pad = self.tokenizer.pad_token_id
        batch_ids = torch.full((len(rows), length), pad)
        batch_labels = torch.full((len(rows), length), -100)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (ids, lab) in enumerate(zip(input_ids, labels)):
            batch_ids[i, : len(ids)] = torch.tensor(ids)
            batch_labels[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(ids)] = 1
        return {"input_ids": batch_ids, "attention_mask": mask, "labels": batch_labels,
                "image_codes": torch.cat(codes), "image_grid_hw": torch.tensor(grids)}  # fmt: skip


def test_sft_trainer_on_codes_trains_and_images_reach_the_llm(tmp_path):
    from trl import SFTConfig, SFTTrainer

    tokenizer = qwen_tokenizer()
    model = tiny_vlm(tokenizer)
    dataset = codes_dataset(model, tokenizer)
    model.freeze(vision=True)
    projector_before = {n: p.detach().clone() for n, p in model.model.projector.named_parameters()}
    vision_before = model.model.vision_tower.code_embedder.merge.fc1.weight.detach().clone()
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, learning_rate=5e-3, use_cpu=True,
        bf16=False, report_to="none", logging_steps=1, save_strategy="no", max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False,  # TRL default: checkpointing on
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         data_collator=CodesCollator(tokenizer))  # fmt: skip
    result = trainer.train()
    assert result.global_step == 4 and np.isfinite(result.training_loss)
    # the projector only gets a gradient through the image embeddings merged into the text: had the base model
    # skipped the merge (or had the codes been dropped on the way), it would be unchanged
    changed = [n for n, p in model.model.projector.named_parameters() if not torch.equal(p.detach(), projector_before[n])]
    assert set(changed) == set(projector_before), f"projector parameters left unchanged: {set(projector_before) - set(changed)}"
    assert torch.equal(model.model.vision_tower.code_embedder.merge.fc1.weight, vision_before)  # frozen
    # and the trained model generates from codes
    batch = CodesCollator(tokenizer)([dataset[0]])
    out = model.generate(input_ids=batch["input_ids"], image_codes=batch["image_codes"],
                         image_grid_hw=batch["image_grid_hw"], max_new_tokens=3, do_sample=False)  # fmt: skip
    assert out.shape[1] == batch["input_ids"].shape[1] + 3


def test_sft_trainer_on_images_with_the_processor_and_trl_default_collator(tmp_path):
    """The everyday path: an `images` + `messages` dataset, ViQProcessor as processing class, TRL's own collator."""
    from datasets import Dataset
    from PIL import Image as PILImage
    from trl import SFTConfig, SFTTrainer

    from transformers_viq import ViQProcessor

    tokenizer = qwen_tokenizer()
    model = tiny_vlm(tokenizer).freeze(vision=True)
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
