"""Training ViQ itself: Stage-1 encoders, the proximal bottleneck, the four stages end to end, resume, the recipes.

Everything is tiny (widths of 32, 1-2 layers), on the CPU, without network: a tiny open_clip-layout SigLIP2 teacher,
a 2-layer Qwen2, a tiny Qwen-Image VAE, LPIPS and DINOv2 (`transformers_viq.testing.training`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, TrainingArguments

import transformers_viq
from transformers_viq import ViQConfig, ViQImageProcessor, ViQModel, ViQVisionConfig, ViQVisionModel
from transformers_viq.original_checkpoint import (
    resize_position_table,
    vision_model_from_original,
    vision_model_from_siglip2,
)
from transformers_viq.testing import TINY_VAE, free_port, make_tiny_model, qwen_tokenizer, tiny_config
from transformers_viq.testing.reference_checkpoint import make_siglip2_state_dict, make_stage1_state_dict
from transformers_viq.testing.training import (
    TINY_HEADS,
    make_tiny_training_assets,
    synthetic_rows,
    tiny_model_config,
    tiny_stage_arguments,
)
from transformers_viq.training import (
    LPIPS,
    CodebookUsage,
    ResolutionSchedule,
    StageImageTextCollator,
    ViQStageArguments,
    ViQStageTrainer,
    build_stage,
    code_stability,
    parse_stage_arguments,
    run_stage,
)
from transformers_viq.training.perceptual import VGG16Features


REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "training" / "recipes"
TINY_VISION = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_tiny_training_assets(tmp_path_factory.mktemp("assets"))


def _load_script(name: str, folder: str = "training"):
    """A script of the repository as a module (what `python <folder>/<name>.py` runs)."""
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def images_inputs(sizes=((48, 64), (32, 32))):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]
    return ViQImageProcessor(do_resize=False)(images=images, return_tensors="pt")


def training_args(output_dir, **overrides) -> TrainingArguments:
    kwargs = dict(output_dir=str(output_dir), max_steps=3, per_device_train_batch_size=2, learning_rate=1e-4,
                  logging_steps=1, save_steps=2, report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
                  dataloader_num_workers=0)  # fmt: skip
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


# ---- Stage-1 encoders and SigLIP2 teachers ---------------------------------------------------------------------
def test_published_stage1_file_loads_and_encodes(tmp_path):
    state = make_stage1_state_dict(num_layers=2, hidden_size=32, intermediate_size=64, pos_grid=8)
    path = tmp_path / "anyres_vit" / "giant1b" / "siglip2_g_anyres_s4.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    config = ViQVisionConfig(**TINY_VISION, intermediate_size=64, position_embedding_size=8)
    model = ViQVisionModel.from_pretrained(str(tmp_path), stage1_encoder="giant", config=config).eval()
    prefix = "base_model.model.model.vision_tower.vision_tower."
    assert torch.equal(model.encoder.layers[1].self_attn.qkv_proj.weight, state[prefix + "blocks.1.attn.qkv.weight"])
    assert torch.equal(model.head.probe, state[prefix + "attn_pool.latent"])
    assert torch.equal(model.embeddings.position_embedding.weight, state[prefix + "pos_embed"][0])

    inputs = images_inputs()
    out = model(**inputs)
    assert out.last_hidden_state.shape == (12 + 4, 32) and out.pooler_output.shape == (2, 32)
    alone = model(inputs["pixel_values"][:12], inputs["image_grid_hw"][:1])  # packing does not change an image
    torch.testing.assert_close(alone.pooler_output, out.pooler_output[:1], atol=1e-5, rtol=1e-5)

    model.save_pretrained(tmp_path / "hf")
    again = AutoModel.from_pretrained(tmp_path / "hf")
    assert type(again) is ViQVisionModel
    torch.testing.assert_close(again(**inputs).pooler_output, out.pooler_output)

    # training/convert_stage1.py: the same file to an HF folder, with its proof
    config.save_pretrained(tmp_path / "config")
    argv = ["--encoder", "giant", "--source", str(tmp_path), "-o", str(tmp_path / "converted"), "--config",
            str(tmp_path / "config" / "config.json")]  # fmt: skip
    assert _load_script("convert_stage1").main(argv) == 0
    torch.testing.assert_close(AutoModel.from_pretrained(tmp_path / "converted")(**inputs).pooler_output,
                               out.pooler_output)  # fmt: skip

    with pytest.raises(ConnectionError):  # offline and not cached: a clear failure, no request
        ViQVisionModel.from_pretrained("someone/not-cached", stage1_encoder="so400m", local_files_only=True)
    with pytest.raises(FileNotFoundError, match="siglip2_so400m_anyres_s4.pth"):
        ViQVisionModel.from_pretrained(str(tmp_path), stage1_encoder="so400m")
    with pytest.raises(ValueError, match="shape mismatches"):  # a giant preset cannot take the tiny file
        ViQVisionModel.from_pretrained(str(tmp_path), stage1_encoder="giant")
    state[prefix + "blocks.0.attn.surprise"] = torch.zeros(1)
    with pytest.raises(ValueError, match="blocks.0.attn.surprise"):
        vision_model_from_original(state, config)


@pytest.mark.parametrize("encoder", ["giant", "so400m"])
def test_published_stage1_key_table_covers_the_released_shapes(encoder):
    """Every key of a published Stage-1 file, at the released shapes (meta tensors: no memory), finds its parameter."""
    from transformers_viq.original_checkpoint import STAGE1_PREFIX, convert_trunk_state_dict
    from transformers_viq.testing.reference_checkpoint import trunk_key_shapes

    config = ViQVisionConfig.from_preset(encoder)
    shapes = trunk_key_shapes(num_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
                              intermediate_size=config.intermediate_size, pos_grid=128)  # fmt: skip
    state = {STAGE1_PREFIX + name: torch.empty(shape, device="meta") for name, shape in shapes}
    converted = convert_trunk_state_dict(state, ViQVisionModel.expected_state_shapes(config), dtype=None)
    assert len(converted) == len(shapes) == 12 * config.num_hidden_layers + 3 + 2 + 13


def test_full_width_stage1_file_loads_and_encodes(tmp_path):
    """The giant encoder's width and key names, 1 of its 40 blocks, with teacher and projector tensors to leave out."""
    state = make_stage1_state_dict(num_layers=1)
    config = ViQVisionConfig.from_preset("giant", num_hidden_layers=1)
    model = vision_model_from_original(state, config).eval()
    with torch.no_grad():
        out = model(**images_inputs(((32, 48),)))
    assert out.last_hidden_state.shape == (6, 1536) and out.pooler_output.shape == (1, 1536)
    assert torch.isfinite(out.pooler_output).all()


