# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The authors' published checkpoint layout (`XuminYu/ViQ_weights`): file names, key table, safe reading.

The authors publish their weights without a `config.json`; each tokenizer size is one PyTorch pickle,
`ViQ/converted_<size>/model_viq_fsq_<size>.pth`, holding the whole encoder, its heads and the Qwen-Image VAE
(fp32; the key names are those of [`ORIGINAL_TO_HF_KEY_MAPPING`]). `embedder.pth` and `index_drawer.pth` next to
it repeat subsets of the same weights and are not needed. This module

* decides whether a folder or Hub repo is in that layout ([`original_layout_sizes`], [`is_original_layout`]: the
  one place that decides it), without touching the network when the caller asked for offline use, and says which
  call loads it when one that needs a `config.json` was made ([`missing_config_error`], [`OriginalLayoutError`]);
* finds the file of one size in a folder or on the Hub ([`resolve_original_checkpoint`]; only that file is fetched,
  `subfolder` honoured, the Hub cache used offline);
* reads it safely ([`load_original_state_dict`]: tensors only, no code from the pickle runs; a damaged or partial
  file gives an error that names it and says what to do);
* renames its keys to this package's names with one explicit table ([`ORIGINAL_TO_HF_KEY_MAPPING`]) and checks that
  every key is used and every parameter filled ([`convert_original_state_dict`]);
