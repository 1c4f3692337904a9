"""benchmarks/train_step.py: its packing and FLOP model (no timing is asserted), and a tiny run of the script."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import train_step

        yield train_step
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_pack_fills_the_fixed_length_with_whole_pairs(bench):
    from transformers_viq import get_num_image_tokens

    packing = bench.pack(4096, list(bench.FULL_GRIDS), 128)
    assert sum(packing.segments) == 4096 and len(packing.grids) == 5
    assert packing.segments[: len(packing.grids)] == [get_num_image_tokens(*g) + 128 for g in packing.grids]
    with pytest.raises(ValueError, match="cannot hold one image"):
        bench.pack(100, list(bench.FULL_GRIDS), 128)


@pytest.mark.parametrize("llm", ["0.5b", "7b"])
def test_uniform_scaling_keeps_the_predicted_saving(bench, llm):
    """Widths, vocabulary and tokens x s, depths x d: every matmul shrinks alike, so the vision : LLM ratio (and the
    predicted saving) stays near the full-size one; only the rounding of depths and grids moves it."""
    full = bench.predicted(bench.viq_config(1, 1), bench.llm_config(llm, 1, 1),
                           bench.pack(4096, list(bench.FULL_GRIDS), 128), "sdpa", "full", False)  # fmt: skip
    scale = 1 / 16
    scaled = bench.predicted(bench.viq_config(scale, 1), bench.llm_config(llm, scale, 1),
                             bench.pack(256, bench.image_grids(scale), 8), "sdpa", "full", False)  # fmt: skip
    assert abs(scaled["forward_saving"] - full["forward_saving"]) < 0.03
    assert abs(scaled["step_saving"] - full["step_saving"]) < 0.03
    assert 0 < full["step_saving"] < full["forward_saving"] < 1


def test_a_tiny_run_measures_both_modes_on_the_same_batch(bench, tmp_path):
    rows = bench.main(["--llms", "0.5b", "--seq-lens", "4096", "--scale", "0.03", "--repeats", "1", "--threads",
                       "1", "--json", str(tmp_path / "out.json")])  # fmt: skip
    (row,) = rows
    assert row.error is None and row.images >= 1
    assert len(row.forward_pixels) == len(row.forward_codes) == len(row.step_pixels) == len(row.step_codes) == 1
    assert (tmp_path / "out.json").is_file()