def test_siglip2_open_clip_and_timm_teachers_load(tmp_path):
    open_clip = make_siglip2_state_dict(num_layers=2, hidden_size=32, intermediate_size=64, pos_grid=4)
    timm = make_siglip2_state_dict(num_layers=2, hidden_size=32, intermediate_size=64, pos_grid=4, layout="timm")
    torch.save(open_clip, tmp_path / "open_clip_pytorch_model.bin")
    from safetensors.torch import save_file

    save_file(timm, tmp_path / "model.safetensors")
    teacher = vision_model_from_siglip2(tmp_path / "open_clip_pytorch_model.bin", num_attention_heads=4).eval()
    from_timm = vision_model_from_siglip2(tmp_path / "model.safetensors", num_attention_heads=4).eval()
    assert teacher.config.position_embedding_size == 4 and teacher.config.num_hidden_layers == 2
    inputs = images_inputs(((64, 64),))  # the tiny teacher's "384x384": its own 4x4 grid
    torch.testing.assert_close(teacher(**inputs).pooler_output, from_timm(**inputs).pooler_output)

    student = vision_model_from_siglip2(open_clip, num_attention_heads=4, position_embedding_size=8)
    expected = resize_position_table(open_clip["visual.trunk.pos_embed"][0], 8)
    torch.testing.assert_close(student.embeddings.position_embedding.weight, expected)
    corner = torch.nn.functional.interpolate(open_clip["visual.trunk.pos_embed"][0].T.reshape(1, 32, 4, 4),
                                             size=(8, 8), mode="bicubic", align_corners=False)  # fmt: skip
    torch.testing.assert_close(student.embeddings.position_embedding.weight[0], corner[0, :, 0, 0])


