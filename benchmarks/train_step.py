#!/usr/bin/env python
# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""
The training speed-up of precomputed codes (the ViQ paper, Sec. 4.3.1), measured side by side in one run.

For each LLM size and packed sequence length, one VLM and one packed batch are built, and the same batch is fed
(a) as pixels, through the frozen ViQ tokenizer (1.1B trunk + fusion block + quantizer + code embedder), and
(b) as the precomputed codes of the same images (code embedder only). For both it times the forward pass (training
mode, graph built) and the full training step (forward, backward, AdamW step), interleaving (a) and (b) so that both
see the same machine load, and reports the time saved by codes, `1 - t_codes / t_pixels`, next to a FLOP-based
prediction for the model it ran and for the paper's full sizes.

The paper's setting, kept: the ViQ-16k tokenizer (40 trunk blocks of width 1536), Qwen2.5-0.5B and -7B, image-text
pairs packed into fixed 4k and 16k sequences (attention not crossing samples), images of at most 768x768 at their
aspect ratio (grids 48x48, 36x64, 64x36, 40x56 in turn), the LLM fully fine-tuned with the projector and the ViQ
tokenizer frozen (LLaVA-style SFT). On a CPU it is scaled down *uniformly*: every width, the vocabulary, the sequence
lengths and the patch count of every image by `--scale` (head dimensions shrink, head counts stay), every depth by
`--depth-scale`. Matmul FLOPs then all shrink by `scale^3 * depth_scale` (linear layers `tokens * width^2`, attention
`tokens^2 * width`, LM head `tokens * width * vocab`), so the vision : LLM compute ratio, hence the predicted saving,
is the full-size one up to rounding; the "predicted" columns show both. Random weights; no download.

FLOPs (matrix products only, a multiply-add = 2): the vision side from `harness.encode_flops` (without the pooling
head, which the VLM does not run); the projector; per decoder layer `2 L (D q + 2 D kv + q D + 3 D I)` plus attention,
`4 q L^2` for SDPA/eager with the packed block-diagonal mask (dense) or `2 q sum_i L_i^2` for flash-attention varlen;
the LM head `2 L D V`. A training step counts the frozen vision side once (forward, no graph), trainable parts three
times (forward, input and weight gradients), frozen parts that gradients pass through twice.

Examples:

    python benchmarks/train_step.py                                   # CPU, scaled 1/16 (widths) x 1/4 (depths)
    python benchmarks/train_step.py --llms 0.5b --seq-lens 4096 --repeats 2 --scale 0.125    # larger widths
    python benchmarks/train_step.py --dry-run                         # the full-size plan: FLOPs, parameters, memory
    python benchmarks/train_step.py --device cuda --json out.json     # real sizes on a GPU (train_step_gpu.sh)
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import transformers_viq  # noqa: F401  (registers the Auto classes)
from transformers_viq import ViQConfig, ViQForConditionalGeneration, ViQQwenConfig, get_num_image_tokens
from transformers_viq.models.viq.configuration_viq import CODES_PER_PATCH
from transformers_viq.training import freeze

from harness import encode_flops, format_table


REPO = Path(__file__).resolve().parents[1]
IMAGE_TOKEN = 5
# Qwen2.5 decoders (config.json of Qwen/Qwen2.5-{0.5B,1.5B,3B,7B}-Instruct)
LLM_PRESETS = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}  # fmt: skip
# Patch grids of images of at most 768x768 pixels at several aspect ratios (16-pixel patches, even sides)
FULL_GRIDS = ((48, 48), (36, 64), (64, 36), (40, 56))


# ----------------------------------------------------------------------------------------------------------------
# Configurations, full size and scaled
# ----------------------------------------------------------------------------------------------------------------
def _depth(layers: int, depth_scale: float) -> int:
    return max(1, round(layers * depth_scale))


def _width(width: int, scale: float, multiple: int = 1) -> int:
    return max(multiple, round(width * scale / multiple) * multiple)