* does the same for the published Stage-1 encoders (`anyres_vit/...`: [`resolve_stage1_checkpoint`]) and the
  fixed-resolution SigLIP2 checkpoints of open_clip and timm, whose trunk and pooling head share one table
  ([`TRUNK_TO_HF_KEY_MAPPING`], [`convert_trunk_state_dict`]; known other parts such as the Stage-1 teacher or the
  text tower are left out and counted, a 24x24 position table is upsampled bicubically to the model's grid).

* builds the models from such files ([`viq_model_from_original`], [`vision_model_from_original`],
  [`vision_model_from_siglip2`]);
* is the loader behind the ViQ classes' `from_pretrained` and `get_config_dict` ([`OriginalCheckpointLoader`]),
  which `import transformers_viq` installs as their `checkpoint_loader`: that is how
  `ViQModel.from_pretrained("XuminYu/ViQ_weights", viq_size="16k")`,
  `AutoModel.from_pretrained("XuminYu/ViQ_weights", config=ViQConfig.from_preset("16k"))` and
  `ViQVisionModel.from_pretrained("XuminYu/ViQ_weights", stage1_encoder="giant")` work, while the model files
  themselves import nothing of this package's services.

`convert_viq_original_to_hf.py` (the converter script) builds on it.
"""

from __future__ import annotations

import glob
import math
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from .hub_utils import (
    HUB_KWARGS,
    HubUnreachableError,
    cached_file,
    check_local_folder,
    check_model_source,
    ensure_fetchable,
    is_offline,
    looks_like_path,
    probe_file,
)
from .logging_utils import get_logger, one_line
from .models.viq.configuration_viq import FSQ_LEVEL_PRESETS, VISION_PRESETS, ViQConfig, ViQVisionConfig
from .models.viq.modeling_viq import ViQModel
from .models.viq.modeling_viq_continuous import ViQVisionModel
from .models.viq_qwen.configuration_viq_qwen import ViQQwenConfig


logger = get_logger(__name__)

AUTHORS_REPO = "XuminYu/ViQ_weights"
ORIGINAL_FILENAME = "ViQ/converted_{size}/model_viq_fsq_{size}.pth"
_FILENAME_RE = re.compile(r"^ViQ/converted_(\w+)/model_viq_fsq_(\w+)\.pth$")

# Published key (regex, matched from the start) -> this package's key. First match wins; every published key must
# match exactly one rule, and nothing is dropped silently.
# fmt: off
_BLOCK = r"(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$"
_BLOCK_NAMES = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv_proj",
                "attn.proj": "self_attn.out_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_HEADLESS = (r"(norm1|norm2|attn\.qkv|attn\.proj|attn\.decrease_dim|attn\.increase_dim|mlp\.fc1|mlp\.fc2)"
             r"\.(weight|bias)$")
_HEADLESS_NAMES = {**_BLOCK_NAMES, "attn.decrease_dim": "self_attn.down_proj",
                   "attn.increase_dim": "self_attn.up_proj"}


def _blocks(target: str, offset: int = 0, names: dict = _BLOCK_NAMES):
    """`<prefix>.<i>.<module>.<param>` -> `<target>.<i - offset>.<our module name>.<param>`."""
    return lambda m: f"{target}.{int(m[1]) - offset}.{names[m[2]]}.{m[3]}"



# The trunk and the attention-pooling head: the same names in the ViQ files, the Stage-1 files and timm's SigLIP2.
TRUNK_TO_HF_KEY_MAPPING: list[tuple[str, object]] = [
    # trunk
    (r"^patch_embed\.proj\.(weight|bias)$",                           r"embeddings.patch_embedding.\1"),
    (r"^pos_embed$",                                                  "embeddings.position_embedding.weight"),
    (r"^blocks\.(\d+)\." + _BLOCK,                                    _blocks("encoder.layers")),
    # attention-pooling head (fed by `norm`, the trunk's final LayerNorm; in ViQ applied to the quantized features)
    (r"^norm\.(weight|bias)$",                                        r"post_layernorm.\1"),
    (r"^attn_pool\.latent$",                                          "head.probe"),
    (r"^attn_pool\.q\.(weight|bias)$",                                r"head.q_proj.\1"),
    (r"^attn_pool\.kv\.(weight|bias)$",                               r"head.kv_proj.\1"),
    (r"^attn_pool\.proj\.(weight|bias)$",                             r"head.out_proj.\1"),
    (r"^attn_pool\.norm\.(weight|bias)$",                             r"head.layernorm.\1"),
    (r"^attn_pool\.mlp\.(fc1|fc2)\.(weight|bias)$",                   r"head.mlp.\1.\2"),
]

ORIGINAL_TO_HF_KEY_MAPPING: list[tuple[str, object]] = TRUNK_TO_HF_KEY_MAPPING + [
    # fusion block
    (r"^fusion_block\.vq_low_preprocess_layers\.(\d+)\." + _BLOCK,    _blocks("fusion.layers")),
    (r"^fusion_block\.vq_low_pre_token_shuffle_head\.(fc1|fc2)\.(weight|bias)$",  r"fusion.expand.\1.\2"),
    (r"^fusion_block\.vq_low_post_token_shuffle_head\.(fc1|fc2)\.(weight|bias)$", r"fusion.expand_post.\1.\2"),
    # quantizer
    (r"^fusion_block\.vq_low\.fsq_pre_attn\.(\d+)\." + _HEADLESS,     _blocks("quantizer.layers", 0, _HEADLESS_NAMES)),
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
    (r"^vae_preprocess_layers\.(\d+)\." + _BLOCK,                     _blocks("latent_head.layers", offset=2)),
    (r"^vae_head\.conv_norm_out\.(weight|bias)$",                     r"latent_head.norm_out.\1"),
    (r"^vae_head\.conv_out\.(weight|bias)$",                          r"latent_head.conv_out.\1"),
    # Qwen-Image VAE: diffusers' AutoencoderKLQwenImage, same names
    (r"^vae_head\.vae\.(.+)$",                                        r"vae.\1"),
]
# fmt: on
_COMPILED = [(re.compile(pattern), replacement) for pattern, replacement in ORIGINAL_TO_HF_KEY_MAPPING]
_TRUNK_COMPILED = [(re.compile(pattern), replacement) for pattern, replacement in TRUNK_TO_HF_KEY_MAPPING]


def _rename(key: str, rules) -> str | None:
    for pattern, replacement in rules:
        match = pattern.match(key)
        if match:
            return replacement(match) if callable(replacement) else match.expand(replacement)
    return None


def rename_original_key(key: str) -> str | None:
    """This package's name for a published key, or `None` if no rule matches."""
    return _rename(key, _COMPILED)


def rename_trunk_key(key: str) -> str | None:
    """This package's name for a key of a Stage-1 encoder or a timm/open_clip SigLIP2 trunk, or `None`."""
    return _rename(key, _TRUNK_COMPILED)



def _join(subfolder: str | None, filename: str) -> str:
    return f"{subfolder.strip('/')}/{filename}" if subfolder else filename


def _check_size(size: str) -> None:
    if size not in FSQ_LEVEL_PRESETS:
        raise ValueError(f"Unknown ViQ size {size!r}; expected one of {', '.join(FSQ_LEVEL_PRESETS)}.")


def original_layout_sizes(path_or_repo: str | os.PathLike, subfolder: str = "", **hub_kwargs) -> list[str]:
    """
    The released sizes (`"2k"`, ..., `"64k"`) whose file the folder or Hub repo holds in the authors' layout; empty
    if it is not in that layout (a folder with a `config.json` is HF format, whatever else it holds).

    A local folder is listed. A Hub repo is checked in the local cache first (its `config.json`, then the authors'
    files); the network is asked only when the caller did not ask for offline use (`local_files_only=True` or
    `HF_HUB_OFFLINE=1`): one request without retries for `config.json`, then the file list if there is none.
    `XuminYu/ViQ_weights` is known to hold all five sizes.

    Raises:
        `HubUnreachableError` (a `ConnectionError`) when the Hub must be asked and cannot be reached.
    """
    if path_or_repo is None:
        return []
    path = os.path.expanduser(os.fspath(path_or_repo))
    if os.path.isdir(path):
        folder = Path(path) / (subfolder or "")
        if (folder / "config.json").is_file():
            return []
        found = []
        for file in glob.glob(os.path.join(glob.escape(str(folder)), "ViQ", "converted_*", "model_viq_fsq_*.pth")):
            match = _FILENAME_RE.match(Path(file).relative_to(folder).as_posix())
            if match and match.group(1) == match.group(2) and match.group(1) in FSQ_LEVEL_PRESETS:
                found.append(match.group(1))
        return [size for size in FSQ_LEVEL_PRESETS if size in found]
    if os.path.exists(path) or looks_like_path(os.fspath(path_or_repo)) or path.count("/") != 1:
        return []  # a file, or a local path that does not exist: not a Hub id
    repo = os.fspath(path_or_repo)
    if repo == AUTHORS_REPO and not subfolder:
        return list(FSQ_LEVEL_PRESETS)
    revision, cache_dir = hub_kwargs.get("revision"), hub_kwargs.get("cache_dir")
    if cached_file(repo, _join(subfolder, "config.json"), revision, cache_dir):
        return []
    cached = [size for size in FSQ_LEVEL_PRESETS
              if cached_file(repo, _join(subfolder, ORIGINAL_FILENAME.format(size=size)), revision, cache_dir)]
    if cached or is_offline(hub_kwargs):
        return cached
    if probe_file(repo, _join(subfolder, "config.json"), revision=revision, token=hub_kwargs.get("token")):
        return []  # HF format
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        files = HfApi().list_repo_files(repo, revision=revision, token=hub_kwargs.get("token"))
    except (HfHubHTTPError, OSError, ValueError) as error:  # no such repo, gated: not provably ours
        logger.debug(f"Could not list {repo}: {error}")
        return []
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    names = {ORIGINAL_FILENAME.format(size=size): size for size in FSQ_LEVEL_PRESETS}
    return [names[f[len(prefix):]] for f in files if f.startswith(prefix) and f[len(prefix):] in names]


def is_original_layout(path_or_repo, size: str | None = None, subfolder: str = "", **hub_kwargs) -> bool:
    """Whether `path_or_repo` is in the authors' layout (and holds the file of `size`, if given)."""
    sizes = original_layout_sizes(path_or_repo, subfolder=subfolder, **hub_kwargs)
    return bool(sizes) if size is None else size in sizes


class OriginalLayoutError(OSError):
    """A folder or repo in the authors' layout was given where a `config.json` (HF format) was needed."""


def original_layout_message(path_or_repo, sizes: list[str], subfolder: str = "", vlm: bool = False) -> str:
    """
    What to call for a folder or repo in the authors' layout, in one line: the size to pass (`ViQModel`), the config to
    pass (`AutoModel`), why the bare Auto call cannot work, and how to convert it once.
    """
    name = os.fspath(path_or_repo)
    size = "16k" if "16k" in sizes else sizes[0]
    extra = f", subfolder={subfolder!r}" if subfolder else ""
    held = f"size {sizes[0]}" if len(sizes) == 1 else f"sizes {', '.join(sizes)}"
    message = (
        f"{name} is in the ViQ authors' published layout (.pth files, {held}; no config.json). transformers' Auto "
        "classes pick the model class and architecture from config.json, so they cannot load it by name alone. "
        f"Load it with ViQModel.from_pretrained({name!r}, viq_size={size!r}{extra}), or with "
        f"AutoModel.from_pretrained({name!r}, config=ViQConfig.from_preset({size!r}){extra}) after "
        f"`import transformers_viq`; `viq convert --source {name} --size {size} -o DIR` writes a folder with a "
        "config.json that loads without them."
    )
    if vlm:
        message = (
            f"{name} is the ViQ tokenizer in its authors' published layout ({held}; no config.json), not a "
            f"vision-language model: build one with ViQForConditionalGeneration.from_viq_and_qwen({name!r}, "
            f"'Qwen/Qwen2.5-1.5B-Instruct', viq_size={size!r}), or load the tokenizer with "
            f"ViQModel.from_pretrained({name!r}, viq_size={size!r}{extra})."
        )
    return message


def missing_config_error(path_or_repo, subfolder: str = "", vlm: bool = False, **hub_kwargs) -> OSError:
    """
    The error for a folder or repo without a `config.json`: an [`OriginalLayoutError`] saying which call works when it
    is in the authors' layout, a plain `OSError` otherwise.
    """
    hub_kwargs = {k: v for k, v in hub_kwargs.items() if k in HUB_KWARGS}
    try:
        sizes = original_layout_sizes(path_or_repo, subfolder=subfolder, **hub_kwargs)
    except HubUnreachableError:
        sizes = []
    if sizes:
        return OriginalLayoutError(original_layout_message(path_or_repo, sizes, subfolder, vlm=vlm))
    where = os.fspath(path_or_repo) + (f" (subfolder {subfolder!r})" if subfolder else "")
    return OSError(
        f"{where} has no config.json: it is neither a model in Hugging Face format nor the ViQ authors' published "
        "layout (ViQ/converted_<size>/model_viq_fsq_<size>.pth)."
    )


def resolve_original_checkpoint(path_or_repo: str | os.PathLike, size: str, subfolder: str = "", **hub_kwargs) -> str:
    """
    Local path of `ViQ/converted_<size>/model_viq_fsq_<size>.pth` in a folder or a Hub repo (only that file is
    downloaded; with `HF_HUB_OFFLINE=1` or `local_files_only=True` it comes from the cache, without any request).

    Raises:
        `NoSuchFolderError` (a `FileNotFoundError`) for a name that looks like a local path and is no folder;
        `ValueError` for a folder in HF format (it has a config.json: no size to pass); `FileNotFoundError` for a local
        folder without the file; `HubUnreachableError` (a `ConnectionError`) when the file is not cached and the Hub
        cannot be reached, or downloads are off.
    """
    _check_size(size)
    filename = _join(subfolder, ORIGINAL_FILENAME.format(size=size))
    check_local_folder(path_or_repo)
    local = os.path.expanduser(os.fspath(path_or_repo))
    if os.path.isdir(local):
        path = Path(local) / filename
        if not path.is_file() and (Path(local) / subfolder / "config.json").is_file():
            raise ValueError(
                f"{path_or_repo} is a folder in HF format (config.json), not the authors' layout: drop "
                f"size={size!r} to load it."
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"{path_or_repo} is a local folder without {filename}: not the authors' layout for size {size!r}."
            )
        return str(path)
    return _download(os.fspath(path_or_repo), filename, hub_kwargs)


DAMAGED_FILE_ADVICE = (
    "It is probably an interrupted or partial download: delete it and download it again "
    "(e.g. `huggingface_hub.hf_hub_download(repo, filename, force_download=True)`, or `from_pretrained(..., "
    "force_download=True)`)."
)


def damaged_checkpoint_error(where: str | os.PathLike, error: BaseException) -> OSError | None:
    """
    The error to raise when loading `where` (a folder or Hub repo in HF format) failed because a weights file is
    damaged or incomplete (safetensors cannot parse it), naming it and saying what to do; `None` for other errors.
    """
    text = str(error)
    if type(error).__name__ != "SafetensorError" and "deserializing header" not in text:
        return None
    return OSError(
        f"A weights file (.safetensors) of {os.fspath(where)} is damaged or incomplete ({one_line(error)}). "
        f"{DAMAGED_FILE_ADVICE}"
    )


def load_original_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """
    Read a published `.pth` (memory-mapped, tensors only; no code from the pickle runs).

    Raises:
        `OSError` naming the file when it is damaged or incomplete (an interrupted download, say), with what to do;
        `ValueError` when it holds something other than a state dict of tensors.
    """
    path = os.fspath(path)
    what_to_do = DAMAGED_FILE_ADVICE
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such checkpoint file: {path}")
    size = os.path.getsize(path)
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive, whose directory sits at the very end
        with open(path, "rb") as handle:
            head = handle.read(2)
        if not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):  # not a legacy pickle
            raise OSError(f"Cannot read {path} ({size:,} bytes): the file is damaged or incomplete (not a PyTorch "
                          f"checkpoint archive). {what_to_do}")  # fmt: skip
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error).lower():
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # an old non-zip pickle cannot be mapped
    except pickle.UnpicklingError as error:
        if "weights only load failed" in str(error).lower():
            raise ValueError(
                f"{path} holds objects other than tensors; it is not a published ViQ state dict, and it is not loaded "
                "because that would run code from the file."
            ) from None
        raise OSError(f"Cannot read {path}: the file is damaged ({one_line(error)}). {what_to_do}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise OSError(
            f"Cannot read {path} ({size:,} bytes): the file is damaged or incomplete ({one_line(error)}). "
            f"{what_to_do}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a plain state dict of tensors.")
    return state



