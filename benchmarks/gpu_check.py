#!/usr/bin/env python
# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""
One prepared GPU check of ViQ: parity of bf16 (SDPA and flash-attention 2) against the committed fp32 fixtures of the
official code, and encode throughput, in one short run (made for a device lease of a few minutes).

Stages (each in its own try/except: a failure is recorded in the report and the run goes on):

1. preflight (seconds, before anything heavy): the cases exist in `tests/fixtures/parity/manifest.json`, their `.npz`,
   decoded PNGs and sample images are on disk, the device is there. A missing fixture stops the run here, with exit
   status 2 and a message naming the file;
2. per parity case: the deterministic random checkpoint of
   `transformers_viq/testing/reference_checkpoint.py::make_reference_state_dict` (generated on the CPU, its sha256
   checked against the manifest), converted and loaded once in fp32 on the CPU with
   `original_checkpoint.viq_model_from_original`, then moved to the device (fp32) and copied and cast to bf16 there;
3. for each variant (`fp32-sdpa`, `bf16-sdpa`, `bf16-flash`) the fixture images (`ViQImageProcessor(do_resize=False)`,
   one packed call): code agreement with the official fp32 codes and with our fp32 (and bf16-sdpa) codes, the
   quantizer inputs, the features and the pooled embedding computed from the official codes (max |diff|, cosine) and
   from our own codes, the latents and the decoded pixels (from the official codes) against the fixture PNGs;
4. throughput for each `--sizes` entry and variant: `--batch` random images packed into one `encode` call
   (`return_pooler_output=True`), warm-up calls, then calls timed with `torch.cuda.synchronize` for `--seconds`:
   images/s, patch tokens/s, achieved TFLOP/s (FLOPs from `benchmarks/harness.py::encode_flops`) and peak GPU memory
   (`torch.cuda.max_memory_allocated`, reset per row).

Progress lines carry a timestamp and the elapsed time; the JSON report (`--json`) is rewritten after every stage, so
a run cut short still leaves what it measured. Exit status: 0 when every stage ran, 1 when a stage failed (the report
says which), 2 when the preflight failed.

Examples:

    # on the GPU (about 3 minutes on an H200; benchmarks/README.md has the full device command):
    PYTHONUNBUFFERED=1 python benchmarks/gpu_check.py --budget-s 300 --json $OUT/gpu_check.json
    # dry run on the CPU, 2-layer fixture cases (about 40 s on 2 cores):
    .venv/bin/python benchmarks/gpu_check.py --device cpu --layers 2 --cases viq16k_L2,viq64k_L2 --sizes 64x64 \
        --batch 2 --seconds 2 --skip-flash
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import hashlib
import importlib
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "parity"
MANIFEST_PATH = FIXTURES / "manifest.json"
SAMPLES = REPO / "assets" / "samples"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

import transformers_viq  # noqa: E402
from transformers_viq import ViQConfig, ViQImageProcessor, ViQModel  # noqa: E402
from transformers_viq.models.viq.modeling_viq import resolve_packed_kernel  # noqa: E402

from harness import (  # noqa: E402
    RunLog,
    StageReport,
    encode_flops,
    format_table,
    free_memory,
    make_inputs,
    parse_size,
    synchronize,
)


VARIANTS = {  # name -> (dtype, attention implementation)
    "fp32-sdpa": (torch.float32, "sdpa"),
    "bf16-sdpa": (torch.bfloat16, "sdpa"),
    "bf16-flash": (torch.bfloat16, "flash_attention_2"),
}
SIZE_NAMES = {15360: "16k", 64000: "64k"}
# The bounds of tests/models/viq/test_parity_official.py (fp32 on CPU); applied to the fp32 rows for information.
FP32_CODE_BAR, FP32_ATOL, FP32_PIXEL_BAR = 0.999, 1e-4, 1
LOG = RunLog("gpu-check")  # log("...") prints with the run's clock; elapsed() is its seconds
log, elapsed = LOG, LOG.elapsed


