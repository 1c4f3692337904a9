"""training/sft.py end to end on the bundled tiny data: images -> `viq extract` (defaults) -> SFT -> saved model ->
`generate`, from codes, from pixels and from LLaVA JSON, with DoRA, LoRA and full fine-tuning, packing, 2 processes,
and the refusals."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor

from transformers_viq import IncompatibleCodebookError, load_code_dataset, load_llava_json
from transformers_viq.testing import free_port, make_tiny_model, save_tiny_qwen


REPO = Path(__file__).resolve().parents[1]
TINY_DATA = REPO / "training" / "data" / "tiny" / "llava.json"
TINY_VIQ = REPO / "examples" / "tiny-viq"


def load_script():
    spec = importlib.util.spec_from_file_location("viq_sft_script", REPO / "training" / "sft.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


SFT = load_script()


def run_sft(tmp_path: Path, name: str, **options):
    """Run the script's `main` in-process with a YAML config, as `python training/sft.py --config x.yaml` would."""
    config = {"viq_model": str(TINY_VIQ), "use_cpu": True, "bf16": False, "report_to": "none", "save_strategy": "no",
              "per_device_train_batch_size": 2, "logging_steps": 1, "learning_rate": 5e-3, "seed": 0,
              "output_dir": str(tmp_path / name)}  # fmt: skip
    config.update(options)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    parsed = SFT.make_parser().parse_args_and_config(args=["--config", str(path)])
    return SFT.main(*parsed), Path(config["output_dir"])


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny Qwen2 LM folder, the tiny data as a TRL vision dataset folder, and its codes from `viq extract`."""
    from datasets import Image, List

    from transformers_viq.cli import main as viq

    root = tmp_path_factory.mktemp("parts")
    llm = save_tiny_qwen(root / "qwen")
    dataset = load_llava_json(TINY_DATA).cast_column("images", List(Image()))
    dataset.save_to_disk(str(root / "trl-dataset"))
    assert viq(["extract", str(root / "trl-dataset"), "-o", str(root / "codes"), "--model", str(TINY_VIQ)]) == 0
    return {"llm": llm, "dataset": root / "trl-dataset", "codes": root / "codes", "root": root}


def generate_both_ways(output: Path, codes_dir: Path):
    """The saved model loads with the Auto classes and generates from stored codes (odd grid) and from pixels."""
    model = AutoModelForImageTextToText.from_pretrained(output)
    processor = AutoProcessor.from_pretrained(output)
    row = load_code_dataset(codes_dir)[0]
    assert any(side % 2 for side in row["image_grid_hw"][0])  # an odd grid, as viq extract wrote it
    messages = [row["messages"][0]]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    codes = [np.asarray(c, dtype=np.int64) for c in row["image_codes"]]
    inputs = processor(text=prompt, image_codes=codes, image_grid_hw=row["image_grid_hw"], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4 or out[0, -1] == processor.tokenizer.eos_token_id
    image = TINY_DATA.parent / json.loads(TINY_DATA.read_text())[0]["image"]
    inputs = processor(text=prompt, images=[str(image)], return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] > inputs["input_ids"].shape[1]
    return model


def test_dora_on_codes_packed_saves_a_merged_model_with_the_projector(parts, tmp_path, monkeypatch):
    from test_model_cards import FakeHfApi, front_matter

    from transformers_viq import model_cards

    FakeHfApi.instances.clear()
    monkeypatch.setattr(model_cards, "HfApi", FakeHfApi)
    trainer, output = run_sft(
        tmp_path, "dora-codes", llm_model=parts["llm"], dataset_name=str(parts["codes"]), training_mode="lora",
        use_peft=True, use_dora=True, lora_r=4, lora_alpha=16, packing=True, max_length=160, max_steps=2,
        push_to_hub=True, hub_model_id="me/tiny-viq-dora", card_base_model="Qwen/Qwen2.5-0.5B-Instruct",
    )  # fmt: skip
    assert trainer.state.global_step == 2
    assert trainer.model.is_activation_checkpointing  # TRL's default, through PEFT, with the merge in the base model
    # the adapter holds DoRA on the LLM and the whole projector (modules_to_save); both trained
    with safe_open(output / "adapter" / "adapter_model.safetensors", "pt") as adapter:
        names = list(adapter.keys())
        assert any("lora_magnitude_vector" in n for n in names) and all(".vision_tower." not in n for n in names)
        projector = {n.split("projector.")[1]: adapter.get_tensor(n) for n in names if ".projector." in n}
        assert any("lora_B" in n and adapter.get_tensor(n).abs().sum() > 0 for n in names)
    assert {"proj_in.weight", "image_begin", "image_newline"} <= set(projector)
    model = generate_both_ways(output, parts["codes"])
    torch.testing.assert_close(model.model.projector.proj_in.weight, projector["proj_in.weight"])
    assert not (output / "adapter_config.json").exists()  # the folder itself is a plain, merged model
    # pushed once, with the ViQ VLM card
    (api,) = FakeHfApi.instances
    assert {"README.md", "config.json", "model.safetensors", "processor_config.json"} <= set(api.files)
    card = api.files["README.md"].decode()
    assert front_matter(card)["pipeline_tag"] == "image-text-to-text" and "DoRA r=4" in card


def test_lora_on_llava_json_skips_unreadable_images_mid_epoch(parts, tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(TINY_DATA.parent, folder)
    rows = json.loads(TINY_DATA.read_text())
    (folder / "four.json").write_text(json.dumps(rows[:3] + rows[24:25]))  # shape-001's image goes missing
    os.remove(folder / rows[1]["image"])
    trainer, output = run_sft(
        tmp_path, "lora-llava", llm_model=parts["llm"], dataset_name=str(folder / "four.json"), training_mode="lora",
        use_peft=True, lora_r=4, lora_alpha=8, max_length=None, max_steps=1, per_device_train_batch_size=4,
    )  # fmt: skip
    assert trainer.state.global_step == 1
    skipped = [json.loads(line) for line in (output / "skipped-samples-rank0.jsonl").read_text().splitlines()]
    assert [record["sample"] for record in skipped] == ["row id 'shape-001'"]
    assert "No such image file" in skipped[0]["error"] and trainer.data_collator.skipped.count == 1
    assert trainer.state.log_history[-1]["skipped_samples"] == 1  # in the logs that are printed and reported
    with safe_open(output / "adapter" / "adapter_model.safetensors", "pt") as adapter:
        assert not any("magnitude" in n for n in adapter.keys())  # plain LoRA
    generate_both_ways(output, parts["codes"])


def test_rows_left_out_before_training_are_written_and_counted(parts, tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(TINY_DATA.parent, folder)
    rows = json.loads(TINY_DATA.read_text())
    long_row = json.loads(json.dumps(rows[2]))
    long_row["id"] = "too-long"
    long_row["conversations"][0]["value"] += " and then" * 400
    (folder / "five.json").write_text(json.dumps(rows[:3] + rows[24:25] + [long_row]))
    os.remove(folder / rows[1]["image"])  # found when the lengths are counted, before training
    trainer, output = run_sft(
        tmp_path, "left-out", llm_model=parts["llm"], dataset_name=str(folder / "five.json"), training_mode="full",
        max_length=512, max_steps=1, per_device_train_batch_size=3,
    )  # fmt: skip
    records = [json.loads(line) for line in (output / "skipped-samples-rank0.jsonl").read_text().splitlines()]
    assert [(r["sample"], r["stage"]) for r in records] == [
        ("row 1 (id 'shape-001')", "before training"), ("row 4 (id 'too-long')", "before training")]  # fmt: skip
    assert "No such image file" in records[0]["error"] and "longer than max_length=512" in records[1]["error"]
    assert trainer.data_collator.skipped.count == 2
    assert trainer.state.log_history[-1]["skipped_samples"] == 2  # counted in the logs too


@pytest.fixture(scope="module")
def full_run(parts):
    """Full fine-tuning from a TRL vision dataset folder (images + messages) on a repeated pair of rows."""
    from datasets import load_from_disk

    root = parts["root"]
    load_from_disk(str(parts["dataset"])).select([0, 1] * 4).save_to_disk(str(root / "repeated"))
    return run_sft(
        root, "full", llm_model=parts["llm"], dataset_name=str(root / "repeated"), training_mode="full",
        max_steps=6, max_length=512, lr_scheduler_type="constant",
    )  # fmt: skip


def test_full_finetuning_from_a_trl_dataset_lowers_the_loss_on_a_repeated_batch(parts, full_run):
    trainer, output = full_run
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6 and losses[-1] < losses[0] - 1.0, losses
    generate_both_ways(output, parts["codes"])


def test_one_seed_trains_one_model(parts, tmp_path):
    """Two runs with the same seed save the same weights: the fresh projector is drawn after seeding."""
    weights = []
    for name in ("first", "second"):
        _, output = run_sft(tmp_path, name, llm_model=parts["llm"], dataset_name=str(parts["codes"]),
                            training_mode="full", max_steps=1, seed=3)  # fmt: skip
        weights.append(AutoModelForImageTextToText.from_pretrained(output).state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_projector_only_from_a_saved_vlm(parts, full_run, tmp_path):
    """Alignment mode on a saved VLM: only the projector changes; the LLM and the tokenizer stay as they were."""
    _, first = full_run
    before = AutoModelForImageTextToText.from_pretrained(first).state_dict()
    run_sft(tmp_path, "align", viq_model=None, model_name_or_path=str(first), dataset_name=str(parts["codes"]),
            training_mode="projector", max_steps=2)  # fmt: skip
    after = AutoModelForImageTextToText.from_pretrained(tmp_path / "align").state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(".projector." in name for name in changed)


def test_refusals_before_training(parts, tmp_path):
    viq_2k = tmp_path / "viq-2k"
    make_tiny_model(levels=(8, 8, 4, 3, 3)).save_pretrained(viq_2k)
    with pytest.raises(IncompatibleCodebookError, match=r"\[8, 8, 8, 6, 5\].*\[8, 8, 4, 3, 3\]"):
        run_sft(tmp_path, "foreign", viq_model=str(viq_2k), llm_model=parts["llm"],
                dataset_name=str(parts["codes"]), max_steps=1)  # fmt: skip
    rows = json.loads(TINY_DATA.read_text())
    rows[5]["conversations"][0]["value"] += " <image>"
    (tmp_path / "mismatch.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"sample 'shape-005' has 2 <image> markers but 1 images"):
        run_sft(tmp_path, "mismatch", llm_model=parts["llm"], dataset_name=str(tmp_path / "mismatch.json"),
                image_folder=str(TINY_DATA.parent), max_steps=1)  # fmt: skip
    with pytest.raises(ValueError, match="--use_peft goes with --training_mode lora"):
        run_sft(tmp_path, "modes", llm_model=parts["llm"], dataset_name=str(parts["codes"]), use_peft=True,
                training_mode="full")  # fmt: skip
    with pytest.raises(ValueError, match="needs --card_base_model"):
        run_sft(tmp_path, "push", llm_model=parts["llm"], dataset_name=str(parts["codes"]), push_to_hub=True)


def test_two_cpu_processes_train_one_model(parts, tmp_path):
    """`torchrun --nproc_per_node 2` on CPU (gloo): both ranks train, one model is saved, it loads and generates."""
    config = {"viq_model": str(TINY_VIQ), "llm_model": parts["llm"], "dataset_name": str(parts["codes"]),
              "training_mode": "lora", "use_peft": True, "use_dora": True, "lora_r": 4, "lora_alpha": 16,
              "packing": True, "max_length": 160, "max_steps": 2, "per_device_train_batch_size": 1,
              "use_cpu": True, "bf16": False, "report_to": "none", "save_strategy": "no", "logging_steps": 1,
              "output_dir": str(tmp_path / "ddp")}  # fmt: skip
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(REPO / "training" / "sft.py"), "--config",
               str(tmp_path / "ddp.yaml")]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Training on 2 process(es) (DistributedType.MULTI_CPU" in result.stderr, result.stderr[-3000:]
    output = tmp_path / "ddp"
    assert (output / "model.safetensors").is_file() and (output / "adapter" / "adapter_config.json").is_file()
    generate_both_ways(output, parts["codes"])