def convert_original_state_dict(
    original: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    *,
    include_decoder: bool = True,
    dtype: torch.dtype | None = torch.float32,
    description: str = "a ViQ model",
) -> dict[str, torch.Tensor]:
    """
    Rename and reshape a published state dict to this package's layout, after checking it completely.

    Args:
        original: the published state dict.
        expected: `{key: shape}` of the target model (e.g. from a model built on the meta device).
        include_decoder: whether the target has the latent head and the VAE; if not, their tensors are left out.
        dtype: cast floating tensors to it (`None` keeps the file's dtypes).
        description: what the target is, for the error message (e.g. "a ViQ model with fsq_levels=[...]").

    Raises:
        `ValueError` listing, by name, every published key no rule maps (unexpected), every model key not filled
        (missing) and every shape that differs, in one message.
    """
    converted, unexpected, mismatched, sources, mismatched_keys = {}, [], [], {}, set()
    left_out = 0
    for key, tensor in original.items():
        new_key = rename_original_key(key)
        if not include_decoder and new_key is not None and new_key.startswith(("latent_head.", "vae.")):
            left_out += 1  # the target is built without the decoder
            continue
        if new_key is None or new_key not in expected:
            unexpected.append(key if new_key is None else f"{key} (-> {new_key}, which the model does not have)")
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
    _raise_on_problems(description, unexpected, missing, mismatched)
    if left_out:
        logger.info(f"Left out {left_out} decoder tensors (latent head, VAE): the model is built without its decoder")
    return converted


