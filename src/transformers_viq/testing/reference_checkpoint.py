"""Deterministic random-weight checkpoints in the layout of the released ViQ encoder files.

``make_reference_state_dict`` returns a plain ``dict[str, torch.Tensor]`` whose key names,
order and shapes are those of a published ``model_viq_fsq_<size>.pth`` (the state dict of the
whole encoder: SigLIP2-giant trunk, MAP head, fusion block with the FSQ quantizer, the VAE
pre-processing blocks, the VAE head and the Qwen-Image VAE under ``vae_head.vae.``).
The values are random but chosen so that the network behaves like a trained one in the ways
the parity tests rely on:

* every tensor is drawn from its own ``torch.Generator`` (CPU, Mersenne Twister) seeded from
  ``(seed, key name)``, so a tensor does not depend on which other keys exist: the blocks and
  heads of a shallow variant (``num_layers=2``) are identical to those of the 40-layer one;
* values are uniform with the variance named below (bounded, no outliers) and then rounded
  to bfloat16-representable numbers (the released fp32 files hold bf16-exact values too);
* matrices and kernels have variance ``gain**2 / fan_in`` (``fan_in`` = input features times
  the spatial kernel area; the temporal axis of the VAE's causal 3-D kernels is left out
  because a single frame only ever meets the last temporal slice); norm scales are ``1 +- 0.1``;
  biases are small (std 0.02); the position table has std 0.1 and the MAP query latent std 1;
* with plain 1/fan_in scaling a random network collapses: attention is nearly uniform (every
  token receives the image mean), GELU's positive mean adds the same vector to every token,
  and the FSQ quantizer then sees one large common offset and emits a handful of codes.
  Three deterministic adjustments keep per-patch content dominant, as in a trained model:
  query/key projections get gain 2 (attention logits with std ~4, i.e. peaked attention),
  the output projection of every residual attention branch gets gain 0.5, and every MLP
  ``fc2`` matrix has its rows centred (zero row sums) so the GELU mean cancels.
  With these, codes on photographs use most levels of every FSQ dimension and nearly every
  sub-token gets its own code (checked with the official code, 2 and 40 layers);
* the VAE decoder's ``conv_out`` has gain 0.5 so decoded pixels mostly stay inside the clamp
  range [-1, 1].

Only torch is needed, plus diffusers for the VAE key list when ``with_vae=True``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch


HEADS = 16
MLP_RATIO = 4
PATCH = 16
POS_GRID = 128  # the released position table is a 128 x 128 grid
FSQ_WIDTH = 256  # width of the attention inside the FSQ pre-attention blocks
FSQ_SUBTOKENS = 4
FSQ_BLOCKS = 3
FUSION_PRE_BLOCKS = 3
VAE_PRE_BLOCKS = 3
RESIDUAL_MLPS = 3
VAE_LATENT_CHANNELS = 16

# deliberate gains (see module docstring); everything else uses gain 1
QK_GAIN = 2.0  # query and key projections: attention logits with std ~4 (peaked, like trained)
ATTN_OUT_GAIN = 0.5  # output projection of every residual attention branch
PROJECT_IN_GAIN = 1.0
VAE_CONV_OUT_GAIN = 0.5
BIAS_STD = 0.02
NORM_SCALE_STD = 0.1
POS_EMBED_STD = 0.1
LATENT_QUERY_STD = 1.0

_SQRT3 = math.sqrt(3.0)


# --------------------------------------------------------------------------------------------
# key layout
# --------------------------------------------------------------------------------------------


def _vit_block(prefix: str, width: int, mlp_ratio: int = MLP_RATIO) -> Iterator[tuple[str, tuple[int, ...]]]:
    """A pre-norm transformer block (LayerNorm, qkv attention, LayerNorm, 4x MLP)."""
    hidden = mlp_ratio * width
    yield f"{prefix}.norm1.weight", (width,)
    yield f"{prefix}.norm1.bias", (width,)
    yield f"{prefix}.attn.qkv.weight", (3 * width, width)
    yield f"{prefix}.attn.qkv.bias", (3 * width,)
    yield f"{prefix}.attn.proj.weight", (width, width)
    yield f"{prefix}.attn.proj.bias", (width,)
    yield f"{prefix}.norm2.weight", (width,)
    yield f"{prefix}.norm2.bias", (width,)
    yield f"{prefix}.mlp.fc1.weight", (hidden, width)
    yield f"{prefix}.mlp.fc1.bias", (hidden,)
    yield f"{prefix}.mlp.fc2.weight", (width, hidden)
    yield f"{prefix}.mlp.fc2.bias", (width,)


def _mlp(prefix: str, n_in: int, n_hidden: int, n_out: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.fc1.weight", (n_hidden, n_in)
    yield f"{prefix}.fc1.bias", (n_hidden,)
    yield f"{prefix}.fc2.weight", (n_out, n_hidden)
    yield f"{prefix}.fc2.bias", (n_out,)


def _fsq_attention_block(
    prefix: str, width: int, fsq_width: int = FSQ_WIDTH, mlp_ratio: int = MLP_RATIO
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Pre-quantization block: attention at a reduced width, one head per sub-token."""
    yield f"{prefix}.norm1.weight", (width,)
    yield f"{prefix}.norm1.bias", (width,)
    yield f"{prefix}.attn.decrease_dim.weight", (fsq_width, width)
    yield f"{prefix}.attn.decrease_dim.bias", (fsq_width,)
    yield f"{prefix}.attn.increase_dim.weight", (width, fsq_width)
    yield f"{prefix}.attn.increase_dim.bias", (width,)
    yield f"{prefix}.attn.qkv.weight", (3 * fsq_width, fsq_width)
    yield f"{prefix}.attn.qkv.bias", (3 * fsq_width,)
    yield f"{prefix}.attn.proj.weight", (fsq_width, fsq_width)
    yield f"{prefix}.attn.proj.bias", (fsq_width,)
    yield f"{prefix}.norm2.weight", (width,)
    yield f"{prefix}.norm2.bias", (width,)
    yield from _mlp(f"{prefix}.mlp", width, mlp_ratio * width, width)


