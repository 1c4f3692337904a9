# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Loading the authors' published ViQ checkpoints, and converting them to the Hugging Face format.

The authors publish `XuminYu/ViQ_weights` without a `config.json`; each tokenizer size is one PyTorch pickle,
`ViQ/converted_<size>/model_viq_fsq_<size>.pth`, holding the whole encoder, its heads and the Qwen-Image VAE
(reference-spec §2.1). `embedder.pth` and `index_drawer.pth` next to it repeat subsets of the same weights and are
not needed. This module

* finds that file in a local folder or on the Hub (only that file is fetched; the Hub cache works offline),
* renames its keys to this package's names with one explicit table (`ORIGINAL_TO_HF_KEY_MAPPING`),
* checks that every key is used and every parameter filled with the right shape, and lists the culprits if not,
* converts to HF format (`config.json` + `model.safetensors` + `preprocessor_config.json`) and proves that the
  converted model gives the same codes as the source on a few images.

Command line (the `viq convert` subcommand wraps the same function):

    python -m transformers_viq.convert_viq_original_to_hf --source XuminYu/ViQ_weights --size 16k \
        --output-dir viq-16k-hf [--push-to-hub me/viq-16k]
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import torch

from transformers.utils import logging

from .configuration_viq import FSQ_LEVEL_PRESETS, ViQConfig


logger = logging.get_logger(__name__)

ORIGINAL_FILENAME = "ViQ/converted_{size}/model_viq_fsq_{size}.pth"

# Published key (regex, matched from the start) -> this package's key. First match wins; every published key must
# match exactly one rule, and nothing is dropped silently.
# fmt: off
_BLOCK = r"(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$"
_BLOCK_NAMES = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv_proj",
                "attn.proj": "self_attn.out_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_HEADLESS = r"(norm1|norm2|attn\.qkv|attn\.proj|attn\.decrease_dim|attn\.increase_dim|mlp\.fc1|mlp\.fc2)\.(weight|bias)$"
_HEADLESS_NAMES = {**_BLOCK_NAMES, "attn.decrease_dim": "self_attn.down_proj", "attn.increase_dim": "self_attn.up_proj"}

