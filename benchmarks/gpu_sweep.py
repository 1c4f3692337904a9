#!/usr/bin/env python
# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""
Encode throughput of the full-size ViQ tokenizer on one GPU, swept over image sizes, batch sizes and execution paths,
against a plain matmul measured in the same run; one prepared script for a device lease of a few minutes.

What it measures (codes only: `encode(..., return_pooler_output=False)`, random weights, 16k preset, 40 layers):

1. a plain `--matmul-size`^3 matmul in bf16 (and fp32 without TF32 when an fp32 path runs), before and after the
   sweep: the rate the rows are compared with;
2. for every variant (default: `bf16-compiled` = `attn_implementation="sdpa"` (which picks the packed kernel) +
   `compile_blocks()`, `bf16-eager`, `bf16-per-image` = `"viq_per_image"`, one attention call per image, not
   compiled, `fp32-eager`),
   every `--sizes` entry (`HxW`, or `mixed` = 8 sizes from 224x336 to 1024x1024) and every batch size: images/s,
   patch tokens/s, achieved TFLOP/s (matrix-product FLOPs of `encode_flops`, codes-only components), its share of the
   in-run matmul of the same dtype, peak GPU memory, the first call's time (compilation) and the number of graphs
   compiled. Calls run back to back (no synchronisation between them) until `--seconds` have passed, on host tensors
   as the image processor returns them (`encode` stages them through pinned memory: the host prepares the next
   call while the device runs this one);
3. a kernel profile of one call per `--profile` row (`torch.profiler`): the share of GPU time by kernel class (GEMM,
   attention, fused/generated, normalisation, element-wise, copies) and the busiest kernels, i.e. what is left;
4. code agreement between the paths on the same images (compiled vs eager, each attention kernel vs the per-image
   loop, one image alone vs in its batch), in bf16 and fp32;
5. host-device synchronisations inside one `encode` call (`torch.cuda.set_sync_debug_mode("warn")`).

It ends with the tables, the issue's targets (share of the matmul at 8 x 384^2, 768^2, 1024^2) and the comparison
with the authors' code from the numbers in the issue (another run: compared through each run's share of its own
matmul). The JSON report (`--json`) is rewritten after every row, so a run cut short keeps what it measured; rows
that would start after `--budget-s`, or are estimated to take longer than `--max-row-s`, are skipped and listed.
Exit status 0 when everything ran, 1 when a stage failed, 2 when the preflight failed.

Examples:

    # on the H200 (benchmarks/README.md has the full device command)
    PYTHONUNBUFFERED=1 python benchmarks/gpu_sweep.py --budget-s 420 --json $OUT/gpu_sweep.json
    # dry run on the CPU (2 layers, small images)
    .venv/bin/python benchmarks/gpu_sweep.py --device cpu --layers 2 --sizes 64x64,mixed-small --batches 1,2 \
        --seconds 0.5 --matmul-size 1024 --profile 64x64:2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import platform
import sys
import time
import warnings

import torch
import transformers
from transformers.utils import logging as hf_logging

import transformers_viq
from transformers_viq import ViQConfig, ViQImageProcessor, ViQModel
from transformers_viq.models.viq.modeling_viq import resolve_packed_kernel

from harness import RunLog, StageReport, encode_flops, format_table, free_memory, make_inputs, parse_size, synchronize


CODES_COMPONENTS = ("embeddings", "encoder", "fusion", "quantizer")  # encode(..., return_pooler_output=False)
MIXED = {  # 8 sizes of the issue's mixed row (224x336 ... 1024x1024), and a small set for CPU dry runs
    "mixed": [(224, 336), (384, 384), (448, 640), (512, 512), (640, 480), (768, 768), (896, 672), (1024, 1024)],
    "mixed-small": [(32, 48), (48, 48), (64, 32), (64, 64), (80, 48), (48, 96), (96, 64), (96, 96)],
}
VARIANTS = {  # name -> (dtype, attn_implementation, compiled)
    "bf16-compiled": (torch.bfloat16, "sdpa", True),
    "bf16-eager": (torch.bfloat16, "sdpa", False),
    "bf16-per-image": (torch.bfloat16, "viq_per_image", False),
    "bf16-sdpa": (torch.bfloat16, "viq_sdpa", False),
    "fp32-eager": (torch.float32, "sdpa", False),
    "fp32-compiled": (torch.float32, "sdpa", True),
}
DEFAULT_VARIANTS = "bf16-compiled,bf16-eager,bf16-per-image:8,fp32-eager"
# The issue's outside measurement (H200, bf16, batch 8, codes only): our images/s then, and how much faster that was
# than the authors' code with per-image SDPA / with torch's varlen flash attention; its matmul ran at 673 TFLOP/s.
ISSUE_MATMUL_TFLOPS = 673.0
ISSUE_ROWS = {"384x384": (165, 1.36, 1.09), "768x768": (55, 1.24, 1.26), "1024x1024": (29, 1.20, 1.31),
              "mixed": (80, 1.33, 1.36)}  # fmt: skip