def _vae_keys(vae_config: dict | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a default ``AutoencoderKLQwenImage`` (built on the meta device)."""
    from diffusers import AutoencoderKLQwenImage

    with torch.device("meta"):
        vae = AutoencoderKLQwenImage(**(vae_config or {}))
    return [(name, tuple(t.shape)) for name, t in vae.state_dict().items()]


def reference_key_shapes(
    levels: Sequence[int],
    *,
    num_layers: int = 40,
    hidden_size: int = 1536,
    with_vae: bool = True,
    mlp_ratio: int = MLP_RATIO,
    fsq_width: int = FSQ_WIDTH,
    pos_grid: int = POS_GRID,
    vae_config: dict | None = None,
) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every tensor of ``model_viq_fsq_<size>.pth``, in state-dict order.

    The keyword arguments after ``with_vae`` shrink the architecture for tiny test variants (MLP ratio, width of the
    FSQ attention, side of the position grid, keyword arguments of ``AutoencoderKLQwenImage``); their defaults are
    the released values.
    """
    c = hidden_size
    n_codes = len(levels)
    latent_channels = (vae_config or {}).get("z_dim", VAE_LATENT_CHANNELS)
    keys: list[tuple[str, tuple[int, ...]]] = [
        ("pos_embed", (1, pos_grid * pos_grid, c)),
        ("patch_embed.proj.weight", (c, 3, PATCH, PATCH)),
        ("patch_embed.proj.bias", (c,)),
    ]
    for i in range(num_layers):
        keys += _vit_block(f"blocks.{i}", c, mlp_ratio)
    keys += [("norm.weight", (c,)), ("norm.bias", (c,))]

    # MAP (attention pooling) head
    keys += [
        ("attn_pool.latent", (1, 1, c)),
        ("attn_pool.q.weight", (c, c)),
        ("attn_pool.q.bias", (c,)),
        ("attn_pool.kv.weight", (2 * c, c)),
        ("attn_pool.kv.bias", (2 * c,)),
        ("attn_pool.proj.weight", (c, c)),
        ("attn_pool.proj.bias", (c,)),
        ("attn_pool.norm.weight", (c,)),
        ("attn_pool.norm.bias", (c,)),
    ]
    keys += _mlp("attn_pool.mlp", c, mlp_ratio * c, c)

    # fusion block (quantizer and the layers around it)
    fb = "fusion_block"
    sub = FSQ_SUBTOKENS * c
    keys += [
        (f"{fb}.vq_low_norm_trick_post_quantize_affine_weight", (c,)),
        (f"{fb}.vq_low_norm_trick_post_quantize_affine_bias", (c,)),
    ]
    keys += _mlp(f"{fb}.vq_low_pre_token_shuffle_head", c, sub, sub)
    keys += _mlp(f"{fb}.vq_low_post_token_shuffle_head", c, c, c)
    keys += _mlp(f"{fb}.vq_low_inverse_token_shuffle_head", sub, sub, c)
    keys += [
        (f"{fb}.vq_low.project_in.weight", (n_codes, c)),
        (f"{fb}.vq_low.project_in.bias", (n_codes,)),
        (f"{fb}.vq_low.project_out.weight", (c, n_codes)),
        (f"{fb}.vq_low.project_out.bias", (c,)),
    ]
    for k in range(FSQ_BLOCKS):
        keys += _fsq_attention_block(f"{fb}.vq_low.fsq_pre_attn.{k}", c, fsq_width, mlp_ratio)
    for k in range(FUSION_PRE_BLOCKS):
        keys += _vit_block(f"{fb}.vq_low_preprocess_layers.{k}", c, mlp_ratio)
    keys += _mlp(f"{fb}.vq_low_postprocess_layers.0", c, c, c)
    for k in range(1, 1 + RESIDUAL_MLPS):
        keys += [
            (f"{fb}.vq_low_postprocess_layers.{k}.norm.weight", (c,)),
            (f"{fb}.vq_low_postprocess_layers.{k}.norm.bias", (c,)),
        ]
        keys += _mlp(f"{fb}.vq_low_postprocess_layers.{k}.mlp", c, 2 * c, c)

    # VAE branch: MLP, LayerNorm, blocks, then GroupNorm/conv head and the Qwen-Image VAE
    keys += _mlp("vae_preprocess_layers.0", c, c, c)
    keys += [("vae_preprocess_layers.1.weight", (c,)), ("vae_preprocess_layers.1.bias", (c,))]
    for k in range(VAE_PRE_BLOCKS):
        keys += _vit_block(f"vae_preprocess_layers.{2 + k}", c, mlp_ratio)
    keys += [
        ("vae_head.conv_norm_out.weight", (c,)),
        ("vae_head.conv_norm_out.bias", (c,)),
        ("vae_head.conv_out.weight", (4 * latent_channels, c, 3, 3)),
        ("vae_head.conv_out.bias", (4 * latent_channels,)),
    ]
    if with_vae:
        keys += [(f"vae_head.vae.{name}", shape) for name, shape in _vae_keys(vae_config)]
    return keys


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------


def _generator_for(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"viq-reference/{seed}/{name}".encode()).digest()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return gen


def _fan_in(name: str, shape: tuple[int, ...]) -> int:
    if len(shape) == 5:  # causal 3-D conv (out, in, t, h, w): a single frame sees one slice
        return shape[1] * shape[3] * shape[4]
    return shape[1] * math.prod(shape[2:])


def _value_spec(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """``(mean, std)`` of the uniform distribution used for tensor ``name``."""
    leaf = name.rsplit(".", 1)[-1]
    if name == "pos_embed":
        return 0.0, POS_EMBED_STD
    if name == "attn_pool.latent":
        return 0.0, LATENT_QUERY_STD
    if leaf == "gamma" or (len(shape) == 1 and leaf.endswith("weight")):
        return 1.0, NORM_SCALE_STD  # LayerNorm / GroupNorm / RMS-norm scales, post-quant affine
    if len(shape) == 1:
        return 0.0, BIAS_STD  # every bias (and the post-quant affine shift)
    gain = 1.0
    if name == "attn_pool.q.weight":
        gain = QK_GAIN
    elif name.endswith("attn.proj.weight"):  # residual attention branches (not attn_pool.proj)
        gain = ATTN_OUT_GAIN
    elif name == "fusion_block.vq_low.project_in.weight":
        gain = PROJECT_IN_GAIN
    elif name == "vae_head.vae.decoder.conv_out.weight":
        gain = VAE_CONV_OUT_GAIN
    return 0.0, gain / math.sqrt(_fan_in(name, shape))


def _draw(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    mean, std = _value_spec(name, shape)
    unit = torch.rand(shape, generator=_generator_for(seed, name), dtype=torch.float32)
    values = (unit * 2.0 - 1.0) * (_SQRT3 * std) + mean  # uniform with the requested mean/std
    if name.endswith("attn.qkv.weight"):
        values[: 2 * shape[0] // 3] *= QK_GAIN  # rows of q and k ([q | k | v] layout)
    elif name == "attn_pool.kv.weight":
        values[: shape[0] // 2] *= QK_GAIN  # rows of k ([k | v] layout)
    if name.endswith("fc2.weight"):
        # zero row sums: the positive mean of GELU outputs then adds no constant to every token
        values -= values.mean(dim=1, keepdim=True)
    return values.to(torch.bfloat16).to(torch.float32)


def make_reference_state_dict(
    levels: Sequence[int],
    *,
    num_layers: int = 40,
    hidden_size: int = 1536,
    seed: int = 0,
    with_vae: bool = True,
    **architecture,
) -> dict[str, torch.Tensor]:
    """Random fp32 state dict with the key names/shapes of ``model_viq_fsq_<size>.pth``.

    ``levels`` are the FSQ levels (e.g. ``[8, 8, 8, 6, 5]`` for 16k, ``[8, 8, 8, 5, 5, 5]`` for
    64k); ``num_layers`` is the number of ViT blocks (40 in the release; 2 gives a cheap variant
    whose tensors equal the corresponding ones of the full model). The result is the same for a
    given ``(levels, seed)`` on every run and machine (CPU generator, per-key seeds; checked
    bit for bit under torch 2.13 and 2.14 with 1 and 2 threads). ``hidden_size`` other than
    1536 is a convenience for tiny variants only: the released code hard-codes 1536 in places.
    ``with_vae=False`` leaves out the ``vae_head.vae.*`` keys (the Qwen-Image VAE). ``architecture`` takes the
    tiny-variant overrides of ``reference_key_shapes``.
    """
    if num_layers < 1:
        raise ValueError("num_layers must be >= 1")
    if hidden_size % HEADS:
        raise ValueError(f"hidden_size must be divisible by {HEADS}")
    shapes = reference_key_shapes(
        levels, num_layers=num_layers, hidden_size=hidden_size, with_vae=with_vae, **architecture
    )
    return {name: _draw(name, shape, seed) for name, shape in shapes}


# --------------------------------------------------------------------------------------------
# Stage-1 encoders and SigLIP2 teachers
# --------------------------------------------------------------------------------------------

STAGE1_PREFIX = "base_model.model.model.vision_tower.vision_tower."
STAGE1_TEACHER_PREFIX = "base_model.model.model.vision_tower.vision_tower_teacher."
STAGE1_PROJECTOR_PREFIX = "base_model.model.model.mm_projector."


def trunk_key_shapes(
    *, num_layers: int, hidden_size: int, intermediate_size: int, pos_grid: int
) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of a timm SigLIP2 trunk with its MAP head (the keys of a Stage-1 encoder and of the image
    trunk of an open_clip / timm SigLIP2 checkpoint), unprefixed, in state-dict order."""
    c = hidden_size
    ratio = intermediate_size / c
    keys: list[tuple[str, tuple[int, ...]]] = [
        ("pos_embed", (1, pos_grid * pos_grid, c)),
        ("patch_embed.proj.weight", (c, 3, PATCH, PATCH)),
        ("patch_embed.proj.bias", (c,)),
    ]
    for i in range(num_layers):
        block = list(_vit_block(f"blocks.{i}", c, 4))
        keys += [(n, (intermediate_size, c) if n.endswith("fc1.weight") else (intermediate_size,)
                  if n.endswith("fc1.bias") else (c, intermediate_size) if n.endswith("fc2.weight") else shape)
                 for n, shape in block] if ratio != 4 else block  # fmt: skip
    keys += [("norm.weight", (c,)), ("norm.bias", (c,))]
    keys += [
        ("attn_pool.latent", (1, 1, c)),
        ("attn_pool.q.weight", (c, c)),
        ("attn_pool.q.bias", (c,)),
        ("attn_pool.kv.weight", (2 * c, c)),
        ("attn_pool.kv.bias", (2 * c,)),
        ("attn_pool.proj.weight", (c, c)),
        ("attn_pool.proj.bias", (c,)),
        ("attn_pool.norm.weight", (c,)),
        ("attn_pool.norm.bias", (c,)),
    ]
    keys += _mlp("attn_pool.mlp", c, intermediate_size, c)
    return keys


def make_stage1_state_dict(
    *,
    num_layers: int = 40,
    hidden_size: int = 1536,
    intermediate_size: int | None = None,
    pos_grid: int = POS_GRID,
    seed: int = 0,
    prefix: str = STAGE1_PREFIX,
    with_teacher: bool = True,
    with_projector: bool = True,
) -> dict[str, torch.Tensor]:
    """Random fp32 state dict in the layout of a published Stage-1 encoder (``anyres_vit/*/siglip2_*_anyres_s4.pth``):
    the training dump of the vision tower, whose encoder keys carry ``prefix``, plus (by default) a few tensors of the
    frozen teacher and of the Stage-1 projector, which a loader must leave out.

    The defaults are the giant encoder; SO400M is ``hidden_size=1152, num_layers=27, intermediate_size=4304``."""
    intermediate_size = intermediate_size or MLP_RATIO * hidden_size
    shapes = trunk_key_shapes(num_layers=num_layers, hidden_size=hidden_size, intermediate_size=intermediate_size,
                              pos_grid=pos_grid)  # fmt: skip
    state = {prefix + name: _draw(name, shape, seed) for name, shape in shapes}
    if with_teacher:
        for name, shape in shapes[:6]:
            state[STAGE1_TEACHER_PREFIX + name] = _draw("teacher." + name, shape, seed)
    if with_projector:
        state[STAGE1_PROJECTOR_PREFIX + "proj1.weight"] = _draw("proj1.weight", (8, hidden_size), seed)
        state[STAGE1_PROJECTOR_PREFIX + "proj1.bias"] = _draw("proj1.bias", (8,), seed)
    return state


def make_siglip2_state_dict(
    *,
    num_layers: int = 40,
    hidden_size: int = 1536,
    intermediate_size: int | None = None,
    pos_grid: int = 24,
    seed: int = 0,
    layout: str = "open_clip",
) -> dict[str, torch.Tensor]:
    """Random fp32 state dict with the key names of a fixed-resolution SigLIP2 checkpoint: ``layout="open_clip"``
    (``open_clip_pytorch_model.bin``: the image trunk under ``visual.trunk.``, plus text-tower tensors and
    ``logit_scale``/``logit_bias``) or ``"timm"`` (``model.safetensors``: bare trunk keys). The 384-px models have a
    24x24 position table."""
    if layout not in ("open_clip", "timm"):
        raise ValueError(f"layout must be 'open_clip' or 'timm', got {layout!r}")
    intermediate_size = intermediate_size or MLP_RATIO * hidden_size
    shapes = trunk_key_shapes(num_layers=num_layers, hidden_size=hidden_size, intermediate_size=intermediate_size,
                              pos_grid=pos_grid)  # fmt: skip
    prefix = "visual.trunk." if layout == "open_clip" else ""
    state = {prefix + name: _draw(name, shape, seed) for name, shape in shapes}
    if layout == "open_clip":
        state["text.token_embedding.weight"] = _draw("text.token_embedding.weight", (16, hidden_size), seed)
        state["text.positional_embedding"] = _draw("text.positional_embedding", (4, hidden_size), seed)
        state["logit_scale"] = torch.tensor([2.3])
        state["logit_bias"] = torch.tensor([-10.0])
    return state


__all__ = [
    "make_reference_state_dict",
    "make_siglip2_state_dict",
    "make_stage1_state_dict",
    "reference_key_shapes",
    "trunk_key_shapes",
]
