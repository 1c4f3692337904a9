# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""PyTorch ViQ visual tokenizer.

ViQ (Yu et al., "ViQ: Text-Aligned Visual Quantized Representations at Any Resolution", github yuxumin/ViQ) turns an
image at its native resolution into 4 discrete codes per 16x16 patch:

    patches -> ViT trunk (SigLIP2-giant geometry, 128x128 position table resized per image)
            -> fusion block (affine-free LayerNorm, 3 blocks, expansion of each patch into 4 sub-tokens)
            -> quantizer (3 "headless" attention blocks with GoldenGate 2-D RoPE, the 4 sub-tokens being the 4
               heads, then a projection to the FSQ dimensions and FSQ)       -> codes
    codes   -> code embedder (implicit codebook, project out, merge the 4 sub-tokens, MLPs, affine)
                                                                              -> LLM-ready features
    features-> attention-pooling head                                         -> pooled semantic embedding
    features-> latent head (MLP, LayerNorm, 3 blocks, GroupNorm/SiLU/conv, pixel shuffle)
                                                                              -> Qwen-Image VAE latents
    latents -> Qwen-Image VAE decoder (diffusers `AutoencoderKLQwenImage`)    -> pixels

Images of different sizes travel as one packed sequence (`pixel_values` of shape `(sum_i h_i*w_i, 3*16*16)` plus
`image_grid_hw`); every attention is block-diagonal per image, so an image's result never depends on the rest of the
batch, and nothing is padded to the largest image.

Written from the paper and the numerics of the released checkpoints (their weights and the authors' inference code,
github.com/yuxumin/ViQ; `tests/models/viq/test_parity_official.py` checks the match); module and parameter names follow
transformers' SigLIP2 / Qwen2-VL models.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging
from transformers.utils.generic import is_flash_attention_requested

from .configuration_viq import ViQConfig, ViQVisionConfig
from .fsq import FiniteScalarQuantizer, ProximalProjection, implicit_codebook
from .validation_viq import check_codes, check_grid, check_pixels


logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ViQEncoderOutput(ModelOutput):
    r"""
    Output of [`ViQModel.encode`] and [`ViQModel.forward`].

    Args:
        image_codes (`torch.LongTensor` of shape `(sum_i 4 * h_i * w_i,)`):
            Packed codes of all images, in the released model's order: patch-major (row-major over each image's
            grid), then the 4 sub-codes of the patch. Values in `[0, codebook_size)`.
        image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`):
            Patch grid `(h_i, w_i)` of each image.
        pooler_output (`torch.FloatTensor` of shape `(num_images, hidden_size)`, *optional*):
            Attention-pooled semantic embedding of each image (computed from the quantized features).
        last_hidden_state (`torch.FloatTensor` of shape `(sum_i h_i * w_i, hidden_size)`, *optional*):
            The LLM-ready features the codes stand for (the output of the code embedder). In `forward` the gradient
            reaches the trunk through the straight-through estimator.
        quantizer_inputs (`torch.FloatTensor` of shape `(sum_i 4 * h_i * w_i, len(fsq_levels))`, *optional*):
            The values the quantizer rounded (returned by `forward` only; useful for code-stability diagnostics).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned by `forward` with `output_hidden_states=True`):
            The embeddings and the output of each trunk block, each `(sum_i h_i * w_i, trunk hidden_size)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned by `forward` with `output_attentions=True`):
            The attention probabilities of each trunk block under `eager`, each
            `(1, num_heads, sum_i h_i * w_i, sum_i h_i * w_i)` (zero between patches of different images).
    """

    image_codes: torch.LongTensor | None = None
    image_grid_hw: torch.LongTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    quantizer_inputs: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------
# Packed sequences and block-diagonal attention over them
# ----------------------------------------------------------------------------------------------------------------
# Kernels for block-diagonal attention over packed images, registered in transformers' `AttentionInterface` (so
# `attn_implementation="viq_varlen"` etc. chooses them); `"sdpa"` picks the fastest that runs
# (`resolve_packed_kernel`).
PACKED_KERNELS = ("viq_varlen", "viq_flash_attn", "viq_sdpa", "viq_per_image")
_VARLEN_DTYPES = (torch.float16, torch.bfloat16)
_VARLEN_MAX_HEAD_DIM = 256  # flash-attention kernels: head_dim <= 256 and a multiple of 8


def _host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """
    Copy a host tensor to `device` without blocking the host: a plain `.to("cuda")` from pageable memory waits for the
    device's queue to drain; a copy staged through a pinned buffer of torch's caching host allocator, sent with
    `non_blocking=True`, does not (the allocator keeps the buffer until the copy has run). A tensor that is already
    pinned is staged too: its owner may reuse it as soon as the call returns.
    """
    if device.type == "cuda" and tensor.device.type == "cpu" and not tensor.requires_grad:
        if tensor.is_pinned():
            staged = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True).copy_(tensor)
        else:
            staged = tensor.pin_memory()
        return staged.to(device, non_blocking=True)
    return tensor.to(device)


@functools.cache
def _torch_varlen_attn() -> tuple[Callable, frozenset[str]] | None:
    """`torch.nn.attention.varlen.varlen_attn` and its keyword names, or `None` where this torch has no varlen API."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


@functools.cache
def _flash_attn_varlen_func() -> Callable | None:
    """`flash_attn.flash_attn_varlen_func`, or `None` where the flash-attn package is missing or does not import."""
    if importlib.util.find_spec("flash_attn") is None:
        return None
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception as error:  # installed but built against another torch / CUDA
        logger.warning_once(f"flash-attn is installed but does not import ({type(error).__name__}: {error}).")
        return None
    return flash_attn_varlen_func


def _kernel_unavailable(name: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> tuple[str, bool] | None:
    """Why packed kernel `name` cannot run here: `(reason, missing)`, `missing` when the kernel itself is absent
    (rather than the device or dtype not fitting it); `None` when it can run."""
    if name in ("viq_sdpa", "viq_per_image"):
        return None
    if device.type != "cuda":
        return f"it needs a CUDA device, the model is on {device.type}", False
    if dtype not in _VARLEN_DTYPES:
        return f"it needs float16 or bfloat16, the model is {str(dtype).replace('torch.', '')}", False
    if head_dim > _VARLEN_MAX_HEAD_DIM or head_dim % 8:
        return f"its kernels need head_dim <= {_VARLEN_MAX_HEAD_DIM} and a multiple of 8, got {head_dim}", False
    if name == "viq_varlen" and _torch_varlen_attn() is None:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen", True
    if name == "viq_flash_attn" and _flash_attn_varlen_func() is None:
        return "the flash-attn package is not installed", True
    return None


def resolve_packed_kernel(
    implementation: str | None, device: torch.device, dtype: torch.dtype, head_dim: int
) -> tuple[str | None, str | None, bool]:
    """
    The packed kernel (one of `PACKED_KERNELS`) that attention implementation `implementation` runs.

    `"sdpa"` (and `None`, transformers' default before a model is built) picks on its own: on CUDA torch's varlen
    flash attention (`"viq_varlen"`, where the installed torch has `torch.nn.attention.varlen`), else the flash-attn
    package's `flash_attn_varlen_func` (`"viq_flash_attn"`), else one batched SDPA call (`"viq_sdpa"`); on other
    devices one SDPA call per image (`"viq_per_image"`, the measured-fastest CPU path). A packed kernel asked for by
    name that cannot run falls back to what `"sdpa"` picks. Any other implementation (`"eager"`, flash-attention,
    a kernel of the Hub) has no packed kernel: `None`.

    Returns:
        `(kernel, note, warn)`: the kernel, and when it differs from the request or `"sdpa"` skipped a kernel, a
        sentence saying why (`warn` is `True` when a kernel is missing, rather than not applicable to the device or
        dtype).
    """
    if implementation in (None, "sdpa"):
        order = ("viq_varlen", "viq_flash_attn", "viq_sdpa") if device.type == "cuda" else ("viq_per_image",)
        skipped, warn = [], False
        for name in order:
            problem = _kernel_unavailable(name, device, dtype, head_dim)
            if problem is None:
                note = f"packed attention: using {name!r} ({'; '.join(skipped)})" if skipped else None
                return name, note, warn
            skipped.append(f"not {name!r}: {problem[0]}")
            warn = warn or problem[1]
        raise AssertionError("unreachable: 'viq_sdpa' and 'viq_per_image' always run")
    if implementation not in PACKED_KERNELS:
        return None, None, False
    problem = _kernel_unavailable(implementation, device, dtype, head_dim)
    if problem is None:
        return implementation, None, False
    fallback, _, _ = resolve_packed_kernel("sdpa", device, dtype, head_dim)
    return fallback, f"packed attention {implementation!r} cannot run: {problem[0]}; using {fallback!r}", True


@dataclass
class PackedSequence:
    """
    Segment layout of a packed multi-image sequence (one segment per image), made once per forward, and the packed
    kernel its attentions run (`None` for implementations without one, see `resolve_packed_kernel`).

    `lengths` and `max_seqlen` are host values (no device synchronisation to read them); `cu_seqlens` is on the device
    of the first block. [`~PackedSequence.cu_seqlens_on`] and [`~PackedSequence.padding`] give the device tensors a
    kernel needs, made once per forward and device (a model split over several GPUs gets them where each block is).
    """

    lengths: list[int]
    cu_seqlens: torch.Tensor  # int32 (num_images + 1,)
    max_seqlen: int
    kernel: str | None = None
    _on_device: dict = field(default_factory=dict, repr=False)  # (name, device) -> tensor, for this forward

    @classmethod
    def from_lengths(cls, lengths: list[int], device: torch.device, kernel: str | None = None) -> "PackedSequence":
        cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0).to(torch.int32)
        return cls(lengths=list(lengths), cu_seqlens=_host_to_device(cu, torch.device(device)),
                   max_seqlen=max(lengths), kernel=kernel)  # fmt: skip

    @property
    def uniform(self) -> bool:
        """All segments have the same length (a batch of same-size images: no padding needed for one batched call)."""
        return self.max_seqlen * len(self.lengths) == sum(self.lengths)

    def cu_seqlens_on(self, device: torch.device) -> torch.Tensor:
        """`cu_seqlens` on `device`."""
        if self.cu_seqlens.device == device:
            return self.cu_seqlens
        key = ("cu_seqlens", device)
        if key not in self._on_device:
            self._on_device[key] = self.cu_seqlens.to(device, non_blocking=True)
        return self._on_device[key]

    def padding(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """
        For one batched attention call over segments of different lengths: `index` (`(total_len,)` int64, the row of
        each packed token in the `(num_images * max_seqlen)` padded layout) and `key_mask`
        (`(num_images, 1, 1, max_seqlen)` bool, `True` on real tokens), on `device`.
        """
        key = ("padding", device)
        if key not in self._on_device:
            positions = torch.arange(self.max_seqlen)
            index = torch.cat([i * self.max_seqlen + positions[:n] for i, n in enumerate(self.lengths)])
            key_mask = (positions < torch.tensor(self.lengths)[:, None])[:, None, None, :]
            self._on_device[key] = (_host_to_device(index, device), _host_to_device(key_mask, device))
        return self._on_device[key]

    def block_mask(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Additive block-diagonal mask `(1, 1, total_len, total_len)`: 0 within an image, the dtype's minimum
        between images."""
        segments = torch.repeat_interleave(torch.arange(len(self.lengths)), torch.tensor(self.lengths))
        allowed = _host_to_device(segments[:, None] == segments[None, :], device)
        return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)[
            None, None
        ]


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


