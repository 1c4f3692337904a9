#!/usr/bin/env python
# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""
Encode throughput of the full-size ViQ tokenizer (`ViQModel.encode`) on CPU.

What it measures, side by side in one process (the machine is shared and noisy, so the ratios are the result and
the absolute numbers are for reference):

1. one image per call for each `--sizes` entry (default 256x256 and 512x512);
2. a mixed batch (`--mixed`, default 256x256, 384x512, 512x320) packed into one call, against the same images
   encoded one call each (the time of the three calls together) -> ratio packed / sequential (target <= 1.05);
3. for every measurement, the achieved GFLOP/s (FLOPs counted analytically by `encode_flops`) against a plain
   `torch.mm` of `(N_tokens x hidden) @ (hidden x intermediate)` in the same dtype and thread count, timed the same
   way in the same run (target >= 0.90 at 512x512).

Every measurement has a warm-up call first, then `--repeats` timed calls (median reported, min/max shown). Each timed
model sample is bracketed by two matmul-reference windows (each 5% of the call, at least 0.5 s) so that both see the
same machine load, and the CPU load of other processes during the samples is reported ("other load").
Random weights (`ViQModel(config)`), images from random uint8 arrays through `ViQImageProcessor(do_resize=False)`.

Examples:

    python benchmarks/encode.py --layers 2 --repeats 1            # quick check of the script
    python benchmarks/encode.py --json outputs/bench_encode.json  # the full model (about 7 GB of fp32 weights)
    python benchmarks/encode.py --dtype bf16 --attn eager --breakdown
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import transformers

import transformers_viq
from transformers_viq import ViQConfig, ViQImageProcessor, ViQModel

from harness import ENCODE_COMPONENTS, encode_flops, format_table, make_inputs, parse_size, parse_sizes  # noqa: F401


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------------------------
# FLOP count
# ----------------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------------
# Machine and memory
# ----------------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """Current resident set size of this process."""
    kib = _proc_status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # best effort off Linux


