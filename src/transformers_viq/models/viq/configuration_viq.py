# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Configuration of the ViQ visual tokenizer.

ViQ (Yu et al., "ViQ: Text-Aligned Visual Quantized Representations at Any Resolution") encodes an image at its
native resolution with a SigLIP2-giant ViT, a fusion block and a position-aware FSQ head into 4 discrete codes per
16x16 patch. The numbers below are those of the released checkpoints (`XuminYu/ViQ_weights`): the architecture read
from their weights and the settings of the authors' code (github.com/yuxumin/ViQ).
"""

from __future__ import annotations

import math

from transformers import PreTrainedConfig


# The five released codebooks. This table is the single source of truth for the presets: `from_preset`,
# the model cards under `modeling_cards/` and the loader of the authors' layout all read it.
FSQ_LEVEL_PRESETS: dict[str, tuple[int, ...]] = {
    "2k": (8, 8, 4, 3, 3),
    "4k": (8, 8, 4, 4, 4),
    "8k": (8, 8, 8, 4, 4),
    "16k": (8, 8, 8, 6, 5),
    "64k": (8, 8, 8, 5, 5, 5),
}

# Qwen-Image VAE (diffusers `AutoencoderKLQwenImage`) as used by the released checkpoints. Only the keys that
# differ between a tiny test VAE and the real one need to be given; the rest are diffusers' defaults.
QWEN_IMAGE_VAE_CONFIG: dict = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}


# The two published Stage-1 encoders (`anyres_vit/...` in `XuminYu/ViQ_weights`): SigLIP2
# geometry with exact GELU and a 128x128 position table. The fixed-resolution SigLIP2 teachers (open_clip / timm, 384
# px) have the same trunks with a 24x24 table: `ViQVisionConfig.from_preset(name, position_embedding_size=24)`.
VISION_PRESETS: dict[str, dict] = {
    "giant": {"hidden_size": 1536, "intermediate_size": 6144, "num_hidden_layers": 40, "num_attention_heads": 16},
    "so400m": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16},
}

# Sub-tokens (hence codes) each 16x16 patch is expanded into by every released tokenizer: the default of
# `ViQConfig.codes_per_patch`, of the processor, of the checks of packed codes and of codes files.
CODES_PER_PATCH = 4

# Stage 2-1 of the paper replaces the quantizer by a bottleneck with a "proximal" constraint (the authors'
# `VQ_LOW_LIMIT`): the names of the constraints and the default width of the bottleneck (paper: D = 128).
QUANTIZERS = ("fsq", "proximal")
PROXIMAL_CONSTRAINTS = ("linf", "l2", "tanh", "none")
DEFAULT_BOTTLENECK_DIM = 128


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def with_auto_map(config: PreTrainedConfig) -> None:
    """
    Give `config` its own `auto_map` (empty unless the folder it came from carries code). transformers' configs have
    the attribute only when loaded from such a folder, yet TRL's `create_model_from_path` reads `config.auto_map`
    without a default, and transformers' Auto classes look names up in it: with an empty one, a folder saved without
    code (`save_pretrained`, `training/sft.py`, the stages) loads by path in TRL through the Auto classes that
    `import transformers_viq` registers. [`without_empty_auto_map`] keeps an empty one out of `config.json`.
    """
    if not isinstance(config.__dict__.get("auto_map"), dict):
        config.auto_map = dict(config.__dict__.get("auto_map") or {})


def without_empty_auto_map(output: dict) -> dict:
    """`output` (a config's `to_dict`) without an empty `auto_map`: a folder without code writes none."""
    if not output.get("auto_map"):
        output.pop("auto_map", None)
    return output


class ConfigLoaderHook:
    """
    `get_config_dict` (mixed into the ViQ configs) through the loader that the `transformers_viq` package installs as
    `checkpoint_loader` when it is imported (`transformers_viq.original_checkpoint.OriginalCheckpointLoader`).

    The loader says "no folder NAME" for a mistyped local path before any Hub request, and turns transformers' empty
    dict for a folder or repo without `config.json` (from which `from_pretrained` would silently build the default
    architecture) into an error that says which call loads it, e.g. the ViQ authors' published layout. The model files
    import nothing of it: a copy of them pushed with a model (`trust_remote_code=True`) has no loader and reads
    `config.json` with transformers' own code.
    """

    checkpoint_loader = None

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        get_config_dict = super().get_config_dict
        if cls.checkpoint_loader is None:
            return get_config_dict(pretrained_model_name_or_path, **kwargs)
        return cls.checkpoint_loader.get_config_dict(cls, get_config_dict, pretrained_model_name_or_path, **kwargs)


class ViQVisionConfig(PreTrainedConfig):
    r"""
    Configuration of the ViT trunk of ViQ (SigLIP2-giant geometry, with exact GELU and a learned 128x128 position table
    that is bilinearly resized to each image's patch grid).

    Args:
        hidden_size (`int`, *optional*, defaults to 1536):
            Width of the trunk.
        intermediate_size (`int`, *optional*, defaults to 6144):
            Hidden width of the MLPs.
        num_hidden_layers (`int`, *optional*, defaults to 40):
            Number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 16):
            Number of attention heads; must divide `hidden_size`.
        num_channels (`int`, *optional*, defaults to 3):
            Number of input channels.
        patch_size (`int`, *optional*, defaults to 16):
            Side of the square patches.
        position_embedding_size (`int`, *optional*, defaults to 128):
            Side of the learned square position-embedding grid (128 x 128 = 16384 rows in the released weights).
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of every MLP. The released model uses the exact (erf) GELU everywhere.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the trunk's LayerNorms.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities.
    """

    model_type = "viq_vision_model"
    base_config_key = "vision_config"

    hidden_size: int = 1536
    intermediate_size: int = 6144
    num_hidden_layers: int = 40
    num_attention_heads: int = 16
    num_channels: int = 3
    patch_size: int = 16
    position_embedding_size: int = 128
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0

    def __post_init__(self, **kwargs):
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                     "patch_size", "position_embedding_size"):  # fmt: skip
            _check_positive_int(name, getattr(self, name))
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"`attention_dropout` must be in [0, 1), got {self.attention_dropout}.")
        super().__post_init__(**kwargs)
        with_auto_map(self)

    def to_dict(self) -> dict:
        return without_empty_auto_map(super().to_dict())

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "ViQVisionConfig":
        """
        The trunk of a published Stage-1 encoder: `"giant"` (SigLIP2-g, 40 layers, width 1536) or `"so400m"`
        (SigLIP2-So400m, 27 layers, width 1152). `kwargs` override fields, e.g. `position_embedding_size=24` for the
        fixed-resolution SigLIP2 teacher at 384x384.
        """
        if name not in VISION_PRESETS:
            raise ValueError(f"Unknown vision preset {name!r}; expected one of {', '.join(VISION_PRESETS)}.")
        return cls(**{**VISION_PRESETS[name], **kwargs})


