"""Block-diagonal attention over packed images: the packed kernels as attention implementations (dispatch and
fallbacks), the semantics of every kernel against a dense reference and the per-image loop, and the opt-in compiled
blocks."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers.utils import logging as hf_logging

from transformers_viq import ViQImageProcessor
from transformers_viq.models.viq import modeling_viq as mv
from transformers_viq.models.viq.modeling_viq import PackedSequence, packed_attention, resolve_packed_kernel


CUDA = torch.device("cuda")
CPU = torch.device("cpu")
LOGGER = "transformers_viq.models.viq.modeling_viq"


def random_images(seed=0, sizes=((48, 80), (32, 32), (64, 16))):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]


def pack(images):
    return ViQImageProcessor(do_resize=False)(images=images, return_tensors="pt")


class Attention(torch.nn.Module):
    """The attributes `packed_attention` reads from an attention module."""

    def __init__(self, head_dim, implementation="sdpa"):
        super().__init__()
        self.config = type("Config", (), {"_attn_implementation": implementation})()
        self.scaling = head_dim**-0.5
        self.attention_dropout = 0.0
        self.is_causal = False
        self.num_key_value_groups = 1


def dense_reference(query, key, value, lengths, scaling):
    """Block-diagonal, non-causal attention written out with a dense segment mask, in float64."""
    segments = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    allowed = segments[:, None] == segments[None, :]
    q, k, v = (t.double().transpose(0, 1) for t in (query, key, value))  # (heads, L, d)
    scores = (q @ k.transpose(-1, -2)) * scaling
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(0, 1)  # (L, heads, d)


def qkv(lengths, heads=4, head_dim=16, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    # strided views of one projection, as the model passes them
    fused = torch.randn(total, 3, heads, head_dim, generator=generator).to(dtype)
    return fused.unbind(1)


@pytest.fixture
def kernels(monkeypatch):
    """Pretend which varlen kernels exist (the cached look-ups are replaced for the test)."""

    def set_available(varlen=None, flash_attn=None):
        monkeypatch.setattr(mv, "_torch_varlen_attn", lambda: varlen)
        monkeypatch.setattr(mv, "_flash_attn_varlen_func", lambda: flash_attn)

    return set_available


def reference_varlen(signature="torch-2.11"):
    """A varlen kernel with the documented contract of `torch.nn.attention.varlen.varlen_attn` ((T, H, D) tensors,
    cumulative offsets, max lengths; torch 2.10 spells non-causal `is_causal=False` and has no `scale`), computed one
    segment at a time with SDPA in the input dtype. It records the arguments it got."""
    calls = []

    def segments(query, key, value, cu_q, cu_k, scale, causal):
        out = torch.empty_like(query)
        bounds = cu_q.tolist()
        assert cu_q.dtype == torch.int32 and bounds == cu_k.tolist()
        for start, end in zip(bounds[:-1], bounds[1:]):
            q, k, v = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (query, key, value))
            out[start:end] = F.scaled_dot_product_attention(q, k, v, scale=scale, is_causal=causal)[0].transpose(0, 1)
        return out

    if signature == "torch-2.10":

        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
            calls.append({"max_q": max_q, "is_causal": is_causal, "shape": tuple(query.shape)})
            return segments(query, key, value, cu_seq_q, cu_seq_k, None, is_causal)

        parameters = frozenset({"is_causal", "return_aux"})
    else:

        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                        window_size=(-1, -1)):  # fmt: skip
            calls.append({"max_q": max_q, "window_size": window_size, "scale": scale, "shape": tuple(query.shape)})
            return segments(query, key, value, cu_seq_q, cu_seq_k, scale, window_size == (-1, 0))

        parameters = frozenset({"return_aux", "scale", "window_size"})
    return (varlen_attn, parameters), calls


def attend(module, query, key, value, packed):
    """The attention output alone (`packed_attention` also returns the probabilities, `None` here)."""
    out, weights = packed_attention(module, query, key, value, packed)
    assert weights is None
    return out


# ---- dispatch --------------------------------------------------------------------------------------------------
def test_sdpa_picks_varlen_then_flash_attn_then_batched_sdpa_on_cuda(kernels):
    varlen, _ = reference_varlen()
    kernels(varlen=varlen, flash_attn=lambda *a, **k: None)
    assert resolve_packed_kernel("sdpa", CUDA, torch.bfloat16, 96) == ("viq_varlen", None, False)
    assert resolve_packed_kernel(None, CUDA, torch.bfloat16, 96) == ("viq_varlen", None, False)  # not set yet
    kernels(varlen=None, flash_attn=lambda *a, **k: None)
    kernel, note, warn = resolve_packed_kernel("sdpa", CUDA, torch.bfloat16, 96)
    assert (kernel, warn) == ("viq_flash_attn", True) and "has no torch.nn.attention.varlen" in note
    kernels(varlen=None, flash_attn=None)
    kernel, note, warn = resolve_packed_kernel("sdpa", CUDA, torch.float16, 256)
    assert (kernel, warn) == ("viq_sdpa", True) and "flash-attn package is not installed" in note


def test_sdpa_on_cpu_and_fp32_cuda_uses_sdpa_kernels_without_warning(kernels):
    varlen, _ = reference_varlen()
    kernels(varlen=varlen, flash_attn=lambda *a, **k: None)
    assert resolve_packed_kernel("sdpa", CPU, torch.bfloat16, 96) == ("viq_per_image", None, False)
    kernel, note, warn = resolve_packed_kernel("sdpa", CUDA, torch.float32, 96)
    assert (kernel, warn) == ("viq_sdpa", False) and "float16 or bfloat16" in note  # not applicable, not missing
    kernel, _, warn = resolve_packed_kernel("sdpa", CUDA, torch.bfloat16, 320)  # head_dim beyond the kernels
    assert (kernel, warn) == ("viq_sdpa", False)


def test_a_kernel_asked_for_falls_back_to_what_sdpa_picks_with_the_reason(kernels):
    varlen, _ = reference_varlen()
    kernels(varlen=None, flash_attn=None)
    kernel, note, warn = resolve_packed_kernel("viq_varlen", CUDA, torch.bfloat16, 96)
    assert (kernel, warn) == ("viq_sdpa", True)
    assert "'viq_varlen' cannot run" in note and f"torch {torch.__version__}" in note
    kernels(varlen=varlen, flash_attn=None)
    assert resolve_packed_kernel("viq_flash_attn", CUDA, torch.bfloat16, 96)[0] == "viq_varlen"
    assert resolve_packed_kernel("viq_varlen", CPU, torch.bfloat16, 96)[0] == "viq_per_image"
    assert resolve_packed_kernel("viq_sdpa", CPU, torch.float32, 96) == ("viq_sdpa", None, False)
    # implementations with their own path have no packed kernel
    assert resolve_packed_kernel("eager", CUDA, torch.bfloat16, 96) == (None, None, False)
    assert resolve_packed_kernel("flash_attention_2", CUDA, torch.bfloat16, 96) == (None, None, False)


def test_the_kernels_are_attention_implementations_and_a_fallback_is_logged_once(tiny_model, caplog):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert all(name in ALL_ATTENTION_FUNCTIONS for name in mv.PACKED_KERNELS)
    inputs = pack(random_images())
    reference = tiny_model.encode(**inputs).image_codes
    tiny_model.set_attn_implementation("viq_varlen")  # cannot run on a CPU
    assert tiny_model.config._attn_implementation == "viq_varlen"
    hf_logging.warning_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        first = tiny_model.encode(**inputs).image_codes
        second = tiny_model.encode(**inputs).image_codes
    messages = [r.getMessage() for r in caplog.records if "packed attention" in r.getMessage()]
    assert messages == ["packed attention 'viq_varlen' cannot run: it needs a CUDA device, the model is on cpu; "
                        "using 'viq_per_image'"]  # fmt: skip
    assert torch.equal(first, reference) and torch.equal(second, reference)


def test_the_old_packed_attention_setting_says_what_replaces_it(tiny_model):
    with pytest.raises(AttributeError, match=r"got 'varlen'.*set_attn_implementation.*'viq_varlen'"):
        tiny_model.packed_attention = "varlen"
    assert not hasattr(tiny_model, "packed_attention")
    assert tiny_model.config._attn_implementation == "sdpa"


def test_the_kernels_refuse_other_models_calls():
    """Registered globally, the kernels serve only callers that pass the packed layout (another model would get
    wrong results from an attention that ignores its mask)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    query = torch.randn(1, 4, 6, 16)
    with pytest.raises(ValueError, match="'viq_sdpa' computes block-diagonal attention .* needs their layout"):
        ALL_ATTENTION_FUNCTIONS["viq_sdpa"](Attention(16), query, query, query, None, scaling=0.25)


