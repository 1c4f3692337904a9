"""Finite scalar quantization: the exact numerics of the released ViQ (fp32 bound/round/index, half-to-even)."""

import math

import pytest
import torch

from transformers_viq import FSQ_LEVEL_PRESETS, FiniteScalarQuantizer
from transformers_viq.models.viq.fsq import implicit_codebook, round_ste


@pytest.mark.parametrize("size", list(FSQ_LEVEL_PRESETS))
def test_index_code_round_trip_for_every_preset(size):
    levels = FSQ_LEVEL_PRESETS[size]
    fsq = FiniteScalarQuantizer(levels)
    indices = torch.arange(math.prod(levels))
    codes = fsq.indices_to_codes(indices)
    assert codes.shape == (len(indices), len(levels))
    assert codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(fsq.codes_to_indices(codes), indices)
    # every code is distinct, so the codebook really has prod(levels) entries
    assert torch.unique(codes, dim=0).shape[0] == math.prod(levels)


@pytest.mark.parametrize("size", list(FSQ_LEVEL_PRESETS))
def test_first_dimension_is_least_significant(size):
    levels = FSQ_LEVEL_PRESETS[size]
    fsq = FiniteScalarQuantizer(levels)
    expected_basis = [1]
    for level in levels[:-1]:
        expected_basis.append(expected_basis[-1] * level)
    assert fsq.basis.tolist() == expected_basis
    # index 1 moves the first digit one level up from the bottom
    half = levels[0] // 2
    assert fsq.indices_to_codes(torch.tensor(1))[0].item() == pytest.approx((1 - half) / half)


@pytest.mark.parametrize(
    "level, half_l, shift, values",
    [
        (3, 1.001, 0.0, [-1, 0, 1]),
        (4, 1.5015, 0.34619898, [-2, -1, 0, 1]),
        (5, 2.002, 0.0, [-2, -1, 0, 1, 2]),
        (6, 2.5025, 0.20252442, [-3, -2, -1, 0, 1, 2]),
        (8, 3.5035, 0.14369535, [-4, -3, -2, -1, 0, 1, 2, 3]),
    ],
)
def test_bound_per_level_including_even_offset(level, half_l, shift, values):
    fsq = FiniteScalarQuantizer([level])
    offset = 0.5 if level % 2 == 0 else 0.0
    # z = 0 lands on -offset + tanh(shift) * half_l, i.e. exactly 0 for every level (that is what the shift is for)
    assert fsq.bound(torch.zeros(1, 1)).item() == pytest.approx(0.0, abs=1e-6)
    # extremes of the bounded range
    assert fsq.bound(torch.full((1, 1), 50.0)).item() == pytest.approx(half_l - offset, abs=1e-5)
    assert fsq.bound(torch.full((1, 1), -50.0)).item() == pytest.approx(-half_l - offset, abs=1e-5)
    assert math.atanh(offset / half_l) == pytest.approx(shift, abs=1e-7)
    # a dense sweep reaches exactly the expected integer levels (even levels: one more negative)
    sweep = torch.linspace(-20, 20, 20001).unsqueeze(-1)
    reached = torch.round(fsq.bound(sweep)).unique().tolist()
    assert reached == values


def test_rounding_is_half_to_even():
    assert round_ste(torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])).tolist() == [0, 2, 2, 0, -2, -2]
    fsq = FiniteScalarQuantizer([8])
    fsq.bound = lambda z: z.float()  # look at the rounding alone
    codes = fsq.quantize(torch.tensor([[0.5], [1.5], [2.5], [-1.5], [-2.5]]))
    assert (codes * 4).flatten().tolist() == [0, 2, 2, -2, -2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantizer_arithmetic_is_float32_and_indices_in_range(dtype):
    levels = FSQ_LEVEL_PRESETS["64k"]
    fsq = FiniteScalarQuantizer(levels)
    z = (torch.randn(4096, len(levels), generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    assert fsq.bound(z).dtype == torch.float32
    codes, indices = fsq(z)
    assert codes.dtype == torch.float32 and indices.dtype == torch.int64
    assert indices.min() >= 0 and indices.max() < math.prod(levels)
    # the indices are those of the codes
    assert torch.equal(fsq.indices_to_codes(indices), codes)


def test_straight_through_gradient_is_the_bound_derivative():
    fsq = FiniteScalarQuantizer([5, 4])
    z = torch.randn(7, 2, requires_grad=True)
    fsq.quantize(z).sum().backward()
    z2 = z.detach().clone().requires_grad_(True)
    (fsq.bound(z2) / torch.tensor([2.0, 2.0])).sum().backward()
    assert torch.allclose(z.grad, z2.grad)


def test_implicit_codebook_matches_digit_formula():
    levels = [8, 8, 8, 6, 5]
    book = implicit_codebook(levels)
    basis = [1, 8, 64, 512, 3072]
    for index in (0, 1, 7, 8, 513, 15359):
        for k, (level, b) in enumerate(zip(levels, basis)):
            digit = (index // b) % level
            assert book[index, k].item() == pytest.approx((digit - level // 2) / (level // 2))


def test_invalid_levels_raise():
    with pytest.raises(ValueError, match="levels"):
        FiniteScalarQuantizer([8, 1])
    with pytest.raises(ValueError, match="last dimension of 2"):
        FiniteScalarQuantizer([3, 3])(torch.zeros(4, 3))