# ---- the Stage 2-1 bottleneck ----------------------------------------------------------------------------------
@pytest.mark.parametrize("proximal", ["linf", "l2", "tanh", "none"])
def test_proximal_bottleneck_saves_loads_and_constrains(tmp_path, proximal):
    config = tiny_config(quantizer="proximal", bottleneck_dim=8, proximal=proximal)
    assert config.quantizer_dim == 8 and config.preset is None
    model = ViQModel(config).eval()
    seen = {}
    model.code_embedder.project_out.register_forward_pre_hook(lambda module, args: seen.update(bottleneck=args[0]))
    inputs = images_inputs()
    out = model(**inputs)
    assert out.image_codes is None and out.quantizer_inputs.shape == (4 * 16, 8)
    bottleneck = seen["bottleneck"]
    if proximal == "linf":
        torch.testing.assert_close(bottleneck.abs().amax(-1), torch.ones(64))
    elif proximal == "l2":
        torch.testing.assert_close(bottleneck.norm(dim=-1), torch.ones(64))
    elif proximal == "tanh":
        torch.testing.assert_close(bottleneck, out.quantizer_inputs.tanh())
    else:
        torch.testing.assert_close(bottleneck, out.quantizer_inputs)
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path)
    assert again.config.quantizer == "proximal" and again.config.proximal == proximal
    torch.testing.assert_close(again(**inputs).last_hidden_state, out.last_hidden_state)
    with pytest.raises(ValueError, match="Stage 2-1 bottleneck"):
        again.encode(**inputs)


def test_quantizer_fields_are_checked_and_default_to_the_release():
    default = ViQConfig()
    assert (default.quantizer, default.bottleneck_dim, default.quantizer_dim) == ("fsq", None, 5)
    assert ViQConfig(quantizer="proximal").bottleneck_dim == 128
    with pytest.raises(ValueError, match="proximal"):
        ViQConfig(quantizer="proximal", proximal="l1")
    with pytest.raises(ValueError, match="bottleneck_dim"):
        ViQConfig(bottleneck_dim=128)
    with pytest.raises(ValueError, match="quantizer"):
        ViQConfig(quantizer="vq")


# ---- monitoring, LPIPS, collators ------------------------------------------------------------------------------
def test_codebook_usage_and_code_stability():
    usage = CodebookUsage(8)
    usage.update(torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]))
    stats = usage.compute()
    assert stats["codebook_usage"] == 1.0 and math.isclose(stats["codebook_perplexity"], 8.0)
    usage.reset()
    usage.update(torch.tensor([3, 3, 3, 5]))
    stats = usage.compute()
    assert stats["codebook_usage"] == 0.25 and 1.0 < stats["codebook_perplexity"] < 2.0
    with pytest.raises(ValueError, match="outside"):
        usage.update(torch.tensor([8]))

    model = make_tiny_model(include_decoder=False)
    inputs = images_inputs()
    codes = model.encode(**inputs).image_codes
    assert code_stability(model, inputs["pixel_values"], inputs["image_grid_hw"], codes, noise_std=0.0) == 1.0
    assert code_stability(model, inputs["pixel_values"], inputs["image_grid_hw"], codes, noise_std=2.0) < 0.9