# ---- semantics -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lengths", [[15, 4, 9], [6, 6, 6], [11]])
@pytest.mark.parametrize("implementation", ["viq_per_image", "viq_sdpa", "sdpa", "eager"])
def test_kernels_compute_block_diagonal_non_causal_attention(lengths, implementation):
    module = Attention(head_dim=16, implementation=implementation)
    query, key, value = qkv(lengths)
    packed = PackedSequence.from_lengths(lengths, CPU)  # the kernel is resolved on the call
    out = attend(module, query, key, value, packed)
    assert out.shape == query.shape
    expected = dense_reference(query, key, value, lengths, module.scaling)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    # non-causal: the first token of the first image sees the last token of its image
    changed = value.clone()
    changed[lengths[0] - 1] += 1.0
    assert not torch.allclose(attend(module, query, key, changed, packed)[0], out[0])
    # block-diagonal: other images cannot change an image's output at all
    if len(lengths) > 1:
        changed = [t.clone() for t in (query, key, value)]
        for t in changed:
            t[lengths[0] :] = torch.randn_like(t[lengths[0] :])
        again = attend(module, *changed, packed)
        assert torch.equal(again[: lengths[0]], out[: lengths[0]])


@pytest.mark.parametrize("signature", ["torch-2.11", "torch-2.10"])
def test_varlen_path_passes_the_packed_layout_and_matches_the_per_image_loop(kernels, signature):
    varlen, calls = reference_varlen(signature)
    kernels(varlen=varlen)
    lengths = [15, 4, 9]
    module = Attention(head_dim=16)
    query, key, value = qkv(lengths, dtype=torch.bfloat16)
    out = attend(module, query, key, value, PackedSequence.from_lengths(lengths, CPU, kernel="viq_varlen"))
    assert len(calls) == 1 and calls[0]["shape"] == (28, 4, 16) and calls[0]["max_q"] == 15  # one call, no loop
    assert calls[0].get("window_size", (-1, -1)) == (-1, -1) and not calls[0].get("is_causal", False)
    assert calls[0].get("scale", module.scaling) == module.scaling
    loop = attend(module, query, key, value, PackedSequence.from_lengths(lengths, CPU, kernel="viq_per_image"))
    torch.testing.assert_close(out.float(), loop.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out.double(), dense_reference(query, key, value, lengths, module.scaling),
                               rtol=2e-2, atol=2e-2)  # fmt: skip
    # a scale other than 1/sqrt(head_dim) reaches a torch 2.10 kernel through the queries
    module.scaling = 0.05
    scaled = attend(module, query, key, value, PackedSequence.from_lengths(lengths, CPU, kernel="viq_varlen"))
    torch.testing.assert_close(scaled.double(), dense_reference(query, key, value, lengths, 0.05), rtol=2e-2,
                               atol=2e-2)  # fmt: skip