def environment(device: torch.device) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "transformers_viq": getattr(transformers_viq, "__version__", None),
        "transformers_viq_path": str(Path(transformers_viq.__file__).parent),
        "numpy": np.__version__,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    for name in ("diffusers", "flash_attn"):
        try:
            env[name] = __import__(name).__version__
        except Exception as error:  # not installed, or broken
            env[name] = f"unavailable ({type(error).__name__})"
    for dtype in (torch.bfloat16, torch.float32):  # the kernel the sdpa variants run the packed attention with
        kernel, note, _ = resolve_packed_kernel("sdpa", device, dtype, 256)
        env[f"packed_kernel_{str(dtype).replace('torch.', '')}"] = kernel + (f" ({note})" if note else "")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   gpu_multiprocessors=props.multi_processor_count,
                   gpu_capability=f"{props.major}.{props.minor}")  # fmt: skip
    return env


# ----------------------------------------------------------------------------------------------------------------
# Preflight
# ----------------------------------------------------------------------------------------------------------------
def parse_sizes(text: str) -> list[tuple[int, int]]:
    if text.strip().lower() in ("", "none"):
        return []
    return [parse_size(part.strip()) for part in text.split(",") if part.strip()]


def flash_skip_reason(args, device: torch.device) -> str | None:
    if args.skip_flash:
        return "--skip-flash given"
    if device.type != "cuda":
        return f"device is {device.type}: flash_attention_2 needs CUDA"
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return "flash-attn is not installed (transformers.utils.is_flash_attn_2_available() is False)"
    return None


def preflight(args, manifest: dict) -> list[str]:
    """Everything a case needs, checked before any heavy work; returns the problems found."""
    problems = []
    cases = manifest.get("cases", {})
    for name in args.cases:
        case = cases.get(name)
        if case is None:
            problems.append(f"case {name!r} is not in {MANIFEST_PATH} (cases there: {', '.join(cases)})")
            continue
        if case["num_layers"] != args.layers:
            problems.append(f"case {name!r} has {case['num_layers']} trunk layers but --layers is {args.layers} "
                            f"(pass --layers {case['num_layers']}, or other --cases)")  # fmt: skip
        if case.get("codebook_size") not in SIZE_NAMES:
            problems.append(f"case {name!r}: unknown codebook size {case.get('codebook_size')}")
        needed = [FIXTURES / case.get("npz", f"{name}.npz")]
        needed += [SAMPLES / image for image in case["images"]]
        needed += [FIXTURES / png for png in case.get("decoded_png", [])] or [FIXTURES / f"{name}_decoded_0.png"]
        for path in needed:
            if not path.is_file():
                problems.append(f"case {name!r}: fixture file missing: {path}")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------
