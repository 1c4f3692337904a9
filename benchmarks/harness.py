# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""What the benchmark scripts share: the analytic FLOP count of `ViQModel.encode`, input making, size parsing,
Markdown tables, and the log and JSON report of the one-shot GPU scripts. The scripts import it as a sibling module
(`import harness`), as `python benchmarks/x.py` runs them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import time
import traceback

import numpy as np
import torch

from transformers_viq import ViQConfig, ViQImageProcessor
from transformers_viq.file_utils import write_json


# Top-level submodules `ViQModel.encode(..., return_pooler_output=True)` runs, in order (the keys of `encode_flops`).
ENCODE_COMPONENTS = ("embeddings", "encoder", "fusion", "quantizer", "code_embedder", "head")


def encode_flops(config: ViQConfig, grid_hw: list[tuple[int, int]], calls: int = 1) -> dict[str, int]:
    r"""
    Matrix-multiply FLOPs of `ViQModel.encode(..., return_pooler_output=True)` for images with patch grids `grid_hw`
    encoded together in `calls` calls (1 for a packed batch, `len(grid_hw)` for one image per call; only the pooling
    head's query projection depends on it). A multiply-add counts 2 FLOPs.

    Symbols: `D` hidden size, `I` MLP width, `H` heads (`D / H` per head), `P = channels * patch**2` (768), `C` codes
    (sub-tokens) per patch, `A` quantizer attention width per sub-token, `F = len(fsq_levels)`, `R` width of the code
    embedder's residual MLPs, `N_i = h_i * w_i` patches of image `i`, `N = sum_i N_i`, `S = sum_i N_i**2`, `M` images.
    Attention is block-diagonal (each image attends to itself only), so its cost is in `S`, not `N**2`.

    - `embeddings`:    patch embedding `2 N P D` (the 16x16 stride-16 conv as a matmul).
    - `encoder`:       per trunk block `2 N (3D^2 + D^2 + 2 D I) + 4 D S`
                       (qkv, out proj, MLP fc1 + fc2; attention scores `2 N_i^2 D/H` and weighted values
                       `2 N_i^2 D/H` per head, i.e. `4 N_i^2 D` over the `H` heads).
    - `fusion`:        `fusion_num_layers` blocks as above, then the expansion MLP `2 N (D * CD + CD * CD)` and the
                       per-sub-token MLP `2 (C N) (D^2 + D^2)`.
    - `quantizer`:     per headless block, over the `C N` sub-tokens:
                       `2 (C N) (D A + 3 A^2 + A^2 + A D + 2 D I) + 4 C A S`
                       (down proj, qkv, out proj, up proj, MLP; attention over the patches of the image with `C` heads
                       of width `A`: scores `2 N_i^2 A` + values `2 N_i^2 A` per head),
                       then `project_in` `2 (C N) D F`.
    - `code_embedder`: `project_out` `2 (C N) F D`, merge MLP `2 N (CD * CD + CD * D)`, MLP `2 N (D^2 + D^2)`,
                       residual MLPs `embedder_num_residual_layers * 2 N (2 D R)`.
    - `head`:          probe query `2 D^2` per call, key/value `2 N D (2D)`, one-query attention `4 N D`,
                       out proj `2 M D^2`, MLP `2 M (2 D I)`.

    Not counted (no matrix products): LayerNorms, GELU, softmax, RoPE, residual and bias additions, the position
    table resize, FSQ. They take time, so they lower the achieved GFLOP/s, which is the point of the comparison.

    Returns:
        `dict[str, int]`: FLOPs per component (`ENCODE_COMPONENTS`) and `"total"`.
    """
    vision = config.vision_config
    d, i, p = vision.hidden_size, vision.intermediate_size, vision.num_channels * vision.patch_size**2
    c, a, f = config.codes_per_patch, config.quantizer_attention_dim, len(config.fsq_levels)
    r = config.embedder_residual_intermediate_size or 2 * d
    lengths = [h * w for h, w in grid_hw]
    n, s, m = sum(lengths), sum(length**2 for length in lengths), len(lengths)

    def trunk_block() -> int:
        return 2 * n * (3 * d * d + d * d + 2 * d * i) + 4 * d * s

    flops = {
        "embeddings": 2 * n * p * d,
        "encoder": vision.num_hidden_layers * trunk_block(),
        "fusion": config.fusion_num_layers * trunk_block()
        + 2 * n * (d * c * d + c * d * c * d)
        + 2 * (c * n) * (d * d + d * d),
        "quantizer": config.quantizer_num_layers
        * (2 * (c * n) * (d * a + 3 * a * a + a * a + a * d + 2 * d * i) + 4 * c * a * s)
        + 2 * (c * n) * d * f,
        "code_embedder": 2 * (c * n) * f * d
        + 2 * n * (c * d * c * d + c * d * d)
        + 2 * n * (d * d + d * d)
        + config.embedder_num_residual_layers * 2 * n * (2 * d * r),
        "head": calls * 2 * d * d + 2 * n * d * 2 * d + 4 * n * d + 2 * m * d * d + 2 * m * 2 * d * i,
    }
    flops["total"] = sum(flops.values())
    return flops