TARGET_SHARE = {"384x384": 0.70, "768x768": 0.85, "1024x1024": 0.85}  # at batch 8
TARGET_VS_AUTHORS = 1.5


# ----------------------------------------------------------------------------------------------------------------
# Logging, report
# ----------------------------------------------------------------------------------------------------------------
LOG = RunLog("gpu-sweep")
log, elapsed = LOG, LOG.elapsed


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "transformers": transformers.__version__, "device": str(device), "cpu_threads": torch.get_num_threads(),
           "transformers_viq_path": os.path.dirname(transformers_viq.__file__)}  # fmt: skip
    try:
        import flash_attn

        env["flash_attn"] = flash_attn.__version__
    except Exception as error:
        env["flash_attn"] = f"unavailable ({type(error).__name__})"
    for dtype in (torch.bfloat16, torch.float32):
        kernel, note, _ = resolve_packed_kernel("sdpa", device, dtype, 256)
        env[f"packed_kernel_sdpa_{str(dtype).replace('torch.', '')}"] = kernel + (f" ({note})" if note else "")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   gpu_capability=f"{props.major}.{props.minor}", gpu_multiprocessors=props.multi_processor_count)
    return env


# ----------------------------------------------------------------------------------------------------------------
# Matmul reference, model, inputs
# ----------------------------------------------------------------------------------------------------------------
def matmul_tflops(size: int, dtype: torch.dtype, device: torch.device, seconds: float = 1.0) -> float:
    """A plain `size`^3 matmul, back to back for about `seconds` after a warm-up: TFLOP/s."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    for _ in range(3):
        torch.mm(a, b)
    synchronize(device)
    probe = time.perf_counter()
    torch.mm(a, b)
    synchronize(device)
    per_call = max(time.perf_counter() - probe, 1e-6)
    calls = max(3, int(seconds / per_call))
    start = time.perf_counter()
    for _ in range(calls):
        torch.mm(a, b)
    synchronize(device)
    return 2 * size**3 * calls / (time.perf_counter() - start) / 1e12


def build_models(layers: int, device: torch.device, dtypes: set, seed: int = 0) -> dict:
    """`{dtype: ViQModel}`: the 16k architecture (encode only) built on the device, random weights of unit gain."""
    config = ViQConfig.from_preset("16k", vision_config={"num_hidden_layers": layers}, include_decoder=False,
                                   attn_implementation="sdpa")  # fmt: skip
    with torch.device(device):
        model = ViQModel(config).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():  # weights that spread the codes (the default 0.02-std init saturates FSQ)
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, param[0].numel() ** -0.5, generator=generator)
            elif "layer_norm" in name or "layernorm" in name or name.endswith("affine_weight"):
                param.normal_(1.0, 0.1, generator=generator)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    models = {}
    for dtype in sorted(dtypes, key=str):
        models[dtype] = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    if torch.float32 not in dtypes:
        del model
    free_memory()
    return models


class Inputs:
    """Packed random images per `(size spec, batch)`: host tensors and their FLOPs, made once."""

    def __init__(self, device: torch.device, config: ViQConfig):
        self.device, self.config = device, config
        self.processor = ViQImageProcessor(do_resize=False)
        self._cache: dict = {}

    def calls(self, size: str, batch: int) -> list[dict]:
        """The inputs of the calls of one row, cycled: one entry, or 8 for `mixed` at batch 1 (one size per call)."""
        key = (size, batch)
        if key not in self._cache:
            if size in MIXED:
                pool = MIXED[size]
                groups = [[s] for s in pool] if batch == 1 else [[pool[i % len(pool)] for i in range(batch)]]
            else:
                groups = [[parse_size(size)] * batch]
            entries = []
            for index, sizes in enumerate(groups):
                pixel_values, grid = make_inputs(self.processor, sizes, torch.float32, seed=1000 * batch + index)
                grid_hw = [tuple(g) for g in grid.tolist()]
                flops = encode_flops(self.config, grid_hw)
                entries.append({"pixel_values": pixel_values, "grid": grid, "images": len(sizes),
                                "tokens": int(pixel_values.shape[0]),
                                "flops": sum(flops[c] for c in CODES_COMPONENTS)})  # fmt: skip
            self._cache[key] = entries
        return self._cache[key]


@contextlib.contextmanager
def variant_setup(model: ViQModel, implementation: str, compiled: bool):
    model.set_attn_implementation(implementation)
    model.compile_blocks(compiled)
    try:
        yield model
    finally:
        model.compile_blocks(False)
        model.set_attn_implementation("sdpa")


def encode_codes(model: ViQModel, entry: dict) -> torch.Tensor:
    return model.encode(entry["pixel_values"], entry["grid"], return_pooler_output=False).image_codes


# ----------------------------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------------------------
def throughput_row(model: ViQModel, device: torch.device, entries: list[dict], seconds: float, warmup: int,
                   min_calls: int) -> dict:  # fmt: skip
    if device.type == "cuda":
        free_memory()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    graphs_before = graphs_compiled()
    warm_times = []
    for index in range(max(warmup, len(entries))):  # every distinct input once at least (compiles what it needs)
        synchronize(device)
        start = time.perf_counter()
        encode_codes(model, entries[index % len(entries)])
        synchronize(device)
        warm_times.append(time.perf_counter() - start)
    per_call = min(warm_times[-len(entries):]) if len(warm_times) > 1 else warm_times[0]
    calls = max(min_calls, math.ceil(seconds / max(per_call, 1e-6)))
    calls = len(entries) * math.ceil(calls / len(entries))
    synchronize(device)
    start = time.perf_counter()
    for index in range(calls):  # back to back: the host queues the next call while the device runs this one
        encode_codes(model, entries[index % len(entries)])
    synchronize(device)
    wall = time.perf_counter() - start
    cycles = calls // len(entries)
    images = cycles * sum(e["images"] for e in entries)
    tokens = cycles * sum(e["tokens"] for e in entries)
    flops = cycles * sum(e["flops"] for e in entries)
    row = {"calls": calls, "wall_s": wall, "images": images, "images_per_s": images / wall,
           "tokens_per_s": tokens / wall, "tflops_per_s": flops / wall / 1e12, "first_call_s": warm_times[0],
           "warmup_s": warm_times, "new_graphs": graphs_compiled() - graphs_before,
           "flops_per_call": flops / calls, "tokens_per_call": tokens / calls}  # fmt: skip
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        row.update(peak_gpu_memory_gib=peak / 2**30, peak_above_weights_gib=(peak - base) / 2**30)
    return row


def estimate_row_seconds(entries: list[dict], rate_tflops: float, warmup: int, min_calls: int) -> float:
    per_call = sum(e["flops"] for e in entries) / len(entries) / (rate_tflops * 1e12)
    return (max(warmup, len(entries)) + max(min_calls, len(entries))) * per_call


# ----------------------------------------------------------------------------------------------------------------
# Profile, agreement, synchronisations
# ----------------------------------------------------------------------------------------------------------------
KERNEL_CLASSES = (  # (class, lower-case substrings of kernel / operator names), first match wins
    ("attention", ("flash", "fmha", "attention", "attn")),
    ("gemm", ("gemm", "cutlass", "nvjet", "xmma", "cublas", "sm90_", "sm80_", "aten::mm", "aten::addmm", "aten::bmm",
              "aten::linear")),
    ("generated (compiled)", ("triton_", "cpp_fused", "kernel_cpp", "compiledfunction", "torch-compiled")),
    ("normalisation", ("layer_norm", "layernorm", "welford")),
    ("element-wise", ("elementwise", "vectorized", "gelu", "unrolled", "aten::add", "aten::mul", "aten::sub",
                      "aten::tanh", "aten::round", "aten::cos", "aten::sin", "aten::div", "aten::sum", "reduce")),
    ("copies", ("copy", "cat", "index", "memcpy", "memset", "aten::to", "aten::clone", "aten::contiguous", "fill",
                "pad", "gather", "scatter", "upsample")),
)  # fmt: skip


def kernel_class(name: str) -> str:
    name = name.lower()
    for label, needles in KERNEL_CLASSES:
        if any(needle in name for needle in needles):
            return label
    return "other"


def profile_row(model: ViQModel, device: torch.device, entries: list[dict], calls: int = 2) -> dict:
    """GPU time by kernel class over `calls` back-to-back calls (on CPU: self time of the leaf operators)."""
    from torch.profiler import ProfilerActivity, profile

    for entry in entries:
        encode_codes(model, entry)  # warm
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for index in range(calls):
            encode_codes(model, entries[index % len(entries)])
        synchronize(device)
    wall_us = (time.perf_counter() - start) * 1e6
    by_name: dict[str, float] = {}
    for event in prof.key_averages():
        if device.type == "cuda":
            if getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA:
                continue
            self_us = getattr(event, "self_device_time_total", None)
            self_us = self_us if self_us is not None else getattr(event, "self_cuda_time_total", 0.0)
        else:
            if not event.key.startswith(("aten::", "cpp_fused")) or event.key.startswith("aten::empty"):
                continue
            self_us = event.self_cpu_time_total
        if self_us > 0:
            by_name[event.key] = by_name.get(event.key, 0.0) + float(self_us)
    busy = sum(by_name.values())
    classes: dict[str, float] = {}
    for name, value in by_name.items():
        classes[kernel_class(name)] = classes.get(kernel_class(name), 0.0) + value
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    return {"calls": calls, "wall_us": wall_us, "kernel_us": busy,
            "busy_fraction": busy / wall_us if device.type == "cuda" else None,
            "classes": {k: {"us": v, "share": v / busy} for k, v in sorted(classes.items(), key=lambda kv: -kv[1])},
            "top": [{"name": name[:110], "us": value, "share": value / busy} for name, value in top]}  # fmt: skip


def agreement(model: ViQModel, entry: dict, variants: list[tuple[str, str, bool]]) -> dict:
    """Code agreement of each `(label, attn_implementation, compiled)` path with the eager per-image loop, and of the
    first image encoded alone with the same image inside the batch."""
    with variant_setup(model, "viq_per_image", False):
        reference = encode_codes(model, entry).cpu()
    result = {}
    for label, packed, compiled in variants:
        with variant_setup(model, packed, compiled):
            codes = encode_codes(model, entry).cpu()
            h, w = entry["grid"][0].tolist()
            alone = model.encode(entry["pixel_values"][: h * w], entry["grid"][:1], return_pooler_output=False)
            alone = alone.image_codes.cpu()
        result[label] = {"vs_per_image_eager": float((codes == reference).float().mean()),
                         "first_image_alone_vs_in_batch": float((alone == codes[: alone.numel()]).float().mean())}
    return result


def sync_check(model: ViQModel, entry: dict, label: str, packed: str, compiled: bool) -> dict:
    """Synchronising CUDA calls inside one `encode` of host inputs (after a warm-up call)."""
    with variant_setup(model, packed, compiled):
        encode_codes(model, entry)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                encode_codes(model, entry)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        messages = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
        torch.cuda.synchronize()
    return {"variant": label, "synchronisations": len(messages), "messages": messages[:5]}


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------
def rows_table(report: StageReport) -> str:
    headers = ["variant", "size", "batch", "calls", "images/s", "tokens/s", "TFLOP/s", "share of matmul", "peak GiB",
               "first call s", "new graphs", "attention / note"]  # fmt: skip
    body = []
    for row in report.data["rows"]:
        if "images_per_s" not in row:
            body.append([row["variant"], row["size"], str(row["batch"])] + ["-"] * 8
                        + [row.get("error") or row.get("skipped", "")])  # fmt: skip
            continue
        peak = row.get("peak_gpu_memory_gib")
        body.append([row["variant"], row["size"], str(row["batch"]), str(row["calls"]), f"{row['images_per_s']:.2f}",
                     f"{row['tokens_per_s']:.0f}", f"{row['tflops_per_s']:.2f}", f"{row['share_of_matmul']:.3f}",
                     "-" if peak is None else f"{peak:.1f}", f"{row['first_call_s']:.2f}", str(row["new_graphs"]),
                     row.get("attention", "")])  # fmt: skip
    return format_table(headers, body) if body else "(no rows)"


def targets(report: StageReport, variant: str) -> list[str]:
    """The issue's targets, read off the rows of `variant` at batch 8."""
    lines = []
    rows = {(r["size"], r["batch"]): r for r in report.data["rows"] if r["variant"] == variant and "images_per_s" in r}
    matmul = report.data["matmul"].get("bfloat16")
    for size, share in TARGET_SHARE.items():
        row = rows.get((size, 8))
        if row is None:
            lines.append(f"{variant} {size} x8: share of matmul >= {share:.2f}: not measured")
            continue
        verdict = "PASS" if row["share_of_matmul"] >= share else "MISS"
        lines.append(f"{variant} {size} x8: share of matmul {row['share_of_matmul']:.3f} (target >= {share:.2f}): "
                     f"{verdict}")  # fmt: skip
    for size, (ours, vs_sdpa, vs_varlen) in ISSUE_ROWS.items():
        row = rows.get((size, 8))
        if row is None or not matmul:
            lines.append(f"{variant} {size} x8 vs the authors' code: not measured")
            continue
        issue_share = row["tflops_per_s"] / row["images_per_s"] * ours / ISSUE_MATMUL_TFLOPS  # the issue's run
        authors = {"per-image SDPA": issue_share / vs_sdpa, "varlen": issue_share / vs_varlen}
        speedups = {name: row["share_of_matmul"] / share for name, share in authors.items()}
        worst = min(speedups.values())
        lines.append(f"{variant} {size} x8 vs the authors' code (issue's run, through each run's matmul share): "
                     + ", ".join(f"{v:.2f}x their {k}" for k, v in speedups.items())
                     + f" (target >= {TARGET_VS_AUTHORS}x: {'PASS' if worst >= TARGET_VS_AUTHORS else 'MISS'})")
    return lines


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------
def parse_variants(text: str, batches: list[int]) -> list[tuple[str, list[int]]]:
    """`name[:b1+b2]`, comma-separated -> `[(name, batches)]`: the batch sizes after `:`, else all of `--batches`."""
    result = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, only = part.partition(":")
        if name not in VARIANTS:
            raise argparse.ArgumentTypeError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        result.append((name, [int(b) for b in only.split("+")] if only else list(batches)))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--layers", type=int, default=40, help="trunk blocks (default 40)")
    parser.add_argument("--sizes", default="384x384,768x768,1024x1024,mixed",
                        help="HxW entries and/or 'mixed' / 'mixed-small' (default: %(default)s)")
    parser.add_argument("--batches", default="1,8,32", help="images per call (default: %(default)s)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"name[:batch sizes joined by +, instead of --batches], comma-separated, from "
                             f"{', '.join(VARIANTS)} (default: %(default)s)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row (default 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per row (default 2)")
    parser.add_argument("--min-calls", type=int, default=3, help="timed calls per row at least (default 3)")
    parser.add_argument("--matmul-size", type=int, default=8192, help="the reference matmul's size (default 8192)")
    parser.add_argument("--profile", default="384x384:8,1024x1024:8",
                        help="SIZE:BATCH rows of the first variant to profile, or 'none' (default: %(default)s)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="skip rows that would start after this many seconds (default 420)")
    parser.add_argument("--max-row-s", type=float, default=30.0,
                        help="skip rows estimated to take longer than this (default 30)")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON (rewritten after every row)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    try:
        variants = parse_variants(args.variants, batches)
        for size in sizes:
            if size not in MIXED:
                parse_size(size)
        profiles = [] if args.profile.strip().lower() in ("", "none") else [
            (p.split(":")[0], int(p.split(":")[1])) for p in args.profile.split(",")]  # fmt: skip
    except (argparse.ArgumentTypeError, ValueError, IndexError) as error:
        parser.error(str(error))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_sweep.py: PREFLIGHT FAILED: --device {args.device}, but torch {torch.__version__} sees no CUDA "
              "device", file=sys.stderr)  # fmt: skip
        return 2

    report = StageReport(args.json, LOG, matmul={}, rows=[], profile={}, agreement={}, sync_check={})
    hf_logging.disable_progress_bar()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, for the model and its matmul reference
    torch.backends.cudnn.allow_tf32 = False
    env = report.data["environment"] = environment(device)
    report.data["settings"] = {**vars(args), "variants": variants, "sizes": sizes, "batches": batches}
    log(f"torch {env['torch']} (cuda {env['torch_cuda']}), transformers {env['transformers']}, flash_attn "
        f"{env['flash_attn']}, python {env['python']}; device {device}"
        + (f" = {env['gpu']} ({env['gpu_memory_gib']} GiB)" if "gpu" in env else ""))  # fmt: skip
    log(f"packed kernel of 'sdpa': bf16 -> {env['packed_kernel_sdpa_bfloat16']}; fp32 -> "
        f"{env['packed_kernel_sdpa_float32']}")  # fmt: skip
    dtypes = {VARIANTS[name][0] for name, _ in variants}

    with report.stage("matmul reference (before)"):
        for dtype in sorted(dtypes, key=str):
            rate = matmul_tflops(args.matmul_size, dtype, device)
            report.data["matmul"][f"{str(dtype).replace('torch.', '')}_before"] = rate
            log(f"  {args.matmul_size}^3 {dtype}: {rate:.1f} TFLOP/s")

    models = None
    with report.stage(f"build the 16k model ({args.layers} layers, encode only) on {device}"):
        models = build_models(args.layers, device, dtypes)
        implementation = next(iter(models.values())).config._attn_implementation
        log(f"  attn_implementation {implementation!r}; the packed kernel per variant is in the rows")
        if implementation != "sdpa":
            raise RuntimeError(f"asked for sdpa attention, the model uses {implementation!r}")
        if device.type == "cuda":
            log(f"  {torch.cuda.memory_allocated(device) / 2**30:.1f} GiB of weights on the device")
    if models is None:
        report.write()
        return 1
    inputs = Inputs(device, next(iter(models.values())).config)

    # ---- throughput rows ------------------------------------------------------------------------------------------
    default_rate = {torch.bfloat16: 300.0, torch.float32: 40.0} if device.type == "cuda" else {}
    for name, variant_batches in variants:
        dtype, packed, compiled = VARIANTS[name]
        model = models[dtype]
        rate = default_rate.get(dtype, 0.05)  # TFLOP/s guess until a row of this variant has run
        with variant_setup(model, packed, compiled):
            for size in sizes:
                for batch in variant_batches:
                    row = {"variant": name, "size": size, "batch": batch}
                    report.data["rows"].append(row)
                    entries = inputs.calls(size, batch)
                    estimate = estimate_row_seconds(entries, rate, args.warmup, args.min_calls)
                    if elapsed() > args.budget_s:
                        row["skipped"] = "past --budget-s"
                        report.skip(f"{name} {size} x{batch}", f"past --budget-s {args.budget_s:.0f} s")
                        continue
                    if estimate > args.max_row_s:
                        row["skipped"] = f"estimated {estimate:.0f} s > --max-row-s"
                        report.skip(f"{name} {size} x{batch}", row["skipped"])
                        continue
                    row["error"] = "did not finish"
                    row["attention"] = resolve_packed_kernel(model.config._attn_implementation, device, dtype, 256)[0]
                    with report.stage(f"{name} {size} x{batch} (attention: {row['attention']})"):
                        row.update(throughput_row(model, device, entries, args.seconds, args.warmup, args.min_calls))
                        matmul = report.data["matmul"][f"{str(dtype).replace('torch.', '')}_before"]
                        row["share_of_matmul"] = row["tflops_per_s"] / matmul
                        rate = row["tflops_per_s"]
                        del row["error"]
                        log(f"  {row['images_per_s']:.2f} images/s, {row['tokens_per_s']:.0f} tokens/s, "
                            f"{row['tflops_per_s']:.2f} TFLOP/s = {row['share_of_matmul']:.3f} of the matmul, "
                            f"{row['calls']} calls, first call {row['first_call_s']:.2f} s, new graphs "
                            f"{row['new_graphs']}"
                            + (f", peak {row['peak_gpu_memory_gib']:.1f} GiB" if "peak_gpu_memory_gib" in row
                               else ""))  # fmt: skip
                    if "error" in row and report.data["errors"]:
                        row["error"] = report.data["errors"][-1]["error"]
            if compiled:
                report.data[f"graphs_{name}"] = graphs_compiled()

    # ---- profile, agreement, synchronisations ---------------------------------------------------------------------
    first_name = variants[0][0]
    dtype, packed, compiled = VARIANTS[first_name]
    for size, batch in profiles:
        if elapsed() > args.budget_s + 60:
            report.skip(f"profile {size} x{batch}", "past the budget")
            continue
        with report.stage(f"profile {first_name} {size} x{batch}"):
            with variant_setup(models[dtype], packed, compiled):
                result = profile_row(models[dtype], device, inputs.calls(size, batch))
            report.data["profile"][f"{first_name} {size} x{batch}"] = result
            busy = result["busy_fraction"]
            log("  " + (f"GPU busy {busy:.1%} of the wall time; " if busy is not None else "")
                + ", ".join(f"{k} {v['share']:.1%}" for k, v in result["classes"].items()))  # fmt: skip
    agreement_size = sizes[0]
    for dtype in sorted(models, key=str):
        if elapsed() > args.budget_s + 60:
            report.skip(f"agreement {dtype}", "past the budget")
            continue
        with report.stage(f"code agreement {dtype} ({agreement_size} x{min(8, max(batches))})"):
            labels = [("eager sdpa", "sdpa", False), ("eager viq_sdpa", "viq_sdpa", False),
                      ("compiled sdpa", "sdpa", True)]  # fmt: skip
            entry = inputs.calls(agreement_size, min(8, max(batches)))[0]
            result = agreement(models[dtype], entry, labels)
            report.data["agreement"][str(dtype).replace("torch.", "")] = result
            for label, values in result.items():
                log(f"  {label}: codes {values['vs_per_image_eager']:.4f} = per-image eager; first image alone "
                    f"{values['first_image_alone_vs_in_batch']:.4f} = in the batch")  # fmt: skip
    if device.type == "cuda" and torch.bfloat16 in models:
        with report.stage("host-device synchronisations inside encode (bf16, host inputs)"):
            entry = inputs.calls(sizes[0], min(8, max(batches)))[0]
            for label, packed, compiled in (("bf16-eager", "sdpa", False), ("bf16-compiled", "sdpa", True)):
                result = sync_check(models[torch.bfloat16], entry, label, packed, compiled)
                report.data["sync_check"][label] = result
                log(f"  {label}: {result['synchronisations']} synchronisation(s) {result['messages']}")
    else:
        report.skip("synchronisation check", "needs CUDA")

    with report.stage("matmul reference (after)"):
        for dtype in sorted(dtypes, key=str):
            key = str(dtype).replace("torch.", "")
            rate = matmul_tflops(args.matmul_size, dtype, device)
            report.data["matmul"][f"{key}_after"] = rate
            report.data["matmul"][key] = report.data["matmul"][f"{key}_before"]
            log(f"  {args.matmul_size}^3 {dtype}: {rate:.1f} TFLOP/s (before: {report.data['matmul'][key]:.1f})")

    # ---- summary --------------------------------------------------------------------------------------------------
    report.data["finished"] = True
    report.write()
    matmul = ", ".join(f"{k} {v:.1f}" for k, v in report.data["matmul"].items())
    print(f"\nEncode throughput, codes only (random weights, 16k preset, {args.layers} layers; TFLOP/s from "
          f"encode_flops; share = of the in-run {args.matmul_size}^3 matmul of the same dtype: {matmul} TFLOP/s):",
          flush=True)  # fmt: skip
    print(rows_table(report) + "\n", flush=True)
    for name, result in report.data["profile"].items():
        print(f"profile {name}: " + ", ".join(f"{k} {v['share']:.1%}" for k, v in result["classes"].items())
              + (f"; device busy {result['busy_fraction']:.1%} of the wall time" if result["busy_fraction"] else ""))
        for top in result["top"][:8]:
            print(f"    {top['share']:6.1%}  {top['name']}")
    for key in sorted(k for k in report.data if k.startswith("graphs_")):
        print(f"graphs compiled by the end of {key[7:]} (all its rows, every size): {report.data[key]}")
    print(f"SUMMARY (wall {elapsed():.0f} s, {len(report.data['errors'])} error(s)):")
    for line in targets(report, first_name):
        print(f"  {line}")
    for item in report.data["skipped"]:
        print(f"  skipped {item['what']}: {item['reason']}")
    for error in report.data["errors"]:
        print(f"  ERROR {error['stage']}: {error['error']}")
    if args.json:
        print(f"report: {args.json}")
    return 1 if report.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