def state_dict_sha256(state_dict: dict) -> str:
    """The manifest's digest: per (name, tensor) in order, name, repr(shape), str(dtype) and the raw bytes."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        digest.update(name.encode())
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_fp32_model(levels, codebook_size: int, layers: int, seed: int, with_decoder: bool, expected_sha: str | None,
                     info: dict) -> ViQModel:  # fmt: skip
    """The reference checkpoint, generated on the CPU, converted and loaded in fp32 on the CPU."""
    from transformers_viq.original_checkpoint import viq_model_from_original
    from transformers_viq.testing.reference_checkpoint import make_reference_state_dict

    config = ViQConfig.from_preset(SIZE_NAMES[codebook_size], vision_config={"num_hidden_layers": layers},
                                   include_decoder=with_decoder)  # fmt: skip
    start = time.perf_counter()
    original = make_reference_state_dict(levels, num_layers=layers, seed=seed, with_vae=with_decoder)
    info["generate_s"] = round(time.perf_counter() - start, 1)
    info["num_params_checkpoint"] = sum(t.numel() for t in original.values())
    log(f"  checkpoint generated: {len(original)} tensors, {info['num_params_checkpoint'] / 1e9:.3f} B parameters, "
        f"{info['generate_s']} s")  # fmt: skip
    if expected_sha and with_decoder:
        start = time.perf_counter()
        got = state_dict_sha256(original)
        info["sha256"] = got
        info["sha256_matches_manifest"] = got == expected_sha
        info["sha256_s"] = round(time.perf_counter() - start, 1)
        log(f"  checkpoint sha256 {'matches' if got == expected_sha else 'DIFFERS FROM'} the manifest "
            f"({info['sha256_s']} s)")  # fmt: skip
        if got != expected_sha:
            raise RuntimeError(f"the generated checkpoint's sha256 {got} differs from the manifest's {expected_sha}: "
                               "this torch does not reproduce the fixtures' weights, parity would be meaningless")
    else:
        info["sha256_matches_manifest"] = None  # without the VAE keys the digest cannot be compared
    start = time.perf_counter()
    model = viq_model_from_original(original, config, dtype=torch.float32,
                                    attn_implementation="sdpa").eval()  # fmt: skip
    del original
    gc.collect()
    info["load_s"] = round(time.perf_counter() - start, 1)
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"asked for sdpa attention, the model uses {model.config._attn_implementation!r}")
    info["num_params_model"] = sum(p.numel() for p in model.parameters())
    log(f"  converted and loaded in fp32 on the CPU: {info['num_params_model'] / 1e9:.3f} B parameters, "
        f"{info['load_s']} s")  # fmt: skip
    return model


def place_models(model_cpu: ViQModel, device: torch.device, variants: list[str], info: dict) -> dict:
    """`{dtype: model on device}`: the fp32 model moved, and a bf16 copy of it made on the device."""
    start = time.perf_counter()
    models = {torch.float32: model_cpu.to(device)}
    if any(VARIANTS[v][0] == torch.bfloat16 for v in variants):
        models[torch.bfloat16] = copy.deepcopy(models[torch.float32]).to(torch.bfloat16)
    if not any(VARIANTS[v][0] == torch.float32 for v in variants):
        del models[torch.float32]
    free_memory()
    synchronize(device)
    info["place_s"] = round(time.perf_counter() - start, 1)
    if device.type == "cuda":
        info["gpu_memory_allocated_gib"] = round(torch.cuda.memory_allocated(device) / 2**30, 2)
    allocated = f", {info['gpu_memory_allocated_gib']:.2f} GiB allocated" if device.type == "cuda" else ""
    log(f"  on {device}: {', '.join(str(d).replace('torch.', '') for d in models)} ({info['place_s']} s{allocated})")
    return models


@contextlib.contextmanager
def attention(model: ViQModel, implementation: str):
    """Use `implementation` inside the block, back to what it was after (even on error)."""
    previous = model.config._attn_implementation
    if implementation != previous:
        model.set_attn_implementation(implementation)
        if model.config._attn_implementation != implementation:
            raise RuntimeError(
                f"set_attn_implementation({implementation!r}) left {model.config._attn_implementation!r}"
            )
    try:
        yield model
    finally:
        if model.config._attn_implementation != previous:
            model.set_attn_implementation(previous)


# ----------------------------------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------------------------------
def load_case_fixtures(name: str, case: dict) -> dict:
    with np.load(FIXTURES / case.get("npz", f"{name}.npz")) as archive:
        reference = dict(archive)
    pngs = case.get("decoded_png") or [f"{name}_decoded_{i}.png" for i in range(len(case["images"]))]
    reference["pngs"] = [np.array(Image.open(FIXTURES / png).convert("RGB")) for png in pngs]
    processor = ViQImageProcessor(do_resize=False, max_pixels=4096 * 4096)
    inputs = processor(images=[str(SAMPLES / image) for image in case["images"]], return_tensors="pt")
    if not np.array_equal(inputs["image_grid_hw"].numpy(), reference["grid_hw"]):
        raise RuntimeError(f"patch grids {inputs['image_grid_hw'].tolist()} differ from the fixture's "
                           f"{reference['grid_hw'].tolist()}")  # fmt: skip
    reference["inputs"] = inputs
    return reference


def _cosines(a: torch.Tensor, b: np.ndarray) -> list[float]:
    return torch.nn.functional.cosine_similarity(a.double().cpu(), torch.from_numpy(b).double(), dim=-1).tolist()


def parity_variant(model: ViQModel, device: torch.device, reference: dict, ours: dict[str, list],
                   decode: bool) -> tuple[dict, list]:  # fmt: skip
    """
    Compare one model (dtype and attention already set) with the official fp32 outputs of one case, and its codes with
    those of the variants already run (`ours`: variant -> codes per image; `fp32-sdpa` and `bf16-sdpa` are reported).
    """
    inputs = reference["inputs"]
    grid = inputs["image_grid_hw"]
    grid_hw = [tuple(g) for g in grid.tolist()]
    n = len(grid_hw)
    counts = [4 * h * w for h, w in grid_hw]
    patches = [h * w for h, w in grid_hw]
    official = [reference[f"codes_{i}"].astype(np.int64) for i in range(n)]
    official_codes = torch.from_numpy(np.concatenate(official))
    result: dict = {}
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(pixel_values=inputs["pixel_values"].to(device), image_grid_hw=grid)
        synchronize(device)
        result["encode_s"] = round(time.perf_counter() - start, 3)
        codes = [c.numpy() for c in out.image_codes.cpu().split(counts)]
        values = [v.float().cpu().numpy() for v in out.quantizer_inputs.split(counts)]
        per_image = [float((c == o).mean()) for c, o in zip(codes, official)]
        result["codes_vs_official"] = float(sum((c == o).sum() for c, o in zip(codes, official)) / sum(counts))
        result["codes_vs_official_per_image"] = per_image
        result["codes_total"] = sum(counts)
        for other, key in (("fp32-sdpa", "codes_vs_our_fp32"), ("bf16-sdpa", "codes_vs_our_bf16_sdpa")):
            if other in ours:
                result[key] = float(sum((c == f).sum() for c, f in zip(codes, ours[other])) / sum(counts))
        result["quantizer_input_max_abs_diff"] = max(float(np.abs(v - reference[f"project_in_{i}"]).max())
                                                     for i, v in enumerate(values))  # fmt: skip
        own = out.pooler_output.float().cpu()
        result["pooled_own_codes_max_abs_diff"] = float(
            (own - torch.from_numpy(reference["pooler_output"])).abs().max()
        )
        result["pooled_own_codes_cosine"] = _cosines(own, reference["pooler_output"])
        del out

        # everything downstream of the codes, from the OFFICIAL codes (a flipped code cannot blur the comparison)
        features = model.embed_codes(official_codes, grid)
        pooled = model.pool(features, grid_hw).float().cpu()
        feats = [f.float().cpu().numpy() for f in features.split(patches)]
        result["features_max_abs_diff"] = max(
            max(float(np.abs(f[:4] - reference[f"features_head_{i}"]).max()),
                float(np.abs(f[-4:] - reference[f"features_tail_{i}"]).max()))
            for i, f in enumerate(feats)
        )  # fmt: skip
        result["pooled_official_codes_max_abs_diff"] = float(
            (pooled - torch.from_numpy(reference["pooler_output"])).abs().max()
        )
        result["pooled_official_codes_cosine"] = _cosines(pooled, reference["pooler_output"])
        result["pooled_official_codes_allclose_1e-4"] = bool(
            np.allclose(pooled.numpy(), reference["pooler_output"], rtol=FP32_ATOL, atol=FP32_ATOL)
        )
        del features
        if decode:
            latents = [lat.float().cpu().numpy() for lat in model.decode_latents(official_codes, grid)]
            result["latents_max_abs_diff"] = max(
                max(float(np.abs(lat[:, :4, :4] - reference[f"latents_tl_{i}"]).max()),
                    float(np.abs(lat[:, -4:, -4:] - reference[f"latents_br_{i}"]).max()))
                for i, lat in enumerate(latents)
            )  # fmt: skip
            pixels = ViQImageProcessor().postprocess(model.decode(official_codes, grid), return_tensors="np")
            synchronize(device)
            max_diffs, mean_diffs = [], []
            for index, (got, expected) in enumerate(zip(pixels, reference["pngs"])):
                if got.shape != expected.shape:
                    raise RuntimeError(f"decoded image {index} is {got.shape}, the fixture PNG {expected.shape}")
                difference = np.abs(got.astype(np.int16) - expected.astype(np.int16))
                max_diffs.append(int(difference.max()))
                mean_diffs.append(float(difference.mean()))
            result["pixels_max_abs_diff"] = max(max_diffs)
            result["pixels_max_abs_diff_per_image"] = max_diffs
            result["pixels_mean_abs_diff"] = float(np.mean(mean_diffs))
    result["total_s"] = round(time.perf_counter() - start, 3)
    return result, codes


def fp32_verdict(row: dict) -> str:
    """The CPU test's bounds applied to an fp32 row (information: other kernels may legitimately differ a little)."""
    misses = []
    if row.get("codes_vs_official", 0.0) < FP32_CODE_BAR:
        misses.append(f"codes < {FP32_CODE_BAR}")
    if not row.get("pooled_official_codes_allclose_1e-4", False):
        misses.append("pooled not within 1e-4")
    if row.get("pixels_max_abs_diff", 0) > FP32_PIXEL_BAR:
        misses.append(f"pixels > {FP32_PIXEL_BAR}/255")
    return "PASS" if not misses else "MISS (" + ", ".join(misses) + ")"