def _raise_on_problems(description: str, unexpected: list, missing: list, mismatched: list) -> None:
    """One `ValueError` naming every unexpected key, missing key and shape mismatch (nothing if there is none)."""
    if not (unexpected or missing or mismatched):
        return
    groups = [(t, i) for t, i in (("unexpected keys", unexpected), ("missing keys", missing),
                                   ("shape mismatches", mismatched)) if i]  # fmt: skip
    summary = "; ".join(f"{len(items)} {title} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
                        for title, items in groups)  # fmt: skip
    lines = [f"The checkpoint does not match {description}: {summary}."]
    for title, items in groups:
        shown = items[:50] + ([f"... and {len(items) - 50} more"] if len(items) > 50 else [])
        lines.append(f"  all {len(items)} {title}: " + ", ".join(shown))
    raise ValueError("\n".join(lines))


def file_dtype(state_dict: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype most of a state dict's parameters are stored in (what `dtype="auto"` loads)."""
    counts: dict[torch.dtype, int] = {}
    for tensor in state_dict.values():
        if tensor.is_floating_point():
            counts[tensor.dtype] = counts.get(tensor.dtype, 0) + tensor.numel()
    return max(counts, key=counts.get) if counts else torch.float32


# ----------------------------------------------------------------------------------------------------------------
# Stage-1 encoders (`anyres_vit/...`) and the fixed-resolution SigLIP2 teachers (open_clip / timm)
# ----------------------------------------------------------------------------------------------------------------
# The two published Stage-1 encoders: the continuous any-resolution SigLIP2 trunks + attention-pooling heads that
# start Stage 2.
STAGE1_FILENAMES = {
    "giant": "anyres_vit/giant1b/siglip2_g_anyres_s4.pth",
    "so400m": "anyres_vit/so400m/siglip2_so400m_anyres_s4.pth",
}
# They are dumps of the training model's vision tower: the encoder's keys carry this prefix (plain keys are accepted
# too), and the dump may also hold the frozen teacher and the Stage-1 projector, which are not part of the encoder.
STAGE1_PREFIX = "base_model.model.model.vision_tower.vision_tower."
STAGE1_OTHER_PARTS = (
    "base_model.model.model.vision_tower.vision_tower_teacher.",
    "base_model.model.model.mm_projector.",
    "base_model.model.model.vision_resampler.",
)
# open_clip's SigLIP2 checkpoints (`open_clip_pytorch_model.bin`, e.g. timm/ViT-gopt-16-SigLIP2-384) hold the image
# trunk under `visual.trunk.` next to the text tower; timm's own files (`model.safetensors`) have the trunk keys bare.
SIGLIP2_PREFIX = "visual.trunk."
SIGLIP2_OTHER_PARTS = ("text.", "logit_scale", "logit_bias")


def resolve_stage1_checkpoint(
    path_or_repo: str | os.PathLike, encoder: str = "giant", subfolder: str = "", **hub_kwargs
) -> str:
    """
    Local path of a published Stage-1 encoder (`anyres_vit/giant1b/siglip2_g_anyres_s4.pth` for `"giant"`,
    `anyres_vit/so400m/siglip2_so400m_anyres_s4.pth` for `"so400m"`) in a folder or a Hub repo (only that file is
    downloaded; offline from the cache with `HF_HUB_OFFLINE=1` or `local_files_only=True`).
    """
    if encoder not in STAGE1_FILENAMES:
        raise ValueError(f"Unknown Stage-1 encoder {encoder!r}; expected one of {', '.join(STAGE1_FILENAMES)}.")
    filename = _join(subfolder, STAGE1_FILENAMES[encoder])
    local = os.path.expanduser(os.fspath(path_or_repo))
    if os.path.isdir(local):
        path = Path(local) / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path_or_repo} is a local folder without {filename} (Stage-1 {encoder!r}).")
        return str(path)
    return _download(os.fspath(path_or_repo), filename, hub_kwargs)