# The packed kernels take and return tensors as transformers' attention functions do: query, key and value
# `(1, heads, total_len, head_dim)`, the output `(1, total_len, heads, head_dim)`, with the layout in `packed`.
def _packed_layout(packed, name: str) -> PackedSequence:
    if not isinstance(packed, PackedSequence):
        raise ValueError(
            f"Attention {name!r} computes block-diagonal attention over the images a ViQ model packs into one "
            "sequence and needs their layout (`packed=`): it serves the ViQ models, not other architectures."
        )
    return packed


def _scale(module: nn.Module, scaling: float | None) -> float:
    return module.scaling if scaling is None else scaling


def varlen_attention_forward(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, *,
                             packed=None, **kwargs):  # fmt: skip
    """`"viq_varlen"`: torch's varlen flash attention, one kernel over all segments (no dropout)."""
    packed = _packed_layout(packed, "viq_varlen")
    query, key, value = (t[0].transpose(0, 1) for t in (query, key, value))  # (total_len, heads, head_dim)
    scale = _scale(module, scaling)
    varlen_attn, parameters = _torch_varlen_attn()
    options = {}
    if "window_size" in parameters:  # torch >= 2.11: (-1, -1) is full (non-causal) attention
        options["window_size"] = (-1, -1)
    elif "is_causal" in parameters:  # torch 2.10
        options["is_causal"] = False
    if "scale" in parameters:
        options["scale"] = scale
    elif scale != query.shape[-1] ** -0.5:
        query = query * (scale * query.shape[-1] ** 0.5)
    cu_seqlens = packed.cu_seqlens_on(query.device)
    out = varlen_attn(query, key, value, cu_seqlens, cu_seqlens, packed.max_seqlen, packed.max_seqlen, **options)
    return out.unsqueeze(0), None


def flash_attn_attention_forward(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, *,
                                 packed=None, **kwargs):  # fmt: skip
    """`"viq_flash_attn"`: the flash-attn package's varlen kernel, one kernel over all segments."""
    packed = _packed_layout(packed, "viq_flash_attn")
    query, key, value = (t[0].transpose(0, 1) for t in (query, key, value))
    cu_seqlens = packed.cu_seqlens_on(query.device)
    out = _flash_attn_varlen_func()(
        query, key, value, cu_seqlens, cu_seqlens, packed.max_seqlen, packed.max_seqlen,
        dropout_p=dropout, softmax_scale=_scale(module, scaling), causal=False,
    )  # fmt: skip
    return out.unsqueeze(0), None


def batched_sdpa_attention_forward(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, *,
                                   packed=None, **kwargs):  # fmt: skip
    """
    `"viq_sdpa"`: one `scaled_dot_product_attention` call with the images as the batch: same-size images are a plain
    batch (a view, no mask); images of different sizes are padded to the longest with a key mask, so each image
    attends to itself only.
    """
    packed = _packed_layout(packed, "viq_sdpa")
    query, key, value = (t[0].transpose(0, 1) for t in (query, key, value))
    scale = _scale(module, scaling)
    total, heads, head_dim = query.shape
    batch, length = len(packed.lengths), packed.max_seqlen
    if packed.uniform:
        query, key, value = (t.reshape(batch, length, heads, head_dim).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=scale)
        return out.transpose(1, 2).reshape(1, total, heads, head_dim), None
    index, key_mask = packed.padding(query.device)
    query, key, value = (
        t.new_zeros(batch * length, heads, head_dim).index_copy(0, index, t).view(batch, length, heads, head_dim)
        .transpose(1, 2) for t in (query, key, value)
    )  # fmt: skip
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, dropout_p=dropout, scale=scale)
    return out.transpose(1, 2).reshape(batch * length, heads, head_dim).index_select(0, index).unsqueeze(0), None


def _per_image(interface: Callable, module, query, key, value, packed: PackedSequence, scaling, dropout):
    """`interface` (a transformers attention function) called on each image's segment, outputs concatenated."""
    if len(packed.lengths) == 1:
        return interface(module, query, key, value, attention_mask=None, scaling=scaling, dropout=dropout,
                         is_causal=False)  # fmt: skip
    outputs = [
        interface(module, q, k, v, attention_mask=None, scaling=scaling, dropout=dropout, is_causal=False)[0]
        for q, k, v in zip(*(t.split(packed.lengths, dim=2) for t in (query, key, value)))
    ]
    return torch.cat(outputs, dim=1), None


def per_image_attention_forward(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, *,
                                packed=None, **kwargs):  # fmt: skip
    """`"viq_per_image"`: transformers' SDPA attention once per image (no compute spent on off-diagonal blocks)."""
    packed = _packed_layout(packed, "viq_per_image")
    return _per_image(ALL_ATTENTION_FUNCTIONS["sdpa"], module, query, key, value, packed, _scale(module, scaling),
                      dropout)  # fmt: skip


_KERNEL_FUNCTIONS = (
    varlen_attention_forward,
    flash_attn_attention_forward,
    batched_sdpa_attention_forward,
    per_image_attention_forward,
)
for _name, _function in zip(PACKED_KERNELS, _KERNEL_FUNCTIONS):
    AttentionInterface.register(_name, _function)