def test_lpips_vgg16_from_public_files_and_round_trip(tmp_path):
    torch.manual_seed(0)
    vgg = {f"features.{k}": v for k, v in VGG16Features().features.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file also holds the classifier
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate([64, 128, 256, 512, 512])},
               tmp_path / "vgg.pth")  # fmt: skip
    lpips = LPIPS.from_vgg16_files(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    other = (images + 0.3 * torch.randn_like(images)).clamp(-1, 1)
    assert torch.all(lpips(images, images) == 0) and torch.all(lpips(images, other) > 0)
    lpips.save(tmp_path / "lpips.safetensors")
    again = LPIPS.from_file(tmp_path / "lpips.safetensors")
    torch.testing.assert_close(again(images, other), lpips(images, other))
    assert not any(p.requires_grad for p in again.parameters())


def test_image_text_collator_with_the_qwen_tokenizer():
    tokenizer = qwen_tokenizer()
    schedule = ResolutionSchedule([{"until": 0.5, "max_pixels": 64 * 64, "token_window": 4},
                                   {"until": 1.0, "max_pixels": 128 * 128, "token_window": 2}])  # fmt: skip
    collator = StageImageTextCollator(tokenizer, ViQImageProcessor(), schedule, min_pixels=32 * 32)
    rows = synthetic_rows(3)
    batch = collator(rows)
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    grids = batch["image_grid_hw"].tolist()
    assert all(h % 4 == 0 and w % 4 == 0 and h * w * 256 <= 64 * 64 for h, w in grids)
    assert int(batch["token_window"]) == 4
    for row, ids, labels, (h, w) in zip(rows, batch["input_ids"], batch["labels"], grids):
        assert int((ids == image_pad).sum()) == (h // 4) * (w // 4)
        supervised = tokenizer.decode(ids[labels != -100])
        assert supervised == row["answer"] + "<|im_end|>\n"
    schedule.set_progress(6, 10)
    later = collator(rows)
    assert int(later["token_window"]) == 2
    assert all(h % 2 == 0 and w % 2 == 0 for h, w in later["image_grid_hw"].tolist())
    assert later["pixel_values"].shape[0] > batch["pixel_values"].shape[0]  # a larger pixel budget


# ---- the stages ------------------------------------------------------------------------------------------------
def _finite_logs(history):
    logs = [entry for entry in history if "loss" in entry]
    assert logs, history
    for entry in logs:
        assert all(math.isfinite(v) for k, v in entry.items() if isinstance(v, float)), entry
    return logs


def test_stage_chain_hands_over_and_ends_in_a_tokenizer(assets, tmp_path, monkeypatch, capsys):
    """1 -> 2-1 -> 2-2 -> decoder: Stage 1 through the entry point (`training/train_viq.py` with its tiny recipe),
    then `run_stage`; the Stage 2-2 output loads as ViQModel and encodes, the decoder output is evaluated with the
    reconstruction protocol."""
    stage1 = tmp_path / "stage1"
    fields = tiny_stage_arguments("stage1", assets)
    argv = ["--config", str(RECIPES / "tiny" / "viq_stage1.yaml"), "--output_dir", str(stage1), "--max_steps", "2",
            "--save_steps", "1", "--disable_tqdm", "true", "--teacher_name_or_path", fields["teacher_name_or_path"],
            "--text_model_name_or_path", fields["text_model_name_or_path"], "--dataset_name_or_path",
            fields["dataset_name_or_path"]]  # fmt: skip
    assert _load_script("train_viq").main(argv) == 0
    assert "stage1: wrote" in capsys.readouterr().out
    state = json.loads((stage1 / "trainer_state.json").read_text())
    logs = _finite_logs(state["log_history"])
    assert {"loss_text", "loss_distill"} <= set(logs[0]) and logs[0]["token_window"] == 4
    assert (stage1 / "checkpoint-2" / "viq_training_state.safetensors").is_file()  # LoRA + projector
    assert type(AutoModel.from_pretrained(stage1)) is ViQVisionModel

    stage2_1, stage2_2, decoder = tmp_path / "stage2_1", tmp_path / "stage2_2", tmp_path / "decoder"
    import datasets

    datasets.load_from_disk(assets.dataset).select(range(2)).save_to_disk(str(tmp_path / "eval"))
    result = run_stage(ViQStageArguments(**tiny_stage_arguments("stage2_1", assets, init_from=str(stage1)),
                                         eval_dataset_name_or_path=str(tmp_path / "eval")), training_args(stage2_1))
    logs = _finite_logs(result.log_history)
    assert {"loss_text", "loss_distill", "loss_latent"} <= set(logs[0])
    assert math.isfinite(result.metrics["eval_loss"])
    model = AutoModel.from_pretrained(stage2_1)
    assert model.config.quantizer == "proximal" and model.config.bottleneck_dim == 8
    assert model.quantizer.project_in.out_features == 8

    result = run_stage(ViQStageArguments(**tiny_stage_arguments("stage2_2", assets, init_from=str(stage2_1)),
                                         code_stability_steps=1), training_args(stage2_2))  # fmt: skip
    logs = _finite_logs(result.log_history)
    assert {"loss_text", "loss_distill", "loss_latent", "codebook_usage", "codebook_perplexity",
            "code_stability"} <= set(logs[0])  # fmt: skip
    assert 0 < logs[0]["codebook_usage"] <= 1 and 1 <= logs[0]["codebook_perplexity"] <= 64
    tokenizer = ViQModel.from_pretrained(stage2_2).eval()
    assert tokenizer.config.quantizer == "fsq" and tokenizer.config.fsq_levels == [4, 4, 4]
    inputs = images_inputs()
    codes = tokenizer.encode(**inputs).image_codes
    assert codes.shape == (4 * 16,) and 0 <= int(codes.min()) and int(codes.max()) < 64
    assert tokenizer.embed_codes(codes, inputs["image_grid_hw"]).shape == (16, 32)

    result = run_stage(ViQStageArguments(**tiny_stage_arguments("decoder", assets, init_from=str(stage2_2))),
                       training_args(decoder, learning_rate=6e-4))  # fmt: skip
    logs = _finite_logs(result.log_history)
    assert {"loss_mse", "loss_lpips", "loss_kl", "loss_gan", "loss_discriminator", "loss_repa"} <= set(logs[0])
    assert (decoder / "checkpoint-2" / "ema.safetensors").is_file()
    tuned = ViQModel.from_pretrained(decoder).eval()
    torch.testing.assert_close(tuned.encoder.layers[0].mlp.fc1.weight, tokenizer.encoder.layers[0].mlp.fc1.weight)
    torch.testing.assert_close(tuned.vae.encoder.conv_in.weight, tokenizer.vae.encoder.conv_in.weight)
    assert not torch.equal(tuned.vae.decoder.conv_out.weight, tokenizer.vae.decoder.conv_out.weight)
    assert not torch.equal(tuned.latent_head.conv_out.weight, tokenizer.latent_head.conv_out.weight)
    assert torch.equal(tuned.encode(**inputs).image_codes, codes)  # the tokenizer itself stayed frozen

    # the project's reconstruction protocol (eval/reconstruction.py), with a stand-in Inception for rFID
    monkeypatch.syspath_prepend(str(REPO / "eval"))
    reconstruction = _load_script("reconstruction", "eval")
    inception = tmp_path / "inception.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_MeanStdFeatures()).save(str(inception))
    out = tmp_path / "recon"
    assert reconstruction.main(["--images", assets.eval_images, "--model", str(decoder), "--device", "cpu",
                                "--resolution", "32", "--quiet", "--inception-weights", str(inception),
                                "--output-dir", str(out)]) == 0  # fmt: skip
    numbers = json.loads((out / "results.json").read_text())
    assert numbers["num_images"] == 3 and math.isfinite(numbers["psnr"]) and -1 <= numbers["ssim"] <= 1
    assert numbers["rfid"] is not None and math.isfinite(numbers["rfid"])


class _MeanStdFeatures(torch.nn.Module):
    """Stands in for a TorchScript Inception-v3 (uint8 images -> features) in the rFID computation."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.float() / 255.0
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def _stage_inputs(assets, tmp_path, stage: str) -> str | None:
    """An `init_from` for `stage` made without training (the previous stage's architecture, fresh weights)."""
    if stage == "stage1":  # another SigLIP2 than the teacher, so that distillation has something to do
        other = make_siglip2_state_dict(num_layers=2, hidden_size=32, intermediate_size=64, pos_grid=4, seed=1)
        torch.save(other, tmp_path / "other_siglip2.bin")
        return str(tmp_path / "other_siglip2.bin")
    if stage == "stage2_1":
        stage1 = vision_model_from_siglip2(assets.teacher, num_attention_heads=TINY_HEADS, position_embedding_size=8)
        stage1.save_pretrained(tmp_path / "stage1")
        return str(tmp_path / "stage1")
    if stage == "stage2_2":
        vision = ViQVisionConfig(**TINY_VISION, intermediate_size=64, position_embedding_size=8)
        config = ViQConfig(vision_config=vision.to_dict(), vae_config=dict(TINY_VAE), quantizer="proximal",
                           **{k: v for k, v in tiny_model_config("stage2_1").items() if k != "quantizer"})  # fmt: skip
        ViQModel(config).save_pretrained(tmp_path / "stage2_1")
        return str(tmp_path / "stage2_1")
    model = make_tiny_model(levels=(4, 4, 4), **{k: v for k, v in tiny_model_config("stage2_2").items()
                                                  if k != "fsq_levels"})  # fmt: skip
    model.save_pretrained(tmp_path / "stage2_2")
    return str(tmp_path / "stage2_2")


@pytest.mark.parametrize("stage", ["stage1", "stage2_1", "stage2_2", "decoder"])
def test_losses_decrease_on_a_repeated_batch(assets, tmp_path, stage):
    init_from = _stage_inputs(assets, tmp_path, stage)
    fields = tiny_stage_arguments(stage, assets, init_from=init_from)
    fields["init_from"] = init_from
    if stage == "decoder":
        fields.update(gan_weight=0.0)  # the adversarial game need not decrease; its terms are checked in the chain
    components = build_stage(ViQStageArguments(**fields), training_args(tmp_path / "out"))
    model = components.model.train()
    batch = components.data_collator([components.train_dataset[i] for i in range(2)])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-3 if stage == "decoder" else 5e-4, weight_decay=0.0)
    history = []
    for _ in range(5):
        out = model(**batch)
        assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.losses.values())
        history.append({"loss": out.loss.item(), **{k: v.item() for k, v in out.losses.items()}})
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
    first, last = history[0], history[-1]
    assert last["loss"] < first["loss"], history
    decreasing = {"stage1": ["text", "distill"], "stage2_1": ["text", "distill", "latent"],
                  "stage2_2": ["text", "distill", "latent"], "decoder": ["mse", "lpips", "repa"]}[stage]  # fmt: skip
    for name in decreasing:
        assert last[name] < first[name], (name, history)


def test_hand_over_weights_and_separate_learning_rates(assets, tmp_path):
    source = _stage_inputs(assets, tmp_path, "stage2_1")
    components = build_stage(ViQStageArguments(**tiny_stage_arguments("stage2_1", assets, init_from=source),
                                               new_parameter_learning_rate=1e-3), training_args(tmp_path / "o"))
    stage1 = ViQVisionModel.from_pretrained(source)
    viq = components.model.viq
    torch.testing.assert_close(viq.encoder.layers[1].mlp.fc2.weight, stage1.encoder.layers[1].mlp.fc2.weight)
    torch.testing.assert_close(viq.head.probe, stage1.head.probe)
    assert "fusion.layers.0.self_attn.qkv_proj.weight" in components.transfer.fresh
    new = components.model.new_parameter_names
    assert "viq.quantizer.project_in.weight" in new and "viq.encoder.layers.0.mlp.fc1.weight" not in new
    assert any(".lora_" in name for name in new) and "text_head.projector.proj_in.weight" in new
    assert not any(name.startswith(("viq.vae.", "teacher.")) for name in new)
    trainer = ViQStageTrainer(components.model, training_args(tmp_path / "o", learning_rate=5e-5),
                              train_dataset=components.train_dataset, data_collator=components.data_collator,
                              new_parameter_learning_rate=1e-3)  # fmt: skip
    optimizer = trainer.create_optimizer()
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    params = dict(components.model.named_parameters())
    assert rates[id(params["viq.quantizer.project_in.weight"])] == 1e-3
    assert rates[id(params["viq.encoder.layers.0.mlp.fc1.weight"])] == 5e-5
    assert id(params["viq.vae.decoder.conv_in.weight"]) not in rates  # the frozen VAE does not train

    # 2-1 -> 2-2: everything but the projections around the quantizer and the new RoPE blocks
    viq.save_pretrained(tmp_path / "stage2_1")
    fields = tiny_stage_arguments("stage2_2", assets, init_from=str(tmp_path / "stage2_1"))
    later = build_stage(ViQStageArguments(**fields), training_args(tmp_path / "o2"))
    assert set(later.transfer.reshaped) == {"quantizer.project_in.weight", "quantizer.project_in.bias",
                                            "code_embedder.project_out.weight"}  # fmt: skip
    assert not later.transfer.unused
    torch.testing.assert_close(later.model.viq.fusion.expand.fc1.weight, viq.fusion.expand.fc1.weight)
    torch.testing.assert_close(later.model.viq.vae.decoder.conv_in.weight, viq.vae.decoder.conv_in.weight)


def test_resume_continues_the_run_exactly(assets, tmp_path):
    """Four steps in one go equal two steps, a checkpoint, and two more resumed from it (LoRA and projector too)."""
    fields = tiny_stage_arguments("stage1", assets)
    straight = tmp_path / "straight"
    first = run_stage(ViQStageArguments(**fields), training_args(straight, max_steps=4))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    second = run_stage(ViQStageArguments(**fields), training_args(resumed, max_steps=4, resume_from_checkpoint="auto"))
    losses = [[(e["step"], e["loss"]) for e in result.log_history if "loss" in e] for result in (first, second)]
    assert [step for step, _ in losses[1]] == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint's state
    for (_, loss_a), (_, loss_b) in zip(losses[0][2:], losses[1][2:]):
        assert math.isclose(loss_a, loss_b, rel_tol=1e-4), losses  # steps 3-4 trained again, on the same batches
    a, b = ViQVisionModel.from_pretrained(straight), ViQVisionModel.from_pretrained(resumed)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=name)
    from safetensors.torch import load_file

    adapters_a = load_file(straight / "viq_training_state.safetensors")
    adapters_b = load_file(resumed / "viq_training_state.safetensors")
    assert adapters_a.keys() == adapters_b.keys() and any(".lora_" in key for key in adapters_a)
    for key in adapters_a:
        torch.testing.assert_close(adapters_a[key], adapters_b[key], atol=1e-5, rtol=1e-4)
    assert not torch.equal(a.encoder.layers[0].mlp.fc1.weight,
                           ViQVisionModel.from_pretrained(straight / "checkpoint-2").encoder.layers[0].mlp.fc1.weight)