def parse_size(text: str) -> tuple[int, int]:
    """`"HxW"` (pixels) -> `(height, width)`."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"Sizes are HEIGHTxWIDTH in pixels, e.g. 512x320; got {text!r}.") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"Sizes must be positive, got {text!r}.")
    return height, width


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def make_inputs(processor: ViQImageProcessor, sizes: list[tuple[int, int]], dtype: torch.dtype, seed: int):
    """Packed `(pixel_values, image_grid_hw)` for random uint8 RGB images of the given sizes."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]
    max_pixels = max(processor.max_pixels, *(h * w for h, w in sizes))
    inputs = processor(images=images, return_tensors="pt", max_pixels=max_pixels)
    return inputs["pixel_values"].to(dtype), inputs["image_grid_hw"]


def format_table(headers: list[str], body: list[list[str]]) -> str:
    """A Markdown table (readable as is in a terminal)."""
    widths = [max(len(headers[j]), *(len(line[j]) for line in body)) for j in range(len(headers))]
    aligned = lambda cells: "| " + " | ".join(cell.rjust(widths[j]) if j else cell.ljust(widths[j])  # noqa: E731
                                               for j, cell in enumerate(cells)) + " |"  # fmt: skip
    separator = "|" + "|".join(("-" * (w + 1) + ":") if j else ":" + "-" * (w + 1) for j, w in enumerate(widths)) + "|"
    return "\n".join([aligned(headers), separator, *(aligned(line) for line in body)])


# ------------------------------------------------------------------------------------------------------------------
# The one-shot GPU scripts (gpu_check.py, gpu_sweep.py): a log with the run's clock, a JSON report written after
# every stage, stages whose failure is recorded and does not end the run
# ------------------------------------------------------------------------------------------------------------------
class RunLog:
    """`log("...")` prints `[name HH:MM:SS +seconds] ...` at once; `elapsed()` is the seconds since the start."""

    def __init__(self, name: str):
        self.name, self.start = name, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        print(f"[{self.name} {time.strftime('%H:%M:%S')} +{self.elapsed():6.1f}s] {message}", flush=True)


def json_safe(value):
    """JSON-safe copy: NaN/inf become strings, tuples lists, numpy scalars Python numbers, other objects strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageReport:
    """
    The run's JSON report (`data`, rewritten atomically after every stage so that a run cut short still leaves its
    numbers), with `skip(what, reason)` and `with report.stage(name):` blocks whose exception is logged, recorded in
    `errors` and does not end the run.
    """

    def __init__(self, path: str | None, log: RunLog, **sections):
        self.path, self.log = path, log
        self.data: dict = {"finished": False, "errors": [], "skipped": [], **sections}

    @property
    def errors(self) -> list:
        return self.data["errors"]

    def skip(self, what: str, reason: str) -> None:
        self.log(f"SKIP {what}: {reason}")
        self.data["skipped"].append({"what": what, "reason": reason})

    def write(self) -> None:
        self.data["wall_s"] = round(self.log.elapsed(), 1)
        if not self.path:
            return
        try:
            write_json(self.path, json_safe(self.data))
        except Exception as error:  # the report must never end the run
            self.log(f"could not write {self.path}: {error!r}")

    @contextlib.contextmanager
    def stage(self, name: str):
        """Run a stage; an exception is logged and recorded, and the run goes on after the `with` block."""
        start = time.perf_counter()
        self.log(f"{name} ...")
        try:
            yield
            self.log(f"{name}: done in {time.perf_counter() - start:.1f} s")
        except Exception as error:
            lines = traceback.format_exception(type(error), error, error.__traceback__)
            self.log(f"ERROR in {name}: {type(error).__name__}: {error}")
            print("".join(lines[-6:]), end="", flush=True)
            self.errors.append({"stage": name, "error": f"{type(error).__name__}: {error}",
                                "traceback": "".join(lines[-12:])})  # fmt: skip
            free_memory()
        finally:
            self.write()