def packed_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    packed: PackedSequence,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    Block-diagonal (each token attends to all tokens of its own image and to nothing else), non-causal attention over
    a packed sequence, with the model's `attn_implementation`.

    Args:
        query, key, value (`torch.Tensor` of shape `(total_len, num_heads, head_dim)`).
        output_attentions (`bool`): return the attention probabilities (`eager` only, as in transformers).

    Returns:
        `(attn_output, attn_weights)`: `(total_len, num_heads, head_dim)`, and `(1, num_heads, total_len, total_len)`
        (zero across images) or `None`.

    `"sdpa"` and the `PACKED_KERNELS` run `packed.kernel` (see `resolve_packed_kernel`): `viq_varlen` and
    `viq_flash_attn` one varlen kernel over all images, `viq_sdpa` one batched call, `viq_per_image` one call per
    image.
    Flash-attention implementations get the segment boundaries; `eager` and the rest run one image at a time (the
    reference semantics), or, for `output_attentions`, `eager` runs once over all images with a block-diagonal mask.
    """
    config = module.config
    implementation = config._attn_implementation
    dropout = module.attention_dropout if module.training else 0.0
    query, key, value = (t.transpose(0, 1).unsqueeze(0) for t in (query, key, value))  # (1, heads, L, head_dim)
    if implementation in (None, "sdpa", *PACKED_KERNELS):
        kernel = packed.kernel or resolve_packed_kernel(implementation, query.device, query.dtype, query.shape[-1])[0]
        if kernel in ("viq_varlen", "viq_flash_attn") and query.dtype not in _VARLEN_DTYPES:
            kernel = "viq_sdpa"  # e.g. an fp32 model whose packed sequence was resolved for another dtype
        if kernel == "viq_varlen" and dropout:
            kernel = "viq_sdpa"  # torch's varlen kernel has no dropout
        if kernel == "viq_sdpa" and len(packed.lengths) == 1:
            kernel = "viq_per_image"
        out, _ = ALL_ATTENTION_FUNCTIONS[kernel](module, query, key, value, None, scaling=module.scaling,
                                                 dropout=dropout, packed=packed)  # fmt: skip
        return out[0], None
    interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    if is_flash_attention_requested(config):
        out, _ = interface(
            module, query, key, value, attention_mask=None, scaling=module.scaling, dropout=dropout,
            cu_seq_lens_q=packed.cu_seqlens_on(query.device), cu_seq_lens_k=packed.cu_seqlens_on(query.device),
            max_length_q=packed.max_seqlen, max_length_k=packed.max_seqlen, is_causal=False,
        )  # fmt: skip
        return out[0], None
    if output_attentions and implementation == "eager":
        mask = None if len(packed.lengths) == 1 else packed.block_mask(query.device, query.dtype)
        out, weights = eager_attention_forward(module, query, key, value, mask, scaling=module.scaling,
                                               dropout=dropout)  # fmt: skip
        return out[0], weights
    out, _ = _per_image(interface, module, query, key, value, packed, module.scaling, dropout)
    return out[0], None


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
class ViQMLP(nn.Module):
    """`fc2(act(fc1(x)))` with biases; the released model uses the exact (erf) GELU everywhere."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int, hidden_act: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = ACT2FN[hidden_act]
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class ViQAttention(nn.Module):
    """Multi-head self-attention with a fused `[q | k | v]` projection (each head-major), over packed images."""

    def __init__(self, vision: ViQVisionConfig, config: PreTrainedConfig):
        super().__init__()
        self.config = config  # the model's config: it carries `_attn_implementation`
        self.embed_dim = vision.hidden_size
        self.num_heads = vision.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = vision.attention_dropout
        self.is_causal = False
        self.num_key_value_groups = 1
        self.qkv_proj = nn.Linear(self.embed_dim, 3 * self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def project_qkv(self, hidden_states: torch.Tensor, position_embeddings=None):
        """`(total_len, embed_dim)` -> query, key, value, each `(total_len, heads, head_dim)` (views of one matmul)."""
        qkv = self.qkv_proj(hidden_states).view(hidden_states.shape[0], 3, self.num_heads, self.head_dim)
        return qkv.unbind(1)

    def project_out(self, attn_output: torch.Tensor) -> torch.Tensor:
        """`(total_len, heads, head_dim)` -> `(total_len, embed_dim)`."""
        return self.out_proj(attn_output.flatten(1))

    def forward(self, hidden_states: torch.Tensor, packed: PackedSequence, position_embeddings=None) -> torch.Tensor:
        """`hidden_states`: `(total_len, embed_dim)` -> `(total_len, embed_dim)`."""
        query, key, value = self.project_qkv(hidden_states)
        return self.project_out(packed_attention(self, query, key, value, packed)[0])


def _mark_sequence_dynamic(*tensors: torch.Tensor) -> None:
    """
    Let the compiled block regions take the sequence length (dim 0) as a symbol and keep every other size static: one
    graph for all lengths. (`dynamic=True` would make the widths symbols too, and a length that happens to equal a
    width, e.g. 256 patches and the quantizer's 256-wide heads, would be unified with it and specialised.)
    """
    for tensor in tensors:
        torch._dynamo.maybe_mark_dynamic(tensor, 0)


class ViQEncoderLayer(GradientCheckpointingLayer):
    """
    Pre-norm transformer block (no LayerScale, no drop-path) around the attention module it is given:
    `x += attn(ln1(x)); x += mlp(ln2(x))`. The trunk, fusion and latent-head blocks hold a [`ViQAttention`], the
    quantizer's a [`ViQHeadlessAttention`] (which also takes the rotary `position_embeddings`).

    The block runs as two regions around the attention kernel, `attention_inputs` (LayerNorm, qkv projection, RoPE)
    and `attention_outputs` (output projection, residual, LayerNorm, MLP, residual): [`ViQModel.compile_blocks`]
    compiles these regions, which fuses their element-wise work, while the attention kernel stays whatever the
    `attn_implementation` runs.
    """

    _compiled_regions: tuple[Callable, Callable] | None = None  # set by `compile_blocks`

    def __init__(self, vision: ViQVisionConfig, self_attn: nn.Module):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(vision.hidden_size, eps=vision.layer_norm_eps)
        self.self_attn = self_attn
        self.layer_norm2 = nn.LayerNorm(vision.hidden_size, eps=vision.layer_norm_eps)
        self.mlp = ViQMLP(vision.hidden_size, vision.intermediate_size, vision.hidden_size, vision.hidden_act)

    def attention_inputs(self, hidden_states: torch.Tensor, position_embeddings=None):
        return self.self_attn.project_qkv(self.layer_norm1(hidden_states), position_embeddings)

    def attention_outputs(self, hidden_states: torch.Tensor, attn_output: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn.project_out(attn_output)
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))

    def forward(
        self,
        hidden_states: torch.Tensor,
        packed: PackedSequence,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_attentions: bool = False,
    ):
        """`hidden_states` `(total_len, hidden)` -> the same shape; with `output_attentions`, `(hidden_states,
        attn_weights)` (see [`packed_attention`])."""
        regions = self._compiled_regions
        inputs, outputs = regions or (type(self).attention_inputs, type(self).attention_outputs)
        if regions is not None:
            _mark_sequence_dynamic(hidden_states, *(position_embeddings or ()))
        query, key, value = inputs(self, hidden_states, position_embeddings)
        attn_output, attn_weights = packed_attention(self.self_attn, query, key, value, packed, output_attentions)
        if regions is not None:
            if not attn_output.requires_grad:
                attn_output = attn_output.detach()  # drops the view's base, whose layout the graph would be guarded on
            _mark_sequence_dynamic(attn_output)
        hidden_states = outputs(self, hidden_states, attn_output)
        return (hidden_states, attn_weights) if output_attentions else hidden_states


class ViQVisionEmbeddings(nn.Module):
    """
    Patch embedding (a 16x16 stride-16 convolution with bias, applied as a matrix product to pre-cut patches) plus a
    learned `position_embedding_size`^2 position table, bilinearly resized (no antialias, `align_corners=False`, in
    the parameter dtype) to each image's patch grid.
    """

    def __init__(self, config: ViQVisionConfig):
        super().__init__()
        self.config = config
        self.patch_dim = config.num_channels * config.patch_size**2
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.position_embedding = nn.Embedding(config.position_embedding_size**2, config.hidden_size)

    def resize_positional_embeddings(self, height: int, width: int) -> torch.Tensor:
        """The position table resized to an `height x width` patch grid, flattened row-major: `(h*w, hidden)`."""
        size = self.config.position_embedding_size
        table = self.position_embedding.weight
        if (height, width) == (size, size):
            return table
        grid = table.reshape(1, size, size, -1).permute(0, 3, 1, 2)  # (1, C, size, size)
        grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
        return grid.reshape(-1, height * width).transpose(0, 1)

    def forward(self, pixel_values: torch.Tensor, grid_hw: list[tuple[int, int]]) -> torch.Tensor:
        """`pixel_values` `(total_patches, C*p*p)` (flattened `(C, p, p)` blocks) -> `(total_patches, hidden)`."""
        weight = self.patch_embedding.weight
        pixel_values = pixel_values.to(device=weight.device, dtype=weight.dtype)
        patch_embeds = F.linear(pixel_values, weight.reshape(weight.shape[0], -1), self.patch_embedding.bias)
        tables: dict[tuple[int, int], torch.Tensor] = {}  # one resize per distinct grid of the batch
        for grid in grid_hw:
            if grid not in tables:
                tables[grid] = self.resize_positional_embeddings(*grid)
        positions = [tables[grid] for grid in grid_hw]
        positions = positions[0] if len(positions) == 1 else torch.cat(positions, dim=0)
        return patch_embeds + positions