def test_resume_settings(tmp_path):
    from transformers_viq.training.run import resolve_resume

    assert resolve_resume("auto", str(tmp_path)) is None and resolve_resume("none", str(tmp_path)) is None
    with pytest.raises(ValueError, match="no checkpoint"):
        resolve_resume("true", str(tmp_path))
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-10").mkdir()
    assert resolve_resume("auto", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert resolve_resume(str(tmp_path / "checkpoint-2"), str(tmp_path)) == str(tmp_path / "checkpoint-2")
    with pytest.raises(FileNotFoundError):
        resolve_resume(str(tmp_path / "checkpoint-3"), str(tmp_path))


# ---- recipes -----------------------------------------------------------------------------------------------------
def test_recipes_hold_the_papers_hyper_parameters():
    cpu = ["--use_cpu", "true", "--tf32", "false"]  # the recipes are for GPUs (bf16, tf32)
    parsed = {name: parse_stage_arguments(["--config", str(RECIPES / f"viq_{name}.yaml"), *cpu])
              for name in ("stage1", "stage2_1", "stage2_2", "decoder")}  # fmt: skip
    stage1, args1 = parsed["stage1"]
    assert stage1.stage == "stage1" and stage1.distill_weight == 10.0 and stage1.teacher_image_size == 384
    assert [(p["max_pixels"], p["token_window"]) for p in stage1.resolution_schedule] == [(384**2, 4), (768**2, 2)]
    assert (stage1.lora_r, stage1.lora_alpha, stage1.use_dora) == (64, 16, True) and args1.bf16
    assert args1.activation_checkpointing and args1.resume_from_checkpoint == "auto"
    assert stage1.text_model_name_or_path == "Qwen/Qwen2.5-0.5B" and stage1.position_embedding_size == 128
    stage2_1, args2_1 = parsed["stage2_1"]
    assert stage2_1.model_config["bottleneck_dim"] == 128 and stage2_1.model_config["proximal"] == "linf"
    assert (args2_1.learning_rate, stage2_1.new_parameter_learning_rate) == (5e-5, 1e-4)
    assert args2_1.lr_scheduler_kwargs == {"min_lr_rate": 0.1} and stage2_1.vae_subfolder == "vae"
    stage2_2, args2_2 = parsed["stage2_2"]
    assert args2_2.learning_rate == 5e-5 and stage2_2.new_parameter_learning_rate is None
    assert stage2_2.model_config == {"fsq_levels": [8, 8, 8, 6, 5], "quantizer_num_layers": 3}
    decoder, args_decoder = parsed["decoder"]
    assert (args_decoder.learning_rate, args_decoder.warmup_steps, args_decoder.max_steps) == (6e-4, 5000, 50000)
    assert args_decoder.lr_scheduler_type == "constant_with_warmup" and args_decoder.bf16
    assert decoder.repa_weight == 1.5 and decoder.ema_decay == 0.9999 and decoder.image_size == 256
    for name in ("stage1", "stage2_1", "stage2_2", "decoder"):
        stage_args, args = parse_stage_arguments(["--config", str(RECIPES / "tiny" / f"viq_{name}.yaml")])
        assert stage_args.stage == name and args.use_cpu and args.resume_from_checkpoint == "auto"


@pytest.mark.slow
def test_distributed_runs_reduce_their_logs(assets, tmp_path):
    """Two CPU processes (gloo) through torchrun: the logs are reduced over ranks and one model is written."""
    source = _stage_inputs(assets, tmp_path, "stage2_2")
    fields = tiny_stage_arguments("stage2_2", assets, init_from=source)
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
            str(REPO / "training" / "train_viq.py"), "--config", str(RECIPES / "tiny" / "viq_stage2_2.yaml"),
            "--output_dir", str(tmp_path / "ddp"), "--max_steps", "2", "--disable_tqdm", "true"]  # fmt: skip
    for key in ("init_from", "teacher_name_or_path", "text_model_name_or_path", "dataset_name_or_path"):
        argv += [f"--{key}", str(fields[key])]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())
    assert "codebook_usage" in _finite_logs(state["log_history"])[0]
    assert type(AutoModel.from_pretrained(tmp_path / "ddp")) is ViQModel