def peak_rss_bytes() -> int:
    """High-water RSS (`VmHWM`, resettable with `reset_peak_rss`; `ru_maxrss` where /proc is missing)."""
    kib = _proc_status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux >= 4.0: `echo 5 > /proc/self/clear_refs`)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def wait_for_memory(min_gib: float, timeout_s: float, poll_s: float = 60.0) -> None:
    """Block until `MemAvailable` reaches `min_gib` GiB (this machine is shared), or give up after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        available = available_memory_bytes()
        if available is None or available >= min_gib * 2**30:
            return
        if time.monotonic() >= deadline:
            sys.exit(f"Only {available / 2**30:.1f} GiB available after {timeout_s:.0f} s; need {min_gib} GiB.")
        log(f"{available / 2**30:.1f} GiB available, waiting for {min_gib} GiB ...")
        time.sleep(poll_s)


def log(message: str) -> None:
    print(f"[bench-encode {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs of the machine spent busy since boot (`/proc/stat`; steal counts as busy)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class LoadMonitor:
    """
    CPU load of everything else on the machine while a measurement runs: (machine busy time - this process's CPU
    time) / wall time, in cores. On a shared machine a sample with a high value was slowed down by someone else.
    """

    def __init__(self):
        self.samples: list[float] = []

    @contextlib.contextmanager
    def watch(self):
        busy, own, start = _machine_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
        try:
            yield
        finally:
            wall = time.perf_counter() - start
            busy_end = _machine_busy_seconds()
            if busy is not None and busy_end is not None and wall > 0.2:
                other = (busy_end - busy) - (_own_cpu_seconds() - own)
                self.samples.append(max(0.0, other / wall))

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


class MatmulReference:
    """
    `torch.mm((N x hidden) @ (hidden x intermediate))` in the model's dtype: the GEMM rate attainable here.

    Each model sample is bracketed by two matmul windows (`bracket`), each lasting a fraction of the model call, so
    that the reference sees the same machine load as the model (this machine is shared).
    """

    def __init__(self, hidden: int, intermediate: int, dtype: torch.dtype, fraction: float = 0.05,
                 min_seconds: float = 0.5):  # fmt: skip
        self.hidden, self.intermediate, self.dtype = hidden, intermediate, dtype
        self.fraction, self.min_seconds = fraction, min_seconds
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(hidden, intermediate, generator=generator).to(dtype)
        self._inputs: dict[int, torch.Tensor] = {}

    def flops(self, tokens: int) -> int:
        return 2 * tokens * self.hidden * self.intermediate

    def _input(self, tokens: int) -> torch.Tensor:
        if tokens not in self._inputs:
            generator = torch.Generator().manual_seed(tokens)
            self._inputs[tokens] = torch.randn(tokens, self.hidden, generator=generator).to(self.dtype)
            torch.mm(self._inputs[tokens], self.weight)  # warm-up
        return self._inputs[tokens]

    def _window(self, tokens: int, seconds: float) -> tuple[float, int]:
        x, loops, start = self._input(tokens), 0, time.perf_counter()
        while True:
            torch.mm(x, self.weight)
            loops += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return elapsed, loops

    def bracket(self, tokens: int, model_seconds: float, fn: Callable[[], object]) -> float:
        """Run `fn` between two matmul windows of `fraction * model_seconds` (at least `min_seconds`) each; returns
        the seconds per `torch.mm` call over both windows."""
        seconds = max(self.min_seconds, self.fraction * model_seconds)
        before, loops_before = self._window(tokens, seconds)
        fn()
        after, loops_after = self._window(tokens, seconds)
        return (before + after) / (loops_before + loops_after)


# ----------------------------------------------------------------------------------------------------------------
# Model and inputs
# ----------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(layers: int, dtype: torch.dtype, attn: str) -> ViQModel:
    """The released 16k architecture with `layers` trunk blocks and random weights (the VAE is built too)."""
    config = ViQConfig.from_preset("16k", vision_config={"num_hidden_layers": layers}, attn_implementation=attn)
    with default_dtype(dtype):  # built directly in `dtype`: no transient fp32 copy of a bf16 model
        model = ViQModel(config)
    model.eval()
    if model.config._attn_implementation != attn:
        raise RuntimeError(f"Asked for attention {attn!r}, the model uses {model.config._attn_implementation!r}.")
    return model


# ----------------------------------------------------------------------------------------------------------------
# Per-component timing (--breakdown)
# ----------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def component_timer(model: ViQModel, seconds: dict[str, float]):
    """Wall time of each top-level submodule `encode` calls (forward pre/post hooks; the post-LayerNorm of the pooling
    path is counted with `head`)."""
    starts: dict[str, float] = {}
    handles = []
    modules = {name: getattr(model, name) for name in ENCODE_COMPONENTS}
    modules["post_layernorm"] = model.post_layernorm
    for name, module in modules.items():
        key = "head" if name == "post_layernorm" else name

        def pre_hook(_module, _args, key=key, name=name):
            starts[name] = time.perf_counter()

        def post_hook(_module, _args, _output, key=key, name=name):
            seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - starts.pop(name)

        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    try:
        yield seconds
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------------------------------------------
# Benchmark
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    images: int
    tokens: int
    flops: int
    times: list[float]
    mm_times: list[float]
    mm_tokens: int
    mm_flops: int
    peak_rss_delta: int | None = None
    other_load: float | None = None

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9

    @property
    def mm_gflops(self) -> float:
        return self.mm_flops / statistics.median(self.mm_times) / 1e9

    @property
    def ratio_to_mm(self) -> float:
        """Median over the repeats of (model GFLOP/s / GFLOP/s of the matmul windows around that sample): pairing
        each sample with its own reference cancels most of the load changes between repeats."""
        pairs = zip(self.times, self.mm_times)
        return statistics.median((self.flops / seconds) / (self.mm_flops / mm) for seconds, mm in pairs)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(
            seconds=self.seconds,
            tokens_per_s=self.tokens / self.seconds,
            gflops_per_s=self.gflops,
            mm_gflops_per_s=self.mm_gflops,
            ratio_to_mm=self.ratio_to_mm,
        )
        return out


def run_benchmark(args: argparse.Namespace) -> dict:
    dtype = DTYPES[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.min_available_gib:
        wait_for_memory(args.min_available_gib, args.wait_timeout)

    rss_start = rss_bytes()
    log(f"building ViQModel (16k preset, {args.layers} trunk layers, {args.dtype}, {args.attn}) ...")
    start = time.perf_counter()
    model = build_model(args.layers, dtype, args.attn)
    build_seconds = time.perf_counter() - start
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    vae_bytes = sum(p.numel() * p.element_size() for p in model.vae.parameters())
    latent_bytes = sum(p.numel() * p.element_size() for p in model.latent_head.parameters())
    num_params = sum(p.numel() for p in model.parameters())
    gc.collect()
    rss_model = rss_bytes()
    build_peak = peak_rss_bytes()
    log(f"built in {build_seconds:.0f} s: {num_params / 1e9:.2f} B parameters, {param_bytes / 2**30:.2f} GiB, "
        f"RSS {rss_model / 2**30:.2f} GiB")  # fmt: skip

    config = model.config
    processor = ViQImageProcessor(do_resize=False)
    reference = MatmulReference(config.hidden_size, config.vision_config.intermediate_size, dtype)
    repeats = args.repeats

    def encode(pixel_values, grid):
        return model.encode(pixel_values, grid, return_pooler_output=True)

    rows: list[Row] = []
    peak_seen = build_peak
    breakdown: dict[str, dict] = {}
    checks: dict[str, object] = {}

    with torch.inference_mode():
        # ---- single images ------------------------------------------------------------------------------------
        for index, size in enumerate(args.sizes):
            pixel_values, grid = make_inputs(processor, [size], dtype, seed=index)
            grid_hw = [tuple(g) for g in grid.tolist()]
            tokens = pixel_values.shape[0]
            name = f"{size[0]}x{size[1]}"
            log(f"{name}: {tokens} patch tokens, warm-up ...")
            gc.collect()
            base = rss_bytes()
            peak_seen = max(peak_seen, peak_rss_bytes())
            reset_peak_rss()
            warm = timed(lambda: encode(pixel_values, grid))
            times, mm_times, load = [], [], LoadMonitor()
            for repeat in range(repeats):
                with load.watch():
                    mm_times.append(reference.bracket(
                        tokens, warm, lambda: times.append(timed(lambda: encode(pixel_values, grid)))
                    ))  # fmt: skip
                log(f"{name}: repeat {repeat + 1}/{repeats}: {times[-1]:.2f} s")
            peak = peak_rss_bytes()
            peak_seen = max(peak_seen, peak)
            rows.append(Row(name, 1, tokens, encode_flops(config, grid_hw)["total"], times, mm_times, tokens,
                            reference.flops(tokens), max(0, peak - base), load.mean))  # fmt: skip
            if args.breakdown:
                seconds: dict[str, float] = {}
                with component_timer(model, seconds):
                    total = timed(lambda: encode(pixel_values, grid))
                flops = encode_flops(config, grid_hw)
                breakdown[name] = {
                    "total_seconds": total,
                    "components": {
                        key: {"seconds": seconds.get(key, 0.0), "flops": flops[key]} for key in ENCODE_COMPONENTS
                    },
                }

        # ---- mixed batch: packed vs. one call per image --------------------------------------------------------
        if args.mixed:
            pixel_values, grid = make_inputs(processor, args.mixed, dtype, seed=100)
            grid_hw = [tuple(g) for g in grid.tolist()]
            tokens = pixel_values.shape[0]
            # The same images, one call each (the processor is deterministic per image).
            lengths = [h * w for h, w in grid_hw]
            parts = list(zip(pixel_values.split(lengths, dim=0), grid.split(1, dim=0)))
            sizes_text = ", ".join(f"{h}x{w}" for h, w in args.mixed)
            log(f"mixed batch ({sizes_text}): {tokens} patch tokens, warm-up ...")
            gc.collect()
            base = rss_bytes()
            peak_seen = max(peak_seen, peak_rss_bytes())
            reset_peak_rss()
            start = time.perf_counter()
            packed_out = encode(pixel_values, grid)
            single_outs = [encode(part, part_grid) for part, part_grid in parts]
            warm = time.perf_counter() - start

            def sequential():
                for part, part_grid in parts:
                    encode(part, part_grid)

            packed_times, sequential_times, mm_times = [], [], []
            packed_load, sequential_load = LoadMonitor(), LoadMonitor()

            def run_packed():
                with packed_load.watch():
                    packed_times.append(timed(lambda: encode(pixel_values, grid)))

            def run_sequential():
                with sequential_load.watch():
                    sequential_times.append(timed(sequential))

            for repeat in range(repeats):
                # Alternate the order so that a drift in machine load does not favour either side.
                steps = (run_packed, run_sequential) if repeat % 2 == 0 else (run_sequential, run_packed)
                mm_times.append(reference.bracket(tokens, warm, lambda: [step() for step in steps]))
                log(f"mixed: repeat {repeat + 1}/{repeats}: packed {packed_times[-1]:.2f} s, "
                    f"sequential {sequential_times[-1]:.2f} s")  # fmt: skip
            peak = peak_rss_bytes()
            peak_seen = max(peak_seen, peak)
            flops_packed = encode_flops(config, grid_hw, calls=1)["total"]
            flops_sequential = encode_flops(config, grid_hw, calls=len(grid_hw))["total"]
            rows.append(Row(f"mixed packed ({sizes_text})", len(grid_hw), tokens, flops_packed, packed_times,
                            mm_times, tokens, reference.flops(tokens), max(0, peak - base),
                            packed_load.mean))  # fmt: skip
            rows.append(Row("mixed, one call per image", len(grid_hw), tokens, flops_sequential, sequential_times,
                            mm_times, tokens, reference.flops(tokens), None, sequential_load.mean))  # fmt: skip
            # Packing must not change an image's result (beyond float noise at rounding boundaries).
            single_codes = torch.cat([out.image_codes for out in single_outs])
            single_pooled = torch.cat([out.pooler_output for out in single_outs])
            checks["packed_codes_equal"] = int((packed_out.image_codes == single_codes).sum())
            checks["codes_total"] = int(single_codes.numel())
            checks["packed_pooler_max_abs_diff"] = float(
                (packed_out.pooler_output.float() - single_pooled.float()).abs().max()
            )

    results = {
        "environment": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "transformers_viq": getattr(transformers_viq, "__version__", None),
            "python": platform.python_version(),
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "mkl": torch.backends.mkl.is_available(),
        },
        "settings": {
            "preset": "16k",
            "layers": args.layers,
            "dtype": args.dtype,
            "attn": args.attn,
            "repeats": repeats,
            "sizes": [f"{h}x{w}" for h, w in args.sizes],
            "mixed": [f"{h}x{w}" for h, w in args.mixed],
            "matmul_reference": f"torch.mm((N x {config.hidden_size}) @ ({config.hidden_size} x "
            f"{config.vision_config.intermediate_size}))",
        },
        "model": {
            "parameters": num_params,
            "parameter_bytes": param_bytes,
            "vae_parameter_bytes": vae_bytes,
            "latent_head_parameter_bytes": latent_bytes,
            "build_seconds": build_seconds,
            "rss_before_build_bytes": rss_start,
            "rss_after_build_bytes": rss_model,
        },
        "rows": [row.as_dict() for row in rows],
        "process_peak_rss_bytes": max(peak_seen, peak_rss_bytes()),
        "checks": checks,
        "breakdown": breakdown,
    }
    ratios = {}
    if args.mixed:
        # Median of the per-repeat ratios (both sides of a repeat ran back to back).
        ratios["packed_over_sequential"] = statistics.median(
            packed / sequential for packed, sequential in zip(rows[-2].times, rows[-1].times)
        )
    for row in rows:
        if row.images == 1:
            ratios[f"gflops_over_mm_{row.name}"] = row.ratio_to_mm
    results["ratios"] = ratios
    return results


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------
def report(results: dict) -> str:
    env, settings, model = results["environment"], results["settings"], results["model"]
    gib = 2**30
    lines = [
        "ViQModel.encode(..., return_pooler_output=True) on CPU",
        f"torch {env['torch']}, transformers {env['transformers']}, python {env['python']}; CPU: {env['cpu']} "
        f"({env['logical_cpus']} logical CPUs), torch threads: {env['threads']}",
        f"model: 16k preset, {settings['layers']} trunk layers, {settings['dtype']}, attn {settings['attn']}, "
        f"{model['parameters'] / 1e9:.3f} B parameters = {model['parameter_bytes'] / gib:.2f} GiB "
        f"(of which VAE {model['vae_parameter_bytes'] / gib:.2f} GiB and latent head "
        f"{model['latent_head_parameter_bytes'] / gib:.2f} GiB, unused by encode); built in "
        f"{model['build_seconds']:.0f} s",
        f"memory: RSS after build {model['rss_after_build_bytes'] / gib:.2f} GiB, process peak RSS "
        f"{results['process_peak_rss_bytes'] / gib:.2f} GiB",
        f"timing: warm-up call, then median of {settings['repeats']} calls (min-max shown); matmul reference: "
        f"{settings['matmul_reference']} with N = the row's patch tokens, {settings['dtype']}, same threads, "
        "timed in windows just before and after every model sample; model/mm: median over the repeats of (model "
        "GFLOP/s / the GFLOP/s of the matmul windows around that sample)",
        "other load: mean CPU cores busy with other processes during the row's timed calls (with as many torch "
        "threads as CPUs, anything above ~0.1 slowed the row down)",
        "",
    ]
    headers = ["run", "images", "tokens", "GFLOP", "time s", "min-max s", "tokens/s", "GFLOP/s", "mm GFLOP/s",
               "model/mm", "peak +RSS MiB", "other load"]  # fmt: skip
    body = []
    for row in results["rows"]:
        body.append([
            row["name"],
            str(row["images"]),
            str(row["tokens"]),
            f"{row['flops'] / 1e9:.1f}",
            f"{row['seconds']:.3f}",
            f"{min(row['times']):.2f}-{max(row['times']):.2f}",
            f"{row['tokens_per_s']:.1f}",
            f"{row['gflops_per_s']:.1f}",
            f"{row['mm_gflops_per_s']:.1f}",
            f"{row['ratio_to_mm']:.3f}",
            "-" if row["peak_rss_delta"] is None else f"{row['peak_rss_delta'] / 2**20:.0f}",
            "-" if row["other_load"] is None else f"{row['other_load']:.2f}",
        ])  # fmt: skip
    lines.append(format_table(headers, body))
    lines.append("")
    lines.append("ratios (median over the repeats of the ratio within each repeat; both sides ran back to back):")
    ratios = results["ratios"]
    if "packed_over_sequential" in ratios:
        value = ratios["packed_over_sequential"]
        lines.append(f"  packed / one call per image (mixed batch): {value:.3f}  "
                     f"(target <= 1.05: {'PASS' if value <= 1.05 else 'MISS'})")  # fmt: skip
    for key, value in ratios.items():
        if key.startswith("gflops_over_mm_"):
            name = key[len("gflops_over_mm_"):]
            target = f"  (target >= 0.90: {'PASS' if value >= 0.90 else 'MISS'})" if name == "512x512" else ""
            lines.append(f"  achieved GFLOP/s / matmul GFLOP/s at {name}: {value:.3f}{target}")
    checks = results["checks"]
    if checks:
        lines.append(f"  packing check: {checks['packed_codes_equal']}/{checks['codes_total']} codes equal to the "
                     "one-call-per-image codes, pooled embedding max |diff| "
                     f"{checks['packed_pooler_max_abs_diff']:.2e}")  # fmt: skip
    for name, entry in results["breakdown"].items():
        lines.append("")
        lines.append(f"per-component time at {name} (one extra call with forward hooks, "
                     f"{entry['total_seconds']:.2f} s):")  # fmt: skip
        body = []
        for key, value in entry["components"].items():
            seconds, flops = value["seconds"], value["flops"]
            body.append([key, f"{seconds:.3f}", f"{100 * seconds / entry['total_seconds']:.1f}",
                         f"{flops / 1e9:.1f}", f"{flops / seconds / 1e9 if seconds else 0:.1f}"])  # fmt: skip
        lines.append(format_table(["component", "time s", "% of call", "GFLOP", "GFLOP/s"], body))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--layers", type=int, default=40, help="trunk blocks (40 = the released model; 2 to debug)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement after the warm-up")
    parser.add_argument("--sizes", type=parse_sizes, default="256x256,512x512",
                        help="single-image sizes HxW in pixels, comma-separated (default: %(default)s)")  # fmt: skip
    parser.add_argument("--mixed", type=parse_sizes, default="256x256,384x512,512x320",
                        help="images of the packed batch, HxW comma-separated; '' to skip (default: %(default)s)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--breakdown", action="store_true",
                        help="one extra call per single-image size with per-component timings")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--min-available-gib", type=float, default=0.0,
                        help="wait (polling every 60 s) until this much memory is free before building")  # fmt: skip
    parser.add_argument("--wait-timeout", type=float, default=1200.0, help="seconds to wait for memory at most")
    args = parser.parse_args(argv)
    if args.layers < 1 or args.repeats < 1:
        parser.error("--layers and --repeats must be >= 1")

    results = run_benchmark(args)
    print(report(results))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