class ViQVisionEncoder(nn.Module):
    """The stack of trunk blocks."""

    def __init__(self, vision: ViQVisionConfig, config: PreTrainedConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            [ViQEncoderLayer(vision, ViQAttention(vision, config)) for _ in range(vision.num_hidden_layers)]
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        packed: PackedSequence,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        """`(total_len, hidden)` -> `(last_hidden_state, all_hidden_states, all_attentions)`; the tuples (the input and
        each block's output; each block's attention probabilities) are `None` unless asked for."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_attentions:
                hidden_states, attn_weights = layer(hidden_states, packed, output_attentions=True)
                all_attentions += (attn_weights,)
            else:
                hidden_states = layer(hidden_states, packed)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states, all_attentions


class ViQGoldenGateRotaryEmbedding(nn.Module):
    r"""
    GoldenGate 2-D rotary position embedding (mixed directions at golden-angle spacing per frequency and head).

    `head_dim / 2` frequencies per head: the first `round(zero_freq_ratio * head_dim / 2)` are zero, the rest
    log-spaced from `min_freq` to `max_freq`. Frequency `f` of head `h` measures position along the direction
    `phi = (h * head_dim / 2 + f) * pi * (sqrt(5) - 1) / 2`. Positions are normalised so the patch grid spans
    `x in [-sqrt(W/H), sqrt(W/H)]`, `y in [-sqrt(H/W), sqrt(H/W)]` whatever its resolution. Angles are computed in
    float32 on the CPU, like the released model. No parameters and no buffers (per-grid results are cached).
    """

    def __init__(self, head_dim: int, num_heads: int, min_freq: float, max_freq: float, zero_freq_ratio: float):
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.min_freq = min_freq
        self.max_freq = max_freq
        self.zero_freq_ratio = zero_freq_ratio
        self._frequencies: torch.Tensor | None = None
        # Caches of the most recently computed grids, shared by the threads that use the model: read without a lock
        # and replaced whole (copy on write) when a grid is added, so a reader always sees a complete dict and two
        # threads adding grids at once at worst compute one of them again.
        self._angles: dict[tuple[int, int], torch.Tensor] = {}  # the 16 latest grids
        self._cos_sin: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # per (grid, dtype, device), <= cache_bytes
        self.cache_bytes = 256 * 2**20

    def frequencies(self) -> torch.Tensor:
        """`(num_heads, head_dim // 2, 2)` float32: the (x, y) frequency vector of every rotary pair."""
        if self._frequencies is not None:
            return self._frequencies
        num_freqs = self.head_dim // 2
        num_zero = round(self.zero_freq_ratio * num_freqs)
        magnitudes = torch.cat(
            (
                torch.zeros(num_zero, device="cpu"),
                self.min_freq
                * (self.max_freq / self.min_freq) ** torch.linspace(0, 1, num_freqs - num_zero, device="cpu"),
            )
        )
        angle = torch.arange(self.num_heads * num_freqs, device="cpu").reshape(self.num_heads, num_freqs)
        angle = angle * (math.pi * (math.sqrt(5) - 1) / 2)
        directions = torch.stack((torch.cos(angle), torch.sin(angle)), dim=-1)
        self._frequencies = magnitudes.unsqueeze(-1) * directions
        return self._frequencies

    def angles(self, height: int, width: int) -> torch.Tensor:
        """Rotation angles of a `height x width` patch grid: `(height * width, num_heads, head_dim // 2)`, float32."""
        key = (height, width)
        cached = self._angles.get(key)
        if cached is not None:
            return cached
        x_lim, y_lim = math.sqrt(width / height), math.sqrt(height / width)
        x = torch.linspace(-x_lim, x_lim, width, device="cpu").reshape(1, width, 1, 1).expand(height, width, 1, 1)
        y = torch.linspace(-y_lim, y_lim, height, device="cpu").reshape(height, 1, 1, 1).expand(height, width, 1, 1)
        freqs = self.frequencies()
        theta = freqs[..., 0] * x + freqs[..., 1] * y  # (H, W, heads, F)
        theta = theta.reshape(height * width, self.num_heads, self.head_dim // 2)
        angles = {**self._angles, key: theta}
        self._angles = dict(list(angles.items())[-16:])
        return theta

    def cos_sin(self, height: int, width: int, dtype: torch.dtype, device: torch.device):
        """`(cos, sin)` of one grid's angles rounded to `dtype`, computed on the CPU and kept on `device` (the latest
        grids, at most `cache_bytes`)."""
        key = (height, width, dtype, device)
        cached = self._cos_sin.get(key)
        if cached is not None:
            return cached
        theta = self.angles(height, width).to(dtype)
        cached = (_host_to_device(torch.cos(theta), device), _host_to_device(torch.sin(theta), device))
        entries = [*self._cos_sin.items(), (key, cached)]
        size = sum(cos.numel() * cos.element_size() * 2 for _, (cos, _) in entries)
        while len(entries) > 1 and size > self.cache_bytes:  # the oldest grids go first
            size -= entries[0][1][0].numel() * entries[0][1][0].element_size() * 2
            entries.pop(0)
        self._cos_sin = dict(entries)
        return cached

    def forward(self, grid_hw: list[tuple[int, int]], dtype: torch.dtype, device: torch.device):
        """
        `(cos, sin)`, each `(total_patches, num_heads, head_dim // 2)` in `dtype` on `device`: the angles are rounded
        to `dtype` before the cosine and sine, which are taken on the CPU, as in the released model. Each grid's pair
        is copied to the device once (without blocking the host) and reused by later calls.
        """
        device = torch.device(device)
        pairs = [self.cos_sin(h, w, dtype, device) for h, w in grid_hw]
        if len(pairs) == 1:
            return pairs[0]
        return torch.cat([cos for cos, _ in pairs]), torch.cat([sin for _, sin in pairs])


def apply_rotary(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half (NeoX) pairing: pair `(i, i + d/2)` is rotated by angle `i` (`cos`, `sin` broadcast to `states`)."""
    first, second = states.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)


class ViQHeadlessAttention(nn.Module):
    """
    Attention in which the `codes_per_patch` sub-tokens of a patch are the heads: sub-token `j` of a patch attends to
    sub-token `j` of every patch of the same image. Each sub-token is projected to `quantizer_attention_dim`, gets
    the GoldenGate 2-D RoPE of its patch on queries and keys, and is projected back.
    """

    def __init__(self, config: ViQConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.num_heads = config.codes_per_patch
        self.head_dim = config.quantizer_attention_dim
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = 0.0
        self.is_causal = False
        self.num_key_value_groups = 1
        self.down_proj = nn.Linear(hidden, self.head_dim)
        self.qkv_proj = nn.Linear(self.head_dim, 3 * self.head_dim)
        self.out_proj = nn.Linear(self.head_dim, self.head_dim)
        self.up_proj = nn.Linear(self.head_dim, hidden)

    def project_qkv(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]):
        """
        `(codes_per_patch * total_patches, hidden)`, sub-token `j` of patch `n` at `n*4 + j` -> query, key, value, each
        `(total_patches, heads, head_dim)`, with the RoPE of the patch on query and key (rotated in one pass).
        """
        num_patches = hidden_states.shape[0] // self.num_heads
        qkv = self.qkv_proj(self.down_proj(hidden_states)).view(num_patches, self.num_heads, 3, self.head_dim)
        # query and key as one (2, patches, heads, head_dim) operand: one pass, and each comes out contiguous
        query, key = apply_rotary(qkv[:, :, :2].movedim(2, 0), *position_embeddings).unbind(0)
        return query, key, qkv[:, :, 2]

    def project_out(self, attn_output: torch.Tensor) -> torch.Tensor:
        """`(total_patches, heads, head_dim)` -> `(heads * total_patches, hidden)` (sub-token order `n*4 + j`)."""
        return self.up_proj(self.out_proj(attn_output.reshape(-1, self.head_dim)))

    def forward(self, hidden_states: torch.Tensor, packed: PackedSequence, position_embeddings=None) -> torch.Tensor:
        """`hidden_states`: `(codes_per_patch * total_patches, hidden)`, sub-token `j` of patch `n` at `n*4 + j`;
        `position_embeddings`: the rotary `(cos, sin)` of [`ViQGoldenGateRotaryEmbedding`]."""
        query, key, value = self.project_qkv(hidden_states, position_embeddings)
        return self.project_out(packed_attention(self, query, key, value, packed)[0])