def _download(repo: str, filename: str, hub_kwargs: Mapping) -> str:
    """One file of a Hub repo: from the cache, else downloaded (a fast failure without network; none offline)."""
    from huggingface_hub import hf_hub_download

    ensure_fetchable(repo, filename, hub_kwargs)  # cached, or one quick request (none offline)
    kwargs = {k: v for k, v in hub_kwargs.items() if k in HUB_KWARGS and v is not None}
    if is_offline(hub_kwargs):
        kwargs["local_files_only"] = True
    return hf_hub_download(repo, filename=filename, **kwargs)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A `.safetensors` file, or a PyTorch pickle (`.pth`/`.bin`/`.pt`) read safely by [`load_original_state_dict`]."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such checkpoint file: {path}")
        from safetensors.torch import load_file

        return load_file(path)
    return load_original_state_dict(path)


def resize_position_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """
    A square position table `(g * g, C)` (rows row-major over a `g x g` grid) resized to `(size * size, C)` with
    bicubic interpolation (`align_corners=False`), in float32, back in the table's dtype: how SigLIP2's 24x24 table
    became the 128x128 table of the any-resolution encoder at the start of Stage 1.
    """
    rows, channels = table.shape
    grid = math.isqrt(rows)
    if grid * grid != rows:
        raise ValueError(f"A position table of {rows} rows is not a square grid.")
    if grid == size:
        return table
    image = table.float().reshape(1, grid, grid, channels).permute(0, 3, 1, 2)
    image = torch.nn.functional.interpolate(image, size=(size, size), mode="bicubic", align_corners=False)
    return image.permute(0, 2, 3, 1).reshape(size * size, channels).to(table.dtype)


def _strip_parts(state_dict: Mapping[str, torch.Tensor], prefix: str, other_parts: tuple[str, ...]):
    """`({key without prefix: tensor}, {left-out part: count})`; keys under `other_parts` are left out, counted."""
    kept, left_out = {}, {}
    for key, tensor in state_dict.items():
        part = next((p for p in other_parts if key.startswith(p)), None)
        if part is not None:
            left_out[part] = left_out.get(part, 0) + 1
            continue
        kept[key[len(prefix):] if prefix and key.startswith(prefix) else key] = tensor
    return kept, left_out


