"""Pictures of codes: one colour per code value, the sub-codes of a patch in their cells, over the image."""

import numpy as np
import pytest

from transformers_viq.visualization import code_colours, codes_picture


def test_code_colours_are_fixed_per_value_and_spread():
    colours = code_colours(np.arange(15360))
    assert colours.shape == (15360, 3) and colours.dtype == np.uint8
    assert np.array_equal(code_colours([7, 7, 3]), colours[[7, 7, 3]])  # the same value, the same colour
    neighbours = np.abs(colours[1:].astype(int) - colours[:-1].astype(int)).sum(axis=1)
    assert neighbours.min() > 60  # consecutive codes never look alike
    assert len({tuple(colour) for colour in colours[:1000]}) > 900


def test_codes_picture_places_each_sub_code_in_its_cell():
    codes = np.arange(8)  # a 1x2 grid, 4 codes per patch
    image = np.zeros((16, 32, 3), dtype=np.uint8)
    picture = codes_picture(image, codes, (1, 2), alpha=1.0)
    colours = code_colours(codes)
    cells = {(0, 0): 0, (0, 8): 1, (8, 0): 2, (8, 8): 3, (0, 16): 4, (0, 24): 5, (8, 16): 6, (15, 31): 7}
    for (row, column), code in cells.items():
        assert np.array_equal(picture[row, column], colours[code]), (row, column)


def test_codes_picture_blends_and_crops_to_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)  # padded to a 2x2 grid of 16-pixel patches
    codes = rng.integers(0, 15360, size=16)
    assert np.array_equal(codes_picture(image, codes, (2, 2), alpha=0.0), image)
    half = codes_picture(image, codes, (2, 2), alpha=0.5)
    full = codes_picture(image, codes, (2, 2), alpha=1.0)
    assert half.shape == image.shape
    expected = np.round(0.5 * full.astype(np.float32) + 0.5 * image.astype(np.float32))
    assert np.abs(half.astype(int) - expected.astype(int)).max() <= 1


def test_codes_picture_refuses_mismatched_codes():
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="3 codes for a 1x1 grid"):
        codes_picture(image, [1, 2, 3], (1, 1))
    with pytest.raises(ValueError, match="larger than its 1x1 patch grid"):
        codes_picture(np.zeros((17, 16, 3), dtype=np.uint8), [1, 2, 3, 4], (1, 1))