# ----------------------------------------------------------------------------------------------------------------
# Throughput
# ----------------------------------------------------------------------------------------------------------------
def throughput_row(model: ViQModel, device: torch.device, size: tuple[int, int], batch: int, seconds: float,
                   warmup: int, dtype: torch.dtype) -> dict:  # fmt: skip
    processor = ViQImageProcessor(do_resize=False)
    pixel_values, grid = make_inputs(processor, [size] * batch, dtype, seed=size[0] * 10007 + size[1])
    pixel_values = pixel_values.to(device)
    grid_hw = [tuple(g) for g in grid.tolist()]
    tokens = pixel_values.shape[0]
    flops = encode_flops(model.config, grid_hw, calls=1)["total"]
    free_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            synchronize(device)
            start = time.perf_counter()
            model.encode(pixel_values, grid, return_pooler_output=True)
            synchronize(device)
            times.append(time.perf_counter() - start)
        warm = list(times)
        times = []
        loop_start = time.perf_counter()
        while time.perf_counter() - loop_start < seconds or len(times) < 2:
            start = time.perf_counter()
            model.encode(pixel_values, grid, return_pooler_output=True)
            synchronize(device)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    row = {
        "images": batch, "tokens": tokens, "flops": flops, "calls": len(times), "warmup_s": warm,
        "seconds_per_call_median": median, "seconds_per_call_min": min(times), "seconds_per_call_max": max(times),
        "images_per_s": batch / median, "tokens_per_s": tokens / median, "tflops_per_s": flops / median / 1e12,
    }  # fmt: skip
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        row.update(peak_gpu_memory_gib=peak / 2**30, peak_gpu_memory_above_weights_gib=(peak - base) / 2**30)
    return row


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------
def _fmt(value, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        value = min(value)
    return format(value, spec)


def parity_table(report: StageReport) -> str:
    headers = ["case", "variant", "codes=official", "worst image", "codes=our fp32", "codes=bf16-sdpa", "q-in max|d|",
               "feat max|d|", "pooled(off.codes) max|d|", "cos min", "pooled(own codes) max|d|", "cos min",
               "latent max|d|", "pixels max|d|", "pixels mean|d|", "s", "note"]  # fmt: skip
    body = []
    for name, case in report.data["cases"].items():
        for variant, row in case.get("variants", {}).items():
            if "error" in row or "skipped" in row:
                body.append([name, variant] + ["-"] * 14 + [row.get("error") or row.get("skipped")])
                continue
            note = f"fp32 vs CPU-test bounds: {row['fp32_check']}" if "fp32_check" in row else ""
            body.append([
                name, variant, _fmt(row["codes_vs_official"]), _fmt(row["codes_vs_official_per_image"]),
                _fmt(row.get("codes_vs_our_fp32")), _fmt(row.get("codes_vs_our_bf16_sdpa")),
                _fmt(row["quantizer_input_max_abs_diff"], ".2e"),
                _fmt(row["features_max_abs_diff"], ".2e"), _fmt(row["pooled_official_codes_max_abs_diff"], ".2e"),
                _fmt(row["pooled_official_codes_cosine"], ".6f"), _fmt(row["pooled_own_codes_max_abs_diff"], ".2e"),
                _fmt(row["pooled_own_codes_cosine"], ".6f"), _fmt(row.get("latents_max_abs_diff"), ".2e"),
                "-" if "pixels_max_abs_diff" not in row else f"{row['pixels_max_abs_diff']}/255",
                _fmt(row.get("pixels_mean_abs_diff"), ".3f"), f"{row['total_s']:.1f}", note,
            ])  # fmt: skip
    return format_table(headers, body) if body else "(no parity rows)"


def throughput_table(report: StageReport) -> str:
    headers = ["size", "variant", "images", "tokens", "calls", "s/call", "images/s", "tokens/s", "TFLOP/s",
               "peak GiB", "peak-weights GiB", "note"]  # fmt: skip
    body = []
    for row in report.data["throughput"]:
        if "error" in row or "skipped" in row:
            body.append([row["size"], row["variant"]] + ["-"] * 9 + [row.get("error") or row.get("skipped")])
            continue
        body.append([
            row["size"], row["variant"], str(row["images"]), str(row["tokens"]), str(row["calls"]),
            f"{row['seconds_per_call_median']:.4f}", f"{row['images_per_s']:.2f}", f"{row['tokens_per_s']:.0f}",
            f"{row['tflops_per_s']:.2f}", _fmt(row.get("peak_gpu_memory_gib"), ".2f"),
            _fmt(row.get("peak_gpu_memory_above_weights_gib"), ".2f"), "",
        ])  # fmt: skip
    return format_table(headers, body) if body else "(no throughput rows)"


def summary(report: StageReport) -> list[str]:
    lines = []
    for name, case in report.data["cases"].items():
        for variant, row in case.get("variants", {}).items():
            if "codes_vs_official" not in row:
                lines.append(f"parity {name} {variant}: {row.get('error') or row.get('skipped') or 'no result'}")
                continue
            text = (f"parity {name} {variant}: codes {row['codes_vs_official']:.4f} vs official"
                    + (f", {row['codes_vs_our_fp32']:.4f} vs our fp32" if "codes_vs_our_fp32" in row else "")
                    + (f", {row['codes_vs_our_bf16_sdpa']:.4f} vs our bf16-sdpa"
                       if "codes_vs_our_bf16_sdpa" in row else "")
                    + f"; pooled cos min {min(row['pooled_official_codes_cosine']):.6f} (official codes), "
                    f"{min(row['pooled_own_codes_cosine']):.6f} (own codes)")  # fmt: skip
            if "pixels_max_abs_diff" in row:
                text += f"; pixels max {row['pixels_max_abs_diff']}/255 mean {row['pixels_mean_abs_diff']:.3f}"
            if "fp32_check" in row:
                text += f"; fp32 vs CPU-test bounds: {row['fp32_check']}"
            lines.append(text)
    for row in report.data["throughput"]:
        if "images_per_s" in row:
            memory = f", peak {row['peak_gpu_memory_gib']:.1f} GiB" if "peak_gpu_memory_gib" in row else ""
            lines.append(f"throughput {row['size']} {row['variant']} x{row['images']}: {row['images_per_s']:.2f} "
                         f"images/s, {row['tflops_per_s']:.1f} TFLOP/s{memory}")  # fmt: skip
        else:
            lines.append(f"throughput {row['size']} {row['variant']}: {row.get('error') or row.get('skipped')}")
    for item in report.data["skipped"]:
        lines.append(f"skipped {item['what']}: {item['reason']}")
    for error in report.errors:
        lines.append(f"ERROR {error['stage']}: {error['error']}")
    return lines


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------
def estimate_seconds(args, manifest: dict, variants: list[str], device: torch.device) -> float:
    """A rough guess, for the log: CPU checkpoint work scales with parameters, GPU work is short."""
    total = 15.0  # imports, fixtures
    for name in args.cases:
        params = manifest["cases"][name].get("state_dict_num_params", 1.7e9)
        total += 40.0 * params / 1.7e9  # generate + sha256 + convert + load on the CPU, copies
        layers = manifest["cases"][name]["num_layers"]
        total += len(variants) * (10.0 if device.type == "cuda" else 3.0 + 30.0 * layers / 40)
    if not args.cases and args.sizes:
        total += 60.0 * args.layers / 40
    total += len(args.sizes) * len(variants) * (args.seconds + 5.0)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--layers", type=int, default=40,
                        help="trunk blocks; the default cases are the manifest's cases with this many (default 40)")
    parser.add_argument("--cases", default=None,
                        help="parity cases of tests/fixtures/parity/manifest.json, comma-separated; 'none' for no "
                             "parity (default: the cases with --layers trunk blocks, i.e. viq16k_L40)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="dtype/attention variants, comma-separated (default: %(default)s)")
    parser.add_argument("--sizes", default="384x384,768x768",
                        help="throughput image sizes HxW, comma-separated; 'none' for no throughput (default: "
                             "%(default)s)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=8, help="images per packed call for throughput (default 8)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per throughput row (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each throughput row (default 2)")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="skip stages that would start after this many seconds of wall time (default 480)")
    parser.add_argument("--no-decode", action="store_true", help="skip the latents/pixels comparison")
    parser.add_argument("--skip-flash", action="store_true", help="leave out flash_attention_2")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON (rewritten after every stage)")
    args = parser.parse_args(argv)

    report = StageReport(args.json, LOG, cases={}, throughput=[])
    hf_logging.disable_progress_bar()  # keep the log readable (no "Loading weights" bars)
    try:
        manifest = json.loads(MANIFEST_PATH.read_text())
    except (OSError, ValueError) as error:
        print(f"gpu_check.py: PREFLIGHT FAILED, cannot read the fixture manifest {MANIFEST_PATH}: {error}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        sizes = parse_sizes(args.sizes)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    args.sizes = sizes
    if args.cases is None:
        args.cases = [n for n, c in manifest["cases"].items() if c["num_layers"] == args.layers]
    else:
        args.cases = [] if args.cases.strip().lower() in ("", "none") else [
            c.strip() for c in args.cases.split(",") if c.strip()]  # fmt: skip
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.layers < 1 or args.batch < 1 or args.seconds <= 0:
        parser.error("--layers and --batch must be >= 1, --seconds > 0")

    # ---- preflight ------------------------------------------------------------------------------------------------
    device = torch.device(args.device)
    problems = preflight(args, manifest)
    if device.type == "cuda" and not torch.cuda.is_available():
        problems.append(f"--device {args.device} asked for, but torch {torch.__version__} sees no CUDA device")
    if not args.cases and not args.sizes:
        problems.append("nothing to do: no --cases and no --sizes")
    if problems:
        print("gpu_check.py: PREFLIGHT FAILED, nothing was run:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        report.data["preflight_problems"] = problems
        report.write()
        return 2
    torch.set_float32_matmul_precision("highest")  # fp32 means fp32 (no TF32) in both parity and throughput
    torch.backends.cudnn.allow_tf32 = False
    flash_reason = flash_skip_reason(args, device)
    if flash_reason and "bf16-flash" in variants:
        variants.remove("bf16-flash")
        report.skip("bf16-flash", flash_reason)
    try:
        importlib.import_module("diffusers")  # the Qwen-Image VAE of the decoder
        with_decoder = True
    except Exception as error:  # missing, or broken against this torch
        with_decoder = False
        reason = f"diffusers cannot be imported ({type(error).__name__}: {error}): models built without the decoder"
        report.skip("decoding (latents, pixels)", reason)
    decode = with_decoder and not args.no_decode
    if args.no_decode:
        report.skip("decoding (latents, pixels)", "--no-decode given")

    report.data["environment"] = environment(device)
    report.data["settings"] = {
        "device": str(device), "layers": args.layers, "cases": args.cases, "variants": variants,
        "sizes": [f"{h}x{w}" for h, w in args.sizes], "batch": args.batch, "seconds": args.seconds,
        "warmup": args.warmup, "budget_s": args.budget_s, "decode": decode, "with_decoder": with_decoder,
        "argv": sys.argv[1:] if argv is None else argv,
    }  # fmt: skip
    env = report.data["environment"]
    log(f"torch {env['torch']} (cuda {env['torch_cuda']}), transformers {env['transformers']}, diffusers "
        f"{env['diffusers']}, flash_attn {env['flash_attn']}, python {env['python']}; device {device}"
        + (f" = {env['gpu']} ({env['gpu_memory_gib']} GiB)" if "gpu" in env else ""))  # fmt: skip
    log(f"transformers_viq from {env['transformers_viq_path']}; packed attention of the sdpa variants: bf16 "
        f"{env['packed_kernel_bfloat16']}, fp32 {env['packed_kernel_float32']}")  # fmt: skip
    log(f"cases {args.cases or 'none'}; variants {variants}; throughput sizes "
        f"{report.data['settings']['sizes'] or 'none'} x{args.batch}, {args.seconds} s each")  # fmt: skip
    log(f"estimated wall time: ~{estimate_seconds(args, manifest, variants, device):.0f} s (rough); stages starting "
        f"after {args.budget_s:.0f} s are skipped")  # fmt: skip
    report.write()

    # ---- parity ---------------------------------------------------------------------------------------------------
    bench_models: dict | None = None  # the first case's models serve the throughput rows
    for case_index, name in enumerate(args.cases):
        case = manifest["cases"][name]
        entry = report.data["cases"].setdefault(name, {"build": {}, "variants": {}})
        if elapsed() > args.budget_s:
            report.skip(f"case {name}", f"past --budget-s {args.budget_s:.0f} s")
            continue
        models = None
        with report.stage(f"case {name}: build ({case['num_layers']} layers, levels {case['levels']})"):
            model_cpu = build_fp32_model(case["levels"], case["codebook_size"], case["num_layers"], case["seed"],
                                         with_decoder, case.get("state_dict_sha256"), entry["build"])  # fmt: skip
            models = place_models(model_cpu, device, variants, entry["build"])
            del model_cpu
        if models is None:
            for variant in variants:
                entry["variants"][variant] = {"skipped": "model build failed"}
            continue
        reference = None
        with report.stage(f"case {name}: fixtures"):
            reference = load_case_fixtures(name, case)
        ours: dict[str, list] = {}  # variant -> codes per image, for the cross-variant agreement
        for variant in variants:
            dtype, implementation = VARIANTS[variant]
            if reference is None:
                entry["variants"][variant] = {"skipped": "fixtures failed to load"}
                continue
            if elapsed() > args.budget_s:
                entry["variants"][variant] = {"skipped": "past --budget-s"}
                report.skip(f"parity {name} {variant}", f"past --budget-s {args.budget_s:.0f} s")
                continue
            entry["variants"][variant] = {"error": "did not finish"}
            with report.stage(f"parity {name} {variant}"):
                with attention(models[dtype], implementation) as model:
                    row, ours[variant] = parity_variant(model, device, reference, ours, decode)
                if variant == "fp32-sdpa":
                    row["fp32_check"] = fp32_verdict(row)
                entry["variants"][variant] = row
                text = (f"  codes {row['codes_vs_official']:.4f} vs official, pooled cos min "
                        f"{min(row['pooled_official_codes_cosine']):.6f} (official codes)")  # fmt: skip
                if "pixels_max_abs_diff" in row:
                    text += f", pixels max {row['pixels_max_abs_diff']}/255"
                log(text)
            if "error" in entry["variants"][variant] and report.errors:
                entry["variants"][variant]["error"] = report.errors[-1]["error"]
        if case_index == 0 and args.sizes:
            bench_models = models
        else:
            del models
            free_memory()
    if report.data["cases"]:
        print("\nParity against the official fp32 outputs (codes from one packed call of the fixture images; "
              "features, pooled embedding, latents and pixels also from the OFFICIAL codes):", flush=True)
        print(parity_table(report) + "\n", flush=True)

    # ---- throughput -----------------------------------------------------------------------------------------------
    if args.sizes:
        if bench_models is None:
            with report.stage(f"throughput model: reference checkpoint 16k, {args.layers} layers"):
                info = report.data.setdefault("throughput_model", {})
                model_cpu = build_fp32_model(manifest["cases"].get("viq16k_L40", {}).get("levels", [8, 8, 8, 6, 5]),
                                             15360, args.layers, 0, with_decoder, None, info)  # fmt: skip
                bench_models = place_models(model_cpu, device, variants, info)
                del model_cpu
        for size in args.sizes:
            size_name = f"{size[0]}x{size[1]}"
            for variant in variants:
                row = {"size": size_name, "variant": variant}
                report.data["throughput"].append(row)
                if bench_models is None:
                    row["skipped"] = "no model"
                    continue
                if elapsed() > args.budget_s:
                    row["skipped"] = "past --budget-s"
                    report.skip(f"throughput {size_name} {variant}", f"past --budget-s {args.budget_s:.0f} s")
                    continue
                dtype, implementation = VARIANTS[variant]
                row["error"] = "did not finish"
                with report.stage(f"throughput {size_name} {variant} x{args.batch}"):
                    with attention(bench_models[dtype], implementation) as model:
                        row.update(throughput_row(model, device, size, args.batch, args.seconds, args.warmup, dtype))
                    del row["error"]
                    log(f"  {row['images_per_s']:.2f} images/s, {row['tokens_per_s']:.0f} tokens/s, "
                        f"{row['tflops_per_s']:.2f} TFLOP/s, {row['calls']} calls of "
                        f"{row['seconds_per_call_median'] * 1e3:.1f} ms"
                        + (f", peak {row['peak_gpu_memory_gib']:.2f} GiB" if "peak_gpu_memory_gib" in row else ""))
                if "error" in row and report.errors:
                    row["error"] = report.errors[-1]["error"]
        print(f"\nEncode throughput ({args.batch} random images packed per call, return_pooler_output=True, "
              f"{args.warmup} warm-up calls, then >= {args.seconds} s of timed calls; TFLOP/s from encode_flops; "
              "fp32 without TF32):", flush=True)  # fmt: skip
        print(throughput_table(report) + "\n", flush=True)
    del bench_models
    free_memory()

    report.data["finished"] = True
    report.write()
    print(f"SUMMARY (wall {elapsed():.0f} s, {len(report.errors)} error(s)):")
    for line in summary(report):
        print(f"  {line}")
    if args.json:
        print(f"report: {args.json}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