def viq_config(scale: float, depth_scale: float) -> ViQConfig:
    """The ViQ-16k tokenizer (encode path only), widths x `scale`, depths x `depth_scale` (head count kept)."""
    full = ViQConfig.from_preset("16k")
    heads = full.vision_config.num_attention_heads
    hidden = _width(full.vision_config.hidden_size, scale, heads)
    vision = full.vision_config.to_dict()
    vision.update(hidden_size=hidden, intermediate_size=_width(full.vision_config.intermediate_size, scale),
                  num_hidden_layers=_depth(full.vision_config.num_hidden_layers, depth_scale))  # fmt: skip
    return ViQConfig(
        vision_config=vision,
        fsq_levels=list(full.fsq_levels),
        fusion_num_layers=_depth(full.fusion_num_layers, depth_scale),
        quantizer_num_layers=_depth(full.quantizer_num_layers, depth_scale),
        quantizer_attention_dim=_width(full.quantizer_attention_dim, scale, 2),
        embedder_num_residual_layers=_depth(full.embedder_num_residual_layers, depth_scale),
        latent_norm_groups=math.gcd(full.latent_norm_groups, hidden),  # validated even without the decoder
        include_decoder=False,
    )


def llm_config(name: str, scale: float, depth_scale: float) -> dict:
    """A Qwen2.5 decoder config, widths and vocabulary x `scale` (head dim shrinks), depth x `depth_scale`."""
    preset = dict(LLM_PRESETS[name])
    heads = preset["num_attention_heads"]
    head_dim = preset["hidden_size"] // heads
    head_dim = max(2, round(head_dim * scale / 2) * 2)
    preset.update(
        model_type="qwen2",
        hidden_size=head_dim * heads,
        head_dim=head_dim,
        intermediate_size=_width(preset["intermediate_size"], scale),
        num_hidden_layers=_depth(preset["num_hidden_layers"], depth_scale),
        vocab_size=_width(preset["vocab_size"], scale, 64),
        max_position_embeddings=32768,
        use_cache=False,
    )
    return preset


def image_grids(scale: float) -> list[tuple[int, int]]:
    """The benchmark's image grids with their patch counts x `scale`: sides x sqrt(scale), kept even, the width
    adjusted so that the area is as close as possible to `scale` times the full one."""
    grids = []
    for h, w in FULL_GRIDS:
        height = max(2, round(h * math.sqrt(scale) / 2) * 2)
        grids.append((height, max(2, round(h * w * scale / height / 2) * 2)))
    return grids


@dataclass
class Packing:
    """One packed sequence: samples (an image + `text_tokens` text tokens each) and a text-only filler."""

    seq_len: int
    grids: list[tuple[int, int]]  # one image per sample
    segments: list[int]  # token count of each sample (and of the filler, last)
    image_tokens: int


def pack(seq_len: int, grids: list[tuple[int, int]], text_tokens: int) -> Packing:
    used, chosen, segments = 0, [], []
    while True:
        grid = grids[len(chosen) % len(grids)]
        length = get_num_image_tokens(*grid) + text_tokens
        if used + length > seq_len:
            break
        chosen.append(grid)
        segments.append(length)
        used += length
    if not chosen:
        raise ValueError(f"A {seq_len}-token sequence cannot hold one image of grid {grids[0]} and its text.")
    if seq_len > used:
        segments.append(seq_len - used)
    return Packing(seq_len, chosen, segments, sum(get_num_image_tokens(*g) for g in chosen))


