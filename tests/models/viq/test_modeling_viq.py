"""ViQModel on tiny configs: numerics of the building blocks, packing, attention back-ends, training, HF format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoModel

from transformers_viq import FiniteScalarQuantizer, ViQImageProcessor, ViQModel
from transformers_viq.models.viq.modeling_viq import ViQGoldenGateRotaryEmbedding, ViQVisionEmbeddings
from transformers_viq.testing import make_tiny_model, tiny_config


def random_images(seed=0, sizes=((48, 80), (32, 32), (64, 16))):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]


def pack(images, **kwargs):
    return ViQImageProcessor(do_resize=False, **kwargs)(images=images, return_tensors="pt")


# ---- GoldenGate RoPE -----------------------------------------------------------------------------------------------
def golden_gate_direct(height, width, head_dim=16, heads=4, min_freq=0.2, max_freq=20.0, zero_ratio=0.25):
    """The angle formula written out element by element in float64."""
    num_freqs = head_dim // 2
    num_zero = round(zero_ratio * num_freqs)
    n = num_freqs - num_zero
    mags = [0.0] * num_zero + [min_freq * (max_freq / min_freq) ** (i / (n - 1) if n > 1 else 0.0) for i in range(n)]
    spacing = math.pi * (math.sqrt(5) - 1) / 2
    xs = [-math.sqrt(width / height) + 2 * math.sqrt(width / height) * c / (width - 1) if width > 1
          else -math.sqrt(width / height) for c in range(width)]  # fmt: skip
    ys = [-math.sqrt(height / width) + 2 * math.sqrt(height / width) * r / (height - 1) if height > 1
          else -math.sqrt(height / width) for r in range(height)]  # fmt: skip
    out = np.zeros((height * width, heads, num_freqs))
    for r in range(height):
        for c in range(width):
            for h in range(heads):
                for f in range(num_freqs):
                    phi = (h * num_freqs + f) * spacing
                    out[r * width + c, h, f] = mags[f] * (math.cos(phi) * xs[c] + math.sin(phi) * ys[r])
    return out


@pytest.mark.parametrize("grid", [(3, 5), (4, 4), (1, 6), (7, 1)])
def test_golden_gate_rope_matches_direct_formula(grid):
    rope = ViQGoldenGateRotaryEmbedding(head_dim=16, num_heads=4, min_freq=0.2, max_freq=20.0, zero_freq_ratio=0.25)
    theta = rope.angles(*grid)
    assert theta.dtype == torch.float32 and theta.shape == (grid[0] * grid[1], 4, 8)
    np.testing.assert_allclose(theta.numpy(), golden_gate_direct(*grid), rtol=1e-5, atol=1e-4)
    assert torch.all(theta[..., :2] == 0)  # 25% of the pairs are never rotated


def test_golden_gate_released_constants():
    rope = ViQGoldenGateRotaryEmbedding(head_dim=256, num_heads=4, min_freq=0.2, max_freq=20.0, zero_freq_ratio=0.25)
    magnitudes = rope.frequencies().norm(dim=-1)[0]
    assert torch.all(magnitudes[:32] == 0)
    assert magnitudes[32].item() == pytest.approx(0.2, rel=1e-6)
    assert magnitudes[33].item() == pytest.approx(0.2099339, rel=1e-5)
    assert magnitudes[-1].item() == pytest.approx(20.0, rel=1e-6)


def test_rope_angles_are_rounded_to_the_compute_dtype_before_cos_sin():
    rope = ViQGoldenGateRotaryEmbedding(head_dim=16, num_heads=4, min_freq=0.2, max_freq=20.0, zero_freq_ratio=0.25)
    cos, _ = rope([(5, 7)], dtype=torch.bfloat16, device=torch.device("cpu"))
    expected = torch.cos(rope.angles(5, 7).to(torch.bfloat16))
    assert torch.equal(cos, expected)


# ---- position table ---------------------------------------------------------------------------------------------
def bilinear_direct(table, out_h, out_w):
    """Bilinear resize with align_corners=False and edge clamping, written out with NumPy."""
    size = table.shape[0]

    def taps(out, i):
        src = max((i + 0.5) * size / out - 0.5, 0.0)
        lo = min(int(math.floor(src)), size - 1)
        hi = min(lo + 1, size - 1)
        return lo, hi, src - lo

    result = np.zeros((out_h, out_w, table.shape[-1]))
    for r in range(out_h):
        r0, r1, fr = taps(out_h, r)
        for c in range(out_w):
            c0, c1, fc = taps(out_w, c)
            top = table[r0, c0] * (1 - fc) + table[r0, c1] * fc
            bottom = table[r1, c0] * (1 - fc) + table[r1, c1] * fc
            result[r, c] = top * (1 - fr) + bottom * fr
    return result.reshape(out_h * out_w, -1)


@pytest.mark.parametrize("grid", [(3, 5), (8, 8), (13, 2), (1, 1)])
def test_position_table_resize(grid):
    config = tiny_config().vision_config
    embeddings = ViQVisionEmbeddings(config)
    torch.nn.init.normal_(embeddings.position_embedding.weight)
    table = embeddings.position_embedding.weight.detach()
    resized = embeddings.resize_positional_embeddings(*grid).detach()
    if grid == (8, 8):
        assert torch.equal(resized, table)  # the table's own size: used unchanged
    expected = bilinear_direct(table.reshape(8, 8, -1).double().numpy(), *grid)
    np.testing.assert_allclose(resized.numpy(), expected, rtol=1e-5, atol=1e-5)


# ---- encode: shapes, packing, back-ends ----------------------------------------------------------------------------
def test_encode_shapes_and_code_range(tiny_model):
    inputs = pack(random_images())
    out = tiny_model.encode(**inputs)
    grid = inputs["image_grid_hw"]
    patches = int((grid[:, 0] * grid[:, 1]).sum())
    assert out.image_codes.dtype == torch.long and out.image_codes.shape == (4 * patches,)
    assert torch.equal(out.image_grid_hw, grid)
    assert out.pooler_output.shape == (3, 32)
    assert out.last_hidden_state.shape == (patches, 32)
    assert 0 <= out.image_codes.min() and out.image_codes.max() < tiny_model.config.codebook_size
    assert out.image_codes.unique().numel() > 20  # the spread weights really exercise the quantizer


def test_packing_invariance(tiny_model):
    images = random_images(sizes=((48, 80), (32, 32), (64, 16), (16, 16)))
    batch = tiny_model.encode(**pack(images))
    offset = 0
    for index, image in enumerate(images):
        alone = tiny_model.encode(**pack([image]))
        count = alone.image_codes.numel()
        assert torch.equal(alone.image_codes, batch.image_codes[offset : offset + count]), index
        torch.testing.assert_close(alone.pooler_output[0], batch.pooler_output[index], rtol=1e-4, atol=1e-5)
        offset += count
    # and the order of the images in the batch does not matter either
    swapped = tiny_model.encode(**pack(images[::-1]))
    torch.testing.assert_close(swapped.pooler_output.flip(0), batch.pooler_output, rtol=1e-4, atol=1e-5)


def test_no_cross_image_leakage(tiny_model):
    """Changing one image must leave every code of the other images unchanged."""
    images = random_images()
    reference = tiny_model.encode(**pack(images)).image_codes
    changed = [images[0], 255 - images[1], images[2]]
    codes = tiny_model.encode(**pack(changed)).image_codes
    n0, n1 = 4 * 3 * 5, 4 * 2 * 2
    assert torch.equal(codes[:n0], reference[:n0])
    assert torch.equal(codes[n0 + n1 :], reference[n0 + n1 :])
    assert not torch.equal(codes[n0 : n0 + n1], reference[n0 : n0 + n1])


def test_eager_and_sdpa_agree(tiny_model):
    inputs = pack(random_images())
    sdpa = tiny_model.encode(**inputs)
    tiny_model.set_attn_implementation("eager")
    eager = tiny_model.encode(**inputs)
    assert (eager.image_codes == sdpa.image_codes).float().mean() >= 0.99
    torch.testing.assert_close(eager.pooler_output, sdpa.pooler_output, rtol=1e-4, atol=1e-4)


def test_forward_and_encode_agree_and_embed_codes_inverts(tiny_model):
    inputs = pack(random_images())
    encoded = tiny_model.encode(**inputs)
    forward = tiny_model(**inputs)
    assert torch.equal(forward.image_codes, encoded.image_codes)
    torch.testing.assert_close(forward.pooler_output, encoded.pooler_output)
    features = tiny_model.embed_codes(encoded.image_codes, encoded.image_grid_hw)
    torch.testing.assert_close(features, encoded.last_hidden_state)


def test_odd_grid_single_patch_and_padding(tiny_model):
    inputs = pack([np.full((17, 1, 3), 200, dtype=np.uint8)])  # padded to 32x16: a 2x1 grid
    assert inputs["image_grid_hw"].tolist() == [[2, 1]]
    out = tiny_model.encode(**inputs)
    assert out.image_codes.shape == (8,)


# ---- training ------------------------------------------------------------------------------------------------------
def test_gradient_checkpointing_gives_the_same_gradients(tiny_model):
    inputs = pack(random_images())
    tiny_model.train()

    def grads():
        tiny_model.zero_grad()
        out = tiny_model(**inputs)
        (out.last_hidden_state.pow(2).mean() + out.pooler_output.pow(2).mean()).backward()
        return {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}

    plain = grads()
    tiny_model.activation_checkpointing_enable()
    assert tiny_model.is_activation_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    assert "embeddings.patch_embedding.weight" in plain  # the gradient reaches the trunk through FSQ
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_runs_and_quantizer_stays_fp32(tiny_model):
    inputs = pack(random_images())
    fp32 = tiny_model.encode(**inputs)
    model = tiny_model.to(torch.bfloat16)
    out = model(**inputs)
    assert out.quantizer_inputs.dtype == torch.bfloat16  # project_in runs in the model dtype ...
    assert model.quantizer.fsq.levels.dtype == torch.int64 and model.quantizer.fsq.basis.dtype == torch.int64
    # ... and the codes are those of the fp32 quantizer applied to the upcast bf16 values, not of a bf16 rounding
    reference = FiniteScalarQuantizer(model.config.fsq_levels)(out.quantizer_inputs.float())[1]
    assert torch.equal(out.image_codes, reference)
    # the implicit codebook is cast with the model: thirds of the 6-level dimension are bf16-rounded, as released
    assert model.quantizer.fsq.codebook.dtype == torch.bfloat16
    thirds = model.quantizer.fsq.indices_to_codes(torch.tensor([512, 4 * 512]))[:, 3].tolist()  # digits 1 and 4 of 6
    assert thirds == [-0.66796875, 0.333984375]  # bf16(-2/3), bf16(1/3)
    bf16 = model.encode(**inputs)
    assert bf16.pooler_output.dtype == torch.bfloat16
    agreement = (bf16.image_codes == fp32.image_codes).float().mean().item()
    assert agreement > 0.5, agreement  # measured, not assumed equal: bf16 flips codes near boundaries


# ---- input validation --------------------------------------------------------------------------------------------
def test_bad_inputs_raise_value_errors(tiny_model):
    inputs = pack(random_images())
    pixels, grid = inputs["pixel_values"], inputs["image_grid_hw"]
    with pytest.raises(ValueError, match=r"packed patches of shape \(total_patches, 768\)"):
        tiny_model.encode(torch.zeros(2, 3, 32, 32), grid)
    with pytest.raises(ValueError, match="describes"):
        tiny_model.encode(pixels[:-1], grid)
    with pytest.raises(ValueError, match="integers"):
        tiny_model.encode(pixels, grid.float())
    with pytest.raises(ValueError, match=r"shape \(num_images, 2\)"):
        tiny_model.encode(pixels, grid.flatten())
    with pytest.raises(ValueError, match="image_grid_hw` is required"):
        tiny_model.encode(pixels, None)
    with pytest.raises(ValueError, match=">= 1"):
        tiny_model.encode(pixels, torch.tensor([[0, 5]]))


def test_non_finite_pixels_raise(tiny_model):
    inputs = pack(random_images())
    pixels = inputs["pixel_values"].clone()
    pixels[16, 3] = float("nan")  # image 0 has patches 0-14, image 1 patches 15-18
    with pytest.raises(ValueError, match="image 1 hold NaN or infinite"):
        tiny_model.encode(pixels, inputs["image_grid_hw"])


def test_codes_of_any_integer_type_are_accepted(tiny_model):
    out = tiny_model.encode(**pack(random_images()))
    expected = tiny_model.embed_codes(out.image_codes, out.image_grid_hw)
    as_uint16 = out.image_codes.numpy().astype(np.uint16)  # what a codes file or a code dataset stores
    for codes in (torch.from_numpy(as_uint16), as_uint16, out.image_codes.int(), out.image_codes.tolist()):
        torch.testing.assert_close(tiny_model.embed_codes(codes, out.image_grid_hw), expected)
    latents = tiny_model.decode_latents(torch.from_numpy(as_uint16), out.image_grid_hw)
    assert len(latents) == 3


def test_codes_validation(tiny_model):
    out = tiny_model.encode(**pack(random_images()))
    codes, grid = out.image_codes, out.image_grid_hw
    with pytest.raises(ValueError, match="integer tensor.*float32"):
        tiny_model.embed_codes(codes.float(), grid)
    with pytest.raises(ValueError, match="Image 2.*needs 16 codes"):
        tiny_model.embed_codes(codes[:-1], grid)
    with pytest.raises(ValueError, match="left over"):
        tiny_model.embed_codes(torch.cat([codes, codes[:3]]), grid)
    bad = codes.clone()
    bad[70] = tiny_model.config.codebook_size
    with pytest.raises(ValueError, match=r"Image 1 has code 15360.*outside \[0, 15360\)"):
        tiny_model.embed_codes(bad, grid)
    bad[70] = -1
    with pytest.raises(ValueError, match="Image 1 has code -1"):
        tiny_model.decode_latents(bad, grid)


# ---- HF format -----------------------------------------------------------------------------------------------------
def test_save_and_auto_model_round_trip(tiny_model, tmp_path):
    inputs = pack(random_images())
    expected = tiny_model.encode(**inputs)
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, ViQModel)
    # non-persistent buffers are rebuilt, not left as uninitialised memory
    fsq = loaded.quantizer.fsq
    assert fsq.levels.tolist() == [8, 8, 8, 6, 5] and fsq.basis.tolist() == [1, 8, 64, 512, 3072]
    assert torch.equal(fsq.codebook, tiny_model.quantizer.fsq.codebook)
    out = loaded.eval().encode(**inputs)
    assert torch.equal(out.image_codes, expected.image_codes)
    torch.testing.assert_close(out.pooler_output, expected.pooler_output)


def test_fresh_model_has_no_uninitialised_parameters():
    model = ViQModel(tiny_config())
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
        assert param.abs().max() < 50, name
    assert model.quantizer.fsq.basis.tolist() == [1, 8, 64, 512, 3072]


@pytest.mark.parametrize("levels", [(3, 3), (8, 8, 8, 5, 5, 5)])
def test_other_codebooks(levels):
    model = make_tiny_model(levels=levels)
    out = model.encode(**pack(random_images()))
    assert out.image_codes.max() < math.prod(levels)


# ---- decoding ------------------------------------------------------------------------------------------------------
def test_decode_shapes_for_odd_grids_and_mixed_batches(tiny_model):
    images = random_images(sizes=((48, 80), (16, 16), (17, 33), (64, 16)))  # grids 3x5, 1x1, 2x3, 4x1
    inputs = pack(images)
    out = tiny_model.encode(**inputs)
    grids = out.image_grid_hw.tolist()
    assert grids == [[3, 5], [1, 1], [2, 3], [4, 1]]
    latents = tiny_model.decode_latents(out.image_codes, out.image_grid_hw)
    assert [tuple(latent.shape) for latent in latents] == [(4, 2 * h, 2 * w) for h, w in grids]
    decoded = tiny_model.decode(out.image_codes, out.image_grid_hw)
    assert [tuple(image.shape) for image in decoded] == [(3, 16 * h, 16 * w) for h, w in grids]
    assert all(image.min() >= -1 and image.max() <= 1 for image in decoded)
    # an image decodes the same alone as in the mixed batch
    counts = [4 * h * w for h, w in grids]
    third = out.image_codes.split(counts)[2]
    alone = tiny_model.decode_latents(third, torch.tensor([grids[2]]))[0]
    torch.testing.assert_close(alone, latents[2], rtol=1e-4, atol=1e-5)
    pils = ViQImageProcessor().postprocess(decoded)
    assert [p.size for p in pils] == [(16 * w, 16 * h) for h, w in grids]


def _flash_attention_available() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return torch.cuda.is_available() and is_flash_attn_2_available()


@pytest.mark.skipif(not _flash_attention_available(), reason="needs CUDA and the flash-attn package")
def test_flash_attention_matches_sdpa_on_gpu(tiny_model):
    """The varlen flash-attention path (packed segments via cu_seqlens) against per-image SDPA, in bf16 on a GPU."""
    inputs = {k: v.cuda() for k, v in pack(random_images()).items()}
    model = tiny_model.to("cuda", torch.bfloat16)
    sdpa = model.encode(**inputs)
    model.set_attn_implementation("flash_attention_2")
    flash = model.encode(**inputs)
    assert (flash.image_codes == sdpa.image_codes).float().mean() >= 0.95
    torch.testing.assert_close(flash.pooler_output, sdpa.pooler_output, rtol=5e-2, atol=5e-2)


def test_model_without_decoder_encodes_embeds_and_refuses_to_decode(tiny_model, tmp_path):
    config = tiny_model.config.to_dict() | {"include_decoder": False}
    encoder_only = ViQModel(type(tiny_model.config)(**config)).eval()
    state = {k: v for k, v in tiny_model.state_dict().items() if not k.startswith(("vae.", "latent_head."))}
    encoder_only.load_state_dict(state)
    assert encoder_only.vae is None and encoder_only.latent_head is None
    assert not any(name.startswith(("vae.", "latent_head.")) for name in encoder_only.state_dict())
    inputs = pack(random_images())
    out = encoder_only.encode(**inputs)
    assert torch.equal(out.image_codes, tiny_model.encode(**inputs).image_codes)
    with pytest.raises(ValueError, match="built without its decoder"):
        encoder_only.decode(out.image_codes, out.image_grid_hw)
    encoder_only.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert reloaded.vae is None and torch.equal(reloaded.encode(**inputs).image_codes, out.image_codes)