class ViQFusionBlock(nn.Module):
    """
    From the trunk's raw last-block output to the quantizer's sub-tokens: affine-free LayerNorm (eps 1e-5),
    `fusion_num_layers` blocks, then an MLP expanding each patch into `codes_per_patch` sub-tokens (channel group `j`
    of the expanded vector is sub-token `j`) and an MLP applied to each sub-token.
    """

    def __init__(self, config: ViQConfig):
        super().__init__()
        vision = config.vision_config
        hidden, expanded = vision.hidden_size, config.codes_per_patch * vision.hidden_size
        self.codes_per_patch = config.codes_per_patch
        self.pre_layernorm = nn.LayerNorm(hidden, eps=config.fusion_layer_norm_eps, elementwise_affine=False)
        self.layers = nn.ModuleList(
            [ViQEncoderLayer(vision, ViQAttention(vision, config)) for _ in range(config.fusion_num_layers)]
        )
        self.expand = ViQMLP(hidden, expanded, expanded, vision.hidden_act)
        self.expand_post = ViQMLP(hidden, hidden, hidden, vision.hidden_act)

    def forward(self, hidden_states: torch.Tensor, packed: PackedSequence) -> torch.Tensor:
        """`(total_patches, hidden)` -> `(codes_per_patch * total_patches, hidden)`."""
        hidden_states = self.pre_layernorm(hidden_states)
        for layer in self.layers:
            hidden_states = layer(hidden_states, packed)
        hidden_states = self.expand(hidden_states)
        hidden_states = hidden_states.reshape(-1, hidden_states.shape[-1] // self.codes_per_patch)
        return self.expand_post(hidden_states)


class ViQQuantizer(nn.Module):
    """
    Headless RoPE blocks, projection to the FSQ dimensions and FSQ. In a Stage 2-1 model (`quantizer="proximal"`) the
    projection goes to the `bottleneck_dim`-wide bottleneck and `fsq` is the proximal constraint (no indices).
    """

    _compiled_quantize: Callable | None = None  # set by `ViQModel.compile_blocks`

    def __init__(self, config: ViQConfig):
        super().__init__()
        self.rotary_emb = ViQGoldenGateRotaryEmbedding(
            head_dim=config.quantizer_attention_dim,
            num_heads=config.codes_per_patch,
            min_freq=config.rope_min_freq,
            max_freq=config.rope_max_freq,
            zero_freq_ratio=config.rope_zero_freq_ratio,
        )
        self.layers = nn.ModuleList(
            [
                ViQEncoderLayer(config.vision_config, ViQHeadlessAttention(config))
                for _ in range(config.quantizer_num_layers)
            ]
        )
        self.project_in = nn.Linear(config.hidden_size, config.quantizer_dim)
        if config.quantizer == "proximal":
            self.fsq = ProximalProjection(config.proximal)
        else:
            self.fsq = FiniteScalarQuantizer(config.fsq_levels, eps=config.fsq_bound_eps)

    def forward(self, hidden_states: torch.Tensor, grid_hw: list[tuple[int, int]], packed: PackedSequence):
        """Sub-tokens `(4 * total_patches, hidden)` -> `(pre-quantization values, codes, indices)`."""
        if len(self.layers) > 0:
            rotary = self.rotary_emb(grid_hw, dtype=hidden_states.dtype, device=hidden_states.device)
            for layer in self.layers:
                hidden_states = layer(hidden_states, packed, position_embeddings=rotary)
        if self._compiled_quantize is None:
            return self.quantize(hidden_states)
        _mark_sequence_dynamic(hidden_states)
        return self._compiled_quantize(self, hidden_states)

    def quantize(self, hidden_states: torch.Tensor):
        """`project_in` (in the model dtype) and FSQ (in float32): `(values, codes, indices)`."""
        values = self.project_in(hidden_states)
        codes, indices = self.fsq(values)
        return values, codes, indices


class ViQResidualMLP(nn.Module):
    """`x + mlp(layer_norm(x))` (LayerNorm with PyTorch's default eps 1e-5 in the released model)."""

    def __init__(self, hidden_size: int, intermediate_size: int, eps: float, hidden_act: str):
        super().__init__()
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = ViQMLP(hidden_size, intermediate_size, hidden_size, hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.mlp(self.layer_norm(hidden_states))


class ViQCodeEmbedder(nn.Module):
    """
    Codes -> LLM-ready features, one vector per patch: implicit-codebook values -> `project_out` (per sub-token) ->
    concatenation of a patch's sub-tokens -> merge MLP -> MLP -> residual MLPs -> per-channel affine.
    """

    def __init__(self, config: ViQConfig):
        super().__init__()
        vision = config.vision_config
        hidden, expanded = vision.hidden_size, config.codes_per_patch * vision.hidden_size
        residual_width = config.embedder_residual_intermediate_size or 2 * hidden
        self.codes_per_patch = config.codes_per_patch
        self.project_out = nn.Linear(config.quantizer_dim, hidden)
        self.merge = ViQMLP(expanded, expanded, hidden, vision.hidden_act)
        self.mlp = ViQMLP(hidden, hidden, hidden, vision.hidden_act)
        self.residual_layers = nn.ModuleList(
            [
                ViQResidualMLP(hidden, residual_width, config.fusion_layer_norm_eps, vision.hidden_act)
                for _ in range(config.embedder_num_residual_layers)
            ]
        )
        self.affine_weight = nn.Parameter(torch.ones(hidden))
        self.affine_bias = nn.Parameter(torch.zeros(hidden))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """`codes`: float `(4 * total_patches, len(levels))` in `[-1, 1]` -> `(total_patches, hidden)`."""
        # The codes are cast to the weights' dtype first (bf16 rounds the thirds of a 6-level dimension, as released).
        hidden_states = self.project_out(codes.to(self.project_out.weight.dtype))
        hidden_states = hidden_states.reshape(-1, hidden_states.shape[-1] * self.codes_per_patch)
        hidden_states = self.mlp(self.merge(hidden_states))
        for layer in self.residual_layers:
            hidden_states = layer(hidden_states)
        return hidden_states * self.affine_weight + self.affine_bias


class ViQPoolingHead(nn.Module):
    """Multi-head attention pooling with one learned query (SigLIP's MAP head), then a residual MLP; one token out."""

    def __init__(self, config: ViQVisionConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = hidden // self.num_heads
        self.probe = nn.Parameter(torch.zeros(1, 1, hidden))
        self.q_proj = nn.Linear(hidden, hidden)
        self.kv_proj = nn.Linear(hidden, 2 * hidden)
        self.out_proj = nn.Linear(hidden, hidden)
        self.layernorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.mlp = ViQMLP(hidden, config.intermediate_size, hidden, config.hidden_act)

    def forward(self, hidden_states: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """`hidden_states`: `(total_patches, hidden)` (already layer-normed) -> `(num_images, hidden)`."""
        hidden = hidden_states.shape[-1]
        query = self.q_proj(self.probe.reshape(1, hidden)).view(1, self.num_heads, 1, self.head_dim)
        kv = self.kv_proj(hidden_states).view(-1, 2, self.num_heads, self.head_dim).permute(1, 2, 0, 3)
        pooled = []
        for key_value in kv.split(lengths, dim=2):  # (2, heads, n_i, head_dim)
            key, value = key_value[0].unsqueeze(0), key_value[1].unsqueeze(0)
            pooled.append(F.scaled_dot_product_attention(query, key, value).reshape(1, hidden))
        pooled = self.out_proj(torch.cat(pooled, dim=0))
        return pooled + self.mlp(self.layernorm(pooled))


class ViQLatentHead(nn.Module):
    """
    Features -> Qwen-Image VAE latents: MLP -> LayerNorm -> `latent_num_layers` blocks (per image) -> GroupNorm ->
    SiLU -> 3x3 conv to `4 * latent_channels` -> pixel shuffle x2, giving `(latent_channels, 2h, 2w)` per image in the
    raw (un-normalised) latent space of the VAE.
    """

    def __init__(self, config: ViQConfig):
        super().__init__()
        vision = config.vision_config
        hidden = vision.hidden_size
        self.mlp = ViQMLP(hidden, hidden, hidden, vision.hidden_act)
        self.layer_norm = nn.LayerNorm(hidden, eps=vision.layer_norm_eps)
        self.layers = nn.ModuleList(
            [ViQEncoderLayer(vision, ViQAttention(vision, config)) for _ in range(config.latent_num_layers)]
        )
        self.norm_out = nn.GroupNorm(config.latent_norm_groups, hidden, eps=1e-6)
        self.conv_out = nn.Conv2d(hidden, 4 * config.latent_channels, kernel_size=3, padding=1)

    def preprocess(self, features: torch.Tensor, packed: PackedSequence) -> torch.Tensor:
        """MLP, LayerNorm and the blocks (the released model's "VAE preprocess layers"): `(total_patches, hidden)`."""
        hidden_states = self.layer_norm(self.mlp(features))
        for layer in self.layers:
            hidden_states = layer(hidden_states, packed)
        return hidden_states

    def forward(self, features: torch.Tensor, grid_hw: list[tuple[int, int]], packed: PackedSequence):
        return self.to_latents(self.preprocess(features, packed), grid_hw, packed)

    def to_latents(self, hidden_states: torch.Tensor, grid_hw: list[tuple[int, int]], packed: PackedSequence):
        """Preprocessed states -> one `(latent_channels, 2h, 2w)` latent per image."""
        latents = []
        for states, (h, w) in zip(hidden_states.split(packed.lengths, dim=0), grid_hw):
            grid = states.reshape(1, h, w, -1).permute(0, 3, 1, 2)
            grid = self.conv_out(F.silu(self.norm_out(grid)))
            latents.append(F.pixel_shuffle(grid, 2)[0])
        return latents


def build_qwen_image_vae(vae_config: dict):
    """diffusers' `AutoencoderKLQwenImage` (imported lazily: diffusers takes seconds to import), with its per-call
    feature caches kept per thread ([`ViQQwenImageVAE`])."""
    return with_single_frame_convolutions(_qwen_image_vae_class()(**vae_config))


# diffusers' Qwen-Image VAE keeps the causal convolutions' feature caches of a decode (or encode) call on the instance:
# `clear_cache()` sets `_feat_map` / `_conv_idx` (`_enc_*` for encoding), the decoder fills and reads them, and a
# second thread decoding at the same time replaces them under the first (tensors of another image's size: "Sizes of
# tensors must match"). In `ViQQwenImageVAE` these attributes are per thread, so one model decodes in many threads at
# once without a lock; weights, names and results are those of `AutoencoderKLQwenImage`.
_VAE_PER_CALL_ATTRIBUTES = ("_feat_map", "_conv_idx", "_enc_feat_map", "_enc_conv_idx")
_vae_thread_state = threading.local()


def _per_thread_attribute(name: str) -> property:
    def state(vae) -> dict:
        per_vae = _vae_thread_state.__dict__.setdefault("per_vae", {})  # this thread's own dict: no race
        return per_vae.setdefault(id(vae), {})

    def get(vae):
        try:
            return state(vae)[name]
        except KeyError:
            raise AttributeError(name) from None

    def set_(vae, value):
        state(vae)[name] = value

    return property(get, set_, doc=f"`{name}` of this thread's decode or encode call.")


@functools.cache
def _qwen_image_vae_class() -> type:
    try:  # (in a try block, transformers' remote-code loader does not require diffusers of a model without decoder)
        from diffusers import AutoencoderKLQwenImage
    except ImportError as error:
        raise ImportError(
            "The ViQ decoder (latent head + Qwen-Image VAE) needs diffusers: pip install 'diffusers>=0.42,<0.43' "
            "(a dependency of transformers-viq), or load the model with include_decoder=False."
        ) from error

    attributes = {name: _per_thread_attribute(name) for name in _VAE_PER_CALL_ATTRIBUTES}
    attributes["__module__"], attributes["__qualname__"] = __name__, "ViQQwenImageVAE"
    attributes["__doc__"] = "`AutoencoderKLQwenImage` whose per-call feature caches are kept per thread."
    return type("ViQQwenImageVAE", (AutoencoderKLQwenImage,), attributes)


def __getattr__(name: str):
    # `ViQQwenImageVAE` is made on first use (diffusers is imported then); pickle finds it here by name
    if name == "ViQQwenImageVAE":
        return _qwen_image_vae_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def with_single_frame_convolutions(vae):
    """Give a diffusers `AutoencoderKLQwenImage` (in place, and return it) the fast path of its causal 3-D
    convolutions for still images (see `_single_frame_causal_conv3d`): same parameters and state dict."""
    single_frame = _single_frame_causal_conv3d()
    for module in vae.modules():
        if type(module) is single_frame.__base__:
            module.__class__ = single_frame
    return vae


@functools.cache
def _single_frame_causal_conv3d():
    """
    diffusers' `QwenImageCausalConv3d` with a fast path for one frame. A still image is a video of one frame: with
    nothing cached before it, the causal padding fills the first `kernel_t - 1` temporal taps with zeros, so the 3-D
    convolution equals a 2-D one with the kernel's last temporal tap (the same sums, in another order; gradients
    reach the same weights). On the CPU, torch runs small 3-D convolutions with a slow generic kernel and 2-D ones
    with oneDNN: decoding a 512x512 image takes a quarter of the time.
    """
    from diffusers.models.autoencoders.autoencoder_kl_qwenimage import QwenImageCausalConv3d

    class SingleFrameCausalConv3d(QwenImageCausalConv3d):
        def forward(self, x, cache_x=None):
            causal_padding = self._padding[4] == self.kernel_size[0] - 1
            if x.shape[2] == 1 and cache_x is None and causal_padding and self.stride[0] == self.dilation[0] == 1:
                frame = F.pad(x[:, :, 0], self._padding[:4])  # (left, right, top, bottom)
                out = F.conv2d(frame, self.weight[:, :, -1], self.bias, self.stride[1:], 0, self.dilation[1:],
                               self.groups)  # fmt: skip
                return out.unsqueeze(2)
            return super().forward(x, cache_x)

    return SingleFrameCausalConv3d


# ----------------------------------------------------------------------------------------------------------------
# Pre-trained model
# ----------------------------------------------------------------------------------------------------------------
class ModelLoaderHook:
    """
    `from_pretrained` (mixed into the ViQ models) through the loader that the `transformers_viq` package installs as
    `checkpoint_loader` when it is imported (`transformers_viq.original_checkpoint.OriginalCheckpointLoader`).

    The loader reads checkpoints that are not in Hugging Face format (`viq_size=` for a ViQ tokenizer and
    `stage1_encoder=` for a Stage-1 encoder in the authors' published layout), says "no folder NAME" for a mistyped
    local path before any Hub request, and names the folder whose weights file is damaged. The model files import
    nothing of it: a copy of them pushed with a model (`trust_remote_code=True`) has no loader and loads Hugging Face
    folders with transformers' own `from_pretrained`.
    """

    checkpoint_loader = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        from_pretrained = super().from_pretrained
        if cls.checkpoint_loader is None:
            return from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return cls.checkpoint_loader.from_pretrained(
            cls, from_pretrained, pretrained_model_name_or_path, *model_args, **kwargs
        )


REFERENCE_INIT_WIDTH = 1536  # the released trunk's width, where `initializer_range` is the released std


def width_scaled_std(initializer_range: float, fan_in: int) -> float:
    """
    Standard deviation of a fresh linear layer with `fan_in` inputs: `initializer_range * sqrt(1536 / fan_in)`.

    The released code draws every linear weight with std 0.02 at width 1536, where a layer passes on about 0.8 of its
    input's scale (`0.02 * sqrt(1536)`). The same 0.02 at width 32 passes on 0.11 of it, and the six linear layers
    between the fusion block's LayerNorm and the FSQ input then leave values of ~1e-3 that FSQ maps to one code (and
    the pooled embedding a ~1e-4 vector whose cosine loss has huge gradients). Scaling by `sqrt(1536 / fan_in)` keeps
    the released per-layer gain at every width and gives exactly 0.02 at fan-in 1536.
    """
    return initializer_range * (REFERENCE_INIT_WIDTH / fan_in) ** 0.5


class ViQVisionTransformer(ModelLoaderHook, PreTrainedModel):
    """
    The vision transformer of ViQ, shared by the tokenizer ([`ViQModel`]) and the Stage-1 encoder
    ([`ViQVisionModel`]): patch and position embeddings (`embeddings`), the trunk blocks (`encoder`), the final
    LayerNorm (`post_layernorm`) and the attention-pooling head (`head`), which each subclass builds at its top level
    (so a Stage-1 checkpoint initialises a tokenizer key for key), and how they run: the packed layout and its
    attention kernel, the trunk forward with optional hidden states and attention probabilities, pooling, the
    weight initialisation and the opt-in compiled blocks.
    """

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _input_embed_layer = "patch_embedding"  # `get_input_embeddings()`: `embeddings.patch_embedding`
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False
    _supports_attention_backend = True

    @property
    def trunk_config(self) -> ViQVisionConfig:
        """The configuration of the trunk (`config.vision_config` of a tokenizer, the config of a Stage-1 encoder)."""
        raise NotImplementedError

    def _initializer_range(self) -> float:
        """Std of fresh weights: 0.02, SigLIP2's (a [`ViQVisionConfig`] has no `initializer_range`)."""
        return 0.02

    def _init_weights(self, module):
        std = self._initializer_range()
        if isinstance(module, ViQVisionEmbeddings):
            init.trunc_normal_(module.patch_embedding.weight, std=std)
            init.zeros_(module.patch_embedding.bias)
            init.trunc_normal_(module.position_embedding.weight, std=std)
        elif isinstance(module, ViQPoolingHead):
            init.trunc_normal_(module.probe, std=std)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=width_scaled_std(std, module.in_features))
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    @classmethod
    def expected_state_shapes(cls, config) -> dict[str, torch.Size]:
        """`{key: shape}` of a model built from `config` (built on the meta device: no memory, no init)."""
        with torch.device("meta"):
            model = cls._from_config(config)
        return {name: tensor.shape for name, tensor in model.state_dict().items()}

    # ---- the packed layout ------------------------------------------------------------------------------------
    def _attention_head_dim(self) -> int:
        """The widest attention head of the model (what the varlen kernels must support)."""
        trunk = self.trunk_config
        return trunk.hidden_size // trunk.num_attention_heads

    def _packed(self, grid_hw: list[tuple[int, int]], device) -> PackedSequence:
        """The packed layout of images of grids `grid_hw`, with the kernel the `attn_implementation` runs."""
        device = torch.device(device)
        dtype = self.embeddings.patch_embedding.weight.dtype
        implementation = self.config._attn_implementation
        kernel, note, warn = resolve_packed_kernel(implementation, device, dtype, self._attention_head_dim())
        if note is not None:
            (logger.warning_once if warn else logger.info_once)(note)
        return PackedSequence.from_lengths([h * w for h, w in grid_hw], device, kernel=kernel)

    def _refuse_packed_attention(self, value) -> None:
        raise AttributeError(
            f"`packed_attention` is not a setting of ViQ models (got {value!r}): the packed kernels are attention "
            "implementations. Use `model.set_attn_implementation(name)` (or `from_pretrained(..., "
            f"attn_implementation=name)`) with {', '.join(repr(k) for k in PACKED_KERNELS)}, or 'sdpa' (the "
            "default), which picks the fastest that runs."
        )

    # Setting it fails loudly rather than adding an attribute nothing reads (reading it is a plain missing attribute).
    packed_attention = property(None, _refuse_packed_attention)

    # ---- running the trunk ------------------------------------------------------------------------------------
    def _check_inputs(self, pixel_values, image_grid_hw, check_values: bool) -> list[tuple[int, int]]:
        """The grid as a list of `(h, w)`, after checking the shapes of the inputs (and their values if asked: that
        reads them on the host, which a device tensor pays for with a synchronisation)."""
        grid_hw = check_grid(image_grid_hw)
        check_pixels(pixel_values, grid_hw, self.embeddings.patch_dim, check_values=check_values)
        return grid_hw

    def trunk(
        self,
        pixel_values: torch.Tensor,
        grid_hw: list[tuple[int, int]],
        packed: PackedSequence,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        """Packed patches -> `(last_hidden_state, all_hidden_states, all_attentions)` of the trunk blocks (see
        [`ViQVisionEncoder`]); host inputs travel to the device without a synchronisation."""
        pixel_values = _host_to_device(pixel_values, self.embeddings.patch_embedding.weight.device)
        return self.encoder(self.embeddings(pixel_values, grid_hw), packed, output_hidden_states, output_attentions)

    def pool(self, features: torch.Tensor, grid_hw: list[tuple[int, int]]) -> torch.Tensor:
        """Attention-pooled embedding of each image from its features: `(num_images, hidden)`."""
        return self.head(self.post_layernorm(features), [h * w for h, w in grid_hw])

    # ---- kernels ----------------------------------------------------------------------------------------------
    def compile_blocks(self, enabled: bool = True, **compile_kwargs):
        r"""
        Opt-in regional `torch.compile` of the element-wise and dense work between attention kernels.

        Each transformer block (trunk, fusion, quantizer and latent-head blocks) runs as two regions around its
        attention kernel: LayerNorm + qkv projection (+ the quantizer's RoPE), and output projection + residual +
        LayerNorm + MLP + residual; the quantizer's `project_in` + FSQ is a third. These regions are compiled, which
        fuses LayerNorms, residual additions, GELU, RoPE and FSQ into few kernels, while attention keeps the kernel of
        the model's `attn_implementation` (so every kernel works compiled, including the per-image loop). All blocks
        of the model share one compiled function per region, and the graphs take the sequence length as a symbol (its
        dimension is marked dynamic, every width stays static): a workload of mixed image sizes compiles each region
        once per block kind and dtype (5 graphs for a tokenizer), not once per size; a one-patch image (16x16) adds
        one more set, as torch specialises sizes 0 and 1. The compiled functions belong to this model (calling this
        again with the same options reuses them); nothing is shared through module-level state.

        Args:
            enabled (`bool`, *optional*, defaults to `True`):
                `False` goes back to eager execution.
            compile_kwargs:
                Passed to `torch.compile` (default `fullgraph=True`). E.g.
                `mode="max-autotune-no-cudagraphs"`, or `backend="aot_eager"` to trace without generating code.

        Returns:
            The model itself.

        Numerics: compiled kernels round differently (bf16 element-wise chains computed in fp32, fused multiply-adds),
        so codes can differ from eager ones at rounding boundaries; the reference numerics are those of eager mode.
        """
        options = {"fullgraph": True, **compile_kwargs}
        key = repr(sorted(options.items()))
        compiled = self.__dict__.setdefault("_compiled_functions", {}).setdefault(key, {})

        def shared(function: Callable) -> Callable:
            if function not in compiled:
                compiled[function] = torch.compile(function, **options)
            return compiled[function]

        for module in self.modules():
            if isinstance(module, ViQEncoderLayer):
                module._compiled_regions = (
                    (shared(ViQEncoderLayer.attention_inputs), shared(ViQEncoderLayer.attention_outputs))
                    if enabled
                    else None
                )
            elif isinstance(module, ViQQuantizer):
                module._compiled_quantize = shared(ViQQuantizer.quantize) if enabled else None
        return self


class ViQPreTrainedModel(ViQVisionTransformer):
    config: ViQConfig
    config_class = ViQConfig
    base_model_prefix = "viq"
    _no_split_modules = ["ViQVisionEmbeddings", "ViQEncoderLayer", "ViQPoolingHead"]

    @property
    def trunk_config(self) -> ViQVisionConfig:
        return self.config.vision_config

    def _initializer_range(self) -> float:
        return self.config.initializer_range

    def _attention_head_dim(self) -> int:
        return max(super()._attention_head_dim(), self.config.quantizer_attention_dim)

    def _init_weights(self, module):
        if isinstance(module, FiniteScalarQuantizer):
            init.copy_(module.levels, torch.tensor(module.level_list, dtype=torch.int64))
            init.copy_(module.basis, module._basis(module.level_list))
            init.copy_(module.codebook, implicit_codebook(module.level_list))
        elif isinstance(module, ViQCodeEmbedder):
            init.ones_(module.affine_weight)
            init.zeros_(module.affine_bias)
        elif type(module).__name__ == "QwenImageRMS_norm":
            init.ones_(module.gamma)
            if isinstance(module.bias, nn.Parameter):
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class ViQModel(ViQPreTrainedModel):
    r"""
    The ViQ visual tokenizer: images (packed patches) -> discrete codes, codes -> LLM-ready features, latents and
    pixels.

    Example:

    ```python
    >>> import transformers_viq
    >>> from transformers_viq import ViQModel, ViQImageProcessor
    >>> model = ViQModel.from_pretrained("XuminYu/ViQ_weights", viq_size="16k")  # the authors' published layout
    >>> inputs = ViQImageProcessor()(images=[image_a, image_b], return_tensors="pt")
    >>> out = model.encode(**inputs)
    >>> out.image_codes.shape, out.image_grid_hw, out.pooler_output.shape
    ```
    """

    def __init__(self, config: ViQConfig):
        super().__init__(config)
        vision = config.vision_config
        self.embeddings = ViQVisionEmbeddings(vision)
        self.encoder = ViQVisionEncoder(vision, config)
        self.fusion = ViQFusionBlock(config)
        self.quantizer = ViQQuantizer(config)
        self.code_embedder = ViQCodeEmbedder(config)
        self.post_layernorm = nn.LayerNorm(vision.hidden_size, eps=vision.layer_norm_eps)
        self.head = ViQPoolingHead(vision)
        # reconstruction only; left out with `include_decoder=False`
        self.latent_head = ViQLatentHead(config) if config.include_decoder else None
        self.vae = build_qwen_image_vae(config.vae_config) if config.include_decoder else None
        self.post_init()


    # ---- input checks -------------------------------------------------------------------------------------------
    def check_codes(
        self, image_codes, image_grid_hw, check_values: bool = True
    ) -> tuple[torch.LongTensor, list[tuple[int, int]]]:
        """
        Validate packed codes against their grids and this model's codebook (see `validation_viq.check_codes`);
        `check_values=False` checks dtype and shapes only (no range check, so no read of the values on the host).

        Returns the codes as an int64 tensor and the grid as a list of `(h, w)`.
        """
        self._check_has_codes()
        grid_hw = check_grid(image_grid_hw)
        codes = check_codes(image_codes, grid_hw, self.config.codes_per_patch, self.config.codebook_size,
                            check_values=check_values)  # fmt: skip
        return codes, grid_hw

    def _check_has_codes(self) -> None:
        if self.config.quantizer != "fsq":
            raise ValueError(
                f"This ViQ model has the Stage 2-1 bottleneck (quantizer={self.config.quantizer!r}, "
                f"proximal={self.config.proximal!r}) instead of FSQ: it makes continuous features, not codes. Use "
                "`model(pixel_values, image_grid_hw)` for its features and pooled embedding, or train Stage 2-2."
            )

    # ---- the pieces ---------------------------------------------------------------------------------------------
    def _encode(
        self,
        pixel_values,
        grid_hw,
        return_pooler_output: bool,
        return_features: bool,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        device = self.embeddings.patch_embedding.weight.device
        packed = self._packed(grid_hw, device)
        # host inputs travel without a synchronisation (as do the segment offsets and the RoPE tables)
        hidden_states, all_hidden_states, all_attentions = self.trunk(
            pixel_values, grid_hw, packed, output_hidden_states, output_attentions
        )
        values, codes, indices = self.quantizer(self.fusion(hidden_states, packed), grid_hw, packed)
        features = self.code_embedder(codes) if (return_features or return_pooler_output) else None
        return ViQEncoderOutput(
            image_codes=indices,
            image_grid_hw=_host_to_device(torch.tensor(grid_hw, dtype=torch.long), device),
            pooler_output=self.pool(features, grid_hw) if return_pooler_output else None,
            last_hidden_state=features,
            quantizer_inputs=values,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        image_grid_hw: torch.LongTensor,
        return_pooler_output: bool = True,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> ViQEncoderOutput | tuple:
        r"""
        Encode packed images to codes, quantized features and the pooled embedding (differentiable: the quantizer
        passes gradients straight through). This is the training forward: it checks the shapes of its inputs but not
        their values (no NaN or range check, which would read device tensors on the host every step); `encode`, the
        processor and the collators check values where data enters.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(sum_i h_i * w_i, num_channels * patch_size**2)`):
                Packed patches from [`ViQImageProcessor`].
            image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`):
                Patch grid of each image.
            return_pooler_output (`bool`, *optional*, defaults to `True`):
                Whether to run the attention-pooling head.
            output_hidden_states (`bool`, *optional*):
                Also return the embeddings and every trunk block's output (default: `config.output_hidden_states`).
            output_attentions (`bool`, *optional*):
                Also return every trunk block's attention probabilities (default: `config.output_attentions`; only
                `eager` computes them, other implementations give `None` entries, as in transformers).
            return_dict (`bool`, *optional*):
                `False` returns a tuple of the output's fields that are set (default: `config.return_dict`).

        Returns:
            [`ViQEncoderOutput`] with `image_codes`, `image_grid_hw`, `last_hidden_state` (the features),
            `quantizer_inputs` and, if asked, `pooler_output`, `hidden_states` and `attentions`.
        """
        config = self.config
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        grid_hw = self._check_inputs(pixel_values, image_grid_hw, check_values=False)
        output = self._encode(pixel_values, grid_hw, return_pooler_output, True, output_hidden_states,
                              output_attentions)  # fmt: skip
        return_dict = config.return_dict if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def encode(
        self, pixel_values: torch.FloatTensor, image_grid_hw: torch.LongTensor, return_pooler_output: bool = True
    ) -> ViQEncoderOutput:
        r"""
        Images -> discrete codes (no gradient).

        Args:
            pixel_values (`torch.FloatTensor` of shape `(sum_i h_i * w_i, num_channels * patch_size**2)`):
                Packed patches from [`ViQImageProcessor`].
            image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`):
                Patch grid of each image.
            return_pooler_output (`bool`, *optional*, defaults to `True`):
                Whether to compute the features and the attention-pooled embedding as well.

        Returns:
            [`ViQEncoderOutput`] with `image_codes` `(sum_i 4*h_i*w_i,)` long, `image_grid_hw` and, if asked,
            `pooler_output` `(num_images, hidden)` and `last_hidden_state` (the features) `(sum_i h_i*w_i, hidden)`.
        """
        self._check_has_codes()
        grid_hw = self._check_inputs(pixel_values, image_grid_hw, check_values=True)
        out = self._encode(pixel_values, grid_hw, return_pooler_output, return_features=False)
        out.quantizer_inputs = None
        return out

    def _embed(self, image_codes: torch.Tensor) -> torch.Tensor:
        device = self.code_embedder.project_out.weight.device
        return self.code_embedder(self.quantizer.fsq.indices_to_codes(image_codes.to(device)))

    def embed_codes(self, image_codes: torch.LongTensor, image_grid_hw: torch.LongTensor) -> torch.FloatTensor:
        r"""
        Codes -> LLM-ready features (the trunk never runs).

        Args:
            image_codes (`torch.LongTensor` of shape `(sum_i 4 * h_i * w_i,)`):
                Packed codes (any integer dtype, e.g. the `uint16` of a codes file; a NumPy array or list works too).
            image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`): patch grid of each image.

        Returns:
            `torch.FloatTensor` of shape `(sum_i h_i * w_i, hidden_size)`.
        """
        image_codes, _ = self.check_codes(image_codes, image_grid_hw)
        return self._embed(image_codes)

    def codes_to_features(self, image_codes: torch.LongTensor, image_grid_hw: torch.LongTensor) -> torch.FloatTensor:
        r"""
        Codes -> LLM-ready features inside a training forward (what the VLM calls on every step): like
        [`~ViQModel.embed_codes`], but the codes' dtype and count are checked against the grids and their values are
        not (a range check reads device tensors on the host). Codes that come from outside go through a checked
        boundary first: the processor, a codes file, a collator or `embed_codes`.

        Args:
            image_codes (`torch.LongTensor` of shape `(sum_i 4 * h_i * w_i,)`): packed codes (any integer dtype).
            image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`): patch grid of each image.

        Returns:
            `torch.FloatTensor` of shape `(sum_i h_i * w_i, hidden_size)`.
        """
        image_codes, _ = self.check_codes(image_codes, image_grid_hw, check_values=False)
        return self._embed(image_codes)

    def decode_latents(
        self, image_codes: torch.LongTensor, image_grid_hw: torch.LongTensor
    ) -> list[torch.FloatTensor]:
        r"""
        Codes -> Qwen-Image VAE latents (raw latent space, no mean/std de-normalisation).

        Returns:
            `list[torch.FloatTensor]`, one `(latent_channels, 2 * h_i, 2 * w_i)` tensor per image.
        """
        if self.latent_head is None:
            raise ValueError(
                "This ViQ model was built without its decoder (config.include_decoder=False): it can encode and embed "
                "codes but not decode them. Load the tokenizer itself (e.g. ViQModel.from_pretrained(...)) to decode."
            )
        image_codes, grid_hw = self.check_codes(image_codes, image_grid_hw)
        features = self._embed(image_codes)
        return self.latent_head(features, grid_hw, self._packed(grid_hw, features.device))

    def predict_latents(
        self, features: torch.Tensor, image_grid_hw: torch.LongTensor, return_hidden_states: bool = False
    ):
        r"""
        Features -> Qwen-Image VAE latents through the latent head (differentiable; what training regresses onto the
        VAE encoder's posterior mean, and what decoder fine-tuning trains).

        Args:
            features (`torch.FloatTensor` of shape `(sum_i h_i * w_i, hidden_size)`):
                Features of packed images (`last_hidden_state` of [`~ViQModel.forward`], or `embed_codes`).
            image_grid_hw (`torch.LongTensor` of shape `(num_images, 2)`): patch grid of each image.
            return_hidden_states (`bool`, *optional*, defaults to `False`):
                Also return the output of the latent head's preprocess layers `(sum_i h_i * w_i, hidden_size)` (where
                the paper's REPA loss aligns DINOv2 features).

        Returns:
            `list[torch.FloatTensor]`, one `(latent_channels, 2 * h_i, 2 * w_i)` latent per image (and the hidden
            states if asked).
        """
        if self.latent_head is None:
            raise ValueError("This ViQ model was built without its decoder (config.include_decoder=False).")
        grid_hw = check_grid(image_grid_hw)
        packed = self._packed(grid_hw, features.device)
        hidden_states = self.latent_head.preprocess(features, packed)
        latents = self.latent_head.to_latents(hidden_states, grid_hw, packed)
        return (latents, hidden_states) if return_hidden_states else latents

    @torch.no_grad()
    def decode(self, image_codes: torch.LongTensor, image_grid_hw: torch.LongTensor) -> list[torch.FloatTensor]:
        r"""
        Codes -> pixels through the latent head and the Qwen-Image VAE decoder.

        Returns:
            `list[torch.FloatTensor]`, one `(3, 16 * h_i, 16 * w_i)` image per image, values in `[-1, 1]` (the padded
            size: padding added by the processor is not cropped).

        In bf16 the pixels differ slightly from the released bf16 pipeline: diffusers >= 0.38 normalises the VAE's
        RMS norms in fp32 where the authors' vendored copy stays in bf16 (fp32 decoding matches to 1/255).
        """
        latents = self.decode_latents(image_codes, image_grid_hw)
        vae_dtype = next(self.vae.parameters()).dtype
        images = []
        for latent in latents:
            decoded = self.vae.decode(latent.to(vae_dtype)[None, :, None], return_dict=False)[0]
            images.append(decoded[0, :, 0])
        return images


__all__ = [
    "PACKED_KERNELS",
    "ViQEncoderOutput",
    "ViQModel",
    "ViQPreTrainedModel",
    "ViQVisionTransformer",
    "resolve_packed_kernel",
]
