"""The accelerate configs under training/accelerate_configs/ parse, and FSDP's wrapping finds the VLM's blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from transformers_viq.testing import make_tiny_vlm


CONFIGS = Path(__file__).resolve().parents[1] / "training" / "accelerate_configs"
EXPECTED = {
    "single_gpu.yaml": ("NO", 1, 1),
    "multi_gpu.yaml": ("MULTI_GPU", 8, 1),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 8, 1),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 8, 1),
    "fsdp2.yaml": ("FSDP", 8, 1),
    "multi_node.yaml": ("MULTI_GPU", 16, 2),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_with_accelerate(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))  # unknown keys raise
    distributed, processes, machines = EXPECTED[name]
    assert (config.distributed_type.value, config.num_processes, config.num_machines) == (
        distributed,
        processes,
        machines,
    )
    assert config.mixed_precision == "bf16"
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-6])


def test_every_config_is_listed():
    assert sorted(path.name for path in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


def test_fsdp_transformer_wrapping_finds_every_no_split_module():
    """TRANSFORMER_BASED_WRAP wraps the classes in `_no_split_modules`; accelerate refuses names it cannot find."""
    from accelerate.utils.dataclasses import get_module_class_from_name

    vlm = make_tiny_vlm()
    for name in vlm._no_split_modules:
        assert get_module_class_from_name(vlm, name) is not None, name


RECIPES = CONFIGS.parent / "recipes"


@pytest.mark.parametrize("name", ["projector_alignment", "dora_sft_codes", "dora_sft_pixels", "tiny_cpu"])
def test_recipes_parse_with_the_script_and_carry_the_papers_numbers(name):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("viq_sft_recipes", CONFIGS.parent / "sft.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    args = ["--config", str(RECIPES / f"{name}.yaml"), "--bf16", "false", "--use_cpu", "true"]  # no GPU here
    _, training, model, viq = script.make_parser().parse_args_and_config(args=args)
    if name.startswith("dora"):
        assert (model.use_peft, model.use_dora, model.lora_r, model.lora_alpha, model.lora_dropout) == (
            True, True, 64, 16, 0.05)  # fmt: skip
        assert (training.learning_rate, training.max_length, training.packing, viq.training_mode) == (
            1e-4, 4096, True, "lora")  # fmt: skip
        assert training.lr_scheduler_kwargs == {"min_lr_rate": 0.1} and training.weight_decay == 1e-4
    if name == "dora_sft_pixels":
        assert viq.max_pixels == 768 * 768
    if name == "projector_alignment":
        assert (viq.training_mode, training.learning_rate, training.per_device_train_batch_size) == (
            "projector", 1e-3, 32)  # fmt: skip
    assert training.activation_checkpointing and training.gradient_checkpointing  # the new name, the old mirrors it