ORIGINAL_TO_HF_KEY_MAPPING: list[tuple[str, object]] = [
    # trunk
    (r"^patch_embed\.proj\.(weight|bias)$",                           r"embeddings.patch_embedding.\1"),
    (r"^pos_embed$",                                                  "embeddings.position_embedding.weight"),
    (r"^blocks\.(\d+)\." + _BLOCK,                                    lambda m: f"encoder.layers.{m[1]}.{_BLOCK_NAMES[m[2]]}.{m[3]}"),
    # attention-pooling head (fed by `norm`, the trunk's final LayerNorm, applied to the quantized features)
    (r"^norm\.(weight|bias)$",                                        r"post_layernorm.\1"),
    (r"^attn_pool\.latent$",                                          "head.probe"),
    (r"^attn_pool\.q\.(weight|bias)$",                                r"head.q_proj.\1"),
    (r"^attn_pool\.kv\.(weight|bias)$",                               r"head.kv_proj.\1"),
    (r"^attn_pool\.proj\.(weight|bias)$",                             r"head.out_proj.\1"),
    (r"^attn_pool\.norm\.(weight|bias)$",                             r"head.layernorm.\1"),
    (r"^attn_pool\.mlp\.(fc1|fc2)\.(weight|bias)$",                   r"head.mlp.\1.\2"),
    # fusion block
    (r"^fusion_block\.vq_low_preprocess_layers\.(\d+)\." + _BLOCK,    lambda m: f"fusion.layers.{m[1]}.{_BLOCK_NAMES[m[2]]}.{m[3]}"),
    (r"^fusion_block\.vq_low_pre_token_shuffle_head\.(fc1|fc2)\.(weight|bias)$",  r"fusion.expand.\1.\2"),
    (r"^fusion_block\.vq_low_post_token_shuffle_head\.(fc1|fc2)\.(weight|bias)$", r"fusion.expand_post.\1.\2"),
    # quantizer
    (r"^fusion_block\.vq_low\.fsq_pre_attn\.(\d+)\." + _HEADLESS,     lambda m: f"quantizer.layers.{m[1]}.{_HEADLESS_NAMES[m[2]]}.{m[3]}"),
    (r"^fusion_block\.vq_low\.project_in\.(weight|bias)$",            r"quantizer.project_in.\1"),
    # code embedder
    (r"^fusion_block\.vq_low\.project_out\.(weight|bias)$",           r"code_embedder.project_out.\1"),
    (r"^fusion_block\.vq_low_inverse_token_shuffle_head\.(fc1|fc2)\.(weight|bias)$", r"code_embedder.merge.\1.\2"),
    (r"^fusion_block\.vq_low_postprocess_layers\.0\.(fc1|fc2)\.(weight|bias)$",      r"code_embedder.mlp.\1.\2"),
    (r"^fusion_block\.vq_low_postprocess_layers\.(\d+)\.norm\.(weight|bias)$",
     lambda m: f"code_embedder.residual_layers.{int(m[1]) - 1}.layer_norm.{m[2]}"),
    (r"^fusion_block\.vq_low_postprocess_layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$",
     lambda m: f"code_embedder.residual_layers.{int(m[1]) - 1}.mlp.{m[2]}.{m[3]}"),
    (r"^fusion_block\.vq_low_norm_trick_post_quantize_affine_weight$", "code_embedder.affine_weight"),
    (r"^fusion_block\.vq_low_norm_trick_post_quantize_affine_bias$",   "code_embedder.affine_bias"),
    # latent head
    (r"^vae_preprocess_layers\.0\.(fc1|fc2)\.(weight|bias)$",         r"latent_head.mlp.\1.\2"),
    (r"^vae_preprocess_layers\.1\.(weight|bias)$",                    r"latent_head.layer_norm.\1"),
    (r"^vae_preprocess_layers\.(\d+)\." + _BLOCK,                     lambda m: f"latent_head.layers.{int(m[1]) - 2}.{_BLOCK_NAMES[m[2]]}.{m[3]}"),
    (r"^vae_head\.conv_norm_out\.(weight|bias)$",                     r"latent_head.norm_out.\1"),
    (r"^vae_head\.conv_out\.(weight|bias)$",                          r"latent_head.conv_out.\1"),
    # Qwen-Image VAE: diffusers' AutoencoderKLQwenImage, same names
    (r"^vae_head\.vae\.(.+)$",                                        r"vae.\1"),
]
# fmt: on
_COMPILED = [(re.compile(pattern), replacement) for pattern, replacement in ORIGINAL_TO_HF_KEY_MAPPING]


def rename_original_key(key: str) -> str | None:
    """This package's name for a published key, or `None` if no rule matches."""
    for pattern, replacement in _COMPILED:
        match = pattern.match(key)
        if match:
            return replacement(match) if callable(replacement) else match.expand(replacement)
    return None