class ViQConfig(ConfigLoaderHook, PreTrainedConfig):
    r"""
    Configuration of a [`ViQModel`]: the ViT trunk (`vision_config`), the fusion block, the position-aware FSQ head,
    the code embedder (codes -> LLM-ready features), the attention-pooling head and the latent head + Qwen-Image VAE
    used for reconstruction.

    The codebook size is not stored: it is `prod(fsq_levels)` ([`~ViQConfig.codebook_size`]).

    Args:
        vision_config (`dict` or [`ViQVisionConfig`], *optional*):
            The ViT trunk.
        fsq_levels (`list[int]`, *optional*, defaults to `[8, 8, 8, 6, 5]`):
            Number of levels of each FSQ dimension (the 16k codebook by default). The first dimension is the
            least-significant digit of a code index.
        codes_per_patch (`int`, *optional*, defaults to 4):
            Number of sub-tokens (hence codes) each patch is expanded into.
        fusion_num_layers (`int`, *optional*, defaults to 3):
            Transformer blocks of the fusion block, before the token expansion.
        fusion_layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the affine-free LayerNorm at the start of the fusion block and of the LayerNorms of the
            code embedder's residual MLPs (PyTorch's default eps, unlike the trunk's 1e-6).
        quantizer_num_layers (`int`, *optional*, defaults to 3):
            Headless RoPE attention blocks in front of the quantizer.
        quantizer_attention_dim (`int`, *optional*, defaults to 256):
            Width of each sub-token inside the headless attention (sub-tokens are projected down to it and back).
        rope_min_freq (`float`, *optional*, defaults to 0.2):
            Lowest non-zero frequency of the GoldenGate 2-D RoPE.
        rope_max_freq (`float`, *optional*, defaults to 20.0):
            Highest frequency of the GoldenGate 2-D RoPE.
        rope_zero_freq_ratio (`float`, *optional*, defaults to 0.25):
            Fraction of rotary pairs left unrotated.
        fsq_bound_eps (`float`, *optional*, defaults to 1e-3):
            Slack of the FSQ bound, `half_l = (L - 1) * (1 + eps) / 2`.
        embedder_num_residual_layers (`int`, *optional*, defaults to 3):
            Residual MLPs of the code embedder.
        embedder_residual_intermediate_size (`int`, *optional*):
            Hidden width of those residual MLPs; defaults to `2 * hidden_size`.
        latent_num_layers (`int`, *optional*, defaults to 3):
            Transformer blocks of the latent head.
        latent_norm_groups (`int`, *optional*, defaults to 32):
            Groups of the GroupNorm before the latent convolution.
        vae_config (`dict`, *optional*):
            Keyword arguments of diffusers' `AutoencoderKLQwenImage`; defaults to the Qwen-Image VAE.
        quantizer (`str`, *optional*, defaults to `"fsq"`):
            `"fsq"`: the released quantizer (codes). `"proximal"`: the Stage 2-1 stand-in of the paper, a bottleneck of
            width `bottleneck_dim` whose output is projected by the `proximal` constraint; it gives continuous
            features and no codes ([`ViQModel.encode`] refuses such a model; `forward` works).
        bottleneck_dim (`int`, *optional*):
            Width of the Stage 2-1 bottleneck (`quantizer="proximal"` only); defaults to 128, the paper's D.
        proximal (`str`, *optional*, defaults to `"linf"`):
            Constraint on the bottleneck (`quantizer="proximal"` only): `"linf"` projects each vector onto the surface
            of the unit hypercube (`x / max|x|`, the paper's choice), `"l2"` onto the unit sphere, `"tanh"` squashes
            each value, `"none"` leaves the bottleneck unconstrained (ablations, Table 4a).
        include_decoder (`bool`, *optional*, defaults to `True`):
            Whether to build the latent head and the VAE (about 0.8 GB in fp32). Encoding, `embed_codes` and the
            pooled embedding do not need them; a VLM built with `from_viq_and_qwen` leaves them out.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal initialisation of fresh weights.
    """

    model_type = "viq"
    sub_configs_defaults = {"vision_config": ViQVisionConfig}

    vision_config: dict | PreTrainedConfig | None = None
    fsq_levels: list[int] | None = None
    codes_per_patch: int = CODES_PER_PATCH
    fusion_num_layers: int = 3
    fusion_layer_norm_eps: float = 1e-5
    quantizer_num_layers: int = 3
    quantizer_attention_dim: int = 256
    rope_min_freq: float = 0.2
    rope_max_freq: float = 20.0
    rope_zero_freq_ratio: float = 0.25
    fsq_bound_eps: float = 1e-3
    embedder_num_residual_layers: int = 3
    embedder_residual_intermediate_size: int | None = None
    latent_num_layers: int = 3
    latent_norm_groups: int = 32
    vae_config: dict | None = None
    quantizer: str = "fsq"
    bottleneck_dim: int | None = None
    proximal: str = "linf"
    include_decoder: bool = True
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if "codebook_size" in kwargs:
            raise ValueError(
                "`codebook_size` is not a ViQConfig field: it is derived from `fsq_levels` "
                f"(got codebook_size={kwargs['codebook_size']}). Pass `fsq_levels` instead."
            )
        if self.fsq_levels is None:
            self.fsq_levels = list(FSQ_LEVEL_PRESETS["16k"])
        levels = self.fsq_levels
        if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
            raise ValueError(f"`fsq_levels` must be a list of integers, got {levels!r}.")
        levels = list(levels)
        if not levels or any(isinstance(x, bool) or not isinstance(x, int) or x < 2 for x in levels):
            raise ValueError(f"`fsq_levels` must be a non-empty list of integers >= 2, got {levels!r}.")
        if math.prod(levels) > 2**31 - 1:
            raise ValueError(f"`fsq_levels` {levels} give a codebook of {math.prod(levels)} codes, over int32.")
        self.fsq_levels = levels
        if self.vae_config is None:
            self.vae_config = dict(QWEN_IMAGE_VAE_CONFIG)
        elif not isinstance(self.vae_config, dict):
            raise ValueError(
                f"`vae_config` must be a dict of AutoencoderKLQwenImage arguments, got {self.vae_config!r}."
            )
        for name in ("codes_per_patch", "fusion_num_layers", "quantizer_attention_dim", "latent_norm_groups"):
            _check_positive_int(name, getattr(self, name))
        for name in ("quantizer_num_layers", "embedder_num_residual_layers", "latent_num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
        if self.quantizer_attention_dim % 2 != 0:
            raise ValueError(
                f"`quantizer_attention_dim` must be even (rotary pairs), got {self.quantizer_attention_dim}."
            )
        if not 0.0 <= self.rope_zero_freq_ratio <= 1.0:
            raise ValueError(f"`rope_zero_freq_ratio` must be in [0, 1], got {self.rope_zero_freq_ratio}.")
        if not 0.0 < self.rope_min_freq <= self.rope_max_freq:
            raise ValueError(
                f"Need 0 < rope_min_freq <= rope_max_freq, got {self.rope_min_freq} and {self.rope_max_freq}."
            )
        if not self.fsq_bound_eps >= 0.0:
            raise ValueError(f"`fsq_bound_eps` must be >= 0, got {self.fsq_bound_eps}.")
        if self.embedder_residual_intermediate_size is not None:
            _check_positive_int("embedder_residual_intermediate_size", self.embedder_residual_intermediate_size)
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"`quantizer` must be one of {', '.join(QUANTIZERS)}, got {self.quantizer!r}.")
        if self.proximal not in PROXIMAL_CONSTRAINTS:
            raise ValueError(f"`proximal` must be one of {', '.join(PROXIMAL_CONSTRAINTS)}, got {self.proximal!r}.")
        if self.quantizer == "proximal":
            if self.bottleneck_dim is None:
                self.bottleneck_dim = DEFAULT_BOTTLENECK_DIM
            _check_positive_int("bottleneck_dim", self.bottleneck_dim)
        elif self.bottleneck_dim is not None:
            raise ValueError(
                f"`bottleneck_dim` ({self.bottleneck_dim}) belongs to the Stage 2-1 bottleneck "
                f"(quantizer='proximal'); with quantizer='fsq' the projection width is len(fsq_levels) = "
                f"{len(self.fsq_levels)}."
            )
        super().__post_init__(**kwargs)
        with_auto_map(self)
        hidden = self.vision_config.hidden_size
        if hidden % self.latent_norm_groups != 0:
            raise ValueError(
                f"`latent_norm_groups` ({self.latent_norm_groups}) must divide the hidden size ({hidden})."
            )

    def to_dict(self) -> dict:
        return without_empty_auto_map(super().to_dict())

    # ----------------------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """Width of the trunk, of every sub-token and of the LLM-ready features."""
        return self.vision_config.hidden_size

    @property
    def codebook_size(self) -> int:
        """Number of distinct codes, `prod(fsq_levels)`."""
        return math.prod(self.fsq_levels)

    @property
    def quantizer_dim(self) -> int:
        """Width the quantizer works in: `len(fsq_levels)` for FSQ, `bottleneck_dim` for the proximal bottleneck."""
        return self.bottleneck_dim if self.quantizer == "proximal" else len(self.fsq_levels)

    @property
    def preset(self) -> str | None:
        """Name of the released codebook these levels correspond to (`"16k"`, ...), or `None` (also for a Stage 2-1
        model with the proximal bottleneck, which has no codebook)."""
        if self.quantizer != "fsq":
            return None
        for name, levels in FSQ_LEVEL_PRESETS.items():
            if tuple(self.fsq_levels) == levels:
                return name
        return None

    @property
    def latent_channels(self) -> int:
        """Channels of the VAE latent predicted by the latent head."""
        return self.vae_config.get("z_dim", QWEN_IMAGE_VAE_CONFIG["z_dim"])

    @classmethod
    def from_preset(cls, size: str, **kwargs) -> "ViQConfig":
        """
        The architecture of a released ViQ tokenizer.

        Args:
            size (`str`):
                One of `"2k"`, `"4k"`, `"8k"`, `"16k"`, `"64k"`.
            kwargs:
                Overrides of any other field (e.g. `vision_config={"num_hidden_layers": 2}` for a shallow copy).

        Example:

        ```python
        >>> from transformers_viq import ViQConfig
        >>> config = ViQConfig.from_preset("64k")
        >>> config.fsq_levels, config.codebook_size
        ([8, 8, 8, 5, 5, 5], 64000)
        ```
        """
        if size not in FSQ_LEVEL_PRESETS:
            raise ValueError(f"Unknown ViQ size {size!r}; expected one of {', '.join(FSQ_LEVEL_PRESETS)}.")
        if "fsq_levels" in kwargs:
            raise ValueError("`from_preset` sets `fsq_levels` itself; build a `ViQConfig(fsq_levels=...)` instead.")
        return cls(fsq_levels=list(FSQ_LEVEL_PRESETS[size]), **kwargs)


__all__ = [
    "CODES_PER_PATCH",
    "DEFAULT_BOTTLENECK_DIM",
    "FSQ_LEVEL_PRESETS",
    "PROXIMAL_CONSTRAINTS",
    "QUANTIZERS",
    "VISION_PRESETS",
    "ViQConfig",
    "ViQVisionConfig",
]
