# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""`viq extract` throughput: each stage on its own, then the serial path and the overlapped pipeline end to end.

    python benchmarks/extract.py                                              # tiny model (examples/tiny-viq), CPU
    python benchmarks/extract.py --full-width --layers 2 --max-side 256       # the released width, 2 trunk blocks
    python benchmarks/extract.py --device cuda --full-width --layers 40 --dtype bfloat16 \
        --images 600 --min-side 384 --max-side 1024                           # the released architecture on a GPU

One run writes a folder of JPEGs of mixed sizes (and a LLaVA-style JSON file naming them), then, `--repeats` times:

- the serial path end to end: `extract_codes(json, ..., num_workers=0)` (every stage in turn in one thread);
- the overlapped pipeline end to end: `extract_codes(json, ..., num_workers=W)`;
- each stage on its own, over the same images, with the resources it has in that pipeline: read + decode
  (`open_image` on the files) and pre-process (`ViQImageProcessor` on the decoded images, handing over the patches) in
  one process for the serial path and in W `DataLoader` worker processes for the overlapped one; encode (the batches
  `pack_by_pixels` makes, packed and encoded in this process, on `--device`); write (`write_code_shard` of those rows).

It prints per-stage and end-to-end throughput (medians over the repeats) and the **overlap efficiency**: the time of
the slowest stage of the pipeline divided by the end-to-end time of the overlapped run (1.0 for a perfect pipeline).
The pipeline's stages are the reader (read + decode + pre-process: the same worker processes do both, one sample
after the other, so their times add up), the encoder and the writer. Target: >= 0.85.

On a CPU every stage shares the same cores, so the stages are not independent: with a tiny model the reader
dominates, with a full-width one the encoder does, and the efficiency says how well the rest hides behind it.
Nothing here is a test: no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from transformers_viq import ViQConfig, ViQImageProcessor, ViQModel, extract_codes, load_code_dataset, load_llava_json
from transformers_viq.extraction import (
    DEFAULT_MAX_BATCH_PIXELS,
    default_num_workers,
    dtype_name,
    pack_by_pixels,
    write_code_shard,
)
from transformers_viq.models.viq.image_processing_viq import open_image

import harness


REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "tiny-viq"
SAMPLES_PER_TASK = 4  # as the library's reader: a few consecutive samples per worker task