# ----------------------------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------------------------
def projector_flops(vision_dim: int, text_dim: int, grids: list[tuple[int, int]]) -> int:
    """The pooled projector: proj_in on the 4 positions of each 2x2 window, softmax pooler, proj_out."""
    windows = sum(((h + 1) // 2) * ((w + 1) // 2) for h, w in grids)
    return 2 * 4 * windows * vision_dim * text_dim + 2 * 4 * windows * 3 * text_dim**2 + 2 * windows * text_dim**2


def llm_forward_flops(text: dict, packing: Packing, attn: str) -> int:
    d, i, heads, kv = text["hidden_size"], text["intermediate_size"], text["num_attention_heads"], text[
        "num_key_value_heads"
    ]
    head_dim = text.get("head_dim") or d // heads
    q, k = heads * head_dim, kv * head_dim
    length = packing.seq_len
    linear = 2 * length * (d * q + 2 * d * k + q * d + 3 * d * i)
    if attn == "flash_attention_2":
        attention = 2 * q * sum(n * n for n in packing.segments)  # causal, per segment
    else:
        attention = 4 * q * length * length  # dense scores and values under the block-diagonal mask
    return text["num_hidden_layers"] * (linear + attention) + 2 * length * d * text["vocab_size"]


def predicted(viq: ViQConfig, text: dict, packing: Packing, attn: str, trainable: str, checkpointing: bool) -> dict:
    """FLOPs of the forward pass and of the training step, from pixels and from codes, and the predicted savings."""
    vision = encode_flops(viq, packing.grids)
    trunk = sum(vision[k] for k in ("embeddings", "encoder", "fusion", "quantizer"))
    embed = vision["code_embedder"]
    proj = projector_flops(viq.vision_config.hidden_size, text["hidden_size"], packing.grids)
    llm = llm_forward_flops(text, packing, attn)
    llm_step = llm * (3 if trainable == "full" else 2) + (llm if checkpointing else 0)
    out = {
        "forward_pixels": trunk + embed + proj + llm,
        "forward_codes": embed + proj + llm,
        "step_pixels": trunk + embed + 3 * proj + llm_step,
        "step_codes": embed + 3 * proj + llm_step,
        "vision_trunk": trunk,
        "llm_forward": llm,
    }
    out["forward_saving"] = 1 - out["forward_codes"] / out["forward_pixels"]
    out["step_saving"] = 1 - out["step_codes"] / out["step_pixels"]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Building and timing
# ----------------------------------------------------------------------------------------------------------------
def build(viq: ViQConfig, text: dict, device: str, dtype: torch.dtype, attn: str, trainable: str, seed: int = 0):
    config = ViQQwenConfig(vision_config=viq.to_dict(), text_config=text, image_token_id=IMAGE_TOKEN)
    config._attn_implementation = attn
    config.text_config._attn_implementation = attn
    config.vision_config._attn_implementation = attn if attn != "flash_attention_2" else "sdpa"
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype: no fp32 copy of a 7B model on the device
    try:
        with torch.device(device):
            model = ViQForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    freeze(model, vision=True, language_model=trainable != "full")
    return model.train()


def make_batch(model, packing: Packing, text_tokens: int, device: str, dtype: torch.dtype, seed: int = 0) -> dict:
    """The packed batch, with the images both as pixels and as their codes (encoded once by the model's tokenizer)."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.text_config.vocab_size
    ids, labels, positions = [], [], []
    for index, length in enumerate(packing.segments):
        if index < len(packing.grids):
            image = get_num_image_tokens(*packing.grids[index])
            prompt = text_tokens // 2
            text = torch.randint(10, vocab, (text_tokens,), generator=generator)
            segment = torch.cat([text[:prompt], torch.full((image,), IMAGE_TOKEN), text[prompt:]])
            target = torch.cat([torch.full((prompt + image,), -100), text[prompt:]])
        else:  # filler text up to the fixed length
            segment = torch.randint(10, vocab, (length,), generator=generator)
            target = segment.clone()
        ids.append(segment)
        labels.append(target)
        positions.append(torch.arange(length))
    patches = sum(h * w for h, w in packing.grids)
    pixel_values = torch.rand((patches, 3 * 16 * 16), generator=generator) * 2 - 1
    grid = torch.tensor(packing.grids, dtype=torch.long)
    batch = {
        "input_ids": torch.cat(ids)[None].to(device),
        "labels": torch.cat(labels)[None].to(device),
        "position_ids": torch.cat(positions)[None].to(device),
        "image_grid_hw": grid.to(device),
    }
    with torch.no_grad():
        codes = model.model.vision_tower.encode(pixel_values.to(device, dtype), grid.to(device)).image_codes
    pixels = {**batch, "pixel_values": pixel_values.to(device, dtype)}
    return {"pixels": pixels, "codes": {**batch, "image_codes": codes}}


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_forward(model, inputs, device) -> float:
    _sync(device)
    start = time.perf_counter()
    loss = model(**inputs).loss
    _sync(device)
    elapsed = time.perf_counter() - start
    del loss
    return elapsed


def time_step(model, optimizer, inputs, device) -> float:
    _sync(device)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    model(**inputs).loss.backward()
    optimizer.step()
    _sync(device)
    return time.perf_counter() - start


@dataclass
class Row:
    llm: str
    seq_len: int  # full-size sequence length (the paper's 4k / 16k)
    scaled_seq_len: int
    images: int
    image_tokens: int
    forward_pixels: list[float] = field(default_factory=list)
    forward_codes: list[float] = field(default_factory=list)
    step_pixels: list[float] = field(default_factory=list)
    step_codes: list[float] = field(default_factory=list)
    predicted: dict = field(default_factory=dict)
    predicted_full: dict = field(default_factory=dict)
    peak_memory_gib: dict = field(default_factory=dict)
    error: str | None = None

    def saving(self, what: str) -> float:
        """`1 - t_codes / t_pixels`: the median over the repeats of the ratio within each repeat (both modes ran back
        to back there, under the same machine load), which a noisy machine disturbs less than a ratio of medians."""
        pairs = zip(getattr(self, f"{what}_codes"), getattr(self, f"{what}_pixels"))
        return 1 - statistics.median(codes / pixels for codes, pixels in pairs)


def measure(args, name: str, seq_len: int, budget_end: float) -> Row:
    viq = viq_config(args.scale, args.depth_scale)
    text = llm_config(name, args.scale, args.depth_scale)
    scaled_len = max(16, round(seq_len * args.scale))
    packing = pack(scaled_len, image_grids(args.scale), max(2, round(args.text_tokens * args.scale)))
    full_packing = pack(seq_len, list(FULL_GRIDS), args.text_tokens)
    row = Row(name, seq_len, scaled_len, len(packing.grids), packing.image_tokens)
    row.predicted = predicted(viq, text, packing, args.attn, args.trainable, args.gradient_checkpointing)
    row.predicted_full = predicted(viq_config(1, 1), llm_config(name, 1, 1), full_packing, args.attn, args.trainable,
                                   args.gradient_checkpointing)  # fmt: skip
    if args.dry_run:
        with torch.device("meta"):  # full size, no memory: parameter counts and the training-state estimate
            full = build(viq_config(1, 1), llm_config(name, 1, 1), "meta", DTYPES[args.dtype], args.attn,
                         args.trainable)  # fmt: skip
        total = sum(p.numel() for p in full.parameters())
        trainable = sum(p.numel() for p in full.parameters() if p.requires_grad)
        size = torch.finfo(DTYPES[args.dtype]).bits // 8
        row.peak_memory_gib = {"parameters_b": total / 1e9, "trainable_b": trainable / 1e9,
                               "weights_grads_adamw_gib": (total * size + trainable * 3 * size) / 2**30}  # fmt: skip
        return row
    dtype = DTYPES[args.dtype]
    model = build(viq, text, args.device, dtype, args.attn, args.trainable)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    batches = make_batch(model, packing, max(2, round(args.text_tokens * args.scale)), args.device, dtype)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    modes = ("pixels", "codes")
    for mode in modes:  # warm-up: allocator, kernels, optimizer states
        for _ in range(args.warmup):
            time_forward(model, batches[mode], args.device)
            time_step(model, optimizer, batches[mode], args.device)
    for repeat in range(args.repeats):
        for mode in modes if repeat % 2 == 0 else modes[::-1]:  # interleaved: both see the same load
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            getattr(row, f"forward_{mode}").append(time_forward(model, batches[mode], args.device))
            getattr(row, f"step_{mode}").append(time_step(model, optimizer, batches[mode], args.device))
            if args.device.startswith("cuda"):
                row.peak_memory_gib[mode] = torch.cuda.max_memory_allocated() / 2**30
        if time.monotonic() > budget_end:
            print(f"[budget] stopping {name}/{seq_len} after {repeat + 1} repeats", file=sys.stderr)
            break
    del model, optimizer, batches
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


# ----------------------------------------------------------------------------------------------------------------
# Stored bytes per sample
# ----------------------------------------------------------------------------------------------------------------
def storage_rows(codes_per_patch: int = CODES_PER_PATCH, patch: int = 16) -> list[list[str]]:
    """Bytes of one image as raw RGB, PNG, JPEG (quality 95 and 75) and ViQ codes (uint16), for the benchmark's
    image sizes, from the bundled sample photographs resized to each size (mean over the photos)."""
    photos = [p for p in sorted((REPO / "assets" / "samples").glob("*.png")) if "small" not in p.name]
    body = []
    for h, w in FULL_GRIDS:
        size = (w * patch, h * patch)
        sizes = {"png": [], "jpeg95": [], "jpeg75": []}
        for path in photos:
            with Image.open(path) as photo:
                image = photo.convert("RGB").resize(size, Image.BICUBIC)
            for kind, options in (("png", {"format": "PNG"}),
                                  ("jpeg95", {"format": "JPEG", "quality": 95}),
                                  ("jpeg75", {"format": "JPEG", "quality": 75})):  # fmt: skip
                buffer = io.BytesIO()
                image.save(buffer, **options)
                sizes[kind].append(buffer.tell())
        raw = 3 * size[0] * size[1]
        codes = 2 * codes_per_patch * h * w
        png, jpeg95, jpeg75 = (int(np.mean(sizes[k])) for k in ("png", "jpeg95", "jpeg75"))
        body.append([f"{size[1]}x{size[0]}", f"{raw:,}", f"{png:,}", f"{jpeg95:,}", f"{jpeg75:,}", f"{codes:,}",
                     f"1/{raw / codes:.0f}", f"1/{png / codes:.1f}", f"1/{jpeg95 / codes:.1f}",
                     f"1/{jpeg75 / codes:.1f}"])  # fmt: skip
    return body


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--device", default="cpu", help="cpu (default: scaled sizes) or cuda (default: full sizes)")
    parser.add_argument("--llms", default="0.5b,7b", help="Qwen2.5 sizes: 0.5b, 1.5b, 3b, 7b (comma-separated)")
    parser.add_argument("--seq-lens", default="4096,16384", help="full-size packed sequence lengths")
    parser.add_argument("--text-tokens", type=int, default=128, help="text tokens per image-text pair (full size)")
    parser.add_argument("--scale", type=float, default=None, help="width/token scale (default: 1/16 on CPU, 1 on GPU)")
    parser.add_argument("--depth-scale", type=float, default=None, help="depth scale (default: 1/4 on CPU, 1 on GPU)")
    parser.add_argument("--trainable", choices=("full", "projector"), default="full",
                        help="full: LLM + projector train (LLaVA SFT); projector: the LLM is frozen (LoRA-like cost)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="checkpoint the decoder layers")
    parser.add_argument("--attn", default="sdpa", choices=("sdpa", "eager", "flash_attention_2"))
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: fp32 on CPU, bf16 on GPU")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forward + step per mode first")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward + step per mode (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--budget-s", type=float, default=None, help="stop repeating once this much time is spent")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and predictions; build nothing")
    parser.add_argument("--json", default=None, help="write every number here")
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.scale = args.scale if args.scale is not None else (1.0 if gpu else 1 / 16)
    args.depth_scale = args.depth_scale if args.depth_scale is not None else (1.0 if gpu else 1 / 4)
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.llms = [name.strip().lower() for name in args.llms.split(",") if name.strip()]
    args.seq_lens = [int(n) for n in args.seq_lens.split(",") if n.strip()]
    for name in args.llms:
        if name not in LLM_PRESETS:
            parser.error(f"unknown LLM {name!r}; choose from {sorted(LLM_PRESETS)}")
    if not 0 < args.scale <= 1 or not 0 < args.depth_scale <= 1:
        parser.error("--scale and --depth-scale must be in (0, 1]")
    return args


def pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available() and not args.dry_run:
        raise SystemExit("--device cuda but no CUDA device is available (use --dry-run to print the plan)")
    start = time.monotonic()
    budget_end = start + args.budget_s if args.budget_s else float("inf")
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") and torch.cuda.is_available() else (
        platform.processor() or platform.machine())  # fmt: skip
    print(f"# ViQ training step: pixels through the frozen tokenizer vs precomputed codes ({args.device}: "
          f"{device_name}, {torch.get_num_threads()} threads, {args.dtype}, attn {args.attn}, trainable "
          f"{args.trainable}, checkpointing {'on' if args.gradient_checkpointing else 'off'})")  # fmt: skip
    print(f"# scale: widths, vocabulary, tokens x {args.scale:g}; depths x {args.depth_scale:g}; "
          f"{args.warmup} warm-up + {args.repeats} timed repeats per mode, interleaved\n")  # fmt: skip
    rows = []
    for name in args.llms:
        for seq_len in args.seq_lens:
            if time.monotonic() > budget_end:  # not even built: a 7B row takes a minute to build and warm up
                row = Row(name, seq_len, round(seq_len * args.scale), 0, 0, error="skipped: past --budget-s")
                print(f"[budget] skipping {name}/{seq_len}", file=sys.stderr)
                rows.append(row)
                continue
            try:
                row = measure(args, name, seq_len, budget_end)
            except Exception as error:  # noqa: BLE001 - one failing row (e.g. out of memory) must not lose the others
                row = Row(name, seq_len, round(seq_len * args.scale), 0, 0, error=f"{type(error).__name__}: {error}")
                print(f"[error] {name} {seq_len}: {row.error}", file=sys.stderr)
                gc.collect()
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            rows.append(row)
            print(f"[{time.monotonic() - start:6.0f}s] done {name} {seq_len}", file=sys.stderr)
            if args.json:
                write_json(args, rows)

    headers = ["LLM", "seq", "images", "fwd pixels s", "fwd codes s", "fwd saved", "pred.", "pred. full",
               "step pixels s", "step codes s", "step saved", "pred.", "pred. full"]  # fmt: skip
    body = []
    for row in rows:
        label = [f"Qwen2.5-{row.llm.upper()}", f"{row.seq_len // 1024}k ({row.scaled_seq_len})", str(row.images)]
        if row.error:
            body.append(label + ["error"] + [""] * (len(headers) - 4))
            continue
        timed = bool(row.forward_pixels)
        median = lambda values: f"{statistics.median(values):.3f}" if values else "-"  # noqa: E731
        body.append(label + [
            median(row.forward_pixels), median(row.forward_codes),
            pct(row.saving("forward")) if timed else "-", pct(row.predicted["forward_saving"]),
            pct(row.predicted_full["forward_saving"]),
            median(row.step_pixels), median(row.step_codes),
            pct(row.saving("step")) if timed else "-", pct(row.predicted["step_saving"]),
            pct(row.predicted_full["step_saving"]),
        ])  # fmt: skip
    print(format_table(headers, body))
    print("\n'saved' = 1 - t_codes / t_pixels (the paper's 'speed-up'): median over the repeats of the ratio within a "
          "repeat (times: medians); 'pred.' = the same from matmul FLOPs for the model that ran, 'pred. full' = for "
          "the paper's full sizes.")  # fmt: skip
    if args.dry_run or args.device.startswith("cuda"):
        print("\nFull-size plan (FLOPs per packed sequence; memory: weights + gradients + AdamW states, "
              f"{args.dtype}, activations not included):\n")  # fmt: skip
        print(format_table(
            ["LLM", "seq", "images", "vision trunk TFLOP", "LLM fwd TFLOP", "step pixels TFLOP", "step codes TFLOP",
             "params B", "trainable B", "state GiB"],
            [[f"Qwen2.5-{r.llm.upper()}", f"{r.seq_len // 1024}k", str(len(pack(r.seq_len, list(FULL_GRIDS),
              args.text_tokens).grids))] + [f"{r.predicted_full[k] / 1e12:.1f}" for k in
              ("vision_trunk", "llm_forward", "step_pixels", "step_codes")]
             + [f"{r.peak_memory_gib.get(k, float('nan')):.2f}" for k in
                ("parameters_b", "trainable_b", "weights_grads_adamw_gib")] for r in rows if not r.error],
        ))  # fmt: skip
    print("\n## Stored bytes per image (one image per sample): ViQ codes (uint16, 4 per 16x16 patch) vs files\n")
    print(format_table(["image", "raw RGB", "PNG", "JPEG q95", "JPEG q75", "codes", "codes/raw", "codes/PNG",
                        "codes/JPEG95", "codes/JPEG75"], storage_rows()))  # fmt: skip
    print("\nPNG/JPEG: the bundled photographs (assets/samples) resized to each size, mean over them. Codes are a "
          "fixed HW/32 bytes whatever the image; a code dataset adds the text and Parquet framing.")  # fmt: skip
    if args.json:
        write_json(args, rows)
    return rows


def write_json(args, rows):
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"args": vars(args), "torch": torch.__version__, "rows": [asdict(r) for r in rows]}, handle,
                  indent=1, default=str)  # fmt: skip


if __name__ == "__main__":
    main()