def test_the_package_registers_the_vision_model():
    from transformers import AutoConfig

    assert AutoConfig.for_model("viq_vision_model").__class__ is ViQVisionConfig
    assert transformers_viq.ViQVisionModel is ViQVisionModel


@pytest.mark.parametrize("stage", ["stage1", "stage2_2"])
def test_fsdp_wraps_the_stage_blocks_and_resumes_into_sharded_parameters(assets, tmp_path, stage):
    """
    TRANSFORMER_BASED_WRAP finds every block class the stage declares, and a checkpoint's full tensors load into
    FSDP2-sharded parameters (one CPU process, gloo: the same calls as on GPUs).
    """
    import torch.distributed as dist
    from accelerate.utils.dataclasses import get_module_class_from_name
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from transformers_viq.training.trainer import load_stage_state

    init_from = _stage_inputs(assets, tmp_path, stage)
    model = build_stage(ViQStageArguments(**tiny_stage_arguments(stage, assets, init_from=init_from)),
                        training_args(tmp_path / "out")).model  # fmt: skip
    blocks = model._no_split_modules
    assert "ViQEncoderLayer" in blocks  # the one block class of the trunk, fusion, quantizer and latent head
    for name in blocks:
        assert get_module_class_from_name(model, name) is not None, name
    torch.manual_seed(1)
    viq_state = {key: torch.randn_like(value) for key, value in model.viq.state_dict().items()}
    auxiliary = {key: torch.randn_like(model.state_dict()[key]) for key in model.auxiliary_state_keys()}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'process-group'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        classes = tuple(get_module_class_from_name(model, name) for name in blocks)
        for module in list(model.modules()):
            if isinstance(module, classes) and any(p.requires_grad for p in module.parameters()):
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        assert any(isinstance(parameter, DTensor) for parameter in model.parameters())
        load_stage_state(model, viq_state, auxiliary)
        loaded = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))

        def full(tensor):
            return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor

        for key, value in {**{f"viq.{k}": v for k, v in viq_state.items()}, **auxiliary}.items():
            torch.testing.assert_close(full(loaded[key]), value, msg=key)
        with pytest.raises(ValueError, match="does not match the model"):
            load_stage_state(model, {"not.a.key": torch.zeros(1)}, {})
    finally:
        dist.destroy_process_group()