def _expected_state(config: ViQConfig) -> dict[str, torch.Size]:
    from .modeling_viq import ViQModel

    with torch.device("meta"):
        model = ViQModel._from_config(config)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def convert_original_state_dict(
    original: dict[str, torch.Tensor], config: ViQConfig, dtype: torch.dtype | None = torch.float32
) -> dict[str, torch.Tensor]:
    """
    Rename and reshape a published state dict to this package's layout, after checking it completely.

    Raises:
        `ValueError` listing every published key no rule maps (unexpected), every model key not filled (missing) and
        every shape that differs, in one message.
    """
    expected = _expected_state(config)
    converted, unexpected, mismatched, sources, mismatched_keys = {}, [], [], {}, set()
    left_out = 0
    for key, tensor in original.items():
        new_key = rename_original_key(key)
        if not config.include_decoder and new_key is not None and new_key.startswith(("latent_head.", "vae.")):
            left_out += 1  # the config asks for a model without the decoder
            continue
        if new_key is None or new_key not in expected:
            unexpected.append(key)
            continue
        if new_key == "embeddings.position_embedding.weight" and tensor.ndim == 3 and tensor.shape[0] == 1:
            tensor = tensor[0]  # published as (1, grid * grid, hidden)
        if tuple(tensor.shape) != tuple(expected[new_key]):
            mismatched.append(f"{key} -> {new_key}: file {tuple(tensor.shape)}, model {tuple(expected[new_key])}")
            mismatched_keys.add(new_key)
            continue
        if new_key in converted:
            unexpected.append(f"{key} (duplicate of {sources[new_key]})")
            continue
        sources[new_key] = key
        converted[new_key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    missing = sorted(set(expected) - set(converted) - mismatched_keys)
    if unexpected or missing or mismatched:
        lines = [f"The checkpoint does not match a ViQ model with fsq_levels={config.fsq_levels}:"]
        for title, items in (("unexpected keys", unexpected), ("missing keys", missing), ("shape mismatches", mismatched)):
            if items:
                shown = items[:50] + ([f"... and {len(items) - 50} more"] if len(items) > 50 else [])
                lines.append(f"  {len(items)} {title}:\n    " + "\n    ".join(shown))
        raise ValueError("\n".join(lines))
    if left_out:
        logger.info(f"Left out {left_out} decoder tensors (latent head, VAE): config.include_decoder is False")
    return converted


def resolve_original_checkpoint(path_or_repo: str | os.PathLike, size: str, **hub_kwargs) -> str:
    """
    Local path of `ViQ/converted_<size>/model_viq_fsq_<size>.pth` in a local folder or a Hub repo (only that file is
    downloaded; with `HF_HUB_OFFLINE=1` or `local_files_only=True` it comes from the cache).
    """
    if size not in FSQ_LEVEL_PRESETS:
        raise ValueError(f"Unknown ViQ size {size!r}; expected one of {', '.join(FSQ_LEVEL_PRESETS)}.")
    filename = ORIGINAL_FILENAME.format(size=size)
    if os.path.isdir(path_or_repo):
        path = Path(path_or_repo) / filename
        if not path.is_file():
            raise FileNotFoundError(
                f"{path_or_repo} is a local folder without {filename}: not the authors' layout for size {size!r}."
            )
        return str(path)
    from huggingface_hub import hf_hub_download

    allowed = {"cache_dir", "force_download", "local_files_only", "token", "revision", "proxies"}
    return hf_hub_download(
        str(path_or_repo), filename=filename, **{k: v for k, v in hub_kwargs.items() if k in allowed and v is not None}
    )


def has_original_checkpoint(path_or_repo: str | os.PathLike, size: str | None, **hub_kwargs) -> bool:
    """Whether `path_or_repo` holds the authors' layout for `size` (used when a `ViQConfig` is passed explicitly)."""
    if size is None or path_or_repo is None:
        return False
    filename = ORIGINAL_FILENAME.format(size=size)
    if os.path.isdir(path_or_repo):
        return (Path(path_or_repo) / filename).is_file()
    if os.path.exists(path_or_repo):
        return False
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
    from huggingface_hub.utils import HfHubHTTPError, OfflineModeIsEnabled

    cached = try_to_load_from_cache(str(path_or_repo), filename, cache_dir=hub_kwargs.get("cache_dir"),
                                    revision=hub_kwargs.get("revision"))  # fmt: skip
    if isinstance(cached, str):
        return True
    try:
        from huggingface_hub import file_exists

        return file_exists(str(path_or_repo), filename, revision=hub_kwargs.get("revision"),
                           token=hub_kwargs.get("token"))  # fmt: skip
    except (EntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError):
        return False


def load_original_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a published `.pth` (memory-mapped, tensors only; no code from the pickle runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # an old non-zip pickle cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a plain state dict of tensors.")
    return state


# ----------------------------------------------------------------------------------------------------------------
# Conversion to HF format, with a proof
# ----------------------------------------------------------------------------------------------------------------
def default_check_images() -> list:
    """The sample photographs bundled with the repository, if present; else synthetic images."""
    import numpy as np

    root = Path(__file__).resolve().parents[2] / "assets" / "samples"
    files = sorted(p for p in root.glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"}) if root.is_dir() else []
    if files:
        return [str(p) for p in files[:3]]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((96, 128, 3), (80, 48, 3))]


def convert_viq_checkpoint(
    source: str,
    size: str,
    output_dir: str | os.PathLike,
    *,
    check_images: list | None = None,
    push_to_hub: str | None = None,
    max_pixels: int = 256 * 256,
    config: ViQConfig | None = None,
    **hub_kwargs,
) -> dict:
    """
    Convert the authors' layout to HF format and prove the two give the same codes.

    Args:
        source (`str`): Hub id or local folder in the authors' layout (e.g. `"XuminYu/ViQ_weights"`).
        size (`str`): one of `2k, 4k, 8k, 16k, 64k`.
        output_dir (`str` or `os.PathLike`): where `config.json`, `model.safetensors` and `preprocessor_config.json`
            are written.
        check_images (`list`, *optional*): images (paths, PIL images or arrays) to compare codes on; defaults to the
            repository's sample photographs.
        push_to_hub (`str`, *optional*): a repo id to push the converted model and processor to.
        max_pixels (`int`, *optional*, defaults to 65536): pixel budget of the check images (keeps the check fast).
        config (`ViQConfig`, *optional*): the architecture, if not the released one of `size` (e.g. a shallow copy).

    Returns:
        `dict` with `codes_checked` and `codes_identical` (the check raises if they differ).
    """
    from transformers import AutoImageProcessor, AutoModel

    from .image_processing_viq import ViQImageProcessor
    from .modeling_viq import ViQModel

    # A small pixel budget keeps the check fast; the processor saved with the model keeps the default budget.
    check_processor = ViQImageProcessor(max_pixels=max_pixels)
    inputs = check_processor(images=check_images or default_check_images(), return_tensors="pt")

    logger.info(f"Loading {source} ({size}) from the authors' layout")
    source_model = ViQModel.from_pretrained(source, viq_size=size, config=config, **hub_kwargs).eval()
    source_codes = source_model.encode(**inputs, return_pooler_output=False).image_codes
    source_model.save_pretrained(output_dir)
    ViQImageProcessor().save_pretrained(output_dir)
    del source_model

    converted = AutoModel.from_pretrained(output_dir).eval()
    converted_processor = AutoImageProcessor.from_pretrained(output_dir)
    if converted_processor.to_dict() != ViQImageProcessor().to_dict():
        raise RuntimeError("The saved image processor does not reload with its settings.")
    converted_codes = converted.encode(**inputs, return_pooler_output=False).image_codes
    identical = int((converted_codes == source_codes).sum())
    if identical != source_codes.numel():
        raise RuntimeError(
            f"Conversion check failed: {source_codes.numel() - identical} of {source_codes.numel()} codes differ."
        )
    logger.info(f"Converted model gives identical codes on {source_codes.numel()} codes")
    if push_to_hub:
        converted.push_to_hub(push_to_hub, image_processor=converted_processor)
    return {"codes_checked": source_codes.numel(), "codes_identical": identical, "output_dir": str(output_dir)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="XuminYu/ViQ_weights", help="Hub id or local folder (authors' layout)")
    parser.add_argument("--size", required=True, choices=list(FSQ_LEVEL_PRESETS))
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--push-to-hub", default=None, metavar="REPO")
    parser.add_argument("--check-image", action="append", default=None, help="image to compare codes on (repeat)")
    args = parser.parse_args(argv)
    logging.set_verbosity_info()
    result = convert_viq_checkpoint(
        args.source, args.size, args.output_dir, check_images=args.check_image, push_to_hub=args.push_to_hub
    )
    print(f"Converted {args.source} ({args.size}) to {result['output_dir']}: {result['codes_identical']} of "
          f"{result['codes_checked']} codes identical.")  # fmt: skip


if __name__ == "__main__":
    main()
