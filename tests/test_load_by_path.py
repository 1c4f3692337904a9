"""Every model folder the project writes loads by path where TRL and transformers take a path: `SFTTrainer(model=...)`
(TRL's `create_model_from_path`), `transformers.pipeline(...)`, and `trl sft --trust_remote_code` on a folder saved
with the code in an environment without this package. CPU, tiny models, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_viq import ViQForConditionalGeneration, ViQImageProcessor, ViQProcessor, ViQVisionConfig
from transformers_viq.model_cards import save_for_hub
from transformers_viq.testing import make_tiny_model, make_tiny_vlm, qwen_tokenizer


def vision_rows(n: int = 4) -> dict:
    """TRL's conversational vision format: `images` + `messages`."""
    rng = np.random.default_rng(1)
    rows = {"images": [], "messages": []}
    for index in range(n):
        image = Image.fromarray(rng.integers(0, 256, size=(32, 32 * (1 + index % 2), 3), dtype=np.uint8))
        rows["images"].append([image])
        rows["messages"].append([
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"What is {index}?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"Number {index}."}]},
        ])  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def saved_vlm(tmp_path_factory) -> tuple[Path, ViQForConditionalGeneration]:
    """A VLM folder as `training/sft.py` writes it: `save_pretrained` of the model and its processor, no code."""
    folder = tmp_path_factory.mktemp("tiny-sft")
    tokenizer = qwen_tokenizer()
    model = make_tiny_vlm(tokenizer)
    model.save_pretrained(folder)
    ViQProcessor(tokenizer=tokenizer).save_pretrained(folder)
    return folder, model


def test_configs_answer_auto_map_and_a_plain_save_writes_none(saved_vlm, tmp_path):
    from transformers import AutoConfig

    folder, model = saved_vlm
    assert "auto_map" not in json.loads((folder / "config.json").read_text())
    config = AutoConfig.from_pretrained(folder)
    assert config.auto_map == {} and config.vision_config.auto_map == {}
    for config in (make_tiny_model().config, ViQVisionConfig(hidden_size=32, num_attention_heads=4)):
        assert config.auto_map == {}
        config.save_pretrained(tmp_path / type(config).__name__)
        assert "auto_map" not in json.loads((tmp_path / type(config).__name__ / "config.json").read_text())
    # each config owns its map: filling one (as saving with the code does) leaves the others empty
    first, second = make_tiny_model().config, make_tiny_model().config
    first.auto_map["AutoConfig"] = "configuration_viq.ViQConfig"
    assert second.auto_map == {}


def test_sft_trainer_loads_a_saved_vlm_by_path_and_trains(saved_vlm, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    folder, model = saved_vlm
    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, use_cpu=True, bf16=False,
                     report_to="none", save_strategy="no", max_length=None)  # fmt: skip
    trainer = SFTTrainer(model=str(folder), args=args, train_dataset=Dataset.from_dict(vision_rows()))
    assert type(trainer.model) is ViQForConditionalGeneration
    assert type(trainer.processing_class) is ViQProcessor  # TRL's AutoProcessor found ours
    before = trainer.model.model.projector.proj_in.weight.detach().clone()
    torch.testing.assert_close(before, model.model.projector.proj_in.weight)  # the saved weights, not fresh ones
    result = trainer.train()
    assert result.global_step == 1 and np.isfinite(result.training_loss)
    assert not torch.equal(trainer.model.model.projector.proj_in.weight, before)


def test_transformers_pipeline_loads_saved_folders_by_path(saved_vlm, tmp_path):
    from transformers import pipeline

    folder, _ = saved_vlm
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    chat = pipeline("image-text-to-text", model=str(folder))
    assert type(chat.model) is ViQForConditionalGeneration
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}]
    answer = chat(text=messages, max_new_tokens=2, do_sample=False)
    assert answer[0]["generated_text"][-1]["role"] == "assistant"

    tokenizer_folder = tmp_path / "tok"
    viq = make_tiny_model()
    viq.save_pretrained(tokenizer_folder)
    ViQImageProcessor().save_pretrained(tokenizer_folder)
    features = pipeline("image-feature-extraction", model=str(tokenizer_folder))
    assert type(features.model).__name__ == "ViQModel"
    assert np.isfinite(np.asarray(features(image))).all()


# ------------------------------------------------------------------------------------------------------------------
# `trl sft` on a folder saved with the code, where this package is not installed
# ------------------------------------------------------------------------------------------------------------------
# Imported by every Python process started with this folder on PYTHONPATH (`trl sft` re-launches itself through
# accelerate): `import transformers_viq` fails there as it would where the package was never installed.
HIDE_THE_PACKAGE = """
import importlib.abc, sys
class NoTransformersViq(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "transformers_viq" or name.startswith("transformers_viq."):
            raise ModuleNotFoundError("No module named 'transformers_viq' (hidden by the test)")
sys.meta_path.insert(0, NoTransformersViq())
"""


@pytest.mark.slow
def test_trl_sft_cli_trains_a_folder_saved_with_the_code_without_this_package(tmp_path):
    from datasets import Dataset

    tokenizer = qwen_tokenizer()
    save_for_hub([make_tiny_vlm(tokenizer), ViQProcessor(tokenizer=tokenizer)], tmp_path / "vlm", card="A tiny VLM.")
    data = tmp_path / "data"
    data.mkdir()
    Dataset.from_dict(vision_rows()).to_parquet(str(data / "train.parquet"))
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_THE_PACKAGE)

    env = {**os.environ, "PYTHONPATH": str(hide), "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}  # fmt: skip
    check = subprocess.run([sys.executable, "-c", "import transformers_viq"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "hidden by the test" in check.stderr
    trl = Path(sys.executable).with_name("trl")
    command = [str(trl), "sft", "--model_name_or_path", str(tmp_path / "vlm"), "--trust_remote_code",
               "--dataset_name", str(data), "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
               "--per_device_train_batch_size", "2", "--use_cpu", "--bf16", "false", "--report_to", "none",
               "--save_strategy", "no", "--max_length", "None", "--num_processes", "1"]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["architectures"] == ["ViQForConditionalGeneration"] and "AutoModelForImageTextToText" in saved[
        "auto_map"]
    assert (tmp_path / "out" / "model.safetensors").is_file()