def log(message: str) -> None:
    print(f"[extract-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------------------------
def write_images(folder: Path, count: int, min_side: int, max_side: int, quality: int, seed: int) -> list[Path]:
    """JPEGs of mixed sizes and aspect ratios with photo-like content (smooth colour fields plus grain)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        height, width = (int(side) for side in rng.integers(min_side, max_side + 1, size=2))
        coarse = rng.integers(0, 256, size=(max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
        image = np.clip(image + rng.integers(-12, 13, size=image.shape), 0, 255).astype(np.uint8)
        path = folder / f"{index:05d}.jpg"
        Image.fromarray(image).save(path, quality=quality)
        paths.append(path)
    return paths


def write_llava_json(path: Path, images: list[Path]) -> None:
    samples = [
        {"id": f"{index:05d}", "image": os.path.relpath(image, path.parent),
         "conversations": [{"from": "human", "value": "<image>\nDescribe the picture."},
                           {"from": "gpt", "value": f"Picture number {index}."}]}
        for index, image in enumerate(images)
    ]  # fmt: skip
    path.write_text(json.dumps(samples))


def build_model(args) -> tuple[ViQModel, ViQImageProcessor, str]:
    dtype = getattr(torch, args.dtype)
    if args.full_width:
        config = ViQConfig.from_preset(
            "16k", vision_config={"num_hidden_layers": args.layers}, include_decoder=False
        )
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # built directly in its dtype, on its device
        try:
            with torch.device(args.device):
                model = ViQModel(config)
        finally:
            torch.set_default_dtype(previous)
        processor, name = ViQImageProcessor(), f"16k architecture, {args.layers} trunk blocks, random weights"
    else:
        model = ViQModel.from_pretrained(args.model, dtype=dtype)
        processor, name = ViQImageProcessor.from_pretrained(args.model), str(args.model)
    return model.to(args.device).eval(), processor, name


# ------------------------------------------------------------------------------------------------------------------
# Stages on their own
# ------------------------------------------------------------------------------------------------------------------
def _keep(item):
    return item


class DecodeTasks:
    """Read + decode: `open_image` on the files of a task (what the reader does before pre-processing)."""

    def __init__(self, tasks: list[list[Path]]):
        self.tasks = tasks

    def __len__(self):
        return len(self.tasks)

    def __getitem__(self, task: int):
        return [open_image(path).size for path in self.tasks[task]]


class PreprocessTasks:
    """Pre-process: the image processor on decoded images, one sample at a time, patches packed per task."""

    def __init__(self, tasks: list[list[Image.Image]], processor: ViQImageProcessor):
        self.tasks, self.processor = tasks, processor

    def __len__(self):
        return len(self.tasks)

    def __getitem__(self, task: int):
        outputs = [self.processor(images=[image], return_tensors="pt") for image in self.tasks[task]]
        pixel_values = torch.cat([out["pixel_values"] for out in outputs])
        return pixel_values, torch.cat([out["image_grid_hw"] for out in outputs])


def run_tasks(dataset, workers: int) -> float:
    """Seconds to run every task, in this process (`workers=0`) or in `workers` DataLoader processes."""
    start = time.perf_counter()
    if workers == 0:
        for task in range(len(dataset)):
            dataset[task]
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=min(workers, len(dataset)),
                                             collate_fn=_keep, prefetch_factor=4)  # fmt: skip
        for _ in loader:
            pass
    return time.perf_counter() - start


def encode_stage(model, per_image: list[tuple[torch.Tensor, torch.Tensor]], max_batch_pixels: int, device: str):
    """Seconds to pack and encode the batches `pack_by_pixels` makes, and the uint16 codes of each image."""
    patch = model.config.vision_config.patch_size
    pixels = [int(values.shape[0]) * patch * patch for values, _ in per_image]
    codes: list[np.ndarray] = []
    harness.synchronize(torch.device(device))
    start = time.perf_counter()
    for batch in pack_by_pixels(pixels, max_batch_pixels):
        parts = [per_image[i][0] for i in batch]
        grid = torch.cat([per_image[i][1] for i in batch])
        # host fp32 patches, as the library's pipeline hands them over (encode stages them to the device itself)
        out = model.encode(torch.cat(parts), grid, return_pooler_output=False)
        counts = (model.config.codes_per_patch * grid[:, 0] * grid[:, 1]).tolist()
        codes += [part.numpy().astype(np.uint16) for part in out.image_codes.cpu().split(counts)]
    harness.synchronize(torch.device(device))
    return time.perf_counter() - start, codes


def write_stage(rows: list[dict], features, shard_size: int, folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for shard, first in enumerate(range(0, len(rows), shard_size)):
        write_code_shard(folder / f"codes-00000-{shard:05d}.parquet", rows[first : first + shard_size], features)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------------
def run_benchmark(args) -> dict:
    # the library runs the stages in turn on the CPU by default; the overlapped path needs at least one reader
    workers = args.num_workers if args.num_workers is not None else max(1, default_num_workers(device=args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="viq-extract-bench-"))
    log(f"writing {args.images} JPEGs of {args.min_side}-{args.max_side} px to {work / 'images'}")
    paths = write_images(work / "images", args.images, args.min_side, args.max_side, args.quality, args.seed)
    source_json = work / "llava.json"
    write_llava_json(source_json, paths)
    model, processor, model_name = build_model(args)
    source = load_llava_json(source_json)

    # Things every repeat reuses: the decoded images, their patches (the encode stage's input), the rows to write.
    decoded = [open_image(path) for path in paths]
    per_image = []
    for image in decoded:
        out = processor(images=[image], return_tensors="pt")
        per_image.append((out["pixel_values"], out["image_grid_hw"]))
    path_tasks = [paths[i : i + SAMPLES_PER_TASK] for i in range(0, len(paths), SAMPLES_PER_TASK)]
    image_tasks = [decoded[i : i + SAMPLES_PER_TASK] for i in range(0, len(decoded), SAMPLES_PER_TASK)]
    options = dict(max_batch_pixels=args.max_batch_pixels, shard_size=args.shard_size, progress=False)

    log(f"warm-up ({model_name}, {args.device}, {args.dtype}, {workers} workers)")
    warm = min(len(paths), 2 * SAMPLES_PER_TASK)
    extract_codes(source_json, work / "warm", model, processor, num_workers=0, limit=warm, **options)
    shutil.rmtree(work / "warm")

    samples: dict[str, list[float]] = {}

    def record(key: str, seconds: float) -> None:
        samples.setdefault(key, []).append(seconds)

    busy: dict[str, list[dict]] = {"serial": [], "overlapped": []}
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        order = ["serial", "overlapped"] if repeat % 2 == 0 else ["overlapped", "serial"]
        for path in order:
            out = work / f"run-{path}"
            shutil.rmtree(out, ignore_errors=True)
            result = extract_codes(source_json, out, model, processor, num_workers=0 if path == "serial" else workers,
                                   **options)  # fmt: skip
            if result.num_images != len(paths):
                raise RuntimeError(f"the {path} run encoded {result.num_images} of {len(paths)} images")
            record(f"e2e_{path}", result.seconds)
            busy[path].append(result.stage_seconds)
            if path == "overlapped":  # the same ratio within one run: immune to the load changing between runs
                stages = result.stage_seconds
                reader = (stages["read_decode"] + stages["preprocess"]) / max(workers, 1)
                record("in_run_efficiency", max(reader, stages["encode"], stages["write"]) / result.seconds)
        features = load_code_dataset(work / "run-serial").features
        for path, count in (("serial", 0), ("overlapped", workers)):
            record(f"read_decode_{path}", run_tasks(DecodeTasks(path_tasks), count))
            record(f"preprocess_{path}", run_tasks(PreprocessTasks(image_tasks, processor), count))
        seconds, codes = encode_stage(model, per_image, args.max_batch_pixels, args.device)
        record("encode", seconds)
        rows = [
            {"image_codes": [codes[i]], "image_grid_hw": per_image[i][1].to(torch.int32).tolist(), "source_index": i,
             "id": source[i]["id"], "messages": source[i]["messages"]}
            for i in range(len(paths))
        ]  # fmt: skip
        record("write", write_stage(rows, features, args.shard_size, work / "write-stage"))
        shutil.rmtree(work / "write-stage")
        log(f"repeat {repeat + 1}/{args.repeats}: serial {samples['e2e_serial'][-1]:.2f} s, overlapped "
            f"{samples['e2e_overlapped'][-1]:.2f} s")  # fmt: skip

    stored = sum(os.path.getsize(p) for p in (work / "run-overlapped").glob("codes-*.parquet"))
    results = {
        "model": model_name,
        "device": args.device,
        "dtype": dtype_name(next(model.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "workers": workers,
        "images": len(paths),
        "sides": [args.min_side, args.max_side],
        "pixels": sum(int(values.shape[0]) for values, _ in per_image) * processor.patch_size**2,
        "source_bytes": sum(path.stat().st_size for path in paths),
        "stored_bytes": stored,
        "max_batch_pixels": args.max_batch_pixels,
        "batches": len(pack_by_pixels([int(v.shape[0]) * processor.patch_size**2 for v, _ in per_image],
                                      args.max_batch_pixels)),
        "repeats": args.repeats,
        "load_average": [load_before, os.getloadavg()[0]],
        "seconds": {key: statistics.median(values) for key, values in samples.items()},
        "samples": samples,
        "pipeline_busy_seconds": {
            path: {key: statistics.median(b[key] for b in runs) for key in runs[0]} for path, runs in busy.items()
        },
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
    }
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: dict) -> str:
    s, n = results["seconds"], results["images"]
    reader = {path: s[f"read_decode_{path}"] + s[f"preprocess_{path}"] for path in ("serial", "overlapped")}
    slowest = max(reader["overlapped"], s["encode"], s["write"])
    names = {reader["overlapped"]: "reader", s["encode"]: "encode", s["write"]: "write"}

    def cells(seconds: float) -> list[str]:
        return [f"{seconds:.2f}", f"{n / seconds:.1f}"]

    workers = results["workers"]
    body = [
        ["read + decode", *cells(s["read_decode_serial"]), *cells(s["read_decode_overlapped"])],
        ["pre-process", *cells(s["preprocess_serial"]), *cells(s["preprocess_overlapped"])],
        ["reader stage (read + decode + pre-process)", *cells(reader["serial"]), *cells(reader["overlapped"])],
        ["encode", *cells(s["encode"]), *cells(s["encode"])],
        ["write", *cells(s["write"]), *cells(s["write"])],
        ["sum of stages", *cells(reader["serial"] + s["encode"] + s["write"]), "", ""],
        ["slowest stage", "", "", *cells(slowest)],
        ["end to end", *cells(s["e2e_serial"]), *cells(s["e2e_overlapped"])],
    ]
    headers = ["stage", "serial s", "serial img/s", f"overlapped ({workers} workers) s", "overlapped img/s"]
    busy = results["pipeline_busy_seconds"]
    lines = [
        f"model: {results['model']} ({results['dtype']}, {results['device']}, {results['torch_threads']} torch "
        f"threads, {results['cpus']} CPUs); {n} JPEGs of {results['sides'][0]}-{results['sides'][1]} px, "
        f"{results['pixels'] / n / 1e3:.0f} kpx per image processed, {results['batches']} batches of at most "
        f"{results['max_batch_pixels']:,} px; median of {results['repeats']} repeats; load average "
        f"{results['load_average'][0]:.1f} -> {results['load_average'][1]:.1f}",
        "",
        harness.format_table(headers, body),
        "",
        f"overlap efficiency (slowest stage / end to end, overlapped): {slowest / s['e2e_overlapped']:.2f} "
        f"(slowest: {names[slowest]})",
        f"in-run overlap efficiency (busy time of the busiest stage inside the overlapped run / that run's end to "
        f"end; reader time per worker): {s['in_run_efficiency']:.2f}",
        f"serial consistency (sum of stages / end to end, serial): "
        f"{(reader['serial'] + s['encode'] + s['write']) / s['e2e_serial']:.2f}",
        f"speed-up of the overlapped pipeline over the serial path: {s['e2e_serial'] / s['e2e_overlapped']:.2f}x",
        *(
            f"busy time of each stage inside the {path} run (workers summed): "
            + ", ".join(f"{key} {value:.2f} s" for key, value in busy[path].items())
            for path in ("serial", "overlapped")
        ),
        f"bytes per image: {results['source_bytes'] / n:,.0f} in the JPEGs, {results['stored_bytes'] / n:,.0f} in the "
        f"code shards",
        f"command: {results['command']}",
    ]
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", default=str(TINY), help="HF-format ViQ folder (default: the tiny smoke model)")
    parser.add_argument("--full-width", action="store_true",
                        help="the released 16k architecture with random weights instead of --model")  # fmt: skip
    parser.add_argument("--layers", type=int, default=2, help="trunk blocks of --full-width (default 2; 40 released)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--images", type=int, default=64, help="JPEGs to write and extract (default 64)")
    parser.add_argument("--min-side", type=int, default=96, help="smallest side in pixels (default 96)")
    parser.add_argument("--max-side", type=int, default=512, help="largest side in pixels (default 512)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="reader processes (default: the library's, at least 1)")
    parser.add_argument("--max-batch-pixels", type=int, default=None,
                        help=f"pixel budget per encode call (default: the library's, {DEFAULT_MAX_BATCH_PIXELS:,}, on "
                        "a GPU; 1,048,576 on the CPU, where batching gains nothing and a few dozen images should "
                        "still make several batches)")  # fmt: skip
    parser.add_argument("--shard-size", type=int, default=16, help="samples per shard (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (median; default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process (default torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default=None, help="keep the images and outputs here (default: a temp folder)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write every number as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.max_batch_pixels is None:
        args.max_batch_pixels = 1024 * 1024 if args.device == "cpu" else DEFAULT_MAX_BATCH_PIXELS
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("extract.py: --device cuda but CUDA is not available here", file=sys.stderr)
        return 2
    results = run_benchmark(args)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