def trunk_geometry(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """
    The trunk geometry a Stage-1 / SigLIP2 state dict (prefixes already stripped) implies: `hidden_size`,
    `intermediate_size`, `num_hidden_layers`, `patch_size`, `num_channels`, `position_embedding_size` (the number of
    attention heads cannot be read from weights).
    """
    needed = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight")
    absent = [key for key in needed if key not in state_dict]
    if absent:
        raise ValueError(f"Not a SigLIP2-style trunk state dict: no {', '.join(absent)}.")
    patch = state_dict["patch_embed.proj.weight"]
    rows = state_dict["pos_embed"].reshape(-1, patch.shape[0]).shape[0]
    layers = {int(m[1]) for m in (re.match(r"^blocks\.(\d+)\.", k) for k in state_dict) if m}
    return {
        "hidden_size": patch.shape[0],
        "num_channels": patch.shape[1],
        "patch_size": patch.shape[2],
        "intermediate_size": state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": max(layers) + 1,
        "position_embedding_size": math.isqrt(rows),
    }


def strip_trunk_prefixes(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """
    The encoder's own keys of a Stage-1 dump or a SigLIP2 checkpoint (open_clip or timm), without their prefix, and a
    count of the keys left out per known other part (teacher, projector, text tower, logit scale/bias).
    """
    if any(key.startswith(STAGE1_PREFIX) for key in state_dict):
        return _strip_parts(state_dict, STAGE1_PREFIX, STAGE1_OTHER_PARTS)
    if any(key.startswith(SIGLIP2_PREFIX) for key in state_dict):
        return _strip_parts(state_dict, SIGLIP2_PREFIX, SIGLIP2_OTHER_PARTS)
    return _strip_parts(state_dict, "", STAGE1_OTHER_PARTS + SIGLIP2_OTHER_PARTS)


def convert_trunk_state_dict(
    original: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    *,
    dtype: torch.dtype | None = torch.float32,
    description: str = "a ViQ vision model",
) -> dict[str, torch.Tensor]:
    """
    Rename a Stage-1 encoder file (`anyres_vit/*.pth`, with or without its training prefix) or a timm / open_clip
    SigLIP2 checkpoint to this package's names (trunk + attention-pooling head), after checking it completely.

    Keys of the other parts such files are known to hold (the Stage-1 teacher and projector, open_clip's text tower
    and logit scale/bias) are left out and counted in the log; any other key that no rule maps is an error. A position
    table of another grid (SigLIP2's 24x24) is resized bicubically to the model's (128x128 for the any-resolution
    student); a 24x24 target (the fixed-resolution teacher) keeps it unchanged.

    Args:
        original: the file's state dict.
        expected: `{key: shape}` of the target model.
        dtype: cast floating tensors to it (`None` keeps the file's dtypes).
        description: what the target is, for the error message.

    Raises:
        `ValueError` listing every unexpected key, missing key and shape mismatch, in one message.
    """
    stripped, left_out = strip_trunk_prefixes(original)
    converted, unexpected, mismatched, mismatched_keys = {}, [], [], set()
    position_key = "embeddings.position_embedding.weight"
    for key, tensor in stripped.items():
        new_key = rename_trunk_key(key)
        if new_key is None or new_key not in expected:
            unexpected.append(key if new_key is None else f"{key} (-> {new_key}, which the model does not have)")
            continue
        if new_key == position_key and position_key in expected:
            tensor = tensor.reshape(-1, tensor.shape[-1])  # published as (1, grid * grid, hidden)
            rows, size = tensor.shape[0], math.isqrt(expected[position_key][0])
            if tensor.shape[1] == expected[position_key][1] and rows != size * size and math.isqrt(rows) ** 2 == rows:
                logger.info(f"Position table resized from {math.isqrt(rows)}x{math.isqrt(rows)} to {size}x{size} "
                            "(bicubic)")  # fmt: skip
                tensor = resize_position_table(tensor, size)
        if tuple(tensor.shape) != tuple(expected[new_key]):
            mismatched.append(f"{key} -> {new_key}: file {tuple(tensor.shape)}, model {tuple(expected[new_key])}")
            mismatched_keys.add(new_key)
            continue
        converted[new_key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    missing = sorted(set(expected) - set(converted) - mismatched_keys)
    _raise_on_problems(description, unexpected, missing, mismatched)
    for part, count in left_out.items():
        logger.info(f"Left out {count} tensors of {part.rstrip('.')} (not part of the encoder)")
    return converted


# ----------------------------------------------------------------------------------------------------------------
# Models from published files, and the loader behind `from_pretrained`
# ----------------------------------------------------------------------------------------------------------------
_FROM_PRETRAINED_ONLY = ("config", "_from_auto", "adapter_kwargs", "trust_remote_code", "subfolder", "use_safetensors")


def _load_dtype(kwargs: dict, state_dict: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The dtype to build in, popped from `from_pretrained`-style `kwargs` (`"auto"` or none: the file's)."""
    dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", "auto"))
    if dtype is None or dtype == "auto":
        return file_dtype(state_dict)
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def viq_model_from_original(state_dict, config: ViQConfig, *model_args, source: str | None = None, **kwargs):
    r"""
    A [`ViQModel`] from a state dict in the authors' published layout (already in memory), checked key by key.

    Args:
        state_dict (`dict[str, torch.Tensor]`): the published keys (`blocks.0.attn.qkv.weight`, ...).
        config ([`ViQConfig`]): the architecture (e.g. `ViQConfig.from_preset("16k")`).
        source (`str`, *optional*): where the tensors came from, for error messages.
        kwargs: as for `from_pretrained` (`dtype`, `attn_implementation`, `device_map`, ...); `dtype="auto"` (the
            default) keeps the file's dtype (fp32 for the released files).
    """
    dtype = _load_dtype(kwargs, state_dict)
    converted = convert_original_state_dict(
        state_dict,
        ViQModel.expected_state_shapes(config),
        include_decoder=config.include_decoder,
        dtype=dtype,
        description=f"a ViQ model with fsq_levels={config.fsq_levels}" + (f" ({source})" if source else ""),
    )
    for key in _FROM_PRETRAINED_ONLY:
        kwargs.pop(key, None)
    return ViQModel.from_pretrained(None, *model_args, config=config, state_dict=converted, dtype=dtype, **kwargs)


def vision_config_from_weights(state_dict, num_attention_heads: int = 16, **overrides) -> ViQVisionConfig:
    """
    A [`ViQVisionConfig`] with the geometry a Stage-1 or SigLIP2 state dict implies (width, depth, MLP width, patch
    size, position grid) and `num_attention_heads` (16 in every SigLIP2 giant / So400m model; it cannot be read from
    weights). `overrides` win, e.g. `position_embedding_size=128` for a student initialised from a 24x24 teacher.
    """
    stripped, _ = strip_trunk_prefixes(state_dict)
    return ViQVisionConfig(**{**trunk_geometry(stripped), "num_attention_heads": num_attention_heads, **overrides})


def vision_model_from_original(state_dict, config: ViQVisionConfig | None = None, *, source=None, **kwargs):
    r"""
    A [`ViQVisionModel`] from a state dict in the published Stage-1 layout (with or without the training prefix
    `base_model.model.model.vision_tower.vision_tower.`; the teacher and projector tensors such a dump may hold are
    left out), a timm or an open_clip SigLIP2 checkpoint, checked key by key. A position table of another grid is
    resized bicubically to the config's.

    Args:
        state_dict (`dict[str, torch.Tensor]`): the file's tensors.
        config ([`ViQVisionConfig`], *optional*): the architecture; by default read from the weights (geometry) with
            16 attention heads and a 128x128 position table, as in both published encoders.
        source (`str`, *optional*): where the tensors came from, for messages (and the model's `name_or_path`).
        kwargs: as for `from_pretrained` (`dtype` (`"auto"`: the file's), `attn_implementation`, `device_map`, ...).
    """
    if config is None:
        config = vision_config_from_weights(state_dict, position_embedding_size=128)
    dtype = _load_dtype(kwargs, state_dict)
    converted = convert_trunk_state_dict(
        state_dict,
        ViQVisionModel.expected_state_shapes(config),
        dtype=dtype,
        description=f"a ViQ vision model ({config.num_hidden_layers} layers, width {config.hidden_size}, "
        f"{config.position_embedding_size}x{config.position_embedding_size} positions)"
        + (f" ({source})" if source else ""),
    )
    for key in _FROM_PRETRAINED_ONLY:
        kwargs.pop(key, None)
    model = ViQVisionModel.from_pretrained(None, config=config, state_dict=converted, dtype=dtype, **kwargs)
    if source:
        model.name_or_path = model.config._name_or_path = str(source)
    return model


def vision_model_from_siglip2(
    checkpoint,
    config: ViQVisionConfig | None = None,
    position_embedding_size: int | None = None,
    num_attention_heads: int = 16,
    **kwargs,
):
    r"""
    A [`ViQVisionModel`] from a fixed-resolution SigLIP2 checkpoint of open_clip (`open_clip_pytorch_model.bin`: keys
    `visual.trunk.*`; the text tower and logit scale/bias are left out) or timm (`model.safetensors`, bare trunk
    keys), e.g. `timm/ViT-gopt-16-SigLIP2-384` (giant) or `timm/ViT-SO400M-16-SigLIP2-384`.

    Args:
        checkpoint (`str`, `os.PathLike` or `dict[str, torch.Tensor]`): the file (`.bin`/`.pth` read safely,
            `.safetensors`) or its state dict.
        config ([`ViQVisionConfig`], *optional*): the architecture; by default the geometry of the weights with
            `num_attention_heads` heads.
        position_embedding_size (`int`, *optional*): side of the position table to build. `None` keeps the
            checkpoint's (24 for the 384-px teachers: the self-distillation teacher); 128 gives the Stage-1 student,
            whose table is the checkpoint's upsampled bicubically.
        num_attention_heads (`int`, *optional*, defaults to 16): used when `config` is not given.
        kwargs: as for `from_pretrained`.

    The activation is the config's `hidden_act`, exact GELU by default as in the ViQ training code (SigLIP2 itself
    was trained with the tanh approximation: pass a config with `hidden_act="gelu_pytorch_tanh"` for that).
    """
    source = None
    if isinstance(checkpoint, (str, os.PathLike)):
        source = os.fspath(checkpoint)
        checkpoint = load_state_dict_file(source)
    if config is None:
        overrides = {} if position_embedding_size is None else {"position_embedding_size": position_embedding_size}
        config = vision_config_from_weights(checkpoint, num_attention_heads=num_attention_heads, **overrides)
    elif position_embedding_size is not None and position_embedding_size != config.position_embedding_size:
        raise ValueError(
            f"position_embedding_size={position_embedding_size} disagrees with the config's "
            f"{config.position_embedding_size}; give one of them."
        )
    return vision_model_from_original(checkpoint, config, source=source, **kwargs)


class OriginalCheckpointLoader:
    """
    The `checkpoint_loader` of the ViQ configs and models (see `ConfigLoaderHook` and `ModelLoaderHook` in the model
    files), installed by `import transformers_viq` ([`install`]). It is given the class and transformers' own
    `get_config_dict` / `from_pretrained` of that class, and adds, in front of them:

    * for any name that looks like a local path and is no folder, "no folder NAME" before any Hub request;
    * for a folder or Hub repo without `config.json`, an error that says which call loads it
      ([`missing_config_error`]: the authors' layout, or neither layout);
    * `viq_size=` on [`ViQModel`] (and a preset `config=` for a repo in the authors' layout, which is how
      `AutoModel.from_pretrained(..., config=ViQConfig.from_preset(size))` arrives): the tokenizer read from
      `ViQ/converted_<size>/model_viq_fsq_<size>.pth` (only that file fetched; the Hub cache offline);
    * `stage1_encoder=` on [`ViQVisionModel`]: a published Stage-1 encoder (`anyres_vit/...`);
    * for a damaged or partial weights file, an error that names the folder and says what to do.
    """

    def get_config_dict(self, config_class, get_config_dict, pretrained_model_name_or_path, **kwargs):
        check_local_folder(pretrained_model_name_or_path, allow_file=True)
        config_dict, unused = get_config_dict(pretrained_model_name_or_path, **kwargs)
        if not config_dict:
            subfolder = kwargs.pop("subfolder", None) or ""
            vlm = issubclass(config_class, ViQQwenConfig)
            raise missing_config_error(pretrained_model_name_or_path, subfolder, vlm=vlm, **kwargs)
        return config_dict, unused

    def check_source(self, name, **hub_kwargs) -> None:
        """A model that `from_pretrained` will read: a missing folder, or no network, said at once (not after
        the downloaders' retries)."""
        check_model_source(name, **hub_kwargs)

    def from_pretrained(self, model_class, from_pretrained, pretrained_model_name_or_path, *model_args, **kwargs):
        if pretrained_model_name_or_path is None:  # a model from a state dict in memory
            return from_pretrained(None, *model_args, **kwargs)
        check_local_folder(pretrained_model_name_or_path, allow_file=True)
        if issubclass(model_class, ViQModel):
            return self._viq_model(from_pretrained, pretrained_model_name_or_path, *model_args, **kwargs)
        if issubclass(model_class, ViQVisionModel):
            stage1_encoder = kwargs.pop("stage1_encoder", None)
            if stage1_encoder is not None:
                return _stage1_encoder(pretrained_model_name_or_path, stage1_encoder, **kwargs)
        return _naming_damaged_files(from_pretrained, pretrained_model_name_or_path, *model_args, **kwargs)

    def _viq_model(self, from_pretrained, name, *model_args, viq_size: str | None = None, **kwargs):
        config = kwargs.get("config")
        subfolder = kwargs.get("subfolder") or ""
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        if viq_size is None and isinstance(config, ViQConfig) and config.preset is not None:
            if is_original_layout(name, config.preset, subfolder, **hub_kwargs):
                viq_size = config.preset
        if viq_size is None:
            try:
                return _naming_damaged_files(from_pretrained, name, *model_args, **kwargs)
            except OSError as error:  # e.g. a custom `config=` for a folder of .pth files: say which call works
                if isinstance(error, OriginalLayoutError):
                    raise
                sizes = original_layout_sizes(name, subfolder, **hub_kwargs)
                if not sizes:
                    raise
                raise OriginalLayoutError(original_layout_message(name, sizes, subfolder)) from error

        _check_size(viq_size)
        if config is None:
            config = ViQConfig.from_preset(viq_size)
        elif not isinstance(config, ViQConfig):
            raise ValueError(f"`config` must be a ViQConfig, got {type(config).__name__}.")
        elif config.preset != viq_size:
            raise ValueError(
                f"viq_size={viq_size!r} needs fsq_levels {list(FSQ_LEVEL_PRESETS[viq_size])}, but the config "
                f"passed has {config.fsq_levels}."
            )
        for key in HUB_KWARGS:
            kwargs.pop(key, None)
        path = resolve_original_checkpoint(name, viq_size, subfolder, **hub_kwargs)
        kwargs.pop("config", None)
        model = viq_model_from_original(load_original_state_dict(path), config, *model_args, source=path, **kwargs)
        model.name_or_path = model.config._name_or_path = str(name)
        return model


def _naming_damaged_files(from_pretrained, name, *model_args, **kwargs):
    """transformers' `from_pretrained`, with a damaged weights file reported by folder and with what to do."""
    try:
        return from_pretrained(name, *model_args, **kwargs)
    except Exception as error:
        damaged = damaged_checkpoint_error(name, error)
        if damaged is None:
            raise
        raise damaged from error


def _stage1_encoder(name, encoder: str, **kwargs):
    """A published Stage-1 encoder (`anyres_vit/...` of the authors' layout) as a [`ViQVisionModel`]."""
    if encoder not in VISION_PRESETS:
        raise ValueError(f"Unknown Stage-1 encoder {encoder!r}; expected one of {', '.join(VISION_PRESETS)}.")
    config = kwargs.pop("config", None) or ViQVisionConfig.from_preset(encoder)
    if not isinstance(config, ViQVisionConfig):
        raise ValueError(f"`config` must be a ViQVisionConfig, got {type(config).__name__}.")
    hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
    subfolder = kwargs.pop("subfolder", "") or ""
    path = resolve_stage1_checkpoint(name, encoder, subfolder, **hub_kwargs)
    model = vision_model_from_original(load_original_state_dict(path), config, source=path, **kwargs)
    model.name_or_path = model.config._name_or_path = str(name)
    return model


def install() -> None:
    """Make [`OriginalCheckpointLoader`] the `checkpoint_loader` of the ViQ configs and models (idempotent)."""
    from .models.viq.configuration_viq import ConfigLoaderHook
    from .models.viq.modeling_viq import ModelLoaderHook

    loader = OriginalCheckpointLoader()
    ConfigLoaderHook.checkpoint_loader = loader
    ModelLoaderHook.checkpoint_loader = loader


__all__ = [
    "AUTHORS_REPO",
    "OriginalCheckpointLoader",
    "HUB_KWARGS",
    "OriginalLayoutError",
    "ORIGINAL_FILENAME",
    "ORIGINAL_TO_HF_KEY_MAPPING",
    "SIGLIP2_PREFIX",
    "STAGE1_FILENAMES",
    "STAGE1_PREFIX",
    "TRUNK_TO_HF_KEY_MAPPING",
    "convert_original_state_dict",
    "convert_trunk_state_dict",
    "install",
    "file_dtype",
    "is_original_layout",
    "load_original_state_dict",
    "load_state_dict_file",
    "missing_config_error",
    "original_layout_message",
    "original_layout_sizes",
    "rename_original_key",
    "rename_trunk_key",
    "resize_position_table",
    "resolve_original_checkpoint",
    "resolve_stage1_checkpoint",
    "strip_trunk_prefixes",
    "trunk_geometry",
    "viq_model_from_original",
    "vision_config_from_weights",
    "vision_model_from_original",
    "vision_model_from_siglip2",
]