def test_flash_attn_path_passes_the_packed_layout(kernels):
    seen = {}

    def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False):
        seen.update(shape=tuple(q.shape), max_q=max_q, scale=softmax_scale, causal=causal, dropout=dropout_p)
        (varlen_attn, _), _ = reference_varlen()
        return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=softmax_scale)

    kernels(flash_attn=flash_attn_varlen_func)
    lengths = [7, 12]
    module = Attention(head_dim=16)
    query, key, value = qkv(lengths, dtype=torch.float16)
    out = attend(module, query, key, value, PackedSequence.from_lengths(lengths, CPU, kernel="viq_flash_attn"))
    assert seen == {"shape": (19, 4, 16), "max_q": 12, "scale": module.scaling, "causal": False, "dropout": 0.0}
    torch.testing.assert_close(out.double(), dense_reference(query, key, value, lengths, module.scaling),
                               rtol=2e-2, atol=2e-2)  # fmt: skip


def test_varlen_kernels_are_not_given_fp32(kernels):
    """A packed sequence resolved for a bf16 model still runs fp32 tensors (e.g. under a dtype change) correctly."""
    varlen, calls = reference_varlen()
    kernels(varlen=varlen)
    lengths = [5, 8]
    module = Attention(head_dim=16)
    query, key, value = qkv(lengths)
    out = attend(module, query, key, value, PackedSequence.from_lengths(lengths, CPU, kernel="viq_varlen"))
    assert not calls
    torch.testing.assert_close(out.double(), dense_reference(query, key, value, lengths, module.scaling), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_model_codes_do_not_depend_on_the_kernel_or_the_batch(tiny_model, kernels, monkeypatch):
    """Every attention of the model (trunk, fusion, quantizer) through each kernel gives the per-image loop's codes;
    the varlen path with a reference kernel (CPU has no flash attention), made to run by pretending a CUDA device."""
    images = random_images(sizes=((48, 80), (32, 32), (64, 16), (48, 48)))
    inputs = pack(images)
    tiny_model.set_attn_implementation("viq_per_image")
    reference = tiny_model.encode(**inputs)
    tiny_model.set_attn_implementation("viq_sdpa")
    batched = tiny_model.encode(**inputs)
    assert torch.equal(batched.image_codes, reference.image_codes)
    torch.testing.assert_close(batched.pooler_output, reference.pooler_output, rtol=1e-5, atol=1e-6)
    alone = tiny_model.encode(**pack(images[1:2]))  # the batched call does not leak across images
    assert torch.equal(alone.image_codes, reference.image_codes[4 * 15 : 4 * 19])

    varlen, calls = reference_varlen()
    kernels(varlen=varlen)
    real = mv._kernel_unavailable
    monkeypatch.setattr(mv, "_kernel_unavailable", lambda name, device, dtype, head_dim: None
                        if name == "viq_varlen" else real(name, device, dtype, head_dim))  # fmt: skip
    model = tiny_model.to(torch.bfloat16)
    model.set_attn_implementation("viq_per_image")
    loop = model.encode(**inputs)
    model.set_attn_implementation("viq_varlen")
    out = model.encode(**inputs)
    layers = model.config.vision_config.num_hidden_layers + model.config.fusion_num_layers
    assert len(calls) == layers + model.config.quantizer_num_layers  # every attention went through varlen
    assert torch.equal(out.image_codes, loop.image_codes)  # the same per-segment math: the plumbing is exact


# ---- compiled blocks ---------------------------------------------------------------------------------------------
def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


# 64x64 first: its 16 patches equal the quantizer's head width, which would pin the length if widths were symbols too
MIXED_BATCHES = [((64, 64),), ((48, 80), (32, 32)), ((64, 16),), ((96, 96), (16, 48), (80, 64)), ((32, 64),),
                 ((160, 48),)]  # fmt: skip


def test_compiled_blocks_compile_once_per_region_for_mixed_sizes(tiny_model):
    """One graph per compiled region (2 per block kind + project_in/FSQ), whatever the image sizes (>= 2 patches)."""
    torch._dynamo.reset()
    batches = [pack(random_images(seed, sizes)) for seed, sizes in enumerate(MIXED_BATCHES)]
    eager = [tiny_model.encode(**inputs) for inputs in batches]
    tiny_model.compile_blocks(backend="aot_eager")  # dynamo + AOT tracing, no code generation: fast and exact
    before = _graphs()
    for inputs, reference in zip(batches, eager):
        out = tiny_model.encode(**inputs)
        assert torch.equal(out.image_codes, reference.image_codes)
        torch.testing.assert_close(out.pooler_output, reference.pooler_output)
    assert _graphs() - before == 5
    tiny_model.compile_blocks(False)
    assert all(getattr(m, "_compiled_regions", None) is None for m in tiny_model.modules())
    torch.testing.assert_close(tiny_model.encode(**batches[0]).pooler_output, eager[0].pooler_output, rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_blocks_with_inductor(tiny_model):
    """The default backend (generated kernels) on mixed sizes: codes agree with eager up to rounding boundaries."""
    torch._dynamo.reset()
    batches = [pack(random_images(seed, sizes)) for seed, sizes in enumerate(MIXED_BATCHES)]
    eager = [tiny_model.encode(**inputs).image_codes for inputs in batches]
    tiny_model.compile_blocks()
    before = _graphs()
    for inputs, reference in zip(batches, eager):
        agreement = (tiny_model.encode(**inputs).image_codes == reference).float().mean().item()
        assert agreement >= 0.98, agreement
    assert _graphs() - before == 5


# ---- on a GPU ------------------------------------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("kernel", ["viq_varlen", "viq_flash_attn", "viq_sdpa"])
def test_gpu_kernels_match_the_per_image_loop(tiny_model, kernel):
    if kernel == "viq_varlen" and mv._torch_varlen_attn() is None:
        pytest.skip(f"torch {torch.__version__} has no torch.nn.attention.varlen")
    if kernel == "viq_flash_attn" and mv._flash_attn_varlen_func() is None:
        pytest.skip("flash-attn is not installed")
    model = tiny_model.to("cuda", torch.bfloat16)
    inputs = pack(random_images(sizes=((48, 80), (32, 32), (64, 16), (48, 48))))
    model.set_attn_implementation("viq_per_image")
    loop = model.encode(**inputs)
    model.set_attn_implementation(kernel)
    assert model._packed([(2, 2)], "cuda").kernel == kernel
    out = model.encode(**inputs)
    assert (out.image_codes == loop.image_codes).float().mean() >= 0.97
    torch.testing.assert_close(out.pooler_output.float(), loop.pooler_output.float(), rtol=5e-2, atol=5e-2)


@needs_cuda
def test_gpu_encode_has_no_host_device_synchronisation(tiny_model):
    model = tiny_model.to("cuda", torch.bfloat16)
    inputs = pack(random_images())  # host tensors, as the processor returns them
    model.encode(**inputs)  # warm-up: RoPE tables, pinned buffers
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = model.encode(**inputs, return_pooler_output=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.image_codes.device.type == "cuda" and math.prod(out.image_codes.shape) > 0


@needs_cuda
def test_the_pipeline_and_extraction_encode_without_synchronising(tiny_model, monkeypatch):
    """The library's own callers hand `encode` host tensors (device tensors would be checked with a sync)."""
    from transformers_viq.pipeline import ViQPipeline

    model = tiny_model.to("cuda", torch.bfloat16)
    encode, seen = model.encode, []

    def strict_encode(pixel_values, image_grid_hw, **kwargs):
        seen.append((pixel_values.device.type, image_grid_hw.device.type))
        torch.cuda.set_sync_debug_mode("error")
        try:
            return encode(pixel_values, image_grid_hw, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(model, "encode", strict_encode)
    pipe = ViQPipeline(model, ViQImageProcessor(size_divisor=32))
    pipe.encode(random_images(), progress=False)
    assert seen and all(devices == ("cpu", "cpu") for devices in seen)


def test_the_stage1_encoder_chooses_its_attention_kernel_like_viq(tiny_model):
    """`ViQVisionModel` (Stage 1, teachers) has the same kernels: batched SDPA equals the per-image loop."""
    from transformers_viq import ViQVisionModel

    encoder = ViQVisionModel(tiny_model.config.vision_config).eval()
    inputs = pack(random_images(sizes=((48, 80), (32, 32), (64, 16))))
    assert encoder.config._attn_implementation == "sdpa"
    assert encoder._packed([(2, 2)], "cpu").kernel == "viq_per_image"
    encoder.set_attn_implementation("viq_per_image")
    reference = encoder(**inputs)
    encoder.set_attn_implementation("viq_sdpa")
    batched = encoder(**inputs)
    torch.testing.assert_close(batched.last_hidden_state, reference.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched.pooler_output, reference.pooler_output, rtol=1e-5, atol=1e-5)
    with pytest.raises(AttributeError, match="set_attn_implementation"):
        encoder.packed_attention = "viq_sdpa"
